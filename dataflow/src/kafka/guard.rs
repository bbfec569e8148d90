//! Checks each record's offset against the offset a source expects next.
//!
//! A record below it was absorbed already (a broker or client redelivered
//! it): applying it again would count it twice, so it is dropped. A
//! partition resumed at a committed offset must first deliver that very
//! offset; a higher one means the broker skipped records, which on a topic
//! without transactions or compaction is a broker fault. It is reported,
//! never passed over silently.

use std::collections::{BTreeMap, BTreeSet};

/// Records skipped because a broker answered past the offset asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerFault {
    pub partition: i32,
    /// The committed offset the partition resumed at.
    pub expected: i64,
    /// The first offset the broker delivered.
    pub received: i64,
}

impl BrokerFault {
    pub fn skipped(&self) -> i64 {
        self.received - self.expected
    }
}

impl std::fmt::Display for BrokerFault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "broker fault: partition {} resumed at offset {} but the broker's first record was \
             offset {}; {} records were skipped",
            self.partition,
            self.expected,
            self.received,
            self.skipped()
        )
    }
}

/// What [`OffsetGuard::admit`] decided for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// The record is new: absorb it.
    Absorb,
    /// The record is below the next offset: it was absorbed before.
    Redelivered,
    /// The record is new, but the broker skipped records before it.
    AbsorbAfterFault(BrokerFault),
}

#[derive(Debug, Default)]
pub struct OffsetGuard {
    /// Next offset to absorb, per partition.
    next: BTreeMap<i32, i64>,
    /// Partitions resumed at a committed offset whose first record has
    /// not come yet.
    resuming: BTreeSet<i32>,
    /// Whether offset gaps after a resume are expected (compaction).
    gaps_expected: bool,
}

impl OffsetGuard {
    /// A guard starting at the committed next offsets (a partition not
    /// listed starts at its beginning, wherever that is).
    pub fn new(start: BTreeMap<i32, i64>) -> Self {
        OffsetGuard {
            next: start,
            ..OffsetGuard::default()
        }
    }

    /// The next offset to absorb from `partition`, if any was absorbed.
    pub fn next(&self, partition: i32) -> Option<i64> {
        self.next.get(&partition).copied()
    }

    /// Called when the consumer is (re)assigned at the next offsets: each
    /// partition's first record must be at its next offset.
    pub fn resume(&mut self, gaps_expected: bool) {
        self.resuming = self.next.keys().copied().collect();
        self.gaps_expected = gaps_expected;
    }

    /// Decides what to do with the record at `offset` of `partition`.
    pub fn admit(&mut self, partition: i32, offset: i64) -> Admission {
        let next = self.next.get(&partition).copied();
        if next.is_some_and(|next| offset < next) {
            return Admission::Redelivered;
        }
        self.next.insert(partition, offset + 1);
        let resuming = self.resuming.remove(&partition);
        match next {
            Some(expected) if resuming && offset > expected && !self.gaps_expected => {
                Admission::AbsorbAfterFault(BrokerFault {
                    partition,
                    expected,
                    received: offset,
                })
            }
            _ => Admission::Absorb,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_below_the_next_offset_are_dropped() {
        let mut guard = OffsetGuard::new(BTreeMap::from([(0, 10)]));
        guard.resume(false);
        // A broker that answers with the whole batch holding offset 10.
        for offset in 7..10 {
            assert_eq!(guard.admit(0, offset), Admission::Redelivered);
        }
        assert_eq!(guard.admit(0, 10), Admission::Absorb);
        assert_eq!(guard.admit(0, 11), Admission::Absorb);
        // A client that resets a partition and reads it again.
        assert_eq!(guard.admit(0, 3), Admission::Redelivered);
        assert_eq!(guard.admit(0, 11), Admission::Redelivered);
        assert_eq!(guard.admit(0, 12), Admission::Absorb);
        assert_eq!(guard.next(0), Some(13));
    }

    #[test]
    fn a_resumed_partition_that_starts_past_its_offset_is_a_fault() {
        let mut guard = OffsetGuard::new(BTreeMap::from([(0, 100), (1, 50)]));
        guard.resume(false);
        assert_eq!(
            guard.admit(0, 140),
            Admission::AbsorbAfterFault(BrokerFault {
                partition: 0,
                expected: 100,
                received: 140
            })
        );
        assert_eq!(guard.admit(1, 50), Admission::Absorb);
        // Later gaps are not faults: transactions leave them too.
        assert_eq!(guard.admit(1, 52), Admission::Absorb);
        assert_eq!(guard.admit(0, 145), Admission::Absorb);
        // A new partition, or one read from its beginning, has nothing to
        // resume from.
        assert_eq!(guard.admit(2, 7), Admission::Absorb);
    }

    #[test]
    fn the_fault_is_judged_on_the_first_new_record() {
        let mut guard = OffsetGuard::new(BTreeMap::from([(0, 10)]));
        guard.resume(false);
        assert_eq!(guard.admit(0, 9), Admission::Redelivered);
        assert!(matches!(guard.admit(0, 12), Admission::AbsorbAfterFault(f) if f.skipped() == 2));
    }

    #[test]
    fn compacted_topics_expect_gaps() {
        let mut guard = OffsetGuard::new(BTreeMap::from([(0, 10)]));
        guard.resume(true);
        assert_eq!(guard.admit(0, 15), Admission::Absorb);
    }
}
