//! Upload: sealed hot segments become Parquet objects that commit themselves to the manifest
//! (the object is the next entry of the partition's commit log), oldest first.
//!
//! acks=all waiters get the active segment sealed when a slot is free and the partition's
//! planned seal has come: at once on a quiet partition; under steady load about once per
//! `flush_interval_ms`, less what a seal takes besides its PUT (fsync, conversion, commit
//! work; so a record is answered about one interval plus one PUT after it arrived), and apart
//! from other partitions' seals (`cold::plan`). That bounds the partition's PUT rate.
//!
//! Up to `uploads_in_flight` segments of a partition are in upload at once, each on a task of
//! its own: converted side by side, written one at a time, each once the one before it is
//! committed. After a failure, the uploads behind it (which wrote nothing) are dropped and
//! uploads start again from the oldest uncommitted segment.
//!
//! Invariants: a segment is committed by one atomic create of its complete object; segments are
//! committed in offset order with no gaps; a failing store is retried with backoff forever (the
//! hot copy stays until the commit lands); a fenced commit stops uploads for the partition; a
//! corrupt sealed segment stops uploads for the partition with an error naming the file, never
//! skipping data.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use crate::cold::manifest::{SegmentCommit, SegmentEntry, segment_footer};
use crate::cold::parquet::{SegmentShape, encode_segment};
use crate::engine::{Inner, Partition};
use crate::error::{Error, Result};
use crate::hot::segment::Segment;

pub(crate) fn spawn(inner: Arc<Inner>, p: Arc<Partition>) {
    let tracker = inner.tasks.clone();
    let handle = tracker.spawn(run(inner, p.clone()));
    *p.uploader.lock().expect("uploader lock poisoned") = Some(handle);
}

/// A sealed segment being converted and committed, on a task of its own.
struct InFlight {
    seg: Arc<Segment>,
    /// When done, how long the segment took from conversion to commit, less its PUT.
    task: AbortOnDropHandle<Result<Duration>>,
}

/// What to do after an upload step failed.
enum Next {
    /// Start again from the oldest segment not committed, after the given pause.
    Retry(Duration),
    Stop,
}

async fn run(inner: Arc<Inner>, p: Arc<Partition>) {
    let idle = inner.cfg.housekeeping();
    let depth = inner.cfg.uploads_in_flight;
    let interval = inner.cfg.flush_interval();
    // When the next seal for acks=all waiters may start: planned after each such seal, within
    // the interval less what a seal takes besides its PUT (so the oldest waiter's record is
    // answered about one interval plus one PUT after it arrived), apart from other partitions'
    // seals.
    let mut due: Option<Instant> = None;
    let mut overhead = Overhead::default();
    let owner = Arc::as_ptr(&p) as crate::cold::plan::Owner;
    let _forget = PlanGuard(&inner, &p.id, owner);
    // Oldest first. Dropping an entry aborts its task; a task commits only after the one before
    // it, so the aborted ones behind a failure have written nothing.
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    loop {
        // Offsets below this are committed or on their way.
        let mut started = in_flight
            .back()
            .map_or(p.log.uploaded_next(), |f| f.seg.next_offset());
        for seg in p.log.pending_uploads() {
            if in_flight.len() >= depth {
                break;
            }
            if seg.base_offset >= started {
                started = seg.next_offset();
                let task = tokio::spawn(upload(inner.clone(), p.clone(), seg.clone()));
                in_flight.push_back(InFlight {
                    seg,
                    task: AbortOnDropHandle::new(task),
                });
            }
        }
        // Waiters for the active segment are served by a seal once a slot is free and the
        // planned moment has come; until then they accumulate.
        let mut wake = Instant::now() + idle;
        if in_flight.len() < depth && waiters_need_seal(&p, started) {
            match due {
                Some(due) if due > Instant::now() => wake = due,
                _ => {
                    let at = Instant::now();
                    if seal_for_waiters(&p).await {
                        overhead.sealed(at.elapsed());
                        let lead = overhead.lead(interval);
                        due = Some(inner.seal_plans.plan(&p.id, owner, at, lead, interval));
                        continue;
                    }
                }
            }
        }
        let next = tokio::select! {
            _ = p.cancel.cancelled() => return,
            done = async { (&mut in_flight.front_mut().expect("checked").task).await },
                if !in_flight.is_empty() =>
            {
                let seg = in_flight.pop_front().expect("checked").seg;
                match done.unwrap_or_else(|e| Err(Error::invalid(format!("upload task failed: {e}")))) {
                    Ok(rest) => {
                        overhead.committed(rest);
                        continue
                    }
                    Err(e) => failed(&inner, &p, &seg, e).await,
                }
            }
            // A waiter can only be served by a seal, for which a slot must be free.
            _ = p.notify.notified(), if in_flight.len() < depth => continue,
            _ = tokio::time::sleep_until(wake) => continue,
        };
        in_flight.clear();
        match next {
            Next::Retry(pause) => tokio::select! {
                _ = p.cancel.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            },
            Next::Stop => return,
        }
    }
}

/// Drops the partition's seal plan when its uploader stops.
struct PlanGuard<'a>(&'a Inner, &'a crate::PartitionId, crate::cold::plan::Owner);

impl Drop for PlanGuard<'_> {
    fn drop(&mut self) {
        self.0.seal_plans.forget(self.1, self.2);
    }
}

/// How long a seal for acks=all waiters takes to answer them, besides the PUT of its object:
/// the seal's fsync, the conversion to Parquet (queueing for an encoder thread included), the
/// wait for the commit before it, and the commit's own work. The estimate is the longest of
/// the last [`OVERHEAD_SEALS`]: the slow tail of seals is what the interval has to absorb, and
/// a burst long past (large conversions) is forgotten after that many seals.
#[derive(Debug, Default)]
struct Overhead {
    seal: Duration,
    recent: VecDeque<Duration>,
}

/// Seals whose overhead [`Overhead`] remembers.
const OVERHEAD_SEALS: usize = 32;

impl Overhead {
    fn sealed(&mut self, took: Duration) {
        self.seal = took;
    }

    /// A sealed segment was committed with `rest` of overhead after its seal (the fsync of the
    /// last seal for waiters counts once, with the first commit after it).
    fn committed(&mut self, rest: Duration) {
        if self.recent.len() == OVERHEAD_SEALS {
            self.recent.pop_front();
        }
        self.recent.push_back(std::mem::take(&mut self.seal) + rest);
    }

    /// The spacing between two seals for waiters: the interval less the expected overhead, by
    /// at most a quarter of it, so that a record is answered about one interval plus one PUT
    /// after it arrived.
    fn lead(&self, interval: Duration) -> Duration {
        let estimate = self.recent.iter().max().copied().unwrap_or_default();
        interval - estimate.min(interval / 4)
    }
}

/// acks=all waiters need offsets that are still in the active segment: they want more than
/// `sealed` (what is sealed or committed already), and it has been appended.
fn waiters_need_seal(p: &Partition, sealed: i64) -> bool {
    let wanted = p.commit_wanted.load(Ordering::Acquire);
    wanted > sealed && p.log.next_offset() >= wanted
}

/// Seals the active segment for acks=all waiters, with everything appended so far. True if it
/// sealed.
async fn seal_for_waiters(p: &Partition) -> bool {
    let log = p.log.clone();
    let started = Instant::now();
    match tokio::task::spawn_blocking(move || log.seal_active(true)).await {
        Ok(Ok(sealed)) => {
            tracing::debug!(topic = %p.id.topic, partition = p.id.partition,
                seal_ms = started.elapsed().as_secs_f64() * 1e3, sealed,
                "sealed for acks=all waiters");
            sealed
        }
        Ok(Err(e)) => {
            tracing::error!(topic = %p.id.topic, partition = p.id.partition, error = %e,
                "cannot seal the active segment for acks=all waiters");
            false
        }
        Err(e) => {
            tracing::error!(error = %e, "seal task failed");
            false
        }
    }
}

/// Decides what an upload failure means for the partition's uploads.
async fn failed(inner: &Inner, p: &Partition, seg: &Segment, e: Error) -> Next {
    match e {
        Error::Closed => Next::Stop,
        e @ Error::Fenced { current, .. } => {
            tracing::error!(topic = %p.id.topic, partition = p.id.partition, error = %e,
                "deposed: stopping uploads; appends are refused");
            p.fenced_by.store(current.max(1), Ordering::Release);
            Next::Stop
        }
        e if !e.is_retryable() => {
            // Retrying cannot change the outcome (corrupt or unconvertible data): stop this
            // partition's uploads loudly rather than loop; the hot copy stays.
            tracing::error!(topic = %p.id.topic, partition = p.id.partition,
                base = seg.base_offset, error = %e,
                "upload failed permanently; uploads of this partition stop until it is reopened");
            *p.upload_error.write().expect("upload error lock poisoned") = Some(e.to_string());
            p.cancel.cancelled().await;
            Next::Stop
        }
        e => {
            tracing::error!(topic = %p.id.topic, partition = p.id.partition,
                base = seg.base_offset, error = %e, "upload failed; retrying later");
            Next::Retry(Duration::from_millis(inner.cfg.upload_retry_max_ms))
        }
    }
}

/// Converts `seg` and, once every segment before it is committed, commits it. Returns how long
/// that took from the start of the conversion to the answer of its waiters, less the PUT.
async fn upload(inner: Arc<Inner>, p: Arc<Partition>, seg: Arc<Segment>) -> Result<Duration> {
    let prepared = prepare(inner, p.clone(), seg.clone()).await?;
    let started = prepared.started;
    loop {
        let turn = p.committed.notified();
        if p.log.uploaded_next() >= seg.base_offset {
            break;
        }
        tokio::select! {
            _ = p.cancel.cancelled() => return Err(Error::Closed),
            _ = turn => {}
        }
    }
    let (answered, put) = commit(&p, &seg, prepared).await?;
    Ok(answered
        .saturating_duration_since(started)
        .saturating_sub(put))
}

/// A segment converted into the log object that commits it.
struct Prepared {
    segment: SegmentCommit,
    started: std::time::Instant,
    encoded: Duration,
}

/// Converts `seg` into the log object that commits it (on the encoder threads).
async fn prepare(inner: Arc<Inner>, p: Arc<Partition>, seg: Arc<Segment>) -> Result<Prepared> {
    let started = std::time::Instant::now();
    let (seg2, id, cfg, epoch) = (seg.clone(), p.id.clone(), inner.cfg.clone(), p.epoch);
    // On the encoder threads: few at once, at low priority (see `cold::encoder`).
    let job = inner.encoders.run(move || {
        let shape = SegmentShape {
            base_offset: seg2.base_offset,
            last_offset: seg2.next_offset() - 1,
            raw_bytes: seg2.size(),
        };
        let (bytes, delta) = encode_segment(
            &id,
            shape,
            seg2.chunks(cfg.row_group_bytes),
            cfg.row_group_bytes,
            cfg.zstd_level,
            |sum| {
                let entry = SegmentEntry {
                    path: String::new(),
                    base_offset: sum.base_offset,
                    last_offset: sum.last_offset,
                    min_timestamp: sum.min_timestamp,
                    max_timestamp: sum.max_timestamp,
                    records: sum.records,
                    size: 0,
                    raw_bytes: sum.raw_bytes,
                    row_groups: sum.row_groups,
                    epoch,
                    producers: seg2.producers(),
                };
                let (delta, kv) = segment_footer(epoch, entry)?;
                Ok((vec![kv], delta))
            },
        )
        .map_err(|e| match e {
            Error::Invalid(reason) => Error::Corrupt {
                location: seg2.path.display().to_string(),
                position: 0,
                reason,
            },
            other => other,
        })?;
        Ok(SegmentCommit { bytes, delta })
    });
    let segment = tokio::select! {
        _ = p.cancel.cancelled() => return Err(Error::Closed),
        enc = job => enc?,
    };
    Ok(Prepared {
        segment,
        started,
        encoded: started.elapsed(),
    })
}

/// Commits a written segment to the manifest: the cold tier now serves it, and acks=all
/// waiters up to its end are answered. Returns when they were, and how long the PUT took.
async fn commit(
    p: &Partition,
    seg: &Segment,
    prepared: Prepared,
) -> Result<(std::time::Instant, Duration)> {
    let Prepared {
        segment,
        started,
        encoded,
    } = prepared;
    let (base, last, raw) = (seg.base_offset, seg.next_offset() - 1, seg.size());
    let size = segment.bytes.len();
    let mut w = p.writer.lock().await;
    let mut answered = std::time::Instant::now();
    // Waiters are answered as soon as the commit lands, before a checkpoint it may be due.
    w.commit_segment(segment, |state| {
        p.set_cold(state);
        p.log.mark_uploaded(last + 1);
        p.committed.notify_waiters();
        answered = std::time::Instant::now();
    })
    .await?;
    let put = w.last_put();
    drop(w);
    tracing::debug!(topic = %p.id.topic, partition = p.id.partition, base, last, bytes = size,
        raw, encode_ms = encoded.as_secs_f64() * 1e3,
        commit_ms = (started.elapsed() - encoded).as_secs_f64() * 1e3,
        put_ms = put.as_secs_f64() * 1e3, "segment committed to the cold tier");
    Ok((answered, put))
}
