//! Object stores: opening one from a URL, retrying with backoff, counting requests, and (for
//! tests) injecting faults. Decorators wrap `Arc<dyn ObjectStore>` and forward everything else.

use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult,
};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// Opens the object store a URL names: `file:///dir` (or a plain path), `memory://`, or
/// `s3://bucket/prefix`. For S3, `options` are object_store's S3 keys (`aws_endpoint`,
/// `aws_region`, `aws_access_key_id`, `aws_allow_http`, …) layered over the standard `AWS_*`
/// environment variables. Conditional puts (create-if-absent) are always enabled: the manifest
/// needs them. Returns the store and the root prefix inside it.
pub fn open_store(url: &str, options: &[(String, String)]) -> Result<(Arc<dyn ObjectStore>, Path)> {
    let bad = |m: String| Error::invalid(format!("object store URL {url:?}: {m}"));
    if let Some(rest) = url.strip_prefix("memory://") {
        let root = Path::parse(rest).map_err(|e| bad(e.to_string()))?;
        return Ok((Arc::new(object_store::memory::InMemory::new()), root));
    }
    if url.starts_with("s3://") {
        let parsed = url::Url::parse(url).map_err(|e| bad(e.to_string()))?;
        let mut b = object_store::aws::AmazonS3Builder::from_env()
            .with_url(url)
            .with_conditional_put(object_store::aws::S3ConditionalPut::ETagMatch);
        for (k, v) in options {
            let key = k
                .parse()
                .map_err(|e: object_store::Error| bad(e.to_string()))?;
            b = b.with_config(key, v);
        }
        let store = b.build().map_err(|e| bad(e.to_string()))?;
        let root =
            Path::parse(parsed.path().trim_start_matches('/')).map_err(|e| bad(e.to_string()))?;
        return Ok((Arc::new(store), root));
    }
    let dir = match url.strip_prefix("file://") {
        Some(p) => std::path::PathBuf::from(p),
        None if !url.contains("://") => std::path::PathBuf::from(url),
        None => {
            return Err(bad(
                "unsupported scheme (use file://, memory:// or s3://)".into()
            ));
        }
    };
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let dir = dir.canonicalize().map_err(|e| Error::io(&dir, e))?;
    let store = object_store::local::LocalFileSystem::new_with_prefix(&dir)
        .map_err(|e| bad(e.to_string()))?
        .with_automatic_cleanup(true);
    Ok((
        Arc::new(SyncedLocal {
            inner: Arc::new(store),
            root: dir,
        }),
        Path::default(),
    ))
}

/// A local file-system store whose puts are durable when they return: the written file and its
/// directory are fsynced (object_store's local store does not sync). The hot tier deletes its
/// copy once a commit lands, so the cold copy must be on disk by then.
#[derive(Debug)]
pub struct SyncedLocal {
    inner: Arc<dyn ObjectStore>,
    root: std::path::PathBuf,
}

impl fmt::Display for SyncedLocal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SyncedLocal({})", self.root.display())
    }
}

impl SyncedLocal {
    async fn sync(&self, location: &Path) -> object_store::Result<()> {
        let file = self.root.join(location.as_ref());
        tokio::task::spawn_blocking(move || {
            std::fs::File::open(&file)?.sync_all()?;
            if let Some(dir) = file.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok::<_, std::io::Error>(())
        })
        .await
        .map_err(|e| object_store::Error::Generic {
            store: "SyncedLocal",
            source: Box::new(e),
        })?
        .map_err(|e| object_store::Error::Generic {
            store: "SyncedLocal",
            source: Box::new(e),
        })
    }
}

#[async_trait]
impl ObjectStore for SyncedLocal {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let r = self.inner.put_opts(location, payload, opts).await?;
        self.sync(location).await?;
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        // Not used by the tier (segments are single puts); kept unsynced rather than refused.
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        self.inner.get_opts(location, options).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.inner.get_ranges(location, ranges).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.inner.copy_opts(from, to, options).await?;
        self.sync(to).await
    }
}

/// Retry with exponential backoff and jitter for retryable errors, until success, a permanent
/// error, `max_attempts`, or cancellation.
#[derive(Debug, Clone)]
pub struct Retry {
    pub initial: Duration,
    pub max: Duration,
    pub max_attempts: Option<u32>,
    pub cancel: CancellationToken,
}

impl Retry {
    pub fn new(initial: Duration, max: Duration, cancel: CancellationToken) -> Self {
        Retry {
            initial,
            max,
            max_attempts: None,
            cancel,
        }
    }

    pub async fn run<T, F, Fut>(&self, what: &str, mut f: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut delay = self.initial;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            match f().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && self.max_attempts.is_none_or(|m| attempt < m) => {
                    tracing::warn!(operation = what, attempt, error = %e, retry_in_ms = delay.as_millis() as u64, "retrying");
                    let jitter = delay.mul_f64(fastrand::f64() * 0.5);
                    tokio::select! {
                        _ = self.cancel.cancelled() => return Err(Error::Closed),
                        _ = tokio::time::sleep(delay + jitter) => {}
                    }
                    delay = (delay * 2).min(self.max);
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// Counts requests and bytes by kind.
#[derive(Debug, Default)]
pub struct StoreStats {
    pub gets: AtomicU64,
    pub get_bytes: AtomicU64,
    pub puts: AtomicU64,
    pub put_bytes: AtomicU64,
    pub lists: AtomicU64,
    pub deletes: AtomicU64,
    /// Every distinct object read (for checking what a scan touched).
    pub read_paths: std::sync::Mutex<std::collections::BTreeSet<Path>>,
}

impl StoreStats {
    fn read(&self, location: &Path, bytes: u64) {
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.get_bytes.fetch_add(bytes, Ordering::Relaxed);
        let mut paths = self.read_paths.lock().unwrap_or_else(|e| e.into_inner());
        if !paths.contains(location) {
            paths.insert(location.clone());
        }
    }
    /// The distinct objects read so far under `prefix`.
    pub fn objects_read(&self, prefix: &str) -> Vec<Path> {
        let paths = self.read_paths.lock().unwrap_or_else(|e| e.into_inner());
        paths
            .iter()
            .filter(|p| p.as_ref().starts_with(prefix))
            .cloned()
            .collect()
    }
    /// Forgets the requests and objects counted so far.
    pub fn reset_reads(&self) {
        self.gets.store(0, Ordering::Relaxed);
        self.get_bytes.store(0, Ordering::Relaxed);
        self.read_paths
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
    pub fn gets(&self) -> u64 {
        self.gets.load(Ordering::Relaxed)
    }
    pub fn get_bytes(&self) -> u64 {
        self.get_bytes.load(Ordering::Relaxed)
    }
    pub fn puts(&self) -> u64 {
        self.puts.load(Ordering::Relaxed)
    }
}

/// Which calls a [`Decorated`] store fails on purpose.
#[derive(Debug, Default)]
pub struct Faults {
    /// Fail every put (including multipart) with a transient error.
    pub fail_puts: AtomicBool,
    /// Fail every get with a transient error.
    pub fail_gets: AtomicBool,
    /// Let puts land but report a transient error (the answer is "lost").
    pub lose_put_answers: AtomicBool,
    /// Puts whose path contains one of these strings wait until it is removed (a slow write).
    pub hold_puts: std::sync::Mutex<Vec<String>>,
    /// How many puts were held by `hold_puts`.
    pub held_puts: AtomicU64,
    /// Listings and HEADs report every object this many ms older than it is (a store whose
    /// clock runs behind the node's).
    pub clock_behind_ms: AtomicU64,
}

impl Faults {
    pub fn set_all(&self, on: bool) {
        self.fail_puts.store(on, Ordering::SeqCst);
        self.fail_gets.store(on, Ordering::SeqCst);
    }

    fn holds(&self, location: &Path) -> bool {
        let held = self.hold_puts.lock().expect("hold_puts lock poisoned");
        held.iter().any(|h| location.as_ref().contains(h.as_str()))
    }
}

/// A store wrapper that counts requests and can inject faults (for tests and benchmarks).
#[derive(Debug)]
pub struct Decorated {
    inner: Arc<dyn ObjectStore>,
    pub stats: Arc<StoreStats>,
    pub faults: Arc<Faults>,
}

impl Decorated {
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Decorated {
            inner,
            stats: Arc::default(),
            faults: Arc::default(),
        }
    }
}

impl fmt::Display for Decorated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Decorated({})", self.inner)
    }
}

fn injected(op: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "fault-injection",
        source: format!("injected failure of {op}").into(),
    }
}

#[async_trait]
impl ObjectStore for Decorated {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        if self.faults.fail_puts.load(Ordering::SeqCst) {
            return Err(injected("put"));
        }
        if self.faults.holds(location) {
            self.faults.held_puts.fetch_add(1, Ordering::SeqCst);
            while self.faults.holds(location) {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        }
        self.stats.puts.fetch_add(1, Ordering::Relaxed);
        self.stats
            .put_bytes
            .fetch_add(payload.content_length() as u64, Ordering::Relaxed);
        let r = self.inner.put_opts(location, payload, opts).await?;
        if self.faults.lose_put_answers.load(Ordering::SeqCst) {
            return Err(injected("put answer"));
        }
        Ok(r)
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        if self.faults.fail_puts.load(Ordering::SeqCst) {
            return Err(injected("multipart put"));
        }
        self.stats.puts.fetch_add(1, Ordering::Relaxed);
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if self.faults.fail_gets.load(Ordering::SeqCst) {
            return Err(injected("get"));
        }
        let mut r = self.inner.get_opts(location, options).await?;
        self.stats.read(location, r.range.end - r.range.start);
        r.meta.last_modified -=
            Duration::from_millis(self.faults.clock_behind_ms.load(Ordering::SeqCst));
        Ok(r)
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        if self.faults.fail_gets.load(Ordering::SeqCst) {
            return Err(injected("get"));
        }
        let r = self.inner.get_ranges(location, ranges).await?;
        let n: usize = r.iter().map(Bytes::len).sum();
        self.stats.read(location, n as u64);
        Ok(r)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let stats = self.stats.clone();
        self.inner
            .delete_stream(locations)
            .inspect(move |_| {
                stats.deletes.fetch_add(1, Ordering::Relaxed);
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.stats.lists.fetch_add(1, Ordering::Relaxed);
        if self.faults.fail_gets.load(Ordering::SeqCst) {
            return futures::stream::once(async { Err(injected("list")) }).boxed();
        }
        let behind = self.faults.clock_behind_ms.load(Ordering::SeqCst);
        if behind == 0 {
            return self.inner.list(prefix);
        }
        let behind = Duration::from_millis(behind);
        self.inner
            .list(prefix)
            .map(move |m| {
                m.map(|mut m| {
                    m.last_modified -= behind;
                    m
                })
            })
            .boxed()
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.stats.lists.fetch_add(1, Ordering::Relaxed);
        if self.faults.fail_gets.load(Ordering::SeqCst) {
            return futures::stream::once(async { Err(injected("list")) }).boxed();
        }
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.stats.lists.fetch_add(1, Ordering::Relaxed);
        if self.faults.fail_gets.load(Ordering::SeqCst) {
            return Err(injected("list"));
        }
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        if self.faults.fail_puts.load(Ordering::SeqCst) {
            return Err(injected("copy"));
        }
        self.inner.copy_opts(from, to, options).await
    }
}

/// Told about every request to the object store an [`Observed`] store wraps: the operation
/// (`put`, `put_multipart`, `get`, `head`, `get_ranges`, `delete`, `list`, `copy`), its
/// result ([`outcome`]), and how long it took (a get: until the answer's headers; a listing
/// or a delete stream: until it ended or was dropped). Must not block.
pub trait StoreObserver: Send + Sync + fmt::Debug {
    fn observed(&self, op: &'static str, outcome: &'static str, took: Duration);
}

/// A request's result as [`StoreObserver`]s are told it: `ok`; `not_found` and `conflict` (a
/// conditional write that lost) are answers the callers expect; `error` is anything else.
pub fn outcome<T>(r: &object_store::Result<T>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(object_store::Error::NotFound { .. }) => "not_found",
        Err(
            object_store::Error::AlreadyExists { .. }
            | object_store::Error::Precondition { .. }
            | object_store::Error::NotModified { .. },
        ) => "conflict",
        Err(_) => "error",
    }
}

/// A store wrapper that reports every request to a [`StoreObserver`] (for metrics).
#[derive(Debug)]
pub struct Observed {
    inner: Arc<dyn ObjectStore>,
    observer: Arc<dyn StoreObserver>,
}

impl Observed {
    pub fn new(inner: Arc<dyn ObjectStore>, observer: Arc<dyn StoreObserver>) -> Self {
        Observed { inner, observer }
    }

    async fn timed<T>(
        &self,
        op: &'static str,
        f: impl Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        let started = std::time::Instant::now();
        let r = f.await;
        self.observer.observed(op, outcome(&r), started.elapsed());
        r
    }

    /// A stream whose request is reported when it ends or is dropped.
    fn timed_stream<T: Send + 'static>(
        &self,
        op: &'static str,
        s: BoxStream<'static, object_store::Result<T>>,
    ) -> BoxStream<'static, object_store::Result<T>> {
        let timing = StreamTiming {
            op,
            started: std::time::Instant::now(),
            outcome: std::sync::Mutex::new("ok"),
            observer: self.observer.clone(),
        };
        s.map(move |r| {
            if r.is_err() {
                *timing.outcome.lock().expect("outcome lock poisoned") = outcome(&r);
            }
            r
        })
        .boxed()
    }
}

/// Reports a streamed request when dropped.
struct StreamTiming {
    op: &'static str,
    started: std::time::Instant,
    outcome: std::sync::Mutex<&'static str>,
    observer: Arc<dyn StoreObserver>,
}

impl Drop for StreamTiming {
    fn drop(&mut self) {
        let outcome = *self.outcome.get_mut().unwrap_or_else(|e| e.into_inner());
        self.observer
            .observed(self.op, outcome, self.started.elapsed());
    }
}

impl fmt::Display for Observed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Observed({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Observed {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        self.timed("put", self.inner.put_opts(location, payload, opts))
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.timed(
            "put_multipart",
            self.inner.put_multipart_opts(location, opts),
        )
        .await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let op = if options.head { "head" } else { "get" };
        self.timed(op, self.inner.get_opts(location, options)).await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.timed("get_ranges", self.inner.get_ranges(location, ranges))
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        self.timed_stream("delete", self.inner.delete_stream(locations))
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.timed_stream("list", self.inner.list(prefix))
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        self.timed_stream("list", self.inner.list_with_offset(prefix, offset))
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.timed("list", self.inner.list_with_delimiter(prefix))
            .await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.timed("copy", self.inner.copy_opts(from, to, options))
            .await
    }
}
