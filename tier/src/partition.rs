//! An open partition as the engine owns it, and the narrow view of it that background jobs
//! (upload, retention, merge, garbage collection) work through: one partition's hot log, its
//! manifest writer and cold snapshot, and [`Jobs`], what the jobs share (settings, encoder
//! threads, cut plans). A job never sees the tier: not the other partitions, the gates, the
//! reader views or the cache.
//!
//! Invariants:
//! - the cold snapshot (`Partition::cold`) only moves forward, and is set from the writer's
//!   state under the writer lock, right after a commit lands;
//! - a partition whose writer was fenced (`fenced_by` non-zero) never commits again.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::PartitionId;
use crate::cold::manifest::{Manifest, ManifestState, ManifestWriter};
use crate::config::TierConfig;
use crate::error::{Error, Result};
use crate::hot::log::PartitionLog;
use crate::store::Retry;

/// Cold retention of one partition (none by default: keep everything). `None` on either axis
/// is no limit on it; there is no number that means "unlimited".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ColdRetention {
    /// Remove segments whose newest record is older than this.
    pub age: Option<Duration>,
    /// Remove the oldest segments while the partition's cold bytes exceed this.
    pub bytes: Option<std::num::NonZeroU64>,
    /// Keep only the newest record of each key in the cold tier (Kafka's
    /// `cleanup.policy=compact`); `None`: no key compaction.
    pub compact: Option<KeyCompaction>,
}

/// Key compaction of one partition (`cold::compact`), as Kafka's topic settings say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyCompaction {
    /// Records younger than this (by timestamp) are not compacted yet
    /// (`min.compaction.lag.ms`).
    pub min_lag: Duration,
    /// How long a tombstone (a record with a null value) stays after the pass that compacted
    /// it (`delete.retention.ms`).
    pub delete_retention: Duration,
}

impl Default for KeyCompaction {
    /// Kafka's defaults: no lag, tombstones kept a day.
    fn default() -> Self {
        KeyCompaction {
            min_lag: Duration::ZERO,
            delete_retention: Duration::from_secs(24 * 3600),
        }
    }
}

/// Told about every upload the tier commits to the object store: how long converting the
/// records to Parquet took, how long from the end of that until the commit answered its
/// waiters (waiting for the commit before it, the PUTs), and the object's size. Must not
/// block.
pub trait UploadObserver: Send + Sync + std::fmt::Debug {
    fn uploaded(&self, convert: Duration, commit: Duration, bytes: u64);
}

/// What a partition's merging found and did, since this leader opened it.
#[derive(Debug, Clone, Default)]
pub struct MergeStatus {
    /// Small segments (and their bytes) that merging would take now or later.
    pub waiting_segments: u64,
    pub waiting_bytes: u64,
    /// Merges committed, segments they replaced, bytes they read and wrote.
    pub merges: u64,
    pub merged_segments: u64,
    pub read_bytes: u64,
    pub written_bytes: u64,
    /// Time merges and compaction passes waited for uploads to finish (they give way).
    pub gave_way: Duration,
    /// Merges given up because the segments changed meanwhile (retention, a new leader).
    pub abandoned: u64,
    /// The last failure, if the last merge failed.
    pub last_error: Option<String>,
    /// Segments never to be merged again (bad checksum or footer), by path.
    pub bad: std::collections::BTreeSet<String>,
    /// Offsets below this hold no segment merging would take (where planning starts).
    pub frontier: i64,
    /// Key compaction passes committed, records they removed, and the offset below which the
    /// log holds one record per key (compacted topics).
    pub compactions: u64,
    pub compacted_away: u64,
    pub compacted_below: i64,
    /// A merge task is running, and when the last one started.
    pub running: bool,
    pub last_run: Option<std::time::Instant>,
}

/// What background jobs share across partitions.
#[derive(Debug)]
pub(crate) struct Jobs {
    pub cfg: Arc<TierConfig>,
    /// Low-priority threads for Parquet encoding (`encode_concurrency` of them).
    pub encoders: crate::cold::encoder::Encoders,
    /// When each partition next cuts for acks=all waiters (spread apart).
    pub seal_plans: crate::cold::plan::SealPlans,
    /// Told about every upload committed (for metrics).
    pub upload_observer: RwLock<Option<Arc<dyn UploadObserver>>>,
    /// Merges run one at a time per node (each holds up to a merged object in memory).
    pub merges: tokio::sync::Semaphore,
    /// Uploads running now, over all partitions: background rewrites give way to them.
    pub uploads: Uploads,
    pub tasks: tokio_util::task::TaskTracker,
}

/// How many uploads (segments on their way to the cold tier) run on this node now, so that
/// background rewrites (merging, key compaction) send their store requests in the gaps between
/// them: commits that producers wait for never queue behind a rewrite's reads and writes at the
/// object store.
#[derive(Debug, Default)]
pub(crate) struct Uploads {
    running: std::sync::atomic::AtomicUsize,
    idle: Notify,
}

/// One running upload; counted until dropped.
pub(crate) struct Running<'a>(&'a Uploads);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

impl Uploads {
    /// Counts an upload until the guard is dropped.
    pub fn start(&self) -> Running<'_> {
        self.running.fetch_add(1, Ordering::AcqRel);
        Running(self)
    }

    pub fn running(&self) -> usize {
        self.running.load(Ordering::Acquire)
    }

    /// Waits until no upload runs, or at most `longest` (a rewrite still moves under steady
    /// load). Returns how long it waited.
    pub async fn give_way(&self, longest: Duration) -> Duration {
        if self.running() == 0 {
            return Duration::ZERO;
        }
        let started = std::time::Instant::now();
        loop {
            let idle = self.idle.notified();
            if self.running() == 0 {
                return started.elapsed();
            }
            let Some(left) = longest.checked_sub(started.elapsed()) else {
                return started.elapsed();
            };
            tokio::select! {
                _ = idle => {}
                _ = tokio::time::sleep(left) => return started.elapsed(),
            }
        }
    }
}

impl Jobs {
    pub fn new(cfg: Arc<TierConfig>) -> Self {
        Jobs {
            encoders: crate::cold::encoder::Encoders::start(cfg.encode_concurrency),
            cfg,
            seal_plans: crate::cold::plan::SealPlans::default(),
            upload_observer: RwLock::default(),
            merges: tokio::sync::Semaphore::new(1),
            uploads: Uploads::default(),
            tasks: tokio_util::task::TaskTracker::new(),
        }
    }

    /// Store retries that stop when `cancel` does.
    pub fn retry_until(&self, cancel: CancellationToken) -> Retry {
        Retry::new(
            Duration::from_millis(self.cfg.upload_retry_initial_ms),
            Duration::from_millis(self.cfg.upload_retry_max_ms),
            cancel,
        )
    }
}

/// One partition this tier leads.
#[derive(Debug)]
pub(crate) struct Partition {
    pub id: PartitionId,
    pub log: Arc<PartitionLog>,
    pub epoch: u64,
    /// The hot tier's next offset when this leader opened it: where its epoch begins.
    pub epoch_start: i64,
    pub writer: tokio::sync::Mutex<ManifestWriter>,
    pub manifest: Manifest,
    cold: RwLock<Arc<ManifestState>>,
    pub notify: Notify,
    /// Offsets below this are awaited by `wait_committed` callers (acks=all): the uploader cuts
    /// the active segment when the cold tier does not yet cover them.
    pub commit_wanted: AtomicI64,
    /// Offsets below this are committed or in upload (set by the uploader).
    pub uploading_next: AtomicI64,
    /// Notified (all waiters) after every cold commit.
    pub committed: Notify,
    /// The epoch that fenced this partition's writer (0 while it leads).
    fenced_by: AtomicU64,
    pub retention: RwLock<ColdRetention>,
    /// Stops this partition's background work (child of the tier's token).
    pub cancel: CancellationToken,
    /// When housekeeping last collected this partition's garbage.
    pub collected_at: std::sync::Mutex<std::time::Instant>,
    pub uploader: std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// Why uploads stopped for good, if they did.
    pub upload_error: RwLock<Option<String>>,
    /// What the merge job last found or did (for `describe`).
    pub merge_status: RwLock<MergeStatus>,
}

impl Partition {
    pub fn new(
        id: PartitionId,
        log: PartitionLog,
        epoch: u64,
        writer: ManifestWriter,
        cancel: CancellationToken,
    ) -> Self {
        let state = writer.state().clone();
        Partition {
            id,
            epoch_start: log.next_offset(),
            log: Arc::new(log),
            epoch,
            manifest: writer.manifest().clone(),
            uploading_next: AtomicI64::new(state.next_offset),
            cold: RwLock::new(Arc::new(state)),
            writer: tokio::sync::Mutex::new(writer),
            notify: Notify::new(),
            commit_wanted: AtomicI64::new(0),
            committed: Notify::new(),
            fenced_by: AtomicU64::new(0),
            retention: RwLock::default(),
            cancel,
            uploader: std::sync::Mutex::new(None),
            upload_error: RwLock::default(),
            collected_at: std::sync::Mutex::new(std::time::Instant::now()),
            merge_status: RwLock::default(),
        }
    }

    /// The committed cold state as of the last commit.
    pub fn cold(&self) -> Arc<ManifestState> {
        self.cold.read().expect("cold lock poisoned").clone()
    }

    /// Fails with [`Error::Fenced`] once a higher epoch has taken over the manifest.
    pub fn check_fenced(&self) -> Result<()> {
        match self.fenced_by.load(Ordering::Acquire) {
            0 => Ok(()),
            current => Err(Error::Fenced {
                partition: self.id.to_string(),
                ours: self.epoch,
                current,
            }),
        }
    }

    /// Records that epoch `current` took the manifest over: appends and commits stop.
    pub fn fenced(&self, current: u64) {
        self.fenced_by.store(current.max(1), Ordering::Release);
    }

    /// Publishes the writer's state after a commit (the caller holds the writer lock).
    pub fn set_cold(&self, s: &ManifestState) {
        *self.cold.write().expect("cold lock poisoned") = Arc::new(s.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rewrite gives way while an upload runs: it goes on when the last one ends, and after
    /// at most the longest wait when uploads never stop; with none running it does not wait.
    #[tokio::test]
    async fn rewrites_give_way_to_running_uploads() {
        let uploads = Arc::new(Uploads::default());
        assert_eq!(
            uploads.give_way(Duration::from_secs(1)).await,
            Duration::ZERO
        );
        let a = uploads.start();
        let b = uploads.start();
        assert_eq!(uploads.running(), 2);
        // Never idle: the wait ends at the longest.
        let waited = uploads.give_way(Duration::from_millis(20)).await;
        assert!(waited >= Duration::from_millis(20), "{waited:?}");
        let u = uploads.clone();
        let waiting = tokio::spawn(async move { u.give_way(Duration::from_secs(3600)).await });
        tokio::task::yield_now().await;
        drop(a);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "one upload still runs");
        drop(b);
        tokio::time::timeout(Duration::from_secs(60), waiting)
            .await
            .expect("goes on once no upload runs")
            .unwrap();
        assert_eq!(uploads.running(), 0);
    }
}
