//! Consumer groups with real processes: `tierlog consume --group` members (separate
//! processes) sharing a topic's partitions on a node whose metadata is in etcd when one is
//! configured (else the embedded store), a producer writing meanwhile, members leaving,
//! joining and being killed; and the group commands of the CLI.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Acks, Client, ErrorCode, Producer, ProducerConfig};
use proto::v1 as pb;

use super::{Node, binary, cli};

/// The members' session timeout: a killed member's partitions move after this.
const SESSION_MS: u64 = 6_000;

/// A node on etcd when the suite has one (the group's state and commits go there).
pub(super) fn node(dir: &std::path::Path) -> Node {
    match tierlog_tests::etcd_endpoints() {
        Some(etcd) => {
            let hosts: Vec<&str> = etcd
                .iter()
                .map(|e| e.trim_start_matches("http://"))
                .collect();
            let meta = format!(
                "etcd://{}/{}",
                hosts.join(","),
                tierlog_tests::unique("groups")
            );
            Node::start(dir, &["--meta", &meta])
        }
        None => Node::start(dir, &[]),
    }
}

/// A `tierlog consume --group` process; what it printed and said, as it said it.
struct Member {
    name: String,
    child: Child,
    /// (partition, offset) of every record it printed.
    records: Arc<Mutex<Vec<(u32, i64)>>>,
    /// Its stderr lines ("assigned: t[0,1]", "revoked: ...").
    events: Arc<Mutex<Vec<String>>>,
}

impl Member {
    fn start(server: &str, topic: &str, group: &str, name: &str, extra: &[&str]) -> Member {
        let session = SESSION_MS.to_string();
        let mut child = Command::new(binary())
            .args(["--server", server, "consume", topic, "--group", group])
            .args([
                "--from-beginning",
                "--json",
                "--session-timeout-ms",
                &session,
            ])
            .args(extra)
            .env("TIERLOG_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start a member");
        let records = Arc::new(Mutex::new(Vec::new()));
        let events = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let r = records.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { return };
                let v: serde_json::Value = serde_json::from_str(&line).expect("a JSON record");
                let p = v["partition"].as_u64().unwrap() as u32;
                let o = v["offset"].as_i64().unwrap();
                r.lock().unwrap().push((p, o));
            }
        });
        let err = child.stderr.take().unwrap();
        let e = events.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { return };
                e.lock().unwrap().push(line);
            }
        });
        Member {
            name: name.to_string(),
            child,
            records,
            events,
        }
    }

    /// Partitions named by its events of `kind` ("assigned", "revoked", "lost").
    fn partitions(&self, kind: &str) -> Vec<Vec<u32>> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| l.strip_prefix(&format!("{kind}: ")))
            .map(parse_partitions)
            .collect()
    }

    /// What it holds now, by its own events.
    fn held(&self) -> BTreeSet<u32> {
        let mut held = BTreeSet::new();
        for e in self.events.lock().unwrap().iter() {
            if let Some(s) = e.strip_prefix("assigned: ") {
                held.extend(parse_partitions(s));
            } else if let Some(s) = e
                .strip_prefix("revoked: ")
                .or_else(|| e.strip_prefix("lost: "))
            {
                for p in parse_partitions(s) {
                    held.remove(&p);
                }
            }
        }
        held
    }

    fn sigterm(&mut self) {
        let pid = self.child.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "{} stopped badly: {status}", self.name);
    }

    fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// "t[0,3] u[1]" → the partition numbers (one topic per test).
fn parse_partitions(s: &str) -> Vec<u32> {
    s.split_whitespace()
        .flat_map(|tp| {
            let inner = tp.split_once('[').unwrap().1.trim_end_matches(']');
            inner
                .split(',')
                .map(|p| p.parse::<u32>().unwrap())
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Waits until the group has `members` members and is Stable; checks on every look that no
/// partition is held by two members.
async fn wait_stable(c: &Client, group: &str, members: usize) -> pb::DescribeGroupResponse {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(d) = c.describe_group(group).await {
            let mut held = BTreeSet::new();
            for m in &d.members {
                for t in &m.owned {
                    for p in &t.partitions {
                        assert!(held.insert((t.topic.clone(), *p)), "{p} held twice: {d:?}");
                    }
                }
            }
            if d.members.len() == members && d.state == "Stable" {
                return d;
            }
            assert!(
                Instant::now() < deadline,
                "group {group} never settled: {d:?}"
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the members, by their own events, hold `total` partitions between them.
async fn wait_held(members: &[&Member], total: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let held: usize = members.iter().map(|m| m.held().len()).sum();
        if held == total {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "members hold {held} partitions, not {total}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes records until stopped; returns every acknowledged (partition, offset).
fn start_producer(
    c: &Client,
    topic: &str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<BTreeSet<(u32, i64)>> {
    let (c, topic) = (c.clone(), topic.to_string());
    tokio::spawn(async move {
        let producer = Producer::new(
            c,
            ProducerConfig {
                acks: Acks::Leader,
                ..ProducerConfig::default()
            },
        );
        let mut acked = BTreeSet::new();
        let mut i = 0u64;
        while !stop.load(Ordering::Relaxed) {
            let mut pending = Vec::new();
            for _ in 0..100 {
                let key = format!("k{i}");
                let value = format!("v{i}");
                pending.push(
                    producer
                        .send(
                            &topic,
                            None,
                            Some(key.into_bytes()),
                            Some(value.into_bytes()),
                            vec![],
                        )
                        .await
                        .unwrap(),
                );
                i += 1;
            }
            for p in pending {
                let m = p.await.unwrap().unwrap();
                acked.insert((m.partition, m.offset));
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        producer.close().await;
        acked
    })
}

/// Waits until the members together printed every acknowledged record.
async fn wait_consumed(members: &[&Member], acked: &BTreeSet<(u32, i64)>) {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let seen: BTreeSet<(u32, i64)> = members
            .iter()
            .flat_map(|m| m.records.lock().unwrap().clone())
            .collect();
        let missing = acked.difference(&seen).count();
        if missing == 0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {} acknowledged records never consumed",
            acked.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// (partition, offset) → the members that printed it, for records printed more than once.
fn duplicates(members: &[&Member]) -> BTreeMap<(u32, i64), Vec<String>> {
    let mut by: BTreeMap<(u32, i64), Vec<String>> = BTreeMap::new();
    for m in members {
        for r in m.records.lock().unwrap().iter() {
            by.entry(*r).or_default().push(m.name.clone());
        }
    }
    by.retain(|_, v| v.len() > 1);
    by
}

/// Three member processes share 12 partitions while a producer writes; a member leaves and
/// another joins (a clean rebalance: nothing consumed twice, nothing missed), then a member is
/// killed with SIGKILL: its partitions move after its session timeout and consumption resumes
/// at the committed offsets (only what the killed member printed after its last commit may be
/// printed again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_share_partitions_rebalance_cleanly_and_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let c = Client::connect(&node.addr).await.unwrap();
    c.create_topic("orders", 12).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let producing = start_producer(&c, "orders", stop.clone());
    let mut a = Member::start(&node.addr, "orders", "billing", "a", &[]);
    let mut b = Member::start(&node.addr, "orders", "billing", "b", &[]);
    let mut m3 = Member::start(&node.addr, "orders", "billing", "c", &[]);
    let d = wait_stable(&c, "billing", 3).await;
    for m in &d.members {
        let n: usize = m.owned.iter().map(|t| t.partitions.len()).sum();
        assert_eq!(n, 4, "12 partitions over 3 members: {d:?}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    // A clean rebalance: b leaves (commits, then leaves), d joins.
    b.sigterm();
    let mut m4 = Member::start(&node.addr, "orders", "billing", "d", &[]);
    wait_stable(&c, "billing", 3).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let acked = producing.await.unwrap();
    assert!(acked.len() > 1_000, "the producer wrote {}", acked.len());
    wait_consumed(&[&a, &b, &m3, &m4], &acked).await;
    let dups = duplicates(&[&a, &b, &m3, &m4]);
    assert!(
        dups.is_empty(),
        "a clean rebalance consumes nothing twice: {} duplicates, e.g. {:?}",
        dups.len(),
        dups.iter().next()
    );

    // kill -9: m3's partitions move after its session timeout.
    let killed_at = Instant::now();
    m3.kill9();
    let stop = Arc::new(AtomicBool::new(false));
    let producing = start_producer(&c, "orders", stop.clone());
    let d = wait_stable(&c, "billing", 2).await;
    assert!(
        killed_at.elapsed() >= Duration::from_millis(SESSION_MS) - Duration::from_millis(500),
        "moved only after the session timeout: {:?}",
        killed_at.elapsed()
    );
    let owned: usize = d
        .members
        .iter()
        .flat_map(|m| &m.owned)
        .map(|t| t.partitions.len())
        .sum();
    assert_eq!(owned, 12);
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::Relaxed);
    let acked2 = producing.await.unwrap();
    wait_consumed(&[&a, &m4], &acked2).await;
    let all: BTreeSet<(u32, i64)> = acked.union(&acked2).cloned().collect();
    wait_consumed(&[&a, &b, &m3, &m4], &all).await;
    for (record, by) in duplicates(&[&a, &b, &m3, &m4]) {
        assert!(
            by.contains(&"c".to_string()),
            "{record:?} consumed twice by {by:?}: only the killed member's uncommitted tail \
             may be consumed again"
        );
    }
    a.sigterm();
    m4.sigterm();
    node.stop();
}

/// When a fourth member joins, cooperative-sticky takes from each member only what moves to
/// the newcomer (they keep consuming the rest), while an eager strategy (range) revokes
/// everything from everyone first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooperative_rebalances_move_only_what_moves_and_eager_ones_stop_everyone() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let c = Client::connect(&node.addr).await.unwrap();
    c.create_topic("events", 12).await.unwrap();
    for assignor in ["cooperative-sticky", "range"] {
        let group = format!("g-{assignor}");
        let extra = ["--assignor", assignor];
        let mut first: Vec<Member> = Vec::new();
        for (i, n) in ["a", "b", "c"].iter().enumerate() {
            first.push(Member::start(&node.addr, "events", &group, n, &extra));
            wait_stable(&c, &group, i + 1).await;
            wait_held(&first.iter().collect::<Vec<_>>(), 12).await;
        }
        let held: Vec<BTreeSet<u32>> = first.iter().map(Member::held).collect();
        let revoked_before: Vec<usize> = first
            .iter()
            .map(|m| m.partitions("revoked").len())
            .collect();
        let mut newcomer = Member::start(&node.addr, "events", &group, "d", &extra);
        wait_stable(&c, &group, 4).await;
        let all: Vec<&Member> = first.iter().chain([&newcomer]).collect();
        wait_held(&all, 12).await;
        let got: BTreeSet<u32> = newcomer
            .partitions("assigned")
            .concat()
            .into_iter()
            .collect();
        assert_eq!(
            got.len(),
            3,
            "{assignor}: the newcomer's share; its events: {:?}; the others': {:?}",
            newcomer.events.lock().unwrap(),
            first
                .iter()
                .map(|m| m.events.lock().unwrap().clone())
                .collect::<Vec<_>>()
        );
        for (i, m) in first.iter().enumerate() {
            let revoked: Vec<u32> = m.partitions("revoked")[revoked_before[i]..].concat();
            let revoked: BTreeSet<u32> = revoked.into_iter().collect();
            if assignor == "range" {
                assert_eq!(
                    revoked, held[i],
                    "eager: member {i} gave up everything it held"
                );
            } else {
                assert!(
                    revoked.is_subset(&got) && revoked.len() == 1,
                    "cooperative: member {i} gave up only the partition that moved to the \
                     newcomer: {revoked:?} (newcomer got {got:?})"
                );
            }
        }
        for m in first.iter_mut().chain([&mut newcomer]) {
            m.sigterm();
        }
    }
    node.stop();
}

fn code(e: &client::Error) -> Option<ErrorCode> {
    e.code()
}

/// Commits from a stale epoch or an unknown member are refused and move nothing; a static
/// member restarts without a rebalance and gets its partitions back; a group with members
/// cannot be deleted or reset; bad group requests get clear errors.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stale_commits_are_refused_and_static_members_restart_without_a_rebalance() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let c = Client::connect(&node.addr).await.unwrap();
    c.create_topic("t", 4).await.unwrap();
    let join = |id: &str, epoch: i32| pb::GroupHeartbeatRequest {
        group: "raw".into(),
        member_id: id.into(),
        member_epoch: epoch,
        subscription: Some(pb::Subscription {
            topics: vec!["t".into()],
            regex: String::new(),
        }),
        session_timeout_ms: 30_000,
        ..Default::default()
    };
    let m1 = c.group_heartbeat(join("", 0)).await.unwrap();
    let e1 = m1.member_epoch;
    let owned = |r: &pb::GroupHeartbeatResponse| pb::OwnedPartitions {
        topics: r.assignment.clone(),
    };
    let m2 = c.group_heartbeat(join("", 0)).await.unwrap();
    // m1 gives up what moves to m2 and moves to the new epoch.
    let mut r1 = m1.clone();
    for _ in 0..3 {
        r1 = c
            .group_heartbeat(pb::GroupHeartbeatRequest {
                owned: Some(owned(&r1)),
                ..join(&m1.member_id, r1.member_epoch)
            })
            .await
            .unwrap();
    }
    assert!(r1.member_epoch > e1, "{r1:?}");
    let offsets = |o: i64| {
        vec![pb::GroupOffset {
            topic: "t".into(),
            partition: 0,
            offset: o,
            metadata: "m".into(),
        }]
    };
    c.commit_member_offsets("raw", &m1.member_id, r1.member_epoch, offsets(10))
        .await
        .unwrap();
    let e = c
        .commit_member_offsets("raw", &m1.member_id, e1, offsets(3))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::IllegalGeneration), "{e}");
    let e = c
        .commit_member_offsets("raw", "nobody", 1, offsets(3))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::UnknownMemberId), "{e}");
    let e = c.commit_offsets("raw", offsets(3)).await.unwrap_err();
    assert_eq!(
        code(&e),
        Some(ErrorCode::UnknownMemberId),
        "{e}: the group has members"
    );
    let got = c.fetch_offsets("raw", "t").await.unwrap();
    assert_eq!(
        (got[0].offset, got[0].metadata.as_str()),
        (10, "m"),
        "nothing moved back"
    );
    // Fetches are fenced too, by what the group has with the member: m1 reads what it holds,
    // not what it gave up for m2, and a member the group does not know reads nothing.
    let fetch_as = |id: &str, epoch: i32, partition: u32| pb::FetchRequest {
        topic: "t".into(),
        partition,
        start: Some(pb::fetch_request::Start::Offset(0)),
        member: Some(pb::FetchMember {
            group: "raw".into(),
            member_id: id.into(),
            member_epoch: epoch,
        }),
        ..Default::default()
    };
    let parts = |r: &pb::GroupHeartbeatResponse| -> Vec<u32> {
        r.assignment
            .iter()
            .flat_map(|t| t.partitions.clone())
            .collect()
    };
    let mine = parts(&r1);
    let theirs: Vec<u32> = (0..4).filter(|p| !mine.contains(p)).collect();
    assert!(!mine.is_empty() && !theirs.is_empty(), "{r1:?}");
    let mut rpc = c.rpc();
    rpc.fetch(fetch_as(&m1.member_id, r1.member_epoch, mine[0]))
        .await
        .expect("the holder reads");
    assert_eq!(
        super::fetch_refused(
            rpc.fetch(fetch_as(&m1.member_id, r1.member_epoch, theirs[0]))
                .await
        ),
        Some(ErrorCode::IllegalGeneration),
        "another member's partition"
    );
    assert_eq!(
        super::fetch_refused(rpc.fetch(fetch_as("nobody", 1, mine[0])).await),
        Some(ErrorCode::UnknownMemberId),
        "an unknown member"
    );
    let e = c.delete_group("raw").await.unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::GroupNotEmpty), "{e}");
    let e = c
        .reset_offsets(pb::ResetOffsetsRequest {
            group: "raw".into(),
            topic: "t".into(),
            to: Some(pb::reset_offsets_request::To::Offset(0)),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::GroupNotEmpty), "{e}");
    let e = c
        .group_heartbeat(pb::GroupHeartbeatRequest {
            assignor: "fastest".into(),
            ..join("", 0)
        })
        .await
        .unwrap_err();
    assert!(
        matches!(code(&e), Some(ErrorCode::UnsupportedAssignor)),
        "{e}"
    );
    for bad in [String::new(), "x".repeat(256)] {
        let e = c
            .group_heartbeat(pb::GroupHeartbeatRequest {
                group: bad,
                ..join("", 0)
            })
            .await
            .unwrap_err();
        assert_eq!(code(&e), Some(ErrorCode::InvalidGroupId), "{e}");
    }
    for (id, epoch) in [(&m1.member_id, -1), (&m2.member_id, -1)] {
        c.group_heartbeat(join(id, epoch)).await.unwrap();
    }
    let e = c
        .group_heartbeat(join(&m1.member_id, r1.member_epoch))
        .await
        .unwrap_err();
    assert_eq!(code(&e), Some(ErrorCode::UnknownMemberId), "{e}: it left");
    assert_eq!(
        super::fetch_refused(
            rpc.fetch(fetch_as(&m1.member_id, r1.member_epoch, mine[0]))
                .await
        ),
        Some(ErrorCode::UnknownMemberId),
        "a member that left"
    );

    // Static members: one restarts and comes back to its partitions, with no rebalance.
    let mut a = Member::start(&node.addr, "t", "static", "a", &["--instance-id", "a"]);
    let b = Member::start(&node.addr, "t", "static", "b", &["--instance-id", "b"]);
    let before = wait_stable(&c, "static", 2).await;
    wait_held(&[&a, &b], 4).await;
    let had: Vec<u32> = a.held().into_iter().collect();
    let b_revoked = b.partitions("revoked").len();
    a.sigterm();
    let a2 = Member::start(&node.addr, "t", "static", "a2", &["--instance-id", "a"]);
    wait_held(&[&a2, &b], 4).await;
    let after = wait_stable(&c, "static", 2).await;
    assert_eq!(
        after.generation, before.generation,
        "no rebalance for a static restart"
    );
    let back: Vec<u32> = a2.held().into_iter().collect();
    assert_eq!(back, had, "the same partitions");
    assert_eq!(
        b.partitions("revoked").len(),
        b_revoked,
        "the other member was not disturbed"
    );
    drop((a2, b));
    node.stop();
}

/// A `commit_async` made before a synchronous commit never lands after it: on one thread the
/// synchronous commit is sent first, and the background one, queued behind it, would follow it
/// with older offsets.
#[tokio::test]
async fn an_async_commit_never_moves_a_newer_commit_back() {
    use client::{GroupConfig, GroupConsumer, OffsetReset};
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path());
    let c = Client::connect(&node.addr).await.unwrap();
    c.create_topic("ordered", 1).await.unwrap();
    let producer = Producer::new(c.clone(), ProducerConfig::default());
    for i in 0..50u32 {
        let rx = producer
            .send(
                "ordered",
                Some(0),
                None,
                Some(i.to_be_bytes().to_vec()),
                vec![],
            )
            .await
            .unwrap();
        rx.await.unwrap().unwrap();
    }
    producer.close().await;
    let mut m = GroupConsumer::join(
        c.clone(),
        GroupConfig {
            group: "ordered".into(),
            topics: vec!["ordered".into()],
            auto_commit: None,
            offset_reset: OffsetReset::Earliest,
            ..GroupConfig::default()
        },
    )
    .await
    .unwrap();
    let mut read = 0;
    while read < 10 {
        read += m
            .poll_at_most(Duration::from_secs(1), 10 - read)
            .await
            .unwrap()
            .len();
    }
    // Offset 10 in the background, then 20 by hand with nothing in between.
    let older = m.commit_async();
    m.commit_offsets(vec![pb::GroupOffset {
        topic: "ordered".into(),
        partition: 0,
        offset: 20,
        metadata: String::new(),
    }])
    .await
    .unwrap();
    older.await.unwrap().unwrap();
    let got = c.fetch_offsets("ordered", "ordered").await.unwrap();
    assert_eq!(got[0].offset, 20, "the newer commit stands");
    m.close().await.unwrap();
    // The node's shutdown waits for this runtime's connections to close: stop it off-thread.
    tokio::task::spawn_blocking(move || node.stop())
        .await
        .unwrap();
}

/// A second group reads the whole topic on its own; `groups reset-offsets` (a dry run first)
/// replays everything for a group, records only in the cold tier included; `groups delete`
/// and deleting the topic remove committed offsets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn groups_read_independently_and_reset_offsets_replays_from_the_cold_tier() {
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(dir.path(), &[]);
    let s = node.addr.clone();
    let (ok, _, err) = cli(&s, &["topic", "create", "hist", "--partitions", "3"], None);
    assert!(ok, "{err}");
    let input: String = (0..3_000).map(|i| format!("k{i}:v{i}\n")).collect();
    let (ok, _, err) = cli(
        &s,
        &["produce", "hist", "--key-separator", ":", "--acks", "all"],
        Some(&input),
    );
    assert!(ok, "{err}");
    // Graceful stop uploads everything; without the hot tier every record is cold-only.
    node.stop();
    std::fs::remove_dir_all(dir.path().join("hot")).unwrap();
    let node = Node::start(dir.path(), &[]);
    let s = node.addr.clone();
    let consume = |group: &str, n: &str| {
        let (ok, out, err) = cli(
            &s,
            &[
                "consume",
                "hist",
                "--group",
                group,
                "--from-beginning",
                "--max-messages",
                n,
            ],
            None,
        );
        assert!(ok, "{err}");
        let mut lines: Vec<String> = out.lines().map(str::to_string).collect();
        lines.sort_unstable();
        lines
    };
    let mut want: Vec<String> = (0..3_000).map(|i| format!("v{i}")).collect();
    want.sort_unstable();
    assert_eq!(consume("one", "3000"), want);
    assert_eq!(
        consume("two", "3000"),
        want,
        "a second group reads everything on its own"
    );
    let (ok, out, _) = cli(&s, &["groups", "list"], None);
    assert!(ok);
    assert!(out.contains("one") && out.contains("two"), "{out}");

    // Dry run: the plan, nothing changed.
    let (ok, out, err) = cli(
        &s,
        &[
            "groups",
            "reset-offsets",
            "one",
            "--topic",
            "hist",
            "--to-earliest",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(out.contains("dry run"), "{out}");
    let (ok, out, _) = cli(&s, &["groups", "describe", "one", "--json"], None);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["lag"] == 0),
        "a dry run changes nothing: {v}"
    );
    let (ok, out, err) = cli(
        &s,
        &[
            "groups",
            "reset-offsets",
            "one",
            "--topic",
            "hist",
            "--to-earliest",
            "--execute",
            "--json",
        ],
        None,
    );
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert!(
        v["offsets"]
            .as_array()
            .unwrap()
            .iter()
            .all(|o| o["after"] == 0),
        "{v}"
    );
    assert_eq!(consume("one", "3000"), want, "replayed from the cold tier");
    // Shift back by 10 on partition 0: exactly 10 records again.
    let (ok, _, err) = cli(
        &s,
        &[
            "groups",
            "reset-offsets",
            "one",
            "--topic",
            "hist",
            "--partition",
            "0",
            "--shift-by",
            "-10",
            "--execute",
        ],
        None,
    );
    assert!(ok, "{err}");
    let (ok, out, err) = cli(
        &s,
        &[
            "consume",
            "hist",
            "--group",
            "one",
            "--max-messages",
            "10",
            "--idle-exit-ms",
            "3000",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 10, "{out}");
    let (ok, out, err) = cli(
        &s,
        &[
            "groups",
            "reset-offsets",
            "one",
            "--topic",
            "hist",
            "--to-offset",
            "999999999",
        ],
        None,
    );
    assert!(ok, "{err}");
    assert!(
        !out.contains("999999999"),
        "offsets are clamped to the log: {out}"
    );

    let (ok, out, err) = cli(&s, &["groups", "delete", "two"], None);
    assert!(ok, "{err}");
    assert!(out.contains("deleted group two"), "{out}");
    let (ok, _, err) = cli(&s, &["groups", "describe", "two"], None);
    assert!(!ok);
    assert!(err.contains("unknown group"), "{err}");
    let (ok, _, err) = cli(&s, &["topic", "delete", "hist"], None);
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&s, &["groups", "describe", "one", "--json"], None);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        v["offsets"],
        serde_json::json!([]),
        "the topic's offsets went with it: {v}"
    );
    node.stop();
}

/// Offsets of a group without members expire after `[groups] offsets_retention_ms` (counted
/// from the last commit, and from when the group became empty); a group with a live member
/// keeps them however old.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_of_groups_long_empty_expire() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("node.toml");
    std::fs::write(&cfg, "[groups]\noffsets_retention_ms = 2000\n").unwrap();
    let node = Node::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let c = Client::connect(&node.addr).await.unwrap();
    c.create_topic("t", 2).await.unwrap();
    let offsets = vec![pb::GroupOffset {
        topic: "t".into(),
        partition: 0,
        offset: 0,
        metadata: String::new(),
    }];
    c.commit_offsets("simple", offsets).await.unwrap();
    let mut live = Member::start(&node.addr, "t", "live", "a", &[]);
    wait_stable(&c, "live", 1).await;
    wait_held(&[&live], 2).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match c.describe_group("simple").await {
            Err(e) if e.code() == Some(ErrorCode::UnknownGroup) => break,
            Ok(_) => {}
            Err(e) => panic!("{e}"),
        }
        assert!(
            Instant::now() < deadline,
            "the empty group's offsets never expired"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Past the retention, the group with a member still has its offsets (committed on
    // every auto-commit interval anyway, and never expired while it has members).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let d = c.describe_group("live").await.unwrap();
    assert_eq!(d.members.len(), 1);
    assert_eq!(c.fetch_offsets("live", "t").await.unwrap().len(), 2);
    live.sigterm();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Err(e) = c.describe_group("live").await {
            assert_eq!(e.code(), Some(ErrorCode::UnknownGroup), "{e}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the group never expired after its member left"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.stop();
}
