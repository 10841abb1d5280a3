//! Graceful drain: stop accepting, then close open connections with 1012 ("service restart") in
//! batches spread over `drain_ms`, so clients that reconnect after any close (phoenix.js does) come
//! back spread out instead of all at once. The worker exits when it has no connection left, or
//! when the deadline plus the close timeout has passed.

use crate::net::conn::Phase;
use crate::worker::Worker;
use crate::ws;

/// A drain in progress.
#[derive(Debug, Clone, Copy)]
pub struct Drain {
    /// Tick by which every connection has been sent its close frame.
    pub end_tick: u32,
    /// Tick after which the worker exits even with connections left.
    pub exit_tick: u32,
    /// Next slot to consider: batches walk the table once.
    cursor: u32,
}

/// How many of `open` connections to close now so that the rest spread over `ticks_left` ticks.
pub fn batch_size(open: u32, ticks_left: u32) -> u32 {
    open.div_ceil(ticks_left.max(1))
}

impl Worker {
    /// Starts draining over `drain_ms` (0: close everything now). A second request keeps the
    /// earlier deadline unless it is sooner.
    pub(crate) fn begin_drain(&mut self, drain_ms: u64) {
        let ticks = u32::try_from(drain_ms / self.cfg.timer_tick_ms).unwrap_or(u32::MAX / 4);
        let end_tick = self.now_tick.saturating_add(ticks);
        let exit_tick = end_tick.saturating_add(self.ticks.close + 1);
        match &mut self.drain {
            Some(d) if d.end_tick <= end_tick => return,
            Some(d) => {
                d.end_tick = end_tick;
                d.exit_tick = exit_tick;
            }
            None => {
                tracing::info!(worker = self.id, live = self.live, drain_ms, "draining");
                self.drain = Some(Drain {
                    end_tick,
                    exit_tick,
                    cursor: 0,
                });
                self.close_the_door();
            }
        }
        self.drain_step();
    }

    /// No new connections: stop accepting, and abort upgrades in progress.
    fn close_the_door(&mut self) {
        self.stop_accepting();
        for slot in 0..self.conns.len() as u32 {
            if self.conns[slot as usize].phase() == Phase::Handshake {
                self.abort(slot);
            }
        }
    }

    /// Closes the next batch of open connections (called on start and on every tick).
    pub(crate) fn drain_step(&mut self) {
        let Some(mut d) = self.drain else { return };
        let open = self
            .conns
            .iter()
            .filter(|c| c.phase() == Phase::Open)
            .count() as u32;
        let ticks_left = d.end_tick.saturating_sub(self.now_tick);
        let mut quota = if ticks_left == 0 {
            open
        } else {
            batch_size(open, ticks_left)
        };
        let len = self.conns.len() as u32;
        let mut scanned = 0;
        while quota > 0 && scanned < len {
            let slot = d.cursor % len.max(1);
            d.cursor = d.cursor.wrapping_add(1);
            scanned += 1;
            if self.conns[slot as usize].phase() == Phase::Open {
                self.close_with(slot, ws::close::SERVICE_RESTART, "server draining");
                quota -= 1;
            }
        }
        self.drain = Some(d);
    }

    pub(crate) fn drained(&self) -> bool {
        self.drain
            .is_some_and(|d| self.live == 0 || self.now_tick >= d.exit_tick)
    }
}

#[cfg(test)]
mod tests {
    use super::batch_size;

    #[test]
    fn batches_spread_the_closes_over_the_remaining_ticks() {
        assert_eq!(batch_size(100, 30), 4);
        assert_eq!(batch_size(100, 0), 100);
        assert_eq!(batch_size(0, 30), 0);
        // Closing a batch per tick empties the table by the deadline, never later.
        let mut open = 1000;
        for ticks_left in (1..=30).rev() {
            open -= batch_size(open, ticks_left);
        }
        assert_eq!(open, 0);
    }
}
