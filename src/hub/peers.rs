//! Connections per source address, shared by every worker: the kernel spreads one address's
//! connections over all workers' listeners, so the `max_connections_per_ip` count cannot be
//! per worker. Striped like the topic table; no syscall under a stripe lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use ahash::RandomState;

/// One stripe: the count per address, and the same counts per (address, worker) so that a worker
/// that dies can give its connections' counts back (its own records die with it). One address's
/// entries share a stripe, so both maps change under one lock.
#[derive(Default)]
struct Stripe {
    total: HashMap<IpAddr, u32, RandomState>,
    by_worker: HashMap<(IpAddr, u16), u32, RandomState>,
}

/// Connections per source address, across workers.
pub struct PeerTable {
    stripes: Box<[Mutex<Stripe>]>,
    hasher: RandomState,
}

/// Takes one from a count, removing the entry at zero.
fn decrement<K: std::hash::Hash + Eq>(map: &mut HashMap<K, u32, RandomState>, key: K, by: u32) {
    if let Some(n) = map.get_mut(&key) {
        *n = n.saturating_sub(by);
        if *n == 0 {
            map.remove(&key);
        }
    }
}

impl PeerTable {
    pub fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes.max(1)).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn stripe(&self, ip: &IpAddr) -> std::sync::MutexGuard<'_, Stripe> {
        let i = (self.hasher.hash_one(ip) % self.stripes.len() as u64) as usize;
        self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection from `ip` on `worker`; false (and not counted) when that passes
    /// `limit`.
    pub fn admit(&self, ip: IpAddr, worker: usize, limit: u32) -> bool {
        let mut s = self.stripe(&ip);
        let n = s.total.entry(ip).or_insert(0);
        if *n >= limit {
            return false;
        }
        *n += 1;
        *s.by_worker.entry((ip, worker as u16)).or_insert(0) += 1;
        true
    }

    pub fn release(&self, ip: IpAddr, worker: usize) {
        let mut s = self.stripe(&ip);
        decrement(&mut s.total, ip, 1);
        decrement(&mut s.by_worker, (ip, worker as u16), 1);
    }

    pub fn count(&self, ip: IpAddr) -> u32 {
        self.stripe(&ip).total.get(&ip).copied().unwrap_or(0)
    }

    /// A worker died: its connections are gone with it, so are their counts. Returns how many.
    pub fn drop_worker(&self, worker: usize) -> u64 {
        let mut released = 0;
        for stripe in self.stripes.iter() {
            let mut s = stripe.lock().unwrap_or_else(|p| p.into_inner());
            let Stripe { total, by_worker } = &mut *s;
            by_worker.retain(|&(ip, w), n| {
                if usize::from(w) != worker {
                    return true;
                }
                decrement(total, ip, *n);
                released += u64::from(*n);
                false
            });
        }
        released
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_releases() {
        let t = PeerTable::new(4);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(t.admit(ip, 0, 2));
        assert!(t.admit(ip, 1, 2));
        assert!(!t.admit(ip, 0, 2));
        assert_eq!(t.count(ip), 2);
        t.release(ip, 0);
        assert!(t.admit(ip, 0, 2));
        t.release(ip, 0);
        t.release(ip, 1);
        assert_eq!(t.count(ip), 0);
    }

    #[test]
    fn a_dead_workers_counts_are_given_back() {
        let t = PeerTable::new(4);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..3 {
            assert!(t.admit(a, 1, 10));
        }
        assert!(t.admit(a, 0, 10));
        assert!(t.admit(b, 1, 10));
        assert_eq!(t.drop_worker(1), 4);
        assert_eq!((t.count(a), t.count(b)), (1, 0));
        // The survivor's own count is untouched and still released normally.
        t.release(a, 0);
        assert_eq!(t.count(a), 0);
        assert_eq!(t.drop_worker(1), 0);
    }
}
