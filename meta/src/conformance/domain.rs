//! The typed layer ([`Meta`]) on top of the backend.

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use futures::stream::BoxStream;

use super::{Backend, LONG_TTL, SuiteOptions, next_event, wait_until};
use crate::domain::{Leader, LeaderEvent, Meta, NodeInfo, PartitionOffset, TopicConfig};
use crate::error::Error;
use crate::kv::{EventKind, Txn, TxnOp};

fn config(partitions: u32) -> TopicConfig {
    TopicConfig::new(partitions)
}

/// Create, read, list, update and delete topics; ids are never reused.
pub async fn topics_crud(kv: Backend, _opts: SuiteOptions) {
    let meta = Meta::new(kv);
    let mut cfg = config(3);
    cfg.retention_ms = std::num::NonZeroU64::new(3_600_000);
    cfg.extra.insert("cleanup.policy".into(), "delete".into());
    let orders = meta
        .create_topic("orders", cfg.clone())
        .await
        .expect("create");
    assert_eq!((orders.name.as_str(), orders.partitions()), ("orders", 3));
    assert_eq!(orders.config, cfg);
    assert!(orders.id >= 1);
    assert_eq!(
        meta.get_topic("orders").await.expect("get"),
        Some(orders.clone())
    );

    let res = meta.create_topic("orders", config(1)).await;
    assert!(matches!(res, Err(Error::TopicExists { .. })), "{res:?}");

    let payments = meta
        .create_topic("payments", config(1))
        .await
        .expect("create");
    assert!(payments.id > orders.id, "ids grow");
    let names: Vec<_> = meta
        .list_topics()
        .await
        .expect("list")
        .into_iter()
        .map(|t| t.name)
        .collect();
    assert_eq!(names, ["orders", "payments"]);

    let mut grown = cfg.clone();
    grown.partitions = 5;
    let updated = meta
        .update_topic_config("orders", grown.clone())
        .await
        .expect("update");
    assert_eq!((updated.id, updated.partitions()), (orders.id, 5));
    assert_eq!(
        meta.get_topic("orders")
            .await
            .expect("get")
            .expect("exists")
            .config,
        grown
    );
    let res = meta.update_topic_config("orders", config(2)).await;
    assert!(
        matches!(res, Err(Error::InvalidArgument(_))),
        "shrink: {res:?}"
    );
    let res = meta.update_topic_config("nope", config(1)).await;
    assert!(matches!(res, Err(Error::TopicNotFound { .. })), "{res:?}");

    let deleted = meta.delete_topic("orders").await.expect("delete");
    assert_eq!(deleted.id, orders.id);
    assert_eq!(meta.get_topic("orders").await.expect("get"), None);
    let res = meta.delete_topic("orders").await;
    assert!(matches!(res, Err(Error::TopicNotFound { .. })), "{res:?}");

    let again = meta
        .create_topic("orders", config(1))
        .await
        .expect("re-create");
    assert!(again.id > payments.id, "a re-created topic gets a new id");
}

/// Bad topic names and configs are the caller's fault and write nothing.
pub async fn topic_name_validation(kv: Backend, _opts: SuiteOptions) {
    let meta = Meta::new(Arc::clone(&kv));
    let long_ok = "a".repeat(249);
    meta.create_topic(&long_ok, config(1))
        .await
        .expect("249 chars");
    meta.create_topic("a-b_c.9", config(1))
        .await
        .expect("punctuation");
    for bad in ["", ".", "..", "a/b", "sp ace", "ünï", &"a".repeat(250)] {
        let res = meta.create_topic(bad, config(1)).await;
        assert!(
            matches!(res, Err(Error::InvalidArgument(_))),
            "{bad:?}: {res:?}"
        );
        assert!(matches!(
            meta.get_topic(bad).await,
            Err(Error::InvalidArgument(_))
        ));
        assert!(matches!(
            meta.delete_topic(bad).await,
            Err(Error::InvalidArgument(_))
        ));
    }
    let res = meta.create_topic("zero", config(0)).await;
    assert!(matches!(res, Err(Error::InvalidArgument(_))), "{res:?}");
    assert_eq!(meta.list_topics().await.expect("list").len(), 2);
}

/// `next_id` hands out every value exactly once, even under concurrency.
pub async fn id_counters_unique_under_concurrency(kv: Backend, _opts: SuiteOptions) {
    const TASKS: u64 = 16;
    const PER_TASK: u64 = 10;
    let meta = Meta::new(kv);
    let tasks: Vec<_> = (0..TASKS)
        .map(|_| {
            let meta = meta.clone();
            tokio::spawn(async move {
                let mut ids = Vec::new();
                for _ in 0..PER_TASK {
                    ids.push(meta.next_id("producer").await.expect("next_id"));
                }
                ids
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("task"));
    }
    let unique: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(unique.len(), all.len(), "an id was handed out twice");
    assert_eq!(unique, (1..=TASKS * PER_TASK).collect::<BTreeSet<_>>());
    assert_eq!(
        meta.next_id("other").await.expect("next_id"),
        1,
        "counters are independent"
    );
    let res = meta.next_id("bad/name").await;
    assert!(matches!(res, Err(Error::InvalidArgument(_))), "{res:?}");
}

/// Leadership is exclusive, epochs strictly increase across every grant, stale epochs are
/// fenced, and epochs survive topic deletion.
pub async fn leadership_exclusive_and_epochs_increase(kv: Backend, _opts: SuiteOptions) {
    let meta = Meta::new(Arc::clone(&kv));
    meta.create_topic("t", config(2)).await.expect("create");
    let lease1 = kv.grant_lease(LONG_TTL).await.expect("grant");
    let lease2 = kv.grant_lease(LONG_TTL).await.expect("grant");

    let e1 = meta
        .acquire_leadership("t", 0, 1, lease1)
        .await
        .expect("acquire");
    assert!(e1 >= 1);
    assert_eq!(
        meta.current_leader("t", 0).await.expect("leader"),
        Some(Leader {
            node_id: 1,
            epoch: e1
        })
    );
    for (node, lease) in [(2, lease2), (1, lease2)] {
        let res = meta.acquire_leadership("t", 0, node, lease).await;
        match res {
            Err(Error::LeaderExists {
                holder: 1, epoch, ..
            }) => assert_eq!(epoch, e1),
            other => panic!("node {node} took a held partition: {other:?}"),
        }
    }

    let e2 = meta
        .acquire_leadership("t", 0, 1, lease1)
        .await
        .expect("re-acquire");
    assert!(e2 > e1, "re-acquiring bumps the epoch");
    // A topic's leaders in one read: only that topic's (not a topic whose name it prefixes).
    meta.create_topic("t2", config(1)).await.expect("create");
    meta.acquire_leadership("t2", 0, 2, lease2)
        .await
        .expect("acquire");
    let leaders = meta.topic_leaders("t").await.expect("topic leaders");
    assert_eq!(
        leaders.into_iter().collect::<Vec<_>>(),
        [(
            0,
            Leader {
                node_id: 1,
                epoch: e2
            }
        )]
    );
    let res = meta.check_epoch("t", 0, e1).await;
    assert!(
        matches!(res, Err(Error::Fenced { current, .. }) if current == e2),
        "{res:?}"
    );
    meta.check_epoch("t", 0, e2).await.expect("current epoch");

    assert!(
        !meta.resign_leadership("t", 0, e1).await.expect("resign"),
        "stale epoch"
    );
    assert!(meta.current_leader("t", 0).await.expect("leader").is_some());
    assert!(meta.resign_leadership("t", 0, e2).await.expect("resign"));
    assert_eq!(meta.current_leader("t", 0).await.expect("leader"), None);
    meta.check_epoch("t", 0, e2)
        .await
        .expect("no newer epoch yet");

    let e3 = meta
        .acquire_leadership("t", 0, 2, lease2)
        .await
        .expect("acquire");
    assert!(e3 > e2);
    assert!(
        meta.check_epoch("t", 0, e2)
            .await
            .expect_err("fenced")
            .is_fenced()
    );

    // Losing the lease loses leadership; the next leader's epoch is higher still.
    kv.revoke_lease(lease2).await.expect("revoke");
    assert_eq!(meta.current_leader("t", 0).await.expect("leader"), None);
    let e4 = meta
        .acquire_leadership("t", 0, 1, lease1)
        .await
        .expect("acquire");
    assert!(e4 > e3);

    // Fenced writes: a txn guarded by the epoch only commits for the current epoch.
    let fenced_put = |epoch| {
        Txn::new()
            .when([meta.epoch_fence("t", 0, epoch)])
            .and_then([TxnOp::put(
                b"fenced/manifest".to_vec(),
                epoch.to_string(),
                None,
            )])
    };
    assert!(kv.txn(fenced_put(e4)).await.expect("txn").succeeded);
    assert!(!kv.txn(fenced_put(e3)).await.expect("txn").succeeded);

    // Partitions are independent; bad requests are rejected.
    meta.acquire_leadership("t", 1, 2, lease1)
        .await
        .expect("partition 1");
    let res = meta.acquire_leadership("t", 2, 1, lease1).await;
    assert!(matches!(res, Err(Error::InvalidArgument(_))), "{res:?}");
    let res = meta.acquire_leadership("missing", 0, 1, lease1).await;
    assert!(matches!(res, Err(Error::TopicNotFound { .. })), "{res:?}");
    let res = meta.acquire_leadership("t", 0, 3, lease2).await;
    assert!(matches!(res, Err(Error::LeaderExists { .. })), "{res:?}");
    meta.resign_leadership("t", 0, e4).await.expect("resign");
    let res = meta.acquire_leadership("t", 0, 3, lease2).await;
    assert!(
        matches!(res, Err(Error::LeaseNotFound { .. })),
        "dead lease: {res:?}"
    );

    // Deleting the topic drops its leaders but not its epochs.
    meta.acquire_leadership("t", 0, 1, lease1)
        .await
        .expect("acquire");
    meta.delete_topic("t").await.expect("delete");
    assert_eq!(meta.current_leader("t", 0).await.expect("leader"), None);
    assert_eq!(meta.current_leader("t", 1).await.expect("leader"), None);
    meta.create_topic("t", config(1)).await.expect("re-create");
    let e5 = meta
        .acquire_leadership("t", 0, 2, lease1)
        .await
        .expect("acquire");
    assert!(e5 > e4 + 1, "epochs continue across topic re-creation");
    kv.revoke_lease(lease1).await.expect("revoke");
}

/// A leader whose lease expires loses the partition; the next epoch fences it.
pub async fn leadership_lost_on_lease_expiry(kv: Backend, opts: SuiteOptions) {
    let meta = Meta::new(Arc::clone(&kv));
    meta.create_topic("t", config(1)).await.expect("create");
    let short = kv.grant_lease(opts.lease_ttl).await.expect("grant");
    let e1 = meta
        .acquire_leadership("t", 0, 1, short)
        .await
        .expect("acquire");
    wait_until(
        opts.wait_timeout,
        "the leader's lease to expire",
        || async { meta.current_leader("t", 0).await.expect("leader").is_none() },
    )
    .await;
    meta.check_epoch("t", 0, e1)
        .await
        .expect("nobody newer has taken over yet");
    let long = kv.grant_lease(LONG_TTL).await.expect("grant");
    let e2 = meta
        .acquire_leadership("t", 0, 2, long)
        .await
        .expect("acquire");
    assert!(e2 > e1);
    let res = meta.check_epoch("t", 0, e1).await;
    assert!(matches!(res, Err(Error::Fenced { .. })), "{res:?}");
    kv.revoke_lease(long).await.expect("revoke");
}

/// A node's word that it cannot open a partition is listed with the leaders, replaced by a
/// newer word, taken back by the node, and gone with its lease or with the topic.
pub async fn unable_words_follow_their_node(kv: Backend, _opts: SuiteOptions) {
    use crate::domain::Unable;
    let meta = Meta::new(Arc::clone(&kv));
    meta.create_topic("t", config(2)).await.expect("create");
    let lease = kv.grant_lease(LONG_TTL).await.expect("grant");
    let word = |node_id, until_ms| Unable {
        topic: "t".into(),
        partition: 1,
        node_id,
        until_ms,
        reason: "the object store refuses reads".into(),
    };
    meta.mark_unable(&word(3, 100), lease).await.expect("mark");
    meta.mark_unable(&word(3, 200), lease)
        .await
        .expect("mark again");
    meta.mark_unable(&word(4, 300), lease).await.expect("mark");
    let listed = meta.list_leaders().await.expect("list").unable;
    assert_eq!(listed, vec![word(3, 200), word(4, 300)]);
    meta.clear_unable("t", 1, 3).await.expect("clear");
    assert_eq!(
        meta.list_leaders().await.expect("list").unable,
        vec![word(4, 300)]
    );
    kv.revoke_lease(lease).await.expect("revoke");
    assert!(meta.list_leaders().await.expect("list").unable.is_empty());
    let lease = kv.grant_lease(LONG_TTL).await.expect("grant");
    meta.mark_unable(&word(5, 1), lease).await.expect("mark");
    meta.delete_topic("t").await.expect("delete");
    assert!(meta.list_leaders().await.expect("list").unable.is_empty());
    kv.revoke_lease(lease).await.expect("revoke");
}

/// Of many nodes racing for one partition, exactly one wins.
pub async fn leadership_race_has_one_winner(kv: Backend, _opts: SuiteOptions) {
    let meta = Meta::new(Arc::clone(&kv));
    meta.create_topic("race", config(1)).await.expect("create");
    let mut tasks = Vec::new();
    for node in 1..=8u64 {
        let lease = kv.grant_lease(LONG_TTL).await.expect("grant");
        let meta = meta.clone();
        tasks.push(tokio::spawn(async move {
            (node, meta.acquire_leadership("race", 0, node, lease).await)
        }));
    }
    let mut winners = Vec::new();
    for task in tasks {
        match task.await.expect("task") {
            (node, Ok(epoch)) => winners.push((node, epoch)),
            (_, Err(Error::LeaderExists { .. })) => {}
            (node, Err(other)) => panic!("node {node}: unexpected {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "winners: {winners:?}");
    let (node, epoch) = winners[0];
    assert_eq!(
        meta.current_leader("race", 0).await.expect("leader"),
        Some(Leader {
            node_id: node,
            epoch
        })
    );
}

/// `list_leaders` + `watch_leaders` from the snapshot's revision follow every change.
pub async fn leader_watch_and_snapshot(kv: Backend, opts: SuiteOptions) {
    let meta = Meta::new(Arc::clone(&kv));
    meta.create_topic("w", config(2)).await.expect("create");
    let lease = kv.grant_lease(LONG_TTL).await.expect("grant");
    let e0 = meta
        .acquire_leadership("w", 1, 7, lease)
        .await
        .expect("acquire");
    let snapshot = meta.list_leaders().await.expect("snapshot");
    assert_eq!(snapshot.leaders.len(), 1);
    assert_eq!(
        (snapshot.leaders[0].partition, snapshot.leaders[0].leader),
        (
            1,
            Leader {
                node_id: 7,
                epoch: e0
            }
        )
    );

    let mut events = meta
        .watch_leaders(Some(snapshot.revision + 1))
        .await
        .expect("watch");
    let e1 = meta
        .acquire_leadership("w", 0, 7, lease)
        .await
        .expect("acquire");
    match next_leader_event(&mut events, opts).await {
        LeaderEvent::Elected {
            topic,
            partition: 0,
            leader,
            ..
        } if topic == "w" => {
            assert_eq!(
                leader,
                Leader {
                    node_id: 7,
                    epoch: e1
                }
            );
        }
        other => panic!("expected an election, got {other:?}"),
    }
    meta.resign_leadership("w", 0, e1).await.expect("resign");
    match next_leader_event(&mut events, opts).await {
        LeaderEvent::Lost {
            topic,
            partition: 0,
            ..
        } if topic == "w" => {}
        other => panic!("expected a loss, got {other:?}"),
    }
    kv.revoke_lease(lease).await.expect("revoke");
    match next_leader_event(&mut events, opts).await {
        LeaderEvent::Lost { partition: 1, .. } => {}
        other => panic!("expected a loss by lease, got {other:?}"),
    }
}

async fn next_leader_event(
    events: &mut BoxStream<'static, crate::Result<LeaderEvent>>,
    opts: SuiteOptions,
) -> LeaderEvent {
    tokio::time::timeout(opts.wait_timeout, events.next())
        .await
        .expect("leader event in time")
        .expect("stream open")
        .expect("event ok")
}

/// Nodes are listed while their lease lives.
pub async fn node_registry(kv: Backend, _opts: SuiteOptions) {
    let meta = Meta::new(Arc::clone(&kv));
    // The cluster id: made once, by whoever asks first, the same for everyone after.
    let metas: Vec<Meta> = (0..4).map(|_| Meta::new(Arc::clone(&kv))).collect();
    let ids: Vec<String> = futures::future::join_all(metas.iter().map(Meta::cluster_id))
        .await
        .into_iter()
        .map(|r| r.expect("cluster id"))
        .collect();
    assert_eq!(ids[0].len(), 22, "{ids:?}");
    assert!(ids.iter().all(|i| *i == ids[0]), "one cluster id: {ids:?}");
    assert_eq!(meta.cluster_id().await.expect("cluster id"), ids[0]);
    let a = kv.grant_lease(LONG_TTL).await.expect("grant");
    let b = kv.grant_lease(LONG_TTL).await.expect("grant");
    meta.register_node(2, "10.0.0.2:9092", a)
        .await
        .expect("register");
    meta.register_node(10, "10.0.0.10:9092", b)
        .await
        .expect("register");
    meta.register_node(1, "10.0.0.1:9092", a)
        .await
        .expect("register");
    let ids = |nodes: Vec<NodeInfo>| nodes.into_iter().map(|n| n.node_id).collect::<Vec<_>>();
    assert_eq!(ids(meta.list_nodes().await.expect("list")), [1, 2, 10]);

    kv.revoke_lease(a).await.expect("revoke");
    assert_eq!(ids(meta.list_nodes().await.expect("list")), [10]);
    meta.register_node(10, "10.0.0.11:9092", b)
        .await
        .expect("re-register");
    assert_eq!(
        meta.list_nodes().await.expect("list")[0].addr,
        "10.0.0.11:9092"
    );
    assert!(meta.deregister_node(10).await.expect("deregister"));
    assert!(!meta.deregister_node(10).await.expect("deregister"));
    assert!(meta.list_nodes().await.expect("list").is_empty());
    let res = meta.register_node(3, "", b).await;
    assert!(matches!(res, Err(Error::InvalidArgument(_))), "{res:?}");
    let res = meta.register_node(3, "x:1", a).await;
    assert!(matches!(res, Err(Error::LeaseNotFound { .. })), "{res:?}");

    // A restarted node ends its earlier incarnation: registration and leaderships go at once.
    let old = kv.grant_lease(LONG_TTL).await.expect("grant");
    meta.register_node(4, "10.0.0.4:9092", old)
        .await
        .expect("register");
    assert!(meta.reclaim_node(4).await.expect("reclaim"));
    assert!(meta.list_nodes().await.expect("list").is_empty());
    assert!(matches!(
        kv.keep_alive(old).await,
        Err(Error::LeaseNotFound { .. })
    ));
    assert!(!meta.reclaim_node(4).await.expect("reclaim"));
}

fn offset(topic: &str, partition: u32, offset: i64, metadata: &str) -> PartitionOffset {
    PartitionOffset {
        topic: topic.to_owned(),
        partition,
        offset,
        metadata: metadata.to_owned(),
    }
}

/// Offsets commit as one write, fetch sorted, and groups stay apart.
pub async fn offsets_commit_and_fetch(kv: Backend, opts: SuiteOptions) {
    let meta = Meta::new(Arc::clone(&kv));
    let mut watch = kv
        .watch_prefix(format!("{}groups/", meta.root()).as_bytes(), None)
        .await
        .expect("watch");
    let batch = [
        offset("t2", 0, 1, "m"),
        offset("t1", 10, 7, ""),
        offset("t1", 2, 5, "a"),
    ];
    meta.commit_offsets("g1", &batch).await.expect("commit");
    let first = next_event(&mut watch, opts).await;
    for _ in 1..batch.len() {
        let event = next_event(&mut watch, opts).await;
        assert_eq!(
            (event.kind, event.revision),
            (EventKind::Put, first.revision),
            "one batch, one txn"
        );
    }

    let fetched = meta.fetch_offsets("g1", None).await.expect("fetch");
    assert_eq!(
        fetched,
        [
            offset("t1", 2, 5, "a"),
            offset("t1", 10, 7, ""),
            offset("t2", 0, 1, "m")
        ],
        "sorted by topic, then partition number"
    );
    assert_eq!(
        meta.fetch_offsets("g1", Some("t2"))
            .await
            .expect("fetch")
            .len(),
        1
    );
    meta.commit_offsets("g1", &[offset("t1", 2, 9, "b")])
        .await
        .expect("overwrite");
    assert_eq!(
        meta.fetch_offsets("g1", Some("t1")).await.expect("fetch")[0],
        offset("t1", 2, 9, "b")
    );

    // Group ids are arbitrary: "a" and "a/b" must not share keys.
    meta.commit_offsets("a", &[offset("t1", 0, 1, "")])
        .await
        .expect("commit");
    meta.commit_offsets("a/b", &[offset("t1", 0, 2, "")])
        .await
        .expect("commit");
    assert_eq!(
        meta.list_groups().await.expect("groups"),
        ["a", "a/b", "g1"]
    );
    assert_eq!(meta.fetch_offsets("a", None).await.expect("fetch").len(), 1);
    assert!(meta.delete_group("a").await.expect("delete"));
    assert!(!meta.delete_group("a").await.expect("delete"));
    assert_eq!(
        meta.fetch_offsets("a/b", None).await.expect("fetch")[0].offset,
        2
    );
    assert!(
        meta.fetch_offsets("nobody", None)
            .await
            .expect("fetch")
            .is_empty()
    );

    // Batches larger than one txn's limit are still committed completely.
    let big: Vec<_> = (0..300)
        .map(|p| offset("big", p, i64::from(p), ""))
        .collect();
    meta.commit_offsets("g2", &big).await.expect("big commit");
    assert_eq!(meta.fetch_offsets("g2", None).await.expect("fetch"), big);

    for bad in [
        vec![offset("t", 0, 1, ""), offset("t", 0, 2, "")],
        vec![offset("t", 0, -1, "")],
        vec![offset("bad/topic", 0, 1, "")],
    ] {
        let res = meta.commit_offsets("g3", &bad).await;
        assert!(
            matches!(res, Err(Error::InvalidArgument(_))),
            "{bad:?}: {res:?}"
        );
    }
    let res = meta.commit_offsets("", &[offset("t", 0, 1, "")]).await;
    assert!(matches!(res, Err(Error::InvalidArgument(_))), "{res:?}");
    assert!(
        meta.fetch_offsets("g3", None)
            .await
            .expect("fetch")
            .is_empty()
    );
}

/// A group's coordinator claim is exclusive, ends with its lease, and fences every write of a
/// deposed coordinator (state, commits split over several txns, deletes); a deleted topic's
/// offsets go with it.
pub async fn group_claims_fence_coordinator_writes(kv: Backend, opts: SuiteOptions) {
    use crate::domain::{GroupRecord, MemberRecord};
    let meta = Meta::with_options(
        Arc::clone(&kv),
        crate::domain::MetaOptions {
            max_txn_ops: 4,
            ..Default::default()
        },
    )
    .expect("options");
    let short = kv.grant_lease(opts.lease_ttl).await.expect("grant");
    let long = kv.grant_lease(LONG_TTL).await.expect("grant");
    let first = meta
        .claim_group("g/1", 1, short)
        .await
        .expect("claim")
        .expect("free");
    assert_eq!(first.node_id, 1);
    let again = meta.claim_group("g/1", 1, short).await.expect("claim");
    assert_eq!(again, Ok(first), "the holder's own claim comes back as is");
    let other = meta.claim_group("g/1", 2, long).await.expect("claim");
    assert_eq!(other, Err(first), "held by node 1");
    assert_eq!(
        meta.group_coordinator("g/1").await.expect("read"),
        Some(first)
    );

    let record = GroupRecord {
        classic: None,
        generation: 3,
        assignor: "range".into(),
        members: vec![MemberRecord {
            member_id: "m-1".into(),
            topics: vec!["t".into()],
            member_epoch: 3,
            owned: [("t".to_string(), vec![0, 2])].into_iter().collect(),
            ..Default::default()
        }],
        empty_since_ms: None,
    };
    meta.store_group("g/1", &first, &record)
        .await
        .expect("store");
    assert_eq!(
        meta.load_group("g/1").await.expect("load"),
        Some(record.clone())
    );
    let offsets: Vec<_> = (0..10).map(|p| offset("t", p, 5, "")).collect();
    meta.commit_offsets_as("g/1", Some(&first), &offsets)
        .await
        .expect("commit in 4 txns");
    assert_eq!(
        meta.fetch_offsets("g/1", None).await.expect("fetch").len(),
        10
    );

    // The claim's lease ends: node 2 takes over; node 1's writes change nothing.
    wait_until(opts.wait_timeout, "the claim's lease to expire", || async {
        meta.group_coordinator("g/1").await.expect("read").is_none()
    })
    .await;
    let second = meta
        .claim_group("g/1", 2, long)
        .await
        .expect("claim")
        .expect("free again");
    assert!(second.revision > first.revision);
    let stale = GroupRecord {
        generation: 99,
        ..record.clone()
    };
    let res = meta.store_group("g/1", &first, &stale).await;
    assert!(matches!(res, Err(Error::GroupFenced { .. })), "{res:?}");
    let moved: Vec<_> = (0..10).map(|p| offset("t", p, 1, "")).collect();
    let res = meta.commit_offsets_as("g/1", Some(&first), &moved).await;
    assert!(matches!(res, Err(Error::GroupFenced { .. })), "{res:?}");
    let res = meta.delete_group_as("g/1", &first).await;
    assert!(matches!(res, Err(Error::GroupFenced { .. })), "{res:?}");
    assert_eq!(meta.load_group("g/1").await.expect("load"), Some(record));
    assert!(
        meta.fetch_offsets("g/1", None)
            .await
            .expect("fetch")
            .iter()
            .all(|o| o.offset == 5),
        "no offset moved by the deposed coordinator"
    );
    let listed = meta.list_group_records().await.expect("list");
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].0, "g/1");

    // Offsets of a deleted topic go with it, in every group.
    meta.commit_offsets("other", &[offset("t", 0, 1, ""), offset("u", 0, 1, "")])
        .await
        .expect("commit");
    assert_eq!(meta.delete_topic_offsets("t").await.expect("delete"), 11);
    assert_eq!(
        meta.fetch_offsets("other", None)
            .await
            .expect("fetch")
            .len(),
        1
    );

    assert!(meta.delete_group_as("g/1", &second).await.expect("delete"));
    assert_eq!(meta.load_group("g/1").await.expect("load"), None);
    meta.release_group("g/1", &first).await.expect("no-op");
    assert_eq!(
        meta.group_coordinator("g/1").await.expect("read"),
        Some(second)
    );
    meta.release_group("g/1", &second).await.expect("release");
    assert_eq!(meta.group_coordinator("g/1").await.expect("read"), None);
    let res = meta.claim_group("", 1, long).await;
    assert!(matches!(res, Err(Error::InvalidArgument(_))), "{res:?}");
    let res = meta.claim_group(&"x".repeat(256), 1, long).await;
    assert!(matches!(res, Err(Error::InvalidArgument(_))), "{res:?}");
    kv.revoke_lease(long).await.expect("revoke");
}
