//! The web console: its pages in a real browser (Debian's chromium driven by playwright-core,
//! tests/console/check.cjs) show a topic's partitions, a group's lag, records read back from the
//! cold tier and a SQL answer, with no console errors, and keep a screenshot of each page; its
//! JSON API answers bad input with clear errors and bounded output; changes are refused unless
//! the node allows them.

use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use base64::Engine as _;
use client::Client;
use proto::v1 as pb;
use serde_json::{Value, json};

use super::Node;

/// One HTTP/1.1 request: (status, JSON body or `null`).
fn call(addr: &str, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP port");
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("an HTTP answer");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    // Chunked answers: the JSON is the one chunk between its size line and the end.
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        body.split_once("\r\n").map_or("", |(_, rest)| {
            rest.rsplit_once("\r\n0\r\n").map_or(rest, |(b, _)| b)
        })
    } else {
        body
    };
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

async fn produce(c: &Client, topic: &str, partition: u32, values: Vec<Vec<u8>>) {
    c.leader_rpc(topic, partition)
        .await
        .unwrap()
        .produce(pb::ProduceRequest {
            topic: topic.into(),
            partition,
            acks: pb::Acks::All as i32,
            records: values
                .into_iter()
                .enumerate()
                .map(|(i, v)| pb::Record {
                    key: Some(format!("k{i}").into_bytes().into()),
                    value: Some(v.into()),
                    headers: vec![pb::Header {
                        key: "source".into(),
                        value: Some(b"console-test".to_vec().into()),
                    }],
                    timestamp_ms: 0,
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
}

/// Where the screenshots are kept: beside the build, so a CI run's are found after it.
fn artifacts() -> std::path::PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| tierlog_tests::tests_dir().join("../target"));
    target.join("test-artifacts/console")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_topics_groups_cold_records_and_sql_in_a_browser() {
    let Some(browser) = tierlog_tests::browser() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Uploaded segments leave the hot tier at once: reads come from the object store.
    let config = dir.path().join("node.toml");
    std::fs::write(&config, "[tier]\nhot_retention_ms = 0\n").unwrap();
    let node = Node::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let c = Client::connect(&node.addr).await.unwrap();
    c.create_topic("browsed", 3).await.unwrap();
    for p in 0..3u32 {
        produce(
            &c,
            "browsed",
            p,
            (0..10)
                .map(|i| format!("event {p}-{i}").into_bytes())
                .collect(),
        )
        .await;
    }
    // A group 6 records behind on partition 0 and caught up on partition 1.
    let commit = |partition, offset| pb::GroupOffset {
        topic: "browsed".into(),
        partition,
        offset,
        metadata: String::new(),
    };
    c.commit_offsets("readers", vec![commit(0, 4), commit(1, 10)])
        .await
        .unwrap();
    // A restart seals the active segments; uploaded and sealed, they leave the hot tier.
    drop(c);
    node.stop();
    let node = Node::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let c = Client::connect(&node.addr).await.unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, t) = call(&node.http, "GET", "/api/v1/topics/browsed", None);
        assert_eq!(status, 200, "{t}");
        if t["partition_details"][0]["hot_start"].as_i64() >= Some(10) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "records stayed hot: {t}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // The API: figures as the core reports them, bad input refused with a reason.
    let (status, r) = call(
        &node.http,
        "GET",
        "/api/v1/records?topic=browsed&partition=0&offset=3&limit=2",
        None,
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["source"], "cold", "{r}");
    assert_eq!(r["records"][0]["offset"], 3);
    let value = base64::engine::general_purpose::STANDARD
        .decode(r["records"][0]["value"]["base64"].as_str().unwrap())
        .unwrap();
    assert_eq!(value, b"event 0-3");
    for (path, want, says) in [
        (
            "/api/v1/records?topic=browsed&partition=x",
            400,
            "partition must be a number",
        ),
        ("/api/v1/records?partition=0", 400, "which topic"),
        (
            "/api/v1/records?topic=browsed&offset=1&timestamp=5",
            400,
            "not both",
        ),
        (
            "/api/v1/records?topic=browsed&limit=100000",
            400,
            "limit must be",
        ),
        ("/api/v1/records?topic=nope", 404, "nope"),
        ("/api/v1/topics/nope", 404, "nope"),
        ("/api/v1/groups/never-seen", 404, "never-seen"),
        ("/api/v1/nothing-here", 404, "no API"),
    ] {
        let (status, body) = call(&node.http, "GET", path, None);
        assert_eq!(status, want, "{path}: {body}");
        if want != 200 {
            assert!(
                body["error"].as_str().is_some_and(|e| e.contains(says)),
                "{path}: {body}"
            );
        }
    }
    // A huge value is cut for the page, its size shown.
    produce(&c, "browsed", 2, vec![vec![b'x'; 100_000]]).await;
    let (status, r) = call(
        &node.http,
        "GET",
        "/api/v1/records?topic=browsed&partition=2&offset=10&limit=1",
        None,
    );
    assert_eq!(status, 200, "{r}");
    let v = &r["records"][0]["value"];
    assert_eq!(
        (v["size"].as_u64(), v["truncated"].as_bool()),
        (Some(100_000), Some(true))
    );
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(v["base64"].as_str().unwrap())
            .unwrap()
            .len(),
        4096
    );
    // SQL: rows bounded, a bad query explained.
    let (status, r) = call(
        &node.http,
        "POST",
        "/api/v1/sql",
        Some(&json!({"sql": "SELECT \"offset\" FROM browsed", "max_rows": 5})),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        (r["rows"].as_array().unwrap().len(), &r["truncated"]),
        (5, &json!(true))
    );
    let (status, r) = call(
        &node.http,
        "POST",
        "/api/v1/sql",
        Some(&json!({"sql": "SELEC 1"})),
    );
    assert_eq!(status, 400, "{r}");
    assert!(r["error"].as_str().is_some(), "{r}");
    let (status, r) = call(
        &node.http,
        "POST",
        "/api/v1/sql",
        Some(&json!({"query": 1})),
    );
    assert_eq!(status, 400, "{r}");
    // Read-only by default.
    let (status, r) = call(&node.http, "DELETE", "/api/v1/groups/readers", None);
    assert_eq!(status, 403, "{r}");

    // The pages, in chromium.
    let out = artifacts();
    let spec = json!({
        "topic": "browsed",
        "partitions": 3,
        "group": "readers",
        "group_lag": 6,
        "cold_value": "event 0-0",
        "count": 31,
    });
    let run = Command::new("node")
        .arg(tierlog_tests::tests_dir().join("console/check.cjs"))
        .arg(format!("http://{}", node.http))
        .arg(spec.to_string())
        .arg(&out)
        .env(
            "NODE_PATH",
            std::path::Path::new(&browser).join("node_modules"),
        )
        .output()
        .expect("run node tests/console/check.cjs");
    assert!(
        run.status.success(),
        "{}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
    let summary: Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["group_lag"], 6, "{summary}");
    for page in [
        "overview", "topics", "topic", "groups", "group", "records", "sql",
    ] {
        let shot = out.join(format!("{page}.png"));
        let png = std::fs::read(&shot).unwrap_or_else(|e| panic!("{}: {e}", shot.display()));
        assert!(png.starts_with(b"\x89PNG"), "{}", shot.display());
    }
    node.stop();
}

/// With `[http] console_admin = true` the console may create topics and delete groups.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_changes_need_the_admin_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        "[http]\nconsole_admin = true\nconsole_sql_timeout_ms = 300\n",
    )
    .unwrap();
    let node = Node::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let (status, r) = call(
        &node.http,
        "POST",
        "/api/v1/topics",
        Some(&json!({"name": "made-here", "partitions": 2})),
    );
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["partitions"], 2);
    let (status, r) = call(
        &node.http,
        "POST",
        "/api/v1/topics",
        Some(&json!({"name": "made-here"})),
    );
    assert_eq!(status, 409, "{r}");
    let c = Client::connect(&node.addr).await.unwrap();
    c.commit_offsets(
        "leaving",
        vec![pb::GroupOffset {
            topic: "made-here".into(),
            partition: 0,
            offset: 0,
            metadata: String::new(),
        }],
    )
    .await
    .unwrap();
    // A query that would run for minutes (2,000³ comparisons) is cancelled at the console's
    // time limit.
    produce(
        &c,
        "made-here",
        1,
        (0..2_000).map(|i| format!("{i}").into_bytes()).collect(),
    )
    .await;
    let (status, r) = call(
        &node.http,
        "POST",
        "/api/v1/sql",
        Some(
            &json!({"sql": "SELECT COUNT(*) FROM \"made-here\" a, \"made-here\" b, \"made-here\" c WHERE a.\"offset\" < b.\"offset\" AND b.\"offset\" < c.\"offset\""}),
        ),
    );
    assert_eq!(status, 504, "{r}");
    assert!(r["error"].as_str().unwrap().contains("cancelled"), "{r}");
    let (status, r) = call(&node.http, "DELETE", "/api/v1/groups/leaving", None);
    assert_eq!(status, 200, "{r}");
    let (_, g) = call(&node.http, "GET", "/api/v1/groups", None);
    assert!(
        !g["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["group"] == "leaving"),
        "{g}"
    );
    node.stop();
}
