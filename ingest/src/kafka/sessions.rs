//! Incremental fetch sessions (KIP-227). A client that fetches many partitions opens a session
//! with a full fetch (session id 0, epoch 0); the node remembers the partitions, their fetch
//! offsets and what it last told the client of each (high watermark, log start). Each later
//! fetch in the session (its id, the next epoch) names only the partitions whose fetch offset
//! changed, and those to forget; the answer holds only partitions with records, an error, or a
//! high watermark or log start the client has not been told.
//!
//! Invariants:
//! - a session's epoch moves by one per fetch, taken when the fetch starts: a fetch with
//!   another epoch gets INVALID_FETCH_SESSION_EPOCH and changes nothing, an unknown session
//!   FETCH_SESSION_ID_NOT_FOUND (the client then starts a full session);
//! - sessions live in this node's memory only, at most [`SLOTS`], the least recently used
//!   evicted first: losing one costs the client one full fetch, never a record;
//! - partitions that returned records move to the end of the session's order, so one busy
//!   partition cannot keep the first batch of every answer (KIP-74) to itself.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use kafka_protocol::messages::FetchResponse;

use crate::error::kafka_code;

/// Sessions one node keeps (Kafka's `max.incremental.fetch.session.cache.slots`).
pub(crate) const SLOTS: usize = 1000;

/// A topic partition, as named in fetches.
pub(crate) type Key = (String, i32);

/// A partition of a session: how to fetch it, and what its client was last told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Wanted {
    pub fetch_offset: i64,
    pub partition_max_bytes: i32,
    pub current_leader_epoch: i32,
    /// (high watermark, log start offset) last answered without an error; `None` until then.
    told: Option<(i64, i64)>,
}

impl Wanted {
    pub(crate) fn new(
        fetch_offset: i64,
        partition_max_bytes: i32,
        current_leader_epoch: i32,
    ) -> Self {
        Wanted {
            fetch_offset,
            partition_max_bytes,
            current_leader_epoch,
            told: None,
        }
    }
}

#[derive(Debug)]
struct Session {
    /// The epoch the next fetch must carry.
    epoch: i32,
    /// When it was last used, on the cache's own clock.
    used: u64,
    parts: HashMap<Key, Wanted>,
    /// Fetch order.
    order: Vec<Key>,
}

impl Session {
    fn new(used: u64, parts: Vec<(Key, Wanted)>) -> Session {
        let mut s = Session {
            epoch: 1,
            used,
            parts: HashMap::with_capacity(parts.len()),
            order: Vec::with_capacity(parts.len()),
        };
        s.upsert(parts);
        s
    }

    /// Adds partitions, or updates how they are fetched (what was told stays).
    fn upsert(&mut self, parts: Vec<(Key, Wanted)>) {
        for (key, w) in parts {
            match self.parts.get_mut(&key) {
                Some(had) => {
                    had.fetch_offset = w.fetch_offset;
                    had.partition_max_bytes = w.partition_max_bytes;
                    had.current_leader_epoch = w.current_leader_epoch;
                }
                None => {
                    self.order.push(key.clone());
                    self.parts.insert(key, w);
                }
            }
        }
    }

    fn in_order(&self) -> Vec<(Key, Wanted)> {
        self.order
            .iter()
            .map(|k| (k.clone(), self.parts[k].clone()))
            .collect()
    }
}

/// What a fetch does with respect to sessions.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Plan {
    /// No session: fetch and answer the request's partitions.
    Sessionless,
    /// A new session: fetch and answer the request's partitions; the answer names the id.
    Full(i32),
    /// A fetch in session `id`: fetch every partition of the session (in this order), answer
    /// those that changed.
    Incremental { id: i32, parts: Vec<(Key, Wanted)> },
    /// Refused with this request-level code.
    Refused(i16),
}

#[derive(Debug, Default)]
struct Sessions {
    /// Counts fetches that use the cache.
    clock: u64,
    by_id: HashMap<i32, Session>,
}

/// A node's fetch sessions.
#[derive(Debug, Default)]
pub(crate) struct FetchSessions {
    inner: Mutex<Sessions>,
}

impl FetchSessions {
    /// Starts a fetch with `session_id`/`epoch` naming `parts` (partitions to add or update)
    /// and `forgotten` (partitions to drop). As Kafka: epoch 0 or -1 is a full fetch, closing
    /// session `session_id` if there is one; 0 opens a new session, -1 none.
    pub(crate) fn begin(
        &self,
        session_id: i32,
        epoch: i32,
        parts: Vec<(Key, Wanted)>,
        forgotten: &[Key],
    ) -> Plan {
        let mut s = self.inner.lock().expect("sessions lock poisoned");
        s.clock += 1;
        let now = s.clock;
        match (session_id, epoch) {
            (id, -1) => {
                s.by_id.remove(&id);
                Plan::Sessionless
            }
            (id, 0) => {
                s.by_id.remove(&id);
                if s.by_id.len() >= SLOTS
                    && let Some(oldest) = s
                        .by_id
                        .iter()
                        .min_by_key(|(_, x)| x.used)
                        .map(|(id, _)| *id)
                {
                    s.by_id.remove(&oldest);
                }
                // Random ids, so a client holding an id from before a restart does not find
                // another client's session under it.
                let id = loop {
                    let id = fastrand::i32(1..=i32::MAX);
                    if !s.by_id.contains_key(&id) {
                        break id;
                    }
                };
                s.by_id.insert(id, Session::new(now, parts));
                Plan::Full(id)
            }
            (0, _) => Plan::Refused(kafka_code::FETCH_SESSION_ID_NOT_FOUND),
            (id, e) => {
                let Some(session) = s.by_id.get_mut(&id) else {
                    return Plan::Refused(kafka_code::FETCH_SESSION_ID_NOT_FOUND);
                };
                if e != session.epoch {
                    return Plan::Refused(kafka_code::INVALID_FETCH_SESSION_EPOCH);
                }
                session.epoch = if e == i32::MAX { 1 } else { e + 1 };
                session.used = now;
                if !forgotten.is_empty() {
                    let gone: HashSet<&Key> = forgotten.iter().collect();
                    session.order.retain(|k| !gone.contains(k));
                    session.parts.retain(|k, _| !gone.contains(k));
                }
                session.upsert(parts);
                Plan::Incremental {
                    id,
                    parts: session.in_order(),
                }
            }
        }
    }

    /// Notes what `resp` tells the client of session `id` and, unless `full`, keeps in it only
    /// the partitions with records, an error, or news of the high watermark or log start.
    pub(crate) fn answered(&self, id: i32, full: bool, resp: &mut FetchResponse) {
        let mut s = self.inner.lock().expect("sessions lock poisoned");
        let Some(session) = s.by_id.get_mut(&id) else {
            // Evicted meanwhile: the client is told everything, and learns at its next fetch.
            return;
        };
        let mut busy = HashSet::new();
        for t in &mut resp.responses {
            let topic = t.topic.0.to_string();
            t.partitions.retain(|p| {
                let key = (topic.clone(), p.partition_index);
                let Some(w) = session.parts.get_mut(&key) else {
                    return true;
                };
                if p.error_code != kafka_code::NONE {
                    // The next clean answer is news, whatever it says.
                    w.told = None;
                    return true;
                }
                if p.high_watermark < 0 {
                    // Not read this time (the answer was full): nothing was told.
                    return full;
                }
                let now = (p.high_watermark, p.log_start_offset);
                let has_records = p.records.as_ref().is_some_and(|r| !r.is_empty());
                let news = has_records || w.told != Some(now);
                w.told = Some(now);
                if has_records {
                    busy.insert(key);
                }
                full || news
            });
        }
        resp.responses.retain(|t| !t.partitions.is_empty());
        // Busy partitions go last next time.
        if !busy.is_empty() {
            let (mut rest, moved): (Vec<Key>, Vec<Key>) = std::mem::take(&mut session.order)
                .into_iter()
                .partition(|k| !busy.contains(k));
            rest.extend(moved);
            session.order = rest;
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use kafka_protocol::messages::TopicName;
    use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
    use kafka_protocol::protocol::StrBytes;

    use super::*;

    fn key(p: i32) -> Key {
        ("t".to_string(), p)
    }

    fn want(offset: i64) -> Wanted {
        Wanted::new(offset, 1 << 20, -1)
    }

    /// An answer for partitions (partition, high watermark, records?).
    fn answer(parts: &[(i32, i64, bool)]) -> FetchResponse {
        let mut t =
            FetchableTopicResponse::default().with_topic(TopicName(StrBytes::from_static_str("t")));
        for &(p, hw, records) in parts {
            t.partitions.push(
                PartitionData::default()
                    .with_partition_index(p)
                    .with_high_watermark(hw)
                    .with_log_start_offset(0)
                    .with_records(Some(if records {
                        Bytes::from_static(b"batch")
                    } else {
                        Bytes::new()
                    })),
            );
        }
        FetchResponse::default().with_responses(vec![t])
    }

    fn named(resp: &FetchResponse) -> Vec<i32> {
        resp.responses
            .iter()
            .flat_map(|t| t.partitions.iter().map(|p| p.partition_index))
            .collect()
    }

    #[test]
    fn a_session_answers_what_changed_and_keeps_its_epochs() {
        let s = FetchSessions::default();
        assert_eq!(s.begin(0, -1, vec![], &[]), Plan::Sessionless);
        let Plan::Full(id) = s.begin(0, 0, vec![(key(0), want(0)), (key(1), want(0))], &[]) else {
            panic!("a full fetch opens a session")
        };
        let mut r = answer(&[(0, 5, true), (1, 0, false)]);
        s.answered(id, true, &mut r);
        assert_eq!(
            named(&r),
            vec![0, 1],
            "a full fetch answers every partition"
        );

        // Partition 0 was read up to 5; partition 1 is unchanged and not named.
        let Plan::Incremental { parts, .. } = s.begin(id, 1, vec![(key(0), want(5))], &[]) else {
            panic!("epoch 1 follows")
        };
        // Partition 0 returned records, so it went last.
        assert_eq!(
            parts,
            vec![(key(1), want_told(0, 0)), (key(0), want_told(5, 5))]
        );
        let mut r = answer(&[(1, 0, false), (0, 5, false)]);
        s.answered(id, false, &mut r);
        assert!(named(&r).is_empty(), "nothing new: {r:?}");
        let _ = s.begin(id, 2, vec![], &[]);
        let mut r = answer(&[(1, 3, false), (0, 5, false)]);
        s.answered(id, false, &mut r);
        assert_eq!(named(&r), vec![1], "a moved high watermark is news");
        // A partition the answer had no room to read (high watermark -1) is not named, and
        // what the client was told of it stands.
        let _ = s.begin(id, 3, vec![], &[]);
        let mut r = answer(&[(1, -1, false), (0, 5, false)]);
        s.answered(id, false, &mut r);
        assert!(named(&r).is_empty(), "{r:?}");
        let _ = s.begin(id, 4, vec![], &[]);
        let mut r = answer(&[(1, 3, false), (0, 5, false)]);
        s.answered(id, false, &mut r);
        assert!(named(&r).is_empty(), "still 3: no news {r:?}");

        // Wrong epochs and unknown sessions change nothing.
        assert_eq!(
            s.begin(id, 11, vec![], &[]),
            Plan::Refused(kafka_code::INVALID_FETCH_SESSION_EPOCH)
        );
        assert_eq!(
            s.begin(id + 1, 1, vec![], &[]),
            Plan::Refused(kafka_code::FETCH_SESSION_ID_NOT_FOUND)
        );
        assert_eq!(
            s.begin(0, 5, vec![], &[]),
            Plan::Refused(kafka_code::FETCH_SESSION_ID_NOT_FOUND)
        );
        // Forgotten partitions leave the session; the epoch is still 5.
        let Plan::Incremental { parts, .. } = s.begin(id, 5, vec![], &[key(1)]) else {
            panic!("epoch 5 follows")
        };
        assert_eq!(parts.iter().map(|(k, _)| k.1).collect::<Vec<_>>(), vec![0]);
        // Epoch 0 with the id (what a client sends after a refusal or a lost answer) closes
        // it and opens a new one, full.
        let Plan::Full(again) = s.begin(id, 0, vec![(key(2), want(0))], &[]) else {
            panic!("epoch 0 is a full fetch")
        };
        assert_ne!(again, id);
        assert_eq!(
            s.begin(id, 6, vec![], &[]),
            Plan::Refused(kafka_code::FETCH_SESSION_ID_NOT_FOUND)
        );
        let Plan::Incremental { parts, .. } = s.begin(again, 1, vec![], &[]) else {
            panic!("the new session goes on")
        };
        assert_eq!(parts, vec![(key(2), want(0))]);
        // Epoch -1 closes it, with no new one.
        assert_eq!(s.begin(again, -1, vec![], &[]), Plan::Sessionless);
        assert_eq!(
            s.begin(again, 2, vec![], &[]),
            Plan::Refused(kafka_code::FETCH_SESSION_ID_NOT_FOUND)
        );
    }

    #[test]
    fn an_error_makes_the_next_clean_answer_news() {
        let s = FetchSessions::default();
        let Plan::Full(id) = s.begin(0, 0, vec![(key(0), want(0))], &[]) else {
            panic!()
        };
        s.answered(id, true, &mut answer(&[(0, 5, false)]));
        let _ = s.begin(id, 1, vec![], &[]);
        let mut r = answer(&[(0, 5, false)]);
        r.responses[0].partitions[0].error_code = kafka_code::FENCED_LEADER_EPOCH;
        s.answered(id, false, &mut r);
        assert_eq!(named(&r), vec![0], "an error is news");
        let _ = s.begin(id, 2, vec![], &[]);
        let mut r = answer(&[(0, 5, false)]);
        s.answered(id, false, &mut r);
        assert_eq!(named(&r), vec![0], "and so is the clean answer after it");
    }

    fn want_told(offset: i64, hw: i64) -> Wanted {
        Wanted {
            told: Some((hw, 0)),
            ..want(offset)
        }
    }

    #[test]
    fn the_least_recently_used_session_is_evicted_first() {
        let s = FetchSessions::default();
        let ids: Vec<i32> = (0..SLOTS)
            .map(|_| match s.begin(0, 0, vec![(key(0), want(0))], &[]) {
                Plan::Full(id) => id,
                other => panic!("{other:?}"),
            })
            .collect();
        // The first session is used again; the second is now the oldest.
        assert!(matches!(
            s.begin(ids[0], 1, vec![], &[]),
            Plan::Incremental { .. }
        ));
        let Plan::Full(_) = s.begin(0, 0, vec![], &[]) else {
            panic!("a new session")
        };
        assert!(matches!(
            s.begin(ids[0], 2, vec![], &[]),
            Plan::Incremental { .. }
        ));
        assert_eq!(
            s.begin(ids[1], 1, vec![], &[]),
            Plan::Refused(kafka_code::FETCH_SESSION_ID_NOT_FOUND)
        );
    }
}
