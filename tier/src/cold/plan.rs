//! Seal plans: when each partition of the tier next cuts its active segment for acks=all
//! waiters (`cold::upload`; the name dates from when it sealed), so that the partitions' cuts
//! do not fall at the same moment.
//!
//! Under steady acks=all load every partition cuts about once per flush interval. Left alone,
//! partitions that started together keep cutting together: their conversions queue on the same
//! cores and their PUTs on the same store, and the last one's waiters wait for all of them. A
//! partition that has just cut therefore picks its next cut between half the interval and its
//! lead (the interval less the expected overhead) after it: the latest moment at least `gap`
//! away from every other partition's planned cut, or, when there is none, the moment farthest
//! from them.
//!
//! Invariants: a planned cut is never later than the lead after the last one (no record waits
//! longer for it), and never earlier than half the interval (a partition makes at most two cuts
//! for waiters per interval).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use crate::PartitionId;

/// The planned next seals of the tier's partitions.
#[derive(Debug, Default)]
pub(crate) struct SealPlans {
    /// Each partition's plan, with the uploader that made it.
    plans: Mutex<HashMap<PartitionId, (Owner, Instant)>>,
}

/// Which uploader a plan is of (a partition reopened gets a new one).
pub(crate) type Owner = usize;

impl SealPlans {
    /// Plans `id`'s next seal after one at `sealed`, `lead` (at least half the `interval`)
    /// being the most a record may wait for it; returns the planned moment.
    pub fn plan(
        &self,
        id: &PartitionId,
        owner: Owner,
        sealed: Instant,
        lead: Duration,
        interval: Duration,
    ) -> Instant {
        let latest = sealed + lead;
        let earliest = (sealed + interval / 2).min(latest);
        let mut plans = self.plans.lock().expect("seal plans lock poisoned");
        // Plans from before this seal were carried out or dropped (a quiet partition).
        let mut others: Vec<Instant> = plans
            .iter()
            .filter(|(p, (_, at))| *p != id && *at > sealed)
            .map(|(_, (_, at))| *at)
            .collect();
        others.sort_unstable();
        let gap = lead / (2 * (others.len() as u32 + 1));
        let at = pick(earliest, latest, &others, gap);
        plans.insert(id.clone(), (owner, at));
        at
    }

    /// Forgets `id`'s plan if `owner` made it (its uploader stopped).
    pub fn forget(&self, id: &PartitionId, owner: Owner) {
        let mut plans = self.plans.lock().expect("seal plans lock poisoned");
        if plans.get(id).is_some_and(|(o, _)| *o == owner) {
            plans.remove(id);
        }
    }
}

/// The latest moment in `[earliest, latest]` at least `gap` from every one of `others` (sorted),
/// or, if there is none, the moment in it farthest from the nearest of them (the latest of
/// equals).
fn pick(earliest: Instant, latest: Instant, others: &[Instant], gap: Duration) -> Instant {
    // From the latest moment down, step below each plan that is too close.
    let mut free = Some(latest);
    for &o in others.iter().rev() {
        let Some(t) = free else { break };
        if o >= t + gap {
            continue;
        }
        if t >= o + gap {
            break;
        }
        free = o.checked_sub(gap).filter(|&before| before >= earliest);
    }
    if let Some(t) = free {
        return t;
    }
    // No free moment: the candidate farthest from its nearest plan (the window's ends and the
    // midpoints between neighbouring plans).
    let nearest = |c: Instant| {
        let i = others.partition_point(|&o| o < c);
        others[i.saturating_sub(1)..(i + 1).min(others.len())]
            .iter()
            .map(|&o| distance(c, o))
            .min()
            .unwrap_or(Duration::MAX)
    };
    let midpoints = others
        .windows(2)
        .map(|w| w[0] + (w[1] - w[0]) / 2)
        .filter(|m| (earliest..=latest).contains(m));
    [latest, earliest]
        .into_iter()
        .chain(midpoints)
        .max_by_key(|&c| (nearest(c), c))
        .expect("two candidates at least")
}

fn distance(a: Instant, b: Instant) -> Duration {
    if a > b { a - b } else { b - a }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn alone_it_seals_a_whole_lead_later() {
        let now = Instant::now();
        assert_eq!(
            pick(now + ms(50), now + ms(100), &[], ms(25)),
            now + ms(100)
        );
        let plans = SealPlans::default();
        let p = PartitionId::new("t", 0);
        assert_eq!(plans.plan(&p, 1, now, ms(100), ms(100)), now + ms(100));
        // A lead shorter than the interval: the plan is the lead later.
        assert_eq!(plans.plan(&p, 1, now, ms(80), ms(100)), now + ms(80));
    }

    #[test]
    fn it_moves_earlier_by_the_gap_from_a_colliding_plan() {
        let now = Instant::now();
        // Another seal planned 3 ms before this one's latest moment.
        let t = pick(now + ms(50), now + ms(100), &[now + ms(97)], ms(10));
        assert_eq!(t, now + ms(87));
        // And one just after it: the latest moment stays clear of both.
        let t = pick(
            now + ms(50),
            now + ms(100),
            &[now + ms(90), now + ms(104)],
            ms(10),
        );
        assert_eq!(t, now + ms(80));
    }

    #[test]
    fn only_its_own_uploader_forgets_a_plan() {
        let plans = SealPlans::default();
        let p = PartitionId::new("t", 0);
        let now = Instant::now();
        plans.plan(&p, 2, now, ms(100), ms(100));
        // The uploader of an earlier opening stops after a new one planned.
        plans.forget(&p, 1);
        let q = PartitionId::new("t", 1);
        assert_eq!(
            plans.plan(&q, 3, now, ms(100), ms(100)),
            now + ms(75),
            "the new uploader's plan still counts"
        );
        plans.forget(&p, 2);
        assert_eq!(plans.plan(&q, 3, now, ms(100), ms(100)), now + ms(100));
    }

    #[test]
    fn a_crowded_window_takes_the_largest_hole() {
        let now = Instant::now();
        let others = [now + ms(50), now + ms(58), now + ms(80), now + ms(100)];
        // No moment is 15 ms from all of them; the midpoint of 58 and 80 is 11 ms from both,
        // the most any moment gets.
        assert_eq!(
            pick(now + ms(50), now + ms(100), &others, ms(15)),
            now + ms(69)
        );
    }

    #[test]
    fn four_partitions_that_start_together_spread_out() {
        let plans = SealPlans::default();
        let ids: Vec<PartitionId> = (0..4).map(|p| PartitionId::new("t", p)).collect();
        let lead = ms(100);
        let start = Instant::now();
        let mut next: Vec<Instant> = ids.iter().map(|_| start).collect();
        // Each partition seals at its planned moment, then plans the next.
        for _ in 0..20 {
            let (i, at) = next
                .iter()
                .enumerate()
                .min_by_key(|(_, at)| **at)
                .map(|(i, at)| (i, *at))
                .unwrap();
            next[i] = plans.plan(&ids[i], i, at, lead, lead);
            assert!(next[i] >= at + lead / 2 && next[i] <= at + lead);
        }
        let mut at = next.clone();
        at.sort();
        for w in at.windows(2) {
            assert!(
                w[1] - w[0] >= lead / 8,
                "planned seals {:?} apart",
                at.windows(2).map(|w| w[1] - w[0]).collect::<Vec<_>>()
            );
        }
    }
}
