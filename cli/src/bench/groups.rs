//! `tierlog bench groups`: what a rebalance costs. A fresh node (on `--meta etcd://…` when
//! given), a producer writing to every partition, and group members in this process:
//!
//! - rebalance time for 1 → 2 → 3 → 2 members, eager (range) against cooperative-sticky: from
//!   the membership change until every partition has been consumed again, and how many
//!   partitions stopped on the way;
//! - a large group (`--members`, default 100, over `--group-partitions`, default 1,000): time
//!   from the first join to a stable assignment, and, on etcd, the metadata requests per second
//!   at steady state (from etcd's own counters).
//!
//! Baseline from the same run: the round trip of a no-op request to the node (DescribeTopic).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use client::{GroupConfig, GroupConsumer, OffsetReset, Producer, Rebalance};

use super::{BenchArgs, Node, cluster_node, row};

/// Per partition, when a record was last handed to a member (since the bench's epoch).
type Seen = Arc<Mutex<BTreeMap<u32, Instant>>>;

struct Member {
    stop: Arc<AtomicBool>,
    revoked: Arc<Mutex<usize>>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn member(
    addr: &str,
    group: &str,
    topic: &str,
    assignor: &str,
    seen: Seen,
) -> anyhow::Result<Member> {
    let cfg = GroupConfig {
        group: group.into(),
        topics: vec![topic.into()],
        assignor: Some(assignor.into()),
        session_timeout: Duration::from_secs(30),
        offset_reset: OffsetReset::Latest,
        ..GroupConfig::default()
    };
    // A connection per member, as separate processes would have.
    let client = crate::commands::connect(addr).await?;
    let mut m = GroupConsumer::join(client, cfg)
        .await
        .map_err(crate::commands::explain)?;
    let revoked = Arc::new(Mutex::new(0));
    let r = revoked.clone();
    m.set_listener(move |e| {
        if let Rebalance::Revoked(tps) = e {
            *r.lock().expect("lock") += tps.len();
        }
    });
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let task = tokio::spawn(async move {
        while !s.load(Ordering::Relaxed) {
            let records = m.poll(Duration::from_millis(50)).await?;
            let now = Instant::now();
            let mut seen = seen.lock().expect("lock");
            for r in records {
                seen.insert(r.partition, now);
            }
        }
        m.close().await?;
        Ok(())
    });
    Ok(Member {
        stop,
        revoked,
        task,
    })
}

/// Waits until every partition was consumed after `since`; returns how long that took.
async fn all_consumed_after(
    seen: &Seen,
    partitions: u32,
    since: Instant,
) -> anyhow::Result<Duration> {
    let deadline = since + Duration::from_secs(120);
    loop {
        let done = {
            let seen = seen.lock().expect("lock");
            (0..partitions).all(|p| seen.get(&p).is_some_and(|t| *t > since))
        };
        if done {
            let last = *seen
                .lock()
                .expect("lock")
                .values()
                .max()
                .expect("partitions");
            return Ok(last - since);
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "partitions not consumed again in 120 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits until the group has `members` members, each holding exactly its target.
async fn wait_stable(
    client: &client::Client,
    group: &str,
    members: usize,
) -> anyhow::Result<Instant> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let d = client
            .describe_group(group)
            .await
            .map_err(crate::commands::explain)?;
        if d.state == "Stable" && d.members.len() == members {
            return Ok(Instant::now());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "group {group} never stable: {}",
            d.state
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Sums etcd's request counters (ranges, puts, deletes, txns) from its metrics endpoint.
async fn etcd_requests(endpoint: &str) -> anyhow::Result<f64> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(endpoint)
        .await
        .with_context(|| format!("connecting to etcd at {endpoint}"))?;
    s.write_all(format!("GET /metrics HTTP/1.0\r\nHost: {endpoint}\r\n\r\n").as_bytes())
        .await?;
    let mut body = String::new();
    s.read_to_string(&mut body).await?;
    let mut total = 0.0;
    for line in body.lines() {
        for name in [
            "etcd_mvcc_range_total",
            "etcd_mvcc_put_total",
            "etcd_mvcc_delete_total",
            "etcd_mvcc_txn_total",
        ] {
            if let Some(v) = line
                .strip_prefix(name)
                .and_then(|r| r.split_whitespace().last())
            {
                total += v.parse::<f64>().unwrap_or(0.0);
            }
        }
    }
    Ok(total)
}

pub async fn run(args: &BenchArgs, dir: &std::path::Path) -> anyhow::Result<()> {
    let node = match &args.meta {
        Some(meta) => {
            cluster_node(
                dir,
                args,
                &format!("{meta}-groups-{}", std::process::id()),
                1,
            )
            .await?
        }
        None => Node::start(dir, args).await?,
    };
    let client = crate::commands::connect(&node.addr).await?;
    let topic = "bench-groups";
    client
        .create_topic(topic, args.partitions)
        .await
        .map_err(crate::commands::explain)?;

    // Baseline: a request's round trip to the node.
    let mut rtts = Vec::new();
    for _ in 0..50 {
        let t = Instant::now();
        client
            .describe_topic(topic)
            .await
            .map_err(crate::commands::explain)?;
        rtts.push(t.elapsed());
    }
    rtts.sort();
    row(
        "baseline: request round trip",
        format!("{:.2} ms", rtts[rtts.len() / 2].as_secs_f64() * 1e3),
        "median DescribeTopic to the node (same machine)",
    );

    // A producer writing to every partition every 10 ms.
    let producing = Arc::new(AtomicBool::new(true));
    let producer = Producer::new(client.clone(), super::producer_config(args));
    let p = producing.clone();
    let partitions = args.partitions;
    let writer = tokio::spawn(async move {
        while p.load(Ordering::Relaxed) {
            for part in 0..partitions {
                // Acknowledgements are not awaited: the load only has to keep arriving.
                drop(
                    producer
                        .send(topic, Some(part), None, Some(b"x".to_vec()), vec![])
                        .await
                        .map_err(crate::commands::explain)?,
                );
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        producer.close().await;
        anyhow::Ok(())
    });

    println!(
        "rebalance: member joins or leaves → group settled, then every one of {} partitions \
         consumed again (settled members heartbeat about every second: a change waits for it)",
        args.partitions
    );
    for assignor in ["range", "cooperative-sticky"] {
        let group = format!("bench-{assignor}-{}", std::process::id());
        let seen: Seen = Arc::default();
        let mut members: Vec<Member> = Vec::new();
        for (step, target) in [1usize, 2, 3, 2].iter().enumerate() {
            let since = Instant::now();
            let count = |m: &Member| *m.revoked.lock().expect("lock");
            let before: Vec<usize> = members.iter().map(count).collect();
            if *target > members.len() {
                members.push(member(&node.addr, &group, topic, assignor, seen.clone()).await?);
            } else {
                let gone = members.pop().expect("a member");
                gone.stop.store(true, Ordering::Relaxed);
                gone.task.await??;
            }
            // Settled: every member holds its target; then every partition flows again.
            let settled = wait_stable(&client, &group, *target).await?;
            let took =
                all_consumed_after(&seen, args.partitions, settled).await? + (settled - since);
            let revoked: usize = members.iter().zip(&before).map(|(m, b)| count(m) - b).sum();
            let from = if step == 0 {
                0
            } else {
                [1usize, 2, 3, 2][step - 1]
            };
            row(
                &format!("{assignor}: {from} → {target} members"),
                format!("{:.0} ms", took.as_secs_f64() * 1e3),
                &format!("{revoked} partitions given up by members that stayed"),
            );
        }
        for m in members {
            m.stop.store(true, Ordering::Relaxed);
            m.task.await??;
        }
    }
    producing.store(false, Ordering::Relaxed);
    writer.await??;

    // A large group over many partitions.
    let big = "bench-many";
    client
        .create_topic(big, args.group_partitions)
        .await
        .map_err(crate::commands::explain)?;
    println!(
        "a group of {} members over {} partitions:",
        args.members, args.group_partitions
    );
    let group = format!("bench-many-{}", std::process::id());
    let seen: Seen = Arc::default();
    let started = Instant::now();
    let mut members = Vec::new();
    for _ in 0..args.members {
        members.push(member(&node.addr, &group, big, "cooperative-sticky", seen.clone()).await?);
    }
    let joined = started.elapsed();
    wait_stable(&client, &group, args.members).await?;
    row(
        "time to a stable assignment",
        format!("{:.2} s", started.elapsed().as_secs_f64()),
        &format!(
            "from the first join; the joins themselves took {:.2} s",
            joined.as_secs_f64()
        ),
    );
    let etcd = args
        .meta
        .as_deref()
        .and_then(|m| m.strip_prefix("etcd://"))
        .map(|hosts| {
            hosts
                .split(['/', ','])
                .next()
                .unwrap_or_default()
                .to_string()
        });
    match etcd {
        Some(endpoint) => {
            let window = Duration::from_secs(10);
            let before = etcd_requests(&endpoint).await?;
            tokio::time::sleep(window).await;
            let after = etcd_requests(&endpoint).await?;
            row(
                "etcd requests at steady state",
                format!("{:.1} /s", (after - before) / window.as_secs_f64()),
                "ranges + puts + deletes + txns over 10 s, the whole node (leases, leadership) included",
            );
        }
        None => println!("  (etcd requests: run with --meta etcd://host:port to count them)"),
    }
    for m in members {
        m.stop.store(true, Ordering::Relaxed);
        m.task.await??;
    }
    drop(node);
    Ok(())
}
