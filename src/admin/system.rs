//! What the kernel says about the process and its sockets, read when `/api/stats` or `/metrics` is
//! asked (never on the data path): resident memory, and the kernel's share of a TCP connection.
//!
//! The kernel share is an estimate, as `ringgate profile` measures the real figure: the slab
//! objects one socket holds (`TCP`, `sock_inode_cache`, `filp`, `dentry` object sizes from
//! `/proc/slabinfo`, readable by root) plus the box's TCP buffer pages (`/proc/net/sockstat` `mem`)
//! shared out over its TCP sockets in use. Both are system-wide: on loopback the clients' sockets
//! count too, which is why it is a per-socket figure.

use std::sync::OnceLock;

use serde::Serialize;

use crate::profile::readings::parse_sockstat;

/// Slab caches every TCP socket holds one object of.
const SOCKET_CACHES: [&str; 4] = ["TCP", "sock_inode_cache", "filp", "dentry"];
/// Page size of `/proc/net/sockstat`'s `mem` (pages of 4 KiB on every Linux this runs on).
const PAGE_BYTES: u64 = 4096;

#[derive(Debug, Default, Clone, Serialize)]
pub struct Kernel {
    /// TCP sockets in use on the box (`/proc/net/sockstat` inuse).
    pub tcp_sockets: u64,
    /// Pages of TCP buffers on the box, in bytes (`/proc/net/sockstat` mem × 4096).
    pub tcp_buffer_bytes: u64,
    /// Slab object bytes of one socket; `None` when /proc/slabinfo is unreadable (not root).
    pub socket_object_bytes: Option<u64>,
    /// `socket_object_bytes` + `tcp_buffer_bytes / tcp_sockets`.
    pub bytes_per_socket_estimate: Option<u64>,
}

/// Object size of each named cache from `/proc/slabinfo` text, summed; `None` if any is missing.
pub fn socket_object_bytes(slabinfo: &str) -> Option<u64> {
    let mut total = 0;
    for name in SOCKET_CACHES {
        let size = slabinfo.lines().find_map(|line| {
            let mut f = line.split_whitespace();
            (f.next() == Some(name))
                .then(|| f.nth(2))
                .flatten()
                .and_then(|s| s.parse::<u64>().ok())
        })?;
        total += size;
    }
    Some(total)
}

pub fn kernel() -> Kernel {
    let (tcp_sockets, pages) =
        parse_sockstat(&std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default());
    let tcp_buffer_bytes = pages * PAGE_BYTES;
    // Object sizes are fixed for the kernel's lifetime, and reading /proc/slabinfo walks every
    // cache's partial slabs (milliseconds of kernel time with many sockets): read it once.
    static OBJECT_BYTES: OnceLock<Option<u64>> = OnceLock::new();
    let socket_object_bytes = *OBJECT_BYTES.get_or_init(|| {
        std::fs::read_to_string("/proc/slabinfo")
            .ok()
            .and_then(|t| socket_object_bytes(&t))
    });
    let bytes_per_socket_estimate =
        socket_object_bytes.map(|o| o + tcp_buffer_bytes.checked_div(tcp_sockets).unwrap_or(0));
    Kernel {
        tcp_sockets,
        tcp_buffer_bytes,
        socket_object_bytes,
        bytes_per_socket_estimate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_the_object_sizes_of_one_socket() {
        let text = "slabinfo - version: 2.1\n# name <active_objs> <num_objs> <objsize> ...\n\
                    TCP 40 40 2368 13 8 : tunables 0 0 0\n\
                    sock_inode_cache 10 10 768 21 4 : tunables 0 0 0\n\
                    filp 99 99 256 16 1 : tunables 0 0 0\n\
                    dentry 5 5 192 21 1 : tunables 0 0 0\n";
        assert_eq!(socket_object_bytes(text), Some(2368 + 768 + 256 + 192));
        assert_eq!(socket_object_bytes("TCP 1 1 2368 1 1\n"), None);
    }
}
