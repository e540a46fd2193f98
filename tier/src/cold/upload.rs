//! Upload: sealed hot segments become Parquet objects committed to the manifest, oldest first.
//!
//! Up to `uploads_in_flight` segments of a partition are converted and written at once, each
//! on a task of its own; one loop commits them one at a time as the oldest finishes. After a
//! failure, the objects of the segments behind it are dropped (the orphan sweep deletes them)
//! and uploads start again from the oldest uncommitted segment.
//!
//! Invariants: a segment is committed only after its object is fully written; segments are
//! committed in offset order with no gaps; a failing store is retried with backoff forever (the
//! hot copy stays until the commit lands); a fenced commit stops uploads for the partition; a
//! corrupt sealed segment stops uploads for the partition with an error naming the file, never
//! skipping data.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use object_store::{PutMode, PutPayload};
use tokio_util::task::AbortOnDropHandle;

use crate::cold::manifest::{Op, SegmentEntry};
use crate::cold::parquet::{SegmentShape, encode_segment};
use crate::engine::{Inner, Partition};
use crate::error::{Error, Result};
use crate::hot::segment::Segment;

pub(crate) fn spawn(inner: Arc<Inner>, p: Arc<Partition>) {
    let tracker = inner.tasks.clone();
    let handle = tracker.spawn(run(inner, p.clone()));
    *p.uploader.lock().expect("uploader lock poisoned") = Some(handle);
}

/// A sealed segment whose object is being converted and written, on a task of its own.
struct InFlight {
    seg: Arc<Segment>,
    task: AbortOnDropHandle<Result<Prepared>>,
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
    // Oldest first. Dropping an entry aborts its task (its object, if written, is an orphan
    // the sweep removes).
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
                let task = tokio::spawn(prepare(inner.clone(), p.clone(), seg.clone()));
                in_flight.push_back(InFlight {
                    seg,
                    task: AbortOnDropHandle::new(task),
                });
            }
        }
        if in_flight.len() < depth && seal_for_waiters(&p, started).await {
            continue;
        }
        let next = tokio::select! {
            _ = p.cancel.cancelled() => return,
            prepared = async { (&mut in_flight.front_mut().expect("checked").task).await },
                if !in_flight.is_empty() =>
            {
                let seg = in_flight.pop_front().expect("checked").seg;
                let prepared = prepared.unwrap_or_else(|e| {
                    Err(Error::invalid(format!("upload task failed: {e}")))
                });
                match prepared {
                    Ok(prepared) => match commit(&p, prepared).await {
                        Ok(()) => continue,
                        Err(e) => failed(&inner, &p, &seg, e).await,
                    },
                    Err(e) => failed(&inner, &p, &seg, e).await,
                }
            }
            // A waiter can only be served by a seal, for which a slot must be free.
            _ = p.notify.notified(), if in_flight.len() < depth => continue,
            _ = tokio::time::sleep(idle) => continue,
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

/// acks=all waiters need offsets that are still in the active segment: seals it now, with
/// everything appended so far, when the waiters want more than `sealed` (what is sealed or
/// committed already). True if it sealed.
async fn seal_for_waiters(p: &Partition, sealed: i64) -> bool {
    let wanted = p.commit_wanted.load(Ordering::Acquire);
    if wanted <= sealed || p.log.next_offset() < wanted {
        return false;
    }
    let log = p.log.clone();
    let started = std::time::Instant::now();
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

/// A segment's object, written and ready to be committed.
struct Prepared {
    entry: SegmentEntry,
    started: std::time::Instant,
    encoded: Duration,
    put: Duration,
}

/// Converts `seg` and writes its object (retrying the write until it lands or the partition
/// closes).
async fn prepare(inner: Arc<Inner>, p: Arc<Partition>, seg: Arc<Segment>) -> Result<Prepared> {
    let started = std::time::Instant::now();
    let (seg2, id, cfg) = (seg.clone(), p.id.clone(), inner.cfg.clone());
    // On the encoder threads: few at once, at low priority (see `cold::encoder`).
    let job = inner.encoders.run(move || {
        let shape = SegmentShape {
            base_offset: seg2.base_offset,
            last_offset: seg2.next_offset() - 1,
            raw_bytes: seg2.size(),
        };
        encode_segment(
            &id,
            shape,
            seg2.chunks(cfg.row_group_bytes),
            cfg.row_group_bytes,
            cfg.zstd_level,
        )
        .map_err(|e| match e {
            Error::Invalid(reason) => Error::Corrupt {
                location: seg2.path.display().to_string(),
                position: 0,
                reason,
            },
            other => other,
        })
    });
    let enc = tokio::select! {
        _ = p.cancel.cancelled() => return Err(Error::Closed),
        enc = job => enc?,
    };
    let encoded = started.elapsed();
    let rel = p.manifest.paths.new_segment(enc.base_offset, p.epoch);
    let path = p.manifest.paths.object(&rel);
    let store = inner.store.clone();
    let size = enc.bytes.len() as u64;
    inner
        .retry_until(p.cancel.clone())
        .run("upload segment", || {
            let (store, path, bytes) = (store.clone(), path.clone(), enc.bytes.clone());
            async move {
                // The path carries a random nonce: finding it taken means an earlier attempt
                // landed and only its answer was lost.
                match store
                    .put_opts(&path, PutPayload::from(bytes), PutMode::Create.into())
                    .await
                {
                    Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
                    Err(e) => Err(Error::from(e)),
                }
            }
        })
        .await?;
    let put = started.elapsed();
    let entry = SegmentEntry {
        path: rel,
        base_offset: enc.base_offset,
        last_offset: enc.last_offset,
        min_timestamp: enc.min_timestamp,
        max_timestamp: enc.max_timestamp,
        records: enc.records,
        size,
        raw_bytes: enc.raw_bytes,
        row_groups: enc.row_groups,
        epoch: p.epoch,
        producers: seg.producers(),
    };
    Ok(Prepared {
        entry,
        started,
        encoded,
        put,
    })
}

/// Commits a written segment to the manifest: the cold tier now serves it, and acks=all
/// waiters up to its end are answered.
async fn commit(p: &Partition, prepared: Prepared) -> Result<()> {
    let Prepared {
        entry,
        started,
        encoded,
        put,
    } = prepared;
    let (base, last, size, raw) = (
        entry.base_offset,
        entry.last_offset,
        entry.size,
        entry.raw_bytes,
    );
    let mut w = p.writer.lock().await;
    w.commit(Op::Add {
        segments: vec![entry],
    })
    .await?;
    p.set_cold(w.state());
    drop(w);
    p.log.mark_uploaded(last + 1);
    p.committed.notify_waiters();
    tracing::debug!(topic = %p.id.topic, partition = p.id.partition, base, last, bytes = size,
        raw, encode_ms = encoded.as_secs_f64() * 1e3,
        put_ms = (put - encoded).as_secs_f64() * 1e3,
        commit_ms = (started.elapsed() - put).as_secs_f64() * 1e3,
        "segment committed to the cold tier");
    Ok(())
}
