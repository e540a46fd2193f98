//! Upload: spans of the hot log become Parquet objects that commit themselves to the manifest
//! (the object is the next entry of the partition's commit log), oldest first.
//!
//! A span is what a sealed segment holds past what is committed, or, for acks=all waiters, a
//! cut of the active segment: everything appended so far, committed without sealing the
//! segment, so the local disk's fsync is not on the waiters' path (`docs/durability.md`). A
//! cut is taken when a slot is free and the partition's planned cut has come: at once on a
//! quiet partition; under steady load about once per `flush_interval_ms`, less what a cut takes
//! besides its PUT (conversion, commit work; so a record is answered about one interval plus
//! one PUT after it arrived), and apart from other partitions' cuts (`cold::plan`). That bounds
//! the partition's PUT rate. Whatever the acks, the active segment is also cut once its oldest
//! record that no cut covers is `upload_interval_ms` old: what exists only on the leader's disk
//! is at most about that interval plus one upload, which bounds what a takeover without hand-off
//! loses at acks=leader (`docs/durability.md`).
//!
//! Up to `uploads_in_flight` spans of a partition are in upload at once, each on a task of its
//! own: converted side by side, written one at a time, each once the one before it is
//! committed. After a failure, the uploads behind it (which wrote nothing) are dropped and
//! uploads start again from the oldest uncommitted offset.
//!
//! Invariants: a span is committed by one atomic create of its complete object; spans are
//! committed in offset order with no gaps; a span's idempotent-producer state is that of its own
//! batches (never of batches appended after a cut); a failing store is retried with backoff
//! forever (the hot copy stays until the commit lands); a fenced commit stops uploads for the
//! partition; a corrupt segment stops uploads for the partition with an error naming the file,
//! never skipping data.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::task::AbortOnDropHandle;

use crate::cold::manifest::{SegmentCommit, SegmentEntry, segment_footer};
use crate::cold::parquet::{SegmentShape, encode_segment};
use crate::epochs::{EpochRun, push_epoch_run};
use crate::error::{Error, Result};
use crate::hot::log::Span;
use crate::partition::{Jobs, Partition};
use crate::producers::{ProducerBatch, ProducerStates};

pub(crate) fn spawn(jobs: Arc<Jobs>, p: Arc<Partition>) {
    let tracker = jobs.tasks.clone();
    let handle = tracker.spawn(run(jobs, p.clone()));
    *p.uploader.lock().expect("uploader lock poisoned") = Some(handle);
}

/// A span being converted and committed, on a task of its own.
struct InFlight {
    span: Span,
    /// When done, how long the span took from conversion to commit, less its PUT.
    task: AbortOnDropHandle<Result<Duration>>,
}

/// What to do after an upload step failed.
enum Next {
    /// Start again from the oldest segment not committed, after the given pause.
    Retry(Duration),
    Stop,
}

async fn run(jobs: Arc<Jobs>, p: Arc<Partition>) {
    let idle = jobs.cfg.housekeeping();
    let depth = jobs.cfg.uploads_in_flight;
    let interval = jobs.cfg.flush_interval();
    // When the next cut for acks=all waiters may be taken: planned after each cut, within the
    // interval less what a cut takes besides its PUT (so the oldest waiter's record is answered
    // about one interval plus one PUT after it arrived), apart from other partitions' cuts.
    let mut due: Option<Instant> = None;
    let mut overhead = Overhead::default();
    let owner = Arc::as_ptr(&p) as crate::cold::plan::Owner;
    let _forget = PlanGuard(&jobs, &p.id, owner);
    // Oldest first. Dropping an entry aborts its task; a task commits only after the one before
    // it, so the aborted ones behind a failure have written nothing.
    let mut in_flight: VecDeque<InFlight> = VecDeque::new();
    let upload_interval = jobs.cfg.upload_interval();
    let start = |in_flight: &mut VecDeque<InFlight>, span: Span, cut: bool| {
        p.uploading_next.store(span.next_offset, Ordering::Release);
        // Converted at normal priority when someone waits for it, or when it is a cut (which
        // bounds what a takeover can lose); see `cold::encoder`.
        let urgent = cut || p.commit_wanted.load(Ordering::Acquire) > span.base_offset;
        let task = tokio::spawn(upload(jobs.clone(), p.clone(), span.clone(), urgent));
        in_flight.push_back(InFlight {
            span,
            task: AbortOnDropHandle::new(task),
        });
    };
    loop {
        // Offsets below this are committed or on their way.
        let started = in_flight
            .back()
            .map_or(p.log.uploaded_next(), |f| f.span.next_offset);
        // An error reading the hot log stops or pauses uploads once the uploads in flight are
        // done: aborting one could cut it off between its PUT and its commit.
        let mut unreadable = None;
        match p.log.pending_uploads(started) {
            Ok(spans) => {
                for span in spans
                    .into_iter()
                    .take(depth.saturating_sub(in_flight.len()))
                {
                    start(&mut in_flight, span, false);
                }
            }
            Err(e) => unreadable = Some((started, e)),
        }
        let started = in_flight
            .back()
            .map_or(p.log.uploaded_next(), |f| f.span.next_offset);
        // Waiters for the active segment are served by a cut once a slot is free and the
        // planned moment has come; until then they accumulate.
        let mut wake = Instant::now() + idle;
        if unreadable.is_none() && in_flight.len() < depth && waiters_need_cut(&p, started) {
            match due {
                Some(due) if due > Instant::now() => wake = due,
                _ => {
                    let at = Instant::now();
                    match cut_active(&p, started, "acks=all waiters").await {
                        Ok(Some(span)) => {
                            start(&mut in_flight, span, true);
                            overhead.cut(at.elapsed());
                            let lead = overhead.lead(interval);
                            due = Some(jobs.seal_plans.plan(&p.id, owner, at, lead, interval));
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => unreadable = Some((started, e)),
                    }
                }
            }
        }
        // Whatever the acks, records do not stay only on local disk for longer than
        // `upload_interval_ms`: the active segment is cut once its oldest uncut record is that
        // old, so a takeover without hand-off loses at most about one interval plus one upload.
        if unreadable.is_none() && in_flight.len() < depth {
            match p.log.tail_due_at(upload_interval) {
                Some(at) if at <= Instant::now() => {
                    match cut_active(&p, started, "the upload interval").await {
                        Ok(Some(span)) => {
                            start(&mut in_flight, span, true);
                            continue;
                        }
                        Ok(None) => {}
                        Err(e) => unreadable = Some((started, e)),
                    }
                }
                Some(at) => wake = wake.min(at),
                None => {}
            }
        }
        let next = match unreadable {
            Some((at, e)) if in_flight.is_empty() => Some(failed(&jobs, &p, at, e).await),
            Some((at, e)) => {
                tracing::warn!(topic = %p.id.topic, partition = p.id.partition, at, error = %e,
                    "cannot read the hot log for upload; trying again after the uploads in flight");
                None
            }
            None => None,
        };
        let next = match next {
            Some(next) => next,
            None => tokio::select! {
                _ = p.cancel.cancelled() => return,
                done = async { (&mut in_flight.front_mut().expect("checked").task).await },
                    if !in_flight.is_empty() =>
                {
                    let span = in_flight.pop_front().expect("checked").span;
                    match done.unwrap_or_else(|e| Err(Error::invalid(format!("upload task failed: {e}")))) {
                        Ok(rest) => {
                            overhead.committed(rest);
                            continue
                        }
                        Err(e) => failed(&jobs, &p, span.base_offset, e).await,
                    }
                }
                // A waiter can only be served by a cut, for which a slot must be free.
                _ = p.notify.notified(), if in_flight.len() < depth => continue,
                _ = tokio::time::sleep_until(wake) => continue,
            },
        };
        in_flight.clear();
        p.uploading_next
            .store(p.log.uploaded_next(), Ordering::Release);
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
struct PlanGuard<'a>(&'a Jobs, &'a crate::PartitionId, crate::cold::plan::Owner);

impl Drop for PlanGuard<'_> {
    fn drop(&mut self) {
        self.0.seal_plans.forget(self.1, self.2);
    }
}

/// How long a cut for acks=all waiters takes to answer them, besides the PUT of its object:
/// taking the cut (a wait for the writer lock), the conversion to Parquet (queueing for an
/// encoder thread included), the wait for the commit before it, and the commit's own work. The
/// estimate is the longest of the last [`OVERHEAD_CUTS`]: the slow tail of cuts is what the
/// interval has to absorb, and a burst long past (large conversions) is forgotten after that
/// many cuts.
#[derive(Debug, Default)]
struct Overhead {
    cut: Duration,
    recent: VecDeque<Duration>,
}

/// Cuts whose overhead [`Overhead`] remembers.
const OVERHEAD_CUTS: usize = 32;

impl Overhead {
    fn cut(&mut self, took: Duration) {
        self.cut = took;
    }

    /// A span was committed with `rest` of overhead after it was taken (the time taking the
    /// last cut counts once, with the first commit after it).
    fn committed(&mut self, rest: Duration) {
        if self.recent.len() == OVERHEAD_CUTS {
            self.recent.pop_front();
        }
        self.recent.push_back(std::mem::take(&mut self.cut) + rest);
    }

    /// The spacing between two cuts for waiters: the interval less the expected overhead, by
    /// at most a quarter of it, so that a record is answered about one interval plus one PUT
    /// after it arrived.
    fn lead(&self, interval: Duration) -> Duration {
        let estimate = self.recent.iter().max().copied().unwrap_or_default();
        interval - estimate.min(interval / 4)
    }
}

/// acks=all waiters need offsets that are still in the active segment: they want more than
/// `started` (what is committed or on its way already), and it has been appended.
fn waiters_need_cut(p: &Partition, started: i64) -> bool {
    let wanted = p.commit_wanted.load(Ordering::Acquire);
    wanted > started && p.log.next_offset() >= wanted
}

/// Cuts the active segment from `from`, with everything appended so far, for `why`.
#[tracing::instrument(level = "debug", name = "cut", skip_all,
    fields(storage = %p.id.topic, partition = p.id.partition, from = from, why = why))]
async fn cut_active(p: &Partition, from: i64, why: &'static str) -> Result<Option<Span>> {
    let log = p.log.clone();
    let started = Instant::now();
    // The writer lock may be held by an append that rolls a segment (an fsync).
    let span = tokio::task::spawn_blocking(move || log.cut(from))
        .await
        .map_err(|e| Error::invalid(format!("cut task failed: {e}")))??;
    tracing::debug!(topic = %p.id.topic, partition = p.id.partition,
        cut_ms = started.elapsed().as_secs_f64() * 1e3,
        next = span.as_ref().map(|s| s.next_offset), why, "cut of the active segment");
    Ok(span)
}

/// Decides what an upload failure at offset `base` means for the partition's uploads.
async fn failed(jobs: &Jobs, p: &Partition, base: i64, e: Error) -> Next {
    match e {
        Error::Closed => Next::Stop,
        e @ Error::Fenced { current, .. } => {
            tracing::error!(topic = %p.id.topic, partition = p.id.partition, error = %e,
                "deposed: stopping uploads; appends are refused");
            p.fenced(current);
            Next::Stop
        }
        e if !e.is_retryable() => {
            // Retrying cannot change the outcome (corrupt or unconvertible data): stop this
            // partition's uploads loudly rather than loop; the hot copy stays.
            tracing::error!(topic = %p.id.topic, partition = p.id.partition,
                base, error = %e,
                "upload failed permanently; uploads of this partition stop until it is reopened");
            *p.upload_error.write().expect("upload error lock poisoned") = Some(e.to_string());
            p.cancel.cancelled().await;
            Next::Stop
        }
        e => {
            tracing::error!(topic = %p.id.topic, partition = p.id.partition,
                base, error = %e, "upload failed; retrying later");
            Next::Retry(Duration::from_millis(jobs.cfg.upload_retry_max_ms))
        }
    }
}

/// Converts `span` and, once everything before it is committed, commits it. Returns how long
/// that took from the start of the conversion to the answer of its waiters, less the PUT.
#[tracing::instrument(level = "debug", name = "upload", skip_all,
    fields(storage = %p.id.topic, partition = p.id.partition, base = span.base_offset,
        next = span.next_offset, urgent = urgent))]
async fn upload(jobs: Arc<Jobs>, p: Arc<Partition>, span: Span, urgent: bool) -> Result<Duration> {
    let jobs2 = jobs.clone();
    let _running = jobs2.uploads.start();
    let observer = jobs
        .upload_observer
        .read()
        .expect("observer lock poisoned")
        .clone();
    let prepared = prepare(jobs, p.clone(), span.clone(), urgent).await?;
    let (started, encoded, size) = (
        prepared.started,
        prepared.encoded,
        prepared.segment.bytes.len() as u64,
    );
    loop {
        let turn = p.committed.notified();
        if p.log.uploaded_next() >= span.base_offset {
            break;
        }
        tokio::select! {
            _ = p.cancel.cancelled() => return Err(Error::Closed),
            _ = turn => {}
        }
    }
    let (answered, put) = commit(&p, &span, prepared).await?;
    if let Some(o) = observer {
        o.uploaded(
            encoded,
            answered
                .saturating_duration_since(started)
                .saturating_sub(encoded),
            size,
        );
    }
    Ok(answered
        .saturating_duration_since(started)
        .saturating_sub(put))
}

/// A span converted into the log object that commits it.
struct Prepared {
    segment: SegmentCommit,
    started: std::time::Instant,
    encoded: Duration,
}

/// Converts `span` into the log object that commits it (on the encoder threads).
#[tracing::instrument(level = "debug", name = "convert", skip_all, fields(raw_bytes = span.bytes()))]
async fn prepare(jobs: Arc<Jobs>, p: Arc<Partition>, span: Span, urgent: bool) -> Result<Prepared> {
    let started = std::time::Instant::now();
    let (id, cfg, epoch) = (p.id.clone(), jobs.cfg.clone(), p.epoch);
    // On the encoder threads: few at once, at low priority unless someone waits for it (see
    // `cold::encoder`).
    let job = jobs.encoders.run(urgent, move || {
        encode_span(&id, &span, epoch, cfg.row_group_bytes, cfg.zstd_level)
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

/// Encodes `span` as the log object that commits it for writer `epoch`. The footer's
/// idempotent-producer state comes from the span's own batches, so a cut never carries batches
/// appended after it (a new leader would take their retries for duplicates).
fn encode_span(
    id: &crate::PartitionId,
    span: &Span,
    epoch: u64,
    row_group_bytes: usize,
    zstd_level: i32,
) -> Result<SegmentCommit> {
    let shape = SegmentShape {
        base_offset: span.base_offset,
        last_offset: span.next_offset - 1,
        raw_bytes: span.bytes(),
    };
    let producers = std::cell::RefCell::new(ProducerStates::default());
    let epochs = std::cell::RefCell::new(Vec::new());
    let chunks = span.chunks(row_group_bytes).inspect(|chunk| {
        for b in chunk.iter().flatten() {
            let h = b.header();
            let run = EpochRun {
                epoch: h.partition_leader_epoch,
                start: h.base_offset,
            };
            push_epoch_run(&mut epochs.borrow_mut(), run);
            if let Some((id, pb)) = ProducerBatch::of(h, h.base_offset) {
                producers.borrow_mut().record(id, pb);
            }
        }
    });
    let (bytes, delta) = encode_segment(id, shape, chunks, row_group_bytes, zstd_level, |sum| {
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
            producers: producers.take(),
            footer_crc32c: Some(sum.footer_digest),
            leader_epochs: epochs.take(),
        };
        let (delta, kv) = segment_footer(epoch, entry)?;
        Ok((vec![kv], delta))
    })
    .map_err(|e| match e {
        Error::Invalid(reason) => Error::Corrupt {
            location: span.seg.path.display().to_string(),
            position: 0,
            reason,
        },
        other => other,
    })?;
    Ok(SegmentCommit { bytes, delta })
}

/// Commits a converted span to the manifest: the cold tier now serves it, and acks=all
/// waiters up to its end are answered. Returns when they were, and how long the PUT took.
#[tracing::instrument(level = "debug", name = "commit", skip_all, fields(bytes = prepared.segment.bytes.len()))]
async fn commit(
    p: &Partition,
    span: &Span,
    prepared: Prepared,
) -> Result<(std::time::Instant, Duration)> {
    let Prepared {
        segment,
        started,
        encoded,
    } = prepared;
    let (base, last, raw) = (span.base_offset, span.next_offset - 1, span.bytes());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PartitionId;
    use crate::batch::{BatchBuilder, Compression, ProducerInfo};
    use crate::cold::manifest::Op;
    use crate::config::TierConfig;
    use crate::hot::log::PartitionLog;

    fn idempotent(producer_id: i64, seq: i32, n: usize) -> crate::batch::RecordBatch {
        let info = ProducerInfo {
            producer_id,
            producer_epoch: 0,
            base_sequence: seq,
        };
        let mut b = BatchBuilder::new(Compression::None).producer(info, false);
        for i in 0..n {
            b.push(i as i64, None, Some(b"v"), &[]);
        }
        b.build().unwrap()
    }

    /// A cut's commit carries the producers' state as of the cut's end, even when the segment
    /// has taken more of their batches by the time the cut is encoded.
    #[test]
    fn a_cut_commits_the_producers_state_as_of_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = std::sync::Arc::new(TierConfig {
            data_dir: dir.path().to_path_buf(),
            ..TierConfig::default()
        });
        let id = PartitionId::new("t", 0);
        let log = PartitionLog::open(
            dir.path(),
            id.clone(),
            cfg,
            0,
            0,
            Default::default(),
            Default::default(),
        )
        .unwrap();
        log.append(idempotent(7, 0, 10), 1).unwrap();
        log.append(idempotent(8, 0, 5), 1).unwrap();
        let span = log.cut(0).unwrap().unwrap();
        // Appended after the cut, before its conversion.
        log.append(idempotent(7, 10, 10), 1).unwrap();
        log.append(idempotent(9, 0, 1), 1).unwrap();
        let commit = encode_span(&id, &span, 1, 1 << 20, 1).unwrap();
        let Op::Add { segments } = &commit.delta.op else {
            panic!("not an add: {:?}", commit.delta.op)
        };
        assert_eq!((segments[0].base_offset, segments[0].last_offset), (0, 14));
        let state = &segments[0].producers;
        assert_eq!(state.len(), 2, "producers 7 and 8: {state:?}");
        let retry = idempotent(7, 10, 10);
        assert_eq!(
            state.check(retry.header()).unwrap(),
            None,
            "a new leader must take producer 7's batch after the cut as new, not a duplicate"
        );
        assert_eq!(
            state.check(idempotent(8, 0, 5).header()).unwrap(),
            Some((10, 14))
        );
    }
}
