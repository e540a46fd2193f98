//! Key compaction: for a topic with `cleanup.policy=compact`, the partition's leader rewrites
//! its cold history so that it keeps the newest record of each key (Kafka's log cleaner, done
//! on the object-store tier).
//!
//! How a pass goes:
//! 1. **Plan** from the leader's committed state. The log below the last compaction point
//!    ([`ManifestState::compacted_below`]) is *clean*: it holds at most one record per key.
//!    Above it, the *dirty* range is the run of committed segments whose records are all older
//!    than `min.compaction.lag.ms`, never the newest committed segment (nor the hot tier). A
//!    pass is due when the dirty bytes reach `compaction_min_dirty_ratio` of the partition's
//!    cold bytes, when tombstones are due to go, or when asked (`storage compact`).
//! 2. **Map** the dirty range: key (a 128-bit hash of it) → its newest offset. The map is
//!    bounded by `compaction_key_map_bytes`; when it fills, the dirty range ends at the first
//!    record whose key did not fit, and the next pass goes on from there.
//! 3. **Rewrite** every segment from the log start to the end of the dirty range, on the
//!    low-priority encoder threads, dropping a record when the map holds a newer offset for
//!    its key, and a tombstone (null value) once a compaction pass at least
//!    `delete.retention.ms` old covered it. Records without a key (written before the topic
//!    was compacted) and every record at or after the dirty range's end are kept. The new
//!    objects (up to `merge_target_bytes` each, cut at input boundaries) go under `merged/`
//!    with create-only PUTs.
//! 4. **Commit** one [`Op::Replace`] with a [`Compaction`] mark under the writer lock, as a
//!    merge commits (abandoned if the segments changed meanwhile).
//!
//! Invariants: offsets never change; a segment keeps its offset range, so compacted segments
//! may have gaps (readers skip them); a key's newest record at the time of the pass is never
//! removed (unless it is a tombstone past its retention), nor is anything at or after the
//! compaction point; producers' idempotence state is carried by the manifest, not by the
//! records, so it survives their batches being compacted away. A crash at any step leaves the
//! old segments or the new ones live, as for merging.

use std::collections::HashMap;
use std::time::Instant;

use arrow_array::{Array, BinaryArray, BooleanArray, Int64Array, RecordBatch as ArrowBatch};
use bytes::Bytes;

use crate::cold::manifest::{Compaction, ManifestState, SegmentEntry};
use crate::cold::merge::{MAX_INPUTS, pace};
use crate::cold::parquet::{SegmentWriter, decode_checked};
use crate::epochs::{EpochRun, push_epoch_run};
use crate::error::{Error, Result};
use crate::partition::{Jobs, KeyCompaction, Partition};
use crate::producers::ProducerStates;

/// Bytes one key map entry costs (a 128-bit key hash, an offset, the table's overhead).
pub const KEY_MAP_ENTRY_BYTES: u64 = 40;

/// What a pass is to do, planned from the committed segments.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Plan {
    /// The segments the dirty range lies in (the first may start below it).
    pub dirty: Vec<SegmentEntry>,
    /// The segments wholly below the dirty range (from the log start).
    pub clean: Vec<SegmentEntry>,
    /// Where the dirty range starts (the last compaction point).
    pub dirty_from: i64,
}

/// Why a pass would run, or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Due {
    /// Enough new data, tombstones to drop, or asked.
    Yes,
    No,
}

/// The settings a plan needs.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Policy {
    pub compaction: KeyCompaction,
    pub min_dirty_ratio: f64,
    pub key_map_entries: usize,
    pub target_bytes: u64,
}

impl Policy {
    pub fn of(cfg: &crate::config::TierConfig, compaction: KeyCompaction) -> Self {
        Policy {
            compaction,
            min_dirty_ratio: cfg.compaction_min_dirty_ratio,
            key_map_entries: usize::try_from(cfg.compaction_key_map_bytes / KEY_MAP_ENTRY_BYTES)
                .unwrap_or(usize::MAX)
                .max(1),
            target_bytes: cfg.merge_target_bytes,
        }
    }

    fn ms(d: std::time::Duration) -> i64 {
        i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
    }
}

/// Plans a pass over `segments` (the committed ones, in offset order) of a log in `state`, at
/// `now_ms`: `None` when nothing is to be compacted; otherwise the plan and whether it is due
/// (`force` makes any plan due).
pub(crate) fn plan(
    state: &ManifestState,
    segments: &[SegmentEntry],
    policy: &Policy,
    now_ms: i64,
    force: bool,
) -> Option<(Plan, Due)> {
    let dirty_from = state.compacted_below();
    let lag_cutoff = now_ms.saturating_sub(Policy::ms(policy.compaction.min_lag));
    let newest = segments.len().saturating_sub(1);
    let mut clean = Vec::new();
    let mut dirty = Vec::new();
    for (i, s) in segments.iter().enumerate() {
        if s.last_offset < dirty_from {
            clean.push(s.clone());
            continue;
        }
        // The newest committed segment and anything younger than the lag stay as they are.
        if i == newest || s.max_timestamp > lag_cutoff || clean.len() + dirty.len() >= MAX_INPUTS {
            break;
        }
        dirty.push(s.clone());
    }
    let horizon = state.tombstone_horizon(now_ms, Policy::ms(policy.compaction.delete_retention));
    let tombstones_due = state
        .compactions
        .last()
        .and_then(|c| c.first_tombstone)
        .is_some_and(|t| t < horizon);
    if dirty.is_empty() && !tombstones_due {
        return None;
    }
    let dirty_bytes: u64 = dirty.iter().map(|s| s.size).sum();
    let total: u64 = segments.iter().map(|s| s.size).sum();
    let ratio_met = dirty_bytes as f64 >= policy.min_dirty_ratio * total as f64;
    let due = if force || tombstones_due || (!dirty.is_empty() && ratio_met) {
        Due::Yes
    } else {
        Due::No
    };
    Some((
        Plan {
            dirty,
            clean,
            dirty_from,
        },
        due,
    ))
}

/// The key map of a dirty range: 128-bit key hash → the newest offset holding that key.
#[derive(Debug, Default)]
pub(crate) struct KeyMap {
    newest: HashMap<u128, i64>,
}

/// The hash a key is known by in the map (xxh3-128: a collision, which would drop a record of
/// another key, is as unlikely as a random 128-bit match).
pub(crate) fn key_hash(key: &[u8]) -> u128 {
    twox_hash::XxHash3_128::oneshot(key)
}

impl KeyMap {
    /// Adds the keyed rows of `batch` at or after `from` to the map, in offset order, while it
    /// holds fewer than `capacity` keys. Returns the offset of the first row whose key did not
    /// fit (the dirty range ends there), or `None` when all did.
    pub fn add(&mut self, batch: &ArrowBatch, from: i64, capacity: usize) -> Result<Option<i64>> {
        let (offsets, keys, _) = columns(batch)?;
        for i in 0..batch.num_rows() {
            let o = offsets.value(i);
            if o < from || keys.is_null(i) {
                continue;
            }
            let h = key_hash(keys.value(i));
            if self.newest.len() >= capacity && !self.newest.contains_key(&h) {
                return Ok(Some(o));
            }
            self.newest.insert(h, o);
        }
        Ok(None)
    }

    pub fn len(&self) -> usize {
        self.newest.len()
    }

    /// Whether the record at `offset` with `key` is superseded by a newer one in the map.
    fn superseded(&self, key: &[u8], offset: i64) -> bool {
        self.newest.get(&key_hash(key)).is_some_and(|&o| o > offset)
    }
}

fn columns(batch: &ArrowBatch) -> Result<(&Int64Array, &BinaryArray, &BinaryArray)> {
    let col = |name: &str| {
        batch
            .column_by_name(name)
            .ok_or_else(|| Error::invalid(format!("no {name} column in a segment")))
    };
    let offsets = col("offset")?
        .as_any()
        .downcast_ref::<Int64Array>()
        .ok_or_else(|| Error::invalid("offset column of another type"))?;
    let keys = col("key")?
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or_else(|| Error::invalid("key column of another type"))?;
    let values = col("value")?
        .as_any()
        .downcast_ref::<BinaryArray>()
        .ok_or_else(|| Error::invalid("value column of another type"))?;
    Ok((offsets, keys, values))
}

/// What the rewrite keeps of one batch.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Kept {
    pub rows: u64,
    pub removed: u64,
    /// The oldest tombstone kept below `dirty_end`.
    pub first_tombstone: Option<i64>,
}

/// The rows of `batch` that a pass keeps: those at or after `dirty_end`, those without a key,
/// a key's newest one (a tombstone only while at or after `horizon`).
pub(crate) fn keep(
    batch: &ArrowBatch,
    map: &KeyMap,
    dirty_end: i64,
    horizon: i64,
) -> Result<(ArrowBatch, Kept)> {
    let (offsets, keys, values) = columns(batch)?;
    let mut kept = Kept::default();
    let mask: BooleanArray = (0..batch.num_rows())
        .map(|i| {
            let o = offsets.value(i);
            let keep = if o >= dirty_end || keys.is_null(i) {
                true
            } else if map.superseded(keys.value(i), o) {
                false
            } else if values.is_null(i) {
                let keep = o >= horizon;
                if keep {
                    kept.first_tombstone.get_or_insert(o);
                }
                keep
            } else {
                true
            };
            if keep {
                kept.rows += 1;
            } else {
                kept.removed += 1;
            }
            Some(keep)
        })
        .collect();
    let out = arrow_select::filter::filter_record_batch(batch, &mask)
        .map_err(|e| Error::invalid(format!("filtering a segment's rows: {e}")))?;
    Ok((out, kept))
}

/// What a pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct CompactReport {
    /// Segments read and replaced, objects written.
    pub inputs: u64,
    pub outputs: u64,
    /// Records removed, records kept in the rewritten range.
    pub removed: u64,
    pub kept: u64,
    /// The new compaction point.
    pub below: i64,
    /// Whether the pass was abandoned (the segments changed under it).
    pub abandoned: bool,
}

/// Plans and, when one is due (or `force`), runs one compaction pass of `p`. `None`: nothing
/// to do.
pub(crate) async fn compact_once(
    jobs: &Jobs,
    p: &Partition,
    compaction: KeyCompaction,
    force: bool,
) -> Result<Option<CompactReport>> {
    p.check_fenced()?;
    let _one_at_a_time = jobs.merges.acquire().await.map_err(|_| Error::Closed)?;
    let state = p.cold();
    let segments = p.manifest.segments(&state).await?;
    let policy = Policy::of(&jobs.cfg, compaction);
    let now = crate::now_ms();
    let Some((planned, due)) = plan(&state, &segments, &policy, now, force) else {
        return Ok(None);
    };
    if due == Due::No {
        return Ok(None);
    }
    let horizon = state.tombstone_horizon(now, Policy::ms(compaction.delete_retention));
    let report = pass(jobs, p, &policy, planned, horizon).await?;
    let mut st = p.merge_status.write().expect("merge status lock poisoned");
    if report.abandoned {
        st.abandoned += 1;
    } else {
        st.compactions += 1;
        st.compacted_away += report.removed;
    }
    Ok(Some(report))
}

/// One output object being written: the inputs it covers so far.
struct Output {
    writer: SegmentWriter,
    first: SegmentEntry,
    last: SegmentEntry,
    raw: u64,
    /// Bytes of the inputs it was made from, scaled by the share of rows kept.
    estimate: u64,
    producers: ProducerStates,
    leader_epochs: Vec<EpochRun>,
}

#[tracing::instrument(level = "debug", name = "compact", skip_all,
    fields(storage = %p.id.topic, partition = p.id.partition, from = planned.dirty_from))]
async fn pass(
    jobs: &Jobs,
    p: &Partition,
    policy: &Policy,
    planned: Plan,
    horizon: i64,
) -> Result<CompactReport> {
    let cfg = &jobs.cfg;
    let rate = cfg.merge_bytes_per_sec;
    let started = Instant::now();
    let mut moved = 0u64;
    // 1. The key map of the dirty range.
    let mut map = KeyMap::default();
    let mut dirty_end = planned
        .dirty
        .last()
        .map_or(planned.dirty_from, |s| s.last_offset + 1);
    for s in &planned.dirty {
        p.check_fenced()?;
        crate::cold::merge::give_way(jobs, p).await;
        let (location, bytes) = crate::cold::merge::read_segment(p, s).await?;
        moved += s.size;
        let (from, capacity, digest) =
            (planned.dirty_from, policy.key_map_entries, s.footer_crc32c);
        let (m, full) = jobs
            .encoders
            .run(false, move || {
                for b in decode_checked(bytes, &location, digest)? {
                    if let Some(at) = map.add(&b, from, capacity)? {
                        return Ok((map, Some(at)));
                    }
                }
                Ok((map, None))
            })
            .await?;
        map = m;
        pace(started, moved, rate).await;
        if let Some(at) = full {
            dirty_end = at;
            break;
        }
    }
    // 2. Rewrite everything from the log start to the end of the dirty range.
    let inputs: Vec<SegmentEntry> = planned
        .clean
        .iter()
        .chain(planned.dirty.iter().filter(|s| s.base_offset < dirty_end))
        .cloned()
        .collect();
    if inputs.is_empty() {
        return Ok(CompactReport {
            below: planned.dirty_from,
            ..CompactReport::default()
        });
    }
    let map = std::sync::Arc::new(map);
    let mut report = CompactReport {
        inputs: inputs.len() as u64,
        below: dirty_end,
        ..CompactReport::default()
    };
    let mut first_tombstone: Option<i64> = None;
    let mut outputs: Vec<(Bytes, SegmentEntry)> = Vec::new();
    let mut current: Option<Output> = None;
    let (row_group_bytes, zstd, epoch) = (cfg.row_group_bytes, cfg.zstd_level, p.epoch);
    for s in &inputs {
        p.check_fenced()?;
        crate::cold::merge::give_way(jobs, p).await;
        let (location, bytes) = crate::cold::merge::read_segment(p, s).await?;
        moved += s.size;
        let (id, s2, map2) = (p.id.clone(), s.clone(), map.clone());
        let cur = current.take();
        let (out, kept) = jobs
            .encoders
            .run(false, move || {
                let mut out = match cur {
                    Some(o) => o,
                    None => Output {
                        writer: SegmentWriter::new(
                            &id,
                            s2.base_offset,
                            s2.last_offset,
                            (s2.raw_bytes, s2.records),
                            row_group_bytes,
                            zstd,
                        )?,
                        first: s2.clone(),
                        last: s2.clone(),
                        raw: 0,
                        estimate: 0,
                        producers: ProducerStates::default(),
                        leader_epochs: Vec::new(),
                    },
                };
                let mut kept = Kept::default();
                let mut expect = s2.base_offset;
                for b in decode_checked(bytes, &location, s2.footer_crc32c)? {
                    let (offsets, _, _) = columns(&b)?;
                    for &o in offsets.values().iter() {
                        if o < expect || o > s2.last_offset {
                            return Err(Error::Corrupt {
                                location: location.clone(),
                                position: 0,
                                reason: format!(
                                    "row at offset {o} where {expect} or later within [{}, {}] was expected",
                                    s2.base_offset, s2.last_offset
                                ),
                            });
                        }
                        expect = o + 1;
                    }
                    let (rows, k) = keep(&b, &map2, dirty_end, horizon)?;
                    if rows.num_rows() > 0 {
                        out.writer.write(&rows)?;
                    }
                    kept.rows += k.rows;
                    kept.removed += k.removed;
                    if kept.first_tombstone.is_none() {
                        kept.first_tombstone = k.first_tombstone;
                    }
                }
                if kept.rows + kept.removed != s2.records {
                    return Err(Error::Corrupt {
                        location,
                        position: 0,
                        reason: format!(
                            "{} rows where the manifest has {}",
                            kept.rows + kept.removed,
                            s2.records
                        ),
                    });
                }
                out.last = s2.clone();
                out.writer.set_last_offset(s2.last_offset);
                out.raw += s2.raw_bytes * kept.rows / s2.records.max(1);
                out.estimate += s2.size * kept.rows / s2.records.max(1);
                out.producers.merge(&s2.producers);
                for run in s2.epoch_runs() {
                    push_epoch_run(&mut out.leader_epochs, run);
                }
                Ok((out, kept))
            })
            .await?;
        report.kept += kept.rows;
        report.removed += kept.removed;
        if first_tombstone.is_none() {
            first_tombstone = kept.first_tombstone;
        }
        pace(started, moved, rate).await;
        if out.estimate >= policy.target_bytes {
            outputs.push(finish(jobs, out, epoch).await?);
        } else {
            current = Some(out);
        }
    }
    if let Some(out) = current.take() {
        outputs.push(finish(jobs, out, epoch).await?);
    }
    // 3. Upload, outside the commit sequence.
    let uploaded_at = Instant::now();
    let mut entries = Vec::with_capacity(outputs.len());
    let mut paths = Vec::with_capacity(outputs.len());
    for (bytes, mut entry) in outputs {
        let written = bytes.len() as u64;
        let path = crate::cold::merge::upload_rewritten(jobs, p, bytes, &mut entry).await?;
        moved += written;
        pace(started, moved, rate).await;
        entries.push(entry);
        paths.push(path);
    }
    report.outputs = entries.len() as u64;
    // 4. Commit.
    let mark = Compaction {
        below: dirty_end,
        first_tombstone,
    };
    let deadline = std::time::Duration::from_millis(cfg.orphan_grace_ms / 2);
    let committed =
        crate::cold::merge::commit(p, &inputs, entries, Some(mark), uploaded_at, deadline).await?;
    if !committed {
        report.abandoned = true;
        crate::cold::gc::delete_objects(p, paths).await;
        return Ok(report);
    }
    tracing::info!(topic = %p.id.topic, partition = p.id.partition, below = dirty_end,
        inputs = report.inputs, outputs = report.outputs, removed = report.removed,
        kept = report.kept, keys = map.len(), took_ms = started.elapsed().as_millis() as u64,
        "partition compacted");
    Ok(report)
}

/// Closes an output object: its bytes and entry (path and size left to the caller).
async fn finish(jobs: &Jobs, out: Output, epoch: u64) -> Result<(Bytes, SegmentEntry)> {
    jobs.encoders
        .run(false, move || {
            let Output {
                writer,
                first,
                last,
                raw,
                producers,
                leader_epochs,
                ..
            } = out;
            let (bytes, sum) = writer.finish(raw, |sum| Ok((Vec::new(), *sum)))?;
            let empty = sum.records == 0;
            let entry = SegmentEntry {
                path: String::new(),
                base_offset: first.base_offset,
                last_offset: last.last_offset,
                // An object left with no rows has no timestamps: it sorts before every time.
                min_timestamp: if empty {
                    first.min_timestamp
                } else {
                    sum.min_timestamp
                },
                max_timestamp: if empty {
                    first.min_timestamp
                } else {
                    sum.max_timestamp
                },
                records: sum.records,
                size: 0,
                raw_bytes: raw,
                row_groups: sum.row_groups,
                epoch,
                producers,
                footer_crc32c: Some(sum.footer_digest),
                leader_epochs,
            };
            Ok((bytes, entry))
        })
        .await
}

#[cfg(test)]
mod tests;
