//! SQL on a running node: Arrow Flight SQL from Python's ADBC driver and `tierlog sql`, over a
//! topic whose history is partly committed to the object store and partly still hot.

use std::time::Duration;

use proto::v1 as pb;
use tierlog_tests::{python, tests_dir};

use super::{Node, cli, create};

const PARTS: u32 = 3;
const PER_PART: u64 = 10_000;
const BASE_TS: i64 = 1_767_225_600_000;

/// The CPU a process uses over `over`, in cores (from /proc, in clock ticks of 1/100 s).
async fn cpu_cores(pid: u32, over: Duration) -> f64 {
    let ticks = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
            .split_whitespace()
            .collect();
        // utime and stime: fields 14 and 15 of the line, 12 and 13 after the name.
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    };
    let before = ticks();
    tokio::time::sleep(over).await;
    (ticks() - before) as f64 / 100.0 / over.as_secs_f64()
}

fn event(p: u32, i: u64) -> pb::Record {
    pb::Record {
        key: Some(format!("k{}", i % 10).into_bytes().into()),
        value: Some(
            format!(
                r#"{{"user":{{"id":"u{}"}},"n":{i},"p":{p},"pad":"{}"}}"#,
                i % 7,
                "x".repeat((i % 40) as usize)
            )
            .into_bytes()
            .into(),
        ),
        headers: vec![],
        timestamp_ms: BASE_TS + i as i64 * 10,
    }
}

fn run_python(py: &str, script: &str, args: &[&str]) -> serde_json::Value {
    let out = std::process::Command::new(py)
        .arg(tests_dir().join("python").join(script))
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "{script} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("python prints JSON")
}

/// Part of the history in Parquet, part hot: the live table sees all of it, `committed.` only
/// the Parquet part; ADBC and the CLI get the same answers and clear errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_over_flight_from_adbc_and_the_cli() {
    let Some(py) = python() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("tierlog.toml");
    std::fs::write(
        &config,
        "max_record_bytes = 65536\n[tier]\nsegment_bytes = 131072\nmax_batch_bytes = 131072\n",
    )
    .unwrap();
    let node = Node::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let mut c = node.client().await;
    create(&mut c, "events", PARTS).await;
    for p in 0..PARTS {
        for b in 0..10 {
            let records = (b * 1000..(b + 1) * 1000).map(|i| event(p, i)).collect();
            c.produce(pb::ProduceRequest {
                topic: "events".into(),
                partition: p,
                records,
                compression: pb::Compression::None as i32,
                ..Default::default()
            })
            .await
            .unwrap();
        }
    }
    // Wait until every partition has committed part of its history (and kept a hot tail).
    let mut committed = 0;
    for _ in 0..500 {
        let d = c
            .describe_topic(pb::DescribeTopicRequest {
                name: "events".into(),
            })
            .await
            .unwrap()
            .into_inner();
        let parts = d.topic.unwrap().partitions;
        if parts.iter().all(|p| p.cold_next > 0) {
            assert!(parts.iter().any(|p| (p.cold_next as u64) < PER_PART));
            committed = parts.iter().map(|p| p.cold_next).sum::<i64>();
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(committed > 0, "segments were committed");
    let total = (PARTS as u64 * PER_PART) as i64;

    let queries = [
        "SELECT COUNT(*) AS n FROM events",
        "SELECT COUNT(*) AS n FROM committed.events",
        "SELECT json_get_str(value, 'user.id') AS u, COUNT(*) AS n, SUM(json_get_int(value, 'n')) AS s
         FROM events GROUP BY 1 ORDER BY 1",
        r#"SELECT partition, MIN("offset") AS lo, MAX("offset") AS hi, COUNT(*) AS n
           FROM events GROUP BY 1 ORDER BY 1"#,
        r#"SELECT as_text(key) AS k, as_text(value) AS v, timestamp FROM events
           WHERE partition = 1 AND "offset" = 1234"#,
        "SELECT * FROM nope",
        "SELEC 1",
        "INSERT INTO events SELECT * FROM events",
    ];
    let qfile = dir.path().join("queries.json");
    std::fs::write(&qfile, serde_json::to_vec(&queries).unwrap()).unwrap();
    let out = run_python(&py, "adbc_sql.py", &[&node.addr, qfile.to_str().unwrap()]);
    let r = out["results"].as_array().unwrap();
    let rows = |i: usize| -> Vec<Vec<serde_json::Value>> {
        serde_json::from_value(r[i]["rows"].clone())
            .unwrap_or_else(|_| panic!("query {i}: {}", r[i]))
    };
    assert_eq!(rows(0), vec![vec![serde_json::json!(total)]]);
    // Uploads go on meanwhile: the object store holds at least what was committed before the
    // query, and at most everything (the upload interval may have sent it all by now).
    let in_parquet = rows(1)[0][0].as_i64().unwrap();
    assert!(
        committed <= in_parquet && in_parquet <= total,
        "{committed} <= {in_parquet} <= {total}"
    );
    let mut want = Vec::new();
    for u in 0..7u64 {
        let ns = (0..PER_PART).filter(|i| i % 7 == u);
        let (n, s) = ns.fold((0u64, 0u64), |(n, s), i| (n + 1, s + i));
        want.push(serde_json::json!([
            format!("u{u}"),
            n * PARTS as u64,
            s * PARTS as u64
        ]));
    }
    assert_eq!(serde_json::json!(rows(2)), serde_json::json!(want));
    let per_part: Vec<_> = (0..PARTS)
        .map(|p| serde_json::json!([p, 0, PER_PART - 1, PER_PART]))
        .collect();
    assert_eq!(serde_json::json!(rows(3)), serde_json::json!(per_part));
    let e = event(1, 1234);
    assert_eq!(
        serde_json::json!(rows(4)),
        serde_json::json!([[
            "k4",
            String::from_utf8(e.value.unwrap().to_vec()).unwrap(),
            "2026-01-01T00:00:12.340000+00:00"
        ]])
    );
    let error = |i: usize| r[i]["error"].as_str().unwrap_or_default().to_string();
    assert!(error(5).contains("unknown topic `nope`"), "{}", r[5]);
    assert!(error(6).contains("invalid query"), "{}", r[6]);
    assert!(error(7).contains("is not a query"), "{}", r[7]);
    let tables: Vec<String> = serde_json::from_value(out["tables"].clone()).unwrap();
    assert_eq!(
        tables,
        ["tierlog.committed.events", "tierlog.public.events"]
    );
    assert_eq!(
        out["schema"],
        serde_json::json!([
            "partition",
            "offset",
            "timestamp",
            "key",
            "value",
            "headers",
            "producer_id",
            "producer_epoch",
            "sequence",
            "transactional"
        ])
    );

    // The CLI: a table, CSV, JSON lines, a Parquet export, and errors in words.
    let s = node.addr.clone();
    let per_partition =
        "SELECT partition, COUNT(*) AS n FROM events GROUP BY partition ORDER BY partition";
    let (ok, out, err) = cli(&s, &["sql", per_partition], None);
    assert!(ok, "{err}");
    assert_eq!(
        out,
        "+-----------+-------+\n\
         | partition | n     |\n\
         +-----------+-------+\n\
         | 0         | 10000 |\n\
         | 1         | 10000 |\n\
         | 2         | 10000 |\n\
         +-----------+-------+\n"
    );
    let (ok, out, _) = cli(&s, &["sql", per_partition, "--format", "csv"], None);
    assert!(ok);
    assert_eq!(out, "partition,n\n0,10000\n1,10000\n2,10000\n");
    let one = r#"SELECT key, value FROM events WHERE partition = 2 AND "offset" = 7"#;
    let (ok, out, _) = cli(&s, &["sql", one, "--format", "json"], None);
    assert!(ok);
    let e = event(2, 7);
    let line: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(
        line,
        serde_json::json!({
            "key": "k7",
            "value": String::from_utf8(e.value.unwrap().to_vec()).unwrap()
        })
    );
    let file = dir.path().join("events.parquet");
    let (ok, _, err) = cli(
        &s,
        &[
            "sql",
            "SELECT * FROM events",
            "--format",
            "parquet",
            "--output",
            file.to_str().unwrap(),
        ],
        None,
    );
    assert!(ok, "{err}");
    let count = std::process::Command::new(&py)
        .args([
            "-c",
            "import sys, pyarrow.parquet as pq; print(pq.read_table(sys.argv[1]).num_rows)",
            file.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&count.stdout).trim(),
        total.to_string()
    );
    let (ok, _, err) = cli(
        &s,
        &["sql", "SELECT * FROM events", "--format", "parquet"],
        None,
    );
    assert!(!ok);
    assert!(err.contains("add --output FILE"), "{err}");
    let (ok, _, err) = cli(&s, &["sql", "SELECT COUNT(*) FROM nope"], None);
    assert!(!ok);
    assert!(
        err.contains("unknown topic `nope` (SHOW TABLES lists the topics)"),
        "{err}"
    );

    // A heavy query (a 30,000 × 30,000 join on a costly condition no pair meets: minutes of
    // work, nothing to show until the end) does not stop ingest: produce keeps being
    // acknowledged while it runs; the client then goes away mid-query.
    let mut heavy = std::process::Command::new(super::binary())
        .args(["--server", &s, "sql"])
        .arg(
            "SELECT COUNT(*) FROM events a, events b \
             WHERE json_get_int(as_text(a.value) || as_text(b.value), 'n') = -1",
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for b in 10..20 {
        let records = (b * 1000..(b + 1) * 1000).map(|i| event(0, i)).collect();
        let r = c
            .produce(pb::ProduceRequest {
                topic: "events".into(),
                partition: 0,
                records,
                ..Default::default()
            })
            .await
            .expect("produce during a heavy query")
            .into_inner();
        assert_eq!(r.base_offset, b as i64 * 1000);
    }
    assert!(
        heavy.try_wait().unwrap().is_none(),
        "the heavy query was still running while produce was acknowledged"
    );
    let pid = node.child.id();
    // The query runs at the lowest CPU priority: on a busy machine a second may pass with
    // little of it, so the node is watched for up to 15 s until it shows the work.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let busy = cpu_cores(pid, Duration::from_secs(1)).await;
        if busy > 0.3 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node does not compute the query: {busy:.2} cores"
        );
    }
    heavy.kill().unwrap();
    heavy.wait().unwrap();
    // The node stops computing once the client is gone (the join alone would run for minutes).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let used = cpu_cores(pid, Duration::from_secs(1)).await;
        if used < 0.2 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the node kept computing after the client went away: {used:.2} cores"
        );
    }
    let (ok, out, err) = cli(
        &s,
        &[
            "sql",
            "SELECT COUNT(*) AS n FROM events WHERE partition = 0",
            "--format",
            "csv",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out, "n\n20000\n");
    node.stop();
}
