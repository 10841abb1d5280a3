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

/// Masters that hold fewer of `channels` than they own, as `(master, held, expected)`, sorted by
/// master. `held` is the count each reachable master reports; a master missing from it (not
/// reachable now) is not judged.
pub fn shortfall(
    held: &HashMap<String, u64>,
    owners: &SlotOwners,
    channels: &[String],
) -> Vec<(String, u64, u64)> {
    let mut expected: HashMap<&str, u64> = HashMap::new();
    for c in channels {
        if let Some(node) = owner(owners, c) {
            *expected.entry(node).or_default() += 1;
        }
    }
    let mut short: Vec<(String, u64, u64)> = expected
        .into_iter()
        .filter_map(|(node, want)| {
            let has = *held.get(node)?;
            (has < want).then(|| (node.to_string(), has, want))
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
        let channels: Vec<String> = ["bar", "user1000", "{}foo", "foo", "ringgate:rooms:x"]
            .map(String::from)
            .to_vec();
        let held = |a: u64, b: u64, c: u64| {
            HashMap::from([
                ("127.0.0.1:7000".to_string(), a),
                ("127.0.0.1:7001".to_string(), b),
                ("127.0.0.1:7002".to_string(), c),
            ])
        };
        assert_eq!(shortfall(&held(2, 1, 2), &owners, &channels), vec![]);
        // More than expected (the client re-subscribed something on its own) is not a loss.
        assert_eq!(shortfall(&held(3, 1, 5), &owners, &channels), vec![]);
        assert_eq!(
            shortfall(&held(1, 1, 0), &owners, &channels),
            vec![
                ("127.0.0.1:7000".to_string(), 1, 2),
                ("127.0.0.1:7002".to_string(), 0, 2)
            ]
        );
        // An unreachable master (absent from the answers) is not judged.
        let mut partial = held(2, 0, 2);
        partial.remove("127.0.0.1:7001");
        assert_eq!(shortfall(&partial, &owners, &channels), vec![]);
    }
}
