//! Connections per source address, shared by every worker: the kernel spreads one address's
//! connections over all workers' listeners, so the `max_connections_per_ip` count cannot be
//! per worker. Striped like the topic table; no syscall under a stripe lock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;

use ahash::RandomState;

/// Connections per source address, across workers.
pub struct PeerTable {
    stripes: Box<[Mutex<HashMap<IpAddr, u32, RandomState>>]>,
    hasher: RandomState,
}

impl PeerTable {
    pub fn new(stripes: usize) -> Self {
        Self {
            stripes: (0..stripes.max(1)).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
        }
    }

    fn stripe(&self, ip: &IpAddr) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32, RandomState>> {
        let i = (self.hasher.hash_one(ip) % self.stripes.len() as u64) as usize;
        self.stripes[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts a new connection from `ip`; false (and not counted) when that passes `limit`.
    pub fn admit(&self, ip: IpAddr, limit: u32) -> bool {
        let mut s = self.stripe(&ip);
        let n = s.entry(ip).or_insert(0);
        if *n >= limit {
            return false;
        }
        *n += 1;
        true
    }

    pub fn release(&self, ip: IpAddr) {
        let mut s = self.stripe(&ip);
        if let Some(n) = s.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                s.remove(&ip);
            }
        }
    }

    pub fn count(&self, ip: IpAddr) -> u32 {
        self.stripe(&ip).get(&ip).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_up_to_the_limit_and_releases() {
        let t = PeerTable::new(4);
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        assert!(t.admit(ip, 2));
        assert!(t.admit(ip, 2));
        assert!(!t.admit(ip, 2));
        assert_eq!(t.count(ip), 2);
        t.release(ip);
        assert!(t.admit(ip, 2));
        t.release(ip);
        t.release(ip);
        assert_eq!(t.count(ip), 0);
    }
}
