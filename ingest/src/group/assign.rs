//! Assignment strategies: who should own which partition, given the members' subscriptions.
//!
//! Pure functions. Each returns every subscribed partition to exactly one member subscribed to
//! its topic (none when no member subscribes), and is deterministic for the same input.
//! - `range`: per topic, members (by instance id when static, else member id) get contiguous
//!   ranges; the first `n % m` get one more (Kafka's RangeAssignor).
//! - `roundrobin`: all partitions in (topic, partition) order dealt out in turn to the members
//!   subscribed to them (Kafka's RoundRobinAssignor).
//! - `cooperative-sticky`: keeps every member's current partitions that are still valid, as far
//!   as balance allows, and places the rest on the least loaded members: a rebalance moves only
//!   the partitions that must move (Kafka's CooperativeStickyAssignor, KIP-848's "uniform").

use std::collections::{BTreeMap, BTreeSet};

/// A topic partition.
pub type Tp = (String, u32);

/// What an assignor knows about one member.
#[derive(Debug, Clone)]
pub struct MemberInput {
    pub member_id: String,
    /// The sort key: the instance id of a static member, else the member id.
    pub sort_key: String,
    /// Topics (resolved: they exist) the member subscribes to.
    pub topics: BTreeSet<String>,
    /// What it owns now (only the sticky strategy looks).
    pub owned: BTreeSet<Tp>,
}

/// The strategies a group can choose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    Range,
    RoundRobin,
    CooperativeSticky,
}

impl Strategy {
    pub const NAMES: [&'static str; 3] = ["range", "roundrobin", "cooperative-sticky"];

    pub fn parse(name: &str) -> Option<Strategy> {
        match name {
            "range" => Some(Strategy::Range),
            "roundrobin" => Some(Strategy::RoundRobin),
            "cooperative-sticky" => Some(Strategy::CooperativeSticky),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Strategy::Range => "range",
            Strategy::RoundRobin => "roundrobin",
            Strategy::CooperativeSticky => "cooperative-sticky",
        }
    }

    /// Eager strategies revoke every partition at a rebalance before anything is reassigned;
    /// the cooperative one revokes only what moves.
    pub fn is_eager(self) -> bool {
        !matches!(self, Strategy::CooperativeSticky)
    }

    /// The target assignment: member id → partitions. Every member appears (maybe empty).
    pub fn assign(
        self,
        members: &[MemberInput],
        partitions: &BTreeMap<String, u32>,
    ) -> BTreeMap<String, BTreeSet<Tp>> {
        let mut sorted: Vec<&MemberInput> = members.iter().collect();
        sorted.sort_by(|a, b| (&a.sort_key, &a.member_id).cmp(&(&b.sort_key, &b.member_id)));
        let mut out: BTreeMap<String, BTreeSet<Tp>> = members
            .iter()
            .map(|m| (m.member_id.clone(), BTreeSet::new()))
            .collect();
        match self {
            Strategy::Range => range(&sorted, partitions, &mut out),
            Strategy::RoundRobin => round_robin(&sorted, partitions, &mut out),
            Strategy::CooperativeSticky => sticky(&sorted, partitions, &mut out),
        }
        out
    }
}

fn range(
    members: &[&MemberInput],
    partitions: &BTreeMap<String, u32>,
    out: &mut BTreeMap<String, BTreeSet<Tp>>,
) {
    for (topic, &count) in partitions {
        let subs: Vec<&&MemberInput> = members
            .iter()
            .filter(|m| m.topics.contains(topic))
            .collect();
        if subs.is_empty() {
            continue;
        }
        let (each, extra) = (count / subs.len() as u32, count % subs.len() as u32);
        let mut next = 0;
        for (i, m) in subs.iter().enumerate() {
            let n = each + u32::from((i as u32) < extra);
            let set = out
                .get_mut(&m.member_id)
                .expect("every member has an entry");
            set.extend((next..next + n).map(|p| (topic.clone(), p)));
            next += n;
        }
    }
}

fn round_robin(
    members: &[&MemberInput],
    partitions: &BTreeMap<String, u32>,
    out: &mut BTreeMap<String, BTreeSet<Tp>>,
) {
    if members.is_empty() {
        return;
    }
    let mut turn = 0usize;
    for (topic, &count) in partitions {
        for p in 0..count {
            // The next member in turn that subscribes to the topic.
            for step in 0..members.len() {
                let m = members[(turn + step) % members.len()];
                if m.topics.contains(topic) {
                    out.get_mut(&m.member_id)
                        .expect("every member has an entry")
                        .insert((topic.clone(), p));
                    turn = turn + step + 1;
                    break;
                }
            }
        }
    }
}

fn sticky(
    members: &[&MemberInput],
    partitions: &BTreeMap<String, u32>,
    out: &mut BTreeMap<String, BTreeSet<Tp>>,
) {
    let all: Vec<Tp> = partitions
        .iter()
        .flat_map(|(t, &n)| (0..n).map(move |p| (t.clone(), p)))
        .collect();
    let eligible = |m: &MemberInput, tp: &Tp| m.topics.contains(&tp.0);
    let subscribed: Vec<&Tp> = all
        .iter()
        .filter(|tp| members.iter().any(|m| eligible(m, tp)))
        .collect();
    if members.is_empty() || subscribed.is_empty() {
        return;
    }
    // The most any member should hold when everyone could take anything.
    let quota = subscribed.len().div_ceil(members.len());
    let mut taken: BTreeSet<Tp> = BTreeSet::new();
    // 1. Keep what each member owns, valid and not kept by another, up to the quota.
    for m in members {
        let set = out
            .get_mut(&m.member_id)
            .expect("every member has an entry");
        for tp in &m.owned {
            if set.len() >= quota {
                break;
            }
            let exists = partitions.get(&tp.0).is_some_and(|&n| tp.1 < n);
            if exists && eligible(m, tp) && taken.insert(tp.clone()) {
                set.insert(tp.clone());
            }
        }
    }
    // 2. The rest goes to the least loaded eligible member.
    for tp in subscribed {
        if taken.contains(tp) {
            continue;
        }
        let best = members
            .iter()
            .filter(|m| eligible(m, tp))
            .min_by_key(|m| (out[&m.member_id].len(), &m.sort_key, &m.member_id))
            .expect("a subscribed partition has an eligible member");
        out.get_mut(&best.member_id)
            .expect("every member has an entry")
            .insert(tp.clone());
        taken.insert(tp.clone());
    }
    // 3. Even out what subscriptions made uneven: move one partition at a time from a member
    //    holding two or more above an eligible one. Bounded: each move lowers the spread.
    for _ in 0..taken.len() {
        let mut moved = false;
        'search: for from in members.iter().rev() {
            let from_len = out[&from.member_id].len();
            for to in members {
                if out[&to.member_id].len() + 2 > from_len {
                    continue;
                }
                let candidate = out[&from.member_id]
                    .iter()
                    .rev()
                    .find(|tp| eligible(to, tp))
                    .cloned();
                if let Some(tp) = candidate {
                    out.get_mut(&from.member_id).expect("entry").remove(&tp);
                    out.get_mut(&to.member_id).expect("entry").insert(tp);
                    moved = true;
                    break 'search;
                }
            }
        }
        if !moved {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, topics: &[&str], owned: &[(&str, u32)]) -> MemberInput {
        MemberInput {
            member_id: id.into(),
            sort_key: id.into(),
            topics: topics.iter().map(|t| t.to_string()).collect(),
            owned: owned.iter().map(|(t, p)| (t.to_string(), *p)).collect(),
        }
    }

    fn topics(list: &[(&str, u32)]) -> BTreeMap<String, u32> {
        list.iter().map(|(t, n)| (t.to_string(), *n)).collect()
    }

    fn check_complete(
        out: &BTreeMap<String, BTreeSet<Tp>>,
        members: &[MemberInput],
        parts: &BTreeMap<String, u32>,
    ) {
        let mut seen = BTreeSet::new();
        for (id, set) in out {
            let m = members.iter().find(|m| &m.member_id == id).unwrap();
            for tp in set {
                assert!(
                    m.topics.contains(&tp.0),
                    "{id} got {tp:?} it does not subscribe to"
                );
                assert!(seen.insert(tp.clone()), "{tp:?} assigned twice");
            }
        }
        for (t, &n) in parts {
            if members.iter().any(|m| m.topics.contains(t)) {
                for p in 0..n {
                    assert!(seen.contains(&(t.clone(), p)), "{t}/{p} unassigned");
                }
            }
        }
    }

    #[test]
    fn range_gives_contiguous_ranges_first_members_one_more() {
        let ms = [member("a", &["t"], &[]), member("b", &["t"], &[])];
        let parts = topics(&[("t", 5)]);
        let out = Strategy::Range.assign(&ms, &parts);
        check_complete(&out, &ms, &parts);
        let a: Vec<u32> = out["a"].iter().map(|tp| tp.1).collect();
        assert_eq!(a, vec![0, 1, 2]);
    }

    #[test]
    fn round_robin_deals_in_turn_and_skips_unsubscribed() {
        let ms = [
            member("a", &["t", "u"], &[]),
            member("b", &["u"], &[]),
            member("c", &["t", "u"], &[]),
        ];
        let parts = topics(&[("t", 4), ("u", 3)]);
        let out = Strategy::RoundRobin.assign(&ms, &parts);
        check_complete(&out, &ms, &parts);
        let sizes: Vec<usize> = out.values().map(BTreeSet::len).collect();
        assert!(
            sizes.iter().max().unwrap() - sizes.iter().min().unwrap() <= 2,
            "{out:?}"
        );
    }

    #[test]
    fn sticky_moves_only_what_must_move_when_a_member_joins() {
        let parts = topics(&[("t", 12)]);
        let before = Strategy::CooperativeSticky.assign(
            &[
                member("a", &["t"], &[]),
                member("b", &["t"], &[]),
                member("c", &["t"], &[]),
            ],
            &parts,
        );
        let owned = |id: &str| -> Vec<(String, u32)> { before[id].iter().cloned().collect() };
        let own = |id: &str| {
            let o = owned(id);
            MemberInput {
                owned: o.into_iter().collect(),
                ..member(id, &["t"], &[])
            }
        };
        let ms = [own("a"), own("b"), own("c"), member("d", &["t"], &[])];
        let after = Strategy::CooperativeSticky.assign(&ms, &parts);
        check_complete(&after, &ms, &parts);
        assert!(after.values().all(|s| s.len() == 3), "{after:?}");
        for id in ["a", "b", "c"] {
            assert!(
                after[id].is_subset(&before[id]),
                "{id} kept only its own partitions"
            );
        }
    }

    #[test]
    fn sticky_balances_uneven_subscriptions() {
        let ms = [
            member("a", &["t", "u"], &[("t", 0), ("t", 1), ("t", 2), ("u", 0)]),
            member("b", &["u"], &[]),
        ];
        let parts = topics(&[("t", 3), ("u", 3)]);
        let out = Strategy::CooperativeSticky.assign(&ms, &parts);
        check_complete(&out, &ms, &parts);
        assert_eq!(out["a"].len(), 3, "{out:?}");
        assert_eq!(out["b"].len(), 3, "{out:?}");
    }

    #[test]
    fn every_strategy_covers_every_partition_once() {
        for seed in 0..200u64 {
            let mut rng = fastrand::Rng::with_seed(seed);
            let names = ["t0", "t1", "t2"];
            let parts: BTreeMap<String, u32> = names
                .iter()
                .map(|t| (t.to_string(), rng.u32(0..9)))
                .collect();
            let ms: Vec<MemberInput> = (0..rng.usize(1..6))
                .map(|i| {
                    let subs: Vec<&str> = names.iter().copied().filter(|_| rng.bool()).collect();
                    let owned: Vec<(&str, u32)> = (0..rng.usize(0..5))
                        .map(|_| (names[rng.usize(0..3)], rng.u32(0..9)))
                        .collect();
                    member(&format!("m{i}"), &subs, &owned)
                })
                .collect();
            for s in [
                Strategy::Range,
                Strategy::RoundRobin,
                Strategy::CooperativeSticky,
            ] {
                let out = s.assign(&ms, &parts);
                check_complete(&out, &ms, &parts);
                assert_eq!(out, s.assign(&ms, &parts), "deterministic");
            }
        }
    }
}
