//! Cold retention of one partition: segments past its age or size limit are removed from the
//! manifest first (a truncation commit, then a checkpoint), their objects deleted after.
//!
//! Deleting records (Kafka's DeleteRecords) moves the log start the same way, to any offset
//! the cold tier holds: a segment it cuts through stays whole in the bucket, its rows below
//! the start are no longer part of the log (readers, SQL and external readers skip them), and
//! it goes once a later cut passes its end.
//!
//! Invariant: only whole segments' objects go, oldest first; an object is deleted only after
//! a checkpoint covers the truncation (loading starts from the newest checkpoint), otherwise it
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
        truncate_cold(p, start, Cut::Segments).await?;
    }
    Ok(())
}

/// Where a truncation may cut the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// At the end of the last whole segment below the offset (retention).
    Segments,
    /// At the offset itself (deleting records); it must not pass the cold tier's end.
    Exact,
}

/// Commits `start_offset` (or, for [`Cut::Segments`], the segment boundary below it) as the
/// new cold start, then deletes the objects of the segments wholly below it. Returns how many
/// objects were deleted.
pub(crate) async fn truncate_cold(p: &Partition, start_offset: i64, cut: Cut) -> Result<u64> {
    let before = p.cold();
    if cut == Cut::Exact && start_offset > before.next_offset {
        return Err(crate::Error::invalid(format!(
            "{}: the log start cannot move to {start_offset}, past the committed end {}",
            p.id, before.next_offset
        )));
    }
    let victims: Vec<_> = p
        .manifest
        .segments(&before)
        .await?
        .into_iter()
        .filter(|s| s.last_offset < start_offset)
        .collect();
    let cut = match cut {
        // At a segment boundary so no segment is half in, half out.
        Cut::Segments => victims
            .last()
            .map_or(before.start_offset, |s| s.last_offset + 1),
        Cut::Exact => start_offset,
    };
    if cut <= before.start_offset {
        return Ok(0);
    }
    {
        let mut w = p.writer.lock().await;
        // The state may have moved since it was read (retention, another cut): the op keeps
        // the larger start, and only whole segments below the new start were picked.
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
