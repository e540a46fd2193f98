//! `tierlog storage compact | gc` and background merging through the real binary: small
//! acks=all objects merge (on demand and on the schedule), `topic describe` shows what waits,
//! SQL answers the same, and garbage collection lists (dry run) and then deletes the replaced
//! objects after the grace period.

use std::time::Duration;

use proto::v1 as pb;

use super::{Node, cli, create, record};

/// Produces `n` records one acks=all request each: one small cold object per request.
async fn small_commits(node: &Node, from: u64, n: u64) {
    let mut c = node.client().await;
    for i in from..from + n {
        c.produce(pb::ProduceRequest {
            topic: "archive".into(),
            records: vec![record(0, i)],
            acks: pb::Acks::All as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    }
}

fn json(ok_out_err: (bool, String, String), what: &str) -> serde_json::Value {
    let (ok, out, err) = ok_out_err;
    assert!(ok, "{what} failed: {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{what}: {e}: {out}"))
}

async fn objects(node: &Node) -> (u64, u64) {
    let mut c = node.client().await;
    let t = c
        .describe_topic(pb::DescribeTopicRequest {
            name: "archive".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .topic
        .unwrap();
    let p = &t.partitions[0];
    (p.cold_segments, p.merge_waiting_segments)
}

fn count(node: &Node) -> String {
    let (ok, out, err) = cli(
        &node.addr,
        &[
            "sql",
            "SELECT COUNT(*) AS n, SUM(\"offset\") AS s FROM archive",
            "--format",
            "csv",
        ],
        None,
    );
    assert!(ok, "sql: {err}");
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_compact_and_gc_merge_and_collect_small_objects() {
    let dir = tempfile::tempdir().unwrap();
    let settings = |enabled: bool| {
        let path = dir.path().join(format!("node-{enabled}.toml"));
        std::fs::write(
            &path,
            format!(
                "[tier]\nflush_interval_ms = 0\norphan_grace_ms = 2000\ngc_interval_ms = 3600000\n\
                 merge_min_age_ms = 0\n\
                 merge_min_segments = 16\nmerge_enabled = {enabled}\nmerge_interval_ms = 200\n"
            ),
        )
        .unwrap();
        path
    };
    let cfg = settings(false);
    let node = Node::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let mut c = node.client().await;
    create(&mut c, "archive", 1).await;
    small_commits(&node, 0, 40).await;
    assert_eq!(objects(&node).await.0, 40);
    let (ok, out, err) = cli(&node.addr, &["topic", "describe", "archive"], None);
    assert!(
        ok && out.contains("objects") && out.contains("to merge"),
        "{out}{err}"
    );
    let sql_before = count(&node);
    assert!(sql_before.contains("40"), "{sql_before}");
    let merged = json(
        cli(
            &node.addr,
            &["storage", "compact", "archive", "--json"],
            None,
        ),
        "compact",
    );
    assert_eq!(merged[0]["merges"], 1, "{merged}");
    assert_eq!(merged[0]["cold_objects"], 1, "{merged}");
    assert_eq!(count(&node), sql_before, "the same SQL answer");
    // The leader counts what waits each time it looks: after the merge, the one merged object
    // (small still, for a 128 MiB target).
    assert_eq!(objects(&node).await, (1, 1));

    // Within the grace period nothing is deleted; after it, a dry run lists the 40 replaced
    // objects and the merge's commit, and the real run deletes them.
    let gc = json(cli(&node.addr, &["storage", "gc", "--json"], None), "gc");
    assert_eq!(gc[0]["garbage"].as_array().unwrap().len(), 0, "{gc}");
    assert!(gc[0]["pending"].as_u64().unwrap() >= 41, "{gc}");
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let dry = json(
        cli(&node.addr, &["storage", "gc", "--dry-run", "--json"], None),
        "gc --dry-run",
    );
    let garbage = dry[0]["garbage"].as_array().unwrap();
    let replaced = garbage
        .iter()
        .filter(|g| g["why"].as_str().unwrap().starts_with("replaced"))
        .count();
    assert_eq!(replaced, 40, "{dry}");
    let gc = json(cli(&node.addr, &["storage", "gc", "--json"], None), "gc");
    assert_eq!(
        gc[0]["garbage"].as_array().unwrap().len(),
        garbage.len(),
        "{gc}"
    );
    assert_eq!(count(&node), sql_before, "after garbage collection too");
    let (ok, text, _) = cli(&node.addr, &["storage", "gc"], None);
    assert!(
        ok && text.contains("archive/0: deleted 0 objects"),
        "{text}"
    );
    node.stop();

    // On the schedule: the leader merges a new run of small objects by itself.
    let cfg = settings(true);
    let node = Node::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    small_commits(&node, 40, 20).await;
    let mut last = (0, 0);
    for _ in 0..200 {
        last = objects(&node).await;
        if last.0 <= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last.0 <= 2, "merged in the background: {last:?}");
    let after = count(&node);
    assert!(after.contains("60"), "{after}");
    node.stop();
}

/// Consumes every record of partition 0 of `topic` with kcat from offset 0: (offset, key,
/// value; `None` for a tombstone).
fn kcat_all(kcat: &str, bootstrap: &str, topic: &str) -> Vec<(i64, String, Option<String>)> {
    let args = ["-p", "0", "-o", "beginning", "-Z", "-f", "%o|%k|%s\n"];
    super::kafka::kcat_read(kcat, bootstrap, topic, &args)
        .lines()
        .map(|l| {
            let mut f = l.splitn(3, '|');
            let o = f.next().unwrap().parse().unwrap();
            let k = f.next().unwrap().to_string();
            let v = f.next().unwrap();
            (o, k, (v != "NULL").then(|| v.to_string()))
        })
        .collect()
}

/// A compacted topic end to end through the real binary and Kafka clients: created and altered
/// by the CLI with Kafka's setting names (shown by `topic describe`); a record without a key is
/// refused; kcat's keyed updates and a tombstone compact by key on `storage compact`; and after
/// a restart without the hot tier, kcat reads from offset 0 batches whose offsets skip the
/// gaps, each key once below the tail, each key's newest value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_topic_through_the_cli_and_kcat() {
    let Some(kcat) = super::kafka::kcat() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        "[tier]\nflush_interval_ms = 0\nmerge_enabled = false\nmerge_interval_ms = 3600000\n",
    )
    .unwrap();
    let args = ["--config", cfg.to_str().unwrap()];
    let node = Node::start(dir.path(), &args);
    let (ok, _, err) = cli(
        &node.addr,
        &[
            "topic",
            "create",
            "prices",
            "--config",
            "cleanup.policy=compact",
        ],
        None,
    );
    assert!(ok, "{err}");
    let (ok, out, err) = cli(
        &node.addr,
        &[
            "topic",
            "alter",
            "prices",
            "--config",
            "delete.retention.ms=3600000",
            "--config",
            "min.compaction.lag.ms=0",
        ],
        None,
    );
    assert!(
        ok && out.contains("delete.retention.ms = 3600000"),
        "{out}{err}"
    );
    let (ok, out, _) = cli(&node.addr, &["topic", "describe", "prices"], None);
    assert!(
        ok && out.contains("cleanup.policy=compact") && out.contains("delete.retention.ms=3600000"),
        "{out}"
    );
    let (ok, _, err) = cli(
        &node.addr,
        &[
            "topic",
            "alter",
            "prices",
            "--config",
            "cleanup.policy=shrink",
        ],
        None,
    );
    assert!(!ok && err.contains("cleanup.policy"), "{err}");
    // No key on a compacted topic: refused, naming why.
    let (ok, _, err) = cli(
        &node.addr,
        &["produce", "prices", "--acks", "all"],
        Some("no key\n"),
    );
    assert!(!ok && err.contains("has no key"), "{err}");

    // Four rounds of updates to 50 keys, one acks=all object each; round 2 deletes user-3.
    let mut newest = std::collections::BTreeMap::new();
    for round in 0..4 {
        let mut input = String::new();
        for k in 0..50 {
            let key = format!("user-{k}");
            let value = if round == 2 && k == 3 {
                String::new()
            } else {
                format!("r{round}-{k}")
            };
            input.push_str(&format!("{key}:{value}\n"));
            newest.insert(key, (!value.is_empty()).then_some(value));
        }
        super::kafka::kcat_produce(
            &kcat,
            &node.kafka,
            "prices",
            &["-p", "0", "-Z", "-X", "acks=all"],
            &input,
        );
    }
    let before = kcat_all(&kcat, &node.kafka, "prices");
    assert_eq!(before.len(), 200);
    let done = json(
        cli(
            &node.addr,
            &["storage", "compact", "prices", "--json"],
            None,
        ),
        "compact",
    );
    // Rounds 0-2 compacted (the newest object, round 3, stays whole): rounds 0 and 1 are
    // superseded by round 2.
    assert_eq!(done[0]["compacted_away"], 100, "{done}");
    assert_eq!(done[0]["compacted_below"], 150, "{done}");
    node.stop();

    std::fs::remove_dir_all(dir.path().join("hot")).unwrap();
    let node = Node::start(dir.path(), &args);
    let after = kcat_all(&kcat, &node.kafka, "prices");
    assert!(
        after.windows(2).all(|w| w[0].0 < w[1].0),
        "offsets increase"
    );
    let below: Vec<_> = after.iter().filter(|r| r.0 < 150).collect();
    assert_eq!(below.len(), 50, "one per key below the tail: {below:?}");
    assert_eq!(after.len(), 100);
    assert_eq!(
        below.iter().find(|r| r.1 == "user-3").map(|r| r.2.clone()),
        Some(None),
        "the tombstone stays within its retention"
    );
    let replay: std::collections::BTreeMap<_, _> =
        after.into_iter().map(|(_, k, v)| (k, v)).collect();
    assert_eq!(replay, newest, "each key's newest value");
    node.stop();
}

/// Every record of partition 0 of `topic` from its start, as (offset, key, value).
async fn everything(node: &Node, topic: &str) -> Vec<(i64, String, Option<String>)> {
    let mut c = node.client().await;
    let (records, _) = super::fetch_all(&mut c, topic, 0).await;
    let text = |b: &[u8]| String::from_utf8(b.to_vec()).unwrap();
    let out: Vec<_> = records
        .iter()
        .map(|r| {
            (
                r.offset,
                r.key.as_deref().map(text).unwrap_or_default(),
                r.value.as_deref().map(text),
            )
        })
        .collect();
    assert!(out.windows(2).all(|w| w[0].0 < w[1].0), "offsets increase");
    out
}

/// kill -9 of the real binary while it merges, compacts by key (in the background and on
/// `storage compact`) and collects garbage, at a different moment each round, with its hot tier
/// deleted before each restart (reads come from the cold tier): every acknowledged record of
/// the archive is read exactly once, the compacted topic gives each key's newest value, and in
/// the end garbage collection leaves nothing the manifests do not name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_while_merging_and_compacting_loses_and_duplicates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("node.toml");
    std::fs::write(
        &cfg,
        "[tier]\nflush_interval_ms = 0\nmerge_min_age_ms = 0\nmerge_min_segments = 4\n\
         merge_interval_ms = 100\norphan_grace_ms = 1000\ngc_interval_ms = 300\n\
         compaction_min_dirty_ratio = 0.0\n",
    )
    .unwrap();
    let data = dir.path().join("data");
    let args = ["--config", cfg.to_str().unwrap()];
    let mut node = Node::start(&data, &args);
    let mut c = node.client().await;
    create(&mut c, "archive", 1).await;
    let (ok, _, err) = cli(
        &node.addr,
        &[
            "topic",
            "create",
            "prices",
            "--config",
            "cleanup.policy=compact",
        ],
        None,
    );
    assert!(ok, "{err}");
    let mut archived = 0u64;
    let mut newest = std::collections::BTreeMap::new();
    for round in 0..5u64 {
        let mut c = node.client().await;
        for j in 0..12u64 {
            small_commits(&node, archived, 1).await;
            archived += 1;
            let key = format!("key-{}", j % 5);
            let value = format!("r{round}-{j}");
            c.produce(pb::ProduceRequest {
                topic: "prices".into(),
                records: vec![pb::Record {
                    key: Some(key.clone().into_bytes().into()),
                    value: Some(value.clone().into_bytes().into()),
                    ..Default::default()
                }],
                acks: pb::Acks::All as i32,
                ..Default::default()
            })
            .await
            .unwrap();
            newest.insert(key, Some(value));
        }
        // A compaction on demand in flight, and the background jobs, when the node dies.
        let addr = node.addr.clone();
        let compacting = std::thread::spawn(move || cli(&addr, &["storage", "compact"], None));
        tokio::time::sleep(Duration::from_millis(30 + 60 * round)).await;
        node.kill9();
        let _ = compacting.join();
        std::fs::remove_dir_all(data.join("hot")).unwrap();
        node = Node::start(&data, &args);
        let archive = everything(&node, "archive").await;
        let want: Vec<i64> = (0..archived as i64).collect();
        assert_eq!(
            archive.iter().map(|r| r.0).collect::<Vec<_>>(),
            want,
            "round {round}: every acknowledged record once"
        );
        for (o, _, v) in &archive {
            assert_eq!(
                v.as_deref().map(str::as_bytes),
                record(0, *o as u64).value.as_deref(),
                "offset {o}"
            );
        }
        let prices = everything(&node, "prices").await;
        let replay: std::collections::BTreeMap<_, _> =
            prices.into_iter().map(|(_, k, v)| (k, v)).collect();
        assert_eq!(replay, newest, "round {round}: each key's newest value");
    }
    // In the end: compaction and merging run to completion, and after the grace period garbage
    // collection leaves only what the manifests name.
    let done = json(
        cli(&node.addr, &["storage", "compact", "--json"], None),
        "compact",
    );
    assert!(
        done.as_array()
            .unwrap()
            .iter()
            .all(|p| p["error"].is_null()),
        "{done}"
    );
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let gc = json(cli(&node.addr, &["storage", "gc", "--json"], None), "gc");
    assert!(
        gc.as_array().unwrap().iter().all(|p| p["error"].is_null()),
        "{gc}"
    );
    tokio::time::sleep(Duration::from_millis(2300)).await;
    let dry = json(
        cli(&node.addr, &["storage", "gc", "--dry-run", "--json"], None),
        "gc",
    );
    for p in dry.as_array().unwrap() {
        assert_eq!(p["garbage"].as_array().unwrap().len(), 0, "{dry}");
    }
    let below = done
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["topic"] == "prices")
        .and_then(|p| p["compacted_below"].as_i64())
        .unwrap();
    assert!(below > 0, "{done}");
    let prices = everything(&node, "prices").await;
    let mut keys = std::collections::BTreeSet::new();
    for (o, k, _) in prices.iter().filter(|r| r.0 < below) {
        assert!(
            keys.insert(k.clone()),
            "{k} twice below {below} (at {o}): {prices:?}"
        );
    }
    let replay: std::collections::BTreeMap<_, _> =
        prices.into_iter().map(|(_, k, v)| (k, v)).collect();
    assert_eq!(replay, newest);
    assert_eq!(everything(&node, "archive").await.len() as u64, archived);
    node.stop();
}
