//! The node's HTTP port: `/metrics` read by a Prometheus parser nobody here wrote (the
//! `prometheus_client` package) while gRPC and Kafka clients produce and consume, and
//! `/readyz` following the metadata store and the object store as they stop and come back.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::process::Command;
use std::time::Duration;

use client::Client;
use proto::v1 as pb;
use serde_json::Value;

use super::{Node, cli};

/// `GET path` over HTTP/1.1: (status, body).
pub(super) fn get(addr: &str, path: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(addr).expect("connect to the HTTP port");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("an HTTP answer");
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_string();
    (status, body)
}

/// A scrape as the Python parser read it.
struct Scrape {
    content_type: String,
    bytes: u64,
    families: BTreeMap<String, String>,
    samples: Vec<(String, BTreeMap<String, String>, f64)>,
}

impl Scrape {
    /// Runs tests/python/scrape.py (after producing `kafka` = (bootstrap, topic, n) records).
    fn take(python: &str, http: &str, kafka: Option<(&str, &str, u32)>) -> Scrape {
        let script = tierlog_tests::tests_dir().join("python/scrape.py");
        let mut cmd = Command::new(python);
        cmd.arg(script).arg(format!("http://{http}/metrics"));
        if let Some((bootstrap, topic, n)) = kafka {
            cmd.args([bootstrap, topic, &n.to_string()]);
        }
        let out = cmd.output().expect("run scrape.py");
        assert!(
            out.status.success(),
            "scrape.py: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).expect("scrape.py prints JSON");
        Scrape {
            content_type: v["content_type"].as_str().unwrap_or_default().to_string(),
            bytes: v["bytes"].as_u64().unwrap(),
            families: v["families"]
                .as_object()
                .unwrap()
                .iter()
                .map(|(k, t)| (k.clone(), t.as_str().unwrap().to_string()))
                .collect(),
            samples: v["samples"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let labels = s[1]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                        .collect();
                    (
                        s[0].as_str().unwrap().to_string(),
                        labels,
                        s[2].as_f64().unwrap(),
                    )
                })
                .collect(),
        }
    }

    /// The value of the sample `name` whose labels include `labels`, summed over the rest.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let hits: Vec<f64> = self
            .samples
            .iter()
            .filter(|(n, l, _)| {
                n == name
                    && labels
                        .iter()
                        .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|(_, _, v)| *v)
            .collect();
        (!hits.is_empty()).then(|| hits.iter().sum())
    }

    /// Every counter sample (`_total`), by name and labels.
    fn counters(&self) -> BTreeMap<String, f64> {
        self.samples
            .iter()
            .filter(|(n, _, _)| n.ends_with("_total"))
            .map(|(n, l, v)| (format!("{n}{l:?}"), *v))
            .collect()
    }
}

/// Scrapes during load: the families exist, counters only grow, records in and out and
/// requests of both front ends are counted, and each group's lag is what `tierlog groups
/// describe` reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_parses_counts_both_front_ends_and_reports_group_lag() {
    let Some(python) = tierlog_tests::python() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let (status, body) = get(&node.http, "/healthz");
    assert_eq!((status, body.as_str()), (200, "ok\n"));
    let (status, body) = get(&node.http, "/nope");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("/metrics"), "{body}");

    let c = Client::connect(&node.addr).await.unwrap();
    c.create_topic("metered", 3).await.unwrap();
    // acks=all: every record is in the object store when the first scrape is taken.
    let producer = client::Producer::new(
        c.clone(),
        client::ProducerConfig {
            acks: client::Acks::All,
            ..client::ProducerConfig::default()
        },
    );
    let mut acks = Vec::new();
    for i in 0..300u32 {
        acks.push(
            producer
                .send(
                    "metered",
                    None,
                    Some(format!("k{i}").into_bytes()),
                    Some(format!("v{i}").into_bytes()),
                    vec![],
                )
                .await
                .unwrap(),
        );
    }
    for a in acks {
        a.await.unwrap().unwrap();
    }
    producer.close().await;

    let first = Scrape::take(&python, &node.http, None);
    assert_eq!(
        first.content_type,
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert_eq!(
        first.value("tierlog_produced_records_total", &[("topic", "metered")]),
        Some(300.0)
    );
    assert_eq!(first.value("tierlog_partitions_led", &[]), Some(3.0));
    assert!(
        first
            .value("tierlog_topic_hot_segments", &[("topic", "metered")])
            .is_some_and(|n| n >= 3.0),
        "each partition has its active segment"
    );
    assert!(
        first
            .value(
                "tierlog_object_store_requests_total",
                &[("op", "put"), ("outcome", "ok")]
            )
            .is_some_and(|n| n >= 3.0),
        "acks=all produce put segments and manifest commits"
    );
    assert!(
        first
            .value("tierlog_upload_convert_duration_seconds_count", &[])
            .is_some_and(|n| n >= 1.0)
            && first
                .value("tierlog_uploaded_bytes_total", &[])
                .is_some_and(|n| n > 0.0),
        "uploads timed and counted"
    );
    assert!(
        first
            .value("tierlog_meta_requests_total", &[("outcome", "ok")])
            .is_some_and(|n| n >= 1.0),
        "creating the topic wrote to the metadata store"
    );
    assert!(
        first
            .value("tierlog_meta_lease_valid_seconds", &[])
            .is_some_and(|s| s > 0.0),
        "the node's lease is current"
    );
    assert_eq!(
        first.value("tierlog_partition_log_end_offset", &[("topic", "metered")]),
        Some(300.0),
        "summed over the partitions"
    );
    assert!(
        first
            .value(
                "tierlog_requests_total",
                &[("protocol", "grpc"), ("api", "Produce"), ("code", "Ok")]
            )
            .is_some_and(|n| n >= 1.0),
        "gRPC produce requests counted"
    );

    // A group reads part of the topic and commits; Kafka clients produce more.
    let (ok, _, err) = cli(
        &node.addr,
        &[
            "consume",
            "metered",
            "--from-beginning",
            "--group",
            "auditors",
            "--max-messages",
            "120",
        ],
        None,
    );
    assert!(ok, "{err}");
    c.commit_offsets(
        "manual",
        vec![pb::GroupOffset {
            topic: "metered".into(),
            partition: 1,
            offset: 7,
            metadata: String::new(),
        }],
    )
    .await
    .unwrap();
    // Two records stamped two hours and one hour ago, and a group at the first: two records
    // and two hours behind.
    c.create_topic("aged", 1).await.unwrap();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let hour = 3_600_000;
    c.leader_rpc("aged", 0)
        .await
        .unwrap()
        .produce(pb::ProduceRequest {
            topic: "aged".into(),
            partition: 0,
            acks: pb::Acks::All as i32,
            records: [2, 1]
                .into_iter()
                .map(|h| pb::Record {
                    key: Some(b"k".to_vec().into()),
                    value: Some(format!("{h} hours ago").into_bytes().into()),
                    headers: vec![],
                    timestamp_ms: now_ms - h * hour,
                })
                .collect(),
            ..Default::default()
        })
        .await
        .unwrap();
    c.commit_offsets(
        "historians",
        vec![pb::GroupOffset {
            topic: "aged".into(),
            partition: 0,
            offset: 0,
            metadata: String::new(),
        }],
    )
    .await
    .unwrap();
    let second = Scrape::take(&python, &node.http, Some((&node.kafka, "metered", 50)));
    assert_eq!(
        second.value("tierlog_produced_records_total", &[("topic", "metered")]),
        Some(350.0)
    );
    assert!(
        second
            .value("tierlog_fetched_records_total", &[("topic", "metered")])
            .is_some_and(|n| n >= 120.0),
        "records handed to the consumer counted"
    );
    assert!(
        second
            .value(
                "tierlog_requests_total",
                &[("protocol", "kafka"), ("api", "Produce")]
            )
            .is_some_and(|n| n >= 1.0),
        "Kafka produce requests counted"
    );
    assert!(
        second
            .value(
                "tierlog_kafka_errors_total",
                &[("api", "Metadata"), ("error", "UNKNOWN_TOPIC_OR_PARTITION")]
            )
            .is_some_and(|n| n >= 1.0),
        "the error code in a Kafka answer counted"
    );
    // A family shows once it has a series.
    for (family, kind) in [
        ("tierlog_requests", "counter"),
        ("tierlog_kafka_errors", "counter"),
        ("tierlog_request_duration_seconds", "histogram"),
        ("tierlog_produced_records", "counter"),
        ("tierlog_produced_bytes", "counter"),
        ("tierlog_fetched_records", "counter"),
        ("tierlog_leadership_changes", "counter"),
        ("tierlog_partitions_led", "gauge"),
        ("tierlog_partition_log_end_offset", "gauge"),
        ("tierlog_partition_committed_offset", "gauge"),
        ("tierlog_partition_upload_lag_records", "gauge"),
        ("tierlog_partition_upload_lag_seconds", "gauge"),
        ("tierlog_topic_hot_bytes", "gauge"),
        ("tierlog_topic_hot_segments", "gauge"),
        ("tierlog_topic_cold_bytes", "gauge"),
        ("tierlog_topic_cold_objects", "gauge"),
        ("tierlog_hot_tier_bytes", "gauge"),
        ("tierlog_hot_tier_budget_bytes", "gauge"),
        ("tierlog_read_cache_bytes", "gauge"),
        ("tierlog_group_lag_records", "gauge"),
        ("tierlog_group_lag_seconds", "gauge"),
        ("tierlog_group_topic_lag_seconds", "gauge"),
        ("tierlog_group_members", "gauge"),
        ("tierlog_object_store_requests", "counter"),
        ("tierlog_object_store_request_duration_seconds", "histogram"),
        ("tierlog_meta_requests", "counter"),
        ("tierlog_meta_request_duration_seconds", "histogram"),
        ("tierlog_meta_lease_valid_seconds", "gauge"),
        ("tierlog_read_cache_reads", "counter"),
        ("tierlog_upload_convert_duration_seconds", "histogram"),
        ("tierlog_upload_commit_duration_seconds", "histogram"),
        ("tierlog_uploaded_bytes", "counter"),
        ("tierlog_group_rebalances", "counter"),
        ("process_cpu_seconds", "counter"),
        ("process_resident_memory_bytes", "gauge"),
        ("process_open_fds", "gauge"),
    ] {
        assert_eq!(
            second.families.get(family).map(String::as_str),
            Some(kind),
            "family {family} in {:?}",
            second.families
        );
    }
    let (a, b) = (first.counters(), second.counters());
    for (series, v) in &a {
        let later = b
            .get(series)
            .unwrap_or_else(|| panic!("{series} went missing"));
        assert!(later >= v, "{series} went down: {v} -> {later}");
    }

    // Lag in time is the age of the first record not consumed, by its timestamp.
    let aged = second
        .value(
            "tierlog_group_lag_seconds",
            &[
                ("group", "historians"),
                ("topic", "aged"),
                ("partition", "0"),
            ],
        )
        .expect("historians' lag in time");
    assert!(
        (7_200.0..7_200.0 + 3_600.0).contains(&aged),
        "two hours behind, read {aged} s"
    );
    assert_eq!(
        second.value(
            "tierlog_group_topic_lag_seconds",
            &[("group", "historians")]
        ),
        Some(aged),
        "one partition: the topic's lag is the partition's"
    );
    let (ok, out, err) = cli(
        &node.addr,
        &["groups", "describe", "historians", "--json"],
        None,
    );
    assert!(ok, "{err}");
    let d: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(d["offsets"][0]["lag"], 2, "{out}");
    let secs = d["offsets"][0]["lag_seconds"].as_f64().unwrap();
    assert!(secs >= aged && secs < 7_200.0 + 3_600.0, "{out}");

    // Lag per group equals high watermark - committed as `groups describe` reports it.
    for group in ["auditors", "manual"] {
        let (ok, out, err) = cli(&node.addr, &["groups", "describe", group, "--json"], None);
        assert!(ok, "{err}");
        let d: Value = serde_json::from_str(&out).unwrap();
        let mut rows = 0;
        for row in d["offsets"].as_array().unwrap() {
            let Some(lag) = row["lag"].as_i64() else {
                continue;
            };
            rows += 1;
            let partition = row["partition"].to_string();
            // Records produced during this test: behind by less than an hour; none when
            // caught up.
            let secs = row["lag_seconds"].as_f64().unwrap_or(-1.0);
            assert!((0.0..3_600.0).contains(&secs), "{out}");
            if lag == 0 {
                assert_eq!(secs, 0.0, "{out}");
            }
            assert_eq!(
                second.value(
                    "tierlog_group_lag_records",
                    &[
                        ("group", group),
                        ("topic", "metered"),
                        ("partition", &partition)
                    ]
                ),
                Some(lag as f64),
                "group {group} partition {partition}: {out}"
            );
        }
        assert!(rows > 0, "{group} committed something: {out}");
    }
    // A group of simple commits (no members) is exported too, by the node that would
    // coordinate it.
    let end_1 = second
        .value(
            "tierlog_partition_log_end_offset",
            &[("topic", "metered"), ("partition", "1")],
        )
        .unwrap();
    assert_eq!(
        second.value("tierlog_group_lag_records", &[("group", "manual")]),
        Some(end_1 - 7.0)
    );
    // The Grafana dashboard asks only for series a node exports.
    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(tierlog_tests::tests_dir().join("../docs/grafana/tierlog.json"))
            .unwrap(),
    )
    .unwrap();
    let names: std::collections::BTreeSet<&str> =
        second.samples.iter().map(|(n, _, _)| n.as_str()).collect();
    let mut asked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        for target in panel["targets"].as_array().unwrap() {
            let expr = target["expr"].as_str().unwrap();
            for token in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if token.starts_with("tierlog_") || token.starts_with("process_") {
                    asked += 1;
                    assert!(
                        names.contains(token),
                        "panel {:?} asks for {token}, which no scrape has",
                        panel["title"]
                    );
                }
            }
        }
    }
    assert!(asked >= 20, "the dashboard asks for {asked} series");
    assert!(second.bytes > 0);
    node.stop();
}

/// Polls `/readyz` until its status is `want` (at most a minute); returns the body.
fn await_ready(http: &str, want: u16) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = get(http, "/readyz");
        if status == want {
            return body;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/readyz stayed {status} ({body:?}), expected {want}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `/readyz` turns unready, saying which store, while the object store or etcd answers
/// nothing (frozen with SIGSTOP), and ready again once it is back; `/healthz` stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_follows_the_object_store_and_etcd() {
    let (Some(_), Some(binary)) = (tierlog_tests::s3_options(), tierlog_tests::etcd_binary())
    else {
        return;
    };
    let moto = tierlog_tests::PrivateS3::start();
    let mut etcd = tierlog_tests::PrivateEtcd::start(binary, 1);
    let dir = tempfile::tempdir().unwrap();
    let ns = tierlog_tests::unique("readyz");
    let options: String = moto
        .options()
        .iter()
        .map(|(k, v)| format!("{k} = {v:?}\n"))
        .collect();
    let config = dir.path().join("node.toml");
    std::fs::write(
        &config,
        format!(
            "object_store = \"s3://tierlog/{ns}\"\nmeta = \"etcd://{}/{ns}\"\n[object_store_options]\n{options}",
            etcd.endpoint(0).trim_start_matches("http://")
        ),
    )
    .unwrap();
    let node = Node::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    assert_eq!(await_ready(&node.http, 200), "ready\n");

    moto.signal("STOP");
    let why = await_ready(&node.http, 503);
    assert!(why.contains("object store"), "{why}");
    assert_eq!(get(&node.http, "/healthz").0, 200, "alive while unready");
    moto.signal("CONT");
    await_ready(&node.http, 200);

    etcd.signal(0, "STOP");
    let why = await_ready(&node.http, 503);
    assert!(why.contains("metadata store"), "{why}");
    etcd.signal(0, "CONT");
    await_ready(&node.http, 200);

    // And the node still works: a topic is created and written.
    let c = Client::connect(&node.addr).await.unwrap();
    c.create_topic("after", 1).await.unwrap();
    node.stop();
    etcd.kill9(0);
}

/// `TIERLOG_LOG_FORMAT=json`: every log line the node writes is one JSON object with a level
/// and a message.
#[test]
fn json_logs_are_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(super::binary())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--kafka-listen", "off", "--http-listen", "off"])
        .env("TIERLOG_LOG", "info")
        .env("TIERLOG_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut first,
    )
    .unwrap();
    assert!(first.starts_with("tierlog listening on "), "{first}");
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 2, "start and stop are logged: {text}");
    for line in lines {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string(), "{line}");
        assert!(v["fields"]["message"].is_string(), "{line}");
    }
}

/// A span as the OTLP collector script printed it.
#[derive(Debug, Clone)]
struct Exported {
    name: String,
    trace: String,
    id: String,
    parent: String,
    attributes: Value,
}

/// Spans reach an OTLP collector nobody here wrote (tests/python/otlp_collector.py, on the
/// OpenTelemetry project's protobuf definitions): a gRPC and a Kafka produce each trace
/// through the request, its append and its wait for the object store; an upload traces its
/// conversion and commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_reach_an_otlp_collector() {
    let Some(python) = tierlog_tests::python() else {
        return;
    };
    let mut collector = Command::new(&python)
        .arg(tierlog_tests::tests_dir().join("python/otlp_collector.py"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("start the collector");
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let out = collector.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let port = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the collector's port")
        .strip_prefix("listening ")
        .expect("a listening line")
        .to_string();
    let dir = tempfile::tempdir().unwrap();
    let endpoint = format!("http://127.0.0.1:{port}");
    let node = Node::start(dir.path(), &["--otlp-endpoint", &endpoint]);
    let c = Client::connect(&node.addr).await.unwrap();
    c.create_topic("traced", 1).await.unwrap();
    c.leader_rpc("traced", 0)
        .await
        .unwrap()
        .produce(pb::ProduceRequest {
            topic: "traced".into(),
            partition: 0,
            acks: pb::Acks::All as i32,
            records: vec![pb::Record {
                key: Some(b"k".to_vec().into()),
                value: Some(b"v".to_vec().into()),
                headers: vec![],
                timestamp_ms: 0,
            }],
            ..Default::default()
        })
        .await
        .unwrap();
    // Kafka produce (and a metadata error) through confluent-kafka.
    Scrape::take(&python, &node.http, Some((&node.kafka, "traced", 5)));

    let mut spans: Vec<Exported> = Vec::new();
    let children = |spans: &[Exported], of: &Exported| -> Vec<String> {
        spans
            .iter()
            .filter(|s| s.parent == of.id && s.trace == of.trace)
            .map(|s| s.name.clone())
            .collect()
    };
    // Each front end's produce: its request span, then produce, then append and await_upload.
    let traced = |spans: &[Exported], front: &str| -> bool {
        spans
            .iter()
            .filter(|s| s.name == front && s.attributes["api"] == "Produce")
            .any(|request| {
                spans.iter().any(|p| {
                    p.name == "produce"
                        && p.parent == request.id
                        && p.trace == request.trace
                        && p.attributes["topic"] == "traced"
                        && {
                            let below = children(spans, p);
                            below.contains(&"append".to_string())
                                && below.contains(&"await_upload".to_string())
                        }
                })
            })
    };
    let uploaded = |spans: &[Exported]| -> bool {
        spans.iter().any(|u| {
            // The tier names a topic by its storage name: `<topic>.<id>`.
            u.name == "upload"
                && u.attributes["storage"]
                    .as_str()
                    .is_some_and(|s| s.starts_with("traced."))
                && {
                    let below = children(spans, u);
                    below.contains(&"convert".to_string()) && below.contains(&"commit".to_string())
                }
        })
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while !(traced(&spans, "grpc")
        && traced(&spans, "kafka")
        && uploaded(&spans)
        && spans.iter().any(|s| s.name == "cut"))
    {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "spans missing; received: {:#?}",
            spans
                .iter()
                .map(|s| format!(
                    "{} trace {} id {} parent {} {}",
                    s.name, s.trace, s.id, s.parent, s.attributes
                ))
                .collect::<Vec<_>>()
        );
        let Ok(line) = rx.recv_timeout(left) else {
            continue;
        };
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["service"], "tierlog", "{line}");
        spans.push(Exported {
            name: v["name"].as_str().unwrap().to_string(),
            trace: v["trace_id"].as_str().unwrap().to_string(),
            id: v["span_id"].as_str().unwrap().to_string(),
            parent: v["parent_span_id"].as_str().unwrap().to_string(),
            attributes: v["attributes"].clone(),
        });
    }
    node.stop();
    let _ = collector.kill();
    let _ = collector.wait();
}
