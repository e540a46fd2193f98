//! A topic as a table: its committed cold segments (Parquet, read by DataFusion's Parquet scan)
//! plus, when asked, the hot tail after them.
//!
//! Pruning happens twice before any Parquet byte is read: the query's filters are evaluated
//! against each partition (`partition = 3` skips every other manifest), then against each
//! segment's manifest entry (partition, offset range, timestamp range). The Parquet scan then
//! prunes row groups and pages with the files' own statistics on `offset` and `timestamp`.
//!
//! Invariant: filters are reported as inexact, so DataFusion always re-applies them: pruning may
//! only ever skip data that cannot match, never decide a row's fate.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arrow_array::{
    ArrayRef, BooleanArray, Int32Array, Int64Array, RecordBatch, TimestampMillisecondArray,
    UInt64Array,
};
use arrow_schema::SchemaRef;
use async_trait::async_trait;
use datafusion::catalog::Session;
use datafusion::catalog::TableProvider;
use datafusion::common::pruning::PruningStatistics;
use datafusion::common::stats::Precision;
use datafusion::common::{Column, DFSchema, ScalarValue, Statistics};
use datafusion::datasource::TableType;
use datafusion::datasource::listing::PartitionedFile;
use datafusion::datasource::physical_plan::{
    FileGroup, FileScanConfigBuilder, ParquetFileReaderFactory, ParquetSource,
};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::utils::conjunction;
use datafusion::logical_expr::{Expr, TableProviderFilterPushDown, col, lit};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::expressions::Column as PhysicalColumn;
use datafusion::physical_optimizer::pruning::{PruningPredicate, PruningPredicateBuilder};
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::empty::EmptyExec;
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::streaming::{PartitionStream, StreamingTableExec};
use datafusion::physical_plan::union::UnionExec;
use futures::{StreamExt, TryStreamExt};
use tier::cold::manifest::SegmentEntry;

use crate::catalog::{Catalog, ColdView, HotTail};
use crate::verify::FooterDigest;

/// Footer bytes fetched with the first read of a segment (our footers are a few KiB).
const METADATA_SIZE_HINT: usize = 64 << 10;
/// Partitions whose manifests are loaded at once.
const MANIFEST_CONCURRENCY: usize = 16;

/// What the scans of one query touched (segments are objects in the bucket).
#[derive(Debug, Default)]
pub struct ScanCounters {
    pub partitions_total: AtomicU64,
    pub partitions_scanned: AtomicU64,
    pub segments_total: AtomicU64,
    pub segments_scanned: AtomicU64,
    pub segment_bytes_total: AtomicU64,
    pub segment_bytes_scanned: AtomicU64,
    pub hot_rows: AtomicU64,
}

/// A snapshot of [`ScanCounters`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ScanSummary {
    pub partitions_total: u64,
    pub partitions_scanned: u64,
    pub segments_total: u64,
    pub segments_scanned: u64,
    pub segment_bytes_total: u64,
    pub segment_bytes_scanned: u64,
    pub hot_rows: u64,
}

impl ScanCounters {
    pub fn summary(&self) -> ScanSummary {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ScanSummary {
            partitions_total: g(&self.partitions_total),
            partitions_scanned: g(&self.partitions_scanned),
            segments_total: g(&self.segments_total),
            segments_scanned: g(&self.segments_scanned),
            segment_bytes_total: g(&self.segment_bytes_total),
            segment_bytes_scanned: g(&self.segment_bytes_scanned),
            hot_rows: g(&self.hot_rows),
        }
    }
}

/// One topic as a table.
pub struct TopicTable {
    pub(crate) topic: String,
    pub(crate) partitions: Vec<u32>,
    pub(crate) catalog: Arc<dyn Catalog>,
    /// Include records not yet committed to the cold tier.
    pub(crate) hot: bool,
    pub(crate) store_url: ObjectStoreUrl,
    /// Reads segments with the checks of the cold read path (`verify`).
    pub(crate) readers: Arc<dyn ParquetFileReaderFactory>,
    pub(crate) counters: Arc<ScanCounters>,
}

impl fmt::Debug for TopicTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TopicTable")
            .field("topic", &self.topic)
            .field("partitions", &self.partitions.len())
            .field("hot", &self.hot)
            .finish()
    }
}

/// Per-container statistics for the pruning predicate: a container is a partition (only the
/// partition number is known) or a segment (partition, offset and timestamp ranges, row count).
struct Containers<'a> {
    partitions: Vec<i32>,
    segments: Option<&'a [(u32, &'a SegmentEntry)]>,
}

impl Containers<'_> {
    fn bound(&self, column: &Column, max: bool) -> Option<ArrayRef> {
        match (column.name(), self.segments) {
            ("partition", _) => Some(Arc::new(Int32Array::from(self.partitions.clone()))),
            ("offset", Some(s)) => Some(Arc::new(Int64Array::from_iter_values(
                s.iter()
                    .map(|(_, e)| if max { e.last_offset } else { e.base_offset }),
            ))),
            ("timestamp", Some(s)) => Some(Arc::new(
                TimestampMillisecondArray::from_iter_values(s.iter().map(|(_, e)| {
                    if max {
                        e.max_timestamp
                    } else {
                        e.min_timestamp
                    }
                }))
                .with_timezone("UTC"),
            )),
            _ => None,
        }
    }
}

impl PruningStatistics for Containers<'_> {
    fn min_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, false)
    }
    fn max_values(&self, column: &Column) -> Option<ArrayRef> {
        self.bound(column, true)
    }
    fn num_containers(&self) -> usize {
        self.partitions.len()
    }
    fn null_counts(&self, column: &Column) -> Option<ArrayRef> {
        match (column.name(), self.segments) {
            ("partition", _) | ("offset", Some(_)) | ("timestamp", Some(_)) => {
                Some(Arc::new(UInt64Array::from(vec![
                    0u64;
                    self.partitions.len()
                ])))
            }
            _ => None,
        }
    }
    fn row_counts(&self) -> Option<ArrayRef> {
        self.segments.map(|s| {
            Arc::new(UInt64Array::from_iter_values(
                s.iter().map(|(_, e)| e.records),
            )) as ArrayRef
        })
    }
    fn contained(&self, _: &Column, _: &HashSet<ScalarValue>) -> Option<BooleanArray> {
        None
    }
}

/// Keeps the containers the predicate cannot rule out (all of them without a predicate, or when
/// it cannot be evaluated on statistics).
fn keep(predicate: Option<&PruningPredicate>, stats: &Containers<'_>) -> Vec<bool> {
    predicate
        .and_then(|p| p.prune(stats).ok())
        .unwrap_or_else(|| vec![true; stats.num_containers()])
}

fn file_statistics(schema: &SchemaRef, partition: u32, e: &SegmentEntry) -> Statistics {
    let mut s = Statistics::new_unknown(schema);
    s.num_rows = Precision::Exact(e.records as usize);
    s.total_byte_size = Precision::Inexact(e.raw_bytes as usize);
    // Bounds are exact when the segment holds a record at each end of its range; a compacted
    // segment (offsets with gaps) only bounds them.
    let mut set = |name: &str, min: ScalarValue, max: ScalarValue, exact: bool| {
        if let Ok(i) = schema.index_of(name) {
            let c = &mut s.column_statistics[i];
            let bound = |v| {
                if exact {
                    Precision::Exact(v)
                } else {
                    Precision::Inexact(v)
                }
            };
            c.min_value = bound(min);
            c.max_value = bound(max);
            c.null_count = Precision::Exact(0);
        }
    };
    let p = ScalarValue::Int32(Some(partition as i32));
    set("partition", p.clone(), p, true);
    set(
        "offset",
        ScalarValue::Int64(Some(e.base_offset)),
        ScalarValue::Int64(Some(e.last_offset)),
        e.is_dense(),
    );
    let ts = |v| ScalarValue::TimestampMillisecond(Some(v), Some("UTC".into()));
    set(
        "timestamp",
        ts(e.min_timestamp),
        ts(e.max_timestamp),
        e.records > 0,
    );
    s
}

/// The scan `builder` describes, without the rows below each cut partition's log start, in
/// the columns of `projection`: the scan also reads `partition` and `offset`, a filter drops
/// the rows, a projection leaves the columns asked for. The limit applies above the filter.
fn below_log_start_removed(
    state: &dyn Session,
    schema: &SchemaRef,
    builder: FileScanConfigBuilder,
    projection: Option<&Vec<usize>>,
    cut: &[(u32, i64)],
) -> DfResult<Arc<dyn ExecutionPlan>> {
    let all: Vec<usize> = (0..schema.fields().len()).collect();
    let wanted = projection.cloned().unwrap_or(all);
    let mut read = wanted.clone();
    for name in ["partition", "offset"] {
        let i = schema.index_of(name)?;
        if !read.contains(&i) {
            read.push(i);
        }
    }
    let scan =
        DataSourceExec::from_data_source(builder.with_projection_indices(Some(read))?.build());
    let scanned = scan.schema();
    let keep = cut.iter().fold(lit(true), |keep, &(p, start)| {
        keep.and(
            col("partition")
                .not_eq(lit(p as i32))
                .or(col("offset").gt_eq(lit(start))),
        )
    });
    let keep = state.create_physical_expr(keep, &DFSchema::try_from(scanned.as_ref().clone())?)?;
    let filtered = Arc::new(FilterExec::try_new(keep, scan)?);
    let columns = (0..wanted.len())
        .map(|i| {
            let name = scanned.field(i).name().clone();
            let c: Arc<dyn PhysicalExpr> = Arc::new(PhysicalColumn::new(&name, i));
            (c, name)
        })
        .collect::<Vec<_>>();
    Ok(Arc::new(ProjectionExec::try_new(columns, filtered)?))
}

/// Spreads files over `n` groups, biggest first into the lightest group.
fn balance(mut files: Vec<PartitionedFile>, n: usize) -> Vec<FileGroup> {
    files.sort_by_key(|f| std::cmp::Reverse(f.object_meta.size));
    let mut groups: Vec<(u64, Vec<PartitionedFile>)> =
        (0..n.max(1)).map(|_| (0, Vec::new())).collect();
    for f in files {
        let g = groups
            .iter_mut()
            .min_by_key(|(bytes, _)| *bytes)
            .expect("at least one group");
        g.0 += f.object_meta.size;
        g.1.push(f);
    }
    groups
        .into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(_, v)| FileGroup::new(v))
        .collect()
}

#[async_trait]
impl TableProvider for TopicTable {
    fn schema(&self) -> SchemaRef {
        tier::cold::parquet::schema()
    }

    fn table_type(&self) -> TableType {
        TableType::Base
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> DfResult<Vec<TableProviderFilterPushDown>> {
        Ok(vec![TableProviderFilterPushDown::Inexact; filters.len()])
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = self.schema();
        let df_schema = DFSchema::try_from(schema.as_ref().clone())?;
        let physical = conjunction(filters.to_vec())
            .map(|e| state.create_physical_expr(e, &df_schema))
            .transpose()?;
        let pruning = physical.as_ref().and_then(|p| {
            PruningPredicateBuilder::new()
                .with_file_schema(schema.clone())
                .build(p.clone())
        });

        // Partitions the filters leave, then their manifests (and hot tails).
        let partitions: Vec<u32> = {
            let stats = Containers {
                partitions: self.partitions.iter().map(|&p| p as i32).collect(),
                segments: None,
            };
            let kept = keep(pruning.as_deref(), &stats);
            self.partitions
                .iter()
                .zip(kept)
                .filter_map(|(&p, k)| k.then_some(p))
                .collect()
        };
        let c = &self.counters;
        c.partitions_total
            .fetch_add(self.partitions.len() as u64, Ordering::Relaxed);
        c.partitions_scanned
            .fetch_add(partitions.len() as u64, Ordering::Relaxed);
        let views: Vec<(u32, ColdView, Option<Arc<dyn HotTail>>)> =
            futures::stream::iter(partitions)
                .map(|p| {
                    let catalog = self.catalog.clone();
                    let topic = self.topic.clone();
                    let hot = self.hot;
                    async move {
                        let s = catalog.snapshot(&topic, p, hot).await?;
                        Ok::<_, crate::Error>((p, s.cold, s.hot))
                    }
                })
                .buffered(MANIFEST_CONCURRENCY)
                .try_collect()
                .await?;

        // Partitions whose log start cuts through a segment (deleted records): their rows
        // below it are filtered out.
        let cut: Vec<(u32, i64)> = views
            .iter()
            .filter(|(_, v, _)| {
                v.segments
                    .iter()
                    .any(|(_, e)| e.base_offset < v.start_offset)
            })
            .map(|(p, v, _)| (*p, v.start_offset))
            .collect();
        // Segments the filters leave.
        let segments: Vec<(u32, &SegmentEntry)> = views
            .iter()
            .flat_map(|(p, v, _)| v.segments.iter().map(move |(_, e)| (*p, e)))
            .collect();
        let paths: Vec<&object_store::path::Path> = views
            .iter()
            .flat_map(|(_, v, _)| v.segments.iter().map(|(path, _)| path))
            .collect();
        let kept = keep(
            pruning.as_deref(),
            &Containers {
                partitions: segments.iter().map(|(p, _)| *p as i32).collect(),
                segments: Some(&segments),
            },
        );
        let mut files = Vec::new();
        let mut file_stats: Vec<Statistics> = Vec::new();
        for (((p, e), path), k) in segments.iter().zip(&paths).zip(kept) {
            c.segments_total.fetch_add(1, Ordering::Relaxed);
            c.segment_bytes_total.fetch_add(e.size, Ordering::Relaxed);
            if !k {
                continue;
            }
            c.segments_scanned.fetch_add(1, Ordering::Relaxed);
            c.segment_bytes_scanned.fetch_add(e.size, Ordering::Relaxed);
            let stats = file_statistics(&schema, *p, e);
            file_stats.push(stats.clone());
            files.push(
                PartitionedFile::new(path.to_string(), e.size)
                    .with_statistics(Arc::new(stats))
                    .with_extension(FooterDigest(e.footer_crc32c)),
            );
        }

        let mut inputs: Vec<Arc<dyn ExecutionPlan>> = Vec::new();
        if !files.is_empty() {
            let mut source = ParquetSource::new(schema.clone())
                .with_enable_page_index(true)
                .with_pushdown_filters(true)
                .with_reorder_filters(true)
                .with_metadata_size_hint(METADATA_SIZE_HINT)
                .with_parquet_file_reader_factory(self.readers.clone());
            if let Some(p) = &physical {
                source = source.with_predicate(p.clone());
            }
            let builder = FileScanConfigBuilder::new(self.store_url.clone(), Arc::new(source))
                .with_file_groups(balance(files, state.config().target_partitions()));
            let builder =
                builder.with_statistics(Statistics::try_merge_iter(&file_stats, &schema)?);
            if cut.is_empty() {
                let builder = builder
                    .with_projection_indices(projection.cloned())?
                    .with_limit(limit);
                inputs.push(DataSourceExec::from_data_source(builder.build()));
            } else {
                inputs.push(below_log_start_removed(
                    state, &schema, builder, projection, &cut,
                )?);
            }
        }
        let hot: Vec<Arc<dyn PartitionStream>> = views
            .into_iter()
            .filter_map(|(_, _, t)| t)
            .filter(|t| !t.offsets().is_empty())
            .map(|tail| {
                Arc::new(HotStream {
                    schema: schema.clone(),
                    tail,
                    counters: self.counters.clone(),
                }) as Arc<dyn PartitionStream>
            })
            .collect();
        if !hot.is_empty() {
            inputs.push(Arc::new(StreamingTableExec::try_new(
                schema.clone(),
                hot,
                projection,
                [],
                false,
                limit,
            )?));
        }
        if inputs.is_empty() {
            let projected = match projection {
                Some(p) => Arc::new(schema.project(p)?),
                None => schema,
            };
            return Ok(Arc::new(EmptyExec::new(projected)));
        }
        UnionExec::try_new(inputs)
    }
}

/// One partition's hot tail as a stream of the scan: read a chunk at a time while the query
/// runs, never whole.
#[derive(Debug)]
struct HotStream {
    schema: SchemaRef,
    tail: Arc<dyn HotTail>,
    counters: Arc<ScanCounters>,
}

impl PartitionStream for HotStream {
    fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    fn execute(&self, _ctx: Arc<TaskContext>) -> SendableRecordBatchStream {
        let tail = self.tail.clone();
        let counters = self.counters.clone();
        let chunks = futures::stream::try_unfold(Some(tail.offsets().start), move |at| {
            let (tail, counters) = (tail.clone(), counters.clone());
            async move {
                let Some(at) = at else {
                    return Ok::<_, DataFusionError>(None);
                };
                let (batches, next) = tail
                    .read(at)
                    .await
                    .map_err(|e| DataFusionError::External(Box::new(e)))?;
                let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
                counters.hot_rows.fetch_add(rows as u64, Ordering::Relaxed);
                let more = (next > at && next < tail.offsets().end).then_some(next);
                Ok(Some((
                    futures::stream::iter(batches.into_iter().map(Ok::<_, DataFusionError>)),
                    more,
                )))
            }
        })
        .try_flatten();
        Box::pin(RecordBatchStreamAdapter::new(self.schema.clone(), chunks))
    }
}
