//! The per-worker bound on receive memory held for incomplete input (`max_rx_bytes_per_worker`).
//!
//! One connection may pin up to `max_frame_bytes` of an incomplete frame plus `max_message_bytes`
//! of a fragmented message, or a partial upgrade request head. Per connection that is bounded; over
//! thousands of slow senders it is not. Each connection's `Rx` carries a `Charge`: the bytes its
//! receive state holds (the `Rx` itself, the capacity of its pending bytes and of its partial
//! message), added to its worker's running total. A charge returns itself when its `Rx` is dropped,
//! wherever that happens (frame completed, close, abort), so the total cannot drift.
//!
//! A connection whose input would take the total past the bound is closed (1009 once upgraded, an
//! HTTP 503 during the upgrade) instead of being given the memory: the bound holds at every moment,
//! not only after the fact.

use std::cell::Cell;
use std::rc::Rc;

use super::conn::Rx;

/// A worker's running total of receive memory held for incomplete input, and its bound.
pub struct RxBudget {
    held: Rc<Cell<usize>>,
    limit: usize,
}

impl RxBudget {
    /// `limit_bytes` 0 means no bound (the total is still kept, for `/api/stats`).
    pub fn new(limit_bytes: usize) -> Self {
        Self {
            held: Rc::new(Cell::new(0)),
            limit: if limit_bytes == 0 {
                usize::MAX
            } else {
                limit_bytes
            },
        }
    }

    /// Bytes held now, over every connection of the worker.
    pub fn held(&self) -> usize {
        self.held.get()
    }

    /// Whether a connection now charged `current` bytes may hold `wanted` bytes instead.
    pub fn allows(&self, current: usize, wanted: usize) -> bool {
        wanted <= current || self.held.get() - current + wanted <= self.limit
    }

    /// Charges `rx` for what it holds now (after its buffers changed).
    pub fn settle(&self, rx: &mut Rx) {
        let bytes = footprint(rx);
        let charge = &mut rx.charge;
        let pool = charge.pool.get_or_insert_with(|| self.held.clone());
        pool.set(pool.get() - charge.bytes + bytes);
        charge.bytes = bytes;
    }
}

/// Bytes a receive state holds: the box, its pending bytes' capacity, its partial message's.
pub fn footprint(rx: &Rx) -> usize {
    std::mem::size_of::<Rx>()
        + rx.pending.capacity()
        + rx.reader.as_ref().map_or(0, |r| r.buffered_bytes())
}

/// What one `Rx` is charged to its worker's budget; given back on drop.
#[derive(Default)]
pub struct Charge {
    pool: Option<Rc<Cell<usize>>>,
    bytes: usize,
}

impl Charge {
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        if let Some(pool) = &self.pool {
            pool.set(pool.get() - self.bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn charges_follow_the_buffers_and_return_on_drop() {
        let budget = RxBudget::new(100_000);
        let base = std::mem::size_of::<Rx>();
        let mut a = Box::<Rx>::default();
        a.pending.reserve_exact(1000);
        budget.settle(&mut a);
        assert_eq!(budget.held(), base + a.pending.capacity());
        let mut b = Box::<Rx>::default();
        b.pending.reserve_exact(5000);
        budget.settle(&mut b);
        assert_eq!(
            budget.held(),
            2 * base + a.pending.capacity() + b.pending.capacity()
        );
        a.pending = Vec::new();
        budget.settle(&mut a);
        assert_eq!(budget.held(), 2 * base + b.pending.capacity());
        drop(b);
        assert_eq!(budget.held(), base);
        drop(a);
        assert_eq!(budget.held(), 0);
    }

    #[test]
    fn allows_up_to_the_limit_and_any_shrink() {
        let budget = RxBudget::new(10_000);
        let mut a = Box::<Rx>::default();
        a.pending.reserve_exact(8000);
        budget.settle(&mut a);
        let held = budget.held();
        assert!(budget.allows(0, 10_000 - held));
        assert!(!budget.allows(0, 10_000 - held + 1));
        // A connection may always shrink or stay; growing counts only the difference.
        assert!(budget.allows(held, held));
        assert!(budget.allows(held, 10));
        assert!(budget.allows(held, 10_000));
        assert!(!budget.allows(held, 10_001));
        assert!(RxBudget::new(0).allows(0, usize::MAX / 2));
    }
}
