//! Which Redis Cluster master should hold which of this node's shard channels, sans-IO: the
//! arithmetic of the subscription check (the reconciler asks the masters, this compares).

use std::collections::HashMap;

/// Slot ranges and the master (`host:port`) that owns each, as `CLUSTER SLOTS` lists them.
pub type SlotOwners = Vec<(u16, u16, String)>;

/// The Cluster hash slot of a key or channel: CRC16 (XMODEM) of the key, or of its hash tag
/// (the part between the first `{` and the next `}`, when not empty), modulo 16384.
pub fn hash_slot(key: &[u8]) -> u16 {
    let tagged = key.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &key[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16::State::<crc16::XMODEM>::calculate(tagged.unwrap_or(key)) % 16384
}

/// The master owning `channel`'s slot, if the map covers it.
pub fn owner<'a>(owners: &'a SlotOwners, channel: &str) -> Option<&'a str> {
    let slot = hash_slot(channel.as_bytes());
    owners
        .iter()
        .find(|(start, end, _)| (*start..=*end).contains(&slot))
        .map(|(_, _, node)| node.as_str())
}

/// Hash slots in a Redis Cluster.
pub const SLOTS: usize = 16384;

/// How many of this node's shard channels hash to each slot, kept as channels are subscribed and
/// unsubscribed, so the subscription check sums 16,384 counters per pass instead of naming and
/// hashing every channel again (~110 ns per channel: 110 ms per pass at 1M topics, on the control
/// runtime; `benches/bus_audit.rs`).
pub struct SlotCounts(Box<[u32]>);

impl Default for SlotCounts {
    fn default() -> Self {
        Self(vec![0; SLOTS].into_boxed_slice())
    }
}

impl SlotCounts {
    pub fn add(&mut self, slot: u16) {
        self.0[usize::from(slot) % SLOTS] += 1;
    }

    pub fn remove(&mut self, slot: u16) {
        let c = &mut self.0[usize::from(slot) % SLOTS];
        *c = c.saturating_sub(1);
    }

    pub fn clear(&mut self) {
        self.0.fill(0);
    }

    /// Channels each master owns: the counts over its slot ranges.
    pub fn per_owner<'a>(&self, owners: &'a SlotOwners) -> HashMap<&'a str, u64> {
        let mut expected: HashMap<&str, u64> = HashMap::new();
        for (start, end, node) in owners {
            let range = usize::from(*start)..=usize::from(*end).min(SLOTS - 1);
            let n: u64 = self.0[range].iter().map(|c| u64::from(*c)).sum();
            *expected.entry(node.as_str()).or_default() += n;
        }
        expected
    }
}

/// Masters that hold fewer channels than they own (`expected`, per master), as `(master, held,
/// expected)`, sorted by master. `held` is the count each reachable master reports; a master
/// missing from it (not reachable now) is not judged.
pub fn shortfall(
    held: &HashMap<String, u64>,
    expected: &HashMap<&str, u64>,
) -> Vec<(String, u64, u64)> {
    let mut short: Vec<(String, u64, u64)> = expected
        .iter()
        .filter_map(|(node, want)| {
            let has = *held.get(*node)?;
            (has < *want).then(|| (node.to_string(), has, *want))
        })
        .collect();
    short.sort();
    short
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_slots_match_redis() {
        // Values from `CLUSTER KEYSLOT` on Redis 7.
        assert_eq!(hash_slot(b"foo"), 12182);
        assert_eq!(hash_slot(b"bar"), 5061);
        assert_eq!(hash_slot(b"{user1000}.following"), 3443);
        assert_eq!(hash_slot(b"user1000"), 3443);
        assert_eq!(hash_slot(b"foo{}{bar}"), 8363); // an empty tag: the whole key
        assert_eq!(hash_slot(b"{}foo"), 9500);
        assert_eq!(hash_slot(b"ringgate:rooms:x"), 11766);
    }

    fn three_masters() -> SlotOwners {
        vec![
            (0, 5460, "127.0.0.1:7000".into()),
            (5461, 10922, "127.0.0.1:7001".into()),
            (10923, 16383, "127.0.0.1:7002".into()),
        ]
    }

    #[test]
    fn channels_are_counted_on_the_master_owning_their_slot() {
        let owners = three_masters();
        assert_eq!(owner(&owners, "bar"), Some("127.0.0.1:7000")); // slot 5061
        assert_eq!(owner(&owners, "user1000"), Some("127.0.0.1:7000")); // 3443
        assert_eq!(owner(&owners, "{}foo"), Some("127.0.0.1:7001")); // 9500
        assert_eq!(owner(&owners, "foo"), Some("127.0.0.1:7002")); // 12182
        assert_eq!(owner(&owners[..2].to_vec(), "foo"), None);
    }

    #[test]
    fn a_master_holding_fewer_than_it_owns_is_short() {
        let owners = three_masters();
        let mut counts = SlotCounts::default();
        for c in [
            "bar",
            "user1000",
            "{}foo",
            "foo",
            "ringgate:rooms:x",
            "gone",
        ] {
            counts.add(hash_slot(c.as_bytes()));
        }
        counts.remove(hash_slot(b"gone"));
        let expected = counts.per_owner(&owners);
        assert_eq!(
            expected,
            HashMap::from([
                ("127.0.0.1:7000", 2),
                ("127.0.0.1:7001", 1),
                ("127.0.0.1:7002", 2)
            ])
        );
        let held = |a: u64, b: u64, c: u64| {
            HashMap::from([
                ("127.0.0.1:7000".to_string(), a),
                ("127.0.0.1:7001".to_string(), b),
                ("127.0.0.1:7002".to_string(), c),
            ])
        };
        assert_eq!(shortfall(&held(2, 1, 2), &expected), vec![]);
        // More than expected (the client re-subscribed something on its own) is not a loss.
        assert_eq!(shortfall(&held(3, 1, 5), &expected), vec![]);
        assert_eq!(
            shortfall(&held(1, 1, 0), &expected),
            vec![
                ("127.0.0.1:7000".to_string(), 1, 2),
                ("127.0.0.1:7002".to_string(), 0, 2)
            ]
        );
        // An unreachable master (absent from the answers) is not judged.
        let mut partial = held(2, 0, 2);
        partial.remove("127.0.0.1:7001");
        assert_eq!(shortfall(&partial, &expected), vec![]);
    }
}
