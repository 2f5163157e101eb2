//! Redis Cluster key slots, and the choice of partition hash tags that spreads a
//! namespace's partitions over the masters.

/// Slots of a Redis Cluster.
pub(crate) const SLOTS: u16 = 16384;

/// The CRC16 (XModem) of `bytes`, as Redis Cluster computes it.
fn crc16(bytes: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for &byte in bytes {
        crc ^= u16::from(byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

/// The slot of a key: of its hash tag (the text between the first `{` and the next `}`,
/// when not empty), else of the whole key.
pub(crate) fn slot_of(key: &str) -> u16 {
    let bytes = key.as_bytes();
    let tagged = bytes.iter().position(|&b| b == b'{').and_then(|open| {
        let rest = &bytes[open + 1..];
        let close = rest.iter().position(|&b| b == b'}')?;
        (close > 0).then(|| &rest[..close])
    });
    crc16(tagged.unwrap_or(bytes)) % SLOTS
}

/// A short hash tag per slot: `slot_tag(s)` is the shortest lowercase hex string (the first
/// found counting up) whose slot is `s`, so a key holding `{…}` with it lands in slot `s`.
/// Computed once (about 170,000 CRC16s of 1–5 bytes).
pub(crate) fn slot_tag(slot: u16) -> &'static str {
    static TAGS: std::sync::LazyLock<Vec<String>> = std::sync::LazyLock::new(|| {
        let mut tags = vec![String::new(); usize::from(SLOTS)];
        let mut missing = tags.len();
        let mut n = 0u64;
        while missing > 0 {
            let tag = format!("{n:x}");
            let slot = usize::from(crc16(tag.as_bytes()) % SLOTS);
            if tags[slot].is_empty() {
                tags[slot] = tag;
                missing -= 1;
            }
            n += 1;
        }
        tags
    });
    TAGS.get(usize::from(slot % SLOTS))
        .map_or("", String::as_str)
}

/// One master of a cluster and the slot ranges it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Master {
    /// `host:port`.
    pub(crate) address: String,
    /// Inclusive slot ranges.
    pub(crate) ranges: Vec<(u16, u16)>,
}

impl Master {
    fn owns(&self, slot: u16) -> bool {
        self.ranges.iter().any(|&(a, b)| a <= slot && slot <= b)
    }

    fn first_slot(&self) -> u16 {
        self.ranges.iter().map(|r| r.0).min().unwrap_or(SLOTS)
    }
}

/// The master serving `slot`, if any.
pub(crate) fn owner(masters: &[Master], slot: u16) -> Option<&Master> {
    masters.iter().find(|m| m.owns(slot))
}

/// The hash tag of partition `index` on a single node: `p{index}`.
pub(crate) fn single_node_tag(index: u32) -> String {
    format!("p{index}")
}

/// Chooses the hash tag of partition `index` on a cluster, Kafka style: partitions go to the
/// masters round-robin (masters ordered by their first slot), each to a slot no earlier
/// partition uses. The tag is `p{index}.{salt}`, with the smallest salt that lands there.
pub(crate) fn cluster_tag(index: u32, masters: &[Master], taken: &[String]) -> String {
    let mut ordered: Vec<&Master> = masters.iter().collect();
    ordered.sort_by_key(|m| m.first_slot());
    let used: Vec<u16> = taken.iter().map(|t| slot_of(&format!("{{{t}}}"))).collect();
    let target = ordered.get(index as usize % ordered.len().max(1)).copied();
    let mut fallback = None;
    for salt in 0..200_000u32 {
        let tag = format!("p{index}.{salt}");
        let slot = crc16(tag.as_bytes()) % SLOTS;
        if used.contains(&slot) {
            continue;
        }
        match target {
            Some(master) if !master.owns(slot) => {
                fallback.get_or_insert(tag);
            }
            _ => return tag,
        }
    }
    fallback.unwrap_or_else(|| format!("p{index}.0"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_match_redis() {
        // Values from `CLUSTER KEYSLOT`.
        assert_eq!(slot_of("foo"), 12182);
        assert_eq!(slot_of("{user1000}.following"), slot_of("user1000"));
        assert_eq!(slot_of("foo{}{bar}"), crc16(b"foo{}{bar}") % SLOTS);
        assert_eq!(slot_of("123456789"), crc16(b"123456789") % SLOTS);
        assert_eq!(crc16(b"123456789"), 0x31C3);
    }

    #[test]
    fn every_slot_has_a_tag_landing_in_it() {
        for slot in 0..SLOTS {
            let tag = slot_tag(slot);
            assert!(!tag.is_empty() && !tag.contains(['{', '}']));
            assert_eq!(slot_of(&format!("x:{{{tag}}}")), slot, "{tag}");
        }
        assert!((0..SLOTS).all(|s| slot_tag(s).len() <= 5));
    }

    #[test]
    fn tags_spread_round_robin_over_masters() {
        let masters = vec![
            Master {
                address: "a".into(),
                ranges: vec![(0, 5460)],
            },
            Master {
                address: "b".into(),
                ranges: vec![(5461, 10922)],
            },
            Master {
                address: "c".into(),
                ranges: vec![(10923, 16383)],
            },
        ];
        let mut tags: Vec<String> = Vec::new();
        for index in 0..6 {
            let tag = cluster_tag(index, &masters, &tags);
            tags.push(tag);
        }
        let homes: Vec<&str> = tags
            .iter()
            .map(|t| {
                owner(&masters, slot_of(&format!("{{{t}}}")))
                    .map(|m| m.address.as_str())
                    .unwrap_or("none")
            })
            .collect();
        assert_eq!(homes, ["a", "b", "c", "a", "b", "c"]);
        let mut slots: Vec<u16> = tags.iter().map(|t| slot_of(&format!("{{{t}}}"))).collect();
        slots.dedup();
        assert_eq!(slots.len(), 6);
    }
}
