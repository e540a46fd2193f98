//! Upload: sealed hot segments become Parquet objects committed to the manifest, oldest first.
//!
//! Invariants: a segment is committed only after its object is fully written; segments are
//! committed in offset order with no gaps; a failing store is retried with backoff forever (the
//! hot copy stays until the commit lands); a fenced commit stops uploads for the partition; a
//! corrupt sealed segment stops uploads for the partition with an error naming the file, never
//! skipping data.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use object_store::{PutMode, PutPayload};

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

async fn run(inner: Arc<Inner>, p: Arc<Partition>) {
    let idle = inner.cfg.housekeeping();
    loop {
        let pending = p.log.pending_uploads();
        if pending.is_empty() {
            // acks=all waiters need offsets that are still in the active segment: seal it now
            // (they have waited through any upload in flight; see `Tier::wait_committed`).
            let wanted = p.commit_wanted.load(Ordering::Acquire);
            if wanted > p.log.uploaded_next() && p.log.next_offset() >= wanted {
                let log = p.log.clone();
                let started = std::time::Instant::now();
                match tokio::task::spawn_blocking(move || log.seal_active(true)).await {
                    Ok(Ok(true)) => {
                        tracing::debug!(topic = %p.id.topic, partition = p.id.partition,
                            seal_ms = started.elapsed().as_secs_f64() * 1e3,
                            "sealed for acks=all waiters");
                        continue;
                    }
                    Ok(Ok(false)) => {}
                    Ok(Err(e)) => {
                        tracing::error!(topic = %p.id.topic, partition = p.id.partition, error = %e,
                            "cannot seal the active segment for acks=all waiters");
                    }
                    Err(e) => tracing::error!(error = %e, "seal task failed"),
                }
            }
            tokio::select! {
                _ = p.cancel.cancelled() => return,
                _ = p.notify.notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
            continue;
        }
        for seg in pending {
            match upload(&inner, &p, &seg).await {
                Ok(()) => {}
                Err(Error::Closed) => return,
                Err(e @ Error::Fenced { current, .. }) => {
                    tracing::error!(topic = %p.id.topic, partition = p.id.partition, error = %e,
                        "deposed: stopping uploads; appends are refused");
                    p.fenced_by.store(current.max(1), Ordering::Release);
                    return;
                }
                Err(e) if !e.is_retryable() => {
                    // Retrying cannot change the outcome (corrupt or unconvertible data): stop
                    // this partition's uploads loudly rather than loop; the hot copy stays.
                    tracing::error!(topic = %p.id.topic, partition = p.id.partition,
                        base = seg.base_offset, error = %e,
                        "upload failed permanently; uploads of this partition stop until it is reopened");
                    *p.upload_error.write().expect("upload error lock poisoned") =
                        Some(e.to_string());
                    p.cancel.cancelled().await;
                    return;
                }
                Err(e) => {
                    tracing::error!(topic = %p.id.topic, partition = p.id.partition,
                        base = seg.base_offset, error = %e, "upload failed; retrying later");
                    tokio::select! {
                        _ = p.cancel.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_millis(inner.cfg.upload_retry_max_ms)) => {}
                    }
                    break;
                }
            }
        }
    }
}

async fn upload(inner: &Arc<Inner>, p: &Arc<Partition>, seg: &Arc<Segment>) -> Result<()> {
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
    let mut w = p.writer.lock().await;
    w.commit(Op::Add {
        segments: vec![entry],
    })
    .await?;
    p.set_cold(w.state());
    drop(w);
    p.log.mark_uploaded(enc.last_offset + 1);
    p.committed.notify_waiters();
    tracing::debug!(topic = %p.id.topic, partition = p.id.partition, base = enc.base_offset,
        last = enc.last_offset, bytes = size, raw = enc.raw_bytes,
        encode_ms = encoded.as_secs_f64() * 1e3,
        put_ms = (put - encoded).as_secs_f64() * 1e3,
        commit_ms = (started.elapsed() - put).as_secs_f64() * 1e3,
        "segment committed to the cold tier");
    Ok(())
}
