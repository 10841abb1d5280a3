//! The per-source-address connection limit (`max_connections_per_ip`, off by default).
//!
//! Direct descriptors have no fd for `getpeername(2)`, so when the limit is on each accepted
//! connection gets one `getsockopt(SO_PEERNAME)` through the ring (6.7+). The count per address is
//! shared by all workers (`hub::peers::PeerTable`, striped like the topic table), because the kernel spreads
//! one address's connections over every worker's listener. A connection over the limit is dropped
//! before its upgrade is answered, and counted.

use std::net::IpAddr;

use super::conn::Req;
use crate::ring::sqe;
use crate::worker::Worker;

/// Reads the address out of a `sockaddr_storage` the kernel filled.
pub fn sockaddr_ip(sa: &libc::sockaddr_storage) -> Option<IpAddr> {
    match i32::from(sa.ss_family) {
        libc::AF_INET => {
            let ptr: *const libc::sockaddr_storage = sa;
            // SAFETY: the family says the storage holds a sockaddr_in, which fits in it.
            let v4 = unsafe { &*ptr.cast::<libc::sockaddr_in>() };
            Some(IpAddr::from(u32::from_be(v4.sin_addr.s_addr).to_be_bytes()))
        }
        libc::AF_INET6 => {
            let ptr: *const libc::sockaddr_storage = sa;
            // SAFETY: the family says the storage holds a sockaddr_in6, which fits in it.
            let v6 = unsafe { &*ptr.cast::<libc::sockaddr_in6>() };
            let ip = std::net::Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Some(ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4))
        }
        _ => None,
    }
}

impl Worker {
    /// Asks the kernel for a new connection's peer address (limit on only).
    pub(crate) fn request_peer_name(&mut self, slot: u32) {
        let mut buf = Box::new(
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            unsafe { std::mem::zeroed::<libc::sockaddr_storage>() },
        );
        let len = if self.cfg.listen.is_ipv4() { 16 } else { 28 };
        let gen = self.conns[slot as usize].gen;
        // SAFETY: the box's heap address does not move when the box is moved into `peer_bufs`, where
        // it stays, untouched, until `on_peer_name` takes it out on this request's completion (or,
        // at an exit with the request in flight, the map is leaked with the ring's other memory).
        let entry = unsafe { sqe::peer_name(slot, gen, &mut *buf, len) };
        self.peer_bufs.insert(slot, buf);
        self.submit(slot, Req::PeerName, entry);
    }

    /// The peer-name read completed (the request is already marked done).
    pub(crate) fn on_peer_name(&mut self, slot: u32, res: i32) {
        let buf = self.peer_bufs.remove(&slot);
        if !self.conns[slot as usize].is_live() {
            return;
        }
        let ip = buf.filter(|_| res > 0).and_then(|b| sockaddr_ip(&b));
        let Some(ip) = ip else {
            // ENOTCONN: the peer is already gone; anything else: no address, no admission.
            self.abort(slot);
            return;
        };
        if self
            .hub
            .peers
            .admit(ip, self.id, self.cfg.max_connections_per_ip)
        {
            self.peer_ips.insert(slot, ip);
            // Request bytes that arrived before admission were kept: process them now.
            self.on_bytes(slot, &mut []);
        } else {
            self.stats.per_ip_refused += 1;
            tracing::debug!(worker = self.id, slot, %ip, "connection limit per address reached");
            self.abort(slot);
        }
    }

    /// Releases a freed connection's count.
    pub(crate) fn forget_peer(&mut self, slot: u32) {
        if let Some(ip) = self.peer_ips.remove(&slot) {
            self.hub.peers.release(ip, self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_v4_and_mapped_v6_addresses() {
        // SAFETY: zeroed sockaddr_storage is valid plain old data.
        let mut sa: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
        sa.ss_family = libc::AF_INET as u16;
        let ptr: *mut libc::sockaddr_storage = &mut sa;
        // SAFETY: sockaddr_in fits in sockaddr_storage; we set the family to match.
        unsafe {
            (*ptr.cast::<libc::sockaddr_in>()).sin_addr.s_addr = u32::from_ne_bytes([127, 0, 0, 7])
        };
        assert_eq!(sockaddr_ip(&sa), Some("127.0.0.7".parse().unwrap()));
        sa.ss_family = libc::AF_INET6 as u16;
        // SAFETY: as above for sockaddr_in6.
        unsafe {
            (*ptr.cast::<libc::sockaddr_in6>()).sin6_addr.s6_addr = "::ffff:10.1.2.3"
                .parse::<std::net::Ipv6Addr>()
                .unwrap()
                .octets()
        };
        assert_eq!(sockaddr_ip(&sa), Some("10.1.2.3".parse().unwrap()));
    }
}
