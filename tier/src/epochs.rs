//! Leader epochs along a log (Kafka's leader epoch cache, KIP-101/KIP-320).
//!
//! The hot tier stamps every batch with the epoch of the leader that appended it; the cold
//! tier records, per segment and for the whole log (the manifest state), where each epoch's
//! batches begin. Invariant: epochs never decrease along a log (a leader appends after
//! everything its predecessors appended), so a history is a list of runs in offset order with
//! increasing epochs, and every epoch stamped on a batch a consumer can read is in it.

use serde::{Deserialize, Serialize};

/// The first offset of a run of batches appended under one leader epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct EpochRun {
    pub epoch: i32,
    pub start: i64,
}

/// Appends `run` to `runs` unless it continues the last run (epochs never decrease along a
/// log: a leader appends after everything its predecessors appended).
pub fn push_epoch_run(runs: &mut Vec<EpochRun>, run: EpochRun) {
    if runs.last().is_none_or(|l| run.epoch > l.epoch) {
        runs.push(run);
    }
}

/// The epoch of the run holding `offset` in `runs` (in offset order); the first run's for an
/// offset before it, `None` for no runs.
pub fn epoch_at(runs: &[EpochRun], offset: i64) -> Option<i32> {
    let i = runs.partition_point(|r| r.start <= offset);
    runs.get(i.saturating_sub(1)).map(|r| r.epoch)
}

/// Kafka's OffsetForLeaderEpoch over a history `runs` whose last run is the current leader's,
/// for a log ending at `end`: the largest epoch at or below `epoch` (`epoch` itself when it
/// precedes every run) and the offset where the next epoch begins (`end` for the last one).
/// `None` for an epoch after the last run (Kafka: undefined).
pub fn end_offset_for(runs: &[EpochRun], epoch: i32, end: i64) -> Option<(i32, i64)> {
    let higher = runs.partition_point(|r| r.epoch <= epoch);
    match runs.get(higher) {
        None => runs
            .last()
            .filter(|l| l.epoch == epoch)
            .map(|l| (l.epoch, end)),
        Some(next) => {
            let floor = higher.checked_sub(1).map_or(epoch, |i| runs[i].epoch);
            Some((floor, next.start))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(v: &[(i32, i64)]) -> Vec<EpochRun> {
        let mut out = Vec::new();
        for &(epoch, start) in v {
            push_epoch_run(&mut out, EpochRun { epoch, start });
        }
        out
    }

    #[test]
    fn runs_only_grow_in_epoch() {
        let r = runs(&[(3, 0), (3, 10), (5, 20), (4, 25), (7, 30)]);
        assert_eq!(r, runs(&[(3, 0), (5, 20), (7, 30)]));
        assert_eq!(epoch_at(&r, 0), Some(3));
        assert_eq!(epoch_at(&r, 19), Some(3));
        assert_eq!(epoch_at(&r, 20), Some(5));
        assert_eq!(epoch_at(&r, 1000), Some(7));
        assert_eq!(epoch_at(&[], 5), None);
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let r = runs(&[(3, 10), (5, 20), (7, 30)]);
        // Each epoch ends where the next begins; the current one at the log's end.
        assert_eq!(end_offset_for(&r, 3, 40), Some((3, 20)));
        assert_eq!(end_offset_for(&r, 5, 40), Some((5, 30)));
        assert_eq!(end_offset_for(&r, 7, 40), Some((7, 40)));
        // An epoch that appended nothing answers with the one before it.
        assert_eq!(end_offset_for(&r, 4, 40), Some((3, 20)));
        assert_eq!(end_offset_for(&r, 6, 40), Some((5, 30)));
        // Before the history: the epoch asked for, ending where the history begins.
        assert_eq!(end_offset_for(&r, 1, 40), Some((1, 10)));
        // After the current epoch: undefined.
        assert_eq!(end_offset_for(&r, 8, 40), None);
        assert_eq!(end_offset_for(&[], 1, 40), None);
    }
}
