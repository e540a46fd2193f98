//! Background housekeeping: interval fsync, age-based sealing, hot retention and back-pressure
//! relief, and cold retention (manifest first, objects after).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;

use crate::cold::manifest::{Op, PartitionPaths};
use crate::config::FsyncPolicy;
use crate::engine::{Inner, Partition};
use crate::error::{Error, Result};
use crate::now_ms;

pub(crate) fn spawn_housekeeping(inner: &Arc<Inner>) {
    if let FsyncPolicy::Interval { ms } = inner.cfg.fsync {
        let inner2 = inner.clone();
        inner.tasks.spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(ms));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = inner2.cancel.cancelled() => return,
                    _ = tick.tick() => {}
                }
                let parts = inner2.all();
                let r = tokio::task::spawn_blocking(move || {
                    for p in parts {
                        if let Err(e) = p.log.flush() {
                            tracing::error!(topic = %p.id.topic, partition = p.id.partition, error = %e, "interval fsync failed");
                        }
                    }
                })
                .await;
                if let Err(e) = r {
                    tracing::error!(error = %e, "fsync task failed");
                }
            }
        });
    }
    let inner2 = inner.clone();
    inner.tasks.spawn(async move {
        let mut tick = tokio::time::interval(inner2.cfg.housekeeping());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = inner2.cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            housekeep(&inner2).await;
        }
    });
}

/// Runs `reopen` (of partition `id`, after a failed fsync) on a task of its own: an open waits
/// for the store, and must not hold up the other partitions' housekeeping. A failure is logged;
/// housekeeping tries again on its next round.
fn spawn_reopen<F>(
    inner: &Arc<Inner>,
    id: crate::PartitionId,
    reopen: impl FnOnce(crate::Tier, crate::PartitionId) -> F,
) where
    F: std::future::Future<Output = Result<()>> + Send + 'static,
{
    let tier = crate::Tier {
        inner: inner.clone(),
    };
    let (topic, partition) = (id.topic.clone(), id.partition);
    let run = reopen(tier, id);
    inner.tasks.spawn(async move {
        if let Err(e) = run.await {
            tracing::error!(%topic, partition, error = %e,
                "cannot reopen the partition after a failed fsync; trying again later");
        }
    });
}

async fn housekeep(inner: &Arc<Inner>) {
    // Reopens after a failed fsync that did not succeed yet (the store was down, say).
    let pending: Vec<_> = inner
        .reopening
        .lock()
        .expect("reopening lock poisoned")
        .keys()
        .cloned()
        .collect();
    for id in pending {
        spawn_reopen(
            inner,
            id,
            |tier, id| async move { tier.retry_reopen(&id).await },
        );
    }
    let parts = inner.all();
    let budget = inner.cfg.hot_budget_bytes;
    // Above 80% of the budget, drop every uploaded hot segment rather than wait for age or size.
    let over = inner.hot_bytes.load(Ordering::Acquire) > budget / 10 * 8;
    for p in parts {
        // Under the partition's gate: skipped while it opens or closes, and not at all once it
        // closed since the snapshot (a reopened partition owns the directory).
        let gate = inner.gate(&p.id);
        let Ok(held) = gate.try_lock() else {
            continue;
        };
        if p.log.is_released() {
            continue;
        }
        let p2 = p.clone();
        let r = tokio::task::spawn_blocking(move || -> Result<()> {
            // Near the budget, an active segment holding committed records (cuts for acks=all)
            // is sealed so that it can go once the rest is committed.
            if (over && p2.log.seal_committed()?) || p2.log.seal_active(false)? {
                p2.notify.notify_one();
            }
            p2.log.enforce_retention(over)?;
            Ok(())
        })
        .await;
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!(topic = %p.id.topic, partition = p.id.partition, error = %e, "hot housekeeping failed")
            }
            Err(e) => tracing::error!(error = %e, "housekeeping task failed"),
        }
        drop(held);
        if p.log.is_failed() {
            let id = p.id.clone();
            spawn_reopen(
                inner,
                id,
                |tier, _| async move { tier.reopen_failed(&p).await },
            );
            continue;
        }
        if let Err(e) = cold_retention(&p).await {
            tracing::warn!(topic = %p.id.topic, partition = p.id.partition, error = %e, "cold retention failed");
        }
        let grace = Duration::from_millis(inner.cfg.orphan_grace_ms);
        let due = {
            let mut at = p.swept_at.lock().expect("sweep lock poisoned");
            let due = at.elapsed() >= grace;
            if due {
                *at = std::time::Instant::now();
            }
            due
        };
        if due && let Err(e) = sweep_orphans(&p, grace).await {
            tracing::warn!(topic = %p.id.topic, partition = p.id.partition, error = %e, "orphan sweep failed");
        }
    }
}

async fn cold_retention(p: &Arc<Partition>) -> Result<()> {
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
pub(crate) async fn truncate_cold(p: &Arc<Partition>, start_offset: i64) -> Result<u64> {
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
    let paths = victims
        .iter()
        .map(|s| p.manifest.paths.object(&s.path))
        .collect();
    let deleted = delete_objects(p, paths, "a retired cold segment").await;
    tracing::info!(topic = %p.id.topic, partition = p.id.partition, start_offset = cut, deleted, "cold retention applied");
    Ok(deleted)
}

/// Deletes retired segments of `p` whose delete failed (retention deletes them right after its
/// checkpoint), once older than `grace`.
///
/// Safety: only this partition's leader sweeps, and only log objects that are
/// - at or below the seq of the checkpoint the hint names (read after the state and the list),
///   and of the leader's own state;
/// - below the seq of the first live segment (from the state read before listing: segments
///   are committed in offset order, so every segment before it is retired);
/// - commits adding a segment that ends below the committed start offset (read from the
///   footer): never a fence, whose slot a deposed writer may still try to create (deleting it
///   would let that create succeed), nor a truncation;
/// - older than `grace` by the store's clock (a fresh write's last-modified time).
///
/// Objects whose names do not parse are never touched. Returns how many were deleted.
pub(crate) async fn sweep_orphans(p: &Arc<Partition>, grace: Duration) -> Result<u64> {
    p.check_fenced()?;
    let state = p.cold();
    let first_live = match p.manifest.find_offset(&state, state.start_offset).await? {
        Some(s) => PartitionPaths::parse_log(s.path.rsplit('/').next().unwrap_or_default())
            .ok_or_else(|| {
                Error::invalid(format!("segment path {} is not a log object", s.path))
            })?,
        None => state.seq + 1,
    };
    let store = p.manifest.store().clone();
    let dir = p.manifest.paths.log_dir();
    let listed: Vec<_> = store.list(Some(&dir)).try_collect().await?;
    let Some(covered) = p.manifest.checkpointed().await? else {
        return Ok(0);
    };
    let candidates: Vec<_> = listed
        .into_iter()
        .filter_map(|meta| {
            let seq = meta
                .location
                .filename()
                .and_then(PartitionPaths::parse_log)?;
            (seq <= covered.min(state.seq) && seq < first_live).then_some((seq, meta))
        })
        .collect();
    if candidates.is_empty() {
        return Ok(0);
    }
    // Ages on the store's own clock, not this node's (whose clock may run ahead of it); read
    // after the listing, so no listed object is newer than it.
    let store_now = store_now_ms(p).await?;
    let cutoff = store_now.saturating_sub(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
    let mut orphans = Vec::new();
    for (seq, meta) in candidates {
        if meta.last_modified.timestamp_millis() >= cutoff {
            continue;
        }
        let retired = match p.manifest.read_delta(seq, Some(meta.size)).await? {
            Some(d) => match d.op {
                Op::Add { segments } => segments.iter().all(|s| s.last_offset < state.start_offset),
                _ => false,
            },
            None => false,
        };
        if retired {
            orphans.push(meta.location);
        }
    }
    let deleted = delete_objects(p, orphans, "a retired segment").await;
    if deleted > 0 {
        tracing::info!(topic = %p.id.topic, partition = p.id.partition, deleted, "retired segments deleted");
    }
    Ok(deleted)
}

/// The store's current time, ms: the last-modified time of a small object written now
/// (`P/manifest/_sweep_clock`: one PUT and one HEAD, by a sweep that has candidates).
async fn store_now_ms(p: &Partition) -> Result<i64> {
    let store = p.manifest.store();
    let clock = p.manifest.paths.object(SWEEP_CLOCK);
    store.put(&clock, bytes::Bytes::new().into()).await?;
    Ok(store.head(&clock).await?.last_modified.timestamp_millis())
}

/// The object whose last-modified time tells the sweep the store's time.
const SWEEP_CLOCK: &str = "manifest/_sweep_clock";

/// Deletes unreferenced objects of `p`, a few at once; a failure is logged and leaves the
/// object to the next orphan sweep. Returns how many are gone.
async fn delete_objects(p: &Partition, paths: Vec<object_store::path::Path>, what: &str) -> u64 {
    let store = p.manifest.store().clone();
    let mut results = futures::stream::iter(paths)
        .map(|path| {
            let store = store.clone();
            async move { (store.delete(&path).await, path) }
        })
        .buffer_unordered(8);
    let mut deleted = 0;
    while let Some((r, path)) = results.next().await {
        match r {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => deleted += 1,
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "could not delete {what}; it is unreferenced")
            }
        }
    }
    deleted
}
