//! The per-worker provided-buffer ring (kernel 5.19+, `IORING_REGISTER_PBUF_RING`).
//!
//! The kernel picks a buffer only when data arrives, so an idle connection owns none. Buffers are
//! handed back as soon as their bytes are consumed (the connection copies a partial frame aside
//! first), so the ring is sized by the data in flight per loop turn, not by connections.
//! An empty ring makes a receive fail with `ENOBUFS`: the data stays in the socket, the worker
//! retries after returning buffers.

use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// Memory obtained from `mmap`, page aligned as the kernel requires for the ring.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Self> {
        // SAFETY: an anonymous private mapping with no address hint has no preconditions.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast()).ok_or_else(|| io::Error::other("mmap returned null"))?;
        Ok(Self { ptr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing refers to the mapping after
        // drop (the owning `BufRing` is dropped after the io_uring that used it, see `Worker`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// Buffers posted to the ring at start; doubled (up to all of them) each time the ring runs dry.
const INITIAL_POSTED: u16 = 64;

/// A registered buffer ring and the buffers it hands out.
///
/// Not every buffer is posted: the ring holds `target` of them, refilled each loop turn from a LIFO
/// stack of returned buffers. The kernel consumes ring slots in order, so posting all buffers would
/// make it cycle through (and fault in) every one of them; refilling with the most recently returned
/// buffer keeps the touched set near the data actually in flight. `ENOBUFS` raises `target`.
pub struct BufRing {
    ring: Mapping,
    bufs: Mapping,
    entries: u16,
    buf_bytes: u32,
    /// Our producer index; published to the kernel by `publish`.
    tail: u16,
    pub bgid: u16,
    /// Buffers not posted, most recently returned last.
    free: Vec<u16>,
    /// Buffers posted to the ring and not yet handed back by a completion.
    posted: u16,
    /// How many buffers to keep posted.
    target: u16,
    /// Buffers whose pages may be resident (written by the kernel since their last trim).
    resident: Vec<bool>,
}

impl BufRing {
    /// Allocates `entries` buffers of `buf_bytes` and registers them as group `bgid`.
    pub fn new(
        submitter: &Submitter<'_>,
        entries: u16,
        buf_bytes: u32,
        bgid: u16,
    ) -> io::Result<Self> {
        assert!(entries.is_power_of_two());
        let ring = Mapping::new(usize::from(entries) * std::mem::size_of::<BufRingEntry>())?;
        // Untouched pages cost nothing: only buffers the kernel actually fills become resident.
        let bufs = Mapping::new(usize::from(entries) * buf_bytes as usize)?;
        let me = Self {
            ring,
            bufs,
            entries,
            buf_bytes,
            tail: 0,
            bgid,
            free: (0..entries).rev().collect(),
            posted: 0,
            target: INITIAL_POSTED.min(entries),
            resident: vec![false; usize::from(entries)],
        };
        // SAFETY: the ring memory is page aligned, sized for `entries` entries and lives as long as
        // `self`, which the worker drops only after its io_uring (field order in `Worker`).
        unsafe {
            submitter.register_buf_ring_with_flags(
                me.ring.ptr.as_ptr() as u64,
                entries,
                bgid,
                0,
            )?;
        }
        let mut me = me;
        me.refill();
        Ok(me)
    }

    pub fn buf_bytes(&self) -> u32 {
        self.buf_bytes
    }

    /// The bytes the kernel wrote into buffer `bid`, which a completion just handed us.
    ///
    /// The slice stays valid until `give_back(bid)`: the kernel does not touch a buffer between
    /// handing it to a completion and seeing it again in the ring.
    pub fn filled(&mut self, bid: u16, len: usize) -> &mut [u8] {
        assert!(
            bid < self.entries && len <= self.buf_bytes as usize,
            "bid {bid} len {len}"
        );
        let offset = usize::from(bid) * self.buf_bytes as usize;
        // SAFETY: offset+len lies inside the `bufs` mapping (checked above), and the kernel wrote
        // this buffer before posting the completion that gave us `bid`; it will not write it again
        // until we re-post it, and `&mut self` keeps this the only live view.
        unsafe { std::slice::from_raw_parts_mut(self.bufs.ptr.as_ptr().add(offset), len) }
    }

    /// Notes that a completion took buffer `bid` out of the ring.
    pub fn taken(&mut self, bid: u16) {
        assert!(
            bid < self.entries,
            "kernel returned bid {bid} outside the ring"
        );
        self.posted -= 1;
        self.resident[usize::from(bid)] = true;
    }

    /// After a burst: halves the posted target (not below the initial one) and gives the pages of
    /// buffers that will not be posted soon back to the kernel, so a burst's memory does not stay
    /// resident for good. Called on a quiet tick; a buffer trimmed and posted again faults back in.
    pub fn trim(&mut self) {
        self.target = (self.target / 2).max(INITIAL_POSTED.min(self.entries));
        // The top of the LIFO stack is what `refill` posts next: keep `target` of those warm.
        let keep = usize::from(self.target);
        let cold = self.free.len().saturating_sub(keep);
        for &bid in &self.free[..cold] {
            let index = usize::from(bid);
            if !self.resident[index] {
                continue;
            }
            let offset = index * self.buf_bytes as usize;
            // SAFETY: the range is one buffer inside our mapping; the buffer is in the free stack,
            // so neither the kernel nor a completion handler refers to it. MADV_DONTNEED on a
            // private anonymous mapping drops the pages; the next touch reads zeroes.
            unsafe {
                libc::madvise(
                    self.bufs.ptr.as_ptr().add(offset).cast(),
                    self.buf_bytes as usize,
                    libc::MADV_DONTNEED,
                );
            }
            self.resident[index] = false;
        }
    }

    /// Returns buffer `bid` to the free stack (posted again by `refill`).
    pub fn give_back(&mut self, bid: u16) {
        debug_assert!(!self.free.contains(&bid), "bid {bid} returned twice");
        self.free.push(bid);
    }

    /// The ring ran dry (`ENOBUFS`): keep more buffers posted from now on.
    pub fn starved(&mut self) {
        self.target = self.target.saturating_mul(2).min(self.entries);
    }

    /// Posts buffers from the free stack until `target` are in the ring, and publishes the tail.
    pub fn refill(&mut self) {
        let before = self.tail;
        while self.posted < self.target {
            let Some(bid) = self.free.pop() else { break };
            self.post(bid);
        }
        if self.tail != before {
            self.publish();
        }
    }

    /// Buffers currently posted or being processed (for memory accounting).
    pub fn in_use(&self) -> usize {
        usize::from(self.entries) - self.free.len()
    }

    fn post(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.entries - 1));
        let base = self.ring.ptr.as_ptr().cast::<BufRingEntry>();
        // SAFETY: `index < entries`, so the entry lies inside the ring mapping. The kernel only
        // reads entries between its head and the published tail, and this one is past the tail.
        let entry = unsafe { &mut *base.add(index) };
        entry.set_addr(self.bufs.ptr.as_ptr() as u64 + u64::from(bid) * u64::from(self.buf_bytes));
        entry.set_len(self.buf_bytes);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.posted += 1;
    }

    fn publish(&self) {
        let base = self.ring.ptr.as_ptr().cast::<BufRingEntry>();
        // SAFETY: the tail field overlays the first entry's reserved field (the kernel ABI); the
        // pointer is valid and aligned for u16, and the kernel reads it atomically.
        let tail = unsafe { AtomicU16::from_ptr(BufRingEntry::tail(base).cast_mut()) };
        // Release: the entries written above must be visible before the kernel sees the new tail.
        tail.store(self.tail, Ordering::Release);
    }
}
