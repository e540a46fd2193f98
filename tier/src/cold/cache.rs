//! The cold read cache: Parquet footers and decoded row groups, bounded in bytes.
//!
//! Row groups are fetched with range reads and decoded once. When the object's footer holds
//! row-group CRCs (`tierlog.row_group_crc32c`), a row group's bytes are fetched with one GET and
//! checked before they are decoded, so damage is an error naming the object and row group, not
//! other values. Concurrent requests for the same row group share
//! one load (moka's `try_get_with`), so N readers replaying the same history cost one GET.
//! Read-ahead is a background `row_group` call for what a sequential reader wants next.
//!
//! Invariant: a cached row group of segment object `path` holds its rows in offset order. In a
//! dense segment row group `i` starts at `segment base + rows in row groups before i`; in a
//! compacted one (offsets with gaps) the row groups' offset statistics say where each ends.

use std::sync::Arc;

use std::ops::Range;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::{FutureExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ParquetRecordBatchStreamBuilder;
use parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
use parquet::arrow::async_reader::AsyncFileReader;
use parquet::errors::ParquetError;
use parquet::file::metadata::{ParquetMetaData, ParquetMetaDataReader};
use parquet::file::statistics::Statistics;

use crate::batch::Record;
use crate::cold::manifest::unwrap_shared;
use crate::cold::parquet::{RowGroupChecks, check_footer, to_records};
use crate::error::{Error, Result};

/// The decoded rows of one row group.
#[derive(Debug)]
pub struct RowGroup {
    pub records: Vec<Record>,
    pub bytes: usize,
}

/// Reads a Parquet object of known size with range GETs.
#[derive(Debug, Clone)]
pub(crate) struct StoreReader {
    pub store: Arc<dyn ObjectStore>,
    pub path: Path,
    pub size: u64,
}

fn store_err(e: object_store::Error) -> ParquetError {
    ParquetError::External(Box::new(e))
}

impl AsyncFileReader for StoreReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        async move {
            self.store
                .get_range(&self.path, range)
                .await
                .map_err(store_err)
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        async move {
            self.store
                .get_ranges(&self.path, &ranges)
                .await
                .map_err(store_err)
        }
        .boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        async move {
            let size = self.size;
            let m = ParquetMetaDataReader::new()
                .with_arrow_reader_options(options)
                .with_prefetch_hint(Some(64 << 10))
                .load_and_finish(self, size)
                .await?;
            Ok(Arc::new(m))
        }
        .boxed()
    }
}

#[derive(Clone)]
pub(crate) struct ColdCache {
    store: Arc<dyn ObjectStore>,
    rows: moka::future::Cache<(Path, usize), Arc<RowGroup>>,
    meta: moka::future::Cache<Path, ArrowReaderMetadata>,
    /// Row-group loads running at once (one per core): decoding is CPU-bound, so more would
    /// only add transient buffers (compressed chunks, decompressed pages) to resident memory.
    loads: Arc<tokio::sync::Semaphore>,
    /// Row-group reads answered from the cache, and reads that loaded from the store.
    hits: Arc<std::sync::atomic::AtomicU64>,
    misses: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for ColdCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ColdCache")
            .field("row_groups", &self.rows.entry_count())
            .field("bytes", &self.rows.weighted_size())
            .finish()
    }
}

fn pq(context: &str) -> impl FnOnce(parquet::errors::ParquetError) -> Error + '_ {
    move |source| Error::Parquet {
        context: context.to_string(),
        source,
    }
}

impl ColdCache {
    pub fn new(store: Arc<dyn ObjectStore>, capacity_bytes: u64) -> Self {
        let rows = moka::future::Cache::builder()
            .max_capacity(capacity_bytes)
            // Plain LRU: readers replay row groups in order, each read several times in a row
            // (one fetch per chunk). Frequency-based admission would turn away each new row
            // group in favour of ones already read through, and load it again on every fetch.
            .eviction_policy(moka::policy::EvictionPolicy::lru())
            .weigher(|_k: &(Path, usize), v: &Arc<RowGroup>| {
                // Payload plus each decoded record's own struct (offsets, `Bytes` handles, headers).
                let per_record = std::mem::size_of::<Record>() + 16;
                u32::try_from(v.bytes + per_record * v.records.len()).unwrap_or(u32::MAX)
            })
            .build();
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ColdCache {
            store,
            rows,
            meta: moka::future::Cache::builder().max_capacity(4096).build(),
            loads: Arc::new(tokio::sync::Semaphore::new(cores)),
            hits: Arc::default(),
            misses: Arc::default(),
        }
    }

    /// The footer of a cold segment object of `size` bytes, checked against the manifest
    /// entry's `digest` when it has one (damage that still parses is [`Error::Corrupt`]).
    pub async fn metadata(
        &self,
        path: &Path,
        size: u64,
        digest: Option<u32>,
    ) -> Result<ArrowReaderMetadata> {
        let store = self.store.clone();
        let p = path.clone();
        self.meta
            .try_get_with(path.clone(), async move {
                let mut reader = StoreReader {
                    store,
                    path: p,
                    size,
                };
                // The schema is ours and fixed: the Arrow schema a file embeds is not read, so a
                // damaged one cannot reach its decoder (which panics on some damage).
                let opts = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
                let location = reader.path.to_string();
                let loc = location.clone();
                decoded(&location, 0, async move {
                    let m = ArrowReaderMetadata::load_async(&mut reader, opts)
                        .await
                        .map_err(pq("reading footer"))?;
                    check_footer(m.metadata(), digest).map_err(|reason| Error::Corrupt {
                        location: loc,
                        position: 0,
                        reason,
                    })?;
                    Ok(m)
                })
                .await
            })
            .await
            .map_err(unwrap_shared)
    }

    /// Decoded rows of row group `rg` of a cold segment (`digest`: its footer's, as the
    /// manifest entry holds it).
    pub async fn row_group(
        &self,
        path: &Path,
        size: u64,
        digest: Option<u32>,
        rg: usize,
    ) -> Result<Arc<RowGroup>> {
        let meta = self.metadata(path, size, digest).await?;
        let store = self.store.clone();
        let p = path.clone();
        let loads = self.loads.clone();
        let entry = self
            .rows
            .entry((path.clone(), rg))
            .or_try_insert_with(async move {
                let _load = loads.acquire_owned().await.map_err(|_| Error::Closed)?;
                let location = p.to_string();
                let reader = StoreReader {
                    store,
                    path: p,
                    size,
                };
                decoded(&location, rg as u64, async move {
                    let reader = checked_row_group(reader, &meta, rg).await?;
                    let mut stream =
                        ParquetRecordBatchStreamBuilder::new_with_metadata(reader, meta)
                            .with_row_groups(vec![rg])
                            .with_batch_size(8192)
                            .build()
                            .map_err(pq("opening row group"))?;
                    let mut records = Vec::new();
                    while let Some(b) = stream.try_next().await.map_err(pq("decoding row group"))? {
                        to_records(&b, &mut records)?;
                    }
                    let bytes = records.iter().map(Record::payload_len).sum();
                    Ok::<_, Error>(Arc::new(RowGroup { records, bytes }))
                })
                .await
            })
            .await
            .map_err(unwrap_shared)?;
        // Evict now rather than on the cache's own schedule: entries are megabytes each, and a
        // replay inserts them back to back, so lazy eviction would overshoot the budget.
        let counter = if entry.is_fresh() {
            self.rows.run_pending_tasks().await;
            &self.misses
        } else {
            &self.hits
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(entry.into_value())
    }

    /// Starts loading a row group in the background if it is not cached.
    pub fn prefetch(&self, path: Path, size: u64, digest: Option<u32>, rg: usize) {
        if self.rows.contains_key(&(path.clone(), rg)) {
            return;
        }
        let this = self.clone();
        tokio::spawn(async move {
            if let Err(e) = this.row_group(&path, size, digest, rg).await {
                tracing::debug!(path = %path, row_group = rg, error = %e, "read-ahead failed");
            }
        });
    }

    pub async fn cached_bytes(&self) -> u64 {
        self.rows.run_pending_tasks().await;
        self.rows.weighted_size()
    }

    /// Row-group reads answered from the cache, and those that loaded from the store, since
    /// the cache was made.
    pub fn hits_and_misses(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (self.hits.load(Relaxed), self.misses.load(Relaxed))
    }
}

/// A reader of row group `rg` of the object `reader` reads: when the footer holds row-group
/// CRCs, the row group's bytes are fetched with one GET, checked against its CRC (damage is
/// [`Error::Corrupt`] naming the object and row group) and served from memory; otherwise reads
/// go to the store unchecked (objects written before the CRCs).
async fn checked_row_group(
    reader: StoreReader,
    meta: &ArrowReaderMetadata,
    rg: usize,
) -> Result<RangeReader> {
    let md = meta.metadata();
    let corrupt = |reason: String| Error::Corrupt {
        location: reader.path.to_string(),
        position: rg as u64,
        reason,
    };
    let Some(checks) = RowGroupChecks::of(md, reader.size).map_err(corrupt)? else {
        return Ok(RangeReader { held: None, reader });
    };
    let range = checks
        .range(rg)
        .ok_or_else(|| corrupt(format!("no row group {rg}")))?;
    let bytes = reader
        .store
        .get_range(&reader.path, range.clone())
        .await
        .map_err(Error::from)?;
    checks.check(rg, &bytes).map_err(corrupt)?;
    Ok(RangeReader {
        held: Some((range.start, bytes)),
        reader,
    })
}

/// Serves reads inside the held (checked) range from memory, others from the store.
struct RangeReader {
    held: Option<(u64, Bytes)>,
    reader: StoreReader,
}

impl RangeReader {
    fn slice(&self, range: &Range<u64>) -> Option<Bytes> {
        let (start, bytes) = self.held.as_ref()?;
        let from = range.start.checked_sub(*start)?;
        let to = range.end.checked_sub(*start)?;
        (to <= bytes.len() as u64 && from <= to).then(|| bytes.slice(from as usize..to as usize))
    }
}

impl AsyncFileReader for RangeReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, parquet::errors::Result<Bytes>> {
        match self.slice(&range) {
            Some(b) => futures::future::ready(Ok(b)).boxed(),
            None => self.reader.get_bytes(range),
        }
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, parquet::errors::Result<Vec<Bytes>>> {
        let held: Option<Vec<Bytes>> = ranges.iter().map(|r| self.slice(r)).collect();
        match held {
            Some(all) => futures::future::ready(Ok(all)).boxed(),
            None => self.reader.get_byte_ranges(ranges),
        }
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, parquet::errors::Result<Arc<ParquetMetaData>>> {
        self.reader.get_metadata(options)
    }
}

/// Runs a decode of object `location` (row group `position`), turning a panic of the Parquet
/// decoder into [`Error::Corrupt`]: the decoder panics on some damaged data (found by fuzzing),
/// and a damaged object must be a clear error naming it, not a request that dies.
async fn decoded<T>(
    location: &str,
    position: u64,
    decode: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match std::panic::AssertUnwindSafe(decode).catch_unwind().await {
        Ok(r) => r,
        Err(panic) => {
            let why = panic
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| panic.downcast_ref::<&str>().copied())
                .unwrap_or("no message");
            Err(Error::Corrupt {
                location: location.to_string(),
                position,
                reason: format!("the Parquet decoder failed on damaged data: {why}"),
            })
        }
    }
}

/// The row group holding `offset` (or, in a compacted segment, the first record after it) in
/// segment `seg`. A dense segment (one record per offset) is found by counting rows; a
/// compacted one by the row groups' offset statistics. `None` past its last record.
pub(crate) fn locate(
    meta: &ArrowReaderMetadata,
    seg: &crate::cold::manifest::SegmentEntry,
    offset: i64,
) -> std::result::Result<Option<usize>, String> {
    let md = meta.metadata();
    if seg.is_dense() {
        let mut first = seg.base_offset;
        for (i, rg) in md.row_groups().iter().enumerate() {
            let next = first + rg.num_rows();
            if offset < next {
                return Ok(Some(i));
            }
            first = next;
        }
        return Ok(None);
    }
    let schema = md.file_metadata().schema_descr();
    let col = (0..schema.num_columns())
        .find(|&i| schema.column(i).name() == "offset")
        .ok_or("no offset column")?;
    for (i, rg) in md.row_groups().iter().enumerate() {
        match rg.column(col).statistics() {
            Some(Statistics::Int64(s)) => match s.max_opt() {
                Some(&max) if max >= offset => return Ok(Some(i)),
                Some(_) => {}
                None => return Err(format!("row group {i} has no offset statistics")),
            },
            _ if rg.num_rows() == 0 => {}
            _ => return Err(format!("row group {i} has no offset statistics")),
        }
    }
    Ok(None)
}

/// Index of the first row group whose max timestamp is ≥ `ts` (from column statistics; a row
/// group without statistics is assumed to match).
pub(crate) fn first_row_group_at_or_after(meta: &ArrowReaderMetadata, ts: i64) -> Option<usize> {
    let schema = meta.metadata().file_metadata().schema_descr();
    let col = (0..schema.num_columns()).find(|&i| schema.column(i).name() == "timestamp")?;
    meta.metadata()
        .row_groups()
        .iter()
        .position(|rg| match rg.column(col).statistics() {
            Some(Statistics::Int64(s)) => s.max_opt().is_none_or(|&m| m >= ts),
            _ => true,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A decoder that panics on damaged data yields a corruption error naming the object and
    /// row group; a decode that returns passes through.
    #[tokio::test]
    async fn a_decoder_panic_is_a_corruption_error() {
        let e = decoded::<()>("c/t/0/log/1.parquet", 3, async {
            panic!("bad page header")
        })
        .await
        .unwrap_err();
        match e {
            Error::Corrupt {
                location,
                position,
                reason,
            } => {
                assert_eq!((location.as_str(), position), ("c/t/0/log/1.parquet", 3));
                assert!(reason.contains("bad page header"), "{reason}");
            }
            other => panic!("not a corruption error: {other}"),
        }
        assert_eq!(decoded("x", 0, async { Ok(7) }).await.unwrap(), 7);
    }
}
