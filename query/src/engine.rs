//! Running SQL over topics: one [`QueryEngine`] per node (or tool), a fresh session per query.
//!
//! Guard rails, so a query never takes ingest down with it:
//! - queries run on their own thread pool, at the lowest CPU priority the OS gives, never on the
//!   runtime that serves produce and fetch;
//! - each query has its own memory pool (`memory_limit`): sorts, joins and aggregations spill to
//!   disk when they reach it, and a query that still cannot fit fails with
//!   [`Error::MemoryLimit`];
//! - each query has a deadline (`timeout`), and stops as soon as its consumer goes away (a
//!   dropped [`QueryStream`] cancels it);
//! - only queries run: DDL, DML (`COPY`, `INSERT`) and `SET` are refused, so SQL cannot touch
//!   files on the node.
//!
//! Tables: `<topic>` (schema `public`, the default) is the committed history plus the hot tail;
//! `committed.<topic>` is exactly what is committed to the object store (what other engines
//! reading the bucket see).

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use arrow_array::RecordBatch;
use arrow_schema::SchemaRef;
use datafusion::catalog::{
    CatalogProvider, MemoryCatalogProvider, MemorySchemaProvider, SchemaProvider,
};
use datafusion::datasource::physical_plan::parquet::{
    CachedParquetFileReaderFactory, ParquetFileReaderFactory,
};
use datafusion::execution::cache::cache_manager::{
    CacheManager, CacheManagerConfig, FileMetadataCache,
};
use datafusion::execution::disk_manager::{DiskManagerBuilder, DiskManagerMode};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::prelude::{SQLOptions, SessionConfig, SessionContext};
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement as Ast;
use futures::{Stream, StreamExt};
use object_store::ObjectStore;
use tokio::sync::{mpsc, oneshot};

use crate::cancel::{CancelPoints, Stop};
use crate::catalog::Catalog;
use crate::error::{Error, Result};
use crate::functions;
use crate::memory::QueryPool;
use crate::table::{ScanCounters, ScanSummary, TopicTable};
use crate::verify::CheckingReaderFactory;

/// The catalog name tables live in.
pub const CATALOG: &str = "tierlog";
/// The schema of topics with their hot tail (the default).
pub const LIVE_SCHEMA: &str = "public";
/// The schema of topics as committed to the object store.
pub const COMMITTED_SCHEMA: &str = "committed";

/// Settings of the SQL engine.
#[derive(Debug, Clone)]
pub struct QueryConfig {
    /// Threads of the query pool (they run at the lowest CPU priority).
    pub threads: usize,
    /// Memory one query may use before it spills (and fails if it cannot).
    pub memory_limit: usize,
    /// Where spill files go (the OS temporary directory when unset).
    pub spill_dir: Option<PathBuf>,
    /// How long a query may run, planning included.
    pub timeout: Duration,
    /// Rows per Arrow batch.
    pub batch_size: usize,
    /// Parquet footers kept in memory across queries.
    pub metadata_cache_bytes: usize,
    /// Check segments as the cold read path does (footer digest, row-group CRCs) before
    /// decoding: damage is an error, never other values. The price: a scan reads whole row
    /// groups, not only the column chunks and pages its projection and filters need.
    pub verify_checksums: bool,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            threads: std::thread::available_parallelism().map_or(2, |n| n.get()),
            memory_limit: 512 << 20,
            spill_dir: None,
            timeout: Duration::from_secs(300),
            batch_size: 8192,
            metadata_cache_bytes: 64 << 20,
            verify_checksums: true,
        }
    }
}

/// A tokio runtime of low-priority threads, shut down without blocking when dropped.
struct Pool(Option<tokio::runtime::Runtime>);

impl Pool {
    fn new(threads: usize) -> Result<Pool> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("tierlog-sql")
            .enable_all()
            .on_thread_start(|| tier::background_priority("a query thread"))
            .build()
            .map_err(|e| Error::Execution(datafusion::error::DataFusionError::IoError(e)))?;
        Ok(Pool(Some(rt)))
    }
    fn handle(&self) -> &tokio::runtime::Handle {
        self.0.as_ref().expect("runtime lives until drop").handle()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

struct Inner {
    catalog: Arc<dyn Catalog>,
    store: Arc<dyn ObjectStore>,
    cfg: QueryConfig,
    pool: Pool,
    metadata_cache: Arc<FileMetadataCache>,
    /// The scans' segment readers (checked, footers cached across queries).
    readers: Arc<dyn ParquetFileReaderFactory>,
    /// Queries whose execution task is alive (planning, running, or waiting for the reader).
    running: AtomicUsize,
}

/// Counts a query in [`Inner::running`] for as long as its execution task holds it: the task
/// drops it last, after its DataFusion stream (whose drop aborts the operators' tasks).
struct Running(Arc<Inner>);

impl Running {
    fn enter(inner: &Arc<Inner>) -> Running {
        inner.running.fetch_add(1, Ordering::Relaxed);
        Running(inner.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Plans and runs SQL over topics.
#[derive(Clone)]
pub struct QueryEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for QueryEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueryEngine")
            .field("config", &self.inner.cfg)
            .finish()
    }
}

/// The rows of a running query. Dropping it cancels the query.
pub struct QueryStream {
    pub schema: SchemaRef,
    rx: mpsc::Receiver<Result<RecordBatch>>,
    /// Set when the stream is dropped: stops the query's joins between batches too.
    stop: Arc<Stop>,
    counters: Arc<ScanCounters>,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timeout: Duration,
    done: bool,
}

impl QueryStream {
    /// What the scans touched (complete once the stream has ended).
    pub fn scan_summary(&self) -> ScanSummary {
        self.counters.summary()
    }
}

impl Drop for QueryStream {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Stream for QueryStream {
    type Item = Result<RecordBatch>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        if self.done {
            return Poll::Ready(None);
        }
        if let Poll::Ready(item) = self.rx.poll_recv(cx) {
            self.done = !matches!(item, Some(Ok(_)));
            return Poll::Ready(item);
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            self.done = true;
            self.rx.close();
            return Poll::Ready(Some(Err(Error::Timeout(self.timeout))));
        }
        Poll::Pending
    }
}

/// The object-store URL segment paths are resolved against.
fn store_url() -> ObjectStoreUrl {
    ObjectStoreUrl::parse("tierlog://cold").expect("a valid URL")
}

impl QueryEngine {
    /// `store` is the bucket the catalog's segment paths live in.
    pub fn new(
        catalog: Arc<dyn Catalog>,
        store: Arc<dyn ObjectStore>,
        cfg: QueryConfig,
    ) -> Result<Self> {
        let metadata_cache = CacheManager::try_new(
            &CacheManagerConfig::default().with_metadata_cache_limit(cfg.metadata_cache_bytes),
        )
        .map_err(Error::Execution)?
        .get_file_metadata_cache();
        Ok(QueryEngine {
            inner: Arc::new(Inner {
                pool: Pool::new(cfg.threads)?,
                readers: if cfg.verify_checksums {
                    Arc::new(CheckingReaderFactory::new(
                        store.clone(),
                        metadata_cache.clone(),
                    ))
                } else {
                    Arc::new(CachedParquetFileReaderFactory::new(
                        store.clone(),
                        metadata_cache.clone(),
                    ))
                },
                catalog,
                store,
                cfg,
                metadata_cache,
                running: AtomicUsize::new(0),
            }),
        })
    }

    pub fn config(&self) -> &QueryConfig {
        &self.inner.cfg
    }

    /// Queries executing now. A query stops counting when its work has ended: finished,
    /// failed, timed out, or cancelled because its stream was dropped.
    pub fn running_queries(&self) -> usize {
        self.inner.running.load(Ordering::Relaxed)
    }

    /// The tables a query can name, as (schema, table): every topic, live and committed.
    pub async fn tables(&self) -> Result<Vec<(&'static str, String)>> {
        let topics = self.inner.catalog.topics().await?;
        Ok([LIVE_SCHEMA, COMMITTED_SCHEMA]
            .into_iter()
            .flat_map(|s| topics.iter().map(move |t| (s, t.name.clone())))
            .collect())
    }

    /// The columns of every topic table.
    pub fn topic_schema() -> SchemaRef {
        tier::cold::parquet::schema()
    }

    /// The schema of a query's result, without running it.
    pub async fn schema(&self, sql: &str) -> Result<SchemaRef> {
        let inner = self.inner.clone();
        let sql = sql.to_string();
        let timeout = inner.cfg.timeout;
        let stop = Stop::new(std::time::Instant::now() + timeout, timeout);
        let mut task = self.inner.pool.handle().spawn(async move {
            let (ctx, _) = inner.session(stop).await?;
            let df = inner.plan(&ctx, &sql).await?;
            Ok(Arc::new(df.schema().as_arrow().clone()))
        });
        match tokio::time::timeout(timeout, &mut task).await {
            Err(_) => {
                task.abort();
                Err(Error::Timeout(timeout))
            }
            Ok(Err(e)) if e.is_panic() => Err(Error::Execution(
                datafusion::error::DataFusionError::Internal(format!("planning panicked: {e}")),
            )),
            Ok(Err(_)) => Err(Error::Cancelled),
            Ok(Ok(r)) => r,
        }
    }

    /// Starts a query: plans it, then streams its rows. Planning errors are returned here;
    /// errors while running arrive in the stream.
    pub async fn execute(&self, sql: &str) -> Result<QueryStream> {
        let inner = self.inner.clone();
        let sql = sql.to_string();
        let timeout = inner.cfg.timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let stop = Stop::new(deadline.into_std(), timeout);
        let (tx, rx) = mpsc::channel(2);
        let (ready_tx, ready_rx) = oneshot::channel();
        let running = Running::enter(&self.inner);
        let task_stop = stop.clone();
        self.inner.pool.handle().spawn(async move {
            let _running = running;
            let limit = inner.cfg.memory_limit;
            let started = async {
                let (ctx, counters) = inner.session(task_stop).await?;
                let df = inner.plan(&ctx, &sql).await?;
                let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
                let stream = df
                    .execute_stream()
                    .await
                    .map_err(|e| Error::from_datafusion(e, limit))?;
                Ok::<_, Error>((schema, counters, stream))
            };
            let mut stream = match tokio::time::timeout_at(deadline, started).await {
                Err(_) => {
                    let _ = ready_tx.send(Err(Error::Timeout(timeout)));
                    return;
                }
                Ok(Err(e)) => {
                    let _ = ready_tx.send(Err(e));
                    return;
                }
                Ok(Ok((schema, counters, stream))) => {
                    if ready_tx.send(Ok((schema, counters))).is_err() {
                        return;
                    }
                    stream
                }
            };
            loop {
                let next = tokio::select! {
                    _ = tx.closed() => return,
                    r = tokio::time::timeout_at(deadline, stream.next()) => r,
                };
                let item = match next {
                    Err(_) => Some(Err(Error::Timeout(timeout))),
                    Ok(None) => None,
                    Ok(Some(r)) => Some(r.map_err(|e| Error::from_datafusion(e, limit))),
                };
                let Some(item) = item else { return };
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    return;
                }
            }
        });
        // The deadline also holds on this side: an operator that computes for long without
        // yielding delays the query's own timer, never the caller.
        let (schema, counters) = tokio::time::timeout_at(deadline, ready_rx)
            .await
            .map_err(|_| Error::Timeout(timeout))?
            .map_err(|_| Error::Cancelled)??;
        Ok(QueryStream {
            schema,
            rx,
            stop,
            counters,
            deadline: Box::pin(tokio::time::sleep_until(deadline)),
            timeout,
            done: false,
        })
    }

    /// Runs a query to the end and collects its rows (for tests and small answers).
    pub async fn collect(&self, sql: &str) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let mut s = self.execute(sql).await?;
        let mut out = Vec::new();
        while let Some(b) = s.next().await {
            out.push(b?);
        }
        Ok((s.schema.clone(), out))
    }
}

/// Whether a statement only reads. The plan is checked again after planning (defence in depth:
/// an `EXPLAIN ANALYZE` of a write is refused there).
fn is_read(statement: &DfStatement) -> bool {
    match statement {
        DfStatement::Statement(s) => matches!(
            **s,
            Ast::Query(_)
                | Ast::Explain { .. }
                | Ast::ExplainTable { .. }
                | Ast::ShowTables { .. }
                | Ast::ShowColumns { .. }
                | Ast::ShowFunctions { .. }
        ),
        DfStatement::Explain(_) => true,
        _ => false,
    }
}

impl Inner {
    /// A session for one query: its own memory pool and spill space, the shared footer cache,
    /// and every topic registered twice (live and committed).
    async fn session(&self, stop: Arc<Stop>) -> Result<(SessionContext, Arc<ScanCounters>)> {
        let cfg = &self.cfg;
        let disk = match &cfg.spill_dir {
            Some(d) => DiskManagerBuilder::default()
                .with_mode(DiskManagerMode::Directories(vec![d.clone()])),
            None => DiskManagerBuilder::default().with_mode(DiskManagerMode::OsTmpDirectory),
        };
        let runtime = RuntimeEnvBuilder::new()
            .with_memory_pool(Arc::new(QueryPool::new(cfg.memory_limit)))
            .with_disk_manager_builder(disk)
            .with_cache_manager(
                CacheManagerConfig::default()
                    .with_file_metadata_cache(Some(self.metadata_cache.clone())),
            )
            .build_arc()
            .map_err(Error::Execution)?;
        let url = store_url();
        runtime.register_object_store(url.as_ref(), self.store.clone());
        let mut config = SessionConfig::new();
        // A sort keeps this much back for merging its spill files: a fixed 10 MiB would not fit
        // a small limit.
        config.options_mut().execution.sort_spill_reservation_bytes =
            (cfg.memory_limit / 8).min(10 << 20);
        let config = config
            .with_target_partitions(cfg.threads.max(1))
            .with_batch_size(cfg.batch_size)
            .with_information_schema(true)
            .with_create_default_catalog_and_schema(false)
            .with_default_catalog_and_schema(CATALOG, LIVE_SCHEMA);
        let state = SessionStateBuilder::new()
            .with_config(config)
            .with_runtime_env(runtime)
            .with_default_features()
            .with_physical_optimizer_rule(Arc::new(CancelPoints(stop)))
            .build();
        let ctx = SessionContext::new_with_state(state);
        for f in functions::all() {
            ctx.register_udf(f);
        }
        let counters = Arc::new(ScanCounters::default());
        let catalog = Arc::new(MemoryCatalogProvider::new());
        let topics = self.catalog.topics().await?;
        for (schema_name, hot) in [(LIVE_SCHEMA, true), (COMMITTED_SCHEMA, false)] {
            let schema = Arc::new(MemorySchemaProvider::new());
            for t in &topics {
                let table = TopicTable {
                    topic: t.name.clone(),
                    partitions: t.partitions.clone(),
                    catalog: self.catalog.clone(),
                    hot,
                    store_url: url.clone(),
                    readers: self.readers.clone(),
                    counters: counters.clone(),
                };
                schema
                    .register_table(t.name.clone(), Arc::new(table))
                    .map_err(Error::Execution)?;
            }
            catalog
                .register_schema(schema_name, schema)
                .map_err(Error::Execution)?;
        }
        ctx.register_catalog(CATALOG, catalog);
        Ok((ctx, counters))
    }

    /// Parses and plans one statement: unknown topics and anything but a query are refused here.
    async fn plan(
        &self,
        ctx: &SessionContext,
        sql: &str,
    ) -> Result<datafusion::dataframe::DataFrame> {
        let limit = self.cfg.memory_limit;
        let df_err = |e| Error::from_datafusion(e, limit);
        let state = ctx.state();
        let dialect = state.config().options().sql_parser.dialect;
        let statement = state.sql_to_statement(sql, &dialect).map_err(df_err)?;
        if !is_read(&statement) {
            let text = statement.to_string();
            let words: Vec<&str> = text.split_whitespace().take(2).collect();
            return Err(Error::NotAllowed(format!(
                "`{} …` is not a query (SELECT, WITH, EXPLAIN, SHOW)",
                words.join(" ")
            )));
        }
        for r in state.resolve_table_references(&statement).map_err(df_err)? {
            let schema = r.schema().unwrap_or(LIVE_SCHEMA);
            if r.catalog().is_some_and(|c| c != CATALOG) || schema == "information_schema" {
                continue;
            }
            let exists = ctx
                .catalog(CATALOG)
                .and_then(|c| c.schema(schema))
                .is_some_and(|s| s.table_exist(r.table()));
            if !exists {
                return Err(Error::UnknownTopic(r.table().to_string()));
            }
        }
        let plan = state.statement_to_plan(statement).await.map_err(df_err)?;
        SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false)
            .verify_plan(&plan)
            .map_err(|e| Error::NotAllowed(e.strip_backtrace().to_string()))?;
        ctx.execute_logical_plan(plan).await.map_err(df_err)
    }
}
