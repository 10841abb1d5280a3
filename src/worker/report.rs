//! A worker's own accounting, produced on request (`Msg::Report`) for `/metrics`, `/api/stats` and
//! `ringgate profile`: its counters, and the memory it holds by kind. Computed by one walk of the
//! connection table when asked, so an idle gateway spends nothing on it.

use serde::Serialize;

use super::{Stats, Worker};
use crate::net::conn::{Conn, Phase};
use crate::phoenix::channels::CHANNEL_ENTRY_BYTES;
use crate::worker::timer::Entry;

/// Bytes of user-space memory a worker holds, by kind.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Memory {
    /// Slots of the connection table in use (its length), and their bytes (`Conn` is fixed-size).
    pub conn_slots: u64,
    pub conn_table_bytes: u64,
    /// Receive state of connections with an incomplete frame or fragmented message.
    pub rx_states: u64,
    pub rx_bytes: u64,
    /// The same bytes as counted by the receive budget as they change, and its bound
    /// (`max_rx_bytes_per_worker`, 0 = none).
    pub rx_held_bytes: u64,
    pub rx_limit_bytes: u64,
    /// Send queues of connections with frames waiting behind the one in flight.
    pub send_queues: u64,
    pub send_queue_bytes: u64,
    /// Heap of connections joined to two or more channels (one is inline in `Conn`).
    pub channel_heap_bytes: u64,
    /// Distinct topics with members on this worker, and memberships.
    pub topics: u64,
    pub memberships: u64,
    /// Frames in the frame table (shared by all their recipients) and their bytes.
    pub frames_in_flight: u64,
    pub frame_bytes: u64,
    /// Receive buffers posted or being processed, and their bytes.
    pub recv_buffers_in_use: u64,
    pub recv_buffer_bytes: u64,
    /// Timer-wheel entries and their bytes.
    pub wheel_entries: u64,
    pub wheel_bytes: u64,
}

/// One worker's report.
#[derive(Debug, Default, Clone, Serialize)]
pub struct Report {
    pub worker: usize,
    /// Connections by state.
    pub connections: u64,
    pub handshaking: u64,
    pub open: u64,
    pub closing: u64,
    /// Completions the kernel could not post because the completion queue was full (the ring's
    /// overflow counter): each one means a burst outran the loop; see `cq_entries`.
    pub cq_overflow: u64,
    /// Submission entries waiting in `Ring`'s backlog for room in the submission queue.
    pub submission_backlog: u64,
    pub stats: Stats,
    pub memory: Memory,
}

fn conn_heap(c: &Conn, m: &mut Memory) {
    if let Some(rx) = &c.rx {
        m.rx_states += 1;
        let reader = rx.reader.as_ref().map_or(0, |r| r.buffered_bytes());
        m.rx_bytes += (std::mem::size_of_val(&**rx) + rx.pending.capacity() + reader) as u64;
    }
    if let Some(q) = &c.txq {
        m.send_queues += 1;
        m.send_queue_bytes += (std::mem::size_of_val(&**q) + q.frames.capacity() * 4) as u64;
    }
    if c.chans.len() > 1 {
        m.channel_heap_bytes += (c.chans.len() * CHANNEL_ENTRY_BYTES) as u64;
    }
}

impl Worker {
    pub(crate) fn report(&self) -> Report {
        let mut r = Report {
            worker: self.id,
            stats: self.stats.clone(),
            ..Report::default()
        };
        // SAFETY: `report` runs on the worker's own thread (the ring's single issuer), between
        // completion batches: no other `CompletionQueue` of this ring is alive, and `overflow`
        // only reads the kernel's counter.
        r.cq_overflow = u64::from(unsafe { self.ring.uring.completion_shared() }.overflow());
        r.submission_backlog = self.ring.backlog_len() as u64;
        let m = &mut r.memory;
        m.conn_slots = self.conns.len() as u64;
        m.conn_table_bytes = (self.conns.len() * std::mem::size_of::<Conn>()) as u64;
        for c in &self.conns {
            match c.phase() {
                Phase::Free => continue,
                Phase::Handshake => r.handshaking += 1,
                Phase::Open => r.open += 1,
                _ => r.closing += 1,
            }
            r.connections += 1;
            m.memberships += c.chans.len() as u64;
            conn_heap(c, m);
        }
        m.rx_held_bytes = self.rx_budget.held() as u64;
        m.rx_limit_bytes = self.cfg.max_rx_bytes_per_worker as u64;
        m.topics = self.topics.len() as u64;
        m.frames_in_flight = self.frames.len() as u64;
        m.frame_bytes = self.frames.iter().map(|(_, f)| f.bytes.len() as u64).sum();
        m.recv_buffers_in_use = self.bufs.in_use() as u64;
        m.recv_buffer_bytes = m.recv_buffers_in_use * u64::from(self.bufs.buf_bytes());
        m.wheel_entries = self.wheel.len() as u64;
        m.wheel_bytes = m.wheel_entries * std::mem::size_of::<Entry>() as u64;
        r
    }
}
