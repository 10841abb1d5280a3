//! Per-connection authentication state, held only when auth is configured: which claim set a
//! connection's token carried and when the token expires.
//!
//! A side table indexed by slot (8 bytes per connection) rather than fields of `Conn`, so a gateway
//! without auth pays nothing. `channels` claims are interned per worker: the thousands of
//! connections whose tokens carry the same patterns share one copy.

use std::collections::HashMap;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::auth::{AuthError, Claims};
use crate::worker::Worker;

/// Marks "no expiry" / "no claim set".
const NONE: u32 = u32::MAX;

/// One connection's auth state.
#[derive(Debug, Clone, Copy)]
pub struct ConnAuth {
    /// Id in `ClaimSets`, or `NONE` when the token had no `channels` claim.
    pub claim_set: u32,
    /// Tick at which the token expires, or `NONE`.
    pub exp_tick: u32,
}

impl Default for ConnAuth {
    fn default() -> Self {
        Self {
            claim_set: NONE,
            exp_tick: NONE,
        }
    }
}

/// Interned `channels` claims with reference counts.
#[derive(Default)]
pub struct ClaimSets {
    ids: HashMap<Box<[String]>, u32, ahash::RandomState>,
    sets: Vec<(Box<[String]>, u32)>,
    free: Vec<u32>,
}

impl ClaimSets {
    pub fn acquire(&mut self, patterns: Vec<String>) -> u32 {
        let key = patterns.into_boxed_slice();
        if let Some(&id) = self.ids.get(&key) {
            self.sets[id as usize].1 += 1;
            return id;
        }
        let id = match self.free.pop() {
            Some(id) => {
                self.sets[id as usize] = (key.clone(), 1);
                id
            }
            None => {
                self.sets.push((key.clone(), 1));
                (self.sets.len() - 1) as u32
            }
        };
        self.ids.insert(key, id);
        id
    }

    pub fn release(&mut self, id: u32) {
        let entry = &mut self.sets[id as usize];
        entry.1 -= 1;
        if entry.1 == 0 {
            let key = std::mem::take(&mut entry.0);
            self.ids.remove(&key);
            self.free.push(id);
        }
    }

    pub fn get(&self, id: u32) -> &[String] {
        &self.sets[id as usize].0
    }

    /// Distinct claim sets held.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Worker {
    /// Verifies a token (when auth is on) for the connection being upgraded.
    pub(crate) fn verify_token(&self, token: Option<&str>) -> Result<Option<Claims>, AuthError> {
        let Some(auth) = &self.hub.auth else {
            return Ok(None);
        };
        let token = token.ok_or(AuthError::Missing)?;
        auth.verify(token).map(Some)
    }

    /// Records a connection's verified claims (at upgrade, or on a token refresh).
    pub(crate) fn apply_claims(&mut self, slot: u32, claims: Claims) {
        let index = slot as usize;
        if self.auth_slots.len() <= index {
            self.auth_slots.resize(index + 1, ConnAuth::default());
        }
        self.clear_auth(slot);
        let secs_left = claims.exp.saturating_sub(unix_now_s());
        let ticks_left = (secs_left.saturating_mul(1000))
            .div_ceil(self.cfg.timer_tick_ms)
            .max(1);
        let exp_tick = self
            .now_tick
            .saturating_add(u32::try_from(ticks_left).unwrap_or(NONE - 1))
            .min(NONE - 1);
        self.keep_presence_claims(slot, &claims.other);
        let claim_set = claims.channels.map_or(NONE, |p| self.claim_sets.acquire(p));
        self.auth_slots[index] = ConnAuth {
            claim_set,
            exp_tick,
        };
    }

    /// Forgets a connection's auth state (when its slot is freed).
    pub(crate) fn clear_auth(&mut self, slot: u32) {
        self.forget_presence_claims(slot);
        let Some(a) = self.auth_slots.get_mut(slot as usize) else {
            return;
        };
        let old = std::mem::take(a);
        if old.claim_set != NONE {
            self.claim_sets.release(old.claim_set);
        }
    }

    /// The tick at which the connection's token expires, if it has one.
    pub(crate) fn token_exp_tick(&self, slot: u32) -> Option<u32> {
        self.auth_slots
            .get(slot as usize)
            .map(|a| a.exp_tick)
            .filter(|&t| t != NONE)
    }

    /// The connection's `channels` claim, if its token had one.
    pub(crate) fn claim_patterns(&self, slot: u32) -> Option<&[String]> {
        let id = self.auth_slots.get(slot as usize)?.claim_set;
        (id != NONE).then(|| self.claim_sets.get(id))
    }
}

#[cfg(test)]
mod tests {
    use super::ClaimSets;

    #[test]
    fn claim_sets_are_shared_and_released() {
        let mut c = ClaimSets::default();
        let a = c.acquire(vec!["rooms:*".into()]);
        let b = c.acquire(vec!["rooms:*".into()]);
        assert_eq!(a, b);
        let d = c.acquire(vec!["user:1".into()]);
        assert_ne!(a, d);
        c.release(a);
        assert_eq!(c.get(b), ["rooms:*".to_string()]);
        c.release(b);
        c.release(d);
        assert!(c.is_empty());
        let e = c.acquire(vec!["x".into()]);
        assert!(e == a || e == d, "ids are reused");
    }
}
