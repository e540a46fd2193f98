//! The SQL scan reads segments with DataFusion's Parquet reader; this is the reader it is given,
//! so SQL checks what tierlog's own cold reads check: the footer against the digest in the
//! segment's manifest entry, and every row group's bytes against its CRC before any of them
//! reach the decoder. A damaged segment fails the query with an error naming the object and
//! row group; it never answers with other values.
//!
//! Invariants: a byte inside a column chunk is handed to the decoder only from a copy of the
//! whole chunk whose CRC matched (the whole row group for segments written before column-chunk
//! CRCs); bytes outside every row group (the footer, the page index) come from the store as
//! asked. A narrow scan thus reads only its columns' chunks, whole (page pruning inside a chunk
//! saves decoding, not reading). A reader holds at most [`HELD`] checked pieces, one row
//! group's projected chunks at a time. Segments written before CRCs (or digests) are read
//! without those checks, as the cold read path reads them.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::execution::cache::cache_manager::FileMetadataCache;
use datafusion::parquet::arrow::arrow_reader::ArrowReaderOptions;
use datafusion::parquet::arrow::async_reader::AsyncFileReader;
use datafusion::parquet::errors::ParquetError;
use datafusion::parquet::file::metadata::ParquetMetaData;
use datafusion::physical_plan::metrics::ExecutionPlanMetricsSet;
use futures::FutureExt;
use futures::future::BoxFuture;
use object_store::ObjectStore;
use tier::cold::parquet::{RowGroupChecks, check_footer};

/// Checked pieces (column chunks, or row groups) one reader keeps: DataFusion reads a file's
/// row groups in turn, the filter columns of one and then its other columns.
const HELD: usize = 24;

/// What a segment's manifest entry says about its footer, attached to the scan's file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FooterDigest(pub Option<u32>);

/// Makes checking readers over DataFusion's (footers cached across queries).
#[derive(Debug)]
pub(crate) struct CheckingReaderFactory {
    inner: CachedParquetFileReaderFactory,
}

impl CheckingReaderFactory {
    pub(crate) fn new(store: Arc<dyn ObjectStore>, metadata_cache: Arc<FileMetadataCache>) -> Self {
        CheckingReaderFactory {
            inner: CachedParquetFileReaderFactory::new(store, metadata_cache),
        }
    }
}

impl ParquetFileReaderFactory for CheckingReaderFactory {
    fn create_reader(
        &self,
        partition_index: usize,
        file: PartitionedFile,
        metadata_size_hint: Option<usize>,
        metrics: &ExecutionPlanMetricsSet,
    ) -> datafusion::error::Result<Box<dyn AsyncFileReader + Send>> {
        let digest = file.extension::<FooterDigest>().and_then(|d| d.0);
        let location = file.object_meta.location.to_string();
        let size = file.object_meta.size;
        let inner = self
            .inner
            .create_reader(partition_index, file, metadata_size_hint, metrics)?;
        Ok(Box::new(CheckingReader {
            inner,
            location,
            size,
            digest,
            checks: None,
            held: Vec::new(),
        }))
    }
}

/// Whether the footer was read, and what it says to check.
enum Checks {
    /// A segment without row-group CRCs.
    Unchecked,
    Rows(RowGroupChecks),
}

struct CheckingReader {
    inner: Box<dyn AsyncFileReader + Send>,
    location: String,
    size: u64,
    digest: Option<u32>,
    checks: Option<Checks>,
    /// Checked pieces: (first byte, bytes), newest last.
    held: Vec<(u64, Bytes)>,
}

impl CheckingReader {
    fn corrupt(&self, reason: String) -> ParquetError {
        ParquetError::External(Box::new(tier::Error::Corrupt {
            location: self.location.clone(),
            position: 0,
            reason,
        }))
    }

    async fn metadata(
        &mut self,
        options: Option<&ArrowReaderOptions>,
    ) -> Result<Arc<ParquetMetaData>, ParquetError> {
        let md = self.inner.get_metadata(options).await?;
        if self.checks.is_none() {
            check_footer(&md, self.digest).map_err(|e| self.corrupt(e))?;
            let checks = match RowGroupChecks::of(&md, self.size).map_err(|e| self.corrupt(e))? {
                Some(c) => Checks::Rows(c),
                None => Checks::Unchecked,
            };
            self.checks = Some(checks);
        }
        Ok(md)
    }

    /// The bytes of `range` if a held row group holds them.
    fn held(&self, range: &Range<u64>) -> Option<Bytes> {
        self.held.iter().find_map(|(start, bytes)| {
            let from = range.start.checked_sub(*start)?;
            let to = range.end.checked_sub(*start)?;
            (to <= bytes.len() as u64 && from <= to)
                .then(|| bytes.slice(from as usize..to as usize))
        })
    }

    /// Fetches row group `rg` whole, checks it and holds it.
    async fn hold(&mut self, checks: &RowGroupChecks, rg: usize) -> Result<(), ParquetError> {
        let range = checks
            .range(rg)
            .ok_or_else(|| self.corrupt(format!("no row group {rg}")))?;
        let bytes = self.inner.get_bytes(range.clone()).await?;
        checks.check(rg, &bytes).map_err(|e| self.corrupt(e))?;
        self.keep(range.start, bytes);
        Ok(())
    }

    /// Fetches column chunk `col` of row group `rg` whole, checks it and holds it.
    async fn hold_chunk(
        &mut self,
        checks: &RowGroupChecks,
        rg: usize,
        col: usize,
    ) -> Result<(), ParquetError> {
        let range = checks
            .chunk(rg, col)
            .ok_or_else(|| self.corrupt(format!("no column chunk {col} in row group {rg}")))?;
        let bytes = self.inner.get_bytes(range.clone()).await?;
        checks
            .check_chunk(rg, col, &bytes)
            .map_err(|e| self.corrupt(e))?;
        self.keep(range.start, bytes);
        Ok(())
    }

    fn keep(&mut self, start: u64, bytes: Bytes) {
        if self.held.len() >= HELD {
            self.held.remove(0);
        }
        self.held.push((start, bytes));
    }

    async fn read(&mut self, ranges: Vec<Range<u64>>) -> Result<Vec<Bytes>, ParquetError> {
        if self.checks.is_none() {
            self.metadata(None).await?;
        }
        let checks = match &self.checks {
            Some(Checks::Rows(c)) => c.clone(),
            _ => return self.inner.get_byte_ranges(ranges).await,
        };
        let mut out = Vec::with_capacity(ranges.len());
        for range in ranges {
            if let Some(b) = self.held(&range) {
                out.push(b);
                continue;
            }
            if let Some((rg, col)) = checks.chunk_holding(&range) {
                self.hold_chunk(&checks, rg, col).await?;
                out.push(self.held(&range).expect("the chunk just held"));
                continue;
            }
            match checks.holding(&range) {
                Some(rg) => {
                    self.hold(&checks, rg).await?;
                    out.push(self.held(&range).expect("the row group just held"));
                }
                None => {
                    // Not inside one row group: the footer or page index (bytes the decoder
                    // does not turn into rows), or a span over several, each checked first.
                    for rg in 0.. {
                        let Some(r) = checks.range(rg) else { break };
                        if r.start < range.end && range.start < r.end {
                            self.hold(&checks, rg).await?;
                        }
                    }
                    out.push(self.inner.get_bytes(range).await?);
                }
            }
        }
        Ok(out)
    }
}

impl AsyncFileReader for CheckingReader {
    fn get_bytes(&mut self, range: Range<u64>) -> BoxFuture<'_, Result<Bytes, ParquetError>> {
        async move {
            let mut got = self.read(vec![range]).await?;
            Ok(got.pop().unwrap_or_default())
        }
        .boxed()
    }

    fn get_byte_ranges(
        &mut self,
        ranges: Vec<Range<u64>>,
    ) -> BoxFuture<'_, Result<Vec<Bytes>, ParquetError>> {
        self.read(ranges).boxed()
    }

    fn get_metadata<'a>(
        &'a mut self,
        options: Option<&'a ArrowReaderOptions>,
    ) -> BoxFuture<'a, Result<Arc<ParquetMetaData>, ParquetError>> {
        self.metadata(options).boxed()
    }
}
