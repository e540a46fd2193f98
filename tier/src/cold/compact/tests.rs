use super::*;
use crate::batch::{BatchBuilder, Compression, ProducerInfo};
use crate::cold::manifest::CompactionPoint;
use crate::config::TierConfig;
use crate::{ColdRetention, Tier};
use object_store::path::Path;
use std::collections::BTreeMap;
use std::time::Duration;

fn entry(base: i64, n: i64, size: u64, max_ts: i64) -> SegmentEntry {
    SegmentEntry {
        path: format!("log/{base:020}.parquet"),
        base_offset: base,
        last_offset: base + n - 1,
        min_timestamp: 0,
        max_timestamp: max_ts,
        records: n as u64,
        size,
        raw_bytes: size,
        row_groups: 1,
        epoch: 1,
        producers: Default::default(),
        footer_crc32c: None,
        leader_epochs: Vec::new(),
    }
}

fn policy(min_lag_ms: u64, ratio: f64) -> Policy {
    Policy {
        compaction: KeyCompaction {
            min_lag: Duration::from_millis(min_lag_ms),
            delete_retention: Duration::from_millis(1000),
        },
        min_dirty_ratio: ratio,
        key_map_entries: 1000,
        target_bytes: 1 << 20,
    }
}

/// The dirty range is the committed segments after the last compaction point that are older
/// than the lag, never the newest one; a pass is due by the dirty ratio, by tombstones whose
/// retention passed, or when forced.
#[test]
fn plans_compact_old_dirty_segments_but_never_the_newest() {
    let now = 100_000;
    let mut state = ManifestState::new("t", 0);
    state.next_offset = 50;
    // Five segments of 10; the last two young.
    let segs: Vec<_> = (0..5)
        .map(|i| entry(i * 10, 10, 100, if i < 3 { 1000 } else { now }))
        .collect();
    let (p, due) = plan(&state, &segs, &policy(10_000, 0.5), now, false).unwrap();
    let bases = |v: &[SegmentEntry]| v.iter().map(|s| s.base_offset).collect::<Vec<_>>();
    assert_eq!(
        bases(&p.dirty),
        vec![0, 10, 20],
        "old enough, and not the newest"
    );
    assert!(p.clean.is_empty());
    assert_eq!(due, Due::Yes, "60% dirty");
    // With no lag, still never the newest segment.
    let (p, _) = plan(&state, &segs, &policy(0, 0.5), now, false).unwrap();
    assert_eq!(bases(&p.dirty), vec![0, 10, 20, 30]);

    // Compacted below 25: the first two segments are clean; the third is dirty from 25 on.
    state.compactions.push(CompactionPoint {
        below: 25,
        at_ms: now - 10,
        first_tombstone: Some(3),
    });
    let (p, due) = plan(&state, &segs, &policy(10_000, 0.5), now, false).unwrap();
    assert_eq!((bases(&p.clean), bases(&p.dirty)), (vec![0, 10], vec![20]));
    assert_eq!(p.dirty_from, 25);
    assert_eq!(due, Due::No, "20% dirty, tombstones not old enough");
    let (_, due) = plan(&state, &segs, &policy(10_000, 0.5), now, true).unwrap();
    assert_eq!(due, Due::Yes, "forced");
    // A second later the tombstone at 3 is past its retention: due with nothing dirty.
    let (p, due) = plan(&state, &segs[..3], &policy(0, 0.5), now + 1000, false).unwrap();
    assert!(p.dirty.is_empty());
    assert_eq!(due, Due::Yes);
    // No tombstones and nothing dirty: nothing to plan.
    state.compactions[0].first_tombstone = None;
    assert!(plan(&state, &segs[..3], &policy(0, 0.5), now + 1000, false).is_none());
}

/// The tombstone horizon is the compaction point of the newest pass at least the retention
/// old; compaction points never go back, and a long history of passes is thinned, keeping its
/// oldest and newest.
#[test]
fn tombstone_horizons_and_compaction_points() {
    let mut s = ManifestState::new("t", 0);
    s.next_offset = 1_000_000;
    assert_eq!(s.tombstone_horizon(10_000, 1000), 0);
    for i in 1..=200i64 {
        let c = Compaction {
            below: i * 100,
            first_tombstone: None,
        };
        s.compacted(&c, i * 1000).unwrap();
    }
    assert_eq!(s.compacted_below(), 20_000);
    assert!(s.compactions.len() <= crate::cold::manifest::COMPACTION_POINTS_KEPT);
    assert_eq!(s.compactions[0].below, 100, "the oldest stays");
    // The newest pass at least 50 s old by the clock of the newest (200 s).
    let h = s.tombstone_horizon(200_000, 50_000);
    assert!((14_000..=15_000).contains(&h), "{h}");
    let back = Compaction {
        below: 100,
        first_tombstone: None,
    };
    assert!(
        s.compacted(&back, 300_000).is_err(),
        "a point never goes back"
    );
}

async fn tier(dir: &std::path::Path, key_map_bytes: u64) -> Tier {
    let bucket = dir.join("bucket");
    let (store, _) = crate::store::open_store(bucket.to_str().unwrap(), &[]).unwrap();
    let cfg = TierConfig {
        data_dir: dir.join("hot"),
        merge_enabled: false,
        // Passes run when the tests ask, not in the background.
        merge_interval_ms: 3_600_000,
        compaction_key_map_bytes: key_map_bytes,
        ..TierConfig::default()
    };
    Tier::open(cfg, store, Path::from("c")).await.unwrap()
}

fn compacted(delete_retention_ms: u64) -> ColdRetention {
    ColdRetention {
        compact: Some(KeyCompaction {
            min_lag: Duration::ZERO,
            delete_retention: Duration::from_millis(delete_retention_ms),
        }),
        ..ColdRetention::default()
    }
}

/// Every record of partition `t/0` from offset 0, across gaps.
async fn read_all(t: &Tier) -> Vec<crate::Record> {
    let mut out: Vec<crate::Record> = Vec::new();
    let end = t.offsets("t", 0).unwrap().next;
    let mut pos = 0;
    while pos < end {
        let r = t.read("t", 0, pos, 64 << 10).await.unwrap();
        assert!(!r.records.is_empty(), "nothing at {pos} of {end}");
        assert!(r.records[0].offset >= pos);
        pos = r.records.last().unwrap().offset + 1;
        out.extend(r.records);
    }
    out
}

/// A new leader's tier over the same bucket (the hot tier gone): reads come from the cold
/// tier.
async fn new_leader(dir: &std::path::Path, epoch: u64, delete_retention_ms: u64) -> Tier {
    std::fs::remove_dir_all(dir.join("hot")).unwrap();
    let t = tier(dir, 64 << 10).await;
    t.open_partition("t", 0, epoch).await.unwrap();
    t.set_cold_retention("t", 0, compacted(delete_retention_ms))
        .unwrap();
    t
}

/// Appends one plain record with `key` as a segment of its own.
async fn tail(t: &Tier, key: &[u8]) {
    let mut b = BatchBuilder::new(Compression::None);
    b.push(1_700_001_000_000, Some(key), Some(b"v"), &[]);
    t.append("t", 0, b.build().unwrap()).await.unwrap();
    t.flush("t", 0).await.unwrap();
}

/// Appends `rounds` batches (each its own segment) of updates to `keys` keys from an
/// idempotent producer; `tombstone(round, key)` says which are deletions. Returns each key's
/// newest value (`None`: deleted).
async fn updates(
    t: &Tier,
    rounds: usize,
    keys: usize,
    tombstone: impl Fn(usize, usize) -> bool,
) -> BTreeMap<String, Option<String>> {
    let mut newest = BTreeMap::new();
    for round in 0..rounds {
        let info = ProducerInfo {
            producer_id: 77,
            producer_epoch: 0,
            base_sequence: (round * keys) as i32,
        };
        let mut b = BatchBuilder::new(Compression::None).producer(info, false);
        for k in 0..keys {
            let key = format!("k{k:05}");
            let value = (!tombstone(round, k)).then(|| format!("r{round}-{k}"));
            b.push(
                1_700_000_000_000 + (round * keys + k) as i64,
                Some(key.as_bytes()),
                value.as_deref().map(str::as_bytes),
                &[],
            );
            newest.insert(key, value);
        }
        t.append("t", 0, b.build().unwrap()).await.unwrap();
        t.flush("t", 0).await.unwrap();
    }
    newest
}

/// Key compaction end to end on a local bucket: a key set larger than the key map compacts in
/// passes; afterwards the compacted range holds one record per key (its newest), offsets
/// only increase, a read inside a gap starts at the next record, the newest segment is left
/// whole; a producer's retry of its last batch, rewritten by compaction, is still recognized
/// by a new leader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_keeps_each_keys_newest_record_in_passes() {
    const HOUR: u64 = 3_600_000;
    let dir = tempfile::tempdir().unwrap();
    // A 64 KiB key map holds 1,638 keys: 3,000 keys take several passes.
    let t = tier(dir.path(), 64 << 10).await;
    t.open_partition("t", 0, 1).await.unwrap();
    t.set_cold_retention("t", 0, compacted(HOUR)).unwrap();
    let keys = 3000;
    // Round 3 deletes every tenth key; round 5 every twentieth.
    let mut newest = updates(&t, 6, keys, |round, k| {
        (round == 3 && k % 10 == 0) || (round == 5 && k % 20 == 0)
    })
    .await;
    tail(&t, b"zzz").await;
    newest.insert("zzz".into(), Some("v".into()));
    let tail_base = 6 * keys as i64;
    let r = t.compact_now("t", 0, true).await.unwrap().unwrap();
    assert_eq!(r.below, tail_base, "all but the newest segment: {r:?}");
    assert_eq!(r.removed, 5 * keys as u64, "{r:?}");
    t.close(false).await.unwrap();

    let t = new_leader(dir.path(), 2, HOUR).await;
    let all = read_all(&t).await;
    assert!(all.windows(2).all(|w| w[0].offset < w[1].offset));
    let (below, after): (Vec<_>, Vec<_>) = all.iter().partition(|r| r.offset < tail_base);
    assert_eq!(after.len(), 1, "the newest segment is whole");
    // Below the compaction point: one record per key, its newest (round 5), tombstones kept
    // within their retention.
    let mut seen = std::collections::BTreeSet::new();
    for r in &below {
        let key = String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap();
        assert!(
            seen.insert(key.clone()),
            "{key} twice below the compaction point"
        );
        let k: usize = key[1..].parse().unwrap();
        assert_eq!(r.offset, (5 * keys + k) as i64, "key {key}");
        let value = (!k.is_multiple_of(20)).then(|| format!("r5-{k}"));
        assert_eq!(r.value.as_deref(), value.as_deref().map(str::as_bytes));
    }
    assert_eq!(seen.len(), keys);
    // Replaying everything gives each key's newest value.
    let mut replay = BTreeMap::new();
    for r in &all {
        let key = String::from_utf8(r.key.clone().unwrap().to_vec()).unwrap();
        let v = r
            .value
            .as_ref()
            .map(|v| String::from_utf8(v.to_vec()).unwrap());
        replay.insert(key, v);
    }
    assert_eq!(replay, newest);
    // A read at an offset inside a gap starts at the next record.
    let r = t.read("t", 0, 1, 1).await.unwrap();
    assert_eq!(r.records[0].offset, 5 * keys as i64, "{:?}", r.records[0]);
    // The idempotent producer's last batch, retried, is known to the new leader.
    let info = ProducerInfo {
        producer_id: 77,
        producer_epoch: 0,
        base_sequence: (5 * keys) as i32,
    };
    let mut b = BatchBuilder::new(Compression::None).producer(info, false);
    for k in 0..keys {
        b.push(1, Some(format!("k{k:05}").as_bytes()), Some(b"again"), &[]);
    }
    let again = t.append("t", 0, b.build().unwrap()).await.unwrap();
    assert!(again.duplicate, "{again:?}");
    t.close(false).await.unwrap();
}

/// Tombstones outlive the pass that compacts them by their retention, then go; a key whose
/// newest record is a tombstone is then gone from the compacted range.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tombstones_go_after_their_retention() {
    let dir = tempfile::tempdir().unwrap();
    let t = tier(dir.path(), 64 << 10).await;
    t.open_partition("t", 0, 1).await.unwrap();
    t.set_cold_retention("t", 0, compacted(1500)).unwrap();
    let keys = 100;
    // Round 1 deletes the even keys.
    updates(&t, 2, keys, |round, k| round == 1 && k % 2 == 0).await;
    tail(&t, b"other").await;
    let first = t.compact_now("t", 0, true).await.unwrap().unwrap();
    assert_eq!(
        first.removed, keys as u64,
        "round 0 is superseded: {first:?}"
    );
    // Within the retention a pass finds nothing to do.
    assert!(t.compact_now("t", 0, true).await.unwrap().is_none());
    t.close(false).await.unwrap();
    let tombstones = |all: &[crate::Record]| all.iter().filter(|r| r.value.is_none()).count();
    let t = new_leader(dir.path(), 2, 1500).await;
    assert_eq!(tombstones(&read_all(&t).await), keys / 2);
    tokio::time::sleep(Duration::from_millis(1600)).await;
    let second = t.compact_now("t", 0, true).await.unwrap().unwrap();
    assert_eq!(second.removed, (keys / 2) as u64, "{second:?}");
    t.close(false).await.unwrap();
    let t = new_leader(dir.path(), 3, 1500).await;
    let all = read_all(&t).await;
    assert_eq!(tombstones(&all), 0);
    assert_eq!(
        all.len(),
        keys / 2 + 1,
        "the odd keys and the tail's record"
    );
    t.close(false).await.unwrap();
}
