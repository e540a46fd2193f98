//! Storage core benchmark: a program that prints figures next to baselines measured in the same
//! run on the same disk.
//!
//!   cargo bench -p tierlog-tier --bench storage            (TIERLOG_BENCH_MB=512 by default)
//!
//! 1. Append throughput with 1 KiB JSON-like records, for each fsync policy, next to raw writes
//!    and fdatasync on the same disk with the same sync pattern. The segment size is set above
//!    the data written, so this measures the append path alone (conversion is measured in 2).
//! 2. The conversion + upload rate, Parquet bytes / raw payload bytes, and cold replay from
//!    offset 0 (hot tier deleted) next to a plain sequential read of the same Parquet files.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::path::Path;
use tier::store::open_store;
use tier::{BatchBuilder, Compression, FsyncPolicy, RecordBatch, Tier, TierConfig};

const RECORD: usize = 1024;
const BATCH_RECORDS: usize = 64;
const PARTITIONS: u32 = 4;

fn mix(mut x: u64) -> u64 {
    x ^= x >> 33;
    x = x.wrapping_mul(0xff51afd7ed558ccd);
    x ^= x >> 33;
    x = x.wrapping_mul(0xc4ceb9fe1a85ec53);
    x ^ (x >> 33)
}

/// A JSON event of about `RECORD` bytes: field names repeat, values come from small vocabularies
/// plus ids, numbers and free text, as in clickstream or audit events.
fn json_event(i: u64) -> Vec<u8> {
    let h = mix(i);
    let words = [
        "checkout", "cart", "search", "product", "account", "settings", "billing", "shipping",
        "review", "wishlist", "promo", "support", "login", "logout", "home", "category",
    ];
    let agents = [
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
        "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_5) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.5 Safari/605.1.15",
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
        "Mozilla/5.0 (X11; Linux x86_64; rv:127.0) Gecko/20100101 Firefox/127.0",
    ];
    let mut s = format!(
        r#"{{"event_id":"{:016x}{:016x}","type":"{}","ts":"2026-11-{:02}T{:02}:{:02}:{:02}.{:03}Z","user":{{"id":"u-{}","tier":"{}","country":"{}","lang":"{}"}},"session":{{"id":"{:012x}","page_views":{},"referrer":"https://www.example.com/{}/{}"}},"device":{{"ua":"{}","screen":"{}x{}"}},"cart":{{"items":{},"total":{}.{:02},"currency":"EUR"}},"path":"/{}/{}/{}","tags":["{}","{}"],"note":""#,
        h,
        mix(h),
        words[(h % 16) as usize],
        1 + h % 28,
        (h >> 5) % 24,
        (h >> 10) % 60,
        (h >> 16) % 60,
        (h >> 22) % 1000,
        (h >> 8) % 50_000,
        ["free", "plus", "pro"][(h >> 3) as usize % 3],
        ["DE", "FR", "US", "JP", "BR", "IN", "GB"][(h >> 12) as usize % 7],
        ["de-DE", "fr-FR", "en-US", "ja-JP", "pt-BR"][(h >> 14) as usize % 5],
        mix(h ^ 7) & 0xffff_ffff_ffff,
        (h >> 30) % 40,
        words[(h >> 34) as usize % 16],
        words[(h >> 38) as usize % 16],
        agents[(h >> 42) as usize % 4],
        [1920, 1440, 390, 2560][(h >> 44) as usize % 4],
        [1080, 900, 844, 1440][(h >> 44) as usize % 4],
        (h >> 46) % 9,
        (h >> 20) % 900,
        (h >> 26) % 100,
        words[(h >> 48) as usize % 16],
        words[(h >> 52) as usize % 16],
        (h >> 56) % 10_000,
        words[(h >> 58) as usize % 16],
        words[(h >> 60) as usize % 16],
    );
    // Free text to pad to RECORD bytes: words from the vocabulary, in varying order.
    let mut k = h;
    while s.len() < RECORD - 2 {
        k = mix(k);
        s.push_str(words[(k % 16) as usize]);
        s.push(' ');
    }
    s.truncate(RECORD - 2);
    s.push_str("\"}");
    s.into_bytes()
}

fn make_batches(n_batches: usize, first: u64) -> Vec<RecordBatch> {
    (0..n_batches)
        .map(|b| {
            let mut bb = BatchBuilder::new(Compression::None);
            for r in 0..BATCH_RECORDS {
                let i = first + (b * BATCH_RECORDS + r) as u64;
                let key = format!("u-{}", mix(i) % 50_000);
                bb.push(
                    1_790_000_000_000 + i as i64,
                    Some(key.as_bytes()),
                    Some(&json_event(i)),
                    &[],
                );
            }
            bb.build().expect("batch")
        })
        .collect()
}

fn mib(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

/// Raw disk: `writers` threads each write `total / writers` bytes to their own file in
/// `chunk`-sized writes, syncing per `policy` (for an interval, a separate thread syncs every
/// file, as the tier's flusher does); then every file is synced. The same shape as the appends.
fn raw_write(
    dir: &FsPath,
    total: u64,
    chunk: usize,
    writers: u32,
    policy: FsyncPolicy,
) -> Duration {
    let files: Vec<_> = (0..writers)
        .map(|i| {
            Arc::new(
                OpenOptions::new()
                    .create(true)
                    .truncate(true)
                    .write(true)
                    .open(dir.join(format!("raw-{i}.bin")))
                    .expect("raw file"),
            )
        })
        .collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let start = Instant::now();
    let syncer = match policy {
        FsyncPolicy::Interval { ms } => {
            let (files, done) = (files.clone(), done.clone());
            Some(std::thread::spawn(move || {
                while !done.load(std::sync::atomic::Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(ms));
                    for f in &files {
                        f.sync_data().expect("sync");
                    }
                }
            }))
        }
        _ => None,
    };
    let threads: Vec<_> = files
        .iter()
        .map(|f| {
            let f = f.clone();
            let per = total / writers as u64;
            std::thread::spawn(move || {
                let buf = vec![0x5au8; chunk];
                let mut written = 0u64;
                while written < per {
                    (&*f).write_all(&buf).expect("raw write");
                    written += chunk as u64;
                    if policy == FsyncPolicy::EveryBatch {
                        f.sync_data().expect("sync");
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("writer");
    }
    done.store(true, std::sync::atomic::Ordering::Release);
    if let Some(s) = syncer {
        s.join().expect("syncer");
    }
    for f in &files {
        f.sync_data().expect("final sync");
    }
    let d = start.elapsed();
    for i in 0..writers {
        std::fs::remove_file(dir.join(format!("raw-{i}.bin"))).ok();
    }
    d
}

/// Drops the page cache so reads come from the disk (needs root; says so when it cannot).
fn drop_page_cache() -> &'static str {
    let synced = std::process::Command::new("sync")
        .status()
        .is_ok_and(|s| s.success());
    if synced && std::fs::write("/proc/sys/vm/drop_caches", "3").is_ok() {
        "page cache dropped"
    } else {
        "page cache warm (could not drop it)"
    }
}

fn config(dir: &FsPath, fsync: FsyncPolicy, segment_bytes: u64) -> TierConfig {
    TierConfig {
        data_dir: dir.join("hot"),
        fsync,
        segment_bytes,
        max_batch_bytes: 4 << 20,
        hot_budget_bytes: 64 << 30,
        hot_retention_bytes: 64 << 30,
        ..TierConfig::default()
    }
}

/// Appends `batches` round-robin over the partitions from one task per partition.
async fn append_all(t: &Tier, batches: &Arc<Vec<RecordBatch>>) -> Duration {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..PARTITIONS {
        let (t, batches) = (t.clone(), batches.clone());
        tasks.push(tokio::spawn(async move {
            for b in batches.iter().skip(p as usize).step_by(PARTITIONS as usize) {
                t.append("bench", p, b.clone()).await.expect("append");
            }
        }));
    }
    for task in tasks {
        task.await.expect("append task");
    }
    start.elapsed()
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let mb: u64 = std::env::var("TIERLOG_BENCH_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    let root = std::env::var("TIERLOG_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::env::temp_dir());
    let work = tempfile::tempdir_in(&root).expect("bench dir");
    let dir = work.path();
    let batch_bytes = BATCH_RECORDS * (RECORD + 16);
    let n_batches = ((mb << 20) / batch_bytes as u64) as usize;
    let batches = Arc::new(make_batches(n_batches, 0));
    let total: u64 = batches.iter().map(|b| b.len() as u64).sum();
    let records = (n_batches * BATCH_RECORDS) as u64;
    println!(
        "tierlog storage benchmark: {records} records of {RECORD} B JSON, {} MiB, batches of {BATCH_RECORDS} records ({} KiB), {PARTITIONS} partitions, dir {}",
        total >> 20,
        batch_bytes >> 10,
        root.display()
    );
    println!();
    println!(
        "1. append throughput until durable (hot tier only; no segment seals during the run);"
    );
    println!(
        "   raw disk: {PARTITIONS} threads writing their own files with the same chunks and sync pattern"
    );
    println!(
        "   {:<16} {:>12} {:>14} {:>16} {:>8}",
        "fsync", "tierlog MB/s", "records/s", "raw disk MB/s", "ratio"
    );
    let policies = if std::env::var_os("TIERLOG_BENCH_SKIP_APPEND").is_some() {
        vec![]
    } else {
        vec![
            FsyncPolicy::EveryBatch,
            FsyncPolicy::Interval { ms: 10 },
            FsyncPolicy::Never,
        ]
    };
    for policy in policies {
        let raw = raw_write(dir, total, batch_bytes, PARTITIONS, policy);
        let hot = dir.join("hot");
        std::fs::remove_dir_all(&hot).ok();
        let (store, _) = open_store("memory://", &[]).expect("store");
        let t = Tier::open(config(dir, policy, 8 << 30), store, Path::from("b"))
            .await
            .expect("tier");
        for p in 0..PARTITIONS {
            t.open_partition("bench", p, 1).await.expect("partition");
        }
        let start = Instant::now();
        append_all(&t, &batches).await;
        t.sync_all().await.expect("sync");
        let d_synced = start.elapsed();
        t.abort().await;
        let name = match policy {
            FsyncPolicy::EveryBatch => "every batch".to_string(),
            FsyncPolicy::Interval { ms } => format!("every {ms} ms"),
            FsyncPolicy::Never => "never".to_string(),
        };
        let (ours, base) = (mib(total, d_synced), mib(total, raw));
        println!(
            "   {:<16} {:>12.0} {:>14.0} {:>16.0} {:>7.0}%",
            name,
            ours,
            records as f64 / d_synced.as_secs_f64(),
            base,
            100.0 * ours / base
        );
    }
    std::fs::remove_dir_all(dir.join("hot")).ok();

    println!();
    println!("2. seal + convert to Parquet (zstd) + upload to a file:// store, then cold replay");
    let bucket = dir.join("bucket");
    let (store, _) = open_store(bucket.to_str().expect("utf8 path"), &[]).expect("store");
    let t = Tier::open(
        config(dir, FsyncPolicy::Never, 64 << 20),
        store.clone(),
        Path::from("b"),
    )
    .await
    .expect("tier");
    for p in 0..PARTITIONS {
        t.open_partition("bench", p, 1).await.expect("partition");
    }
    let start = Instant::now();
    append_all(&t, &batches).await;
    t.flush_all().await.expect("flush");
    let upload = start.elapsed();
    let mut cold_bytes = 0;
    let mut segments = 0;
    for p in 0..PARTITIONS {
        let o = t.offsets("bench", p).expect("offsets");
        cold_bytes += o.cold_bytes;
        segments += o.cold_segments;
    }
    t.close(false).await.expect("close");
    let payload: u64 = records * RECORD as u64
        + batches
            .iter()
            .map(|b| {
                b.records()
                    .expect("decode")
                    .iter()
                    .map(|r| r.key.as_ref().map_or(0, |k| k.len()) as u64)
                    .sum::<u64>()
            })
            .sum::<u64>();
    println!(
        "   ingest + convert + upload: {:.0} MB/s of batches ({segments} segments, conversion on {} cores)",
        mib(total, upload),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "   cold bytes / raw payload: {cold_bytes} / {payload} = {:.3}",
        cold_bytes as f64 / payload as f64
    );

    // Baseline: read the same Parquet files sequentially, whole, from the file system.
    let mut files = Vec::new();
    let mut stack = vec![bucket.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).expect("readdir") {
            let p = e.expect("entry").path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "parquet") {
                files.push(p);
            }
        }
    }
    files.sort();
    let cache_state = drop_page_cache();
    let start = Instant::now();
    let mut raw_read = 0u64;
    let mut buf = Vec::new();
    for f in &files {
        buf.clear();
        std::fs::File::open(f)
            .expect("open")
            .read_to_end(&mut buf)
            .expect("read");
        raw_read += buf.len() as u64;
    }
    let raw_d = start.elapsed();

    std::fs::remove_dir_all(dir.join("hot")).expect("delete hot tier");
    drop_page_cache();
    let t = Tier::open(
        config(dir, FsyncPolicy::Never, 64 << 20),
        store,
        Path::from("b"),
    )
    .await
    .expect("tier");
    let start = Instant::now();
    let mut read_records = 0u64;
    let mut read_payload = 0u64;
    for p in 0..PARTITIONS {
        t.open_partition("bench", p, 2).await.expect("partition");
        let end = t.offsets("bench", p).expect("offsets").next;
        let mut next = 0;
        while next < end {
            let r = t.read("bench", p, next, 1 << 20).await.expect("cold read");
            next = r.records.last().expect("records").offset + 1;
            read_records += r.records.len() as u64;
            read_payload += r
                .records
                .iter()
                .map(|r| r.payload_len() as u64)
                .sum::<u64>();
        }
    }
    let replay = start.elapsed();
    t.close(false).await.expect("close");
    assert_eq!(read_records, records, "replay returned every record");
    println!(
        "   plain sequential read of the Parquet files: {:.0} MB/s ({} MiB, {cache_state})",
        mib(raw_read, raw_d),
        raw_read >> 20
    );
    println!(
        "   cold replay from offset 0: {:.0} MB/s of Parquet files ({:.0}% of the plain read), {:.0} MB/s of payload, {:.0} records/s",
        mib(cold_bytes, replay),
        100.0 * mib(cold_bytes, replay) / mib(raw_read, raw_d),
        mib(read_payload, replay),
        read_records as f64 / replay.as_secs_f64()
    );
}
