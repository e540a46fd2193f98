//! Garbage collection of a partition's objects: what the manifest no longer names goes once the
//! grace period has passed, measured on the store's clock.
//!
//! What is garbage, under the partition prefix:
//! - **replaced segments**: the objects a [`Op::Replace`] commit names, once that commit is
//!   older than the grace period and a checkpoint covers it (readers that loaded the state
//!   before it had the grace period to finish); the commit itself goes after them;
//! - **retired segments**: log objects adding a segment wholly below the start offset
//!   (retention deletes them at once; these are the deletes that failed), once older than the
//!   grace period and covered by a checkpoint;
//! - **retention commits** covered by a checkpoint and older than the grace period;
//! - **orphans under `merged/`**: objects no commit names (a merge that crashed, was deposed or
//!   gave up before its commit), older than the grace period;
//! - **manifest chunks** that neither the current state nor any checkpoint there is reaches,
//!   older than the grace period.
//!
//! Safety:
//! - only a leader collects, with the state read under its writer lock after listing (so a
//!   merged object committed meanwhile is seen live), and caught up from the store first (a
//!   deposed leader finds the higher epoch and stops);
//! - an object a live segment names is never deleted, whatever else says so;
//! - fences and the first commit are never deleted: a deposed writer's next create is always
//!   into a fence's slot (a new leader's first commit), and must keep failing. Every other commit
//!   may go once a checkpoint covers it (loading starts from the newest checkpoint);
//! - names that do not parse are never touched.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use object_store::path::Path;

use crate::cold::manifest::{ChunkRef, Node, Op, PartitionPaths};
use crate::cold::merge::MERGED_DIR;
use crate::error::Result;
use crate::partition::Partition;

/// One object garbage collection deleted (or, in a dry run, would delete).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Garbage {
    /// The object's full path in the store.
    pub path: String,
    pub bytes: u64,
    /// Why it is garbage.
    pub why: &'static str,
}

/// What one collection found.
#[derive(Debug, Clone, Default)]
pub struct GcReport {
    /// Deleted, or to be deleted in a dry run.
    pub garbage: Vec<Garbage>,
    /// Objects that will be garbage once the grace period has passed (or a checkpoint covers
    /// their commit).
    pub pending: u64,
    /// Objects a delete failed for (left to the next collection).
    pub failed: u64,
}

pub(crate) const WHY_REPLACED: &str = "replaced by a merge or compaction";
pub(crate) const WHY_RETIRED: &str = "retired by retention";
pub(crate) const WHY_COMMIT: &str = "a commit a checkpoint covers";
pub(crate) const WHY_ORPHAN: &str = "an object no commit names";
pub(crate) const WHY_CHUNK: &str = "a manifest chunk no checkpoint names";

/// Collects `p`'s garbage older than `grace`; lists it only, with `dry_run`.
pub(crate) async fn collect(p: &Partition, grace: Duration, dry_run: bool) -> Result<GcReport> {
    p.check_fenced()?;
    let m = &p.manifest;
    let store = m.store().clone();
    let list = |dir: Path| {
        let store = store.clone();
        async move { store.list(Some(&dir)).try_collect::<Vec<_>>().await }
    };
    // Listings first, then the state: whatever is committed before the state is read is live
    // in it.
    let logs = list(m.paths.log_dir()).await?;
    let merged = list(m.paths.object(MERGED_DIR)).await?;
    let chunks = list(m.paths.object("manifest/chunks")).await?;
    // Commits are collected once a checkpoint covers them: write one now if the newest lags
    // (two PUTs, once per collection).
    let (mut state, covered) = {
        let mut w = p.writer.lock().await;
        let mut covered = m.checkpointed().await?;
        if dry_run {
            // What a real collection, which writes the checkpoint first, would find.
            covered = Some(w.state().seq);
        } else if covered.unwrap_or(0) < w.state().seq {
            match w.checkpoint().await {
                Ok(()) => covered = Some(w.state().seq),
                Err(e) => tracing::warn!(topic = %p.id.topic, partition = p.id.partition,
                    error = %e, "checkpoint before garbage collection failed"),
            }
            p.set_cold(w.state());
        }
        (w.state().clone(), covered)
    };
    m.catch_up(&mut state).await?;
    if state.epoch > p.epoch {
        p.fenced(state.epoch);
        return p.check_fenced().map(|()| GcReport::default());
    }
    let store_now = store_now_ms(p).await?;
    let cutoff = store_now.saturating_sub(i64::try_from(grace.as_millis()).unwrap_or(i64::MAX));
    let old = |meta: &object_store::ObjectMeta| meta.last_modified.timestamp_millis() < cutoff;
    let live: HashSet<String> = m
        .segments(&state)
        .await?
        .into_iter()
        .map(|s| s.path)
        .collect();
    let rel = |path: &Path| -> Option<String> {
        let full = path.as_ref();
        full.strip_prefix(m.paths.prefix.as_ref())?
            .strip_prefix('/')
            .map(str::to_string)
    };

    let mut report = GcReport::default();
    // Objects to delete, in order: replaced and retired objects first, then the commits that
    // named them, then chunks (a failure of the first keeps the second for next time).
    let mut first: BTreeMap<String, Garbage> = BTreeMap::new();
    let mut commits: Vec<(Garbage, Vec<String>)> = Vec::new();
    // Objects named by a Replace commit that is not collected now.
    let mut pending: HashSet<String> = HashSet::new();
    let sizes: std::collections::HashMap<String, u64> = logs
        .iter()
        .chain(merged.iter())
        .filter_map(|o| Some((rel(&o.location)?, o.size)))
        .collect();
    let covered = covered.unwrap_or(0).min(state.seq);
    let mut retired_adds = Vec::new();
    // Newest first: a replace commit is read before the log objects it replaced, which need no
    // reading then.
    let mut logs: Vec<(u64, &object_store::ObjectMeta)> = logs
        .iter()
        .filter_map(|m| {
            Some((
                m.location.filename().and_then(PartitionPaths::parse_log)?,
                m,
            ))
        })
        .collect();
    logs.sort_unstable_by_key(|l| std::cmp::Reverse(l.0));
    let mut named: HashSet<String> = HashSet::new();
    for (seq, meta) in logs {
        let Some(path) = rel(&meta.location) else {
            continue;
        };
        if live.contains(&path) || seq > state.seq || named.contains(&path) {
            continue;
        }
        let Some(delta) = m.read_delta(seq, Some(meta.size)).await? else {
            continue;
        };
        let collectible = seq <= covered && old(meta);
        match delta.op {
            Op::Fence | Op::Init { .. } => {}
            Op::Add { segments } => {
                if segments.iter().all(|s| s.last_offset < state.start_offset) {
                    retired_adds.push((path, meta.size, collectible));
                }
            }
            Op::Truncate { .. } => {
                if collectible {
                    commits.push((garbage(&meta.location, meta.size, WHY_COMMIT), Vec::new()));
                } else {
                    report.pending += 1;
                }
            }
            Op::Replace { replaced, .. } => {
                named.extend(replaced.iter().cloned());
                if collectible {
                    commits.push((garbage(&meta.location, meta.size, WHY_COMMIT), replaced));
                } else {
                    report.pending += 1 + replaced.len() as u64;
                    pending.extend(replaced);
                }
            }
        }
    }
    for (_, replaced) in &commits {
        for r in replaced {
            if live.contains(r) || pending.contains(r) {
                continue;
            }
            if let Some(&size) = sizes.get(r) {
                first.insert(r.clone(), garbage(&m.paths.object(r), size, WHY_REPLACED));
            }
        }
    }
    for (path, size, collectible) in retired_adds {
        if pending.contains(&path) || first.contains_key(&path) {
            continue;
        }
        if collectible {
            first.insert(
                path.clone(),
                garbage(&m.paths.object(&path), size, WHY_RETIRED),
            );
        } else {
            report.pending += 1;
        }
    }
    for meta in &merged {
        let Some(path) = rel(&meta.location) else {
            continue;
        };
        if live.contains(&path) || pending.contains(&path) || first.contains_key(&path) {
            continue;
        }
        if !path.ends_with(".parquet") {
            continue;
        }
        if old(meta) {
            first.insert(path, garbage(&meta.location, meta.size, WHY_ORPHAN));
        } else {
            report.pending += 1;
        }
    }
    let mut unnamed_chunks = Vec::new();
    if !chunks.is_empty() {
        let reached = reachable_chunks(p, &state).await?;
        for meta in &chunks {
            let Some(path) = rel(&meta.location) else {
                continue;
            };
            if reached.contains(&path) || !path.ends_with(".json") {
                continue;
            }
            if old(meta) {
                unnamed_chunks.push(garbage(&meta.location, meta.size, WHY_CHUNK));
            } else {
                report.pending += 1;
            }
        }
    }

    let first: Vec<Garbage> = first.into_values().collect();
    report.garbage.extend(first.iter().cloned());
    report
        .garbage
        .extend(commits.iter().map(|(g, _)| g.clone()));
    report.garbage.extend(unnamed_chunks.iter().cloned());
    if dry_run {
        return Ok(report);
    }
    let mut failed = delete_objects(
        p,
        first.iter().map(|g| Path::from(g.path.as_str())).collect(),
    )
    .await;
    // A commit goes only once every object it names is gone; the others wait (as failed).
    let (commits, held): (Vec<_>, Vec<_>) = commits.iter().partition(|(_, named)| {
        !named
            .iter()
            .any(|n| failed.contains(&m.paths.object(n).to_string()))
    });
    failed.extend(held.iter().map(|(g, _)| g.path.clone()));
    let commits = commits.iter().map(|(g, _)| Path::from(g.path.as_str()));
    let commits = commits.collect();
    failed.extend(delete_objects(p, commits).await);
    let chunks = unnamed_chunks.iter().map(|g| Path::from(g.path.as_str()));
    failed.extend(delete_objects(p, chunks.collect()).await);
    report.failed = failed.len() as u64;
    report.garbage.retain(|g| !failed.contains(&g.path));
    if !report.garbage.is_empty() {
        tracing::info!(topic = %p.id.topic, partition = p.id.partition,
            deleted = report.garbage.len(), pending = report.pending, "garbage collected");
    }
    Ok(report)
}

fn garbage(path: &Path, bytes: u64, why: &'static str) -> Garbage {
    Garbage {
        path: path.to_string(),
        bytes,
        why,
    }
}

/// The chunks (relative paths) that the current state or a checkpoint there is reaches.
async fn reachable_chunks(
    p: &Partition,
    state: &crate::cold::manifest::ManifestState,
) -> Result<HashSet<String>> {
    let m = &p.manifest;
    let mut roots: Vec<ChunkRef> = Vec::new();
    let top = |s: &crate::cold::manifest::ManifestState, roots: &mut Vec<ChunkRef>| {
        for n in s.nodes() {
            if let Node::Chunk(c) = n {
                roots.push(c.clone());
            }
        }
    };
    top(state, &mut roots);
    for cp in m.checkpoints().await? {
        top(&cp, &mut roots);
    }
    let mut reached = HashSet::new();
    while let Some(c) = roots.pop() {
        if !reached.insert(c.path.clone()) {
            continue;
        }
        for n in m.chunk(&c.path).await?.iter() {
            if let Node::Chunk(child) = n {
                roots.push(child.clone());
            }
        }
    }
    Ok(reached)
}

/// The store's current time, ms: the last-modified time of a small object written now
/// (`P/manifest/_sweep_clock`: one PUT and one HEAD).
async fn store_now_ms(p: &Partition) -> Result<i64> {
    let store = p.manifest.store();
    let clock = p.manifest.paths.object(SWEEP_CLOCK);
    store.put(&clock, bytes::Bytes::new().into()).await?;
    Ok(store.head(&clock).await?.last_modified.timestamp_millis())
}

/// The object whose last-modified time tells the collector the store's time.
const SWEEP_CLOCK: &str = "manifest/_sweep_clock";

/// Deletes unreferenced objects of `p`, a few at once; a failure is logged and leaves the
/// object to the next collection. Returns the paths whose delete failed.
pub(crate) async fn delete_objects(p: &Partition, paths: Vec<Path>) -> HashSet<String> {
    let store = p.manifest.store().clone();
    let mut results = futures::stream::iter(paths)
        .map(|path| {
            let store = store.clone();
            async move { (store.delete(&path).await, path) }
        })
        .buffer_unordered(8);
    let mut failed = HashSet::new();
    while let Some((r, path)) = results.next().await {
        match r {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
            Err(e) => {
                tracing::warn!(path = %path, error = %e, "could not delete an unreferenced object; the next collection tries again");
                failed.insert(path.to_string());
            }
        }
    }
    failed
}
