//! The manifest: the committed list of cold segments of one partition, kept in the object store.
//!
//! Layout under the partition prefix `P = <root>/topics/<topic>/<partition>`:
//!
//! ```text
//! P/log/<seq:020>.parquet                             one object per commit (immutable)
//! P/manifest/checkpoints/<seq:020>.json               the state after commit <seq> (derived)
//! P/manifest/chunks/L<level>-<base:020>-<nonce>.json  FANOUT older entries of one level (immutable)
//! P/manifest/_last_checkpoint                         hint: the newest checkpoint's seq
//! ```
//!
//! **Commits are log objects.** Commit `seq` is the Parquet file `P/log/<seq>.parquet` whose
//! footer key-value metadata `tierlog.delta` holds the delta (what the commit does). A commit that
//! adds a segment *is* that segment: its rows are the segment's records, so adding a segment costs
//! one PUT. Other commits (fence, truncate, init) are files with no rows. In the footer, the
//! delta's `seq` is 0 and an added segment's `path` and `size` are empty: they are the object's
//! own name and size, filled in when the delta is read.
//!
//! Every JSON manifest object (and the footer delta) is an envelope
//! `{"format":…,"version":2,"crc32c":N,"body":{…}}` where `crc32c` is CRC-32C of the exact bytes of
//! `body`.
//!
//! **Commits** create object `seq = last + 1` with create-if-absent, so the log is a single linear
//! history: two writers can never both commit the same `seq`. **Fencing**: every delta carries its
//! writer's epoch; a new leader first commits a `fence` with its (higher) epoch. A deposed
//! writer's next create fails (the slot is taken); it re-reads, finds the higher epoch and stops
//! with [`Error::Fenced`]. Epochs along the log never decrease (checked on load).
//!
//! **Cost**: a commit writes one object. Every `CHECKPOINT_EVERY` commits the writer writes a
//! checkpoint; before that, any level holding `FANOUT` entries has its oldest `FANOUT` entries moved
//! into an immutable chunk object referenced from the level above. A checkpoint therefore holds at
//! most `FANOUT` entries per level and `log_FANOUT(segments)` levels: its size grows with the
//! logarithm of history, and chunks, log objects and segments are never rewritten. After each
//! checkpoint, all but the newest `CHECKPOINTS_KEPT` checkpoints are deleted. Checkpoints and
//! chunks are derived from the immutable log, so any writer (even a deposed one) writes a correct
//! one. Log objects a checkpoint covers may be deleted (retired segments, old fences): loading
//! starts from the newest checkpoint, and a reader whose state is older than a gap reloads from it.
//!
//! **Lookups** by offset or timestamp walk levels oldest-first using each entry's offset range and
//! max timestamp, loading (cached) chunks on the way: O(FANOUT × levels) comparisons.

use crate::epochs::{EpochRun, push_epoch_run};
use crate::producers::ProducerStates;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::now_ms;
use crate::store::Retry;

/// Entries per chunk and the most entries a level holds in a checkpoint.
pub const FANOUT: usize = 256;
/// A checkpoint is written after every this many commits.
pub const CHECKPOINT_EVERY: u64 = 32;
/// The manifest format written. Version 3 added [`Op::Replace`]; version 4 key compaction
/// (segments whose offsets have gaps, and [`Compaction`] marks). Objects of older versions
/// (the same shapes without these) are read as they are, so an older bucket is migrated by
/// its next commits, while an older reader refuses a newer bucket by name instead of
/// misreading it (a version-3 reader would take a compacted segment for a damaged one).
const VERSION: u32 = 4;
/// The oldest format version read.
const OLDEST_READ: u32 = 2;
/// Checkpoints kept after each new one: the newest few. Older ones only name states whose log
/// may have holes (deleted retired segments); a reader that was sent to one that went lists the
/// checkpoints again.
pub const CHECKPOINTS_KEPT: usize = 4;
/// Checkpoints one pruning deletes at most (a backlog goes over several checkpoints).
const PRUNE_AT_ONCE: usize = 100;
/// Listings of the checkpoints one `load` makes before it gives up on finding a checkpoint that
/// the log continues from.
const LOAD_LISTINGS: u32 = 3;
/// Attempts (with backoff) to load and fence a manifest before opening fails.
const OPEN_ATTEMPTS: u32 = 6;

/// One committed cold segment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentEntry {
    /// Object path relative to the partition prefix: `log/<seq>.parquet`.
    pub path: String,
    pub base_offset: i64,
    pub last_offset: i64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub records: u64,
    /// Object size in bytes.
    pub size: u64,
    /// Bytes of the hot-tier batches it was made from.
    pub raw_bytes: u64,
    pub row_groups: u32,
    /// Epoch of the writer that committed it.
    pub epoch: u64,
    /// The idempotent producers' last batches in this segment (see `crate::producers`).
    #[serde(default, skip_serializing_if = "ProducerStates::is_empty")]
    pub producers: ProducerStates,
    /// `cold::parquet::footer_digest` of the object's footer, checked when a reader loads it;
    /// `None` for segments written before it (read unchecked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub footer_crc32c: Option<u32>,
    /// Where each leader epoch's batches begin in the segment, as the hot tier stamped them
    /// (Kafka's partition leader epoch); empty for segments written before it was recorded,
    /// which count as one run of the writer's `epoch`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leader_epochs: Vec<EpochRun>,
}

impl SegmentEntry {
    /// Its epoch runs; a segment from before they were recorded is one run of its writer's.
    pub fn epoch_runs(&self) -> Vec<EpochRun> {
        if self.leader_epochs.is_empty() {
            vec![EpochRun {
                epoch: i32::try_from(self.epoch).unwrap_or(i32::MAX),
                start: self.base_offset,
            }]
        } else {
            self.leader_epochs.clone()
        }
    }

    /// Whether it holds a record at every offset of its range (key compaction leaves gaps).
    pub fn is_dense(&self) -> bool {
        i64::try_from(self.records).ok() == Some(self.last_offset - self.base_offset + 1)
    }
}

/// A reference to an immutable chunk holding up to `FANOUT` entries of the level below.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef {
    pub path: String,
    pub base_offset: i64,
    pub last_offset: i64,
    pub min_timestamp: i64,
    pub max_timestamp: i64,
    pub records: u64,
    pub size: u64,
    pub segments: u64,
}

/// An entry of a level: a segment (level 0 and chunks of level 1) or a chunk reference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Node {
    Segment(SegmentEntry),
    Chunk(ChunkRef),
}

impl Node {
    pub fn base_offset(&self) -> i64 {
        match self {
            Node::Segment(s) => s.base_offset,
            Node::Chunk(c) => c.base_offset,
        }
    }
    pub fn last_offset(&self) -> i64 {
        match self {
            Node::Segment(s) => s.last_offset,
            Node::Chunk(c) => c.last_offset,
        }
    }
    fn min_timestamp(&self) -> i64 {
        match self {
            Node::Segment(s) => s.min_timestamp,
            Node::Chunk(c) => c.min_timestamp,
        }
    }
    pub fn max_timestamp(&self) -> i64 {
        match self {
            Node::Segment(s) => s.max_timestamp,
            Node::Chunk(c) => c.max_timestamp,
        }
    }
    fn records(&self) -> u64 {
        match self {
            Node::Segment(s) => s.records,
            Node::Chunk(c) => c.records,
        }
    }
    fn size(&self) -> u64 {
        match self {
            Node::Segment(s) => s.size,
            Node::Chunk(c) => c.size,
        }
    }
    fn segments(&self) -> u64 {
        match self {
            Node::Segment(_) => 1,
            Node::Chunk(c) => c.segments,
        }
    }
}

/// The state of a partition's manifest after applying deltas up to `seq`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestState {
    pub topic: String,
    pub partition: u32,
    /// The last applied delta (0: none).
    pub seq: u64,
    /// The highest writer epoch seen.
    pub epoch: u64,
    /// The log start: offsets below it were removed (retention, deleted records). The first
    /// segment may begin below it; its rows below it are not part of the log.
    pub start_offset: i64,
    /// The offset after the last committed segment.
    pub next_offset: i64,
    /// `levels[0]` holds the newest entries; higher levels hold chunk references to older ones.
    /// Each level is in offset order and every entry of level k+1 precedes every entry of level k.
    pub levels: Vec<Vec<Node>>,
    /// Idempotent producers as of `next_offset`: every added segment's producers folded in.
    #[serde(default, skip_serializing_if = "ProducerStates::is_empty")]
    pub producers: ProducerStates,
    /// Key compaction passes, oldest first (see `cold::compact`): a few recent ones and the
    /// newest one older than any tombstone retention that may be asked of it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub compactions: Vec<CompactionPoint>,
    /// The log's leader epoch history (Kafka's leader epoch cache): where each epoch's
    /// batches begin, folded from added segments; runs wholly below `start_offset` go.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leader_epochs: Vec<EpochRun>,
}

/// A key compaction pass as the manifest keeps it: when it committed, and the offset below
/// which the log was compacted by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CompactionPoint {
    /// Offsets below this hold at most one record per key, as of `at_ms`.
    pub below: i64,
    /// When the pass committed (the commit's time, ms).
    pub at_ms: i64,
    /// The oldest tombstone (null value) the pass kept, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_tombstone: Option<i64>,
}

/// What a compacting [`Op::Replace`] says about the log besides its segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Compaction {
    /// Offsets below this now hold at most one record per key.
    pub below: i64,
    /// The oldest tombstone kept in the log below `below`, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_tombstone: Option<i64>,
}

/// Compaction points kept in the state at most (when there are more, the one closest to its
/// neighbours goes, which only makes tombstones wait longer).
pub const COMPACTION_POINTS_KEPT: usize = 64;

impl ManifestState {
    pub fn new(topic: &str, partition: u32) -> Self {
        ManifestState {
            topic: topic.to_string(),
            partition,
            seq: 0,
            epoch: 0,
            start_offset: 0,
            next_offset: 0,
            levels: vec![Vec::new()],
            producers: ProducerStates::default(),
            compactions: Vec::new(),
            leader_epochs: Vec::new(),
        }
    }

    /// Offsets below this hold at most one record per key (the log start when no key
    /// compaction ran).
    pub fn compacted_below(&self) -> i64 {
        self.compactions
            .last()
            .map_or(self.start_offset, |c| c.below.max(self.start_offset))
    }

    /// Tombstones below this offset were compacted at least `retention_ms` before `now_ms`
    /// (the newest pass that old), so they may go.
    pub fn tombstone_horizon(&self, now_ms: i64, retention_ms: i64) -> i64 {
        self.compactions
            .iter()
            .rev()
            .find(|c| c.at_ms <= now_ms.saturating_sub(retention_ms))
            .map_or(self.start_offset, |c| c.below)
    }

    /// Entries in offset order (oldest level first).
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.levels.iter().rev().flatten()
    }

    /// Total committed bytes and records (including entries below `start_offset` not yet dropped).
    pub fn totals(&self) -> (u64, u64, u64) {
        self.nodes().fold((0, 0, 0), |(b, r, s), n| {
            (b + n.size(), r + n.records(), s + n.segments())
        })
    }

    fn apply(&mut self, d: &Delta) -> Result<()> {
        if d.seq != self.seq + 1 {
            return Err(self.corrupt(format!("delta {} follows {}", d.seq, self.seq)));
        }
        if d.epoch < self.epoch {
            return Err(self.corrupt(format!(
                "delta {} has epoch {} below the earlier epoch {}",
                d.seq, d.epoch, self.epoch
            )));
        }
        match &d.op {
            Op::Fence => {}
            Op::Add { segments } => {
                for s in segments {
                    if s.base_offset != self.next_offset || s.last_offset < s.base_offset {
                        return Err(self.corrupt(format!(
                            "delta {} adds [{}, {}] where offset {} was next",
                            d.seq, s.base_offset, s.last_offset, self.next_offset
                        )));
                    }
                    self.next_offset = s.last_offset + 1;
                    for run in s.epoch_runs() {
                        push_epoch_run(&mut self.leader_epochs, run);
                    }
                    self.producers.merge(&s.producers);
                    self.producers.expire(s.max_timestamp);
                    self.levels[0].push(Node::Segment(s.clone()));
                }
            }
            Op::Truncate { start_offset } => {
                self.start_offset = self.start_offset.max(*start_offset);
                let start = self.start_offset;
                for level in self.levels.iter_mut() {
                    level.retain(|n| n.last_offset() >= start);
                }
                // The run holding the new start stays.
                let below = self.leader_epochs.partition_point(|r| r.start <= start);
                self.leader_epochs.drain(..below.saturating_sub(1));
            }
            Op::Init { next_offset } => {
                if self.next_offset != 0 || self.seq != 0 {
                    return Err(self.corrupt("init after other commits".into()));
                }
                self.next_offset = *next_offset;
                self.start_offset = *next_offset;
            }
            Op::Replace {
                base_offset,
                last_offset,
                replaced,
                segments,
                compaction,
            } => {
                self.replace(*base_offset, *last_offset, replaced.len(), segments)
                    .map_err(|reason| self.corrupt(format!("delta {} {reason}", d.seq)))?;
                if let Some(c) = compaction {
                    self.compacted(c, d.time_ms)
                        .map_err(|reason| self.corrupt(format!("delta {} {reason}", d.seq)))?;
                }
            }
        }
        self.seq = d.seq;
        self.epoch = d.epoch;
        Ok(())
    }

    /// Replaces the entries covering exactly `base..=last` (`count` segments, none of them
    /// inside a chunk that reaches past either end: see [`Manifest::split_around`]) with
    /// `segments`, placed where the oldest of them was. `Err`: why the op does not apply.
    fn replace(
        &mut self,
        base: i64,
        last: i64,
        count: usize,
        segments: &[SegmentEntry],
    ) -> std::result::Result<(), String> {
        let what = format!("replaces [{base}, {last}]");
        // A range may begin below the log start: deleting records can cut a segment, which
        // stays whole (its rows below the start are no longer part of the log).
        if last < self.start_offset || last >= self.next_offset || last < base {
            return Err(format!(
                "{what} outside the log [{}, {})",
                self.start_offset, self.next_offset
            ));
        }
        let mut expect = base;
        for s in segments {
            if s.base_offset != expect || s.last_offset < s.base_offset {
                return Err(format!(
                    "{what} with a segment [{}, {}] where offset {expect} was next",
                    s.base_offset, s.last_offset
                ));
            }
            expect = s.last_offset + 1;
        }
        if expect != last + 1 {
            return Err(format!("{what} with segments ending at {}", expect - 1));
        }
        // The entries of each level that lie in the range, oldest level first.
        let mut ranges = Vec::new();
        let (mut found, mut first, mut end) = (0u64, None, None);
        for (li, level) in self.levels.iter().enumerate().rev() {
            let lo = level.partition_point(|n| n.last_offset() < base);
            let hi = level.partition_point(|n| n.base_offset() <= last);
            for n in &level[lo..hi] {
                if n.base_offset() < base || n.last_offset() > last {
                    return Err(format!(
                        "{what} but [{}, {}] reaches past it",
                        n.base_offset(),
                        n.last_offset()
                    ));
                }
                if end.is_some_and(|e: i64| n.base_offset() != e + 1) {
                    return Err(format!(
                        "{what} but it has a hole before {}",
                        n.base_offset()
                    ));
                }
                first.get_or_insert(n.base_offset());
                end = Some(n.last_offset());
                found += n.segments();
            }
            if lo < hi {
                ranges.push((li, lo, hi));
            }
        }
        if first != Some(base) || end != Some(last) {
            return Err(format!("{what} but its entries span {first:?} to {end:?}"));
        }
        if found != count as u64 {
            return Err(format!("{what}: {count} segments named, {found} there"));
        }
        let (oldest, at, _) = ranges[0];
        for &(li, lo, hi) in ranges.iter().rev() {
            self.levels[li].drain(lo..hi);
        }
        let new = segments.iter().cloned().map(Node::Segment);
        self.levels[oldest].splice(at..at, new);
        Ok(())
    }

    /// Records a compaction pass that committed at `at_ms`.
    pub(crate) fn compacted(
        &mut self,
        c: &Compaction,
        at_ms: i64,
    ) -> std::result::Result<(), String> {
        if c.below < self.compacted_below() || c.below > self.next_offset {
            return Err(format!(
                "compacts below {} where the log is compacted below {} and ends at {}",
                c.below,
                self.compacted_below(),
                self.next_offset
            ));
        }
        self.compactions.push(CompactionPoint {
            below: c.below,
            at_ms,
            first_tombstone: c.first_tombstone,
        });
        if self.compactions.len() > COMPACTION_POINTS_KEPT {
            // Thin out where passes came closest together (the oldest and newest stay), so
            // the points span the whole history: dropping one only makes tombstones wait.
            let at = (1..self.compactions.len() - 1)
                .min_by_key(|&i| self.compactions[i + 1].at_ms - self.compactions[i - 1].at_ms)
                .expect("more than two points");
            self.compactions.remove(at);
        }
        Ok(())
    }

    fn corrupt(&self, reason: String) -> Error {
        Error::Corrupt {
            location: format!("manifest of {}/{}", self.topic, self.partition),
            position: self.seq,
            reason,
        }
    }
}

/// What a commit does.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Op {
    /// Claims the manifest for the writer's epoch.
    Fence,
    /// Starts an empty log at an offset other than 0 (first commit only).
    Init { next_offset: i64 },
    /// Appends segments; each must start at the current next offset.
    Add { segments: Vec<SegmentEntry> },
    /// Moves the log start to `start_offset` (retention: a segment boundary; deleting records:
    /// any offset up to the end, so the first segment left may begin below it) and removes the
    /// whole segments below it. Objects are deleted after.
    Truncate { start_offset: i64 },
    /// Replaces the segments that cover exactly `base_offset..=last_offset` (the objects named
    /// by `replaced`, relative paths) with `segments`, which cover the same offsets and were
    /// written before this commit (merged or compacted objects under `merged/`). The replaced
    /// objects are garbage once this commit is older than the grace period (`cold::gc`).
    Replace {
        base_offset: i64,
        last_offset: i64,
        replaced: Vec<String>,
        segments: Vec<SegmentEntry>,
        /// Set by key compaction (version 4): the new segments hold at most one record per
        /// key below `below`, and their offsets may have gaps.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        compaction: Option<Compaction>,
    },
}

/// One commit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Delta {
    pub seq: u64,
    pub epoch: u64,
    /// Random id: recognizes our own commit when a retried create finds the slot taken.
    pub commit_id: String,
    pub time_ms: i64,
    #[serde(flatten)]
    pub op: Op,
}

impl Delta {
    /// A commit of `op` by writer `epoch` as its log object's footer holds it: seq 0, and an
    /// added segment's path and size empty (see [`Delta::place`]).
    fn unplaced(epoch: u64, mut op: Op) -> Delta {
        if let Op::Add { segments } = &mut op {
            for s in segments.iter_mut() {
                s.path = String::new();
                s.size = 0;
            }
        }
        Delta {
            seq: 0,
            epoch,
            commit_id: nonce(),
            time_ms: now_ms(),
            op,
        }
    }

    /// The delta as commit `seq`, whose log object is `size` bytes: what the footer leaves
    /// empty filled in.
    fn place(&mut self, seq: u64, size: u64) {
        self.seq = seq;
        if let Op::Add { segments } = &mut self.op {
            for s in segments.iter_mut() {
                s.path = PartitionPaths::log_rel(seq);
                s.size = size;
            }
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Chunk {
    level: u32,
    nodes: Vec<Node>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Hint {
    seq: u64,
}

/// Serializes `body` inside a checksummed envelope.
fn encode<T: Serialize>(kind: &str, body: &T) -> Result<Bytes> {
    let body =
        serde_json::to_string(body).map_err(|e| Error::invalid(format!("encoding {kind}: {e}")))?;
    let crc = crc32c::crc32c(body.as_bytes());
    Ok(Bytes::from(format!(
        "{{\"format\":\"tierlog.{kind}\",\"version\":{VERSION},\"crc32c\":{crc},\"body\":{body}}}\n"
    )))
}

/// Parses and verifies an envelope written by [`encode`].
fn decode<T: DeserializeOwned>(kind: &str, location: &Path, bytes: &[u8]) -> Result<T> {
    #[derive(Deserialize)]
    struct Envelope<'a> {
        format: String,
        version: u32,
        crc32c: u32,
        #[serde(borrow)]
        body: &'a serde_json::value::RawValue,
    }
    let corrupt = |reason: String| Error::Corrupt {
        location: location.to_string(),
        position: 0,
        reason,
    };
    let env: Envelope<'_> = serde_json::from_slice(bytes)
        .map_err(|e| corrupt(format!("not a manifest object: {e}")))?;
    if env.format != format!("tierlog.{kind}") {
        return Err(corrupt(format!(
            "expected tierlog.{kind}, found {}",
            env.format
        )));
    }
    if !(OLDEST_READ..=VERSION).contains(&env.version) {
        return Err(corrupt(format!("unsupported version {}", env.version)));
    }
    let crc = crc32c::crc32c(env.body.get().as_bytes());
    if crc != env.crc32c {
        return Err(corrupt(format!(
            "checksum mismatch: stored {}, computed {crc}",
            env.crc32c
        )));
    }
    serde_json::from_str(env.body.get()).map_err(|e| corrupt(format!("bad {kind} body: {e}")))
}

fn nonce() -> String {
    format!("{:016x}", fastrand::u64(..))
}

/// The folder of log objects (commits) under a partition's prefix.
const LOG: &str = "log";

/// Object paths of one partition.
#[derive(Debug, Clone)]
pub struct PartitionPaths {
    pub prefix: Path,
}

impl PartitionPaths {
    pub fn new(root: &Path, topic: &str, partition: u32) -> Self {
        let prefix = Self::topics(root)
            .join(topic)
            .join(partition.to_string().as_str());
        PartitionPaths { prefix }
    }

    /// Where all topics live, each in a directory of its name.
    pub fn topics(root: &Path) -> Path {
        root.clone().join("topics")
    }
    fn join(&self, rel: &str) -> Path {
        let mut p = self.prefix.clone();
        for part in rel.split('/') {
            p = p.join(part);
        }
        p
    }
    pub fn object(&self, rel: &str) -> Path {
        self.join(rel)
    }
    /// Where log objects live.
    pub fn log_dir(&self) -> Path {
        self.join(LOG)
    }
    /// Commit `seq`'s object path relative to the prefix.
    pub fn log_rel(seq: u64) -> String {
        format!("{LOG}/{seq:020}.parquet")
    }
    pub fn log(&self, seq: u64) -> Path {
        self.join(&Self::log_rel(seq))
    }
    /// The seq of a log object from its file name as [`Self::log_rel`] makes it; `None` for any
    /// other name.
    pub fn parse_log(name: &str) -> Option<u64> {
        let stem = name.strip_suffix(".parquet")?;
        (stem.len() == 20).then_some(())?;
        stem.parse().ok()
    }
    /// Where format-1 manifests kept their deltas (refused on load).
    fn legacy_deltas(&self) -> Path {
        self.join("manifest/deltas")
    }
    fn checkpoints(&self) -> Path {
        self.join("manifest/checkpoints")
    }
    fn checkpoint(&self, seq: u64) -> Path {
        self.join(&format!("manifest/checkpoints/{seq:020}.json"))
    }
    fn hint(&self) -> Path {
        self.join("manifest/_last_checkpoint")
    }
}

fn seq_of(p: &Path) -> Option<u64> {
    p.filename()?.strip_suffix(".json")?.parse().ok()
}

/// Bytes read from the end of a log object to find its footer: enough for any footer tierlog
/// writes, so reading a delta is one ranged GET (a second one if not).
const FOOTER_READ: u64 = 64 << 10;

async fn get_opt(store: &dyn ObjectStore, p: &Path) -> Result<Option<Bytes>> {
    match store.get(p).await {
        Ok(r) => Ok(Some(r.bytes().await?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Reads manifests: loads the state, refreshes it, and answers lookups, caching chunks.
#[derive(Debug, Clone)]
pub struct Manifest {
    store: Arc<dyn ObjectStore>,
    pub paths: PartitionPaths,
    topic: String,
    partition: u32,
    chunks: moka::future::Cache<String, Arc<Vec<Node>>>,
}

impl Manifest {
    pub fn new(store: Arc<dyn ObjectStore>, root: &Path, topic: &str, partition: u32) -> Self {
        Manifest {
            store,
            paths: PartitionPaths::new(root, topic, partition),
            topic: topic.to_string(),
            partition,
            chunks: moka::future::Cache::builder().max_capacity(1024).build(),
        }
    }

    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The seq of the newest checkpoint, as the hint names it (`None`: no checkpoint yet).
    pub async fn checkpointed(&self) -> Result<Option<u64>> {
        Ok(match get_opt(&*self.store, &self.paths.hint()).await? {
            Some(b) => Some(decode::<Hint>("hint", &self.paths.hint(), &b)?.seq),
            None => None,
        })
    }

    /// Loads the current state: the newest checkpoint, then every commit after it.
    pub async fn load(&self) -> Result<ManifestState> {
        let mut hinted = self.checkpointed().await?;
        let mut listings = 0;
        loop {
            let seq = match hinted.take() {
                Some(s) => Some(s),
                None => {
                    listings += 1;
                    self.newest_checkpoint().await?
                }
            };
            let mut state = match seq {
                None => ManifestState::new(&self.topic, self.partition),
                Some(seq) => match self.read_checkpoint(seq).await? {
                    Some(state) => state,
                    // Pruned since it was named: newer ones exist.
                    None if listings < LOAD_LISTINGS => continue,
                    None => {
                        return Err(Error::Corrupt {
                            location: self.paths.checkpoint(seq).to_string(),
                            position: 0,
                            reason: format!(
                                "the newest checkpoint went missing {listings} times in a row"
                            ),
                        });
                    }
                },
            };
            match self.apply_log(&mut state).await? {
                Ok(_) => {}
                // The hint can lag (a slow writer put an older one last) behind a checkpoint
                // that covers deleted log objects, or newer checkpoints and deletions landed
                // since the listing: look for the newest checkpoint itself.
                Err(_) if listings < LOAD_LISTINGS => continue,
                Err(first) => {
                    return Err(state.corrupt(format!(
                        "the log after the newest checkpoint starts at {first}"
                    )));
                }
            }
            if state.seq == 0 {
                self.refuse_legacy().await?;
            }
            return Ok(state);
        }
    }

    /// The seqs of the checkpoints there are, oldest first.
    async fn checkpoint_seqs(&self) -> Result<Vec<u64>> {
        let metas: Vec<_> = self
            .store
            .list(Some(&self.paths.checkpoints()))
            .try_collect()
            .await?;
        let mut seqs: Vec<u64> = metas.iter().filter_map(|m| seq_of(&m.location)).collect();
        seqs.sort_unstable();
        Ok(seqs)
    }

    async fn newest_checkpoint(&self) -> Result<Option<u64>> {
        Ok(self.checkpoint_seqs().await?.last().copied())
    }

    /// Checkpoint `seq` (`None`: there is none).
    async fn read_checkpoint(&self, seq: u64) -> Result<Option<ManifestState>> {
        let p = self.paths.checkpoint(seq);
        match get_opt(&*self.store, &p).await? {
            Some(b) => decode::<ManifestState>("checkpoint", &p, &b).map(Some),
            None => Ok(None),
        }
    }

    /// Deletes checkpoints but the newest [`CHECKPOINTS_KEPT`], the oldest
    /// [`PRUNE_AT_ONCE`] at most: how many went. A checkpoint is deleted only when that many
    /// newer ones exist, so however writers interleave, the newest are never deleted.
    pub(crate) async fn prune_checkpoints(&self) -> Result<usize> {
        let seqs = self.checkpoint_seqs().await?;
        let old = seqs.len().saturating_sub(CHECKPOINTS_KEPT);
        let doomed = &seqs[..old.min(PRUNE_AT_ONCE)];
        for &seq in doomed {
            match self.store.delete(&self.paths.checkpoint(seq)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(doomed.len())
    }

    /// A partition written by a tierlog whose manifest kept JSON deltas (format 1) reads as empty
    /// under this layout: say so instead of starting it over.
    async fn refuse_legacy(&self) -> Result<()> {
        let dir = self.paths.legacy_deltas();
        if let Some(m) = self.store.list(Some(&dir)).try_next().await? {
            return Err(Error::Corrupt {
                location: m.location.to_string(),
                position: 0,
                reason: "manifest format 1 (JSON deltas), written by an older tierlog; this \
                         version reads format 2 only"
                    .into(),
            });
        }
        Ok(())
    }

    /// Applies every commit after `state.seq`. Returns how many were applied. When the log has
    /// a gap after `state.seq` (log objects a newer checkpoint covers were deleted), the state is
    /// reloaded from the newest checkpoint first.
    pub async fn catch_up(&self, state: &mut ManifestState) -> Result<usize> {
        match self.apply_log(state).await? {
            Ok(n) => Ok(n),
            Err(first) => {
                let loaded = self.load().await?;
                if loaded.seq < state.seq {
                    return Err(state.corrupt(format!(
                        "the log continues at {first} and the newest checkpoint is at {}",
                        loaded.seq
                    )));
                }
                let n = (loaded.seq - state.seq) as usize;
                *state = loaded;
                Ok(n)
            }
        }
    }

    /// Applies the commits after `state.seq`: how many, or `Err(seq)` when the log continues
    /// at `seq` past a gap (anywhere: retired segments leave holes between the commits kept).
    async fn apply_log(
        &self,
        state: &mut ManifestState,
    ) -> Result<std::result::Result<usize, u64>> {
        let after = self.paths.log(state.seq);
        let mut seqs: Vec<(u64, u64)> = self
            .store
            .list_with_offset(Some(&self.paths.log_dir()), &after)
            .try_collect::<Vec<_>>()
            .await?
            .iter()
            .filter_map(|m| Some((PartitionPaths::parse_log(m.location.filename()?)?, m.size)))
            .filter(|&(seq, _)| seq > state.seq)
            .collect();
        seqs.sort_unstable();
        let mut n = 0;
        for (seq, size) in seqs {
            if seq != state.seq + 1 {
                return Ok(Err(seq));
            }
            // Deleted since the listing: a checkpoint covers it.
            let Some(d) = self.read_delta(seq, Some(size)).await? else {
                return Ok(Err(seq));
            };
            self.apply(state, &d).await?;
            n += 1;
        }
        Ok(Ok(n))
    }

    /// Commit `seq`'s delta, from its log object's footer (`None`: no such commit). `size` is
    /// the object's size when a listing gave it (objects are immutable); otherwise a HEAD asks.
    /// Reads are ranges inside the object (or the whole of a small one), never suffix ranges,
    /// which some S3-compatible servers answer with the whole object and a 200.
    pub(crate) async fn read_delta(&self, seq: u64, size: Option<u64>) -> Result<Option<Delta>> {
        use object_store::{GetOptions, GetRange};
        let p = self.paths.log(seq);
        let size = match size {
            Some(size) => size,
            None => match self.store.head(&p).await {
                Ok(meta) => meta.size,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(e.into()),
            },
        };
        // The last `n` bytes.
        let get = |n: u64| {
            let (store, p) = (self.store.clone(), p.clone());
            async move {
                let opts = GetOptions {
                    range: (n < size).then(|| GetRange::Bounded(size - n..size)),
                    ..Default::default()
                };
                match store.get_opts(&p, opts).await {
                    Ok(r) => Ok(Some(r.bytes().await?)),
                    Err(object_store::Error::NotFound { .. }) => Ok(None),
                    Err(e) => Err(Error::from(e)),
                }
            }
        };
        let Some(mut tail) = get(FOOTER_READ).await? else {
            return Ok(None);
        };
        let corrupt = |reason: String| Error::Corrupt {
            location: p.to_string(),
            position: 0,
            reason,
        };
        let kv = loop {
            match crate::cold::parquet::footer_metadata(&tail)
                .map_err(|e| corrupt(e.to_string()))?
            {
                Ok(kv) => break kv,
                Err(need) if (need as u64) <= size && need > tail.len() => {
                    match get(need as u64).await? {
                        Some(t) => tail = t,
                        // Deleted meanwhile (a checkpoint covers it): as if never listed.
                        None => return Ok(None),
                    }
                }
                Err(need) => {
                    return Err(corrupt(format!(
                        "footer of {need} bytes in an object of {size}"
                    )));
                }
            }
        };
        let raw = kv
            .iter()
            .find(|kv| kv.key == crate::cold::parquet::DELTA_KEY)
            .and_then(|kv| kv.value.as_deref())
            .ok_or_else(|| corrupt("no tierlog.delta in the footer".into()))?;
        let mut d: Delta = decode("delta", &p, raw.as_bytes())?;
        if d.seq != 0 {
            return Err(corrupt(format!("footer delta names seq {}", d.seq)));
        }
        if let Op::Add { segments } = &d.op
            && segments.len() != 1
        {
            return Err(corrupt(format!("adds {} segments, not 1", segments.len())));
        }
        d.place(seq, size);
        Ok(Some(d))
    }

    /// Applies commit `d` to `state`, first splitting the chunks that a replacement's range
    /// cuts through.
    pub(crate) async fn apply(&self, state: &mut ManifestState, d: &Delta) -> Result<()> {
        if let Op::Replace {
            base_offset,
            last_offset,
            ..
        } = &d.op
        {
            self.split_around(state, *base_offset, *last_offset).await?;
        }
        state.apply(d)
    }

    /// Replaces every chunk reference that holds offsets both inside and outside `base..=last`
    /// with the entries of its chunk (children below the start offset dropped), until none
    /// does: the state reads the same, and the range's entries can be replaced whole. A
    /// level may then hold more than `FANOUT` entries, and entries of different depths; the
    /// next checkpoint packs it again.
    pub(crate) async fn split_around(
        &self,
        state: &mut ManifestState,
        base: i64,
        last: i64,
    ) -> Result<()> {
        let cuts = |n: &Node| {
            let (b, l) = (n.base_offset(), n.last_offset());
            (b < base && l >= base) || (b <= last && l > last)
        };
        loop {
            let found = state.levels.iter().enumerate().find_map(|(li, level)| {
                level
                    .iter()
                    .position(|n| matches!(n, Node::Chunk(_)) && cuts(n))
                    .map(|i| (li, i))
            });
            let Some((li, i)) = found else {
                return Ok(());
            };
            let Node::Chunk(c) = &state.levels[li][i] else {
                unreachable!("found a chunk")
            };
            let children = self.chunk(&c.path).await?;
            let start = state.start_offset;
            let kept = children
                .iter()
                .filter(|n| n.last_offset() >= start)
                .cloned();
            state.levels[li].splice(i..=i, kept);
        }
    }

    /// Every checkpoint there is (one pruned meanwhile is left out), oldest first.
    pub(crate) async fn checkpoints(&self) -> Result<Vec<ManifestState>> {
        let mut out = Vec::new();
        for seq in self.checkpoint_seqs().await? {
            if let Some(state) = self.read_checkpoint(seq).await? {
                out.push(state);
            }
        }
        Ok(out)
    }

    /// The entries of the chunk at `path` (relative to the partition prefix), cached.
    pub(crate) async fn chunk(&self, path: &str) -> Result<Arc<Vec<Node>>> {
        let store = self.store.clone();
        let p = self.paths.object(path);
        self.chunks
            .try_get_with(path.to_string(), async move {
                let b = store.get(&p).await?.bytes().await?;
                let c: Chunk = decode("chunk", &p, &b)?;
                Ok::<_, Error>(Arc::new(c.nodes))
            })
            .await
            .map_err(unwrap_shared)
    }

    /// The committed segment holding `offset`, if any.
    pub async fn find_offset(
        &self,
        state: &ManifestState,
        offset: i64,
    ) -> Result<Option<SegmentEntry>> {
        if offset < state.start_offset || offset >= state.next_offset {
            return Ok(None);
        }
        let mut node = state.levels.iter().rev().find_map(|level| {
            let i = level.partition_point(|n| n.last_offset() < offset);
            level.get(i).filter(|n| n.base_offset() <= offset).cloned()
        });
        loop {
            match node {
                None => return Ok(None),
                Some(Node::Segment(s)) => return Ok(Some(s)),
                Some(Node::Chunk(c)) => {
                    let children = self.chunk(&c.path).await?;
                    let i = children.partition_point(|n| n.last_offset() < offset);
                    node = children
                        .get(i)
                        .filter(|n| n.base_offset() <= offset)
                        .cloned();
                }
            }
        }
    }

    /// The first committed segment (at or after `start_offset`) holding a record with timestamp
    /// ≥ `ts`, if any.
    pub async fn find_timestamp(
        &self,
        state: &ManifestState,
        ts: i64,
    ) -> Result<Option<SegmentEntry>> {
        let start = state.start_offset;
        // A stack with the oldest entry on top: a chunk whose summary matched but whose remaining
        // children do not (retention cut it) is passed over, and the search goes on.
        let mut stack: Vec<Node> = state.nodes().cloned().collect();
        stack.reverse();
        while let Some(n) = stack.pop() {
            if n.last_offset() < start || n.max_timestamp() < ts {
                continue;
            }
            match n {
                Node::Segment(s) => return Ok(Some(s)),
                Node::Chunk(c) => stack.extend(self.chunk(&c.path).await?.iter().rev().cloned()),
            }
        }
        Ok(None)
    }

    /// Every committed segment at or after `start_offset`, in offset order.
    pub async fn segments(&self, state: &ManifestState) -> Result<Vec<SegmentEntry>> {
        self.segments_from(state, state.start_offset).await
    }

    /// The committed segments holding offsets at or after `from` (and `start_offset`), in
    /// offset order; chunks wholly before it are not read.
    pub async fn segments_from(
        &self,
        state: &ManifestState,
        from: i64,
    ) -> Result<Vec<SegmentEntry>> {
        self.segments_in(state, from, i64::MAX).await
    }

    /// The committed segments holding offsets in `from..=to` (and at or after `start_offset`),
    /// in offset order; chunks wholly outside are not read.
    pub async fn segments_in(
        &self,
        state: &ManifestState,
        from: i64,
        to: i64,
    ) -> Result<Vec<SegmentEntry>> {
        let from = from.max(state.start_offset);
        let within = |n: &&Node| n.last_offset() >= from && n.base_offset() <= to;
        let mut out = Vec::new();
        let mut stack: Vec<Node> = state.nodes().filter(within).cloned().collect();
        stack.reverse();
        while let Some(n) = stack.pop() {
            match n {
                Node::Segment(s) => out.push(s),
                Node::Chunk(c) => stack.extend(
                    self.chunk(&c.path)
                        .await?
                        .iter()
                        .rev()
                        .filter(within)
                        .cloned(),
                ),
            }
        }
        Ok(out)
    }
}

impl Manifest {
    /// [`Manifest::segments`] with each segment's full object path.
    pub async fn segment_paths(&self, state: &ManifestState) -> Result<Vec<(Path, SegmentEntry)>> {
        Ok(self
            .segments(state)
            .await?
            .into_iter()
            .map(|s| (self.paths.object(&s.path), s))
            .collect())
    }
}

/// The error of a load shared by several callers (moka runs one load per key).
pub(crate) fn unwrap_shared(e: Arc<Error>) -> Error {
    Arc::try_unwrap(e).unwrap_or_else(Error::Shared)
}

/// A segment encoded as the log object that commits it.
#[derive(Debug, Clone)]
pub struct SegmentCommit {
    /// The Parquet file, its footer holding `delta`.
    pub bytes: Bytes,
    /// As written in the footer (seq 0, the entry's path and size empty).
    pub delta: Delta,
}

/// The commit that adds `entry` (its `path` and `size` are ignored), for writer `epoch`: the
/// delta and the footer metadata that carries it. Encode the segment with this in its footer.
pub fn segment_footer(
    epoch: u64,
    entry: SegmentEntry,
) -> Result<(Delta, parquet::file::metadata::KeyValue)> {
    let delta = Delta::unplaced(
        epoch,
        Op::Add {
            segments: vec![entry],
        },
    );
    let kv = footer_delta(&delta)?;
    Ok((delta, kv))
}

fn footer_delta(delta: &Delta) -> Result<parquet::file::metadata::KeyValue> {
    let body = encode("delta", delta)?;
    let text = String::from_utf8(body.to_vec())
        .map_err(|e| Error::invalid(format!("encoding a delta: {e}")))?;
    Ok(parquet::file::metadata::KeyValue::new(
        crate::cold::parquet::DELTA_KEY.to_string(),
        text,
    ))
}

/// The single writer of a partition's manifest, holding an epoch.
#[derive(Debug)]
pub struct ManifestWriter {
    manifest: Manifest,
    epoch: u64,
    /// The manifest's epoch as loaded, before this writer fenced it.
    prior_epoch: u64,
    state: ManifestState,
    retry: Retry,
    /// How long the create of the last commit object took (its last attempt).
    last_put: Duration,
}

impl ManifestWriter {
    /// Loads the manifest and fences it with `epoch`. Fails with [`Error::Fenced`] when a higher
    /// epoch has committed.
    pub async fn open(manifest: Manifest, epoch: u64, retry: Retry) -> Result<Self> {
        // Opening is in a caller's path: a dead store gets a clear error after a few tries
        // instead of an endless wait. Commits later retry without bound, in the background.
        let mut bounded = retry.clone();
        bounded.max_attempts = Some(OPEN_ATTEMPTS);
        let state = bounded.run("load manifest", || manifest.load()).await?;
        let mut w = ManifestWriter {
            manifest,
            epoch,
            prior_epoch: state.epoch,
            state,
            retry: bounded,
            last_put: Duration::ZERO,
        };
        w.check_epoch()?;
        if w.state.epoch < epoch {
            w.commit(Op::Fence).await?;
        }
        w.retry = retry;
        Ok(w)
    }

    /// How long the store took to create the last commit object (its last attempt): the
    /// upload, as opposed to what a commit does around it.
    pub fn last_put(&self) -> Duration {
        self.last_put
    }

    pub fn state(&self) -> &ManifestState {
        &self.state
    }
    pub fn manifest(&self) -> &Manifest {
        &self.manifest
    }
    pub fn epoch(&self) -> u64 {
        self.epoch
    }
    /// The epoch of the last writer before this one (0 for a new manifest).
    pub fn prior_epoch(&self) -> u64 {
        self.prior_epoch
    }

    fn check_epoch(&self) -> Result<()> {
        if self.state.epoch > self.epoch {
            return Err(Error::Fenced {
                partition: format!("{}/{}", self.state.topic, self.state.partition),
                ours: self.epoch,
                current: self.state.epoch,
            });
        }
        Ok(())
    }

    /// Commits `op` (anything but adding a segment, which [`Self::commit_segment`] does) as a
    /// log object with no rows.
    pub async fn commit(&mut self, op: Op) -> Result<()> {
        if matches!(op, Op::Add { .. }) {
            return Err(Error::invalid(
                "a segment is committed by writing it (commit_segment)",
            ));
        }
        let delta = Delta::unplaced(self.epoch, op);
        let id = crate::PartitionId::new(&self.state.topic, self.state.partition);
        let bytes = crate::cold::parquet::encode_empty(&id, vec![footer_delta(&delta)?])?;
        self.commit_object(delta, bytes).await
    }

    /// Commits a segment encoded with [`segment_footer`]: writing it is the commit.
    /// `committed` runs with the new state as soon as the commit has landed, before a
    /// checkpoint that falls due (two more PUTs) is written: what waits for the commit (acks=all
    /// producers) need not wait for the checkpoint.
    pub async fn commit_segment(
        &mut self,
        segment: SegmentCommit,
        committed: impl FnOnce(&ManifestState),
    ) -> Result<()> {
        let landed = self.commit_unchecked(segment.delta, segment.bytes).await?;
        committed(&self.state);
        if landed {
            self.maybe_checkpoint().await;
        }
        Ok(())
    }

    /// Creates the next log object with `bytes` (a Parquet file whose footer holds `delta`).
    /// Transient store errors are retried with the same bytes, so a commit that landed but whose
    /// answer was lost is recognized by its commit id; a segment already committed (by an
    /// earlier attempt under this epoch) is recognized by its offsets.
    async fn commit_object(&mut self, footer: Delta, bytes: Bytes) -> Result<()> {
        if self.commit_unchecked(footer, bytes).await? {
            self.maybe_checkpoint().await;
        }
        Ok(())
    }

    /// [`Self::commit_object`] without the checkpoint: true if this call committed, false if the
    /// segment was committed already (by an earlier attempt under this epoch).
    async fn commit_unchecked(&mut self, footer: Delta, bytes: Bytes) -> Result<bool> {
        let size = bytes.len() as u64;
        self.last_put = Duration::ZERO;
        loop {
            self.check_epoch()?;
            if let Op::Add { segments } = &footer.op
                && let Some(first) = segments.first()
                && first.base_offset < self.state.next_offset
            {
                let have = self
                    .manifest
                    .find_offset(&self.state, first.base_offset)
                    .await?;
                if have.as_ref().is_some_and(|h| {
                    h.base_offset == first.base_offset && h.last_offset == first.last_offset
                }) {
                    return Ok(false);
                }
                return Err(Error::invalid(format!(
                    "segment at {} overlaps the manifest, which ends before {}",
                    first.base_offset, self.state.next_offset
                )));
            }
            // The delta as it will read back from the store.
            let seq = self.state.seq + 1;
            let mut delta = footer.clone();
            delta.place(seq, size);
            // Validate before writing: a delta that does not apply must never reach the store.
            let mut next = self.state.clone();
            self.manifest.apply(&mut next, &delta).await?;
            let path = self.manifest.paths.log(seq);
            let store = self.manifest.store.clone();
            let (put, took) = self
                .retry
                .run("commit", || {
                    let (store, path, bytes) = (store.clone(), path.clone(), bytes.clone());
                    async move {
                        let opts = PutOptions::from(PutMode::Create);
                        let started = std::time::Instant::now();
                        match store.put_opts(&path, PutPayload::from(bytes), opts).await {
                            Ok(_) => Ok((true, started.elapsed())),
                            Err(object_store::Error::AlreadyExists { .. }) => {
                                Ok((false, started.elapsed()))
                            }
                            Err(e) => Err(Error::from(e)),
                        }
                    }
                })
                .await?;
            self.last_put = took;
            // The slot may be taken: ours (a retried create that had landed) or another writer's.
            let existing = if put {
                None
            } else {
                let m = &self.manifest;
                self.retry
                    .run("read commit", || m.read_delta(seq, None))
                    .await?
            };
            if put
                || existing
                    .as_ref()
                    .is_some_and(|d| d.commit_id == delta.commit_id)
            {
                self.state = next;
                return Ok(true);
            }
            // Another commit holds the slot: catch up, then re-check the epoch and whether our
            // op is already in (the loop's first steps).
            let (m, base) = (&self.manifest, &self.state);
            self.state = self
                .retry
                .run("catch up manifest", || async move {
                    let mut s = base.clone();
                    m.catch_up(&mut s).await?;
                    Ok(s)
                })
                .await?;
        }
    }

    async fn maybe_checkpoint(&mut self) {
        if !self.state.seq.is_multiple_of(CHECKPOINT_EVERY) {
            return;
        }
        if let Err(e) = self.checkpoint().await {
            tracing::warn!(topic = %self.state.topic, partition = self.state.partition,
                seq = self.state.seq, error = %e, "manifest checkpoint failed; will retry at the next one");
        }
    }

    /// Moves full levels into chunks, then writes a checkpoint of the state and the hint.
    pub async fn checkpoint(&mut self) -> Result<()> {
        let mut state = self.state.clone();
        let store = &self.manifest.store;
        let mut level = 0;
        while level < state.levels.len() {
            while state.levels[level].len() >= FANOUT {
                let nodes: Vec<Node> = state.levels[level].drain(..FANOUT).collect();
                let (first, last) = (&nodes[0], &nodes[FANOUT - 1]);
                let rel = format!(
                    "manifest/chunks/L{}-{:020}-{}.json",
                    level + 1,
                    first.base_offset(),
                    nonce()
                );
                let chunk_ref = ChunkRef {
                    path: rel.clone(),
                    base_offset: first.base_offset(),
                    last_offset: last.last_offset(),
                    min_timestamp: nodes
                        .iter()
                        .map(Node::min_timestamp)
                        .min()
                        .unwrap_or(i64::MIN),
                    max_timestamp: nodes
                        .iter()
                        .map(Node::max_timestamp)
                        .max()
                        .unwrap_or(i64::MIN),
                    records: nodes.iter().map(Node::records).sum(),
                    size: nodes.iter().map(Node::size).sum(),
                    segments: nodes.iter().map(Node::segments).sum(),
                };
                let body = encode(
                    "chunk",
                    &Chunk {
                        level: level as u32 + 1,
                        nodes,
                    },
                )?;
                let p = self.manifest.paths.object(&rel);
                store
                    .put_opts(&p, PutPayload::from(body), PutMode::Create.into())
                    .await?;
                if state.levels.len() == level + 1 {
                    state.levels.push(Vec::new());
                }
                state.levels[level + 1].push(Node::Chunk(chunk_ref));
            }
            level += 1;
        }
        let p = self.manifest.paths.checkpoint(state.seq);
        match store
            .put_opts(
                &p,
                PutPayload::from(encode("checkpoint", &state)?),
                PutMode::Create.into(),
            )
            .await
        {
            Ok(_) | Err(object_store::Error::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        store
            .put(
                &self.manifest.paths.hint(),
                PutPayload::from(encode("hint", &Hint { seq: state.seq })?),
            )
            .await?;
        self.state = state;
        // Off the commit path: commits (and their acks=all waiters) do not wait for it.
        let m = self.manifest.clone();
        tokio::spawn(async move {
            if let Err(e) = m.prune_checkpoints().await {
                tracing::warn!(topic = %m.topic, partition = m.partition, error = %e,
                    "deleting old checkpoints failed; will retry at the next checkpoint");
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests;
