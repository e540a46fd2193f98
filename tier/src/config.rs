//! Settings of the storage core, each with what it trades off.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// When appended bytes reach the disk. See docs/durability.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FsyncPolicy {
    /// fdatasync before an append returns: an acknowledged batch survives power loss. Slowest.
    EveryBatch,
    /// A background task fdatasyncs dirty partitions every `ms` milliseconds: a crash of the machine
    /// loses at most the last interval of acknowledged appends; a crash of the process loses nothing
    /// (the bytes are in the page cache).
    Interval { ms: u64 },
    /// Never fsync except when sealing a segment: the OS decides. Fastest; a machine crash may lose
    /// everything not yet sealed.
    Never,
}

/// Settings of one [`crate::Tier`].
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct TierConfig {
    /// Directory of the hot tier: `<dir>/<topic>/<partition>/<base offset>.log`.
    pub data_dir: PathBuf,
    pub fsync: FsyncPolicy,
    /// The active segment seals at this size. Bigger segments mean fewer, larger cold objects
    /// (cheaper scans, fewer manifest entries) but later uploads.
    pub segment_bytes: u64,
    /// The active segment seals when its oldest byte is this old (ms), bounding how long data
    /// stays only on local disk.
    pub segment_ms: u64,
    /// One sparse index entry per this many bytes of batches.
    pub index_interval_bytes: u64,
    /// The largest batch accepted by an append.
    pub max_batch_bytes: usize,
    /// The hot tier keeps at most this many bytes per partition of segments already uploaded.
    pub hot_retention_bytes: u64,
    /// The hot tier keeps uploaded segments at most this long (ms, from their last write).
    pub hot_retention_ms: u64,
    /// Local-disk budget of the whole hot tier. Appends beyond it get a retriable back-pressure
    /// error until uploads catch up.
    pub hot_budget_bytes: u64,
    /// Bytes of decoded cold data the read cache holds.
    pub cache_bytes: u64,
    /// Target uncompressed bytes per Parquet row group: the unit of cold reads and caching.
    pub row_group_bytes: usize,
    /// zstd level of cold Parquet files.
    pub zstd_level: i32,
    /// Row groups prefetched ahead of a sequential cold reader (crossing into the next segment):
    /// decoding runs on other cores while the reader consumes. 0 turns read-ahead off.
    pub read_ahead_row_groups: usize,
    /// First delay between upload retries; doubles up to `upload_retry_max_ms`.
    pub upload_retry_initial_ms: u64,
    pub upload_retry_max_ms: u64,
    /// Segment → Parquet conversions running at once, over all partitions, on threads of the
    /// lowest CPU priority, for what no acks=all request waits for (those run at normal
    /// priority, one per core; see `cold::encoder`). Conversion is CPU-bound (zstd); the
    /// default is half the cores, at least 4: at the lowest priority extra threads only take
    /// idle CPU.
    pub encode_concurrency: usize,
    /// Uploads of one partition in flight at once. Each is written (which commits it) only
    /// after the one before it; with more than 1, acks=all waiters that arrive during an upload
    /// get the next cut taken (when the flush interval allows) and converted meanwhile, and
    /// written right after, instead of cut after the whole cycle: for stores whose PUT takes
    /// far longer than a conversion. 1 (the default) uploads one after the other and makes the
    /// fewest objects.
    pub uploads_in_flight: usize,
    /// How long an acks=all record may wait in the hot tier before it is on its way to the
    /// object store, ms. A waiter on a partition that cut for waiters longer ago than this is
    /// served at once (one conversion, one PUT). Under steady acks=all load a partition cuts
    /// its active segment about once per interval: a little sooner, by what its recent cuts
    /// took besides the PUT (conversion, commit work; at most a quarter of the interval), so
    /// that a record is answered about one interval plus one PUT after it arrived; and its cuts
    /// are planned apart from other partitions' (moved up to half the interval earlier) so
    /// that their conversions and PUTs do not queue behind each other. So the objects acks=all
    /// makes are about `1000 / flush_interval_ms` a second per partition and never more than
    /// twice that (segment size and age rolls, explicit flushes and checkpoints every 32
    /// commits come on top), and an acks=all record typically waits up to the interval plus
    /// one PUT. 0 cuts whenever the uploader is free: lowest latency, most objects.
    pub flush_interval_ms: u64,
    /// The longest a record stays only on the leader's disk before its upload starts, ms,
    /// whatever the acks: the active segment is cut (committed without sealing) once its
    /// oldest record that no cut covers is this old. It bounds what acks=leader loses when the
    /// leader dies and another node takes over without a hand-off: about this interval plus one
    /// upload. Smaller loses less and makes more objects (at most `1000 / upload_interval_ms` a
    /// second per busy partition, which merging folds together later).
    pub upload_interval_ms: u64,
    /// How often background work (age-based sealing, retention, interval fsync checks) runs.
    pub housekeeping_ms: u64,
    /// The grace period of garbage collection (`cold::gc`), ms: objects the manifest no longer
    /// names (replaced by a merge, retired by retention, left by a crashed or deposed writer)
    /// are deleted once this much time has passed since they stopped being named (or since
    /// they were written, for orphans), so readers still reading them finish. A merged object
    /// is committed within half of it.
    pub orphan_grace_ms: u64,
    /// How often each led partition's garbage is collected, ms.
    pub gc_interval_ms: u64,
    /// Whether the leader merges runs of small cold segments into large ones (`cold::merge`).
    pub merge_enabled: bool,
    /// The size merged objects aim for, bytes; segments under a quarter of it are small.
    pub merge_target_bytes: u64,
    /// A run of adjacent small segments is merged once it holds this many (or the target's
    /// bytes).
    pub merge_min_segments: usize,
    /// Segments holding records younger than this (by record timestamp), ms, are not merged yet.
    pub merge_min_age_ms: u64,
    /// How often each led partition looks for a merge to do, ms.
    pub merge_interval_ms: u64,
    /// The most bytes a second merging reads and writes together (0: unpaced). Key
    /// compaction moves at this pace too.
    pub merge_bytes_per_sec: u64,
    /// Memory one key compaction pass may use for its map of keys (`cold::compact`), bytes:
    /// a log with more distinct keys since the last pass is compacted in several passes.
    pub compaction_key_map_bytes: u64,
    /// A compacted topic's partition is compacted once the bytes not compacted yet (and old
    /// enough) are at least this share of its cold bytes (Kafka's
    /// `min.cleanable.dirty.ratio`), or when tombstones are due to go.
    pub compaction_min_dirty_ratio: f64,
}

impl Default for TierConfig {
    fn default() -> Self {
        TierConfig {
            data_dir: PathBuf::from("tierlog-data/hot"),
            fsync: FsyncPolicy::Interval { ms: 10 },
            segment_bytes: 128 << 20,
            segment_ms: 10 * 60 * 1000,
            index_interval_bytes: 4096,
            max_batch_bytes: 4 << 20,
            hot_retention_bytes: 1 << 30,
            hot_retention_ms: 60 * 60 * 1000,
            hot_budget_bytes: 16 << 30,
            cache_bytes: 512 << 20,
            row_group_bytes: 8 << 20,
            zstd_level: 3,
            read_ahead_row_groups: 2,
            upload_retry_initial_ms: 100,
            upload_retry_max_ms: 10_000,
            housekeeping_ms: 1000,
            orphan_grace_ms: 3_600_000,
            encode_concurrency: std::thread::available_parallelism()
                .map_or(1, |n| n.get() / 2)
                .max(4),
            uploads_in_flight: 1,
            flush_interval_ms: 100,
            upload_interval_ms: 1000,
            gc_interval_ms: 3_600_000,
            merge_enabled: true,
            merge_target_bytes: 128 << 20,
            merge_min_segments: 16,
            merge_min_age_ms: 60_000,
            merge_interval_ms: 10_000,
            merge_bytes_per_sec: 64 << 20,
            compaction_key_map_bytes: 64 << 20,
            compaction_min_dirty_ratio: 0.5,
        }
    }
}

impl TierConfig {
    /// Checks the settings and says which one is wrong and why.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::invalid(m));
        if self.segment_bytes < 4096 {
            return bad(format!(
                "segment_bytes must be at least 4096, got {}",
                self.segment_bytes
            ));
        }
        if self.max_batch_bytes as u64 > self.segment_bytes {
            return bad(format!(
                "max_batch_bytes ({}) must not exceed segment_bytes ({})",
                self.max_batch_bytes, self.segment_bytes
            ));
        }
        if self.hot_budget_bytes < self.segment_bytes.saturating_mul(2) {
            return bad(format!(
                "hot_budget_bytes ({}) must hold at least two segments ({} each)",
                self.hot_budget_bytes, self.segment_bytes
            ));
        }
        if let FsyncPolicy::Interval { ms: 0 } = self.fsync {
            return bad("fsync interval must be at least 1 ms".into());
        }
        if !(1..=22).contains(&self.zstd_level) {
            return bad(format!(
                "zstd_level must be 1..=22, got {}",
                self.zstd_level
            ));
        }
        if self.row_group_bytes < 64 << 10 {
            return bad(format!(
                "row_group_bytes must be at least 65536, got {}",
                self.row_group_bytes
            ));
        }
        if self.upload_retry_initial_ms == 0
            || self.upload_retry_max_ms < self.upload_retry_initial_ms
        {
            return bad("upload retry delays must be positive and max ≥ initial".into());
        }
        if self.encode_concurrency == 0 {
            return bad("encode_concurrency must be at least 1".into());
        }
        if self.uploads_in_flight == 0 {
            return bad("uploads_in_flight must be at least 1".into());
        }
        if self.flush_interval_ms > 60_000 {
            return bad(format!(
                "flush_interval_ms is at most 60000 (acks=all requests wait up to this long), got {}",
                self.flush_interval_ms
            ));
        }
        if !(10..=3_600_000).contains(&self.upload_interval_ms) {
            return bad(format!(
                "upload_interval_ms must be 10..=3600000 (what a leader's death can lose at acks=leader grows with it), got {}",
                self.upload_interval_ms
            ));
        }
        if self.orphan_grace_ms < 1000 {
            return bad(format!(
                "orphan_grace_ms must be at least 1000 (readers of replaced objects get this long), got {}",
                self.orphan_grace_ms
            ));
        }
        if self.merge_target_bytes < 1 << 20 || self.merge_min_segments < 2 {
            return bad(format!(
                "merge_target_bytes must be at least 1 MiB and merge_min_segments at least 2, got {} and {}",
                self.merge_target_bytes, self.merge_min_segments
            ));
        }
        if self.compaction_key_map_bytes < 64 << 10
            || !(0.0..=1.0).contains(&self.compaction_min_dirty_ratio)
        {
            return bad(format!(
                "compaction_key_map_bytes must be at least 64 KiB and compaction_min_dirty_ratio \
                 between 0 and 1, got {} and {}",
                self.compaction_key_map_bytes, self.compaction_min_dirty_ratio
            ));
        }
        if self.merge_interval_ms == 0 || self.gc_interval_ms == 0 {
            return bad("merge_interval_ms and gc_interval_ms must be positive".into());
        }
        if self.housekeeping_ms == 0 || self.segment_ms == 0 {
            return bad("housekeeping_ms and segment_ms must be positive".into());
        }
        Ok(())
    }

    pub(crate) fn flush_interval(&self) -> Duration {
        Duration::from_millis(self.flush_interval_ms)
    }

    pub(crate) fn upload_interval(&self) -> Duration {
        Duration::from_millis(self.upload_interval_ms)
    }

    pub(crate) fn housekeeping(&self) -> Duration {
        Duration::from_millis(self.housekeeping_ms)
    }
}
