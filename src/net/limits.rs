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

/// Rates (per second) and bursts of a connection's two buckets.
#[derive(Debug, Clone, Copy)]
pub struct Rates {
    pub message_rate: u32,
    pub message_burst: u16,
    pub join_rate: u32,
    pub join_burst: u8,
}

/// Brings both buckets up to `now_s` (worker clock, seconds mod 2^16). Each bucket refills at its
/// own rate, independently of whether the other limit is on.
pub fn refill_buckets(
    tokens: &mut u16,
    join_tokens: &mut u8,
    refill_s: &mut u16,
    now_s: u16,
    rates: Rates,
) {
    // The idle timeout (≤ 1 h, checked in config) keeps elapsed far below the u16 wrap.
    let elapsed = now_s.wrapping_sub(*refill_s);
    *tokens = refill(*tokens, elapsed, rates.message_rate, rates.message_burst);
    *join_tokens = refill(
        u16::from(*join_tokens),
        elapsed,
        rates.join_rate,
        u16::from(rates.join_burst),
    ) as u8;
    *refill_s = now_s;
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

    /// Takes `cost` tokens; false when the connection is over its rate. Refills both buckets
    /// first, whichever limits are on: the join bucket refills on this clock too, so a disabled
    /// message limit must not freeze it.
    pub(crate) fn take_tokens(&mut self, slot: u32, cost: u16) -> bool {
        let rates = Rates {
            message_rate: self.cfg.max_messages_per_second,
            message_burst: self.burst(),
            join_rate: self.cfg.max_joins_per_second,
            join_burst: self.join_burst(),
        };
        let now = self.now_s();
        let c = &mut self.conns[slot as usize];
        refill_buckets(
            &mut c.tokens,
            &mut c.join_tokens,
            &mut c.refill_s,
            now,
            rates,
        );
        if rates.message_rate == 0 {
            return true;
        }
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
    use super::{refill, refill_buckets, Rates};

    #[test]
    fn refills_at_rate_up_to_burst() {
        assert_eq!(refill(0, 1, 100, 200), 100);
        assert_eq!(refill(150, 1, 100, 200), 200);
        assert_eq!(refill(5, 0, 100, 200), 5);
        assert_eq!(refill(0, u16::MAX, u32::MAX, 200), 200);
    }

    /// Issue 9, defect 3: the join bucket refills with the message limit off (rate 0).
    #[test]
    fn join_bucket_refills_without_a_message_limit() {
        let rates = Rates {
            message_rate: 0,
            message_burst: 0,
            join_rate: 5,
            join_burst: 10,
        };
        let (mut tokens, mut joins, mut at) = (0u16, 0u8, 100u16);
        refill_buckets(&mut tokens, &mut joins, &mut at, 100, rates);
        assert_eq!((tokens, joins, at), (0, 0, 100));
        refill_buckets(&mut tokens, &mut joins, &mut at, 101, rates);
        assert_eq!((tokens, joins, at), (0, 5, 101));
        refill_buckets(&mut tokens, &mut joins, &mut at, 110, rates);
        assert_eq!((tokens, joins, at), (0, 10, 110));
    }
}
