//! Idempotent producers: per partition, the last few batches of each producer id, so that a
//! retried batch is answered with the offsets it got the first time instead of being appended
//! again.
//!
//! Rules (Kafka's, for one producer epoch):
//! - a batch of a producer the partition does not know must start at sequence 0;
//! - otherwise its first sequence must follow the producer's last one (sequences wrap from
//!   `i32::MAX` to 0), or it must be exactly one of the producer's last [`RECENT_BATCHES`]
//!   batches — a duplicate, acknowledged again with its original offsets;
//! - a lower epoch than the producer's last is fenced; a higher one starts again at 0.
//!
//! Where the state lives, so it survives restarts and failover:
//! - committed: each cold segment's manifest entry carries the producer batches it holds (the
//!   last few per producer), and the manifest state folds them in commit order;
//! - not yet committed: rebuilt from the hot segments past the cold end when a partition opens.
//!
//! Producers idle for [`PRODUCER_EXPIRY_MS`] (by record time) are forgotten; such a producer's
//! next batch is refused as out of order and it starts over under a new id.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::batch::BatchHeader;
use crate::error::{Error, Result};

/// Batches remembered per producer: the most requests a producer may have in flight per
/// partition and still have a retry recognised. Kafka's clients keep at most 5; tierlog's own
/// keeps up to this many (acks=all requests wait for an upload cycle). Each is 48 bytes in
/// memory and about 110 in a checkpoint, per producer and partition.
pub const RECENT_BATCHES: usize = 64;

/// A producer with no batch in this long (by record timestamps) is forgotten: 7 days.
pub const PRODUCER_EXPIRY_MS: i64 = 7 * 24 * 3600 * 1000;

/// One appended batch of an idempotent producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProducerBatch {
    pub epoch: i16,
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
    pub max_timestamp: i64,
}

impl ProducerBatch {
    /// The producer id and batch of a header that carries a producer id, placed at `base`.
    pub fn of(h: &BatchHeader, base: i64) -> Option<(i64, ProducerBatch)> {
        let p = h.producer;
        (p.producer_id >= 0).then(|| {
            (
                p.producer_id,
                ProducerBatch {
                    epoch: p.producer_epoch,
                    first_seq: p.base_sequence,
                    last_seq: seq_add(p.base_sequence, h.last_offset_delta),
                    base_offset: base,
                    last_offset: base + i64::from(h.last_offset_delta),
                    max_timestamp: h.max_timestamp,
                },
            )
        })
    }
}

/// `seq + n` with Kafka's wrap-around from `i32::MAX` to 0.
pub fn seq_add(seq: i32, n: i32) -> i32 {
    ((i64::from(seq) + i64::from(n)) % (i64::from(i32::MAX) + 1)) as i32
}

/// The recent batches of every known producer of one partition, oldest first per producer.
/// Stored as a list of `{"id": …, "batches": […]}` (JSON object keys would be strings).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "Vec<ProducerEntry>", into = "Vec<ProducerEntry>")]
pub struct ProducerStates {
    producers: BTreeMap<i64, Vec<ProducerBatch>>,
}

/// One producer of [`ProducerStates`] as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ProducerEntry {
    id: i64,
    batches: Vec<ProducerBatch>,
}

impl From<Vec<ProducerEntry>> for ProducerStates {
    fn from(v: Vec<ProducerEntry>) -> Self {
        ProducerStates {
            producers: v.into_iter().map(|e| (e.id, e.batches)).collect(),
        }
    }
}

impl From<ProducerStates> for Vec<ProducerEntry> {
    fn from(s: ProducerStates) -> Self {
        s.producers
            .into_iter()
            .map(|(id, batches)| ProducerEntry { id, batches })
            .collect()
    }
}

impl ProducerStates {
    pub fn is_empty(&self) -> bool {
        self.producers.is_empty()
    }

    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Checks a batch before it is appended: `Ok(None)` to append it, `Ok(Some((base, last)))`
    /// when it is a duplicate of a batch appended at those offsets, or an error when its
    /// sequence cannot be accepted.
    pub fn check(&self, h: &BatchHeader) -> Result<Option<(i64, i64)>> {
        let p = h.producer;
        if p.producer_id < 0 {
            return Ok(None);
        }
        let first = p.base_sequence;
        let out_of_order = |expected: i32| Error::OutOfOrderSequence {
            producer_id: p.producer_id,
            expected,
            got: first,
        };
        let recent = self
            .producers
            .get(&p.producer_id)
            .map_or(&[][..], Vec::as_slice);
        match recent.last() {
            Some(newest) if p.producer_epoch < newest.epoch => Err(Error::ProducerFenced {
                producer_id: p.producer_id,
                epoch: p.producer_epoch,
                current: newest.epoch,
            }),
            Some(newest) if p.producer_epoch == newest.epoch => {
                let last = seq_add(first, h.last_offset_delta);
                if let Some(b) = recent.iter().find(|b| {
                    b.epoch == p.producer_epoch && b.first_seq == first && b.last_seq == last
                }) {
                    return Ok(Some((b.base_offset, b.last_offset)));
                }
                let expected = seq_add(newest.last_seq, 1);
                if first == expected {
                    Ok(None)
                } else {
                    Err(out_of_order(expected))
                }
            }
            // A producer (or an epoch of it) this partition does not know starts at 0.
            _ if first == 0 => Ok(None),
            _ => Err(out_of_order(0)),
        }
    }

    /// Records an appended batch. Batches at or below what is known of the producer are
    /// ignored, so folding the same history twice changes nothing.
    pub fn record(&mut self, producer_id: i64, b: ProducerBatch) {
        let batches = self.producers.entry(producer_id).or_default();
        if batches
            .last()
            .is_some_and(|l| b.base_offset <= l.last_offset)
        {
            return;
        }
        if batches.last().is_some_and(|l| l.epoch != b.epoch) {
            batches.clear();
        }
        batches.push(b);
        if batches.len() > RECENT_BATCHES {
            batches.remove(0);
        }
    }

    /// Folds in `later` (the state of a later stretch of the log).
    pub fn merge(&mut self, later: &ProducerStates) {
        for (&id, batches) in &later.producers {
            for b in batches {
                self.record(id, *b);
            }
        }
    }

    /// Forgets producers whose newest batch is older than [`PRODUCER_EXPIRY_MS`] before `now`.
    pub fn expire(&mut self, now: i64) {
        self.producers.retain(|_, b| {
            b.last()
                .is_some_and(|l| l.max_timestamp >= now.saturating_sub(PRODUCER_EXPIRY_MS))
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{BatchBuilder, Compression, ProducerInfo};

    fn header(id: i64, epoch: i16, seq: i32, n: usize) -> BatchHeader {
        let mut b = BatchBuilder::new(Compression::None).producer(
            ProducerInfo {
                producer_id: id,
                producer_epoch: epoch,
                base_sequence: seq,
            },
            false,
        );
        for i in 0..n {
            b.push(1_000 + i as i64, None, Some(b"v"), &[]);
        }
        *b.build().unwrap().header()
    }

    fn append(s: &mut ProducerStates, h: &BatchHeader, base: i64) {
        assert_eq!(s.check(h).unwrap(), None);
        let (id, b) = ProducerBatch::of(h, base).unwrap();
        s.record(id, b);
    }

    #[test]
    fn sequences_must_follow_and_retries_get_their_first_offsets() {
        let mut s = ProducerStates::default();
        append(&mut s, &header(7, 0, 0, 3), 100);
        append(&mut s, &header(7, 0, 3, 2), 103);
        // A retry of either recent batch is a duplicate at its original offsets.
        assert_eq!(s.check(&header(7, 0, 3, 2)).unwrap(), Some((103, 104)));
        assert_eq!(s.check(&header(7, 0, 0, 3)).unwrap(), Some((100, 102)));
        // A gap is refused and names what was expected.
        match s.check(&header(7, 0, 9, 1)) {
            Err(Error::OutOfOrderSequence { expected, got, .. }) => {
                assert_eq!((expected, got), (5, 9))
            }
            other => panic!("{other:?}"),
        }
        // Unknown producers start at 0; other producers are independent.
        assert!(s.check(&header(8, 0, 4, 1)).is_err());
        append(&mut s, &header(8, 0, 0, 1), 105);
        // A lower epoch is fenced; a higher one starts over.
        append(&mut s, &header(7, 1, 0, 1), 106);
        assert!(matches!(
            s.check(&header(7, 0, 5, 1)),
            Err(Error::ProducerFenced { .. })
        ));
        // Batches without a producer id are not checked.
        assert_eq!(s.check(&header(-1, -1, -1, 4)).unwrap(), None);
    }

    #[test]
    fn only_the_recent_batches_are_kept_and_folding_twice_changes_nothing() {
        let mut s = ProducerStates::default();
        let n = RECENT_BATCHES as i32 + 3;
        for i in 0..n {
            append(&mut s, &header(1, 0, i, 1), i64::from(i));
        }
        assert_eq!(s.producers[&1].len(), RECENT_BATCHES);
        assert_eq!(s.producers[&1][0].first_seq, n - RECENT_BATCHES as i32);
        // A retry of the oldest batch a full window of requests ago is still recognised; one
        // older is not.
        let oldest = n - RECENT_BATCHES as i32;
        assert_eq!(
            s.check(&header(1, 0, oldest, 1)).unwrap(),
            Some((i64::from(oldest), i64::from(oldest)))
        );
        assert!(matches!(
            s.check(&header(1, 0, oldest - 1, 1)),
            Err(Error::OutOfOrderSequence { .. })
        ));
        let copy = s.clone();
        s.merge(&copy);
        assert_eq!(s, copy);
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(serde_json::from_str::<ProducerStates>(&json).unwrap(), s);
        // As the manifest decodes it: through a JSON value.
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(serde_json::from_value::<ProducerStates>(value).unwrap(), s);
        s.expire(1_000 + PRODUCER_EXPIRY_MS + 1);
        assert!(s.is_empty());
    }

    #[test]
    fn sequences_wrap() {
        assert_eq!(seq_add(i32::MAX, 1), 0);
        assert_eq!(seq_add(i32::MAX - 1, 3), 1);
    }
}
