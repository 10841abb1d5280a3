//! Per-connection rate limits: two token buckets in five bytes of `Conn` (its padding).
//!
//! Each data message or ping takes a message token; each join also takes a join token. Tokens
//! refill at `max_messages_per_second` and `max_joins_per_second`, up to bursts of twice those. A
//! connection out of message tokens is closed with 1008 (a flood is not a client the gateway can
//! serve); a join out of join tokens gets an error reply instead, because phoenix.js retries joins
//! with backoff on its own.

use crate::worker::Worker;

/// Refills `tokens` for `elapsed_s` seconds at `rate` per second, capped at `burst`.
pub fn refill(tokens: u16, elapsed_s: u16, rate: u32, burst: u16) -> u16 {
    let added = u32::from(elapsed_s).saturating_mul(rate);
    (u32::from(tokens).saturating_add(added)).min(u32::from(burst)) as u16
}

impl Worker {
    fn burst(&self) -> u16 {
        u16::try_from(self.cfg.max_messages_per_second.saturating_mul(2)).unwrap_or(u16::MAX)
    }

    fn join_burst(&self) -> u8 {
        u8::try_from(self.cfg.max_joins_per_second.saturating_mul(2)).unwrap_or(u8::MAX)
    }

    fn now_s(&self) -> u16 {
        (u64::from(self.now_tick) * self.cfg.timer_tick_ms / 1000) as u16
    }

    /// Fills the bucket of a new connection.
    pub(crate) fn reset_tokens(&mut self, slot: u32) {
        let (burst, now) = (self.burst(), self.now_s());
        let join_burst = self.join_burst();
        let c = &mut self.conns[slot as usize];
        c.tokens = burst;
        c.join_tokens = join_burst;
        c.refill_s = now;
    }

    /// Takes `cost` tokens; false when the connection is over its rate.
    pub(crate) fn take_tokens(&mut self, slot: u32, cost: u16) -> bool {
        if self.cfg.max_messages_per_second == 0 {
            return true;
        }
        let (burst, now, rate) = (self.burst(), self.now_s(), self.cfg.max_messages_per_second);
        let (join_burst, join_rate) = (self.join_burst(), self.cfg.max_joins_per_second);
        let c = &mut self.conns[slot as usize];
        // The idle timeout (≤ 1 h, checked in config) keeps elapsed far below the u16 wrap.
        let elapsed = now.wrapping_sub(c.refill_s);
        c.tokens = refill(c.tokens, elapsed, rate, burst);
        c.join_tokens = refill(
            u16::from(c.join_tokens),
            elapsed,
            join_rate,
            u16::from(join_burst),
        ) as u8;
        c.refill_s = now;
        if c.tokens < cost {
            return false;
        }
        c.tokens -= cost;
        true
    }

    /// Takes a join token (the join message already took its message token, which refilled both).
    pub(crate) fn take_join(&mut self, slot: u32) -> bool {
        if self.cfg.max_joins_per_second == 0 {
            return true;
        }
        let c = &mut self.conns[slot as usize];
        if c.join_tokens == 0 {
            return false;
        }
        c.join_tokens -= 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::refill;

    #[test]
    fn refills_at_rate_up_to_burst() {
        assert_eq!(refill(0, 1, 100, 200), 100);
        assert_eq!(refill(150, 1, 100, 200), 200);
        assert_eq!(refill(5, 0, 100, 200), 5);
        assert_eq!(refill(0, u16::MAX, u32::MAX, 200), 200);
    }
}
