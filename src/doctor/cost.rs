//! What one connection and one worker cost, in bytes: the figures `doctor` divides memory by.
//!
//! Measured on Linux 6.18 (docs/io_uring.md, "Kernel memory per connection"), slab packing included,
//! so the estimate errs towards fewer connections. `ringgate profile` measures the real slopes on
//! a given box; these constants are what `doctor` can know without opening a connection.

use serde::Serialize;

use crate::config::RecvMode;

/// Kernel bytes of one idle TCP socket accepted as a direct descriptor: `tcp_sock` 2521 +
/// socket/inode 862 + `struct file` 195 + dentry 195 + LSM blobs 56 + fixed-file node 32.
pub const SOCKET_KERNEL_BYTES: u64 = 2521 + 862 + 195 + 195 + 56 + 32;
/// An idle connection waiting with a multishot poll: one io_kiocb.
pub const POLL_WAIT_BYTES: u64 = 256;
/// An idle connection waiting with an armed multishot recv: io_kiocb 256 + async msghdr 512 +
/// poll entry 96.
pub const MULTISHOT_WAIT_BYTES: u64 = 864;
/// User-space bytes per idle joined connection: the project's budget (slab entry + one topic
/// membership), which `ringgate profile` checks.
pub const USER_BYTES: u64 = 128;
/// Kernel bytes per fixed-file table slot, allocated when the table is registered (13.3 B).
pub const SLOT_BYTES_TENTHS: u64 = 133;
/// Ring memory per entry: an SQE, its SQ-array index, a CQE.
pub const SQE_BYTES: u64 = 64 + 4;
pub const CQE_BYTES: u64 = 16;
/// Receive buffers a worker keeps posted at start (`ring::bufring`); more are touched only under
/// load, because an idle connection holds none.
pub const POSTED_BUFFERS: u64 = 64;
/// One ring holds at most this many fixed files whatever the rlimit (`IORING_MAX_FIXED_FILES`,
/// `io_uring/rsrc.c`; 1 << 20 on current kernels, smaller on some 5.x).
pub const IORING_MAX_FIXED_FILES: u64 = 1 << 20;

/// Fixed files one ring can register: the soft nofile limit, never more than the kernel's
/// per-ring maximum (the gateway sizes its tables by it; `doctor` predicts with it).
pub fn ring_capacity(nofile_soft: u64) -> u64 {
    nofile_soft.min(IORING_MAX_FIXED_FILES)
}
/// File descriptors of the process itself (stdio, admin listener, tokio's epoll and wakers).
pub const PROCESS_FDS: u64 = 16;
/// File descriptors per worker in the process table: ring, listener, inbox eventfd. Accepted
/// connections are direct descriptors and take none.
pub const FDS_PER_WORKER: u64 = 3;
/// `tcp_mem` charge of a socket with any data queued: one page, even for a 100 B message
/// (measured here: 3000 sockets each holding a 100 B message raised `sockstat` TCP mem by
/// 2993 pages; a second message per socket added none).
pub const QUEUED_PAGES_PER_SOCKET: u64 = 1;

/// Bytes one connection costs on this box, by part.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PerConnection {
    pub socket_kernel_bytes: u64,
    pub wait_kernel_bytes: u64,
    pub user_bytes: u64,
    /// The load generator's side when it runs on this box (role `both`): its own socket, wait
    /// and state, assumed to cost what the server's do, since it reuses the same io_uring core.
    pub client_bytes: u64,
    pub total_bytes: u64,
}

impl PerConnection {
    pub fn new(recv_mode: RecvMode, client_on_box: bool) -> Self {
        let wait_kernel_bytes = match recv_mode {
            RecvMode::Poll => POLL_WAIT_BYTES,
            RecvMode::Multishot => MULTISHOT_WAIT_BYTES,
        };
        let server = SOCKET_KERNEL_BYTES + wait_kernel_bytes + USER_BYTES;
        let client_bytes = if client_on_box {
            SOCKET_KERNEL_BYTES + POLL_WAIT_BYTES + USER_BYTES
        } else {
            0
        };
        Self {
            socket_kernel_bytes: SOCKET_KERNEL_BYTES,
            wait_kernel_bytes,
            user_bytes: USER_BYTES,
            client_bytes,
            total_bytes: server + client_bytes,
        }
    }
}

/// Bytes one worker costs before it holds any connection: its rings, its fixed-file table of
/// `slots`, and the receive buffers it posts at start.
pub fn per_worker_bytes(sq_entries: u64, cq_entries: u64, slots: u64, buffer_bytes: u64) -> u64 {
    sq_entries * SQE_BYTES
        + cq_entries * CQE_BYTES
        + (slots * SLOT_BYTES_TENTHS).div_ceil(10)
        + POSTED_BUFFERS * buffer_bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_connection_matches_the_measured_totals() {
        // 4.72 KB with the multishot recv armed, slab packing included (docs/io_uring.md, "Kernel
        // memory per connection": the objects, plus what slab packing adds).
        let multishot = PerConnection::new(RecvMode::Multishot, false);
        assert_eq!(multishot.total_bytes - USER_BYTES, 4725);
        // The poll wait saves 608 B: an armed receive's async msghdr and poll entry (same section).
        let poll = PerConnection::new(RecvMode::Poll, false);
        assert_eq!(multishot.total_bytes - poll.total_bytes, 608);
        assert_eq!(poll.client_bytes, 0);
        // A loopback pair costs both sockets.
        let both = PerConnection::new(RecvMode::Poll, true);
        assert_eq!(both.total_bytes, 2 * poll.total_bytes);
    }

    #[test]
    fn per_worker_default_config() {
        // 4096 SQ, 65536 CQ, 20000 slots, 4 KiB buffers.
        let bytes = per_worker_bytes(4096, 65536, 20_000, 4096);
        assert_eq!(
            bytes,
            4096 * 68 + 65536 * 16 + 266_000 + 64 * 4096,
            "{bytes}"
        );
    }
}
