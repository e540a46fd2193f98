//! SQL over a topic's committed history: tierlog's answers against DuckDB reading the same
//! Parquet files (found through the manifests alone), pruning counted in objects read, and the
//! errors a user sees.

use std::sync::Arc;
use std::time::Duration;

use arrow_array::RecordBatch;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use query::{BucketCatalog, Error as QueryError, QueryConfig, QueryEngine};
use tier::store::{Decorated, StoreStats, open_store};
use tierlog_tests::python;

use super::{config, open, produce};

/// A query as tierlog runs it and as DuckDB runs it (same answer expected).
struct Case {
    name: &'static str,
    tierlog: &'static str,
    duckdb: &'static str,
}

const fn same(name: &'static str, sql: &'static str) -> Case {
    Case {
        name,
        tierlog: sql,
        duckdb: sql,
    }
}

const CASES: &[Case] = &[
    same("count", "SELECT COUNT(*) AS n FROM events"),
    same(
        "per partition",
        r#"SELECT partition, COUNT(*) AS n, MIN("offset") AS lo, MAX("offset") AS hi,
                  COUNT(DISTINCT "offset") AS d
           FROM events GROUP BY partition ORDER BY partition"#,
    ),
    same(
        "one second",
        "SELECT partition, COUNT(*) AS n FROM events
         WHERE timestamp >= TIMESTAMP '2026-01-01 00:05:00'
           AND timestamp < TIMESTAMP '2026-01-01 00:05:01'
         GROUP BY partition ORDER BY partition",
    ),
    same(
        "offset range",
        r#"SELECT COUNT(*) AS n, SUM("offset") AS s FROM events
           WHERE partition = 3 AND "offset" BETWEEN 120000 AND 180000"#,
    ),
    same(
        "per minute",
        "SELECT date_part('minute', timestamp) AS m, COUNT(*) AS n FROM events
         GROUP BY 1 ORDER BY 1",
    ),
    Case {
        name: "json group-by",
        tierlog: "SELECT json_get_str(value, 'user.country') AS country,
                         json_get_str(value, 'event') AS kind,
                         COUNT(*) AS n, SUM(json_get_int(value, 'seq')) AS s
                  FROM events GROUP BY 1, 2 ORDER BY 1, 2",
        duckdb: "SELECT json_extract_string(decode(value), '$.user.country') AS country,
                        json_extract_string(decode(value), '$.event') AS kind,
                        COUNT(*) AS n, SUM(CAST(json_extract(decode(value), '$.seq') AS BIGINT)) AS s
                 FROM events GROUP BY 1, 2 ORDER BY 1, 2",
    },
    Case {
        name: "json numeric filter",
        tierlog: "SELECT COUNT(*) AS n, SUM(json_get_float(value, 'amount')) AS total
                  FROM events WHERE json_get_float(value, 'amount') >= 450.5",
        duckdb: "SELECT COUNT(*) AS n, SUM(CAST(json_extract(decode(value), '$.amount') AS DOUBLE)) AS total
                 FROM events WHERE CAST(json_extract(decode(value), '$.amount') AS DOUBLE) >= 450.5",
    },
    Case {
        name: "keys in an offset range",
        tierlog: r#"SELECT as_text(key) AS k, COUNT(*) AS n FROM events
                    WHERE partition = 2 AND "offset" BETWEEN 1000 AND 50000
                    GROUP BY 1 ORDER BY 2 DESC, 1 NULLS FIRST LIMIT 10"#,
        duckdb: r#"SELECT decode(key) AS k, COUNT(*) AS n FROM events
                   WHERE partition = 2 AND "offset" BETWEEN 1000 AND 50000
                   GROUP BY 1 ORDER BY 2 DESC, 1 NULLS FIRST LIMIT 10"#,
    },
];

/// Rows of a result as JSON values, columns in order.
pub(super) fn rows(batches: &[RecordBatch]) -> Vec<Vec<serde_json::Value>> {
    let mut out = Vec::new();
    for b in batches {
        let names: Vec<String> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        let mut w = arrow_json::ArrayWriter::new(Vec::new());
        w.write(b).unwrap();
        w.finish().unwrap();
        let buf = w.into_inner();
        if buf.is_empty() {
            continue;
        }
        let objects: Vec<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_slice(&buf).unwrap();
        for o in objects {
            out.push(
                names
                    .iter()
                    .map(|n| o.get(n).cloned().unwrap_or(serde_json::Value::Null))
                    .collect(),
            );
        }
    }
    out
}

/// Values equal, numbers compared as numbers (floats to 1e-9 relative).
fn same_value(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0),
        _ => a == b,
    }
}

fn parquet_objects(stats: &StoreStats) -> usize {
    stats
        .objects_read("cluster/topics")
        .iter()
        .filter(|p| p.as_ref().ends_with(".parquet"))
        .count()
}

/// 1.2 million records in four partitions and many segments: eight queries give DuckDB's answers,
/// and narrow queries read only the segments that can match.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_answers_match_duckdb_and_prune_segments() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let bucket = dir.path().join("bucket");
    let (store, _) = open_store(bucket.to_str().unwrap(), &[]).unwrap();
    const PARTS: u32 = 4;
    const N: i64 = 300_000;
    {
        let t = open(config(&dir.path().join("hot"), 768 << 10), store.clone()).await;
        let mut tasks = Vec::new();
        for p in 0..PARTS {
            t.open_partition("events", p, 1).await.unwrap();
            let t = t.clone();
            tasks.push(tokio::spawn(
                async move { produce(&t, p, 0, N, 1000).await },
            ));
        }
        for task in tasks {
            task.await.unwrap();
        }
        t.close(true).await.unwrap();
    }

    let decorated = Arc::new(Decorated::new(store.clone()));
    let stats = decorated.stats.clone();
    let catalog = Arc::new(BucketCatalog::new(store.clone(), Path::from("cluster")));
    let engine = QueryEngine::new(
        catalog,
        decorated.clone() as Arc<dyn ObjectStore>,
        QueryConfig::default(),
    )
    .unwrap();

    let mut ours = Vec::new();
    for case in CASES {
        let (_, batches) = engine
            .collect(case.tierlog)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", case.name));
        ours.push(rows(&batches));
    }
    assert_eq!(ours[0], vec![vec![serde_json::json!(PARTS as i64 * N)]]);

    let duck: Vec<&str> = CASES.iter().map(|c| c.duckdb).collect();
    let theirs = tierlog_tests::duckdb_sql(
        &py,
        &bucket.join("cluster/topics/events"),
        &duck,
        &dir.path().join("queries.json"),
    );
    let files = theirs["files"].as_u64().unwrap();
    assert!(files >= 40, "many segments: {files}");
    for ((case, ours), theirs) in CASES
        .iter()
        .zip(&ours)
        .zip(theirs["results"].as_array().unwrap())
    {
        let theirs: Vec<Vec<serde_json::Value>> = serde_json::from_value(theirs.clone()).unwrap();
        assert!(!ours.is_empty(), "{}: no rows", case.name);
        let equal = ours.len() == theirs.len()
            && ours
                .iter()
                .zip(&theirs)
                .all(|(a, b)| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| same_value(x, y)));
        assert!(
            equal,
            "{}: tierlog and DuckDB differ\n tierlog: {ours:?}\n  duckdb: {theirs:?}",
            case.name
        );
    }

    // Pruning, counted in objects read from the bucket.
    let full = "SELECT COUNT(*) FROM events WHERE json_get_int(value, 'seq') >= 0";
    let narrow = CASES[2].tierlog;
    let range = CASES[3].tierlog;
    let mut seen = Vec::new();
    for sql in [full, narrow, range] {
        stats.reset_reads();
        let mut s = engine.execute(sql).await.unwrap();
        while let Some(b) = futures::StreamExt::next(&mut s).await {
            b.unwrap();
        }
        seen.push((s.scan_summary(), parquet_objects(&stats)));
    }
    let (full_scan, full_objects) = seen[0];
    assert_eq!(full_scan.segments_total, files);
    assert_eq!(full_scan.segments_scanned, files);
    assert_eq!(
        full_objects as u64, files,
        "a full scan reads every segment"
    );
    for (what, (scan, objects)) in [("time range", seen[1]), ("offset range", seen[2])] {
        assert!(
            scan.segments_scanned <= 8 && objects as u64 == scan.segments_scanned,
            "{what}: {objects} of {files} segments read ({scan:?})"
        );
        assert!(objects >= 1);
        assert!(scan.segment_bytes_scanned * 10 < full_scan.segment_bytes_total);
    }
    assert_eq!(
        seen[2].0.partitions_scanned, 1,
        "partition = 3 reads one manifest"
    );
}

/// The text of a result (EXPLAIN output), every cell.
fn cell_text(batches: &[RecordBatch]) -> String {
    rows(batches)
        .iter()
        .flatten()
        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until no query runs on `engine` (panics after 30 s: a query that did not stop).
async fn wait_until_idle(engine: &QueryEngine) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while engine.running_queries() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a cancelled query kept running"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[track_caller]
fn err<T>(r: query::Result<T>) -> QueryError {
    match r {
        Ok(_) => panic!("expected an error"),
        Err(e) => e,
    }
}

/// Bad queries get errors that say what is wrong; none of them stops the engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_store(dir.path().join("bucket").to_str().unwrap(), &[]).unwrap();
    {
        let t = open(config(&dir.path().join("hot"), 1 << 20), store.clone()).await;
        t.open_partition("events", 0, 1).await.unwrap();
        produce(&t, 0, 0, 300_000, 1000).await;
        t.close(true).await.unwrap();
    }
    let catalog = Arc::new(BucketCatalog::new(store.clone(), Path::from("cluster")));
    let small = QueryConfig {
        memory_limit: 48 << 20,
        threads: 1,
        spill_dir: Some(dir.path().join("spill")),
        ..QueryConfig::default()
    };
    std::fs::create_dir_all(dir.path().join("spill")).unwrap();
    let engine = QueryEngine::new(catalog.clone(), store.clone(), small).unwrap();

    let e = err(engine.collect("SELEC COUNT(*) FROM events").await);
    assert!(matches!(e, QueryError::Invalid(_)), "{e:?}");
    assert!(e.to_string().contains("SELEC"), "{e}");

    let e = err(engine.collect("SELECT * FROM nope WHERE 1 = 1").await);
    assert!(
        matches!(&e, QueryError::UnknownTopic(t) if t == "nope"),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        "unknown topic `nope` (SHOW TABLES lists the topics)"
    );

    let e = err(engine.collect("SELECT no_such_column FROM events").await);
    assert!(matches!(e, QueryError::Invalid(_)), "{e:?}");
    assert!(e.to_string().contains("no_such_column"), "{e}");

    for statement in [
        "CREATE TABLE t AS SELECT 1",
        "COPY (SELECT 1) TO '/tmp/tierlog-copy.csv'",
        "INSERT INTO events SELECT * FROM events",
        "SET datafusion.execution.batch_size = 1",
        "DROP TABLE events",
    ] {
        let e = err(engine.collect(statement).await);
        assert!(matches!(e, QueryError::NotAllowed(_)), "{statement}: {e:?}");
        assert!(e.to_string().contains("is not a query"), "{e}");
    }
    assert!(!std::path::Path::new("/tmp/tierlog-copy.csv").exists());

    // A sort and a grouping of ~60 MB in 48 MiB spill to disk and complete.
    for sql in [
        "SELECT \"offset\" FROM events ORDER BY value DESC",
        "SELECT value, COUNT(*) FROM events GROUP BY value",
    ] {
        let (_, b) = engine
            .collect(&format!("EXPLAIN ANALYZE {sql}"))
            .await
            .unwrap();
        let plan = cell_text(&b);
        let spills: u64 = plan
            .split("spill_count=")
            .skip(1)
            .filter_map(|s| {
                s.split(|c: char| !c.is_ascii_digit())
                    .next()?
                    .parse::<u64>()
                    .ok()
            })
            .sum();
        assert!(spills > 0, "{sql}: nothing spilled\n{plan}");
        let (_, b) = engine.collect(sql).await.unwrap();
        assert_eq!(
            b.iter().map(RecordBatch::num_rows).sum::<usize>(),
            300_000,
            "{sql}"
        );
    }
    // What cannot spill (the build side of a hash join) fails with the limit in the message.
    let e = err(engine
        .collect("SELECT COUNT(*) FROM events a JOIN events b ON a.value = b.value")
        .await);
    assert!(
        matches!(e, QueryError::MemoryLimit { limit_mib: 48, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("memory limit of 48 MiB"), "{e}");

    // A deadline stops a long query.
    let short = QueryConfig {
        timeout: Duration::from_millis(200),
        ..QueryConfig::default()
    };
    let engine2 = QueryEngine::new(catalog, store.clone(), short).unwrap();
    let e = err(engine2
        .collect("SELECT COUNT(*) FROM events a, events b WHERE a.value < b.value")
        .await);
    assert!(matches!(e, QueryError::Timeout(_)), "{e:?}");
    assert!(e.is_retryable());
    // ... and its work ends: the query stops counting as running.
    wait_until_idle(&engine2).await;

    // A consumer that goes away cancels the query: it counts as running while its stream is
    // held, and stops once the stream is dropped (the 300,000² comparison would take minutes).
    let heavy = engine
        .execute("SELECT COUNT(*) FROM events a, events b WHERE a.value < b.value")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(engine.running_queries(), 1, "the query is running");
    drop(heavy);
    wait_until_idle(&engine).await;

    // The engine still answers after all of that.
    let (_, b) = engine
        .collect("SELECT COUNT(*) AS n FROM events")
        .await
        .unwrap();
    assert_eq!(rows(&b), vec![vec![serde_json::json!(300_000)]]);
}

/// A damaged segment fails a query with a corruption error naming the object, never answers
/// with other values: the scan checks each row group's CRC (and the footer's digest from the
/// manifest) before DataFusion decodes it. The values are random bytes, so the compressor
/// stores them verbatim and one flipped bit in the file is one other value to a reader that
/// does not check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_refuses_a_damaged_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open_store(dir.path().join("bucket").to_str().unwrap(), &[]).unwrap();
    let mut rng = fastrand::Rng::with_seed(7);
    let values: Vec<Vec<u8>> = (0..400)
        .map(|_| (0..64).map(|_| rng.u8(..)).collect())
        .collect();
    {
        let t = open(config(&dir.path().join("hot"), 1 << 20), store.clone()).await;
        t.open_partition("events", 0, 1).await.unwrap();
        let mut b = tier::BatchBuilder::new(tier::Compression::None);
        for (i, v) in values.iter().enumerate() {
            b.push(1_767_225_600_000 + i as i64, None, Some(v), &[]);
        }
        t.append("events", 0, b.build().unwrap()).await.unwrap();
        t.close(true).await.unwrap();
    }
    let catalog = Arc::new(BucketCatalog::new(store.clone(), Path::from("cluster")));
    let engine = QueryEngine::new(catalog, store.clone(), QueryConfig::default()).unwrap();
    let sql = r#"SELECT "offset", value FROM events ORDER BY "offset""#;
    let (_, batches) = engine.collect(sql).await.unwrap();
    let want = rows(&batches);
    assert_eq!(want.len(), values.len());

    let listed: Vec<_> = futures::TryStreamExt::try_collect(
        store.list(Some(&Path::from("cluster/topics/events/0/log"))),
    )
    .await
    .unwrap();
    let segment = listed
        .iter()
        .find(|m| m.location.as_ref().ends_with(".parquet"))
        .expect("a committed segment")
        .location
        .clone();
    let good = store.get(&segment).await.unwrap().bytes().await.unwrap();
    let at = good
        .windows(64)
        .position(|w| w == values[123].as_slice())
        .expect("the value is stored verbatim")
        + 10;
    store
        .put(&segment, bad_copy(&good, at).into())
        .await
        .unwrap();

    // A fresh engine (no footer cached), as after a restart.
    let catalog = Arc::new(BucketCatalog::new(store.clone(), Path::from("cluster")));
    let engine = QueryEngine::new(catalog, store.clone(), QueryConfig::default()).unwrap();
    let e = err(engine.collect(sql).await);
    assert!(
        matches!(&e, QueryError::Storage(tier::Error::Corrupt { location, .. })
            if location.as_str() == segment.as_ref()),
        "{e:?}"
    );
    assert!(
        e.to_string()
            .contains("row group 0 column 4 checksum mismatch"),
        "{e}"
    );

    // The footer damaged too, where it still parses: the row-group CRC entry renamed, as if
    // the segment predated CRCs. The footer's digest in the manifest catches it.
    let key = tier::cold::parquet::ROW_GROUP_CRC_KEY.as_bytes();
    let name = bad_copy(&good, at)
        .windows(key.len())
        .rposition(|w| w == key)
        .expect("the CRC entry is in the footer");
    let mut bad = bad_copy(&good, at);
    bad[name] ^= 0x20;
    store.put(&segment, bad.into()).await.unwrap();
    let catalog = Arc::new(BucketCatalog::new(store.clone(), Path::from("cluster")));
    let fresh = QueryEngine::new(catalog, store.clone(), QueryConfig::default()).unwrap();
    let e = err(fresh.collect(sql).await);
    assert!(
        matches!(&e, QueryError::Storage(tier::Error::Corrupt { .. })),
        "{e:?}"
    );
    assert!(e.to_string().contains("footer checksum mismatch"), "{e}");

    // Repaired, the same engine answers again: nothing damaged was kept.
    store.put(&segment, good.into()).await.unwrap();
    let (_, batches) = engine.collect(sql).await.unwrap();
    assert_eq!(rows(&batches), want);
}

/// `good` with one bit flipped at `at`.
fn bad_copy(good: &[u8], at: usize) -> Vec<u8> {
    let mut bad = good.to_vec();
    bad[at] ^= 0x04;
    bad
}
