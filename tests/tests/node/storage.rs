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
