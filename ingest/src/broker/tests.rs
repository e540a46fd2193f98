use super::*;
use meta::EmbeddedKv;
use object_store::path::Path;
use std::sync::Arc as StdArc;

async fn broker(dir: &std::path::Path) -> Broker {
    let (store, _) = tier::store::open_store("memory://", &[]).unwrap();
    let cfg = tier::TierConfig {
        data_dir: dir.join("hot"),
        segment_bytes: 64 << 10,
        max_batch_bytes: 32 << 10,
        housekeeping_ms: 50,
        ..tier::TierConfig::default()
    };
    let tier = Tier::open(cfg, store, Path::from("c")).await.unwrap();
    let meta = Meta::new(StdArc::new(EmbeddedKv::memory()));
    let cfg = BrokerConfig {
        max_record_bytes: 1000,
        ..BrokerConfig::default()
    };
    Broker::start(tier, meta, cfg).await.unwrap()
}

fn rec(v: &str) -> ProduceRecord {
    ProduceRecord {
        key: Some(Bytes::from("k")),
        value: Some(Bytes::from(v.to_string())),
        ..Default::default()
    }
}

#[tokio::test]
async fn an_oversized_record_gets_its_own_error_and_the_rest_is_appended() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    b.create_topic("events", TopicConfig::new(2)).await.unwrap();
    let big = "x".repeat(2000);
    let r = b
        .produce(
            "events",
            1,
            vec![rec("a"), rec(&big), rec("c")],
            Acks::Leader,
            Compression::None,
            None,
        )
        .await
        .unwrap();
    assert_eq!((r.base_offset, r.accepted), (0, 2));
    assert_eq!(r.errors.len(), 1);
    assert_eq!(r.errors[0].0, 1);
    assert_eq!(r.errors[0].1.code(), crate::Code::RecordTooLarge);
    let got = b.read("events", 1, 0, 1 << 20, None).await.unwrap();
    let values: Vec<_> = got
        .records
        .iter()
        .map(|r| r.value.clone().unwrap())
        .collect();
    assert_eq!(values, vec![Bytes::from("a"), Bytes::from("c")]);
}

#[tokio::test]
async fn unknown_topics_and_partitions_and_bad_names_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    let e = b
        .produce(
            "nope",
            0,
            vec![rec("a")],
            Acks::Leader,
            Compression::None,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), crate::Code::UnknownTopic);
    assert!(e.to_string().contains("nope"), "{e}");
    b.create_topic("t", TopicConfig::new(1)).await.unwrap();
    let e = b
        .produce(
            "t",
            3,
            vec![rec("a")],
            Acks::Leader,
            Compression::None,
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), crate::Code::UnknownPartition);
    for bad in ["", "a/b", "..", ".", &"x".repeat(250), "sp ace"] {
        let e = b.create_topic(bad, TopicConfig::new(1)).await.unwrap_err();
        assert_eq!(e.code(), crate::Code::InvalidTopicName, "{bad:?}: {e}");
    }
    let e = b.create_topic("t", TopicConfig::new(1)).await.unwrap_err();
    assert_eq!(e.code(), crate::Code::TopicExists);
}

#[tokio::test]
async fn a_waiting_read_wakes_up_when_records_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    b.create_topic("t", TopicConfig::new(1)).await.unwrap();
    let reader = {
        let b = b.clone();
        tokio::spawn(async move {
            b.read("t", 0, 0, 1 << 20, Some(Duration::from_secs(30)))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.produce(
        "t",
        0,
        vec![rec("hello")],
        Acks::Leader,
        Compression::None,
        None,
    )
    .await
    .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(10), reader)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.records.len(), 1);
    // With a short wait and nothing new, the read returns empty at the deadline.
    let r = b
        .read("t", 0, 1, 1 << 20, Some(Duration::from_millis(20)))
        .await
        .unwrap();
    assert!(r.records.is_empty());
}

#[tokio::test]
async fn acks_all_returns_once_committed_to_the_object_store() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    b.create_topic("t", TopicConfig::new(1)).await.unwrap();
    let r = b
        .produce(
            "t",
            0,
            vec![rec("a"), rec("b")],
            Acks::All,
            Compression::Zstd,
            None,
        )
        .await
        .unwrap();
    let info = b.describe_topic("t").await.unwrap();
    assert!(info.partitions[0].offsets.cold_next > r.base_offset + 1);
}

#[tokio::test]
async fn timestamps_resolve_to_offsets() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    b.create_topic("t", TopicConfig::new(1)).await.unwrap();
    let recs = (0..10)
        .map(|i| ProduceRecord {
            timestamp_ms: 1000 + i * 10,
            ..rec("v")
        })
        .collect();
    b.produce("t", 0, recs, Acks::Leader, Compression::None, None)
        .await
        .unwrap();
    assert_eq!(
        b.resolve("t", 0, StartAt::Timestamp(1035)).await.unwrap(),
        4
    );
    assert_eq!(
        b.resolve("t", 0, StartAt::Timestamp(99_999)).await.unwrap(),
        10
    );
    assert_eq!(b.resolve("t", 0, StartAt::Earliest).await.unwrap(), 0);
    assert_eq!(b.resolve("t", 0, StartAt::Latest).await.unwrap(), 10);
}

#[tokio::test]
async fn committed_offsets_round_trip_and_need_a_real_partition() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    b.create_topic("t", TopicConfig::new(2)).await.unwrap();
    let o = |p, off| PartitionOffset {
        topic: "t".into(),
        partition: p,
        offset: off,
        metadata: String::new(),
    };
    b.commit_offsets("g", vec![o(0, 5), o(1, 7)]).await.unwrap();
    let got = b.fetch_offsets("g", Some("t")).await.unwrap();
    assert_eq!(
        got.iter()
            .map(|x| (x.partition, x.offset))
            .collect::<Vec<_>>(),
        vec![(0, 5), (1, 7)]
    );
    let e = b.commit_offsets("g", vec![o(9, 1)]).await.unwrap_err();
    assert_eq!(e.code(), crate::Code::UnknownPartition);
}

#[tokio::test]
async fn a_deleted_topic_created_again_starts_empty() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    b.create_topic("t", TopicConfig::new(1)).await.unwrap();
    b.produce(
        "t",
        0,
        vec![rec("old"); 5],
        Acks::All,
        Compression::None,
        None,
    )
    .await
    .unwrap();
    b.delete_topic("t").await.unwrap();
    let e = b.describe_topic("t").await.unwrap_err();
    assert_eq!(e.code(), crate::Code::UnknownTopic);
    b.create_topic("t", TopicConfig::new(1)).await.unwrap();
    let r = b
        .produce(
            "t",
            0,
            vec![rec("new")],
            Acks::Leader,
            Compression::None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.base_offset, 0);
    let got = b.read("t", 0, 0, 1 << 20, None).await.unwrap();
    assert_eq!(got.records.len(), 1);
    assert_eq!(got.records[0].value.as_deref(), Some(&b"new"[..]));
}

async fn node(
    dir: &std::path::Path,
    store: StdArc<dyn object_store::ObjectStore>,
    kv: StdArc<EmbeddedKv>,
    node_id: u64,
) -> Broker {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_env_filter(tracing_subscriber::EnvFilter::new("warn"))
        .try_init();
    let cfg = tier::TierConfig {
        data_dir: dir.join(format!("node-{node_id}")),
        segment_bytes: 64 << 10,
        max_batch_bytes: 32 << 10,
        housekeeping_ms: 50,
        ..tier::TierConfig::default()
    };
    let tier = Tier::open(cfg, store, Path::from("c")).await.unwrap();
    let cfg = BrokerConfig {
        node_id,
        advertised_addr: format!("node-{node_id}.invalid:7070"),
        reopen_give_up: Duration::from_secs(1),
        ..BrokerConfig::default()
    };
    Broker::start(tier, Meta::new(kv), cfg).await.unwrap()
}

/// Nodes 1 and 2 over one metadata store and one object store, node 1's view of the store able
/// to fail (its faults), and a topic name whose partition 0 the assignment gives to node 1.
async fn two_nodes_one_can_fail() -> (
    tempfile::TempDir,
    StdArc<tier::store::Decorated>,
    Broker,
    Broker,
    String,
) {
    let dir = tempfile::tempdir().unwrap();
    let (inner, _) = tier::store::open_store("memory://", &[]).unwrap();
    let failing = StdArc::new(tier::store::Decorated::new(inner.clone()));
    let kv = StdArc::new(EmbeddedKv::memory());
    let one = node(dir.path(), failing.clone(), kv.clone(), 1).await;
    let two = node(dir.path(), inner, kv, 2).await;
    (dir, failing, one, two, topic_assigned_to_node_1())
}

/// A topic name whose partition 0 the assignment gives to node 1 of nodes 1 and 2.
fn topic_assigned_to_node_1() -> String {
    (0..)
        .map(|i| format!("t{i}"))
        .find(|t| {
            let parts = [(t.clone(), 0)];
            cluster::assign(&parts, &[1, 2], &Default::default())[&parts[0]] == 1
        })
        .expect("some name hashes to node 1")
}

/// Polls until node `who` leads partition 0 of `topic` (or 20 s pass).
async fn wait_for_leader(b: &Broker, topic: &str, who: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let leader = b.inner.meta.current_leader(topic, 0).await.unwrap();
        if leader.is_some_and(|l| l.node_id == who) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node {who} never led {topic}/0 (leader: {leader:?}, passed over: {:?})",
            b.inner.meta.list_leaders().await.unwrap().unable
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Produces one record at acks=all through `b`, retrying while leadership moves (NOT_LEADER);
/// returns its offset.
async fn produce_when_led(b: &Broker, topic: &str, value: &str) -> i64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match b
            .produce(
                topic,
                0,
                vec![rec(value)],
                Acks::All,
                Compression::None,
                None,
            )
            .await
        {
            Ok(r) => return r.base_offset,
            Err(e) if e.code() == crate::Code::NotLeader => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never led long enough to produce"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A node that cannot open a partition assigned to it (its view of the store fails reads) tells
/// the cluster so; the other node serves the partition meanwhile instead of nobody, and once
/// the first node can open it again the partition comes back to it and the word is taken back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_cannot_open_a_partition_is_passed_over_until_it_can() {
    let (_dir, failing, one, two, topic) = two_nodes_one_can_fail().await;
    failing
        .faults
        .fail_gets
        .store(true, std::sync::atomic::Ordering::SeqCst);
    two.inner
        .meta
        .create_topic(&topic, TopicConfig::new(1))
        .await
        .unwrap();
    wait_for_leader(&two, &topic, 2).await;
    assert_eq!(produce_when_led(&two, &topic, "served").await, 0);
    failing
        .faults
        .fail_gets
        .store(false, std::sync::atomic::Ordering::SeqCst);
    wait_for_leader(&two, &topic, 1).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !one
        .inner
        .meta
        .list_leaders()
        .await
        .unwrap()
        .unable
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the word was never taken back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let got = loop {
        match one.read(&topic, 0, 0, 1 << 20, None).await {
            Ok(r) if !r.records.is_empty() => break r,
            _ => {}
        }
        assert!(
            std::time::Instant::now() < deadline,
            "node 1 never served the record"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(got.records[0].value.as_deref(), Some(&b"served"[..]));
}

/// A partition whose reopen after a failed fsync keeps failing (the store cannot be read) is
/// given up after `reopen_give_up` and served by the other node, instead of its clients being
/// sent NOT_LEADER by the failing node forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_whose_reopen_keeps_failing_is_handed_to_another_node() {
    let (_dir, failing, one, two, topic) = two_nodes_one_can_fail().await;
    one.create_topic(&topic, TopicConfig::new(1)).await.unwrap();
    wait_for_leader(&two, &topic, 1).await;
    let r = one
        .produce(
            &topic,
            0,
            vec![rec("before")],
            Acks::All,
            Compression::None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.base_offset, 0);
    let storage = one.partition(&topic, 0).await.unwrap().1;
    failing
        .faults
        .fail_gets
        .store(true, std::sync::atomic::Ordering::SeqCst);
    one.tier().fail_partition_for_test(&storage, 0).unwrap();
    wait_for_leader(&two, &topic, 2).await;
    let words = two.inner.meta.list_leaders().await.unwrap().unable;
    assert_eq!(words.len(), 1, "{words:?}");
    assert_eq!(words[0].node_id, 1);
    assert!(words[0].reason.contains("reopen"), "{words:?}");
    assert_eq!(
        produce_when_led(&two, &topic, "after").await,
        1,
        "continues after what was committed"
    );
}

/// Partitions each node leads, polled until `want` holds (or 10 s pass).
async fn wait_for_split(nodes: &[&Broker], want: &[usize]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let got: Vec<usize> = nodes.iter().map(|b| b.tier().partitions().len()).collect();
        if got == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "partitions per node: {got:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two nodes over one metadata store and one object store: the second node's arrival moves half
/// the partitions to it through a hand-off that uploads first, so nothing acknowledged on the
/// first node is missing on the second; a node asked for a partition it does not lead names the
/// leader; when the second node stops, the first takes everything back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_move_between_nodes_without_losing_acknowledged_records() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = tier::store::open_store("memory://", &[]).unwrap();
    let kv = StdArc::new(EmbeddedKv::memory());
    let one = node(dir.path(), store.clone(), kv.clone(), 1).await;
    one.create_topic("moves", TopicConfig::new(4))
        .await
        .unwrap();
    for p in 0..4 {
        let records = (0..10).map(|i| rec(&format!("p{p}-{i}"))).collect();
        let r = one
            .produce("moves", p, records, Acks::Leader, Compression::None, None)
            .await
            .unwrap();
        assert_eq!(r.base_offset, 0);
    }
    let two = node(dir.path(), store.clone(), kv.clone(), 2).await;
    wait_for_split(&[&one, &two], &[2, 2]).await;
    for p in 0..4u32 {
        let (leader, other) = if one.led("moves", p).is_some() {
            (&one, &two)
        } else {
            (&two, &one)
        };
        let got = leader.read("moves", p, 0, 1 << 20, None).await.unwrap();
        let values: Vec<String> = got
            .records
            .iter()
            .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
            .collect();
        let want: Vec<String> = (0..10).map(|i| format!("p{p}-{i}")).collect();
        assert_eq!(values, want, "partition {p} on its new leader");
        let next = leader
            .produce(
                "moves",
                p,
                vec![rec("after")],
                Acks::Leader,
                Compression::None,
                None,
            )
            .await
            .unwrap();
        assert_eq!(next.base_offset, 10, "partition {p} continues densely");
        let refused = other
            .produce(
                "moves",
                p,
                vec![rec("x")],
                Acks::Leader,
                Compression::None,
                None,
            )
            .await
            .unwrap_err();
        assert_eq!(refused.code(), crate::Code::NotLeader);
        let leader_id = if std::ptr::eq(leader, &one) { 1 } else { 2 };
        assert_eq!(
            refused.leader(),
            Some(format!("node-{leader_id}.invalid:7070").as_str()),
            "{refused}"
        );
        // The other node serves what is committed and sends the reader on at the end. A moved
        // partition was uploaded by its hand-off; one that stayed has only hot records.
        let moved = leader_id == 2;
        match other.read("moves", p, 0, 1 << 20, None).await {
            Ok(r) => {
                assert!(moved, "partition {p} stayed: nothing of it is committed");
                assert_eq!(r.records.first().map(|r| r.offset), Some(0));
            }
            Err(e) => {
                assert!(!moved, "partition {p} was handed off: {e}");
                assert_eq!(e.code(), crate::Code::NotLeader, "{e}");
            }
        }
    }
    two.shutdown().await.unwrap();
    wait_for_split(&[&one], &[4]).await;
    for p in 0..4u32 {
        let got = one.read("moves", p, 0, 1 << 20, None).await.unwrap();
        assert_eq!(
            got.records.len(),
            11,
            "partition {p} after the second node left"
        );
        assert_eq!(got.records[10].value.as_deref(), Some(&b"after"[..]));
    }
    one.shutdown().await.unwrap();
}

fn pid(id: i64, seq: i32) -> Option<tier::ProducerInfo> {
    Some(tier::ProducerInfo {
        producer_id: id,
        producer_epoch: 0,
        base_sequence: seq,
    })
}

/// An idempotent producer's retry is answered with the first attempt's offsets, on the same
/// leader and on the next one after a hand-off (the state comes from the committed manifest);
/// a gap in its sequence is refused; a batch with an oversized record is refused whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_retries_are_not_appended_twice_even_after_leadership_moves() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = tier::store::open_store("memory://", &[]).unwrap();
    let kv = StdArc::new(EmbeddedKv::memory());
    let one = node(dir.path(), store.clone(), kv.clone(), 1).await;
    one.create_topic("once", TopicConfig::new(2)).await.unwrap();
    let (id, epoch) = one.init_producer().await.unwrap();
    assert_eq!(epoch, 0);
    assert_ne!(one.init_producer().await.unwrap().0, id, "ids are unique");
    // Records `from..from + n` of producer `id` as one batch at sequence `from`.
    let send = |b: Broker, p: u32, from: i32, n: i32| async move {
        let records = (from..from + n).map(|i| rec(&format!("r{i}"))).collect();
        b.produce(
            "once",
            p,
            records,
            Acks::All,
            Compression::None,
            pid(id, from),
        )
        .await
    };
    let landed = |r: Result<ProduceResult>| {
        let r = r.unwrap();
        (r.base_offset, r.duplicate)
    };
    for p in 0..2 {
        assert_eq!(landed(send(one.clone(), p, 0, 3).await), (0, false));
        assert_eq!(
            landed(send(one.clone(), p, 0, 3).await),
            (0, true),
            "a retry"
        );
        assert_eq!(landed(send(one.clone(), p, 3, 2).await), (3, false));
        let gap = send(one.clone(), p, 9, 1).await.unwrap_err();
        assert_eq!(gap.code(), crate::Code::OutOfOrderSequence, "{gap}");
    }
    let mut oversized: Vec<_> = (5..6).map(|i| rec(&format!("r{i}"))).collect();
    oversized.push(rec(&"x".repeat(2 << 20)));
    let refused = one
        .produce(
            "once",
            0,
            oversized,
            Acks::All,
            Compression::None,
            pid(id, 5),
        )
        .await
        .unwrap();
    assert_eq!((refused.accepted, refused.errors.len()), (0, 2));

    let two = node(dir.path(), store.clone(), kv.clone(), 2).await;
    wait_for_split(&[&one, &two], &[1, 1]).await;
    for p in 0..2u32 {
        let leader = if one.led("once", p).is_some() {
            one.clone()
        } else {
            two.clone()
        };
        let retry = landed(send(leader.clone(), p, 3, 2).await);
        assert_eq!(retry, (3, true), "partition {p}: a retry after the move");
        let next = landed(send(leader.clone(), p, 5, 1).await);
        assert_eq!(next, (5, false), "partition {p}");
        let all = leader.read("once", p, 0, 1 << 20, None).await.unwrap();
        assert_eq!(all.records.len(), 6, "partition {p}: each record once");
    }
    two.shutdown().await.unwrap();
    one.shutdown().await.unwrap();
}

#[tokio::test]
async fn a_pipelined_batch_that_arrives_first_waits_for_its_predecessor() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = tier::store::open_store("memory://", &[]).unwrap();
    let kv = StdArc::new(EmbeddedKv::memory());
    let b = node(dir.path(), store, kv, 1).await;
    b.create_topic("pipe", TopicConfig::new(1)).await.unwrap();
    let (id, _) = b.init_producer().await.unwrap();
    let send = |b: Broker, from: i32, n: i32| async move {
        let records = (from..from + n).map(|i| rec(&format!("r{i}"))).collect();
        b.produce(
            "pipe",
            0,
            records,
            Acks::Leader,
            Compression::None,
            pid(id, from),
        )
        .await
    };
    // The second request is handled first: it waits for the first instead of being refused.
    let second = tokio::spawn(send(b.clone(), 3, 2));
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(!second.is_finished(), "it waits for its predecessor");
    let first = send(b.clone(), 0, 3).await.unwrap();
    let second = second.await.unwrap().unwrap();
    assert_eq!((first.base_offset, second.base_offset), (0, 3));
    let all = b.read("pipe", 0, 0, 1 << 20, None).await.unwrap();
    let values: Vec<_> = all
        .records
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(values, ["r0", "r1", "r2", "r3", "r4"]);
    b.shutdown().await.unwrap();
}

/// While the object store cannot be read, opening a partition fails: the node resigns it and
/// tries again with a growing backoff rather than at every reconciliation; once the store is
/// back, the partition is led and takes records, and its backoff is forgotten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_partition_open_backs_off_and_succeeds_once_the_store_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let (inner, _) = tier::store::open_store("memory://", &[]).unwrap();
    let store = StdArc::new(tier::store::Decorated::new(inner));
    store.faults.set_all(true);
    let cfg = tier::TierConfig {
        data_dir: dir.path().join("hot"),
        housekeeping_ms: 50,
        upload_retry_initial_ms: 10,
        upload_retry_max_ms: 20,
        ..tier::TierConfig::default()
    };
    let tier = Tier::open(cfg, store.clone(), Path::from("c"))
        .await
        .unwrap();
    let meta = Meta::new(StdArc::new(EmbeddedKv::memory()));
    let cfg = BrokerConfig {
        lease_ttl: Duration::from_secs(1),
        ..BrokerConfig::default()
    };
    let b = Broker::start(tier, meta, cfg).await.unwrap();
    // The topic is created in the metadata store; describing it afterwards reads the object
    // store and fails.
    let created = b.create_topic("t", TopicConfig::new(1)).await;
    assert!(created.is_err_and(|e| e.to_string().contains("injected failure")));
    let key = ("t".to_string(), 0);
    let backoff = || {
        b.inner
            .take_backoff
            .lock()
            .unwrap()
            .get(&key)
            .map(|(_, d)| *d)
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while backoff().is_none_or(|d| d < Duration::from_secs(1)) {
        assert!(
            Instant::now() < deadline,
            "backoff after failed opens: {:?}",
            backoff()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        b.tier().partitions().is_empty(),
        "not open while the store fails"
    );
    assert_eq!(
        b.inner.meta.current_leader("t", 0).await.unwrap(),
        None,
        "resigned after each failed open"
    );
    store.faults.set_all(false);
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.tier().partitions().is_empty() {
        assert!(
            Instant::now() < deadline,
            "never opened after the store came back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = b
        .produce(
            "t",
            0,
            vec![rec("back")],
            Acks::All,
            Compression::None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.base_offset, 0);
    assert_eq!(backoff(), None, "forgotten once open");
}

/// Regression: one small produce request whose batch (valid CRC) claims 2^31-1 compressed
/// records aborted the node by reserving room for them. It is refused as invalid, and the node
/// goes on serving.
#[tokio::test]
async fn a_batch_claiming_billions_of_records_is_refused_and_the_node_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    b.create_topic("t", TopicConfig::new(1)).await.unwrap();
    for codec in [Compression::Zstd, Compression::None] {
        let mut builder = BatchBuilder::new(codec);
        builder.push(0, None, Some(b"v"), &[]);
        let mut bytes = bytes::BytesMut::from(&builder.build().unwrap().as_bytes()[..]);
        bytes[23..27].copy_from_slice(&(i32::MAX - 1).to_be_bytes());
        bytes[57..61].copy_from_slice(&i32::MAX.to_be_bytes());
        let crc = crc32c::crc32c(&bytes[21..]);
        bytes[17..21].copy_from_slice(&crc.to_be_bytes());
        assert!(bytes.len() <= 100, "{} bytes", bytes.len());
        let e = b
            .produce_batch("t", 0, bytes.freeze(), Acks::Leader)
            .await
            .unwrap_err();
        assert_eq!(e.code(), crate::Code::InvalidRequest, "{e}");
        assert!(e.to_string().contains("claims 2147483647"), "{e}");
    }
    let r = b
        .produce(
            "t",
            0,
            vec![rec("after")],
            Acks::Leader,
            Compression::None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(r.base_offset, 0, "nothing of the forged batches was stored");
}

/// Limits refuse what is past them with a clear error naming the setting, and numbers a
/// client may send out of range are refused one by one; the fetch size is cut to its limit.
#[tokio::test]
async fn limits_refuse_topics_partitions_and_bad_numbers_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = tier::store::open_store("memory://", &[]).unwrap();
    let cfg = tier::TierConfig {
        data_dir: dir.path().join("hot"),
        ..tier::TierConfig::default()
    };
    let tier = Tier::open(cfg, store, Path::from("c")).await.unwrap();
    let meta = Meta::new(StdArc::new(EmbeddedKv::memory()));
    let cfg = BrokerConfig {
        limits: Limits {
            max_topics: 2,
            max_partitions_per_topic: 4,
            max_fetch_bytes: 1000,
            fetch_buffer_bytes: 1000,
            ..Limits::default()
        },
        ..BrokerConfig::default()
    };
    let b = Broker::start(tier, meta, cfg).await.unwrap();
    let e = b
        .create_topic("wide", TopicConfig::new(5))
        .await
        .unwrap_err();
    assert_eq!(e.code(), crate::Code::LimitExceeded);
    assert!(e.to_string().contains("max_partitions_per_topic"), "{e}");
    b.create_topic("a", TopicConfig::new(4)).await.unwrap();
    b.create_topic("b", TopicConfig::new(1)).await.unwrap();
    let e = b.create_topic("c", TopicConfig::new(1)).await.unwrap_err();
    assert_eq!(e.code(), crate::Code::LimitExceeded);
    assert!(e.to_string().contains("max_topics"), "{e}");

    let at = |ts| ProduceRecord {
        timestamp_ms: ts,
        ..rec(&"v".repeat(300))
    };
    let r = b
        .produce(
            "b",
            0,
            vec![at(5), at(-3), at(i64::MAX), at(0), at(MAX_TIMESTAMP_MS)],
            Acks::Leader,
            Compression::None,
            None,
        )
        .await
        .unwrap();
    let refused: Vec<usize> = r.errors.iter().map(|(i, _)| *i).collect();
    assert_eq!(refused, vec![1, 2]);
    assert!(
        r.errors[0].1.to_string().contains("timestamp -3"),
        "{:?}",
        r.errors
    );
    assert_eq!(r.accepted, 3);
    // A fetch for a gigabyte is cut to the 1000-byte limit: it gets its permit from a buffer
    // of 1000 bytes (it would wait forever for a gigabyte of them).
    let got = tokio::time::timeout(Duration::from_secs(10), b.read("b", 0, 0, 1 << 30, None))
        .await
        .expect("cut to max_fetch_bytes")
        .unwrap();
    assert_eq!(got.records.len(), 3);
    // Two permits of the whole buffer cannot be held at once: the second read waits until
    // the first answer is dropped.
    let (_, held) = b.read_held("b", 0, 0, 1000, None).await.unwrap();
    let second = tokio::time::timeout(Duration::from_millis(200), b.read("b", 0, 0, 1000, None));
    assert!(second.await.is_err(), "the fetch buffer is full");
    drop(held);
    b.read("b", 0, 0, 1000, None).await.unwrap();
}

/// A Kafka consumer reads only up to the high watermark: with the default visibility, what is
/// committed to the object store (never what a takeover could take back); with `leader`
/// visibility, everything appended. A waiting read gets the rest once it is committed.
#[tokio::test]
async fn fetches_stop_at_the_high_watermark_of_the_topics_visibility() {
    let dir = tempfile::tempdir().unwrap();
    let b = broker(dir.path()).await;
    b.create_topic("safe", TopicConfig::new(1)).await.unwrap();
    let mut leader = TopicConfig::new(1);
    leader.set(meta::VISIBILITY, Some("leader")).unwrap();
    b.create_topic("fast", leader).await.unwrap();
    let produce = |topic: &'static str, acks| {
        let b = b.clone();
        async move {
            b.produce(
                topic,
                0,
                vec![rec("a"), rec("b")],
                acks,
                Compression::None,
                None,
            )
            .await
            .unwrap()
        }
    };
    produce("safe", Acks::All).await;
    produce("fast", Acks::All).await;
    // Appended, acknowledged at acks=leader, not yet committed.
    produce("safe", Acks::Leader).await;
    produce("fast", Acks::Leader).await;

    let f = b.fetch_visible("fast", 0, 0, 1 << 20).await.unwrap();
    assert_eq!(f.high_watermark, 4, "leader visibility: the log end");
    let n: i32 = f.batches.iter().map(|x| x.header().record_count).sum();
    assert_eq!(n, 4);

    let t = b.topic("safe").await.unwrap();
    let o = b.tier().offsets(&storage_name(&t), 0).unwrap();
    let f = b.fetch_visible("safe", 0, 0, 1 << 20).await.unwrap();
    assert_eq!(f.high_watermark, o.cold_next, "committed visibility");
    assert!(f.high_watermark >= 2 && f.high_watermark <= 4);
    for x in &f.batches {
        assert!(
            x.header().last_offset() < f.high_watermark,
            "a batch past the watermark"
        );
    }
    // A fetch at the log end waits; its wait asks for the commit, after which all is visible.
    let until = tokio::time::Instant::now() + Duration::from_secs(20);
    b.wait_visible("safe", 0, 3, until).await.unwrap();
    let f = b.fetch_visible("safe", 0, 2, 1 << 20).await.unwrap();
    assert_eq!(f.high_watermark, 4);
    assert_eq!(f.batches.last().unwrap().header().last_offset(), 3);
    let listed = b.list_offset("safe", 0, OffsetSpec::Latest).await.unwrap();
    assert_eq!(listed.map(|(o, t, _)| (o, t)), Some((4, -1)));
    // Offsets outside the log are OFFSET_OUT_OF_RANGE; at the end, nothing yet.
    let e = b.fetch_visible("safe", 0, 5, 1 << 20).await.unwrap_err();
    assert_eq!(e.code(), crate::Code::OffsetOutOfRange);
    assert!(
        b.fetch_visible("safe", 0, 4, 1 << 20)
            .await
            .unwrap()
            .batches
            .is_empty()
    );
}
