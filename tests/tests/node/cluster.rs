//! Several real nodes sharing partitions over a private etcd and the S3 server: kill -9 and
//! restart of nodes, an etcd restart, and at the end an independent check through a fresh node
//! with an empty disk that reads only what was committed to the object store.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Acks, Client, ErrorCode, Producer, ProducerConfig};
use prost::Message;
use proto::v1 as pb;
use tierlog_tests::PrivateEtcd;

use super::{Node, fetch_all};

const PARTITIONS: u32 = 6;
const LEASE_TTL_MS: &str = "2000";
/// The nodes' `upload_interval_ms`: what acks=leader may lose to a takeover is about this plus
/// one upload.
const UPLOAD_INTERVAL: Duration = Duration::from_millis(500);

struct Cluster {
    dir: tempfile::TempDir,
    args: Vec<String>,
    nodes: BTreeMap<u64, Node>,
}

impl Cluster {
    fn new(etcd: &PrivateEtcd, s3: &[(String, String)], ns: &str) -> Cluster {
        Cluster::with_upload_interval(etcd, s3, ns, UPLOAD_INTERVAL)
    }

    /// Nodes whose records stay only on the leader's disk for up to `upload_interval`.
    fn with_upload_interval(
        etcd: &PrivateEtcd,
        s3: &[(String, String)],
        ns: &str,
        upload_interval: Duration,
    ) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = format!(
            "[tier]\nupload_interval_ms = {}\n\n[object_store_options]\n",
            upload_interval.as_millis()
        );
        for (k, v) in s3 {
            cfg += &format!("{k} = {v:?}\n");
        }
        let cfg_path = dir.path().join("node.toml");
        std::fs::write(&cfg_path, cfg).unwrap();
        let hosts: Vec<String> = etcd
            .endpoints()
            .iter()
            .map(|e| e.trim_start_matches("http://").to_string())
            .collect();
        let args = vec![
            "--config".into(),
            cfg_path.to_str().unwrap().into(),
            "--meta".into(),
            format!("etcd://{}/{ns}", hosts.join(",")),
            "--object-store".into(),
            format!("s3://tierlog/{ns}"),
            "--lease-ttl-ms".into(),
            LEASE_TTL_MS.into(),
        ];
        Cluster {
            dir,
            args,
            nodes: BTreeMap::new(),
        }
    }

    fn start(&mut self, id: u64) {
        let data = self.dir.path().join(format!("node-{id}"));
        let id_s = id.to_string();
        let mut args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        args.extend(["--node-id", &id_s]);
        let node = Node::start(&data, &args);
        self.nodes.insert(id, node);
    }

    /// kill -9 of node `id`, noting in `out` which partitions of `topic` it led.
    async fn kill9_leader(&mut self, id: u64, c: &Client, topic: &str, out: &Mutex<Outcome>) {
        let addr = self.nodes[&id].addr.clone();
        let d = c.describe_topic(topic).await.unwrap();
        let led = d
            .partitions
            .iter()
            .filter(|p| p.leader == addr)
            .map(|p| p.partition)
            .collect();
        self.kill9(id);
        out.lock().unwrap().takeovers.push((Instant::now(), led));
    }

    fn kill9(&mut self, id: u64) {
        self.nodes.remove(&id).expect("running node").kill9();
    }

    /// Sends a signal (`STOP`, `CONT`) to a node's process.
    fn signal(&self, id: u64, sig: &str) {
        let pid = self.nodes[&id].child.id().to_string();
        let ok = std::process::Command::new("kill")
            .args([&format!("-{sig}"), &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} {pid}");
    }

    /// The nodes' Kafka listeners, as a bootstrap list.
    fn kafka_addrs(&self) -> String {
        self.nodes
            .values()
            .map(|n| n.kafka.clone())
            .collect::<Vec<_>>()
            .join(",")
    }

    fn addrs(&self) -> String {
        self.nodes
            .values()
            .map(|n| n.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Polls until all `n` partitions of `topic` have a leader, and returns the leaders' addresses.
async fn wait_for_leaders(c: &Client, topic: &str, n: u32, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(d) = c.describe_topic(topic).await
            && d.partitions.len() == n as usize
            && d.partitions.iter().all(|p| !p.leader.is_empty())
        {
            return d.partitions.into_iter().map(|p| p.leader).collect();
        }
        assert!(Instant::now() < deadline, "partitions without a leader");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What producers were told: value → (partition, offset) for acknowledged records, and the
/// values whose send failed for good (they may or may not be in the log).
#[derive(Default)]
struct Outcome {
    acked: HashMap<String, (u32, i64)>,
    /// When each acknowledgement reached the test (later than the leader gave it: the
    /// producer answers a partition's records in order, so an answer may wait behind an
    /// earlier batch that is being retried).
    acked_at: HashMap<String, Instant>,
    /// When each acknowledged record was handed to the producer (before its leader saw it).
    queued_at: HashMap<String, Instant>,
    failed: Vec<String>,
    /// Each moment a partition's leadership moved without a hand-off (a kill -9 of its
    /// leader): when, and which partitions.
    takeovers: Vec<(Instant, Vec<u32>)>,
}

/// Sends `values` through an idempotent producer, keeping at most `window` records unanswered,
/// until they run out or `stop` is set.
async fn produce(
    c: Client,
    acks: Acks,
    values: impl Iterator<Item = String>,
    window: usize,
    out: Arc<Mutex<Outcome>>,
    stop: Arc<AtomicBool>,
) {
    let producer = Producer::new(
        c,
        ProducerConfig {
            acks,
            linger: Duration::from_millis(2),
            retries: 200,
            retry_backoff: Duration::from_millis(100),
            request_timeout: Duration::from_secs(5),
            ..ProducerConfig::default()
        },
    );
    let mut pending = std::collections::VecDeque::new();
    // Each answer is timed as it arrives (a task per record): settling goes in send order, so
    // an answer may be looked at long after it came, behind one still being retried.
    let settle = |(v, queued, answer): (String, Instant, tokio::task::JoinHandle<(Instant, _)>)| {
        let out = out.clone();
        async move {
            let (at, r): (Instant, Result<client::RecordMetadata, client::Error>) =
                answer.await.unwrap();
            let mut o = out.lock().unwrap();
            match r {
                Ok(md) => {
                    o.acked_at.insert(v.clone(), at);
                    o.queued_at.insert(v.clone(), queued);
                    o.acked.insert(v, (md.partition, md.offset));
                }
                Err(e) => {
                    eprintln!("send of {v} failed: {e}");
                    o.failed.push(v);
                }
            }
        }
    };
    for v in values {
        if stop.load(Ordering::Relaxed) {
            break;
        }
        let key = v.split('-').nth(1).unwrap_or_default().as_bytes().to_vec();
        let queued = Instant::now();
        let rx = producer
            .send(
                "ledger",
                None,
                Some(key),
                Some(v.clone().into_bytes()),
                vec![],
            )
            .await
            .unwrap();
        let answer = tokio::spawn(async move {
            let r = rx.await.expect("the producer answers every record");
            (Instant::now(), r)
        });
        pending.push_back((v, queued, answer));
        if pending.len() >= window {
            settle(pending.pop_front().unwrap()).await;
        }
    }
    while let Some(p) = pending.pop_front() {
        settle(p).await;
    }
    producer.close().await;
}

/// Reads every partition through `addr` and checks the log's shape: offsets dense from the
/// start, no value twice. Returns value → (partition, offset).
async fn read_back(addr: &str, partitions: u32) -> HashMap<String, (u32, i64)> {
    let mut c = pb::tierlog_client::TierlogClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut seen = HashMap::new();
    for p in 0..partitions {
        let (records, _) = fetch_all(&mut c, "ledger", p).await;
        for (i, r) in records.iter().enumerate() {
            assert_eq!(r.offset, i as i64, "partition {p}: offsets dense from 0");
            let v = String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap();
            if let Some(first) = seen.insert(v.clone(), (p, r.offset)) {
                panic!(
                    "{v} is in the log twice: at {first:?} and at ({p}, {})",
                    r.offset
                );
            }
        }
    }
    seen
}

/// Runs the chaos schedule against a 3-node cluster with two idempotent producers at `acks`,
/// then stops everything, reads the log back through a fresh node with an empty disk, and
/// returns (what producers were told, what is in the log).
async fn chaos(acks: Acks) -> Option<(Outcome, HashMap<String, (u32, i64)>)> {
    let (Some(s3), Some(binary)) = (tierlog_tests::s3_options(), tierlog_tests::etcd_binary())
    else {
        return None;
    };
    let mut etcd = PrivateEtcd::start(binary, 1);
    let ns = tierlog_tests::unique("cluster");
    let mut cluster = Cluster::new(&etcd, &s3, &ns);
    for id in 1..=3 {
        cluster.start(id);
    }
    let c = Client::connect(&cluster.addrs()).await.unwrap();
    c.create_topic("ledger", PARTITIONS).await.unwrap();
    let leaders = wait_for_leaders(&c, "ledger", PARTITIONS, Duration::from_secs(30)).await;
    let distinct: std::collections::BTreeSet<_> = leaders.iter().collect();
    assert_eq!(
        distinct.len(),
        3,
        "6 partitions spread over 3 nodes: {leaders:?}"
    );

    // The producers run until the schedule below is over.
    let out = Arc::new(Mutex::new(Outcome::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let producers: Vec<_> = (0..2)
        .map(|n| {
            let values = (0..).map(move |i| format!("p{n}-k{}-{i}", i % 50));
            tokio::spawn(produce(
                c.clone(),
                acks,
                values,
                200,
                out.clone(),
                stop.clone(),
            ))
        })
        .collect();
    // The schedule: a node dies and comes back after its lease ran out; etcd restarts; etcd
    // freezes; a node dies and restarts at once (it reclaims its own lease). The first death
    // comes long after the start, so that a leader that kept more than the upload interval
    // only on its disk would lose records older than the bound below.
    tokio::time::sleep(Duration::from_secs(8)).await;
    cluster.kill9_leader(2, &c, "ledger", &out).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.start(2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Down for 3 s, longer than the leases (2 s): the nodes stop acknowledging by their own
    // clocks. A restarted etcd keeps its leases and restarts their TTLs, so each node renews
    // its lease and goes on leading what it led, hot tails included: nothing is lost.
    etcd.kill9(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    etcd.spawn(0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Frozen for 3 s: when it continues, etcd expires every lease. Each node rejoins and
    // retakes the partitions it led, with their hot tails: nothing is lost either.
    etcd.signal(0, "STOP");
    tokio::time::sleep(Duration::from_secs(3)).await;
    etcd.signal(0, "CONT");
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.kill9_leader(3, &c, "ledger", &out).await;
    cluster.start(3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    for p in producers {
        p.await.unwrap();
    }
    // After the chaos: records sent now must all land and stay (no more failures).
    let tail = Arc::new(Mutex::new(Outcome::default()));
    let c = Client::connect(&cluster.addrs()).await.unwrap();
    let values = (0..300).map(|i| format!("tail-k{}-{i}", i % 7));
    let go = Arc::new(AtomicBool::new(false));
    produce(c.clone(), acks, values, 50, tail.clone(), go).await;
    let tail = std::mem::take(&mut *tail.lock().unwrap());
    assert!(
        tail.failed.is_empty(),
        "sends failed after the chaos ended: {:?}",
        tail.failed
    );

    // Graceful stops upload everything; then a fresh node with an empty disk reads it all back
    // from the object store.
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    for id in ids {
        cluster.nodes.remove(&id).unwrap().stop();
    }
    cluster.start(9);
    let fresh = Client::connect(&cluster.nodes[&9].addr).await.unwrap();
    wait_for_leaders(&fresh, "ledger", PARTITIONS, Duration::from_secs(30)).await;
    let in_log = read_back(&cluster.nodes[&9].addr, PARTITIONS).await;
    for (v, at) in &tail.acked {
        assert_eq!(
            in_log.get(v),
            Some(at),
            "{v} was acknowledged after the chaos"
        );
    }
    let mut outcome = std::mem::take(&mut *out.lock().unwrap());
    outcome.acked.extend(tail.acked);
    outcome.acked_at.extend(tail.acked_at);
    outcome.queued_at.extend(tail.queued_at);
    Some((outcome, in_log))
}

fn report(acks: &str, outcome: &Outcome, in_log: &HashMap<String, (u32, i64)>) -> usize {
    let lost: Vec<&String> = outcome
        .acked
        .keys()
        .filter(|v| !in_log.contains_key(*v))
        .collect();
    let moved: Vec<&String> = outcome
        .acked
        .iter()
        .filter(|(v, at)| in_log.get(*v).is_some_and(|got| got != *at))
        .map(|(v, _)| v)
        .collect();
    println!(
        "acks={acks}: {} acknowledged, {} failed sends, {} records in the log, {} acknowledged records lost, {} at other offsets than acknowledged",
        outcome.acked.len(),
        outcome.failed.len(),
        in_log.len(),
        lost.len(),
        moved.len()
    );
    assert!(
        moved.is_empty(),
        "acknowledged offsets must be where the record is: {moved:?}"
    );
    lost.len()
}

/// acks=all with idempotent producers through kills, restarts and an etcd restart: every
/// acknowledged record is in the log exactly once, at the offset it was acknowledged with, and
/// the log is dense; nothing appears twice even though requests were retried across failovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_loses_no_acks_all_record_through_kills_and_an_etcd_restart() {
    let Some((outcome, in_log)) = chaos(Acks::All).await else {
        return;
    };
    let lost = report("all", &outcome, &in_log);
    assert_eq!(lost, 0, "acks=all records lost");
    assert!(outcome.acked.len() > 1_000, "the producers made progress");
}

/// What one upload may take on a loaded test machine (conversion, a PUT to the S3 server and the
/// commit, retried when the server is slow), on top of the upload interval.
const UPLOAD_ALLOWANCE: Duration = Duration::from_secs(4);

/// The same with acks=leader: records a killed leader had not uploaded may be lost (they are
/// counted and reported), but only those, and only recent ones: every lost record's partition
/// lost its leader to a kill -9 (a takeover without hand-off) at most the upload interval plus
/// one upload after the record was acknowledged, and the record was handed to the producer
/// before that kill (so the killed leader can have been the one that acknowledged it). etcd restarting or freezing past the leases
/// costs nothing. The log stays dense, holds nothing twice, and every record sits at the
/// offset it was acknowledged with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_at_acks_leader_loses_only_what_a_deposed_leader_had_not_uploaded() {
    let Some((outcome, in_log)) = chaos(Acks::Leader).await else {
        return;
    };
    let lost = report("leader", &outcome, &in_log);
    let window = UPLOAD_INTERVAL + UPLOAD_ALLOWANCE;
    let unexplained: Vec<_> = outcome
        .acked
        .iter()
        .filter(|(v, _)| !in_log.contains_key(*v))
        .filter(|(v, (p, _))| {
            // The leader acknowledged it after it was queued and before the test saw that.
            let (queued, seen) = (outcome.queued_at[*v], outcome.acked_at[*v]);
            !outcome.takeovers.iter().any(|(killed, led)| {
                led.contains(p) && seen + window >= *killed && queued <= *killed
            })
        })
        .map(|(v, (p, o))| {
            let (queued, seen) = (outcome.queued_at[v], outcome.acked_at[v]);
            let kills: Vec<_> = outcome
                .takeovers
                .iter()
                .filter(|(_, led)| led.contains(p))
                .map(|(killed, _)| {
                    format!(
                        "queued {:?} before, seen {:?} before, {:?} after",
                        killed.saturating_duration_since(queued),
                        killed.saturating_duration_since(seen),
                        seen.saturating_duration_since(*killed)
                    )
                })
                .collect();
            format!("{v} at {p}/{o}; the kills of its leaders: {kills:?}")
        })
        .take(10)
        .collect();
    assert!(
        unexplained.is_empty(),
        "{lost} lost; these were not acknowledged within {window:?} before a takeover of their partition: {unexplained:#?}"
    );
}

/// A leader paused with SIGSTOP past its lease loses its partitions to another node; resumed, it
/// acknowledges nothing more for them and its commits are fenced, so the log holds exactly what
/// the new leader acknowledged after what was committed before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_lease_cannot_commit_or_acknowledge() {
    let (Some(s3), Some(binary)) = (tierlog_tests::s3_options(), tierlog_tests::etcd_binary())
    else {
        return;
    };
    let etcd = PrivateEtcd::start(binary, 1);
    let ns = tierlog_tests::unique("paused");
    let mut cluster = Cluster::new(&etcd, &s3, &ns);
    cluster.start(1);
    cluster.start(2);
    let c = Client::connect(&cluster.addrs()).await.unwrap();
    c.create_topic("ledger", 2).await.unwrap();
    let d = c.describe_topic("ledger").await.unwrap();
    let old_leader = d.partitions[0].leader.clone();
    let (paused, other) = if cluster.nodes[&1].addr == old_leader {
        (1, 2)
    } else {
        (2, 1)
    };
    let record = |v: &str| pb::Record {
        key: None,
        value: Some(v.as_bytes().to_vec().into()),
        headers: vec![],
        timestamp_ms: 0,
    };
    let produce = |addr: String, acks: pb::Acks, values: Vec<String>| async move {
        let mut rpc = pb::tierlog_client::TierlogClient::connect(format!("http://{addr}"))
            .await
            .unwrap();
        rpc.produce(pb::ProduceRequest {
            topic: "ledger".into(),
            partition: 0,
            records: values.iter().map(|v| record(v)).collect(),
            acks: acks as i32,
            ..Default::default()
        })
        .await
    };
    // Committed before the pause.
    let before: Vec<String> = (0..50).map(|i| format!("before-{i}")).collect();
    let r = produce(old_leader.clone(), pb::Acks::All, before.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.base_offset, 0);
    // Appended but not uploaded when the leader freezes.
    produce(old_leader.clone(), pb::Acks::Leader, vec!["frozen".into()])
        .await
        .unwrap();
    cluster.signal(paused, "STOP");
    // The other node takes the partition once the paused node's lease ran out.
    let deadline = Instant::now() + Duration::from_secs(20);
    let other_addr = cluster.nodes[&other].addr.clone();
    let oc = Client::connect(&other_addr).await.unwrap();
    loop {
        let d = oc.describe_topic("ledger").await.unwrap();
        if d.partitions[0].leader == other_addr {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no failover from the paused leader"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after: Vec<String> = (0..50).map(|i| format!("after-{i}")).collect();
    let r = produce(other_addr.clone(), pb::Acks::All, after.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        r.base_offset, 50,
        "the new leader continues from the committed end"
    );

    cluster.signal(paused, "CONT");
    // Resumed, the old node refuses: its lease lapsed by its own clock. (Should it already have
    // rejoined and been handed the partition back under a new epoch, it appends after what the
    // new leader acknowledged — never over it.)
    let mut want: Vec<String> = before.into_iter().chain(after).collect();
    match produce(old_leader.clone(), pb::Acks::Leader, vec!["late".into()]).await {
        Err(refused) => assert_eq!(
            super::code_of(&refused),
            pb::ErrorCode::NotLeader as i32,
            "{refused:?}"
        ),
        Ok(r) => {
            assert_eq!(
                r.into_inner().base_offset,
                100,
                "appended after the new leader's records"
            );
            want.push("late".into());
        }
    }
    // Give its uploader the chance to try committing its frozen segment: it must be fenced.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
    for id in ids {
        cluster.nodes.remove(&id).unwrap().stop();
    }
    cluster.start(9);
    let fresh = Client::connect(&cluster.nodes[&9].addr).await.unwrap();
    wait_for_leaders(&fresh, "ledger", 2, Duration::from_secs(30)).await;
    let mut rpc =
        pb::tierlog_client::TierlogClient::connect(format!("http://{}", cluster.nodes[&9].addr))
            .await
            .unwrap();
    let (records, _) = fetch_all(&mut rpc, "ledger", 0).await;
    let got: Vec<String> = records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            assert_eq!(r.offset, i as i64, "dense offsets");
            String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap()
        })
        .collect();
    assert_eq!(
        got, want,
        "exactly what was committed before and acknowledged after"
    );
}

/// The object store frozen (SIGSTOP) for 10 s under load: `acks=leader` producers go on,
/// `acks=all` producers wait and retry without a failure; when the store is back everything is
/// uploaded, and a fresh node reads every acknowledged record exactly once from the store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_store_outage_stalls_acks_all_only_and_loses_nothing() {
    let (Some(_), Some(binary)) = (tierlog_tests::s3_options(), tierlog_tests::etcd_binary())
    else {
        return;
    };
    // A private S3 server, so freezing it disturbs no other test.
    let moto = tierlog_tests::PrivateS3::start();
    let signal = |sig: &str| moto.signal(sig);
    let s3 = moto.options();
    let etcd = PrivateEtcd::start(binary, 1);
    let ns = tierlog_tests::unique("outage");
    let mut cluster = Cluster::new(&etcd, &s3, &ns);
    cluster.start(1);
    let c = Client::connect(&cluster.addrs()).await.unwrap();
    c.create_topic("ledger", 2).await.unwrap();

    let all = Arc::new(Mutex::new(Outcome::default()));
    let leader = Arc::new(Mutex::new(Outcome::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let tasks = [
        tokio::spawn(produce(
            c.clone(),
            Acks::All,
            (0..).map(|i| format!("all-k{}-{i}", i % 10)),
            50,
            all.clone(),
            stop.clone(),
        )),
        tokio::spawn(produce(
            c.clone(),
            Acks::Leader,
            (0..).map(|i| format!("leader-k{}-{i}", i % 10)),
            50,
            leader.clone(),
            stop.clone(),
        )),
    ];
    let count = |o: &Arc<Mutex<Outcome>>| o.lock().unwrap().acked.len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    signal("STOP");
    let (all_at_stop, leader_at_stop) = (count(&all), count(&leader));
    tokio::time::sleep(Duration::from_secs(10)).await;
    let (all_before_cont, leader_before_cont) = (count(&all), count(&leader));
    signal("CONT");
    tokio::time::sleep(Duration::from_secs(4)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    println!(
        "during the outage: acks=all {} → {}, acks=leader {} → {}; after: acks=all {}, acks=leader {}",
        all_at_stop,
        all_before_cont,
        leader_at_stop,
        leader_before_cont,
        count(&all),
        count(&leader)
    );
    assert!(
        leader_before_cont > leader_at_stop + 100,
        "acks=leader goes on while the store is down"
    );
    assert!(
        count(&all) > all_before_cont,
        "acks=all resumes when the store is back"
    );
    assert!(
        all.lock().unwrap().failed.is_empty(),
        "acks=all sends waited instead of failing"
    );
    assert!(leader.lock().unwrap().failed.is_empty());

    cluster.nodes.remove(&1).unwrap().stop();
    cluster.start(9);
    let fresh = Client::connect(&cluster.nodes[&9].addr).await.unwrap();
    wait_for_leaders(&fresh, "ledger", 2, Duration::from_secs(30)).await;
    let in_log = read_back(&cluster.nodes[&9].addr, 2).await;
    for o in [&all, &leader] {
        for (v, at) in &o.lock().unwrap().acked {
            assert_eq!(
                in_log.get(v),
                Some(at),
                "{v} acknowledged, not in the store"
            );
        }
    }
}

/// etcd down: requests that need it fail with a clear, retriable error naming it; a leader stops
/// acknowledging once its lease lapsed by its own clock; when etcd is back the node rejoins and
/// serves again, with everything acknowledged before still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_unavailable_gives_clear_errors_and_the_node_recovers() {
    let (Some(s3), Some(binary)) = (tierlog_tests::s3_options(), tierlog_tests::etcd_binary())
    else {
        return;
    };
    let mut etcd = PrivateEtcd::start(binary, 1);
    let ns = tierlog_tests::unique("etcd-down");
    let mut cluster = Cluster::new(&etcd, &s3, &ns);
    cluster.start(1);
    let addr = cluster.nodes[&1].addr.clone();
    let mut rpc = pb::tierlog_client::TierlogClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let c = Client::connect(&addr).await.unwrap();
    c.create_topic("ledger", 1).await.unwrap();
    let produce = |v: &str| pb::ProduceRequest {
        topic: "ledger".into(),
        partition: 0,
        records: vec![pb::Record {
            value: Some(v.as_bytes().to_vec().into()),
            ..Default::default()
        }],
        acks: pb::Acks::All as i32,
        ..Default::default()
    };
    rpc.produce(produce("before")).await.unwrap();

    etcd.kill9(0);
    // Past the lease TTL (2 s): the node no longer acknowledges, and says why.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let refused = rpc.produce(produce("during")).await.unwrap_err();
    let detail = pb::ErrorDetail::decode(refused.details()).unwrap();
    assert_eq!(detail.code, pb::ErrorCode::NotLeader as i32, "{detail:?}");
    assert!(detail.retriable);
    let create = rpc
        .create_topic(pb::CreateTopicRequest {
            name: "other".into(),
            config: Some(pb::TopicConfig {
                partitions: 1,
                ..Default::default()
            }),
        })
        .await
        .unwrap_err();
    let detail = pb::ErrorDetail::decode(create.details()).unwrap();
    assert_eq!(detail.code, pb::ErrorCode::Unavailable as i32, "{detail:?}");
    assert!(detail.retriable);
    assert!(
        detail.message.contains("etcd"),
        "the error names the metadata store: {}",
        detail.message
    );

    etcd.spawn(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match rpc.produce(produce("after")).await {
            Ok(r) => {
                assert_eq!(
                    r.into_inner().base_offset,
                    1,
                    "continues after what was committed"
                );
                break;
            }
            Err(s) => {
                assert!(
                    Instant::now() < deadline,
                    "no recovery after etcd returned: {s:?}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let (records, _) = fetch_all(&mut rpc, "ledger", 0).await;
    let values: Vec<String> = records
        .iter()
        .map(|r| String::from_utf8(r.value.clone().unwrap().to_vec()).unwrap())
        .collect();
    assert_eq!(values, ["before", "after"]);
    cluster.nodes.remove(&1).unwrap().stop();
}

/// SQL on any node of a cluster covers every partition: committed segments from the object
/// store plus the newest records from each partition's leader. A leader that cannot be reached
/// fails the live table with an error that names it, while `committed.<topic>` still answers;
/// after the failover the partition answers again from what was committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_on_any_node_covers_the_hot_tails_of_every_leader() {
    let (Some(s3), Some(binary)) = (tierlog_tests::s3_options(), tierlog_tests::etcd_binary())
    else {
        return;
    };
    let etcd = PrivateEtcd::start(binary, 1);
    let ns = tierlog_tests::unique("sql-cluster");
    // acks=leader records must stay hot for this test: no upload within its run.
    let mut cluster = Cluster::with_upload_interval(&etcd, &s3, &ns, Duration::from_secs(3600));
    for id in 1..=3 {
        cluster.start(id);
    }
    let c = Client::connect(&cluster.addrs()).await.unwrap();
    c.create_topic("live", PARTITIONS).await.unwrap();
    // Wait for the even spread (two partitions per node), so no hand-off uploads hot records
    // while the test runs.
    let deadline = Instant::now() + Duration::from_secs(30);
    let leaders = loop {
        let leaders = wait_for_leaders(&c, "live", PARTITIONS, Duration::from_secs(30)).await;
        let distinct: std::collections::HashSet<&String> = leaders.iter().collect();
        if distinct.len() == 3 {
            break leaders;
        }
        assert!(
            Instant::now() < deadline,
            "leaders never spread: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Per partition: 50 records at acks=all (committed), then 100 at acks=leader (hot).
    const COLD: i64 = 50;
    const HOT: i64 = 100;
    for (acks, range) in [(Acks::All, 0..COLD), (Acks::Leader, COLD..COLD + HOT)] {
        let producer = Producer::new(
            c.clone(),
            ProducerConfig {
                acks,
                ..ProducerConfig::default()
            },
        );
        let mut pending = Vec::new();
        for p in 0..PARTITIONS {
            for i in range.clone() {
                let v = format!("{{\"p\":{p},\"i\":{i}}}");
                let rx = producer
                    .send("live", Some(p), None, Some(v.into_bytes()), vec![])
                    .await
                    .unwrap();
                pending.push(rx);
            }
        }
        for rx in pending {
            rx.await.unwrap().unwrap();
        }
        producer.close().await;
    }

    let per_partition = "SELECT partition, COUNT(*) AS n, MIN(\"offset\") AS lo, \
                         MAX(\"offset\") AS hi FROM live GROUP BY partition ORDER BY partition";
    let expected: String = std::iter::once("partition,n,lo,hi\n".to_string())
        .chain((0..PARTITIONS).map(|p| format!("{p},{},0,{}\n", COLD + HOT, COLD + HOT - 1)))
        .collect();
    for addr in cluster.nodes.values().map(|n| n.addr.clone()) {
        let (ok, out, err) = super::cli(&addr, &["sql", per_partition, "--format", "csv"], None);
        assert!(ok, "{addr}: {err}");
        assert_eq!(out, expected, "every partition's records, asked at {addr}");
        // A hot record of a partition led elsewhere, exactly.
        let (ok, out, err) = super::cli(
            &addr,
            &[
                "sql",
                "SELECT partition, \"offset\", as_text(value) AS v FROM live \
                 WHERE \"offset\" = 120 ORDER BY partition",
                "--format",
                "csv",
            ],
            None,
        );
        assert!(ok, "{addr}: {err}");
        let rows: String = std::iter::once("partition,offset,v\n".to_string())
            .chain(
                (0..PARTITIONS).map(|p| format!("{p},120,\"{{\"\"p\"\":{p},\"\"i\"\":120}}\"\n")),
            )
            .collect();
        assert_eq!(out, rows, "asked at {addr}");
        // The committed table of partitions led elsewhere comes from this node's view of their
        // manifests, which may lag for a moment: every acks=all record shows within a
        // deadline, and no acks=leader record (they are still hot).
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let (ok, out, err) = super::cli(
                &addr,
                &[
                    "sql",
                    "SELECT COUNT(*) AS n FROM committed.live",
                    "--format",
                    "csv",
                ],
                None,
            );
            assert!(ok, "{addr}: {err}");
            let committed: i64 = out.trim().strip_prefix("n\n").unwrap().parse().unwrap();
            assert!(
                committed < (COLD + HOT) * PARTITIONS as i64,
                "committed {committed}: the acks=leader records are still hot"
            );
            if committed >= COLD * PARTITIONS as i64 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "committed {committed} at {addr}: the acks=all records never showed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Kill -9 the leader of partition 0 and ask another node: the live table cannot be
    // complete and says why; the committed table answers.
    let victim_addr = leaders[0].clone();
    let victim = *cluster
        .nodes
        .iter()
        .find(|(_, n)| n.addr == victim_addr)
        .unwrap()
        .0;
    let lost: Vec<u32> = (0..PARTITIONS)
        .filter(|&p| leaders[p as usize] == victim_addr)
        .collect();
    cluster.kill9(victim);
    let asker = cluster.nodes.values().next().unwrap().addr.clone();
    let (ok, _, err) = super::cli(&asker, &["sql", "SELECT COUNT(*) FROM live"], None);
    assert!(!ok, "a dead leader's hot tail cannot be read");
    assert!(
        err.contains("from its leader at") && err.contains(&victim_addr),
        "{err}"
    );
    let (ok, _, err) = super::cli(
        &asker,
        &["sql", "SELECT COUNT(*) FROM committed.live"],
        None,
    );
    assert!(ok, "{err}");

    // After the failover (lease TTL 2 s), the dead leader's partitions hold what it had
    // committed: its acks=leader records were on its disk only.
    let deadline = Instant::now() + Duration::from_secs(30);
    let out = loop {
        let (ok, out, err) = super::cli(&asker, &["sql", per_partition, "--format", "csv"], None);
        if ok {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "no answer after the failover: {err}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let expected: String = std::iter::once("partition,n,lo,hi\n".to_string())
        .chain((0..PARTITIONS).map(|p| {
            if lost.contains(&p) {
                format!("{p},{COLD},0,{}\n", COLD - 1)
            } else {
                format!("{p},{},0,{}\n", COLD + HOT, COLD + HOT - 1)
            }
        }))
        .collect();
    assert_eq!(out, expected);
    for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        cluster.nodes.remove(&id).unwrap().stop();
    }
}

/// The node coordinating a consumer group is killed with SIGKILL (3 nodes on etcd and the S3
/// server, a producer writing, two members consuming): another node takes the group over from
/// what is stored in etcd, the members carry on (at most one rebalance, nobody dropped), every
/// acknowledged record is consumed, and no committed offset moves backwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_carries_on_when_its_coordinator_is_killed() {
    use client::{GroupConfig, GroupConsumer, OffsetReset};
    let (Some(s3), Some(binary)) = (tierlog_tests::s3_options(), tierlog_tests::etcd_binary())
    else {
        return;
    };
    let etcd = PrivateEtcd::start(binary, 1);
    let ns = tierlog_tests::unique("group-failover");
    let mut cluster = Cluster::new(&etcd, &s3, &ns);
    for id in 1..=3 {
        cluster.start(id);
    }
    let c = Client::connect(&cluster.addrs()).await.unwrap();
    c.create_topic("jobs", PARTITIONS).await.unwrap();
    wait_for_leaders(&c, "jobs", PARTITIONS, Duration::from_secs(30)).await;

    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<(u32, i64)>>> = Arc::default();
    let mut members = Vec::new();
    for _ in 0..2 {
        let cfg = GroupConfig {
            group: "workers".into(),
            topics: vec!["jobs".into()],
            session_timeout: Duration::from_secs(20),
            auto_commit: Some(Duration::from_millis(300)),
            offset_reset: OffsetReset::Earliest,
            ..GroupConfig::default()
        };
        let mut m = GroupConsumer::join(c.clone(), cfg).await.unwrap();
        let (stop, seen) = (stop.clone(), seen.clone());
        members.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match m.poll(Duration::from_millis(200)).await {
                    Ok(records) => seen
                        .lock()
                        .unwrap()
                        .extend(records.iter().map(|r| (r.partition, r.offset))),
                    Err(e) => panic!("a member failed: {e}"),
                }
            }
            m.close().await.unwrap();
        }));
    }
    let producer = Producer::new(
        c.clone(),
        ProducerConfig {
            acks: Acks::All,
            ..ProducerConfig::default()
        },
    );
    let mut acked = Vec::new();
    let send = async |from: u64, to: u64, acked: &mut Vec<(u32, i64)>| {
        for i in from..to {
            let rx = producer
                .send(
                    "jobs",
                    None,
                    Some(format!("k{i}").into_bytes()),
                    Some(b"v".to_vec()),
                    vec![],
                )
                .await
                .unwrap();
            if let Ok(Ok(m)) = rx.await {
                acked.push((m.partition, m.offset));
            }
        }
    };
    send(0, 300, &mut acked).await;
    // Settled: two members, every partition held.
    let deadline = Instant::now() + Duration::from_secs(30);
    let before = loop {
        let d = c.describe_group("workers").await.unwrap();
        if d.state == "Stable" && d.members.len() == 2 {
            break d;
        }
        assert!(Instant::now() < deadline, "never settled: {d:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // Fetch fences, at a node that does not coordinate the group (it reads the group's record
    // from etcd): a member reads the partitions it holds, not another member's, and a member
    // the group does not know reads nothing.
    let other = cluster
        .nodes
        .iter()
        .find(|(id, _)| **id != before.coordinator)
        .map(|(_, n)| n.addr.clone())
        .unwrap();
    let mut rpc = proto::v1::tierlog_client::TierlogClient::connect(format!("http://{other}"))
        .await
        .unwrap();
    let (a, b) = (&before.members[0], &before.members[1]);
    let held = |m: &pb::GroupMember| -> Vec<u32> {
        m.owned.iter().flat_map(|t| t.partitions.clone()).collect()
    };
    let fetch_as = |member: &pb::GroupMember, id: &str, partition: u32| pb::FetchRequest {
        topic: "jobs".into(),
        partition,
        start: Some(pb::fetch_request::Start::Offset(0)),
        max_records: 1,
        member: Some(pb::FetchMember {
            group: "workers".into(),
            member_id: id.into(),
            member_epoch: member.member_epoch,
        }),
        ..Default::default()
    };
    let a_part = held(a)[0];
    assert_eq!(
        super::fetch_refused(rpc.fetch(fetch_as(b, &b.member_id, a_part)).await),
        Some(ErrorCode::IllegalGeneration),
        "another member's partition"
    );
    assert_eq!(
        super::fetch_refused(rpc.fetch(fetch_as(b, "nobody", a_part)).await),
        Some(ErrorCode::UnknownMemberId),
        "a member the group does not know"
    );
    match rpc.fetch(fetch_as(a, &a.member_id, a_part)).await {
        // The member passes the fence; only the leader serves the records.
        Ok(_) => {}
        Err(s) => assert_eq!(
            client::Error::from(s).code(),
            Some(ErrorCode::NotLeader),
            "the holder is let through"
        ),
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let committed_before: BTreeMap<u32, i64> = c
        .fetch_offsets("workers", "jobs")
        .await
        .unwrap()
        .into_iter()
        .map(|o| (o.partition, o.offset))
        .collect();
    cluster.kill9(before.coordinator);
    send(300, 600, &mut acked).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got: std::collections::HashSet<(u32, i64)> =
            seen.lock().unwrap().iter().copied().collect();
        let missing = acked.iter().filter(|r| !got.contains(r)).count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} acknowledged records never consumed"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let after = c.describe_group("workers").await.unwrap();
    assert_ne!(
        after.coordinator, before.coordinator,
        "another node coordinates it"
    );
    assert_eq!(after.members.len(), 2, "nobody was dropped: {after:?}");
    assert!(
        after.generation <= before.generation + 1,
        "at most one rebalance: {} → {}",
        before.generation,
        after.generation
    );
    stop.store(true, Ordering::Relaxed);
    for m in members {
        m.await.unwrap();
    }
    for o in c.fetch_offsets("workers", "jobs").await.unwrap() {
        let was = committed_before.get(&o.partition).copied().unwrap_or(0);
        assert!(
            o.offset >= was,
            "partition {} went back from {was} to {}",
            o.partition,
            o.offset
        );
    }
    producer.close().await;
}

/// Kafka clients keep every acknowledged record through a schedule of faults (3 nodes on a
/// private etcd and a private S3 server): two idempotent acks=all librdkafka producers and a
/// classic group of two members run while a node is killed with SIGKILL and restarted, a
/// leader is paused (SIGSTOP) past its lease and resumed, etcd is frozen past the leases, and
/// the object store is frozen for a few seconds. Every record is acknowledged, none twice,
/// each at the offset it was acknowledged at, offsets dense; every record a member read
/// during the faults is the one its offset holds at the end; a fresh reader reads exactly the
/// log.
#[test]
fn kafka_clients_lose_nothing_through_kills_pauses_and_outages() {
    use std::io::{BufRead, BufReader};
    let (Some(_), Some(binary), Some(python)) = (
        tierlog_tests::s3_options(),
        tierlog_tests::etcd_binary(),
        tierlog_tests::python(),
    ) else {
        return;
    };
    // Private servers, so freezing them disturbs no other test.
    let moto = tierlog_tests::PrivateS3::start();
    let s3 = moto.options();
    let etcd = PrivateEtcd::start(binary, 1);
    let ns = tierlog_tests::unique("kafka-faults");
    let mut cluster = Cluster::new(&etcd, &s3, &ns);
    for id in 1..=3 {
        cluster.start(id);
    }
    let bootstrap = cluster.kafka_addrs();
    let mut script = std::process::Command::new(python)
        .arg(tierlog_tests::tests_dir().join("python/kafka_clients.py"))
        .args(["failover", &bootstrap, "36"])
        .stdout(std::process::Stdio::piped())
        // librdkafka logs every refused connection: let it through rather than fill a pipe.
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("run kafka_clients.py");
    let mut lines = BufReader::new(script.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        printed.push(line.clone());
        if line == "ready" {
            break;
        }
    }
    let lease = Duration::from_millis(LEASE_TTL_MS.parse().unwrap());
    let step = |what: &str, wait: Duration| {
        eprintln!("fault schedule: {what}");
        std::thread::sleep(wait);
    };
    step("producing", Duration::from_secs(4));
    cluster.kill9(1);
    step("node 1 killed", Duration::from_secs(5));
    cluster.start(1);
    step("node 1 restarted", Duration::from_secs(3));
    cluster.signal(2, "STOP");
    step("node 2 paused", lease * 2);
    cluster.signal(2, "CONT");
    step("node 2 resumed", Duration::from_secs(3));
    etcd.signal(0, "STOP");
    step("etcd frozen", lease + Duration::from_secs(1));
    etcd.signal(0, "CONT");
    step("etcd back", Duration::from_secs(3));
    moto.signal("STOP");
    step("the object store frozen", Duration::from_secs(4));
    moto.signal("CONT");
    eprintln!("fault schedule: the object store back");
    printed.extend(lines.map_while(Result::ok));
    let out = script.wait_with_output().unwrap();
    let printed = printed.join("\n");
    assert!(
        out.status.success() && printed.contains("kafka clients ok"),
        "kafka_clients.py failover failed:\n{printed}"
    );
    for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        cluster.nodes.remove(&id).unwrap().stop();
    }
}

/// kcat (librdkafka 2.0.2), kafka-python and kafkajs each follow a partition's leader killed
/// with SIGKILL (3 nodes on etcd and the S3 server). Each client, on a topic of its own:
/// acknowledged records; the leader of partition 0 killed; more acknowledged records while
/// another node takes the partition over (the client finds the new leader by itself); then
/// everything read back from offset 0: every record once, at the offset it was acknowledged at
/// (kcat reports none: there, every record once at dense offsets).
#[test]
fn kafka_clients_follow_a_leader_killed_with_sigkill() {
    use std::path::Path;

    use super::kafka_matrix::{kafka_python, kafkajs};
    let (Some(s3), Some(binary), Some(python), Some(modules), Some(kcat)) = (
        tierlog_tests::s3_options(),
        tierlog_tests::etcd_binary(),
        tierlog_tests::python(),
        tierlog_tests::kafkajs(),
        super::kafka::kcat(),
    ) else {
        return;
    };
    let rt = tokio::runtime::Runtime::new().unwrap();
    let etcd = PrivateEtcd::start(binary, 1);
    let ns = tierlog_tests::unique("kafka-takeover");
    let mut cluster = Cluster::new(&etcd, &s3, &ns);
    for id in 1..=3 {
        cluster.start(id);
    }
    let states = tempfile::tempdir().unwrap();
    let kcat_client =
        |mode: &str, bootstrap: &str, state: &Path| kcat_failover(&kcat, mode, bootstrap, state);
    type Run<'a> = Box<dyn Fn(&str, &str, &Path) + 'a>;
    let clients: Vec<(&str, Run)> = vec![
        ("kcat-failover", Box::new(kcat_client)),
        (
            "kp-failover",
            Box::new(|m: &str, b: &str, s: &Path| kafka_python(&python, m, b, s)),
        ),
        (
            "kj-failover",
            Box::new(|m: &str, b: &str, s: &Path| kafkajs(&modules, m, b, s)),
        ),
    ];
    for (topic, client) in clients {
        // A restarted node listens on new ports.
        let c = rt.block_on(Client::connect(&cluster.addrs())).unwrap();
        rt.block_on(c.create_topic(topic, 3)).unwrap();
        rt.block_on(wait_for_leaders(&c, topic, 3, Duration::from_secs(30)));
        let state = states.path().join(format!("{topic}.json"));
        client("failover-write", &cluster.kafka_addrs(), &state);
        let before = rt.block_on(c.describe_topic(topic)).unwrap();
        let leader = before.partitions[0].leader.clone();
        let id = cluster
            .nodes
            .iter()
            .find(|(_, n)| n.addr == leader)
            .map(|(id, _)| *id)
            .expect("partition 0 has a live leader");
        // The dead node stays in the bootstrap list, as it would in a client's settings.
        let bootstrap = cluster.kafka_addrs();
        cluster.kill9(id);
        eprintln!("{topic}: node {id}, leader of partition 0, killed");
        client("failover-write", &bootstrap, &state);
        client("failover-read", &bootstrap, &state);
        // The client reached a new leader; tierlog's own client says which (it may first ask
        // the dead node).
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match rt.block_on(c.describe_topic(topic)) {
                Ok(d) if d.partitions[0].leader != leader && !d.partitions[0].leader.is_empty() => {
                    break;
                }
                other => assert!(
                    Instant::now() < deadline,
                    "{topic}: partition 0 still led by {leader}: {other:?}"
                ),
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        cluster.start(id);
    }
    for id in cluster.nodes.keys().copied().collect::<Vec<_>>() {
        cluster.nodes.remove(&id).unwrap().stop();
    }
}

/// The failover modes of kafka_python_client.py and client.js, with kcat: `failover-write`
/// produces 200 more keyed records (idempotent, acks=all, lz4) to `kcat-failover` and counts
/// them in `state`; `failover-read` reads the topic from offset 0 and checks every record is
/// there once, at dense offsets.
fn kcat_failover(kcat: &str, mode: &str, bootstrap: &str, state: &std::path::Path) {
    let written: usize = std::fs::read_to_string(state)
        .ok()
        .map_or(0, |s| s.trim().parse().unwrap());
    match mode {
        "failover-write" => {
            let lines: String = (written..written + 200)
                .map(|i| format!("k{}:v{i}\n", i % 20))
                .collect();
            super::kafka::kcat_produce(
                kcat,
                bootstrap,
                "kcat-failover",
                &[
                    "-z",
                    "lz4",
                    "-X",
                    "acks=all",
                    "-X",
                    "enable.idempotence=true",
                ],
                &lines,
            );
            std::fs::write(state, (written + 200).to_string()).unwrap();
        }
        "failover-read" => {
            let text =
                super::kafka::kcat_read(kcat, bootstrap, "kcat-failover", &["-f", "%p %o %s\n"]);
            let mut by_partition: BTreeMap<u32, Vec<i64>> = BTreeMap::new();
            let mut values: Vec<usize> = Vec::new();
            for l in text.lines() {
                let f: Vec<&str> = l.split(' ').collect();
                by_partition
                    .entry(f[0].parse().unwrap())
                    .or_default()
                    .push(f[1].parse().unwrap());
                values.push(f[2].trim_start_matches('v').parse().unwrap());
            }
            values.sort_unstable();
            assert_eq!(
                values,
                (0..written).collect::<Vec<_>>(),
                "every record once"
            );
            for (p, mut offsets) in by_partition {
                offsets.sort_unstable();
                assert_eq!(
                    offsets,
                    (0..offsets.len() as i64).collect::<Vec<_>>(),
                    "partition {p}: dense offsets"
                );
            }
        }
        other => panic!("no mode {other}"),
    }
}

/// etcd's count of KV requests it answered (`Txn` and `Range`), from its /metrics.
fn etcd_kv_requests(endpoint: &str) -> u64 {
    use std::io::{Read, Write};
    let addr = endpoint.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(addr).expect("connect to etcd");
    write!(
        s,
        "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("etcd's metrics");
    text.lines()
        .filter(|l| {
            l.starts_with("grpc_server_handled_total{")
                && (l.contains("grpc_method=\"Txn\"") || l.contains("grpc_method=\"Range\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Describing a topic of many partitions reads their leaders in one metadata request, not one
/// each: a DescribeTopic of a 1,000-partition topic used to send 1,000 etcd requests at once,
/// which overran the etcd connection and cost the node its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describing_a_large_topic_costs_a_few_metadata_requests() {
    let (Some(s3), Some(binary)) = (tierlog_tests::s3_options(), tierlog_tests::etcd_binary())
    else {
        return;
    };
    const PARTITIONS: u32 = 600;
    let etcd = PrivateEtcd::start(binary, 1);
    let ns = tierlog_tests::unique("describe");
    let mut cluster = Cluster::new(&etcd, &s3, &ns);
    cluster.start(1);
    let c = Client::connect(&cluster.addrs()).await.unwrap();
    c.create_topic("wide", PARTITIONS).await.unwrap();
    wait_for_leaders(&c, "wide", PARTITIONS, Duration::from_secs(60)).await;
    let endpoint = etcd.endpoint(0);
    let mut spent = Vec::new();
    for _ in 0..3 {
        let before = etcd_kv_requests(&endpoint);
        let d = c.describe_topic("wide").await.unwrap();
        spent.push(etcd_kv_requests(&endpoint) - before);
        assert_eq!(d.partitions.len(), PARTITIONS as usize);
        assert!(d.partitions.iter().all(|p| !p.leader.is_empty()));
    }
    // The node's own background requests (lease, leadership) may fall in between, but one
    // request per partition would be at least 600.
    assert!(
        spent.iter().all(|&n| n < u64::from(PARTITIONS) / 4),
        "etcd requests per DescribeTopic: {spent:?}"
    );
    cluster.nodes.remove(&1).unwrap().stop();
}
