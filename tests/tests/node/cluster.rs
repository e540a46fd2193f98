//! Several real nodes sharing partitions over a private etcd and the S3 server: kill -9 and
//! restart of nodes, an etcd restart, and at the end an independent check through a fresh node
//! with an empty disk that reads only what was committed to the object store.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Acks, Client, Producer, ProducerConfig};
use proto::v1 as pb;
use tierlog_tests::PrivateEtcd;

use super::{Node, fetch_all};

const PARTITIONS: u32 = 6;
const LEASE_TTL_MS: &str = "2000";

struct Cluster {
    dir: tempfile::TempDir,
    args: Vec<String>,
    nodes: BTreeMap<u64, Node>,
}

impl Cluster {
    fn new(etcd: &PrivateEtcd, s3: &[(String, String)], ns: &str) -> Cluster {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = String::from("[object_store_options]\n");
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

    fn kill9(&mut self, id: u64) {
        self.nodes.remove(&id).expect("running node").kill9();
    }

    fn addrs(&self) -> String {
        self.nodes
            .values()
            .map(|n| n.addr.clone())
            .collect::<Vec<_>>()
            .join(",")
    }
}

/// Polls until every partition of `topic` has a leader, and returns the leaders' addresses.
async fn wait_for_leaders(c: &Client, topic: &str, within: Duration) -> Vec<String> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(d) = c.describe_topic(topic).await
            && d.partitions.len() == PARTITIONS as usize
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
    failed: Vec<String>,
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
    let settle = |(v, rx): (String, tokio::sync::oneshot::Receiver<_>)| {
        let out = out.clone();
        async move {
            let r: Result<client::RecordMetadata, client::Error> =
                rx.await.expect("the producer answers every record");
            let mut o = out.lock().unwrap();
            match r {
                Ok(md) => {
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
        pending.push_back((v, rx));
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
async fn read_back(addr: &str) -> HashMap<String, (u32, i64)> {
    let mut c = pb::tierlog_client::TierlogClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let mut seen = HashMap::new();
    for p in 0..PARTITIONS {
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
    let leaders = wait_for_leaders(&c, "ledger", Duration::from_secs(30)).await;
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
    // The schedule: a node dies and comes back after its lease ran out; etcd restarts; a node
    // dies and restarts at once (it reclaims its own lease).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    cluster.kill9(2);
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.start(2);
    tokio::time::sleep(Duration::from_secs(2)).await;
    etcd.kill9(0);
    tokio::time::sleep(Duration::from_secs(3)).await;
    etcd.spawn(0);
    tokio::time::sleep(Duration::from_secs(4)).await;
    cluster.kill9(3);
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
    wait_for_leaders(&fresh, "ledger", Duration::from_secs(30)).await;
    let in_log = read_back(&cluster.nodes[&9].addr).await;
    for (v, at) in &tail.acked {
        assert_eq!(
            in_log.get(v),
            Some(at),
            "{v} was acknowledged after the chaos"
        );
    }
    let mut outcome = std::mem::take(&mut *out.lock().unwrap());
    outcome.acked.extend(tail.acked);
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

/// The same with acks=leader: records a killed leader had not uploaded may be lost (they are
/// counted and reported), but the log stays dense, holds nothing twice, and every record sits
/// at the offset it was acknowledged with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_at_acks_leader_loses_only_what_a_killed_leader_had_not_uploaded() {
    let Some((outcome, in_log)) = chaos(Acks::Leader).await else {
        return;
    };
    let lost = report("leader", &outcome, &in_log);
    assert!(
        lost < outcome.acked.len() / 2,
        "{lost} of {} lost: more than two killed leaders could have held",
        outcome.acked.len()
    );
}
