//! `user_data` tokens: which operation a completion belongs to, on which slot, at which generation.
//!
//! Layout (64 bits): `op` (8) | `slot` (24) | `generation` (32). A slot is a fixed-file index, so 24
//! bits allow 16M connections per ring, far above any fixed-file table. The generation guards against
//! a completion that refers to an earlier occupant of a reused slot.

/// What a completion is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Multishot accept on the worker's listener.
    Accept = 1,
    /// Readiness of a connection (multishot poll).
    Poll = 2,
    /// A buffer-select receive (one-shot in poll mode, multishot otherwise).
    Recv = 3,
    /// A send of the connection's head frame.
    Send = 4,
    /// `shutdown(SHUT_WR)` after our close frame or HTTP error response.
    Shutdown = 5,
    /// Cancellation of every request on a slot, before it is closed.
    Cancel = 6,
    /// Close of a fixed-file slot.
    Close = 7,
    /// The timer wheel tick.
    Tick = 8,
    /// The cross-thread inbox eventfd became readable.
    Inbox = 9,
    /// `getsockopt(SO_PEERNAME)` of a new connection (for the per-address limit).
    PeerName = 10,
    /// Load generator: a client socket created into a fixed slot (posts only on failure).
    Socket = 11,
    /// Load generator: a socket option set on a new client socket (posts only on failure).
    SockOpt = 12,
    /// Load generator: a client socket bound to a source address (posts only on failure).
    Bind = 13,
    /// Load generator: the connect that ends a client socket's set-up chain (always posts).
    Connect = 14,
}

impl Op {
    fn from_u8(v: u8) -> Option<Self> {
        Some(match v {
            1 => Self::Accept,
            2 => Self::Poll,
            3 => Self::Recv,
            4 => Self::Send,
            5 => Self::Shutdown,
            6 => Self::Cancel,
            7 => Self::Close,
            8 => Self::Tick,
            9 => Self::Inbox,
            10 => Self::PeerName,
            11 => Self::Socket,
            12 => Self::SockOpt,
            13 => Self::Bind,
            14 => Self::Connect,
            _ => return None,
        })
    }
}

/// Largest slot a token can carry.
pub const MAX_SLOT: u32 = (1 << 24) - 1;

/// A decoded `user_data`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Token {
    pub op: Op,
    pub slot: u32,
    pub gen: u32,
}

impl Token {
    pub fn new(op: Op, slot: u32, gen: u32) -> Self {
        debug_assert!(slot <= MAX_SLOT);
        Self { op, slot, gen }
    }

    /// A token for a worker-level operation that has no slot.
    pub fn global(op: Op) -> Self {
        Self::new(op, 0, 0)
    }

    pub fn encode(self) -> u64 {
        (u64::from(self.op as u8) << 56)
            | (u64::from(self.slot & MAX_SLOT) << 32)
            | u64::from(self.gen)
    }

    /// `None` for a value no token produced (a kernel or logic error the caller logs).
    pub fn decode(v: u64) -> Option<Self> {
        let op = Op::from_u8((v >> 56) as u8)?;
        Some(Self {
            op,
            slot: ((v >> 32) as u32) & MAX_SLOT,
            gen: v as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_extremes() {
        for op in [
            Op::Accept,
            Op::Poll,
            Op::Recv,
            Op::Send,
            Op::Shutdown,
            Op::Cancel,
            Op::Close,
            Op::Tick,
            Op::Inbox,
            Op::Socket,
            Op::SockOpt,
            Op::Bind,
            Op::Connect,
        ] {
            for slot in [0, 1, MAX_SLOT] {
                for gen in [0, 1, u32::MAX] {
                    let t = Token::new(op, slot, gen);
                    assert_eq!(Token::decode(t.encode()), Some(t));
                }
            }
        }
    }

    #[test]
    fn zero_is_not_a_token() {
        assert_eq!(Token::decode(0), None);
    }
}
