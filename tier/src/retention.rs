//! Cold retention of one partition: segments past its age or size limit are removed from the
//! manifest first (a truncation commit, then a checkpoint), their objects deleted after.
//!
//! Invariant: only whole segments go, oldest first; an object is deleted only after a
//! checkpoint covers the truncation (loading starts from the newest checkpoint), otherwise it
//! is left to garbage collection (`cold::gc`).

use crate::cold::manifest::Op;
use crate::error::Result;
use crate::now_ms;
use crate::partition::Partition;

/// Applies `p`'s cold retention, if it has one.
pub(crate) async fn cold_retention(p: &Partition) -> Result<()> {
    let r = *p.retention.read().expect("retention lock poisoned");
    if r.age.is_none() && r.bytes.is_none() {
        return Ok(());
    }
    let cold = p.cold();
    let segs = p.manifest.segments(&cold).await?;
    let cutoff = r
        .age
        .map(|age| now_ms().saturating_sub(i64::try_from(age.as_millis()).unwrap_or(i64::MAX)));
    let mut total: u64 = segs.iter().map(|s| s.size).sum();
    let mut start = cold.start_offset;
    for s in &segs {
        let too_old = cutoff.is_some_and(|c| s.max_timestamp < c);
        let too_big = r.bytes.is_some_and(|b| total > b.get());
        if !(too_old || too_big) {
            break;
        }
        total -= s.size;
        start = s.last_offset + 1;
    }
    if start > cold.start_offset {
        truncate_cold(p, start).await?;
    }
    Ok(())
}

/// Commits `start_offset` as the new cold start (whole segments only), then deletes the objects
/// of the segments it removed. Returns how many objects were deleted.
pub(crate) async fn truncate_cold(p: &Partition, start_offset: i64) -> Result<u64> {
    let before = p.cold();
    let victims: Vec<_> = p
        .manifest
        .segments(&before)
        .await?
        .into_iter()
        .filter(|s| s.last_offset < start_offset)
        .collect();
    // Cut at a segment boundary so no segment is half in, half out.
    let cut = victims
        .last()
        .map_or(before.start_offset, |s| s.last_offset + 1);
    if cut <= before.start_offset {
        return Ok(0);
    }
    {
        let mut w = p.writer.lock().await;
        w.commit(Op::Truncate { start_offset: cut }).await?;
        // The victims are log objects: a checkpoint must cover them before they go, as loading
        // starts from the newest checkpoint. Without one they stay for the orphan sweep.
        let checkpointed = w.checkpoint().await;
        p.set_cold(w.state());
        if let Err(e) = checkpointed {
            tracing::warn!(topic = %p.id.topic, partition = p.id.partition, error = %e,
                "checkpoint before deleting retired segments failed; the orphan sweep deletes them later");
            return Ok(0);
        }
    }
    let paths: Vec<_> = victims
        .iter()
        .map(|s| p.manifest.paths.object(&s.path))
        .collect();
    let tried = paths.len() as u64;
    let deleted = tried - crate::cold::gc::delete_objects(p, paths).await.len() as u64;
    tracing::info!(topic = %p.id.topic, partition = p.id.partition, start_offset = cut, deleted, "cold retention applied");
    Ok(deleted)
}
