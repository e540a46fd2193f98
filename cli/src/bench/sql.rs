//! `tierlog bench sql`: SQL over a topic's committed history, next to DuckDB reading the very
//! same Parquet files in the same run, and the raw disk read of those files as the floor.
//!
//! The bench writes `--records` JSON events through the storage core (the node's own write
//! path: hot tier, sealed segments, Parquet, manifest commits) into an object store on the
//! local file system, then runs four queries with tierlog's engine (over the bucket, as
//! `committed.<topic>` on a node) and with DuckDB: a full scan, a one-minute time range, a scan
//! of the `offset` column alone and a group-by on a JSON field. tierlog runs each with its
//! segment checks (footer digest, row-group CRCs: whole row groups are read) and without. Each
//! is run once to warm up, then `--repeat` times; the median is
//! printed, with the objects and bytes tierlog read.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use futures::StreamExt;
use object_store::ObjectStore;
use object_store::path::Path as ObjectPath;
use query::{BucketCatalog, QueryConfig, QueryEngine};
use tier::store::Decorated;

use super::{BenchArgs, corpus, mbs, read_tree, row};

pub(super) const BASE_TS: i64 = 1_767_225_600_000;
/// Milliseconds between a partition's records.
pub(super) const STEP_MS: i64 = 100;
const COUNTRIES: [&str; 8] = ["de", "fr", "us", "jp", "br", "in", "ng", "au"];
const EVENTS: [&str; 5] = ["click", "view", "purchase", "signup", "logout"];

/// An event of about `len` bytes: JSON with nested fields, the tail cut from the corpus.
pub(super) fn event(p: u32, i: u64, len: usize) -> Vec<u8> {
    let h = (u64::from(p) << 40 ^ i).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let mut v = format!(
        r#"{{"user":{{"id":"u{}","country":"{}"}},"event":"{}","amount":{}.{:02},"seq":{i},"text":""#,
        h % 100_003,
        COUNTRIES[(h >> 20) as usize % COUNTRIES.len()],
        EVENTS[(h >> 30) as usize % EVENTS.len()],
        (h >> 36) % 500,
        (h >> 12) % 100,
    )
    .into_bytes();
    let c = corpus();
    let need = len.saturating_sub(v.len() + 2).min(c.len() / 2);
    let start = (h % (c.len() - need) as u64) as usize;
    v.extend_from_slice(&c[start..start + need]);
    v.extend_from_slice(b"\"}");
    v
}

pub(super) fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One query as each engine spells it.
pub(super) struct Query {
    pub name: &'static str,
    pub tierlog: String,
    duckdb: String,
}

pub(super) fn queries(narrow_from: &str, narrow_to: &str) -> Vec<Query> {
    // Every value is read, decoded and measured as text.
    let full =
        "SELECT COUNT(*) AS n, SUM(length(CAST(value AS VARCHAR))) AS b FROM events".to_string();
    let narrow = format!(
        "SELECT COUNT(*) AS n, SUM(length(CAST(value AS VARCHAR))) AS b FROM events \
         WHERE timestamp >= TIMESTAMP '{narrow_from}' AND timestamp < TIMESTAMP '{narrow_to}'"
    );
    // DuckDB's CAST(blob AS VARCHAR) escapes quotes; decode() is its UTF-8 conversion.
    let duck = |q: &str| q.replace("CAST(value AS VARCHAR)", "decode(value)");
    vec![
        Query {
            name: "full scan",
            duckdb: duck(&full),
            tierlog: full,
        },
        Query {
            name: "one-minute time range",
            duckdb: duck(&narrow),
            tierlog: narrow,
        },
        Query {
            // One narrow column: without checks only its pages are read.
            name: "offset column only",
            tierlog: r#"SELECT SUM("offset" % 7) AS s FROM events"#.into(),
            duckdb: r#"SELECT SUM("offset" % 7) AS s FROM events"#.into(),
        },
        Query {
            name: "group-by on a JSON field",
            tierlog: "SELECT json_get_str(value, 'user.country') AS c, COUNT(*) AS n \
                      FROM events GROUP BY 1 ORDER BY 1"
                .into(),
            duckdb:
                "SELECT json_extract_string(decode(value), '$.user.country') AS c, COUNT(*) AS n \
                     FROM events GROUP BY 1 ORDER BY 1"
                    .into(),
        },
    ]
}

/// The queries over a history of `per_partition` records a partition written as [`event`]s
/// `STEP_MS` apart: the time range is the minute in its middle.
pub(super) fn history_queries(per_partition: u64) -> Vec<Query> {
    let mid = BASE_TS + per_partition as i64 * STEP_MS / 2;
    let fmt = |ms: i64| {
        let secs = ms / 1000;
        let (d, s) = (secs / 86_400, secs % 86_400);
        // Days after 2026-01-01 (the bench's data spans days, not months).
        format!(
            "2026-01-{:02} {:02}:{:02}:{:02}",
            1 + d,
            s / 3600,
            s % 3600 / 60,
            s % 60
        )
    };
    let mid = mid - mid % 60_000;
    queries(&fmt(mid - BASE_TS), &fmt(mid - BASE_TS + 60_000))
}

/// What one query did on tierlog: median time, then (first row, rows, scan summary, objects
/// read, bytes read) of the first timed run.
pub(super) type Ran = (f64, (Vec<String>, usize, query::ScanSummary, usize, u64));

/// Runs each query once to warm up and `repeat` times timed.
pub(super) async fn run_tierlog(
    store: &Arc<dyn ObjectStore>,
    root: &str,
    catalog: &Arc<BucketCatalog>,
    qs: &[Query],
    repeat: usize,
    verify_checksums: bool,
) -> anyhow::Result<Vec<Ran>> {
    let decorated = Arc::new(Decorated::new(store.clone()));
    let stats = decorated.stats.clone();
    let engine = QueryEngine::new(
        catalog.clone(),
        decorated as Arc<dyn ObjectStore>,
        QueryConfig {
            memory_limit: 2 << 30,
            verify_checksums,
            ..QueryConfig::default()
        },
    )?;
    let mut ours = Vec::new();
    for q in qs {
        let run_once = || async {
            let t = Instant::now();
            let mut s = engine.execute(&q.tierlog).await?;
            let mut first = Vec::new();
            let mut rows = 0usize;
            while let Some(b) = s.next().await {
                let b = b?;
                if rows == 0 && b.num_rows() > 0 {
                    first = (0..b.num_columns())
                        .map(|c| {
                            arrow_cast::display::array_value_to_string(b.column(c), 0)
                                .unwrap_or_default()
                        })
                        .collect();
                }
                rows += b.num_rows();
            }
            anyhow::Ok((t.elapsed(), first, rows, s.scan_summary()))
        };
        run_once().await?;
        let mut times = Vec::new();
        let mut last = None;
        for i in 0..repeat {
            if i == 0 {
                stats.reset_reads();
            }
            let (took, first, rows, scan) = run_once().await?;
            if i == 0 {
                last = Some((
                    first,
                    rows,
                    scan,
                    stats.objects_read(&format!("{root}/topics")).len(),
                    stats.get_bytes(),
                ));
            }
            times.push(took.as_secs_f64());
        }
        ours.push((median(times), last.context("at least one run")?));
    }
    Ok(ours)
}

/// Writes the history through the storage core and commits all of it to the bucket.
async fn write(args: &BenchArgs, store: Arc<dyn ObjectStore>, hot: &Path) -> anyhow::Result<()> {
    let cfg = tier::TierConfig {
        data_dir: hot.to_path_buf(),
        fsync: tier::FsyncPolicy::Never,
        segment_bytes: args.segment_bytes,
        max_batch_bytes: (args.batch_bytes * 2).min(args.segment_bytes as usize),
        hot_budget_bytes: 64 << 30,
        ..Default::default()
    };
    let t = tier::Tier::open(cfg, store, ObjectPath::from("bench")).await?;
    let per_partition = args.records / u64::from(args.partitions);
    let mut tasks = Vec::new();
    for p in 0..args.partitions {
        t.open_partition("events", p, 1).await?;
        let (t, len, batch_bytes) = (t.clone(), args.record_bytes, args.batch_bytes);
        tasks.push(tokio::spawn(async move {
            let mut bb = tier::BatchBuilder::new(tier::Compression::None);
            for i in 0..per_partition {
                let v = event(p, i, len);
                let k = format!("user-{}", i % 10_007);
                let ts = BASE_TS + i as i64 * STEP_MS + i64::from(p);
                bb.push(ts, Some(k.as_bytes()), Some(&v[..]), &[]);
                if bb.estimated_size() >= batch_bytes || i + 1 == per_partition {
                    let b = std::mem::replace(
                        &mut bb,
                        tier::BatchBuilder::new(tier::Compression::None),
                    );
                    t.append("events", p, b.build()?).await?;
                }
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    t.close(true).await?;
    Ok(())
}

pub async fn run(args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    if args.records < u64::from(args.partitions) {
        bail!("--records must be at least --partitions");
    }
    if args.repeat == 0 {
        bail!("--repeat must be at least 1");
    }
    let bucket = dir.join("bucket");
    std::fs::create_dir_all(&bucket)?;
    let (store, _) = tier::store::open_store(&format!("file://{}", bucket.display()), &[])?;
    let start = Instant::now();
    write(args, store.clone(), &dir.join("hot")).await?;
    let wrote = start.elapsed();
    let _ = std::fs::remove_dir_all(dir.join("hot"));

    // The committed segments, as any engine finds them (through the manifests).
    let catalog = Arc::new(BucketCatalog::new(store.clone(), ObjectPath::from("bench")));
    let mut files = Vec::new();
    for t in query::Catalog::topics(catalog.as_ref()).await? {
        for p in t.partitions {
            let s = query::Catalog::snapshot(catalog.as_ref(), &t.name, p, false).await?;
            files.extend(s.cold.segments.into_iter().map(|(path, e)| (path, e.size)));
        }
    }
    let parquet_bytes: u64 = files.iter().map(|(_, s)| s).sum();
    row(
        "history written (storage core → Parquet)",
        format!("{} records", args.records),
        &format!(
            "{} segments, {:.0} MB of Parquet, {:.1} s",
            files.len(),
            parquet_bytes as f64 / 1e6,
            wrote.as_secs_f64()
        ),
    );
    let (raw, took) = read_tree(&bucket.join("bench"))?;
    row(
        "baseline: raw read of the bucket's files",
        format!("{:.0} MB/s", mbs(raw, took)),
        &format!(
            "{:.0} MB in {:.1} ms (page cache)",
            raw as f64 / 1e6,
            took.as_secs_f64() * 1e3
        ),
    );

    let qs = history_queries(args.records / u64::from(args.partitions));

    // tierlog, with the segment checks (the default) and without.
    let ours = run_tierlog(&store, "bench", &catalog, &qs, args.repeat, true).await?;
    let unchecked = run_tierlog(&store, "bench", &catalog, &qs, args.repeat, false).await?;

    // DuckDB, same files, same run.
    let spec = dir.join("duckdb-spec.json");
    let script = dir.join("bench_duckdb.py");
    std::fs::write(&script, include_str!("../bench_duckdb.py"))?;
    let local: Vec<String> = files
        .iter()
        .map(|(p, _)| bucket.join(p.as_ref()).display().to_string())
        .collect();
    std::fs::write(
        &spec,
        serde_json::to_vec(&serde_json::json!({
            "files": local,
            "queries": qs.iter().map(|q| q.duckdb.as_str()).collect::<Vec<_>>(),
            "repeat": args.repeat,
        }))?,
    )?;
    let out = tokio::process::Command::new(&args.python)
        .arg(&script)
        .arg(&spec)
        .output()
        .await
        .with_context(|| format!("running {} for the DuckDB baseline", args.python))?;
    let duck: Option<Vec<serde_json::Value>> = if out.status.success() {
        serde_json::from_slice(&out.stdout).ok()
    } else {
        eprintln!(
            "DuckDB baseline unavailable ({}): {}",
            args.python,
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        );
        None
    };

    println!();
    let full_objects = ours[0].1.3;
    let full_bytes = ours[0].1.4;
    for (i, (q, (t, (first, rows, scan, objects, bytes)))) in qs.iter().zip(&ours).enumerate() {
        println!("  {}", q.name);
        row(
            "    tierlog",
            format!("{:.3} s", t),
            &format!(
                "{rows} rows; {} of {} segments, {objects} objects / {:.1} MB read",
                scan.segments_scanned,
                scan.segments_total,
                *bytes as f64 / 1e6
            ),
        );
        let (ut, (ufirst, _, _, _, ubytes)) = &unchecked[i];
        row(
            "    tierlog, checks off (verify_checksums = false)",
            format!("{ut:.3} s"),
            &format!(
                "{:.1} MB read; checks cost {:.2}x; first row {}",
                *ubytes as f64 / 1e6,
                t / ut,
                if ufirst == first {
                    "identical"
                } else {
                    "DIFFERS"
                }
            ),
        );
        if i == 1 {
            row(
                "    tierlog without pruning (= full scan)",
                format!("{full_objects} objects"),
                &format!("{:.1} MB read", full_bytes as f64 / 1e6),
            );
        }
        match duck.as_ref().and_then(|d| d.get(i)) {
            Some(d) => {
                let times: Vec<f64> = serde_json::from_value(d["times"].clone())?;
                let dt = median(times);
                let theirs: Vec<String> = serde_json::from_value(d["first"].clone())?;
                let same = theirs == *first;
                row(
                    "    DuckDB, same files",
                    format!("{dt:.3} s"),
                    &format!(
                        "tierlog/DuckDB {:.2}x; first row {}",
                        t / dt,
                        if same {
                            "identical".to_string()
                        } else {
                            format!("DIFFERS: {first:?} vs {theirs:?}")
                        }
                    ),
                );
            }
            None => row("    DuckDB, same files", "n/a".into(), ""),
        }
    }
    let full = ours[0].0;
    let narrow = ours[1].0;
    println!();
    row(
        "full scan / one-minute range",
        format!("{:.1}x", full / narrow),
        "(target ≥ 10x)",
    );
    if let Some(d) = &duck {
        let dt: Vec<f64> = serde_json::from_value(d[0]["times"].clone())?;
        row(
            "full scan: tierlog / DuckDB",
            format!("{:.2}x", full / median(dt)),
            "(target ≤ 1.2x)",
        );
    }
    Ok(())
}
