//! `tierlog bench merge`: what merging does to a busy archive. The bench writes `--commits`
//! small acks=all commits (each `--records / --commits` events) through the storage core, as
//! fast as the machine allows, copies the bucket's objects to a second root, and merges the
//! copy (then collects its garbage) while another partition takes acks=all load. It prints:
//! - objects and bytes per partition, unmerged and merged;
//! - the merge's wall time, the CPU it took (the process's, less the load's share measured
//!   before), and the load's commit rate without and with merging running;
//! - a SQL full scan, a one-minute time range and a cold replay from offset 0 over each copy,
//!   next to the raw read of each copy's files (a file-system bucket).

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt};
use query::BucketCatalog;

use super::sql::{BASE_TS, STEP_MS, event, history_queries, run_tierlog};
use super::{BenchArgs, CpuTicks, mbs, read_tree, row};

const UNMERGED: &str = "unmerged";
const MERGED: &str = "merged";

fn tier_config(hot: &Path) -> tier::TierConfig {
    tier::TierConfig {
        data_dir: hot.to_path_buf(),
        fsync: tier::FsyncPolicy::Never,
        flush_interval_ms: 0,
        merge_enabled: false,
        merge_min_age_ms: 0,
        hot_budget_bytes: 64 << 30,
        ..Default::default()
    }
}

/// Writes the history as `commits` acks=all commits spread over the partitions, each partition
/// committing one after another. Returns how long that took.
async fn write(
    args: &BenchArgs,
    store: Arc<dyn ObjectStore>,
    hot: &Path,
) -> anyhow::Result<Duration> {
    let t = tier::Tier::open(tier_config(hot), store, ObjectPath::from(UNMERGED)).await?;
    let parts = u64::from(args.partitions);
    let per_commit = (args.records / args.commits).max(1);
    let commits = args.commits / parts;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..args.partitions {
        t.open_partition("events", p, 1).await?;
        let (t, len) = (t.clone(), args.record_bytes);
        tasks.push(tokio::spawn(async move {
            let mut i = 0u64;
            for _ in 0..commits {
                let mut b = tier::BatchBuilder::new(tier::Compression::None);
                for _ in 0..per_commit {
                    let ts = BASE_TS + i as i64 * STEP_MS + i64::from(p);
                    let k = format!("user-{}", i % 10_007);
                    b.push(ts, Some(k.as_bytes()), Some(&event(p, i, len)[..]), &[]);
                    i += 1;
                }
                let r = t.append("events", p, b.build()?).await?;
                t.wait_committed("events", p, r.last_offset + 1).await?;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let took = start.elapsed();
    t.close(false).await?;
    Ok(took)
}

/// Copies every object under root `from` to root `to`, a few at once.
async fn copy_root(store: &Arc<dyn ObjectStore>, from: &str, to: &str) -> anyhow::Result<u64> {
    let listed: Vec<_> = store
        .list(Some(&ObjectPath::from(from)))
        .try_collect()
        .await?;
    let n = listed.len() as u64;
    futures::stream::iter(listed)
        .map(|m| {
            let store = store.clone();
            async move {
                let rest = m.location.as_ref().strip_prefix(from).unwrap_or_default();
                let dest = ObjectPath::from(format!("{to}{rest}"));
                store.copy(&m.location, &dest).await
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(n)
}

/// acks=all commits of one small batch each on `load/0`, as fast as they go, until `stop`.
async fn load(t: tier::Tier, stop: Arc<AtomicBool>, commits: Arc<AtomicU64>) -> anyhow::Result<()> {
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let mut b = tier::BatchBuilder::new(tier::Compression::None);
        for _ in 0..16 {
            b.push(BASE_TS + i as i64, None, Some(&event(9, i, 512)[..]), &[]);
            i += 1;
        }
        let r = t.append("load", 0, b.build()?).await?;
        t.wait_committed("load", 0, r.last_offset + 1).await?;
        commits.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Replays every partition of `root` from offset 0 as a node that does not lead them (cold
/// reads through a fresh cache). Records and time.
async fn replay(
    store: &Arc<dyn ObjectStore>,
    root: &str,
    hot: &Path,
    partitions: u32,
) -> anyhow::Result<(u64, Duration)> {
    let t = tier::Tier::open(tier_config(hot), store.clone(), ObjectPath::from(root)).await?;
    let start = Instant::now();
    let mut records = 0u64;
    for p in 0..partitions {
        let mut at = 0i64;
        loop {
            let r = t.read_committed("events", p, at, 1 << 20).await?;
            if r.records.is_empty() {
                break;
            }
            at = r.records.last().map_or(at, |r| r.offset + 1);
            records += r.records.len() as u64;
        }
    }
    let took = start.elapsed();
    t.abort().await;
    Ok((records, took))
}

pub async fn run(args: &BenchArgs, dir: &Path) -> anyhow::Result<()> {
    if args.commits < u64::from(args.partitions) || args.repeat == 0 {
        bail!("--commits must be at least --partitions, and --repeat at least 1");
    }
    let bucket = dir.join("bucket");
    std::fs::create_dir_all(&bucket)?;
    let url = args
        .object_store
        .clone()
        .unwrap_or_else(|| format!("file://{}", bucket.display()));
    let (store, _) = tier::store::open_store(&url, &args.object_store_options)?;
    let on_disk = args.object_store.is_none();

    let wrote = write(args, store.clone(), &dir.join("hot-write")).await?;
    let copied = copy_root(&store, UNMERGED, MERGED).await?;
    row(
        "small acks=all commits written",
        format!("{:.0} commits/s", args.commits as f64 / wrote.as_secs_f64()),
        &format!(
            "{} commits of {} records in {:.1} s; {copied} objects copied to a second root",
            args.commits,
            (args.records / args.commits).max(1),
            wrote.as_secs_f64()
        ),
    );

    // Merging the copy while another partition takes acks=all load.
    let cfg = tier_config(&dir.join("hot-merge"));
    let t = tier::Tier::open(cfg, store.clone(), ObjectPath::from(MERGED)).await?;
    for p in 0..args.partitions {
        t.open_partition("events", p, 2).await?;
    }
    // The load goes to the same tier, as on a node (merges give way to its uploads); its
    // partition is removed before the copy is read.
    let lt = t.clone();
    lt.open_partition("load", 0, 1).await?;
    let before: Vec<_> = (0..args.partitions)
        .map(|p| t.offsets("events", p))
        .collect::<Result<_, _>>()?;
    let (stop, done) = (
        Arc::new(AtomicBool::new(false)),
        Arc::new(AtomicU64::new(0)),
    );
    let loader = tokio::spawn(load(lt.clone(), stop.clone(), done.clone()));
    let pid = Some(std::process::id());
    let window = Duration::from_secs(5);
    let (c0, cpu0) = (done.load(Ordering::Relaxed), CpuTicks::now(pid));
    tokio::time::sleep(window).await;
    let idle_rate = (done.load(Ordering::Relaxed) - c0) as f64 / window.as_secs_f64();
    let load_cpu = cpu0.zip(CpuTicks::now(pid));
    let (c1, cpu1, start) = (
        done.load(Ordering::Relaxed),
        CpuTicks::now(pid),
        Instant::now(),
    );
    let mut merges = 0;
    for p in 0..args.partitions {
        merges += t.merge_now("events", p).await?;
    }
    let merge_took = start.elapsed();
    let busy_rate = (done.load(Ordering::Relaxed) - c1) as f64 / merge_took.as_secs_f64();
    let merge_cpu = cpu1.zip(CpuTicks::now(pid));
    stop.store(true, Ordering::Relaxed);
    loader.await??;
    let gave_way: Duration = (0..args.partitions)
        .map(|p| t.merge_status("events", p).map(|s| s.gave_way))
        .sum::<Result<Duration, _>>()?;
    lt.remove_partition("load", 0).await?;
    let mut collected = 0;
    for p in 0..args.partitions {
        collected += t
            .collect_garbage("events", p, Duration::ZERO, false)
            .await?
            .garbage
            .len();
    }
    let after: Vec<_> = (0..args.partitions)
        .map(|p| t.offsets("events", p))
        .collect::<Result<_, _>>()?;
    t.close(false).await?;

    let sum = |o: &[tier::PartitionOffsets], f: fn(&tier::PartitionOffsets) -> u64| {
        o.iter().map(f).sum::<u64>()
    };
    let read: u64 = sum(&before, |o| o.cold_bytes);
    row(
        "objects per partition, unmerged",
        format!(
            "{}",
            sum(&before, |o| o.cold_segments) / u64::from(args.partitions)
        ),
        &format!(
            "{:.1} MB per partition",
            read as f64 / 1e6 / f64::from(args.partitions)
        ),
    );
    row(
        "objects per partition, merged",
        format!(
            "{}",
            sum(&after, |o| o.cold_segments) / u64::from(args.partitions)
        ),
        &format!(
            "{:.1} MB per partition; {merges} merges; {collected} objects collected after",
            sum(&after, |o| o.cold_bytes) as f64 / 1e6 / f64::from(args.partitions)
        ),
    );
    // The process's CPU while merging, less what the load alone took (measured before).
    let ticks = |c: Option<(CpuTicks, CpuTicks)>| {
        c.and_then(|(a, b)| Some((b.process? - a.process?, b.total - a.total)))
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let share = match (ticks(merge_cpu), ticks(load_cpu)) {
        (Some((mp, mt)), Some((lp, lt))) if mt > 0 && lt > 0 => {
            let merging = mp as f64 / mt as f64 - lp as f64 / lt as f64;
            format!(
                "merging ≈ {:.0}% of the machine ({cores} cores)",
                100.0 * merging.max(0.0)
            )
        }
        _ => "CPU not measured (no /proc)".into(),
    };
    row(
        "merging",
        format!("{:.0} MB/s", mbs(read, merge_took)),
        &format!(
            "{:.1} s for {:.0} MB; {share}",
            merge_took.as_secs_f64(),
            read as f64 / 1e6
        ),
    );
    row(
        "acks=all load on another partition",
        format!("{busy_rate:.0} commits/s"),
        &format!(
            "while merging; {idle_rate:.0} commits/s before, without merging; merging gave \
             way to uploads for {:.1} s",
            gave_way.as_secs_f64()
        ),
    );

    // Reads over each copy.
    let per_partition =
        (args.records / args.commits).max(1) * (args.commits / u64::from(args.partitions));
    let qs = history_queries(per_partition);
    for root in [UNMERGED, MERGED] {
        println!("  over the {root} copy");
        if on_disk {
            let (bytes, took) = read_tree(&bucket.join(root))?;
            row(
                "    baseline: raw read of its files",
                format!("{:.0} MB/s", mbs(bytes, took)),
                &format!(
                    "{:.0} MB in {:.1} ms (page cache)",
                    bytes as f64 / 1e6,
                    took.as_secs_f64() * 1e3
                ),
            );
        }
        let catalog = Arc::new(BucketCatalog::new(store.clone(), ObjectPath::from(root)));
        let ran = run_tierlog(&store, root, &catalog, &qs[..2], args.repeat, true).await?;
        for (q, (t, (first, _, scan, objects, bytes))) in qs.iter().zip(&ran) {
            row(
                &format!("    SQL {}", q.name),
                format!("{t:.3} s"),
                &format!(
                    "{} of {} segments, {objects} objects / {:.1} MB read; first row {}",
                    scan.segments_scanned,
                    scan.segments_total,
                    *bytes as f64 / 1e6,
                    first.join(", ")
                ),
            );
        }
        let (records, took) = replay(
            &store,
            root,
            &dir.join(format!("hot-replay-{root}")),
            args.partitions,
        )
        .await
        .with_context(|| format!("replaying the {root} copy"))?;
        row(
            "    cold replay from offset 0",
            format!("{:.0} records/s", records as f64 / took.as_secs_f64()),
            &format!("{records} records in {:.2} s", took.as_secs_f64()),
        );
    }
    Ok(())
}
