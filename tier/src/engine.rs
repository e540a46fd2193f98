//! [`Tier`]: the storage core. Partitions append to the hot tier; sealed segments (and, for
//! acks=all, cuts of the active one) are uploaded as Parquet and committed to the partition's
//! manifest under the leader's epoch; reads are served from the hot tier when it holds the
//! offset, otherwise from the cold tier.
//!
//! Invariants:
//! - an offset is readable from exactly one place at a time or from both with identical records;
//! - hot segments are deleted only after the manifest commit that covers them;
//! - the cold snapshot (`Partition::cold`) is updated before `uploaded_next`, so a reader that
//!   misses in the hot tier always finds the offset in a fresh enough cold snapshot.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStore;
use object_store::path::Path;
use tokio_util::sync::CancellationToken;

use crate::batch::{Record, RecordBatch};
use crate::cold::cache::{self, ColdCache};
use crate::cold::gc::GcReport;
use crate::cold::manifest::{Manifest, ManifestState, ManifestWriter, Node, SegmentEntry};
use crate::config::{FsyncPolicy, TierConfig};
use crate::epochs::{EpochRun, push_epoch_run};
use crate::error::{Error, Result};
use crate::hot::AppendResult;
use crate::hot::log::{PartitionLog, beats};
use crate::partition::{ColdRetention, Jobs, Partition, UploadObserver};
use crate::store::Retry;
use crate::{PartitionId, retention};

/// Where a read was served from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Hot,
    Cold,
    /// Nothing to return: the offset is the log end.
    None,
}

/// The answer to a read.
#[derive(Debug, Clone)]
pub struct ReadResult {
    pub records: Vec<Record>,
    /// The offset after the last record in the log (Kafka's high watermark for one replica).
    pub high_watermark: i64,
    /// The first offset still in the log.
    pub log_start_offset: i64,
    pub source: Source,
}

/// Where a partition's data lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    /// First offset in the log (cold start, or hot start when nothing is cold).
    pub log_start: i64,
    /// First offset on local disk.
    pub hot_start: i64,
    /// Offsets below this are committed to the cold tier.
    pub cold_next: i64,
    /// Offsets below this are committed to the cold tier or being uploaded to it.
    pub uploading_next: i64,
    /// Offsets below this are fsynced on local disk.
    pub durable_next: i64,
    /// The next offset to be assigned.
    pub next: i64,
    pub hot_bytes: u64,
    /// Segment files on local disk (the active one included).
    pub hot_segments: u64,
    pub cold_bytes: u64,
    pub cold_segments: u64,
    /// Small cold segments merging will fold into larger ones, and their bytes: as the leader
    /// last planned; elsewhere, counted from the manifest's entries (old ones by their
    /// chunk's average size).
    pub merge_waiting_segments: u64,
    pub merge_waiting_bytes: u64,
    /// How long the oldest record below `next` not yet committed to the cold tier has waited
    /// (zero when there is none).
    pub upload_lag: std::time::Duration,
    /// Why uploads of this partition stopped, if they did (corrupt or unconvertible data).
    pub upload_error: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Inner {
    pub cfg: Arc<TierConfig>,
    pub store: Arc<dyn ObjectStore>,
    pub root: Path,
    pub partitions: RwLock<HashMap<PartitionId, Arc<Partition>>>,
    pub cache: ColdCache,
    pub hot_bytes: Arc<AtomicU64>,
    pub cancel: CancellationToken,
    /// What background jobs share; its task tracker holds every task of the tier.
    pub jobs: Arc<Jobs>,
    /// Read-only views of partitions this node does not lead, for committed (cold) reads.
    pub readers: std::sync::Mutex<HashMap<PartitionId, Arc<ReaderView>>>,
    /// One gate per partition with an open, close, removal or hot housekeeping under way: they
    /// run one at a time, so its hot directory is never recovered twice, nor while a close,
    /// removal or housekeeping of the log before still uses it, and its bytes are counted once.
    pub gates: std::sync::Mutex<HashMap<PartitionId, Arc<tokio::sync::Mutex<()>>>>,
    /// Partitions closed to be reopened after a failed fsync whose open has not succeeded yet,
    /// with their epoch: housekeeping tries again until it does, or until the partition is
    /// opened, closed or removed through the API (changed under the partition's gate).
    pub reopening: std::sync::Mutex<HashMap<PartitionId, (u64, std::time::Instant)>>,
}

/// A partition another node leads, as far as its manifest goes: committed reads only.
#[derive(Debug)]
pub(crate) struct ReaderView {
    pub manifest: Manifest,
    /// The loaded state and when it was last refreshed from the store.
    pub state: tokio::sync::Mutex<Option<(Arc<ManifestState>, std::time::Instant)>>,
}

/// How stale a reader view may be before a read at its end re-reads the manifest.
const READER_REFRESH: Duration = Duration::from_millis(200);

impl Inner {
    pub fn retry(&self) -> Retry {
        self.retry_until(self.cancel.clone())
    }
    pub fn retry_until(&self, cancel: CancellationToken) -> Retry {
        self.jobs.retry_until(cancel)
    }
    /// The gate that opens, closes and removals of `id` pass one at a time. Gates nobody holds
    /// or waits for are dropped on the way, so the map stays as small as the work in progress.
    pub fn gate(&self, id: &PartitionId) -> Arc<tokio::sync::Mutex<()>> {
        let mut gates = self.gates.lock().expect("gates lock poisoned");
        gates.retain(|k, g| k == id || Arc::strong_count(g) > 1);
        gates.entry(id.clone()).or_default().clone()
    }
    /// Forgets a pending reopen of `id` (the caller holds its gate).
    pub fn not_reopening(&self, id: &PartitionId) {
        self.reopening
            .lock()
            .expect("reopening lock poisoned")
            .remove(id);
    }

    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.partitions
            .read()
            .expect("partitions lock poisoned")
            .values()
            .cloned()
            .collect()
    }
}

/// The storage core. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Tier {
    pub(crate) inner: Arc<Inner>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::invalid(format!("blocking task failed: {e}")))?
}

impl Tier {
    /// Opens the tier over `store` (cold objects live under `root`). Starts background work:
    /// interval fsync, age-based sealing, retention.
    pub async fn open(cfg: TierConfig, store: Arc<dyn ObjectStore>, root: Path) -> Result<Tier> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.data_dir).map_err(|e| Error::io(&cfg.data_dir, e))?;
        let cache = ColdCache::new(store.clone(), cfg.cache_bytes);
        let cfg = Arc::new(cfg);
        let inner = Arc::new(Inner {
            jobs: Arc::new(Jobs::new(cfg.clone())),
            cfg,
            store,
            root,
            partitions: RwLock::default(),
            cache,
            hot_bytes: Arc::default(),
            cancel: CancellationToken::new(),
            readers: std::sync::Mutex::default(),
            gates: std::sync::Mutex::default(),
            reopening: std::sync::Mutex::default(),
        });
        spawn_housekeeping(&inner);
        Ok(Tier { inner })
    }

    pub fn config(&self) -> &TierConfig {
        &self.inner.cfg
    }

    /// Tells `observer` about every upload committed from now on.
    pub fn observe_uploads(&self, observer: Arc<dyn UploadObserver>) {
        *self
            .inner
            .jobs
            .upload_observer
            .write()
            .expect("observer lock poisoned") = Some(observer);
    }
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner.store
    }
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    /// Opens a partition as its leader with `epoch`: fences the manifest (failing with
    /// [`Error::Fenced`] if a higher epoch committed), recovers the hot tier, and starts uploads.
    pub async fn open_partition(&self, topic: &str, partition: u32, epoch: u64) -> Result<()> {
        let id = PartitionId::new(topic, partition);
        let gate = self.inner.gate(&id);
        let _opening = gate.lock().await;
        self.inner.not_reopening(&id);
        self.open_gated(&id, epoch).await
    }

    /// [`Tier::open_partition`] for a caller that holds the partition's gate.
    async fn open_gated(&self, id: &PartitionId, epoch: u64) -> Result<()> {
        let (topic, partition) = (&*id.topic, id.partition);
        if self.inner.cancel.is_cancelled() {
            return Err(Error::Closed);
        }
        if let Ok(open) = self.partition(id) {
            return if open.epoch == epoch {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "{id} is already open at epoch {}; close it before opening it at {epoch}",
                    open.epoch
                )))
            };
        }
        let inner = &self.inner;
        let manifest = Manifest::new(inner.store.clone(), &inner.root, topic, partition);
        let writer = ManifestWriter::open(manifest, epoch, inner.retry()).await?;
        let state = writer.state().clone();
        let (cfg, root, hot) = (
            inner.cfg.clone(),
            inner.cfg.data_dir.clone(),
            inner.hot_bytes.clone(),
        );
        let id2 = id.clone();
        let cold_next = state.next_offset;
        let cold_epoch = writer.prior_epoch();
        let cold_producers = state.producers.clone();
        let log = blocking(move || {
            PartitionLog::open(&root, id2, cfg, cold_next, cold_epoch, cold_producers, hot)
        })
        .await?;
        let p = Arc::new(Partition::new(
            id.clone(),
            log,
            epoch,
            writer,
            inner.cancel.child_token(),
        ));
        {
            let mut map = inner.partitions.write().expect("partitions lock poisoned");
            // Not open: checked above, under the gate that every change to the map passes.
            map.insert(id.clone(), p.clone());
        }
        crate::cold::upload::spawn(inner.jobs.clone(), p);
        tracing::info!(topic, partition, epoch, cold_next, "partition opened");
        Ok(())
    }

    fn partition(&self, id: &PartitionId) -> Result<Arc<Partition>> {
        self.inner
            .partitions
            .read()
            .expect("partitions lock poisoned")
            .get(id)
            .cloned()
            .ok_or_else(|| Error::UnknownPartition {
                topic: id.topic.to_string(),
                partition: id.partition,
            })
    }

    fn get(&self, topic: &str, partition: u32) -> Result<Arc<Partition>> {
        self.partition(&PartitionId::new(topic, partition))
    }

    /// Partitions open in this tier.
    pub fn partitions(&self) -> Vec<PartitionId> {
        let mut v: Vec<_> = self.inner.all().iter().map(|p| p.id.clone()).collect();
        v.sort();
        v
    }

    /// Appends a batch: assigns offsets, writes it to the hot tier (synced per the fsync policy)
    /// and returns where it landed. Fails with [`Error::Backpressure`] when the hot tier's disk
    /// budget is used up, and [`Error::Fenced`] after another leader took over.
    pub async fn append(
        &self,
        topic: &str,
        partition: u32,
        batch: RecordBatch,
    ) -> Result<AppendResult> {
        let p = self.get(topic, partition)?;
        p.check_fenced()?;
        let used = self.inner.hot_bytes.load(Ordering::Acquire);
        let budget = self.inner.cfg.hot_budget_bytes;
        if used + batch.len() as u64 > budget {
            return Err(Error::Backpressure { used, budget });
        }
        let log = p.log.clone();
        let epoch = p.epoch as i32;
        // Most appends only copy into the page cache: done here, without a hand-off to a
        // blocking thread and back (two wake-ups per request; measured: 25-30% more produce
        // throughput through a node). A seal (fsync), fsync-every-batch or a busy writer lock
        // still go to a blocking thread.
        let r = match p.log.try_append(batch, epoch) {
            Ok(r) => r?,
            Err(batch) => blocking(move || log.append(batch, epoch)).await?,
        };
        if r.rolled {
            p.notify.notify_one();
        }
        Ok(r)
    }

    /// Records from `offset` on, up to about `max_bytes` of payload (at least one record when the
    /// log has any at `offset`). Served from the hot tier when it holds `offset`, otherwise from
    /// the cold tier.
    pub async fn read(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadResult> {
        let p = self.get(topic, partition)?;
        let next = p.log.next_offset();
        let log = p.log.clone();
        let hot = blocking(move || log.read(offset, max_bytes)).await?;
        let cold = p.cold();
        let log_start = log_start(&cold, p.log.start_offset());
        if offset < log_start || offset > next {
            return Err(Error::OffsetOutOfRange {
                topic: topic.to_string(),
                partition,
                offset,
                start: log_start,
                end: next,
            });
        }
        let result = |records: Vec<Record>, source| ReadResult {
            high_watermark: next,
            log_start_offset: log_start,
            source: if records.is_empty() {
                Source::None
            } else {
                source
            },
            records,
        };
        if let Some(batches) = hot {
            let mut records = Vec::new();
            for b in &batches {
                b.decode_into(&mut records)?;
            }
            records.retain(|r| r.offset >= offset && r.offset < next);
            return Ok(result(records, Source::Hot));
        }
        let records = self
            .read_cold(&p.manifest, &p.id, &cold, offset, max_bytes)
            .await?;
        Ok(result(records, Source::Cold))
    }

    /// A partition's committed cold segments (full object paths) and the manifest state they
    /// come from: the leader's own state when this tier leads the partition, otherwise the
    /// shared reader view, re-read when it is older than a moment (or at once with `refresh`).
    /// For scans by the SQL engine.
    pub async fn cold_segments(
        &self,
        topic: &str,
        partition: u32,
        refresh: bool,
    ) -> Result<(Arc<ManifestState>, Vec<(Path, SegmentEntry)>)> {
        let id = PartitionId::new(topic, partition);
        let (manifest, state) = match self.partition(&id) {
            Ok(p) => (p.manifest.clone(), p.cold()),
            Err(_) => {
                let max_age = if refresh {
                    Duration::ZERO
                } else {
                    READER_REFRESH
                };
                let (view, state) = self.reader(&id, Some(i64::MAX), max_age).await?;
                (view.manifest.clone(), state)
            }
        };
        let segments = manifest.segment_paths(&state).await?;
        Ok((state, segments))
    }

    /// Stored batches of a partition this tier leads, from the one holding `from`, about
    /// `max_bytes` of them (at least one when there is one), with the log end as it was before
    /// the read. `None` when `from` is no longer on local disk (it was uploaded and removed):
    /// the caller's view of the cold tier is out of date.
    pub async fn read_hot_batches(
        &self,
        topic: &str,
        partition: u32,
        from: i64,
        max_bytes: usize,
    ) -> Result<Option<(Vec<RecordBatch>, i64)>> {
        let p = self.get(topic, partition)?;
        let end = p.log.next_offset();
        if from >= end {
            return Ok(Some((Vec::new(), end)));
        }
        let log = p.log.clone();
        Ok(blocking(move || log.read(from, max_bytes))
            .await?
            .map(|batches| (batches, end)))
    }

    /// Committed records of a partition this tier does not lead (another node does), read from
    /// the object store through the cache. The view of the manifest is refreshed when a read
    /// reaches its end and it is older than a moment. An empty result at `high_watermark` means
    /// the rest, if any, is still in the leader's hot tier.
    pub async fn read_committed(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<ReadResult> {
        let id = PartitionId::new(topic, partition);
        let (view, mut cold) = self.reader(&id, Some(offset), READER_REFRESH).await?;
        let in_range = |cold: &ManifestState| {
            if offset < cold.start_offset || offset > cold.next_offset {
                return Err(Error::OffsetOutOfRange {
                    topic: topic.to_string(),
                    partition,
                    offset,
                    start: cold.start_offset,
                    end: cold.next_offset,
                });
            }
            Ok(())
        };
        in_range(&cold)?;
        let records = match self
            .read_cold(&view.manifest, &id, &cold, offset, max_bytes)
            .await
        {
            // Objects named by a view older than a garbage collection (a merge replaced them,
            // or retention retired them, longer than the grace period ago): read it again.
            Err(e) if e.is_not_found() => {
                cold = self.reload_reader(&view).await?;
                in_range(&cold)?;
                self.read_cold(&view.manifest, &id, &cold, offset, max_bytes)
                    .await?
            }
            r => r?,
        };
        Ok(ReadResult {
            high_watermark: cold.next_offset,
            log_start_offset: cold.start_offset,
            source: if records.is_empty() {
                Source::None
            } else {
                Source::Cold
            },
            records,
        })
    }

    /// What the manifest of a partition this tier does not lead says (hot fields equal the
    /// committed end: the leader's hot tier is not visible from here).
    pub async fn committed_offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets> {
        let (_, cold) = self
            .reader(&PartitionId::new(topic, partition), None, READER_REFRESH)
            .await?;
        let (cold_bytes, _, cold_segments) = cold.totals();
        let (merge_waiting_segments, merge_waiting_bytes) =
            crate::cold::merge::waiting_in(&cold, crate::cold::merge::Policy::of(&self.inner.cfg));
        Ok(PartitionOffsets {
            log_start: cold.start_offset,
            hot_start: cold.next_offset,
            cold_next: cold.next_offset,
            uploading_next: cold.next_offset,
            durable_next: cold.next_offset,
            next: cold.next_offset,
            hot_bytes: 0,
            hot_segments: 0,
            cold_bytes,
            cold_segments,
            merge_waiting_segments,
            merge_waiting_bytes,
            upload_lag: std::time::Duration::ZERO,
            upload_error: None,
        })
    }

    /// The reader view of `id` and its state, refreshed when older than `max_age` and
    /// `at` (if given) is at or past its end.
    async fn reader(
        &self,
        id: &PartitionId,
        at: Option<i64>,
        max_age: Duration,
    ) -> Result<(Arc<ReaderView>, Arc<ManifestState>)> {
        let view = self
            .inner
            .readers
            .lock()
            .expect("readers lock poisoned")
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(ReaderView {
                    manifest: Manifest::new(
                        self.inner.store.clone(),
                        &self.inner.root,
                        &id.topic,
                        id.partition,
                    ),
                    state: tokio::sync::Mutex::new(None),
                })
            })
            .clone();
        let mut guard = view.state.lock().await;
        let state = match guard.as_ref() {
            None => {
                let s = Arc::new(view.manifest.load().await?);
                *guard = Some((s.clone(), std::time::Instant::now()));
                s
            }
            Some((s, at_time))
                if at.is_none_or(|o| o >= s.next_offset) && at_time.elapsed() >= max_age =>
            {
                let mut fresh = (**s).clone();
                view.manifest.catch_up(&mut fresh).await?;
                let fresh = Arc::new(fresh);
                *guard = Some((fresh.clone(), std::time::Instant::now()));
                fresh
            }
            Some((s, _)) => s.clone(),
        };
        drop(guard);
        Ok((view, state))
    }

    /// Reloads a reader view's state from the store now.
    async fn reload_reader(&self, view: &ReaderView) -> Result<Arc<ManifestState>> {
        let mut guard = view.state.lock().await;
        let fresh = Arc::new(view.manifest.load().await?);
        *guard = Some((fresh.clone(), std::time::Instant::now()));
        Ok(fresh)
    }

    async fn read_cold(
        &self,
        manifest: &Manifest,
        id: &PartitionId,
        cold: &ManifestState,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Vec<Record>> {
        let cache = &self.inner.cache;
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut cur = offset;
        while cur < cold.next_offset && (out.is_empty() || bytes < max_bytes) {
            let seg =
                manifest
                    .find_offset(cold, cur)
                    .await?
                    .ok_or_else(|| Error::OffsetOutOfRange {
                        topic: id.topic.to_string(),
                        partition: id.partition,
                        offset: cur,
                        start: cold.start_offset,
                        end: cold.next_offset,
                    })?;
            let path = manifest.paths.object(&seg.path);
            let meta = cache.metadata(&path, seg.size, seg.footer_crc32c).await?;
            let corrupt = |position: usize, reason: String| Error::Corrupt {
                location: path.to_string(),
                position: position as u64,
                reason,
            };
            let Some(rg) = cache::locate(&meta, &seg, cur).map_err(|r| corrupt(0, r))? else {
                // A compacted segment with no record left at or after `cur`.
                if seg.is_dense() {
                    return Err(corrupt(
                        0,
                        format!("offset {cur} is not in the segment's row groups"),
                    ));
                }
                cur = seg.last_offset + 1;
                continue;
            };
            let rows = cache
                .row_group(&path, seg.size, seg.footer_crc32c, rg)
                .await?;
            let skip = rows.records.partition_point(|r| r.offset < cur);
            if skip >= rows.records.len() {
                return Err(corrupt(
                    rg,
                    format!(
                        "row group {rg} holds {} rows, none at offset {cur} or after",
                        rows.records.len()
                    ),
                ));
            }
            let dense = seg.is_dense();
            for r in &rows.records[skip..] {
                if dense && r.offset != cur {
                    return Err(corrupt(
                        rg,
                        format!("row for offset {cur} holds offset {}", r.offset),
                    ));
                }
                bytes += r.payload_len();
                out.push(r.clone());
                cur = r.offset + 1;
                if bytes >= max_bytes {
                    break;
                }
            }
            if bytes < max_bytes
                && rg + 1 == meta.metadata().num_row_groups()
                && cur <= seg.last_offset
            {
                // The segment's last records were compacted away.
                cur = seg.last_offset + 1;
            }
            self.read_ahead(
                manifest,
                cold,
                &seg,
                &path,
                meta.metadata().num_row_groups(),
                rg,
            )
            .await?;
        }
        Ok(out)
    }

    /// Prefetches the `read_ahead_row_groups` row groups after row group `rg` of `seg`, crossing
    /// into following segments.
    async fn read_ahead(
        &self,
        manifest: &Manifest,
        cold: &ManifestState,
        seg: &SegmentEntry,
        path: &Path,
        row_groups: usize,
        rg: usize,
    ) -> Result<()> {
        let cache = &self.inner.cache;
        let mut left = self.inner.cfg.read_ahead_row_groups;
        let (mut seg, mut path, mut row_groups, mut next) =
            (seg.clone(), path.clone(), row_groups, rg + 1);
        while left > 0 {
            if next < row_groups {
                cache.prefetch(path.clone(), seg.size, seg.footer_crc32c, next);
                next += 1;
                left -= 1;
                continue;
            }
            let Some(following) = manifest.find_offset(cold, seg.last_offset + 1).await? else {
                break;
            };
            path = manifest.paths.object(&following.path);
            row_groups = cache
                .metadata(&path, following.size, following.footer_crc32c)
                .await?
                .metadata()
                .num_row_groups();
            seg = following;
            next = 0;
        }
        Ok(())
    }

    /// The first offset whose record timestamp is ≥ `ts` (ms), across both tiers; `None` when
    /// every record is older.
    pub async fn offset_for_timestamp(
        &self,
        topic: &str,
        partition: u32,
        ts: i64,
    ) -> Result<Option<i64>> {
        let p = self.get(topic, partition)?;
        let cold = p.cold();
        if let Some(seg) = p.manifest.find_timestamp(&cold, ts).await? {
            let cache = &self.inner.cache;
            let path = p.manifest.paths.object(&seg.path);
            let meta = cache.metadata(&path, seg.size, seg.footer_crc32c).await?;
            let start = cache::first_row_group_at_or_after(&meta, ts).unwrap_or(0);
            for rg in start..meta.metadata().num_row_groups() {
                let rows = cache
                    .row_group(&path, seg.size, seg.footer_crc32c, rg)
                    .await?;
                if let Some(r) = rows.records.iter().find(|r| r.timestamp >= ts) {
                    return Ok(Some(r.offset));
                }
            }
        }
        let log = p.log.clone();
        blocking(move || log.offset_for_timestamp(ts)).await
    }

    /// The record with the highest timestamp below offset `below` (Kafka's ListOffsets
    /// MAX_TIMESTAMP; the lowest offset among equal timestamps), as `(offset, timestamp)`.
    /// The cold tier is searched best-first by the maximum timestamps the manifest keeps for
    /// each chunk and segment (an upper bound: records below the log start do not count), so
    /// only the objects that can hold the answer are read; then the hot tier's batches whose
    /// maximum can beat it.
    pub async fn max_timestamp_record(
        &self,
        topic: &str,
        partition: u32,
        below: i64,
    ) -> Result<Option<(i64, i64)>> {
        let p = self.get(topic, partition)?;
        let cold = p.cold();
        let start = log_start(&cold, p.log.start_offset());
        let cache = &self.inner.cache;
        let mut best: Option<(i64, i64)> = None;
        let mut frontier: Vec<Node> = cold
            .nodes()
            .filter(|n| n.last_offset() >= start && n.base_offset() < below)
            .cloned()
            .collect();
        // The node that may hold the highest timestamp, the lowest offset first among equals.
        let next = |f: &Vec<Node>| {
            (0..f.len()).max_by(|&a, &b| {
                (f[a].max_timestamp(), f[b].base_offset())
                    .cmp(&(f[b].max_timestamp(), f[a].base_offset()))
            })
        };
        while let Some(i) = next(&frontier) {
            let n = frontier.swap_remove(i);
            if !beats(best, n.base_offset(), n.max_timestamp()) {
                break;
            }
            match n {
                Node::Chunk(c) => frontier.extend(
                    p.manifest
                        .chunk(&c.path)
                        .await?
                        .iter()
                        .filter(|n| n.last_offset() >= start && n.base_offset() < below)
                        .cloned(),
                ),
                Node::Segment(seg) => {
                    let path = p.manifest.paths.object(&seg.path);
                    let meta = cache.metadata(&path, seg.size, seg.footer_crc32c).await?;
                    for rg in 0..meta.metadata().num_row_groups() {
                        let rows = cache
                            .row_group(&path, seg.size, seg.footer_crc32c, rg)
                            .await?;
                        for r in rows.records.iter() {
                            let (o, t) = (r.offset, r.timestamp);
                            if o >= start && o < below && beats(best, o, t) {
                                best = Some((o, t));
                            }
                        }
                    }
                }
            }
        }
        let log = p.log.clone();
        blocking(move || log.max_timestamp_record(below, best)).await
    }

    /// The partition's leader epoch history as readers meet it (see `crate::epochs`): the
    /// cold tier's, then the runs of the hot tier, then this leader's epoch from where it
    /// began appending.
    pub fn leader_epochs(&self, topic: &str, partition: u32) -> Result<Vec<EpochRun>> {
        let p = self.get(topic, partition)?;
        let mut runs = p.cold().leader_epochs.clone();
        for run in p.log.epoch_runs() {
            push_epoch_run(&mut runs, run);
        }
        let current = EpochRun {
            epoch: i32::try_from(p.epoch).unwrap_or(i32::MAX),
            start: p.epoch_start,
        };
        push_epoch_run(&mut runs, current);
        Ok(runs)
    }

    /// Where the partition's data lives now.
    pub fn offsets(&self, topic: &str, partition: u32) -> Result<PartitionOffsets> {
        let p = self.get(topic, partition)?;
        let cold = p.cold();
        let (cold_bytes, _, cold_segments) = cold.totals();
        let hot_start = p.log.start_offset();
        let (merge_waiting_segments, merge_waiting_bytes) = {
            let st = p.merge_status.read().expect("merge status lock poisoned");
            (st.waiting_segments, st.waiting_bytes)
        };
        Ok(PartitionOffsets {
            log_start: log_start(&cold, hot_start),
            hot_start,
            cold_next: cold.next_offset,
            uploading_next: p
                .uploading_next
                .load(Ordering::Acquire)
                .max(cold.next_offset),
            durable_next: p.log.durable_next(),
            next: p.log.next_offset(),
            hot_bytes: p.log.bytes(),
            hot_segments: p.log.segment_count() as u64,
            cold_bytes,
            cold_segments,
            merge_waiting_segments,
            merge_waiting_bytes,
            upload_lag: p.log.upload_lag(),
            upload_error: p
                .upload_error
                .read()
                .expect("upload error lock poisoned")
                .clone(),
        })
    }

    /// Closes a partition without deleting anything: stops its uploads (what is not committed
    /// stays on local disk, to be reconciled when it is opened again), fsyncs it, and forgets
    /// it. For handing leadership to another node, or after losing it. Appends racing with this
    /// may land on disk but are not uploaded: callers stop appends first.
    pub async fn close_partition(&self, topic: &str, partition: u32) -> Result<()> {
        let id = PartitionId::new(topic, partition);
        // An open waits until the hot directory is let go.
        let gate = self.inner.gate(&id);
        let _closing = gate.lock().await;
        self.inner.not_reopening(&id);
        self.close_gated(&id).await
    }

    /// After a failed fsync a partition's log takes no appends: what is on disk is unknown
    /// until it is recovered. This closes and opens `p` again at its epoch, under its gate, so
    /// the hot tier is recovered from disk (a torn tail truncated) and reconciled with the
    /// manifest, and appends resume. Nothing happens if `p` is no longer the open partition or
    /// its log has not failed.
    pub(crate) async fn reopen_failed(&self, p: &Arc<Partition>) -> Result<()> {
        // Busy with an open or close: housekeeping comes back on its next round.
        let gate = self.inner.gate(&p.id);
        let Ok(_reopening) = gate.try_lock() else {
            return Ok(());
        };
        let current = self.partition(&p.id).ok();
        if !current.is_some_and(|c| Arc::ptr_eq(&c, p)) || !p.log.is_failed() {
            return Ok(());
        }
        tracing::warn!(topic = %p.id.topic, partition = p.id.partition, epoch = p.epoch,
            "reopening the partition after a failed fsync: recovering its hot tier from disk");
        self.inner
            .reopening
            .lock()
            .expect("reopening lock poisoned")
            .insert(p.id.clone(), (p.epoch, std::time::Instant::now()));
        if let Err(e) = self.close_gated(&p.id).await {
            tracing::warn!(topic = %p.id.topic, partition = p.id.partition, error = %e,
                "closing after a failed fsync");
        }
        self.open_pending_gated(&p.id).await
    }

    /// Tries again to open a partition whose reopen after a failed fsync has not succeeded,
    /// unless the API opened, closed or removed it since.
    pub(crate) async fn retry_reopen(&self, id: &PartitionId) -> Result<()> {
        let gate = self.inner.gate(id);
        let Ok(_reopening) = gate.try_lock() else {
            return Ok(());
        };
        self.open_pending_gated(id).await
    }

    /// Opens `id` at the epoch of its pending reopen, if it has one, and forgets the pending
    /// reopen once it opened. The caller holds the partition's gate.
    async fn open_pending_gated(&self, id: &PartitionId) -> Result<()> {
        let epoch = self
            .inner
            .reopening
            .lock()
            .expect("reopening lock poisoned")
            .get(id)
            .map(|(epoch, _)| *epoch);
        let Some(epoch) = epoch else { return Ok(()) };
        self.open_gated(id, epoch).await?;
        self.inner.not_reopening(id);
        tracing::info!(topic = %id.topic, partition = id.partition, epoch,
            "partition reopened after a failed fsync");
        Ok(())
    }

    /// [`Tier::close_partition`] for a caller that holds the partition's gate.
    async fn close_gated(&self, id: &PartitionId) -> Result<()> {
        let (topic, partition) = (&*id.topic, id.partition);
        let Some(p) = self
            .inner
            .partitions
            .write()
            .expect("partitions lock poisoned")
            .remove(id)
        else {
            return Ok(());
        };
        p.cancel.cancel();
        let handle = p.uploader.lock().expect("uploader lock poisoned").take();
        if let Some(Err(e)) = match handle {
            Some(h) => Some(h.await),
            None => None,
        } {
            tracing::error!(topic, partition, error = %e, "the uploader task failed");
        }
        // Readers of other nodes' partitions must not see a view older than what we committed.
        self.inner
            .readers
            .lock()
            .expect("readers lock poisoned")
            .remove(id);
        let log = p.log.clone();
        // The writer lock (taken to release) may be held by an append that fsyncs.
        let synced = blocking(move || {
            let synced = log.flush();
            log.release();
            synced
        })
        .await;
        tracing::info!(topic, partition, epoch = p.epoch, "partition closed");
        synced
    }

    /// Closes a partition and deletes all of its data: the hot segments and, after its uploads
    /// stopped, every object under its prefix (segments and manifest). For topic deletion.
    pub async fn remove_partition(&self, topic: &str, partition: u32) -> Result<()> {
        let id = PartitionId::new(topic, partition);
        let gate = self.inner.gate(&id);
        let _removing = gate.lock().await;
        self.inner.not_reopening(&id);
        let p = self
            .inner
            .partitions
            .write()
            .expect("partitions lock poisoned")
            .remove(&id);
        let store = self.inner.store.clone();
        if let Some(p) = &p {
            p.cancel.cancel();
            let handle = p.uploader.lock().expect("uploader lock poisoned").take();
            if let Some(Err(e)) = match handle {
                Some(h) => Some(h.await),
                None => None,
            } {
                tracing::error!(topic, partition, error = %e, "the uploader task failed");
            }
        }
        let dir = self
            .inner
            .cfg
            .data_dir
            .join(topic)
            .join(partition.to_string());
        blocking(move || match std::fs::remove_dir_all(&dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(&dir, e)),
        })
        .await?;
        if let Some(p) = &p {
            let log = p.log.clone();
            blocking(move || {
                log.release();
                Ok(())
            })
            .await?;
        }
        let prefix =
            crate::cold::manifest::PartitionPaths::new(&self.inner.root, topic, partition).prefix;
        let locations = store.list(Some(&prefix)).map_ok(|m| m.location).boxed();
        let deleted: Vec<_> = store.delete_stream(locations).try_collect().await?;
        tracing::info!(
            topic,
            partition,
            objects = deleted.len(),
            "partition data deleted"
        );
        Ok(())
    }

    /// Fails an open partition's log as a failed fsync would: appends are refused and
    /// housekeeping closes and reopens it. For tests of what follows a failed fsync.
    #[cfg(any(test, feature = "test-hooks"))]
    pub fn fail_partition_for_test(&self, topic: &str, partition: u32) -> Result<()> {
        self.get(topic, partition)?.log.fail_for_test();
        Ok(())
    }

    /// Since when a partition has been closed for a reopen (after a failed fsync) that has not
    /// succeeded yet; `None` when it is open or was never reopened. The caller that leads it
    /// decides when to give it up to another node.
    pub fn reopen_pending_since(&self, topic: &str, partition: u32) -> Option<std::time::Instant> {
        self.inner
            .reopening
            .lock()
            .expect("reopening lock poisoned")
            .get(&PartitionId::new(topic, partition))
            .map(|(_, since)| *since)
    }

    /// Sets a partition's cold retention (applied by background work).
    pub fn set_cold_retention(&self, topic: &str, partition: u32, r: ColdRetention) -> Result<()> {
        let p = self.get(topic, partition)?;
        *p.retention.write().expect("retention lock poisoned") = r;
        Ok(())
    }

    /// Waits until every offset below `end` is committed to the cold tier (acks=all).
    ///
    /// Group commit: requests do not make an object each. The uploader cuts the active segment
    /// (commits what it holds without sealing it) when someone waits, fewer than
    /// `uploads_in_flight` uploads are in flight, and the partition's planned cut has come
    /// (about `flush_interval_ms` after its last one; see `cold::upload`); otherwise later
    /// records accumulate and go up together in the next cut. So latency is about one upload
    /// when the partition is quiet and typically up to the interval plus one PUT under load,
    /// and the number of objects made for waiters is bounded by the interval, not the request
    /// rate.
    pub async fn wait_committed(&self, topic: &str, partition: u32, end: i64) -> Result<()> {
        let p = self.get(topic, partition)?;
        p.commit_wanted.fetch_max(end, Ordering::AcqRel);
        p.notify.notify_one();
        self.until_committed(&p, end).await
    }

    /// Seals the active segment of a partition and waits until everything appended before this
    /// call is committed to the cold tier.
    pub async fn flush(&self, topic: &str, partition: u32) -> Result<()> {
        let p = self.get(topic, partition)?;
        let target = p.log.next_offset();
        let log = p.log.clone();
        blocking(move || log.seal_active(true).map(|_| ())).await?;
        p.notify.notify_one();
        self.until_committed(&p, target).await
    }

    /// Waits for the cold tier to reach `end`, or for the reason it never will (fenced, uploads
    /// stopped, shutting down).
    async fn until_committed(&self, p: &Arc<Partition>, end: i64) -> Result<()> {
        let mut p = p.clone();
        loop {
            if self.inner.cancel.is_cancelled() {
                return Err(Error::Closed);
            }
            if p.cancel.is_cancelled() {
                // Closed: a reopen at the same epoch (after a failed fsync) uploads the same
                // records again, so wait on it; otherwise the caller must ask the new leader.
                match self.partition(&p.id) {
                    Ok(now) if !Arc::ptr_eq(&now, &p) && now.epoch == p.epoch => {
                        now.commit_wanted.fetch_max(end, Ordering::AcqRel);
                        now.notify.notify_one();
                        p = now;
                    }
                    _ if self
                        .inner
                        .reopening
                        .lock()
                        .expect("reopening lock poisoned")
                        .contains_key(&p.id) =>
                    {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    _ => return Err(Error::Closed),
                }
            }
            let committed = p.committed.notified();
            if p.log.uploaded_next() >= end {
                return Ok(());
            }
            p.check_fenced()?;
            if let Some(e) = p
                .upload_error
                .read()
                .expect("upload error lock poisoned")
                .clone()
            {
                return Err(Error::Corrupt {
                    location: p.id.to_string(),
                    position: p.log.uploaded_next() as u64,
                    reason: format!("uploads stopped: {e}"),
                });
            }
            if self.inner.cancel.is_cancelled() {
                return Err(Error::Closed);
            }
            // The notification covers commits; the timeout covers fencing, stopped uploads and
            // closing.
            let _ = tokio::time::timeout(Duration::from_millis(100), committed).await;
        }
    }

    /// Flushes every partition (see [`Tier::flush`]).
    pub async fn flush_all(&self) -> Result<()> {
        for id in self.partitions() {
            self.flush(&id.topic, id.partition).await?;
        }
        Ok(())
    }

    /// fsyncs every partition's active segment now.
    pub async fn sync_all(&self) -> Result<()> {
        let parts = self.inner.all();
        blocking(move || {
            for p in parts {
                p.log.flush()?;
            }
            Ok(())
        })
        .await
    }

    /// Commits a cold retention cut now (normally done by background work): removes every whole
    /// segment below `start_offset` from the manifest, then deletes their objects.
    pub async fn truncate_cold(
        &self,
        topic: &str,
        partition: u32,
        start_offset: i64,
    ) -> Result<u64> {
        let p = self.get(topic, partition)?;
        retention::truncate_cold(&p, start_offset, retention::Cut::Segments).await
    }

    /// Deletes the records below `before` (Kafka's DeleteRecords): waits until the cold tier
    /// holds them, then commits `before` as the log start. Offsets below it are out of range
    /// from then on; whole segments below it are deleted, one it cuts through stays until a
    /// later cut passes it. Returns the log start, which never moves back (a `before` at or
    /// below it changes nothing).
    pub async fn delete_records(&self, topic: &str, partition: u32, before: i64) -> Result<i64> {
        let p = self.get(topic, partition)?;
        let next = p.log.next_offset();
        if before > next {
            return Err(Error::OffsetOutOfRange {
                topic: topic.to_string(),
                partition,
                offset: before,
                start: log_start(&p.cold(), p.log.start_offset()),
                end: next,
            });
        }
        self.wait_committed(topic, partition, before).await?;
        retention::truncate_cold(&p, before, retention::Cut::Exact).await?;
        Ok(log_start(&p.cold(), p.log.start_offset()))
    }

    /// Collects a led partition's garbage older than `grace` now (normally done by housekeeping
    /// every `gc_interval_ms`; see `cold::gc`); with `dry_run`, only lists it.
    pub async fn collect_garbage(
        &self,
        topic: &str,
        partition: u32,
        grace: Duration,
        dry_run: bool,
    ) -> Result<GcReport> {
        let p = self.get(topic, partition)?;
        crate::cold::gc::collect(&p, grace, dry_run).await
    }

    /// Runs the merges due on a led partition now, whatever the schedule (see `cold::merge`),
    /// until none is due. Returns how many were committed.
    pub async fn merge_now(&self, topic: &str, partition: u32) -> Result<u64> {
        let p = self.get(topic, partition)?;
        let policy = crate::cold::merge::Policy::of(&self.inner.cfg);
        let status = || {
            p.merge_status
                .read()
                .expect("merge status lock poisoned")
                .clone()
        };
        let before = status();
        // Until none is due, or one is given up (the segments changed under it).
        while crate::cold::merge::merge_once(&self.inner.jobs, &p, policy).await?
            && status().abandoned == before.abandoned
        {}
        Ok(status().merges - before.merges)
    }

    /// Runs a key compaction pass of a led partition of a compacted topic now, whatever the
    /// schedule and the dirty ratio (see `cold::compact`); then, with `until_done`, more passes
    /// until nothing is left to compact (a key set larger than the key map takes several).
    /// `None` when the partition is not compacted or nothing is to be done.
    pub async fn compact_now(
        &self,
        topic: &str,
        partition: u32,
        until_done: bool,
    ) -> Result<Option<crate::cold::compact::CompactReport>> {
        let p = self.get(topic, partition)?;
        let Some(c) = p.retention.read().expect("retention lock poisoned").compact else {
            return Ok(None);
        };
        let mut total: Option<crate::cold::compact::CompactReport> = None;
        loop {
            let Some(r) = crate::cold::compact::compact_once(&self.inner.jobs, &p, c, true).await?
            else {
                return Ok(total);
            };
            let before = total.as_ref().map(|t| t.below);
            let t = total.get_or_insert_with(Default::default);
            t.inputs += r.inputs;
            t.outputs += r.outputs;
            t.removed += r.removed;
            t.kept = r.kept;
            t.below = r.below;
            t.abandoned |= r.abandoned;
            // Done when asked for one pass, when it was given up, or when it moved nothing.
            if !until_done || r.abandoned || before == Some(r.below) || r.inputs == 0 {
                return Ok(total);
            }
        }
    }

    /// What merging found and did on a led partition.
    pub fn merge_status(&self, topic: &str, partition: u32) -> Result<crate::MergeStatus> {
        let p = self.get(topic, partition)?;
        let mut st = p
            .merge_status
            .read()
            .expect("merge status lock poisoned")
            .clone();
        st.compacted_below = p.cold().compacted_below();
        Ok(st)
    }

    /// Bytes of decoded cold data held by the read cache.
    pub async fn cache_bytes(&self) -> u64 {
        self.inner.cache.cached_bytes().await
    }

    /// Cold row-group reads answered from the read cache, and those that loaded from the
    /// object store (a read-ahead's load counts as a miss, the read it served as a hit).
    pub fn cache_hits_and_misses(&self) -> (u64, u64) {
        self.inner.cache.hits_and_misses()
    }

    /// Bytes of hot segments on local disk, over all partitions.
    pub fn hot_bytes(&self) -> u64 {
        self.inner.hot_bytes.load(Ordering::Acquire)
    }

    /// Graceful shutdown: seals and uploads every partition (unless `upload` is false), syncs,
    /// and stops background work.
    pub async fn close(&self, upload: bool) -> Result<()> {
        let flushed = if upload {
            self.flush_all().await
        } else {
            Ok(())
        };
        let synced = self.sync_all().await;
        self.inner.cancel.cancel();
        self.inner.jobs.tasks.close();
        self.inner.jobs.tasks.wait().await;
        flushed.and(synced)
    }

    /// Stops background work without sealing or uploading (as if the process died, minus the
    /// page cache). For tests.
    pub async fn abort(&self) {
        self.inner.cancel.cancel();
        self.inner.jobs.tasks.close();
        self.inner.jobs.tasks.wait().await;
    }
}

// Background housekeeping: interval fsync, age-based sealing, hot retention and back-pressure
// relief, reopens after a failed fsync; per partition, the cold jobs (retention, merging,
// garbage collection).

fn spawn_housekeeping(inner: &Arc<Inner>) {
    if let FsyncPolicy::Interval { ms } = inner.cfg.fsync {
        let inner2 = inner.clone();
        inner.jobs.tasks.spawn(async move {
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
    inner.jobs.tasks.spawn(async move {
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
    inner.jobs.tasks.spawn(async move {
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
        if let Err(e) = retention::cold_retention(&p).await {
            tracing::warn!(topic = %p.id.topic, partition = p.id.partition, error = %e, "cold retention failed");
        }
        let compacted = p
            .retention
            .read()
            .expect("retention lock poisoned")
            .compact
            .is_some();
        if inner.cfg.merge_enabled || compacted {
            let interval = Duration::from_millis(inner.cfg.merge_interval_ms);
            let due = {
                let mut st = p.merge_status.write().expect("merge status lock poisoned");
                let due = !st.running && st.last_run.is_none_or(|at| at.elapsed() >= interval);
                if due {
                    st.running = true;
                    st.last_run = Some(std::time::Instant::now());
                }
                due
            };
            if due {
                inner
                    .jobs
                    .tasks
                    .spawn(crate::cold::merge::run(inner.jobs.clone(), p.clone()));
            }
        }
        let grace = Duration::from_millis(inner.cfg.orphan_grace_ms);
        let every = Duration::from_millis(inner.cfg.gc_interval_ms);
        let due = {
            let mut at = p.collected_at.lock().expect("collect lock poisoned");
            let due = at.elapsed() >= every;
            if due {
                *at = std::time::Instant::now();
            }
            due
        };
        if due && let Err(e) = crate::cold::gc::collect(&p, grace, false).await {
            tracing::warn!(topic = %p.id.topic, partition = p.id.partition, error = %e, "garbage collection failed");
        }
    }
}

/// The first offset of the log: the cold start when the cold tier holds anything; otherwise the
/// hot start, but never below a cold retention cut (hot copies below it count as deleted).
fn log_start(cold: &ManifestState, hot_start: i64) -> i64 {
    if cold.next_offset > cold.start_offset {
        cold.start_offset
    } else {
        cold.start_offset.max(hot_start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> RecordBatch {
        let mut b = crate::batch::BatchBuilder::new(crate::batch::Compression::None);
        for i in 0..n {
            b.push(i as i64, None, Some(b"v"), &[]);
        }
        b.build().unwrap()
    }

    /// A tier under `dir` (hot tier and a file-system bucket) that cuts records nobody waits
    /// for once they are `upload_interval_ms` old.
    async fn local_tier(dir: &std::path::Path, upload_interval_ms: u64) -> Tier {
        let bucket = dir.join("bucket");
        let (store, _) = crate::store::open_store(bucket.to_str().unwrap(), &[]).unwrap();
        let cfg = TierConfig {
            data_dir: dir.join("hot"),
            upload_interval_ms,
            ..TierConfig::default()
        };
        Tier::open(cfg, store, Path::from("c")).await.unwrap()
    }

    /// Appends to partition 0 of `t` until one succeeds (the partition is being reopened).
    async fn append_when_back(t: &Tier) -> crate::AppendResult {
        for _ in 0..500 {
            match t.append("t", 0, batch(10)).await {
                Ok(r) => return r,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
        panic!("the partition never took appends again");
    }

    /// After a failed fsync a partition refuses appends; housekeeping reopens it from disk at
    /// its epoch and appends resume where the log ended, with every record still readable. An
    /// acks=all waiter from before is answered by the reopened partition; a reopen that fails
    /// (the store cannot be read) is tried again until it succeeds.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_partition_whose_fsync_failed_is_reopened_and_takes_appends_again() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = dir.path().join("bucket");
        let (inner, _) = crate::store::open_store(bucket.to_str().unwrap(), &[]).unwrap();
        let store = Arc::new(crate::store::Decorated::new(inner));
        let cfg = TierConfig {
            data_dir: dir.path().join("hot"),
            housekeeping_ms: 50,
            upload_retry_initial_ms: 10,
            upload_retry_max_ms: 50,
            ..TierConfig::default()
        };
        let t = Tier::open(cfg, store.clone(), Path::from("c"))
            .await
            .unwrap();
        t.open_partition("t", 0, 3).await.unwrap();
        let id = PartitionId::new("t", 0);
        // Records the store cannot take yet, and someone waiting for them at acks=all.
        store.faults.fail_puts.store(true, Ordering::SeqCst);
        for _ in 0..5 {
            t.append("t", 0, batch(10)).await.unwrap();
        }
        let waiter = {
            let t = t.clone();
            tokio::spawn(async move { t.wait_committed("t", 0, 50).await })
        };
        let before = t.partition(&id).unwrap();
        before.log.fail_for_test();
        let err = t.append("t", 0, batch(10)).await.unwrap_err();
        assert!(err.to_string().contains("fsync failed"), "{err}");
        assert_eq!(append_when_back(&t).await.base_offset, 50);
        let after = t.partition(&id).unwrap();
        assert!(!Arc::ptr_eq(&before, &after), "reopened");
        assert_eq!(after.epoch, 3);
        store.faults.fail_puts.store(false, Ordering::SeqCst);
        tokio::time::timeout(Duration::from_secs(20), waiter)
            .await
            .expect("the waiter is answered by the reopened partition")
            .unwrap()
            .unwrap();

        // A reopen that cannot read the manifest leaves the partition closed, and is tried
        // again until the store is back.
        store.faults.fail_gets.store(true, Ordering::SeqCst);
        after.log.fail_for_test();
        for _ in 0..500 {
            if t.partition(&id).is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(t.partition(&id).is_err(), "closed while the reopen fails");
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            t.partition(&id).is_err(),
            "still closed: the store cannot be read"
        );
        store.faults.fail_gets.store(false, Ordering::SeqCst);
        assert_eq!(append_when_back(&t).await.base_offset, 60);
        let mut next = 0;
        for _ in 0..100 {
            if next == 70 {
                break;
            }
            let got = t.read("t", 0, next, 1 << 20).await.unwrap();
            for rec in got.records {
                assert_eq!(rec.offset, next);
                next += 1;
            }
        }
        assert_eq!(next, 70, "every record is still there");
        t.close(false).await.unwrap();
    }

    /// Regression: at acks=leader nothing reached the object store until the segment sealed by
    /// size or age (128 MiB or 10 minutes), so a takeover lost everything since. Now records
    /// that nobody waits for are committed once they are `upload_interval_ms` old, without a
    /// seal, and records appended after a cut are committed by the next one.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_nobody_waits_for_are_committed_within_the_upload_interval() {
        let dir = tempfile::tempdir().unwrap();
        let t = local_tier(dir.path(), 100).await;
        t.open_partition("t", 0, 1).await.unwrap();
        let committed = |want: i64| {
            let t = t.clone();
            async move {
                for _ in 0..1000 {
                    let o = t.offsets("t", 0).unwrap();
                    if o.cold_next >= want {
                        return o;
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                panic!(
                    "offsets below {want} were never committed: {:?}",
                    t.offsets("t", 0)
                );
            }
        };
        for _ in 0..3 {
            t.append("t", 0, batch(10)).await.unwrap();
        }
        let o = committed(30).await;
        assert_eq!(o.next, 30);
        t.append("t", 0, batch(5)).await.unwrap();
        let o = committed(35).await;
        assert_eq!(o.cold_segments, 2, "two cuts, no seal: {o:?}");
        assert_eq!(
            o.hot_start, 0,
            "the active segment was not sealed and dropped"
        );
        t.close(false).await.unwrap();
    }

    /// The upload lag dates the oldest record not yet in the object store: it grows while
    /// records wait, a newer append does not make it younger, and a commit clears it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn upload_lag_is_the_age_of_the_oldest_record_not_committed() {
        let dir = tempfile::tempdir().unwrap();
        let t = local_tier(dir.path(), 600_000).await;
        t.open_partition("t", 0, 1).await.unwrap();
        assert_eq!(t.offsets("t", 0).unwrap().upload_lag, Duration::ZERO);
        let first = std::time::Instant::now();
        t.append("t", 0, batch(10)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        t.append("t", 0, batch(10)).await.unwrap();
        let o = t.offsets("t", 0).unwrap();
        assert!(o.upload_lag >= Duration::from_millis(300), "{o:?}");
        t.flush("t", 0).await.unwrap();
        let o = t.offsets("t", 0).unwrap();
        assert_eq!((o.cold_next, o.upload_lag), (20, Duration::ZERO), "{o:?}");
        t.append("t", 0, batch(1)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let o = t.offsets("t", 0).unwrap();
        // The new record arrived at least 300 ms after the first one.
        assert!(
            o.upload_lag >= Duration::from_millis(50)
                && o.upload_lag <= first.elapsed() - Duration::from_millis(300),
            "dated by the new record, not the committed ones: {o:?}"
        );
        t.close(false).await.unwrap();
    }

    /// Damage inside a cold segment's data is a clear error naming the object and row group
    /// (its row-group CRC), not other values; the undamaged history around it still reads.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn damage_inside_a_segment_is_a_checksum_error() {
        use object_store::ObjectStoreExt;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = crate::store::open_store("memory://", &[]).unwrap();
        let cfg = TierConfig {
            data_dir: dir.path().join("hot"),
            ..TierConfig::default()
        };
        let t = Tier::open(cfg.clone(), store.clone(), Path::from("c"))
            .await
            .unwrap();
        t.open_partition("t", 0, 1).await.unwrap();
        for _ in 0..2 {
            t.append("t", 0, batch(100)).await.unwrap();
            t.flush("t", 0).await.unwrap();
        }
        let (_, segments) = t.cold_segments("t", 0, false).await.unwrap();
        t.close(false).await.unwrap();
        assert_eq!(segments.len(), 2);
        // Flip one bit in the first segment's first column chunk (data starts after the 4-byte
        // magic; the footer is at the end).
        let (path, _) = &segments[0];
        let mut bytes = store
            .get(path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        bytes[10] ^= 0x10;
        store.put(path, bytes.into()).await.unwrap();
        let reader = Tier::open(
            TierConfig {
                data_dir: dir.path().join("reader"),
                ..cfg
            },
            store,
            Path::from("c"),
        )
        .await
        .unwrap();
        let e = reader.read_committed("t", 0, 0, 1 << 20).await.unwrap_err();
        assert!(
            e.to_string().contains("checksum mismatch")
                && e.to_string().contains(&path.to_string()),
            "{e}"
        );
        let after = reader.read_committed("t", 0, 100, 1 << 20).await.unwrap();
        assert_eq!(after.records.len(), 100, "the other segment reads");
        reader.abort().await;
    }

    /// A segment whose footer was damaged in a way that still parses (here: the name of its
    /// row-group CRC entry, so a reader without the footer's digest would skip the CRCs) and
    /// whose data was damaged too reads back as an error, never as other values: the footer's
    /// digest is in the segment's manifest entry. Every data byte is flipped in turn.
    #[tokio::test]
    async fn damage_to_a_footer_that_still_parses_is_a_checksum_error() {
        use object_store::ObjectStoreExt;
        let dir = tempfile::tempdir().unwrap();
        let (store, _) = crate::store::open_store("memory://", &[]).unwrap();
        let cfg = TierConfig {
            data_dir: dir.path().join("hot"),
            ..TierConfig::default()
        };
        let t = Tier::open(cfg.clone(), store.clone(), Path::from("c"))
            .await
            .unwrap();
        t.open_partition("t", 0, 1).await.unwrap();
        let mut b = crate::batch::BatchBuilder::new(crate::batch::Compression::None);
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for i in 0..64i64 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let v = format!("value-{x:016x}");
            b.push(1_700_000_000_000 + i, Some(b"k"), Some(v.as_bytes()), &[]);
        }
        t.append("t", 0, b.build().unwrap()).await.unwrap();
        t.flush("t", 0).await.unwrap();
        let want = t.read_committed("t", 0, 0, 1 << 20).await.unwrap().records;
        let (_, segments) = t.cold_segments("t", 0, false).await.unwrap();
        t.close(false).await.unwrap();
        let (path, _) = &segments[0];
        let good = store
            .get(path)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
        let n = good.len();
        let footer_len = u32::from_le_bytes(good[n - 8..n - 4].try_into().unwrap()) as usize;
        let footer_start = n - 8 - footer_len;
        let key = crate::cold::parquet::ROW_GROUP_CRC_KEY.as_bytes();
        let at = good
            .windows(key.len())
            .rposition(|w| w == key)
            .expect("the row-group CRC entry is in the footer");
        let mut renamed = good.clone();
        renamed[at] ^= 0x20; // "tierlog." -> "Tierlog."
        let (mut errors, mut same, mut other) = (0, 0, Vec::new());
        for i in 4..footer_start {
            let mut bytes = renamed.clone();
            bytes[i] ^= 1 << (i % 8);
            store.put(path, bytes.into()).await.unwrap();
            let reader = Tier::open(
                TierConfig {
                    data_dir: dir.path().join(format!("reader-{i}")),
                    ..cfg.clone()
                },
                store.clone(),
                Path::from("c"),
            )
            .await;
            let got = match reader {
                Err(_) => None,
                Ok(r) => {
                    let got = r.read_committed("t", 0, 0, 1 << 20).await.ok();
                    r.abort().await;
                    got
                }
            };
            match got {
                None => errors += 1,
                Some(g) if g.records == want => same += 1,
                Some(_) => other.push(i),
            }
        }
        assert!(
            other.is_empty(),
            "damage at data bytes {other:?} read back as other values ({errors} errors, {same} unchanged)"
        );
        assert!(
            errors > 0,
            "no damage was detected ({same} reads unchanged)"
        );
        store.put(path, good.into()).await.unwrap();
    }

    /// Opening and closing many partitions leaves no gates behind but the last one used.
    #[tokio::test]
    async fn gates_do_not_pile_up() {
        let dir = tempfile::tempdir().unwrap();
        let bucket = dir.path().join("bucket");
        let (store, _) = crate::store::open_store(bucket.to_str().unwrap(), &[]).unwrap();
        let cfg = TierConfig {
            data_dir: dir.path().join("hot"),
            ..TierConfig::default()
        };
        let t = Tier::open(cfg, store, Path::from("c")).await.unwrap();
        for p in 0..20 {
            t.open_partition("t", p, 1).await.unwrap();
            t.close_partition("t", p).await.unwrap();
        }
        assert_eq!(t.inner.gates.lock().unwrap().len(), 1);
        t.close(false).await.unwrap();
    }
}
