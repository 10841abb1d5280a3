//! The per-worker provided-buffer ring (kernel 5.19+, `IORING_REGISTER_PBUF_RING`).
//!
//! The kernel picks a buffer only when data arrives, so an idle connection owns none. Buffers are
//! handed back as soon as their bytes are consumed (the connection copies a partial frame aside
//! first), so the ring is sized by the data in flight per loop turn, not by connections.
//! An empty ring makes a receive fail with `ENOBUFS`: the data stays in the socket, the worker
//! retries after returning buffers.
//!
//! A buffer a completion handed us is a [`RecvBuf`] guard: the only way to read it, and it returns
//! itself to the free stack when dropped. Making one is `unsafe` (`BufRing::take`): only a buffer id
//! from a completion names a buffer the kernel has let go of.

use std::cell::RefCell;
use std::io;
use std::ops::{Deref, DerefMut};
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::Submitter;

/// Memory obtained from `mmap`, page aligned as the kernel requires for the ring.
struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
    /// Never unmapped: the kernel may still use it (see `BufRing::leak`).
    leaked: std::cell::Cell<bool>,
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
        Ok(Self {
            ptr,
            len,
            leaked: std::cell::Cell::new(false),
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.leaked.get() {
            return;
        }
        // SAFETY: `ptr`/`len` are exactly what mmap returned; nothing refers to the mapping after
        // drop (the owning `BufRing` is dropped after the io_uring that used it, see `Worker`).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}

/// The buffers' memory and the ids returned by dropped guards, shared by the ring and its guards
/// (so a guard never outlives the memory it points into).
struct Pool {
    bufs: Mapping,
    buf_bytes: u32,
    /// Ids of dropped guards, moved to the free stack on the next `refill`.
    returned: RefCell<Vec<u16>>,
}

/// A received buffer, ours until dropped (then it goes back to the free stack). Derefs to the
/// bytes the kernel wrote.
pub struct RecvBuf {
    pool: Rc<Pool>,
    bid: u16,
    len: u32,
}

impl RecvBuf {
    fn ptr(&self) -> *mut u8 {
        let offset = usize::from(self.bid) * self.pool.buf_bytes as usize;
        // SAFETY: `take` checked that `bid` is inside the ring, so the offset is inside `bufs`.
        unsafe { self.pool.bufs.ptr.as_ptr().add(offset) }
    }

    /// The buffer was filled to its size (more may be waiting in the socket).
    pub fn is_full(&self) -> bool {
        self.len == self.pool.buf_bytes
    }
}

impl Deref for RecvBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: the kernel wrote `len` bytes into this buffer before posting the completion that
        // gave us `bid`, and will not touch it again until it is re-posted, which happens only after
        // this guard is dropped. The guard is the only handle to the buffer (ids are unique).
        unsafe { std::slice::from_raw_parts(self.ptr(), self.len as usize) }
    }
}

impl DerefMut for RecvBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `deref`; `&mut self` makes this the only live view.
        unsafe { std::slice::from_raw_parts_mut(self.ptr(), self.len as usize) }
    }
}

impl Drop for RecvBuf {
    fn drop(&mut self) {
        let mut returned = self.pool.returned.borrow_mut();
        debug_assert!(
            !returned.contains(&self.bid),
            "bid {} returned twice",
            self.bid
        );
        returned.push(self.bid);
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
    pool: Rc<Pool>,
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
            pool: Rc::new(Pool {
                bufs,
                buf_bytes,
                returned: RefCell::new(Vec::new()),
            }),
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

    /// Keeps the ring's and the buffers' memory mapped for the rest of the process: for an exit
    /// that could not confirm the kernel is done with every receive.
    pub fn leak(&mut self) {
        self.ring.leaked.set(true);
        self.pool.bufs.leaked.set(true);
    }

    pub fn buf_bytes(&self) -> u32 {
        self.buf_bytes
    }

    /// Buffer `bid` with the `len` bytes a completion reported, as a guard.
    ///
    /// # Safety
    /// `bid` comes from a completion's `F_BUFFER` flags (`cqueue::buffer_select`), and each such
    /// completion is taken once: that is the moment the kernel hands the buffer over. Any other id
    /// may name a buffer the kernel is writing.
    pub unsafe fn take(&mut self, bid: u16, len: usize) -> RecvBuf {
        // Checked on both sides of the boundary: ids we posted, lengths we offered.
        assert!(
            bid < self.entries && len <= self.buf_bytes as usize,
            "kernel returned bid {bid} len {len} outside the ring"
        );
        self.posted -= 1;
        self.resident[usize::from(bid)] = true;
        RecvBuf {
            pool: self.pool.clone(),
            bid,
            len: len as u32,
        }
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
            // so neither the kernel nor a guard refers to it. MADV_DONTNEED on a
            // private anonymous mapping drops the pages; the next touch reads zeroes.
            unsafe {
                libc::madvise(
                    self.pool.bufs.ptr.as_ptr().add(offset).cast(),
                    self.buf_bytes as usize,
                    libc::MADV_DONTNEED,
                );
            }
            self.resident[index] = false;
        }
    }

    /// The ring ran dry (`ENOBUFS`): keep more buffers posted from now on.
    pub fn starved(&mut self) {
        self.target = self.target.saturating_mul(2).min(self.entries);
    }

    /// Posts buffers from the free stack until `target` are in the ring, and publishes the tail.
    pub fn refill(&mut self) {
        self.free.append(&mut self.pool.returned.borrow_mut());
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
        usize::from(self.entries) - self.free.len() - self.pool.returned.borrow().len()
    }

    fn post(&mut self, bid: u16) {
        let index = usize::from(self.tail & (self.entries - 1));
        let base = self.ring.ptr.as_ptr().cast::<BufRingEntry>();
        // SAFETY: `index < entries`, so the entry lies inside the ring mapping. The kernel only
        // reads entries between its head and the published tail, and this one is past the tail.
        let entry = unsafe { &mut *base.add(index) };
        entry.set_addr(
            self.pool.bufs.ptr.as_ptr() as u64 + u64::from(bid) * u64::from(self.buf_bytes),
        );
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
