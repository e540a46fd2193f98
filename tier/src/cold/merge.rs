//! Merging: a partition's leader rewrites runs of adjacent small committed segments into one
//! large object, so that a busy partition's history is a few large Parquet files instead of
//! millions of small ones (every SQL scan, replay, external engine and LIST pays per object).
//!
//! How a merge goes:
//! 1. **Plan** from the leader's committed state: the oldest run of adjacent small segments
//!    (under a quarter of `merge_target_bytes`, with every record older than
//!    `merge_min_age_ms`) of at least `merge_min_segments` of them, or of at least the target's
//!    bytes; its prefix of up to the target's bytes (and [`MAX_INPUTS`] segments) is merged,
//!    less a first input larger than the rest together (an earlier merge's object waits until
//!    the small ones after it outweigh it).
//! 2. **Read** the inputs whole, each checked against its manifest entry's footer digest and
//!    its row-group CRCs; a bad input stops the merge with an error naming it, and is never an
//!    input again while this leader runs.
//! 3. **Write** one object under `merged/` (row groups of `row_group_bytes`, the segment schema
//!    with its statistics, CRCs and footer digest) on the low-priority encoder threads, and
//!    upload it with a create-only PUT, outside the commit sequence: acks=all cuts keep
//!    committing meanwhile.
//! 4. **Commit** a small [`Op::Replace`] naming the object and the inputs, under the writer
//!    lock, fenced by epoch like every commit. If retention or another merge changed those
//!    segments meanwhile, the merge is abandoned and its object deleted.
//!
//! Pacing: reads and the upload move at most `merge_bytes_per_sec`; each store request waits
//! (up to [`GIVE_WAY_MAX`]) until no upload runs on the node, so commits producers wait for
//! never queue behind a merge at the object store; one merge runs at a time per node; encoding
//! runs at the idle CPU priority.
//!
//! Invariants: offsets, timestamps, keys, values, headers and producer fields are copied
//! unchanged (a merged object holds exactly its inputs' rows, checked); the replaced objects
//! stay until the commit is older than the grace period (`cold::gc`), so readers of the old
//! objects finish; a crash at any step leaves the old objects live (nothing committed: the
//! merged object is an orphan that garbage collection removes after the grace period) or the
//! new one (committed), never both or neither, as the commit is one atomic create. A merged
//! object is committed only under the writer lock and within half the grace period of its
//! upload, so garbage collection (which reads the state under the same lock) can never take it
//! for an orphan.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutMode, PutPayload};

use crate::cold::manifest::{Op, SegmentEntry};
use crate::cold::parquet::{SegmentWriter, decode_checked};
use crate::epochs::push_epoch_run;
use crate::error::{Error, Result};
use crate::partition::{Jobs, Partition};
use crate::producers::ProducerStates;

/// The most segments one merge takes (their paths are listed in the commit).
pub const MAX_INPUTS: usize = 1000;

/// The longest a merge or compaction waits for uploads to finish before each store request:
/// it sends its requests in the gaps between uploads, and still moves under steady load.
pub(crate) const GIVE_WAY_MAX: Duration = Duration::from_millis(250);

/// Waits (up to [`GIVE_WAY_MAX`]) until no upload runs on the node, counting the wait in `p`'s
/// status.
pub(crate) async fn give_way(jobs: &Jobs, p: &Partition) {
    let waited = jobs.uploads.give_way(GIVE_WAY_MAX).await;
    if !waited.is_zero() {
        p.merge_status
            .write()
            .expect("merge status lock poisoned")
            .gave_way += waited;
    }
}

/// Where merged (and compacted) objects live under the partition prefix.
pub const MERGED_DIR: &str = "merged";

/// The settings a plan needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub target_bytes: u64,
    pub min_segments: usize,
    pub min_age_ms: i64,
}

impl Policy {
    pub fn of(cfg: &crate::config::TierConfig) -> Self {
        Policy {
            target_bytes: cfg.merge_target_bytes,
            min_segments: cfg.merge_min_segments,
            min_age_ms: i64::try_from(cfg.merge_min_age_ms).unwrap_or(i64::MAX),
        }
    }

    fn small(&self, s: &SegmentEntry) -> bool {
        s.size < self.target_bytes / 4
    }
}

/// What planning found: the inputs of the next merge (if one is due), the first offset that
/// holds a small segment (`frontier`), and what waits.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Plan {
    pub inputs: Vec<SegmentEntry>,
    pub frontier: Option<i64>,
    pub waiting_segments: u64,
    pub waiting_bytes: u64,
}

/// Plans the next merge over `segments` (in offset order), at `now_ms`, skipping `bad` ones.
pub(crate) fn plan(
    segments: &[SegmentEntry],
    policy: Policy,
    now_ms: i64,
    bad: &BTreeSet<String>,
) -> Plan {
    let mut out = Plan::default();
    let old_enough = |s: &SegmentEntry| s.max_timestamp <= now_ms.saturating_sub(policy.min_age_ms);
    let mut run: Vec<&SegmentEntry> = Vec::new();
    let mut chosen = false;
    let mut close = |run: &mut Vec<&SegmentEntry>, out: &mut Plan| {
        let bytes: u64 = run.iter().map(|s| s.size).sum();
        if !chosen
            && run.len() >= 2
            && (run.len() >= policy.min_segments || bytes >= policy.target_bytes)
        {
            let mut total = 0;
            for s in run.iter() {
                if out.inputs.len() >= 2
                    && (total + s.size > policy.target_bytes || out.inputs.len() >= MAX_INPUTS)
                {
                    break;
                }
                total += s.size;
                out.inputs.push((*s).clone());
            }
            // Tiered: an input larger than all those after it together (an earlier merge's
            // object) waits until they outweigh it, so a byte is rewritten a logarithmic
            // number of times, not once per merge.
            while out.inputs.len() > 2 && out.inputs[0].size > total - out.inputs[0].size {
                total -= out.inputs[0].size;
                out.inputs.remove(0);
            }
            chosen = true;
        }
        run.clear();
    };
    for s in segments {
        if policy.small(s) && !bad.contains(&s.path) {
            out.frontier.get_or_insert(s.base_offset);
            out.waiting_segments += 1;
            out.waiting_bytes += s.size;
            if old_enough(s) {
                run.push(s);
                continue;
            }
        }
        close(&mut run, &mut out);
    }
    close(&mut run, &mut out);
    out
}

/// Small segments (and their bytes) of a committed `state`, counted from its entries alone
/// without loading chunks (a chunk's segments by their average size): what a node that does not
/// lead the partition says waits to merge.
pub(crate) fn waiting_in(
    state: &crate::cold::manifest::ManifestState,
    policy: Policy,
) -> (u64, u64) {
    use crate::cold::manifest::Node;
    let mut out = (0, 0);
    for n in state.nodes() {
        let (segments, bytes) = match n {
            Node::Segment(s) => (1, s.size),
            Node::Chunk(c) => (c.segments, c.size),
        };
        if segments > 0 && bytes / segments < policy.target_bytes / 4 {
            out.0 += segments;
            out.1 += bytes;
        }
    }
    out
}

/// Runs a key compaction pass of `p` if one is due (compacted topics), then merges until none
/// is due (or one fails), then returns. The caller marks the partition's status `running`
/// before and this clears it.
pub(crate) async fn run(jobs: Arc<Jobs>, p: Arc<Partition>) {
    // Key compaction first (compacted topics): it rewrites the history merging would.
    let compaction = p.retention.read().expect("retention lock poisoned").compact;
    if let Some(c) = compaction {
        let r = tokio::select! {
            _ = p.cancel.cancelled() => Err(Error::Closed),
            r = crate::cold::compact::compact_once(&jobs, &p, c, false) => r,
        };
        match r {
            Ok(_) | Err(Error::Closed) => {}
            Err(e) => {
                tracing::warn!(topic = %p.id.topic, partition = p.id.partition, error = %e,
                    "key compaction failed; trying again later");
                p.merge_status
                    .write()
                    .expect("merge status lock poisoned")
                    .last_error = Some(e.to_string());
            }
        }
    }
    if !jobs.cfg.merge_enabled {
        p.merge_status
            .write()
            .expect("merge status lock poisoned")
            .running = false;
        return;
    }
    let policy = Policy::of(&jobs.cfg);
    // A round ends when nothing is due, or when a merge was given up (the next round plans
    // again from what changed).
    loop {
        let abandoned = p
            .merge_status
            .read()
            .expect("merge status lock poisoned")
            .abandoned;
        let r = tokio::select! {
            _ = p.cancel.cancelled() => Err(Error::Closed),
            r = merge_once(&jobs, &p, policy) => r,
        };
        let mut st = p.merge_status.write().expect("merge status lock poisoned");
        match r {
            Ok(true) if st.abandoned == abandoned => {
                st.last_error = None;
                continue;
            }
            Ok(true) => {}
            Ok(false) | Err(Error::Closed) => {}
            Err(e) => {
                tracing::warn!(topic = %p.id.topic, partition = p.id.partition, error = %e,
                    "merge failed; trying again later");
                st.last_error = Some(e.to_string());
            }
        }
        st.running = false;
        return;
    }
}

/// Plans and, when one is due, runs one merge: true if it committed one (or gave it up
/// because the segments changed), false when none is due.
pub(crate) async fn merge_once(jobs: &Jobs, p: &Partition, policy: Policy) -> Result<bool> {
    p.check_fenced()?;
    // Planned while holding the node's merge slot: two merges of one partition never race.
    let _one_at_a_time = jobs.merges.acquire().await.map_err(|_| Error::Closed)?;
    let state = p.cold();
    let (frontier, bad) = {
        let st = p.merge_status.read().expect("merge status lock poisoned");
        (st.frontier, st.bad.clone())
    };
    let segments = p
        .manifest
        .segments_from(&state, frontier.max(state.start_offset))
        .await?;
    let planned = plan(&segments, policy, crate::now_ms(), &bad);
    {
        let mut st = p.merge_status.write().expect("merge status lock poisoned");
        st.frontier = planned.frontier.unwrap_or(state.next_offset);
        st.waiting_segments = planned.waiting_segments;
        st.waiting_bytes = planned.waiting_bytes;
    }
    if planned.inputs.is_empty() {
        return Ok(false);
    }
    let inputs: BTreeSet<String> = planned.inputs.iter().map(|s| s.path.clone()).collect();
    let r = merge(jobs, p, planned.inputs).await;
    if let Err(Error::Corrupt { location, .. }) = &r {
        // A bad input (the error names it) is never used again by this leader.
        let prefix = format!("{}/", p.manifest.paths.prefix);
        if let Some(path) = location
            .strip_prefix(&prefix)
            .filter(|p| inputs.contains(*p))
        {
            p.merge_status
                .write()
                .expect("merge status lock poisoned")
                .bad
                .insert(path.to_string());
        }
    }
    r
}

/// Sleeps as long as it takes for `bytes` moved since `started` to stay within `rate` bytes a
/// second (0: unpaced).
pub(crate) async fn pace(started: Instant, bytes: u64, rate: u64) {
    if rate == 0 {
        return;
    }
    let due = Duration::from_secs_f64(bytes as f64 / rate as f64);
    if let Some(wait) = due.checked_sub(started.elapsed()) {
        tokio::time::sleep(wait).await;
    }
}

/// Reads a committed segment's object whole, checked against its entry's size.
pub(crate) async fn read_segment(p: &Partition, s: &SegmentEntry) -> Result<(String, Bytes)> {
    let path = p.manifest.paths.object(&s.path);
    let bytes = match p.manifest.store().get(&path).await {
        Ok(r) => r.bytes().await?,
        Err(object_store::Error::NotFound { .. }) => {
            return Err(Error::Corrupt {
                location: path.to_string(),
                position: 0,
                reason: "a committed segment's object is missing".into(),
            });
        }
        Err(e) => return Err(e.into()),
    };
    if bytes.len() as u64 != s.size {
        return Err(Error::Corrupt {
            location: path.to_string(),
            position: 0,
            reason: format!("{} bytes where the manifest has {}", bytes.len(), s.size),
        });
    }
    Ok((path.to_string(), bytes))
}

/// Names a rewritten object (merged or compacted) of `entry`'s range under [`MERGED_DIR`],
/// fills in the entry's path and size, and uploads `bytes` there with a create-only PUT
/// (retried; a retry finding its own object is fine) once no upload runs on the node. Returns
/// the object's path.
pub(crate) async fn upload_rewritten(
    jobs: &Jobs,
    p: &Partition,
    bytes: Bytes,
    entry: &mut SegmentEntry,
) -> Result<object_store::path::Path> {
    let rel = format!(
        "{MERGED_DIR}/{:020}-{:020}-{:016x}.parquet",
        entry.base_offset,
        entry.last_offset,
        fastrand::u64(..)
    );
    entry.path = rel.clone();
    entry.size = bytes.len() as u64;
    let path = p.manifest.paths.object(&rel);
    let store = p.manifest.store().clone();
    give_way(jobs, p).await;
    let mut retry = jobs.retry_until(p.cancel.clone());
    retry.max_attempts = Some(5);
    retry
        .run("upload a rewritten object", || {
            let (store, path, bytes) = (store.clone(), path.clone(), bytes.clone());
            async move {
                match store
                    .put_opts(&path, PutPayload::from(bytes), PutMode::Create.into())
                    .await
                {
                    // A retried create that had landed.
                    Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => Ok(()),
                    Err(e) => Err(Error::from(e)),
                }
            }
        })
        .await?;
    Ok(path)
}

/// Merges `inputs` (adjacent committed segments) into one object and commits it.
#[tracing::instrument(level = "debug", name = "merge", skip_all,
    fields(storage = %p.id.topic, partition = p.id.partition, inputs = inputs.len(),
        base = inputs[0].base_offset))]
async fn merge(jobs: &Jobs, p: &Partition, inputs: Vec<SegmentEntry>) -> Result<bool> {
    let cfg = &jobs.cfg;
    let rate = cfg.merge_bytes_per_sec;
    let started = Instant::now();
    let mut moved = 0u64;
    let mut blobs = Vec::with_capacity(inputs.len());
    for s in &inputs {
        p.check_fenced()?;
        give_way(jobs, p).await;
        let (location, bytes) = read_segment(p, s).await?;
        moved += s.size;
        pace(started, moved, rate).await;
        blobs.push((location, s.clone(), bytes));
    }
    let (id, epoch) = (p.id.clone(), p.epoch);
    let (row_group_bytes, zstd) = (cfg.row_group_bytes, cfg.zstd_level);
    let (bytes, mut entry) = jobs
        .encoders
        .run(false, move || {
            encode_merged(&id, &blobs, epoch, row_group_bytes, zstd)
        })
        .await?;
    let (base, last) = (entry.base_offset, entry.last_offset);
    let written = bytes.len() as u64;
    let uploaded_at = Instant::now();
    let path = upload_rewritten(jobs, p, bytes, &mut entry).await?;
    moved += written;
    pace(started, moved, rate).await;
    let deadline = Duration::from_millis(cfg.orphan_grace_ms / 2);
    let committed = commit(p, &inputs, vec![entry], None, uploaded_at, deadline).await;
    let committed = match committed {
        Ok(c) => c,
        Err(e) => {
            // Nothing was committed when the commit failed before its PUT; when it failed
            // after (a fenced or lost answer), the object is left to garbage collection.
            if !matches!(e, Error::Closed) {
                tracing::warn!(topic = %p.id.topic, partition = p.id.partition, error = %e,
                    "merge commit failed; the merged object is left to garbage collection");
            }
            return Err(e);
        }
    };
    if !committed {
        p.merge_status
            .write()
            .expect("merge status lock poisoned")
            .abandoned += 1;
        // One left behind is an orphan that garbage collection removes.
        crate::cold::gc::delete_objects(p, vec![path]).await;
        return Ok(true);
    }
    let mut st = p.merge_status.write().expect("merge status lock poisoned");
    st.merges += 1;
    st.merged_segments += inputs.len() as u64;
    st.read_bytes += inputs.iter().map(|s| s.size).sum::<u64>();
    st.written_bytes += written;
    drop(st);
    tracing::info!(topic = %p.id.topic, partition = p.id.partition, base, last,
        inputs = inputs.len(), bytes = written, took_ms = started.elapsed().as_millis() as u64,
        "segments merged");
    Ok(true)
}

/// Commits a rewrite of `inputs` (a merge, or a key compaction with its `compaction` mark)
/// into `segments` under the writer lock, if the inputs are still the committed segments there
/// and the new objects are younger than `deadline`: true if it committed, false if it gave up
/// (nothing written).
pub(crate) async fn commit(
    p: &Partition,
    inputs: &[SegmentEntry],
    segments: Vec<SegmentEntry>,
    compaction: Option<crate::cold::manifest::Compaction>,
    uploaded_at: Instant,
    deadline: Duration,
) -> Result<bool> {
    let replaced: Vec<String> = inputs.iter().map(|s| s.path.clone()).collect();
    let mut w = p.writer.lock().await;
    let state = w.state();
    let (base, last) = (inputs[0].base_offset, inputs[inputs.len() - 1].last_offset);
    // Under the writer lock, which acks=all commits wait for: only the range's entries.
    let now = p.manifest.segments_in(state, base, last).await?;
    if now.len() != inputs.len() || now.iter().zip(inputs).any(|(a, b)| a.path != b.path) {
        tracing::info!(topic = %p.id.topic, partition = p.id.partition, base, last,
            "rewrite abandoned: the segments changed since it was planned");
        return Ok(false);
    }
    if uploaded_at.elapsed() > deadline {
        tracing::warn!(topic = %p.id.topic, partition = p.id.partition, base, last,
            "rewrite abandoned: its commit came too long after the upload");
        return Ok(false);
    }
    let r = w
        .commit(Op::Replace {
            base_offset: base,
            last_offset: last,
            replaced,
            segments,
            compaction,
        })
        .await;
    p.set_cold(w.state());
    if let Err(Error::Fenced { current, .. }) = &r {
        p.fenced(*current);
    }
    r.map(|()| true)
}

/// Encodes the rows of `inputs` (path, entry, object bytes; adjacent, in offset order) as one
/// segment object, checking each input and that the rows are exactly the inputs' offsets.
/// Returns the bytes and the merged entry (path and size left to the caller).
pub(crate) fn encode_merged(
    id: &crate::PartitionId,
    inputs: &[(String, SegmentEntry, Bytes)],
    epoch: u64,
    row_group_bytes: usize,
    zstd_level: i32,
) -> Result<(Bytes, SegmentEntry)> {
    let first = &inputs
        .first()
        .ok_or_else(|| Error::invalid("a merge of nothing"))?
        .1;
    let last = &inputs[inputs.len() - 1].1;
    let raw: u64 = inputs.iter().map(|(_, s, _)| s.raw_bytes).sum();
    let records: u64 = inputs.iter().map(|(_, s, _)| s.records).sum();
    let mut w = SegmentWriter::new(
        id,
        first.base_offset,
        last.last_offset,
        (raw, records),
        row_group_bytes,
        zstd_level,
    )?;
    let mut expect = first.base_offset;
    let mut producers = ProducerStates::default();
    let mut epochs = Vec::new();
    for (location, s, bytes) in inputs {
        if s.base_offset != expect {
            return Err(Error::invalid(format!(
                "merge inputs are not adjacent: {location} starts at {} where {expect} was next",
                s.base_offset
            )));
        }
        let corrupt = |reason: String| Error::Corrupt {
            location: location.clone(),
            position: 0,
            reason,
        };
        let mut rows = 0u64;
        for b in decode_checked(bytes.clone(), location, s.footer_crc32c)? {
            let offsets = b
                .column_by_name("offset")
                .and_then(|c| c.as_any().downcast_ref::<arrow_array::Int64Array>())
                .ok_or_else(|| corrupt("no offset column".into()))?;
            for &o in offsets.values().iter() {
                if o < s.base_offset || o > s.last_offset || o < expect {
                    return Err(corrupt(format!(
                        "row at offset {o} where {expect} or later within [{}, {}] was expected",
                        s.base_offset, s.last_offset
                    )));
                }
                expect = o + 1;
            }
            rows += b.num_rows() as u64;
            w.write(&b)?;
        }
        if rows != s.records {
            return Err(corrupt(format!(
                "{rows} rows where the manifest has {}",
                s.records
            )));
        }
        expect = s.last_offset + 1;
        producers.merge(&s.producers);
        for run in s.epoch_runs() {
            push_epoch_run(&mut epochs, run);
        }
    }
    let (bytes, summary) = w.finish(raw, |sum| Ok((Vec::new(), *sum)))?;
    let entry = SegmentEntry {
        path: String::new(),
        base_offset: first.base_offset,
        last_offset: last.last_offset,
        min_timestamp: summary.min_timestamp,
        max_timestamp: summary.max_timestamp,
        records,
        size: 0,
        raw_bytes: raw,
        row_groups: summary.row_groups,
        epoch,
        producers,
        footer_crc32c: Some(summary.footer_digest),
        leader_epochs: epochs,
    };
    Ok((bytes, entry))
}

#[cfg(test)]
mod tests;
