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

/// A registered buffer ring and the buffers it hands out.
pub struct BufRing {
    ring: Mapping,
    bufs: Mapping,
    entries: u16,
    buf_bytes: u32,
    /// Our producer index; published to the kernel by `publish`.
    tail: u16,
    pub bgid: u16,
    /// Buffers currently owned by the kernel or by a completion being processed (for accounting).
    pub lent: u32,
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
        let bufs = Mapping::new(usize::from(entries) * buf_bytes as usize)?;
        let mut me = Self {
            ring,
            bufs,
            entries,
            buf_bytes,
            tail: 0,
            bgid,
            lent: u32::from(entries),
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
        for bid in 0..entries {
            me.give_back(bid);
        }
        me.publish();
        Ok(me)
    }

    pub fn buf_bytes(&self) -> u32 {
        self.buf_bytes
    }

    /// The bytes the kernel wrote into buffer `bid`.
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
        // until we re-provide it, and `&mut self` keeps this the only live view.
        unsafe { std::slice::from_raw_parts_mut(self.bufs.ptr.as_ptr().add(offset), len) }
    }

    /// Puts buffer `bid` back at the tail (not yet visible to the kernel: call `publish`).
    pub fn give_back(&mut self, bid: u16) {
        assert!(bid < self.entries, "bid {bid} out of range");
        let index = usize::from(self.tail & (self.entries - 1));
        let base = self.ring.ptr.as_ptr().cast::<BufRingEntry>();
        // SAFETY: `index < entries`, so the entry lies inside the ring mapping. The kernel only
        // reads entries between its head and the published tail, and this one is past the tail.
        let entry = unsafe { &mut *base.add(index) };
        entry.set_addr(self.bufs.ptr.as_ptr() as u64 + u64::from(bid) * u64::from(self.buf_bytes));
        entry.set_len(self.buf_bytes);
        entry.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
        self.lent = self.lent.saturating_sub(1);
    }

    /// Counts a buffer taken by a completion (for accounting only).
    pub fn note_taken(&mut self) {
        self.lent += 1;
    }

    /// Makes every given-back buffer visible to the kernel.
    pub fn publish(&self) {
        let base = self.ring.ptr.as_ptr().cast::<BufRingEntry>();
        // SAFETY: the tail field overlays the first entry's reserved field (the kernel ABI); the
        // pointer is valid and aligned for u16, and the kernel reads it atomically.
        let tail = unsafe { AtomicU16::from_ptr(BufRingEntry::tail(base).cast_mut()) };
        // Release: the entries written above must be visible before the kernel sees the new tail.
        tail.store(self.tail, Ordering::Release);
    }
}
