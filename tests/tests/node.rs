//! The real binary, as a user runs it: `tierlog serve` in its own process on a port it picks,
//! driven over gRPC, killed with SIGKILL and restarted.

#[path = "node/cluster.rs"]
mod cluster;
#[path = "node/console.rs"]
mod console;
#[path = "node/groups.rs"]
mod groups;
#[path = "node/kafka.rs"]
mod kafka;
#[path = "node/kafka_matrix.rs"]
mod kafka_matrix;
#[path = "node/metrics.rs"]
mod metrics;
#[path = "node/sql.rs"]
mod sql;
#[path = "node/storage.rs"]
mod storage;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use prost::Message;
use proto::v1 as pb;
use proto::v1::tierlog_client::TierlogClient;
use tonic::transport::Channel;

fn binary() -> PathBuf {
    // tests run from <target>/<profile>/deps; the binary is <target>/<profile>/tierlog.
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target dir")
        .join("tierlog");
    assert!(
        bin.exists(),
        "{} is missing: build the workspace first (the test command does)",
        bin.display()
    );
    bin
}

struct Node {
    child: Child,
    addr: String,
    /// The Kafka listener's address.
    kafka: String,
    /// The HTTP listener's address (metrics, health).
    http: String,
}

impl Node {
    fn start(data: &Path, extra: &[&str]) -> Node {
        let mut child = Command::new(binary())
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data)
            .args(extra)
            .env("TIERLOG_LOG", "warn")
            .env("TIERLOG_KAFKA_LISTEN", "127.0.0.1:0")
            .env("TIERLOG_HTTP_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start tierlog");
        let out = child.stdout.take().expect("stdout");
        // The lines come in one write, before the node serves.
        let mut lines = BufReader::new(out).lines();
        let mut line = |prefix: &str| {
            let line = lines
                .next()
                .expect("a listen line")
                .expect("read a listen line");
            line.trim()
                .strip_prefix(prefix)
                .unwrap_or_else(|| panic!("expected {prefix:?}, got {line:?}"))
                .to_string()
        };
        let addr = line("tierlog listening on ");
        let kafka = line("tierlog kafka listening on ");
        let http = line("tierlog http listening on ");
        Node {
            child,
            addr,
            kafka,
            http,
        }
    }

    async fn client(&self) -> TierlogClient<Channel> {
        TierlogClient::connect(format!("http://{}", self.addr))
            .await
            .expect("connect")
    }

    fn kill9(mut self) {
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }

    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill -TERM")
            .success();
        assert!(ok);
        let status = self.child.wait().expect("wait");
        assert!(status.success(), "graceful shutdown failed: {status}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn record(p: u32, i: u64) -> pb::Record {
    pb::Record {
        key: Some(format!("k{i}").into_bytes().into()),
        value: Some(
            format!("p{p}-v{i}-{}", "x".repeat((i % 50) as usize))
                .into_bytes()
                .into(),
        ),
        headers: vec![],
        timestamp_ms: 1_767_225_600_000 + i as i64,
    }
}

async fn create(c: &mut TierlogClient<Channel>, name: &str, partitions: u32) {
    c.create_topic(pb::CreateTopicRequest {
        name: name.into(),
        config: Some(pb::TopicConfig {
            partitions,
            ..Default::default()
        }),
    })
    .await
    .expect("create topic");
}

async fn fetch_all(
    c: &mut TierlogClient<Channel>,
    topic: &str,
    p: u32,
) -> (Vec<pb::FetchedRecord>, Vec<String>) {
    let mut stream = c
        .fetch(pb::FetchRequest {
            topic: topic.into(),
            partition: p,
            start: Some(pb::fetch_request::Start::Position(
                pb::StartPosition::StartEarliest as i32,
            )),
            ..Default::default()
        })
        .await
        .expect("fetch")
        .into_inner();
    let mut out = Vec::new();
    let mut sources = Vec::new();
    while let Some(msg) = stream.message().await.expect("fetch stream") {
        sources.push(msg.source);
        out.extend(msg.records);
    }
    (out, sources)
}

/// What a fetch stream the node must refuse was refused with.
fn fetch_refused(
    r: Result<tonic::Response<tonic::Streaming<pb::FetchResponse>>, tonic::Status>,
) -> Option<client::ErrorCode> {
    match r {
        Ok(_) => panic!("the fetch was let through"),
        Err(s) => client::Error::from(s).code(),
    }
}

fn code_of(s: &tonic::Status) -> i32 {
    pb::ErrorDetail::decode(s.details())
        .map(|d| d.code)
        .unwrap_or(-1)
}

/// kill -9 mid-stream with fsync per batch: after a restart every acknowledged record is there,
/// exactly once, at the offset it was acknowledged with, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &["--fsync", "every_batch"]);
    let mut c = node.client().await;
    create(&mut c, "orders", 3).await;
    let mut producers = Vec::new();
    for p in 0..3u32 {
        let mut c = node.client().await;
        producers.push(tokio::spawn(async move {
            let mut acked = Vec::new(); // (base offset, first i, count)
            let mut i = 0u64;
            loop {
                let records: Vec<_> = (i..i + 100).map(|j| record(p, j)).collect();
                let req = pb::ProduceRequest {
                    topic: "orders".into(),
                    partition: p,
                    records,
                    ..Default::default()
                };
                match c.produce(req).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        assert_eq!(r.accepted, 100);
                        acked.push((r.base_offset, i, 100u64));
                        i += 100;
                    }
                    Err(_) => return acked,
                }
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    node.kill9();
    let mut acked = Vec::new();
    for t in producers {
        acked.push(t.await.unwrap());
    }
    let node = Node::start(dir.path(), &["--fsync", "every_batch"]);
    let mut c = node.client().await;
    let mut total = 0;
    for (p, acks) in acked.iter().enumerate() {
        assert!(
            !acks.is_empty(),
            "partition {p} acknowledged nothing before the kill"
        );
        let (records, _) = fetch_all(&mut c, "orders", p as u32).await;
        for (n, r) in records.iter().enumerate() {
            assert_eq!(r.offset, n as i64, "offsets are dense and ordered");
        }
        for &(base, first, count) in acks {
            for k in 0..count {
                let r = records.get((base + k as i64) as usize).unwrap_or_else(|| {
                    panic!(
                        "acknowledged offset {} of partition {p} is missing",
                        base + k as i64
                    )
                });
                assert_eq!(
                    r.value.as_deref(),
                    record(p as u32, first + k).value.as_deref()
                );
            }
            total += count;
        }
    }
    assert!(total >= 300, "{total} records acknowledged");
    node.stop();
}

/// A graceful stop seals and uploads; with the hot tier deleted, a restarted node replays the
/// topic from offset 0 out of the cold tier, identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_from_zero_after_the_hot_tier_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let mut c = node.client().await;
    create(&mut c, "audit", 1).await;
    for b in 0..20u64 {
        let records: Vec<_> = (b * 500..(b + 1) * 500).map(|i| record(0, i)).collect();
        c.produce(pb::ProduceRequest {
            topic: "audit".into(),
            records,
            compression: pb::Compression::Zstd as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    }
    let (before, sources) = fetch_all(&mut c, "audit", 0).await;
    assert_eq!(before.len(), 10_000);
    assert!(sources.iter().all(|s| s == "hot"));
    node.stop();
    std::fs::remove_dir_all(dir.path().join("hot")).unwrap();
    let node = Node::start(dir.path(), &[]);
    let mut c = node.client().await;
    let (after, sources) = fetch_all(&mut c, "audit", 0).await;
    assert!(sources.iter().all(|s| s == "cold"), "{sources:?}");
    assert_eq!(after, before, "cold replay returns the same records");
    let d = c
        .describe_topic(pb::DescribeTopicRequest {
            name: "audit".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let p = &d.topic.unwrap().partitions[0];
    assert_eq!(
        (p.log_start_offset, p.cold_next, p.high_watermark),
        (0, 10_000, 10_000)
    );
    node.stop();
}

/// Retention through the API, in each form a client may send: absent and -1 mean "keep forever"
/// (regression: -1 reached the tier as a cutoff in the future and a budget of 0 bytes, and
/// housekeeping deleted the whole history within seconds), generous limits keep what is within
/// them, and zero or other negative numbers are refused with a clear error. Records are
/// produced at acks=all (so they are committed to the cold tier), the partition is flushed to
/// sealed objects by a restart, and housekeeping runs several times before the check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_forms_through_the_api_keep_what_they_promise() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let mut c = node.client().await;
    let forms: [(&str, Option<i64>, Option<i64>); 4] = [
        ("absent", None, None),
        ("unlimited", Some(-1), Some(-1)),
        ("generous", Some(10 * 365 * 86_400_000), Some(1 << 40)),
        ("mixed", Some(-1), Some(1 << 40)),
    ];
    for (name, ms, bytes) in forms {
        let created = c
            .create_topic(pb::CreateTopicRequest {
                name: name.into(),
                config: Some(pb::TopicConfig {
                    partitions: 1,
                    retention_ms: ms,
                    retention_bytes: bytes,
                    ..Default::default()
                }),
            })
            .await
            .unwrap()
            .into_inner()
            .topic
            .unwrap()
            .config
            .unwrap();
        // -1 is the wire's "unlimited": described as absent, never as a number.
        let shown = |v: Option<i64>| v.filter(|v| *v > 0);
        assert_eq!(
            (created.retention_ms, created.retention_bytes),
            (shown(ms), shown(bytes)),
            "{name}"
        );
        let records: Vec<_> = (0..1000).map(|i| record(0, i)).collect();
        let r = c
            .produce(pb::ProduceRequest {
                topic: name.into(),
                records,
                acks: pb::Acks::All as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((r.base_offset, r.accepted), (0, 1000), "{name}");
    }
    for (field, ms, bytes) in [
        ("retention_ms", Some(0), None),
        ("retention_ms", Some(-5), None),
        ("retention_bytes", None, Some(0)),
        ("retention_bytes", None, Some(-2)),
    ] {
        let e = c
            .create_topic(pb::CreateTopicRequest {
                name: "refused".into(),
                config: Some(pb::TopicConfig {
                    partitions: 1,
                    retention_ms: ms,
                    retention_bytes: bytes,
                    ..Default::default()
                }),
            })
            .await
            .unwrap_err();
        assert_eq!(code_of(&e), pb::ErrorCode::InvalidRequest as i32, "{e}");
        assert!(e.message().contains(field), "{}", e.message());
    }
    // A graceful restart seals and uploads everything; housekeeping (every second) then has
    // several rounds to apply retention before the check.
    node.stop();
    let node = Node::start(dir.path(), &[]);
    let mut c = node.client().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    for (name, _, _) in forms {
        let d = c
            .describe_topic(pb::DescribeTopicRequest { name: name.into() })
            .await
            .unwrap()
            .into_inner();
        let p = &d.topic.unwrap().partitions[0];
        assert_eq!(
            (p.log_start_offset, p.cold_next, p.high_watermark),
            (0, 1000, 1000),
            "{name}: every committed record is kept"
        );
        let (got, _) = fetch_all(&mut c, name, 0).await;
        assert_eq!(got.len(), 1000, "{name}");
    }
    let topics = c
        .list_topics(pb::ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner()
        .names;
    assert!(!topics.contains(&"refused".to_string()), "{topics:?}");
    node.stop();
}

/// Seek by timestamp everywhere a user can ask for it: gRPC ListOffsets and Fetch, the client's
/// `SeekTo::Timestamp` and the CLI's `--from-time`, over records that are only in the cold
/// tier and records that are hot; then what `topic describe` prints, and the gRPC health
/// service.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timestamps_seek_through_every_surface_and_describe_and_health_answer() {
    use client::{Client, Consumer, ConsumerConfig, SeekTo};
    const BASE: i64 = 1_767_225_600_000;
    let ts_record = |i: i64| pb::Record {
        value: Some(format!("v{i}").into_bytes().into()),
        timestamp_ms: BASE + i * 10,
        ..Default::default()
    };
    let produce = |c: &mut TierlogClient<Channel>, from: i64| {
        let mut c = c.clone();
        async move {
            let r = c
                .produce(pb::ProduceRequest {
                    topic: "times".into(),
                    records: (from..from + 500).map(ts_record).collect(),
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            assert_eq!(r.base_offset, from);
        }
    };
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let mut c = node.client().await;
    create(&mut c, "times", 1).await;
    produce(&mut c, 0).await;
    // Offsets 0..500 only in the cold tier, 500..1000 hot.
    node.stop();
    std::fs::remove_dir_all(dir.path().join("hot")).unwrap();
    let node = Node::start(dir.path(), &[]);
    let mut c = node.client().await;
    produce(&mut c, 500).await;

    let list = |c: &mut TierlogClient<Channel>, ts: i64| {
        let mut c = c.clone();
        async move {
            c.list_offsets(pb::ListOffsetsRequest {
                topic: "times".into(),
                partition: 0,
                spec: Some(pb::list_offsets_request::Spec::TimestampMs(ts)),
            })
            .await
            .unwrap()
            .into_inner()
            .offset
        }
    };
    // Exact, between two records (the next one), before all, hot, past all (-1).
    for (ts, want) in [
        (BASE + 2500, 250),
        (BASE + 2505, 251),
        (BASE - 1, 0),
        (BASE + 7000, 700),
        (BASE + 99_999, -1),
    ] {
        assert_eq!(list(&mut c, ts).await, want, "ListOffsets at {ts}");
    }
    let first_from = |c: &mut TierlogClient<Channel>, ts: i64| {
        let mut c = c.clone();
        async move {
            let mut s = c
                .fetch(pb::FetchRequest {
                    topic: "times".into(),
                    partition: 0,
                    start: Some(pb::fetch_request::Start::TimestampMs(ts)),
                    max_records: 1,
                    ..Default::default()
                })
                .await
                .unwrap()
                .into_inner();
            s.message().await.unwrap().map(|m| m.records[0].offset)
        }
    };
    assert_eq!(first_from(&mut c, BASE + 2505).await, Some(251));
    assert_eq!(first_from(&mut c, BASE + 7001).await, Some(701));
    assert_eq!(first_from(&mut c, BASE + 99_999).await, None, "the end");

    let client = Client::connect(&node.addr).await.unwrap();
    let mut consumer = Consumer::assign(client, ConsumerConfig::default(), "times", &[0])
        .await
        .unwrap();
    for (ts, want) in [(BASE + 1234, 124), (BASE + 9990, 999)] {
        consumer.seek(Some(0), SeekTo::Timestamp(ts)).await.unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        let got = loop {
            let polled = consumer.poll(Duration::from_millis(200)).await.unwrap();
            if let Some(r) = polled.first() {
                break r.offset;
            }
            assert!(std::time::Instant::now() < deadline, "nothing polled");
        };
        assert_eq!(got, want, "client seek to {ts}");
    }

    let s = node.addr.clone();
    let from = (BASE + 2505).to_string();
    let (ok, out, err) = cli(
        &s,
        &[
            "consume",
            "times",
            "--from-time",
            &from,
            "--max-messages",
            "3",
            "--json",
        ],
        None,
    );
    assert!(ok, "{err}");
    let offsets: Vec<i64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["offset"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(offsets, vec![251, 252, 253], "{out}");

    let (ok, out, err) = cli(&s, &["topic", "describe", "times"], None);
    assert!(ok, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("topic times (id "), "{out}");
    assert!(lines[0].ends_with("1 partitions"), "{out}");
    assert_eq!(lines[1], "retention: forever", "{out}");
    let head: Vec<&str> = lines[2].split_whitespace().collect();
    assert_eq!(
        head,
        [
            "partition",
            "low",
            "high",
            "cold",
            "below",
            "hot",
            "from",
            "objects",
            "cold",
            "bytes",
            "to",
            "merge",
            "hot",
            "bytes",
            "leader"
        ],
        "{out}"
    );
    let row: Vec<&str> = lines[3].split_whitespace().collect();
    assert_eq!(&row[..3], ["0", "0", "1000"], "partition, low, high: {out}");
    let cold_below: i64 = row[3].parse().unwrap();
    assert!((500..=1000).contains(&cold_below), "{out}");
    assert!(
        row[9] == node.addr && row[10] == "(epoch",
        "leader and epoch: {out}"
    );

    let mut health = tonic_health::pb::health_client::HealthClient::new(
        tonic::transport::Endpoint::from_shared(format!("http://{}", node.addr))
            .unwrap()
            .connect()
            .await
            .unwrap(),
    );
    for service in ["", "tierlog.v1.Tierlog"] {
        let r = health
            .check(tonic_health::pb::HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            r.status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "{service:?}"
        );
    }
    let unknown = health
        .check(tonic_health::pb::HealthCheckRequest {
            service: "no.such.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);
    node.stop();
}

/// The bucket a real node writes on the S3 server, read by pyarrow (through the manifests, over
/// S3) and by DuckDB (over httpfs), with no tierlog code: every committed record, offsets dense
/// from 0, values as produced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pyarrow_and_duckdb_read_a_nodes_bucket_on_the_s3_server() {
    let (Some(s3), Some(py)) = (tierlog_tests::s3_options(), tierlog_tests::python()) else {
        return;
    };
    let endpoint = s3
        .iter()
        .find(|(k, _)| k == "aws_endpoint")
        .map(|(_, v)| v.clone())
        .expect("the S3 options name the endpoint");
    let dir = tempfile::tempdir().unwrap();
    let ns = tierlog_tests::unique("bucket");
    let mut cfg = String::from("[object_store_options]\n");
    for (k, v) in &s3 {
        cfg += &format!("{k} = {v:?}\n");
    }
    let cfg_path = dir.path().join("node.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let store = format!("s3://tierlog/{ns}");
    let node = Node::start(
        &dir.path().join("data"),
        &[
            "--config",
            cfg_path.to_str().unwrap(),
            "--object-store",
            &store,
        ],
    );
    let mut c = node.client().await;
    create(&mut c, "archive", 2).await;
    let mut expected = serde_json::Map::new();
    for p in 0..2u32 {
        // Several acks=all requests: several objects per partition.
        for chunk in 0..4u64 {
            let records: Vec<_> = (chunk * 250..(chunk + 1) * 250)
                .map(|i| record(p, i))
                .collect();
            c.produce(pb::ProduceRequest {
                topic: "archive".into(),
                partition: p,
                records,
                acks: pb::Acks::All as i32,
                ..Default::default()
            })
            .await
            .unwrap();
        }
        let values: Vec<String> = (0..20)
            .map(|i| String::from_utf8(record(p, i).value.unwrap().to_vec()).unwrap())
            .collect();
        expected.insert(
            p.to_string(),
            serde_json::json!({"count": 1000, "values": values}),
        );
    }
    let id = c
        .describe_topic(pb::DescribeTopicRequest {
            name: "archive".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap()
        .id;
    let spec = dir.path().join("expected.json");
    std::fs::write(&spec, serde_json::to_vec(&expected).unwrap()).unwrap();
    let out = Command::new(&py)
        .arg(tierlog_tests::tests_dir().join("python/s3_bucket.py"))
        .arg(&endpoint)
        .arg(format!("tierlog/{ns}/topics/archive.{id}"))
        .arg(&spec)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "the external readers failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(summary["rows"], 2000, "{summary}");
    assert!(summary["objects"].as_u64().unwrap() >= 2, "{summary}");
    node.stop();
}

/// A group's committed offsets survive restarts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_offsets_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let mut c = node.client().await;
    create(&mut c, "t", 2).await;
    let offsets = vec![
        pb::GroupOffset {
            topic: "t".into(),
            partition: 0,
            offset: 42,
            metadata: "m".into(),
        },
        pb::GroupOffset {
            topic: "t".into(),
            partition: 1,
            offset: 7,
            metadata: String::new(),
        },
    ];
    c.commit_offsets(pb::CommitOffsetsRequest {
        group: "billing".into(),
        offsets: offsets.clone(),
        member_id: String::new(),
        member_epoch: -1,
    })
    .await
    .unwrap();
    node.kill9();
    let node = Node::start(dir.path(), &[]);
    let mut c = node.client().await;
    let got = c
        .fetch_offsets(pb::FetchOffsetsRequest {
            group: "billing".into(),
            topic: "t".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .offsets;
    assert_eq!(got, offsets);
    node.stop();
}

/// Bad input gets clear errors with stable codes, and garbage on the wire does not hurt the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let mut c = node.client().await;
    let e = c
        .produce(pb::ProduceRequest {
            topic: "ghost".into(),
            records: vec![record(0, 0)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    assert_eq!(code_of(&e), pb::ErrorCode::UnknownTopic as i32);
    assert!(e.message().contains("ghost"), "{}", e.message());
    for bad in ["", "a/b", "..", "bad name"] {
        let e = c
            .create_topic(pb::CreateTopicRequest {
                name: bad.into(),
                config: None,
            })
            .await
            .unwrap_err();
        assert_eq!(
            code_of(&e),
            pb::ErrorCode::InvalidTopicName as i32,
            "{bad:?}"
        );
    }
    create(&mut c, "t", 1).await;
    let big = pb::Record {
        value: Some(vec![0u8; 2 << 20].into()),
        ..record(0, 1)
    };
    let r = c
        .produce(pb::ProduceRequest {
            topic: "t".into(),
            records: vec![record(0, 0), big, record(0, 2)],
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.accepted, r.base_offset), (2, 0));
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].index, 1);
    assert_eq!(
        r.errors[0].error.as_ref().unwrap().code,
        pb::ErrorCode::RecordTooLarge as i32
    );
    // The same through a producer-built record batch: the oversized record is refused on its
    // own, the others are stored with their own timestamps; a damaged batch is refused whole.
    let mut b = proto::batch::BatchBuilder::new(proto::batch::Compression::Zstd);
    b.push(1_000, None, Some(b"first"), &[]);
    b.push(1_001, None, Some(&vec![7u8; 2 << 20][..]), &[]);
    b.push(1_002, Some(b"k"), Some(b"third"), &[]);
    let batch = b.build().unwrap().into_bytes();
    let r = c
        .produce(pb::ProduceRequest {
            topic: "t".into(),
            record_batch: batch.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((r.accepted, r.base_offset), (2, 2));
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].index, 1);
    assert_eq!(
        r.errors[0].error.as_ref().unwrap().code,
        pb::ErrorCode::RecordTooLarge as i32
    );
    let mut damaged = batch.to_vec();
    let last = damaged.len() - 1;
    damaged[last] ^= 0x40;
    let e = c
        .produce(pb::ProduceRequest {
            topic: "t".into(),
            record_batch: damaged.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), pb::ErrorCode::InvalidRequest as i32, "{e}");
    assert!(e.message().contains("CRC"), "{}", e.message());
    let (got, _) = fetch_all(&mut c, "t", 0).await;
    let values: Vec<(i64, i64, Vec<u8>)> = got
        .iter()
        .map(|r| (r.offset, r.timestamp_ms, r.value.clone().unwrap().to_vec()))
        .collect();
    assert_eq!(values.len(), 4, "{values:?}");
    assert_eq!(&values[2], &(2, 1_000, b"first".to_vec()));
    assert_eq!(&values[3], &(3, 1_002, b"third".to_vec()));
    // Garbage and a truncated HTTP/2 preface on the port: the node keeps serving.
    for junk in [
        &b"\x00\x01garbage\xff"[..],
        &b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00"[..],
    ] {
        use std::io::Write;
        let mut s = std::net::TcpStream::connect(&node.addr).unwrap();
        let _ = s.write_all(junk);
    }
    let e = c
        .fetch(pb::FetchRequest {
            topic: "t".into(),
            partition: 0,
            start: Some(pb::fetch_request::Start::Offset(99)),
            ..Default::default()
        })
        .await;
    let e = match e {
        Err(e) => e,
        Ok(s) => s.into_inner().message().await.unwrap_err(),
    };
    assert_eq!(code_of(&e), pb::ErrorCode::OffsetOutOfRange as i32, "{e}");
    let topics = c
        .list_topics(pb::ListTopicsRequest {})
        .await
        .unwrap()
        .into_inner()
        .names;
    assert_eq!(topics, vec!["t".to_string()]);
    node.stop();
}

/// The Rust client end to end: 100,000 keyed records through the batching producer (same key,
/// same partition, dense offsets), then a group consumer that commits, stops, and a new one that
/// resumes exactly at the commit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_produces_100k_and_a_group_consumer_resumes_at_its_commit() {
    use client::{Client, Consumer, ConsumerConfig, Producer, ProducerConfig};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let c = Client::connect(&node.addr).await.unwrap();
    c.create_topic("clicks", 4).await.unwrap();
    let producer = Producer::new(
        c.clone(),
        ProducerConfig {
            zstd: true,
            ..ProducerConfig::default()
        },
    );
    const N: u64 = 100_000;
    let mut acks = Vec::with_capacity(N as usize);
    for i in 0..N {
        let key = format!("user-{}", i % 1000).into_bytes();
        let value = format!("{i}").into_bytes();
        acks.push((
            i,
            producer
                .send("clicks", None, Some(key), Some(value), vec![])
                .await
                .unwrap(),
        ));
    }
    let mut by_partition: std::collections::BTreeMap<u32, Vec<(i64, u64)>> = Default::default();
    let mut partition_of_key = std::collections::HashMap::new();
    for (i, rx) in acks {
        let md = rx.await.unwrap().unwrap();
        let prev = partition_of_key.insert(i % 1000, md.partition);
        assert!(
            prev.is_none_or(|p| p == md.partition),
            "a key always lands on one partition"
        );
        assert_eq!(
            md.partition,
            client::partition_for_key(format!("user-{}", i % 1000).as_bytes(), 4)
        );
        by_partition
            .entry(md.partition)
            .or_default()
            .push((md.offset, i));
    }
    producer.close().await;
    for (p, v) in &by_partition {
        let mut offsets: Vec<i64> = v.iter().map(|x| x.0).collect();
        offsets.sort();
        assert_eq!(
            offsets,
            (0..v.len() as i64).collect::<Vec<_>>(),
            "partition {p} offsets are dense"
        );
    }
    let cfg = ConsumerConfig {
        group: Some("analytics".into()),
        ..ConsumerConfig::default()
    };
    let mut first = Consumer::assign(c.clone(), cfg.clone(), "clicks", &[])
        .await
        .unwrap();
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while seen.len() < 60_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "only {} records consumed",
            seen.len()
        );
        seen.extend(first.poll(Duration::from_secs(5)).await.unwrap());
    }
    first.commit().await.unwrap();
    let committed = first.positions().clone();
    drop(first);
    let mut second = Consumer::assign(c.clone(), cfg, "clicks", &[])
        .await
        .unwrap();
    assert_eq!(
        second.positions(),
        &committed,
        "a restarted consumer resumes at its commit"
    );
    let mut rest = Vec::new();
    loop {
        let batch = second.poll(Duration::from_millis(300)).await.unwrap();
        if batch.is_empty() {
            break;
        }
        rest.extend(batch);
    }
    // `second` keeps its follow-mode fetch streams open through `node.stop()` below: graceful
    // shutdown must end them rather than wait for them.
    assert_eq!(
        seen.len() + rest.len(),
        N as usize,
        "every record exactly once across the restart"
    );
    let mut values: Vec<u64> = seen
        .iter()
        .chain(&rest)
        .map(|r| {
            String::from_utf8(r.value.clone().unwrap().to_vec())
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    values.sort_unstable();
    assert_eq!(values, (0..N).collect::<Vec<_>>());
    node.stop();
}

/// A producer batch holding one record over the size limit: that record gets its own error,
/// its batch-mates are stored once, in order (an idempotent leader refuses such a batch whole;
/// the producer sends the rest again on its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_record_fails_alone_and_its_batch_mates_are_stored_once() {
    use client::{Client, Producer, ProducerConfig};
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let c = Client::connect(&node.addr).await.unwrap();
    c.create_topic("sizes", 1).await.unwrap();
    for idempotent in [true, false] {
        let producer = Producer::new(
            c.clone(),
            ProducerConfig {
                idempotent,
                batch_bytes: 8 << 20,
                linger: Duration::from_millis(300),
                ..ProducerConfig::default()
            },
        );
        let mut answers = Vec::new();
        for v in [b"a".to_vec(), vec![7u8; 2 << 20], b"b".to_vec()] {
            answers.push(
                producer
                    .send("sizes", Some(0), None, Some(v), vec![])
                    .await
                    .unwrap(),
            );
        }
        let mut got = Vec::new();
        for a in answers {
            got.push(a.await.unwrap().map(|m| m.offset).map_err(|e| e.code()));
        }
        producer.close().await;
        let base = if idempotent { 0 } else { 2 };
        assert_eq!(
            got,
            [
                Ok(base),
                Err(Some(client::ErrorCode::RecordTooLarge)),
                Ok(base + 1)
            ],
            "idempotent: {idempotent}"
        );
    }
    let mut rpc = c.rpc();
    let (records, _) = fetch_all(&mut rpc, "sizes", 0).await;
    let values: Vec<Vec<u8>> = records
        .iter()
        .map(|r| r.value.clone().unwrap().to_vec())
        .collect();
    assert_eq!(
        values,
        [b"a".to_vec(), b"b".to_vec(), b"a".to_vec(), b"b".to_vec()]
    );
    node.stop();
}

/// Runs the `tierlog` CLI against a node; returns (success, stdout, stderr).
fn cli(server: &str, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
    use std::io::Write;
    let mut child = Command::new(binary())
        .arg("--server")
        .arg(server)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the cli");
    let mut input = child.stdin.take().expect("stdin");
    let text = stdin.unwrap_or("").to_string();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(text.as_bytes());
    });
    let out = child.wait_with_output().expect("cli output");
    writer.join().expect("stdin writer");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each `tierlog bench` mode, in a short run: it completes and prints its baselines (measured
/// in the same run) next to its figures. The figures themselves are not checked: tests assert
/// no timings.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bench_mode_runs_and_prints_its_baselines() {
    let (Some(py), Some(etcd)) = (tierlog_tests::python(), tierlog_tests::etcd_endpoints()) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap().to_string();
    let small = [
        "--records",
        "3000",
        "--record-bytes",
        "200",
        "--partitions",
        "2",
        "--dir",
        &d,
    ];
    let meta = format!(
        "etcd://{}/{}",
        etcd[0].trim_start_matches("http://"),
        tierlog_tests::unique("bench")
    );
    let group_meta = format!("{meta}-groups");
    let modes: [(&str, Vec<&str>, &[&str]); 8] = [
        (
            "produce",
            vec!["--load", "0.5", "--load-secs", "1"],
            &[
                "baselines (same run):",
                "raw disk write",
                "storage core append",
                "loopback TCP",
                "through the node:",
            ],
        ),
        (
            "consume",
            vec![],
            &[
                "baselines (same run):",
                "loopback TCP",
                "plain read of the hot segment files",
                "through the node:",
                "replay from offset 0",
            ],
        ),
        (
            "sql",
            vec!["--repeat", "1", "--python", &py],
            &[
                "tierlog",
                "tierlog, checks off",
                "DuckDB, same files",
                "offset column only",
            ],
        ),
        (
            "kafka",
            vec!["--python", &py],
            &[
                "baselines (same run):",
                "loopback TCP",
                "tierlog's own client (gRPC), same node:",
                "librdkafka through the Kafka listener, same node:",
            ],
        ),
        (
            "merge",
            vec!["--commits", "200", "--repeat", "1"],
            &[
                "small acks=all commits written",
                "objects per partition, unmerged",
                "objects per partition, merged",
                "merging",
                "acks=all load on another partition",
                "over the merged copy",
                "baseline: raw read of its files",
                "SQL full scan",
                "cold replay from offset 0",
            ],
        ),
        (
            "observe",
            vec![],
            &[
                "produce, metrics and tracing off (run 1)",
                "produce, metrics and tracing on, scraped 1/s (run 2)",
                "scrape of /metrics",
                "spans exported over OTLP",
                "mean throughput, on against off",
                "mean send→ack p99, on against off",
            ],
        ),
        (
            "failover",
            vec![
                "--meta",
                &meta,
                "--nodes",
                "2",
                "--kills",
                "1",
                "--lease-ttl-ms",
                "2000",
            ],
            &[
                "throughput (full speed",
                "1 node",
                "2 nodes",
                "failover (lease TTL 2000 ms):",
                "partition served again after a kill",
            ],
        ),
        (
            "groups",
            vec![
                "--meta",
                &group_meta,
                "--members",
                "3",
                "--group-partitions",
                "6",
            ],
            &[
                "baseline: request round trip",
                "range: 1 → 2 members",
                "cooperative-sticky: 3 → 2 members",
                "time to a stable assignment",
                "etcd requests at steady state",
            ],
        ),
    ];
    for (mode, extra, want) in modes {
        let mut args = vec!["bench", mode];
        args.extend(small);
        args.extend(extra);
        let (ok, out, err) = cli("127.0.0.1:1", &args, None);
        assert!(ok, "bench {mode} failed:\n{out}\n{err}");
        for line in want {
            assert!(
                out.contains(line),
                "bench {mode} printed no {line:?}:\n{out}"
            );
        }
        assert!(!out.contains("n/a"), "bench {mode} lacks a figure:\n{out}");
    }
}

/// The CLI as a person uses it: topics, 100,000 lines produced from stdin with keys, consumed
/// back as a group, lag reported, and errors in words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_creates_produces_consumes_and_reports_lag() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let s = node.addr.clone();
    let (ok, out, _) = cli(&s, &["topic", "create", "logs", "--partitions", "2"], None);
    assert!(ok);
    assert_eq!(out, "created topic logs with 2 partitions\n");
    let (ok, out, _) = cli(&s, &["topic", "list"], None);
    assert!(ok);
    assert_eq!(out, "logs\n");
    let input: String = (0..100_000)
        .map(|i| format!("k{}:line {i}\n", i % 10))
        .collect();
    let (ok, _, err) = cli(
        &s,
        &["produce", "logs", "--key-separator", ":"],
        Some(&input),
    );
    assert!(ok, "{err}");
    assert!(err.contains("produced 100000 records to logs"), "{err}");
    let (ok, out, err) = cli(
        &s,
        &[
            "consume",
            "logs",
            "--from-beginning",
            "--group",
            "readers",
            "--max-messages",
            "100000",
        ],
        None,
    );
    assert!(ok, "{err}");
    let mut got: Vec<&str> = out.lines().collect();
    let mut want: Vec<String> = (0..100_000).map(|i| format!("line {i}")).collect();
    got.sort_unstable();
    want.sort_unstable();
    assert_eq!(got, want, "every line back, keys stripped");
    let (ok, out, err) = cli(&s, &["groups", "describe", "readers"], None);
    assert!(ok, "{err}");
    let lags: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("logs "))
        .map(|l| l.split_whitespace().nth(4).unwrap())
        .collect();
    assert_eq!(lags, vec!["0", "0"], "{out}");
    // A consumer that stops early commits what it printed, nothing more: the next one in the
    // group prints exactly the rest.
    let (ok, first, err) = cli(
        &s,
        &[
            "consume",
            "logs",
            "--from-beginning",
            "--group",
            "billing",
            "--max-messages",
            "5",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(first.lines().count(), 5, "{first}");
    let (ok, out, err) = cli(&s, &["groups", "describe", "billing"], None);
    assert!(ok, "{err}");
    let committed: i64 = out
        .lines()
        .filter(|l| l.starts_with("logs "))
        .map(|l| l.split_whitespace().nth(2).unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(
        committed, 5,
        "the commit covers the 5 printed records only: {out}"
    );
    let (ok, rest, err) = cli(
        &s,
        &[
            "consume",
            "logs",
            "--group",
            "billing",
            "--max-messages",
            "99995",
        ],
        None,
    );
    assert!(ok, "{err}");
    let mut all: Vec<&str> = first.lines().chain(rest.lines()).collect();
    all.sort_unstable();
    assert_eq!(all, want, "the two runs together print every record once");
    let (ok, out, _) = cli(
        &s,
        &[
            "consume",
            "logs",
            "--offset",
            "5",
            "--partition",
            "0",
            "--max-messages",
            "2",
            "--json",
        ],
        None,
    );
    assert!(ok);
    let first = out.lines().next().unwrap();
    assert!(
        first.starts_with("{\"partition\":0,\"offset\":5,"),
        "{first}"
    );
    let (ok, _, err) = cli(&s, &["consume", "nope", "--from-beginning"], None);
    assert!(!ok);
    assert!(
        err.contains("unknown topic \"nope\"") && err.contains("tierlog topic list"),
        "{err}"
    );
    let (ok, _, err) = cli("127.0.0.1:1", &["topic", "list"], None);
    assert!(!ok);
    assert!(
        err.contains("cannot reach a tierlog server at 127.0.0.1:1"),
        "{err}"
    );
    let (ok, _, err) = cli(
        &s,
        &["consume", "logs", "--offset", "1", "--from-beginning"],
        None,
    );
    assert!(!ok);
    assert!(err.contains("cannot be used with"), "{err}");
    node.stop();
}

/// A node on the distributed engines: metadata in a real etcd, the cold tier in a real S3
/// server. Records acknowledged at `acks=all` and `acks=leader`, and a group's commit, survive
/// kill -9 (the restarted node reclaims its own leaderships without waiting out the old lease)
/// and, after a graceful stop, the loss of the whole local disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_on_etcd_and_s3_survives_kill_9_and_losing_its_disk() {
    use client::{Acks, Client, Producer, ProducerConfig};
    let (Some(s3), Some(etcd)) = (tierlog_tests::s3_options(), tierlog_tests::etcd_endpoints())
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ns = tierlog_tests::unique("node");
    let hosts: Vec<&str> = etcd
        .iter()
        .map(|e| e.trim_start_matches("http://"))
        .collect();
    let meta = format!("etcd://{}/{ns}", hosts.join(","));
    let store = format!("s3://tierlog/{ns}");
    let mut cfg = String::from("[object_store_options]\n");
    for (k, v) in &s3 {
        cfg += &format!("{k} = {v:?}\n");
    }
    let cfg_path = dir.path().join("node.toml");
    std::fs::write(&cfg_path, cfg).unwrap();
    let cfg_path = cfg_path.to_str().unwrap().to_string();
    let args = [
        "--config",
        &cfg_path,
        "--meta",
        &meta,
        "--object-store",
        &store,
        "--fsync",
        "every_batch",
    ];
    let data = dir.path().join("data");
    let node = Node::start(&data, &args);
    let c = Client::connect(&node.addr).await.unwrap();
    c.create_topic("audit", 3).await.unwrap();
    let mut acked = Vec::new();
    for (acks, range) in [(Acks::All, 0..1_500u64), (Acks::Leader, 1_500..3_000)] {
        let producer = Producer::new(
            c.clone(),
            ProducerConfig {
                acks,
                ..ProducerConfig::default()
            },
        );
        let mut pending = Vec::new();
        for i in range {
            let key = format!("account-{}", i % 97).into_bytes();
            let rx = producer
                .send(
                    "audit",
                    None,
                    Some(key),
                    Some(i.to_string().into_bytes()),
                    vec![],
                )
                .await
                .unwrap();
            pending.push((i, rx));
        }
        for (i, rx) in pending {
            let md = rx.await.unwrap().unwrap();
            acked.push((md.partition, md.offset, i));
        }
        producer.close().await;
    }
    c.commit_offsets(
        "auditors",
        vec![pb::GroupOffset {
            topic: "audit".into(),
            partition: 1,
            offset: 42,
            metadata: "checkpoint".into(),
        }],
    )
    .await
    .unwrap();
    drop(c);
    node.kill9();

    // Restart at once: the node ends its own earlier lease rather than waiting for its TTL.
    let node = Node::start(&data, &args);
    let check = |node: &Node| {
        let addr = node.addr.clone();
        let acked = acked.clone();
        async move {
            let mut c = TierlogClient::connect(format!("http://{addr}"))
                .await
                .unwrap();
            for p in 0..3u32 {
                let (got, _) = fetch_all(&mut c, "audit", p).await;
                let mut want: Vec<(i64, String)> = acked
                    .iter()
                    .filter(|(q, _, _)| *q == p)
                    .map(|(_, o, i)| (*o, i.to_string()))
                    .collect();
                want.sort();
                let got: Vec<(i64, String)> = got
                    .iter()
                    .map(|r| {
                        (
                            r.offset,
                            String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap(),
                        )
                    })
                    .collect();
                assert_eq!(
                    got, want,
                    "partition {p}: every acknowledged record, once, in order"
                );
            }
            let offsets = c
                .fetch_offsets(pb::FetchOffsetsRequest {
                    group: "auditors".into(),
                    topic: "audit".into(),
                })
                .await
                .unwrap()
                .into_inner()
                .offsets;
            assert_eq!(offsets.len(), 1);
            assert_eq!((offsets[0].partition, offsets[0].offset), (1, 42));
        }
    };
    check(&node).await;
    // A graceful stop uploads everything; then the local disk is lost entirely.
    node.stop();
    std::fs::remove_dir_all(&data).unwrap();
    let node = Node::start(&data, &args);
    check(&node).await;
    node.stop();
}
