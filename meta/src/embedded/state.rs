//! The embedded backend's in-memory state machine.
//!
//! Every mutation happens in two steps: a [`Plan`] is computed from an immutable `&State`
//! (validating the request and producing the exact changes and their revisions), then, once the
//! plan is durable, [`State::apply`] installs it. Planning never mutates, so a failed disk
//! commit leaves memory untouched; applying never fails.
//!
//! Invariants:
//! - `revision` only grows; every change in a plan has a revision greater than the state's.
//! - A key attached to a lease is listed in exactly that lease's `keys`.
//! - `history` holds whole revisions, in order, all greater than `compacted`; the newest
//!   revision is never trimmed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::kv::{EventKind, KeyValue, LeaseId, Txn, TxnOp, TxnOpResponse, TxnResponse, WatchEvent};

/// One durable change, with the revision it happens at.
#[derive(Debug, Clone)]
pub(super) enum Change {
    Put(KeyValue),
    Delete { key: Vec<u8>, revision: i64 },
}

/// The changes one request makes; empty for reads and no-op writes.
#[derive(Debug, Default)]
pub(super) struct Plan {
    pub changes: Vec<Change>,
    /// Leases to forget (revoked or expired); their keys' deletes are in `changes`.
    pub revoked: Vec<LeaseId>,
    /// Store revision once the plan is applied.
    pub revision: i64,
}

impl Plan {
    pub fn noop(revision: i64) -> Self {
        Plan {
            revision,
            ..Plan::default()
        }
    }

    pub fn is_noop(&self) -> bool {
        self.changes.is_empty() && self.revoked.is_empty()
    }
}

#[derive(Debug)]
struct Lease {
    ttl: Duration,
    deadline: Instant,
    keys: BTreeSet<Vec<u8>>,
}

#[derive(Debug)]
pub(super) struct State {
    pub revision: i64,
    /// Watch history up to and including this revision is gone.
    pub compacted: i64,
    pub closed: bool,
    kvs: BTreeMap<Vec<u8>, KeyValue>,
    leases: HashMap<LeaseId, Lease>,
    next_lease: i64,
    history: VecDeque<WatchEvent>,
    history_limit: usize,
}

impl State {
    /// A state holding `kvs` at `revision`, with no history before it.
    pub fn new(
        revision: i64,
        kvs: BTreeMap<Vec<u8>, KeyValue>,
        compacted: i64,
        history_limit: usize,
    ) -> Self {
        State {
            revision,
            compacted,
            closed: false,
            kvs,
            leases: HashMap::new(),
            next_lease: 1,
            history: VecDeque::new(),
            history_limit: history_limit.max(1),
        }
    }

    // ---- transactions -------------------------------------------------------------------

    /// Evaluates `txn` and plans its writes.
    pub fn plan_txn(&self, txn: Txn, now: Instant, max_ops: usize) -> Result<(Plan, TxnResponse)> {
        let widest = txn
            .compares
            .len()
            .max(txn.success.len())
            .max(txn.failure.len());
        if widest > max_ops {
            return Err(Error::invalid(format!(
                "too many operations in txn request ({widest} > {max_ops})"
            )));
        }
        let succeeded = txn
            .compares
            .iter()
            .all(|c| c.evaluate(self.kvs.get(&c.key)));
        let ops = if succeeded { txn.success } else { txn.failure };
        check_branch(&ops)?;
        for op in &ops {
            if let TxnOp::Put {
                lease: Some(lease), ..
            } = op
            {
                self.live_lease(*lease, now)?;
            }
        }

        let rev = self.revision + 1;
        let mut view = Overlay::new(&self.kvs);
        let mut changes = Vec::new();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match op {
                TxnOp::Get { key } => TxnOpResponse::Get(view.get(&key).cloned()),
                TxnOp::Range { prefix, limit } => {
                    let (kvs, more) = view.range(&prefix, limit);
                    TxnOpResponse::Range { kvs, more }
                }
                TxnOp::Put { key, value, lease } => {
                    let prev = view.get(&key);
                    let kv = KeyValue {
                        create_revision: prev.map_or(rev, |p| p.create_revision),
                        version: prev.map_or(1, |p| p.version + 1),
                        mod_revision: rev,
                        key,
                        value,
                        lease,
                    };
                    view.set(kv.key.clone(), Some(kv.clone()));
                    changes.push(Change::Put(kv));
                    TxnOpResponse::Put
                }
                TxnOp::Delete { key } => {
                    let deleted = match view.get(&key) {
                        Some(_) => {
                            view.set(key.clone(), None);
                            changes.push(Change::Delete { key, revision: rev });
                            1
                        }
                        None => 0,
                    };
                    TxnOpResponse::Delete { deleted }
                }
                TxnOp::DeletePrefix { prefix } => {
                    let (doomed, _) = view.range(&prefix, None);
                    for kv in &doomed {
                        view.set(kv.key.clone(), None);
                        changes.push(Change::Delete {
                            key: kv.key.clone(),
                            revision: rev,
                        });
                    }
                    TxnOpResponse::Delete {
                        deleted: doomed.len() as u64,
                    }
                }
            };
            responses.push(response);
        }
        let revision = if changes.is_empty() {
            self.revision
        } else {
            rev
        };
        let plan = Plan {
            changes,
            revoked: Vec::new(),
            revision,
        };
        let response = TxnResponse {
            succeeded,
            responses,
            revision,
        };
        Ok((plan, response))
    }

    // ---- leases -------------------------------------------------------------------------

    fn live_lease(&self, id: LeaseId, now: Instant) -> Result<&Lease> {
        match self.leases.get(&id) {
            Some(lease) if lease.deadline > now => Ok(lease),
            _ => Err(Error::LeaseNotFound { lease: id }),
        }
    }

    pub fn grant(&mut self, ttl: Duration, now: Instant) -> LeaseId {
        let id = LeaseId(self.next_lease);
        self.next_lease += 1;
        self.leases.insert(
            id,
            Lease {
                ttl,
                deadline: now + ttl,
                keys: BTreeSet::new(),
            },
        );
        id
    }

    pub fn keep_alive(&mut self, id: LeaseId, now: Instant) -> Result<Duration> {
        match self.leases.get_mut(&id) {
            Some(lease) if lease.deadline > now => {
                lease.deadline = now + lease.ttl;
                Ok(lease.ttl)
            }
            _ => Err(Error::LeaseNotFound { lease: id }),
        }
    }

    /// Deletes the lease's keys at one new revision.
    pub fn plan_revoke(&self, id: LeaseId, now: Instant) -> Result<Plan> {
        let lease = self.live_lease(id, now)?;
        let mut plan = Plan::noop(self.revision);
        self.plan_lease_end(id, lease, &mut plan);
        Ok(plan)
    }

    /// Ends every lease whose deadline has passed, each at its own revision; `None` if none.
    pub fn plan_expiry(&self, now: Instant) -> Option<Plan> {
        let mut expired: Vec<(Instant, LeaseId)> = self
            .leases
            .iter()
            .filter(|(_, lease)| lease.deadline <= now)
            .map(|(id, lease)| (lease.deadline, *id))
            .collect();
        if expired.is_empty() {
            return None;
        }
        expired.sort();
        let mut plan = Plan::noop(self.revision);
        for (_, id) in expired {
            let lease = &self.leases[&id];
            tracing::debug!(lease = %id, keys = lease.keys.len(), "lease expired");
            self.plan_lease_end(id, lease, &mut plan);
        }
        Some(plan)
    }

    fn plan_lease_end(&self, id: LeaseId, lease: &Lease, plan: &mut Plan) {
        if !lease.keys.is_empty() {
            plan.revision += 1;
            for key in &lease.keys {
                plan.changes.push(Change::Delete {
                    key: key.clone(),
                    revision: plan.revision,
                });
            }
        }
        plan.revoked.push(id);
    }

    /// The earliest lease deadline, if any lease exists.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.deadline).min()
    }

    /// Deletes every key attached to a lease (at one revision): used when reopening a store,
    /// since leases do not outlive the process that granted them.
    pub fn plan_drop_leased_keys(&self) -> Plan {
        let rev = self.revision + 1;
        let changes: Vec<Change> = self
            .kvs
            .values()
            .filter(|kv| kv.lease.is_some())
            .map(|kv| Change::Delete {
                key: kv.key.clone(),
                revision: rev,
            })
            .collect();
        let revision = if changes.is_empty() {
            self.revision
        } else {
            rev
        };
        Plan {
            changes,
            revoked: Vec::new(),
            revision,
        }
    }

    // ---- applying -----------------------------------------------------------------------

    pub fn apply(&mut self, plan: Plan) {
        debug_assert!(plan.revision >= self.revision, "revisions never go back");
        for change in plan.changes {
            match change {
                Change::Put(kv) => {
                    if let Some(old) = self.kvs.get(&kv.key) {
                        let old_lease = old.lease;
                        self.detach(old_lease, &kv.key);
                    }
                    if let Some(lease) = kv.lease.and_then(|id| self.leases.get_mut(&id)) {
                        lease.keys.insert(kv.key.clone());
                    }
                    self.history.push_back(WatchEvent {
                        kind: EventKind::Put,
                        kv: kv.clone(),
                        revision: kv.mod_revision,
                    });
                    self.kvs.insert(kv.key.clone(), kv);
                }
                Change::Delete { key, revision } => {
                    if let Some(old) = self.kvs.remove(&key) {
                        self.detach(old.lease, &key);
                        self.history.push_back(WatchEvent {
                            kind: EventKind::Delete,
                            kv: tombstone(key, revision),
                            revision,
                        });
                    }
                }
            }
        }
        for id in plan.revoked {
            self.leases.remove(&id);
        }
        self.revision = plan.revision;
        self.trim_history();
    }

    fn detach(&mut self, lease: Option<LeaseId>, key: &[u8]) {
        if let Some(lease) = lease.and_then(|id| self.leases.get_mut(&id)) {
            lease.keys.remove(key);
        }
    }

    fn trim_history(&mut self) {
        while self.history.len() > self.history_limit {
            let Some(oldest) = self.history.front().map(|e| e.revision) else {
                break;
            };
            if oldest == self.revision {
                break; // never drop the newest revision: live watchers still need it
            }
            while self.history.front().is_some_and(|e| e.revision == oldest) {
                self.history.pop_front();
            }
            self.compacted = oldest;
        }
    }

    // ---- watches ------------------------------------------------------------------------

    /// Appends events under `prefix` with revision >= `from` to `out`.
    pub fn collect_events(&self, prefix: &[u8], from: i64, out: &mut VecDeque<WatchEvent>) {
        let start = self.history.partition_point(|e| e.revision < from);
        out.extend(
            self.history
                .range(start..)
                .filter(|e| e.kv.key.starts_with(prefix))
                .cloned(),
        );
    }

    #[cfg(test)]
    pub fn kvs(&self) -> &BTreeMap<Vec<u8>, KeyValue> {
        &self.kvs
    }
}

/// How etcd reports a deleted key in a watch event.
fn tombstone(key: Vec<u8>, revision: i64) -> KeyValue {
    KeyValue {
        key,
        value: Bytes::new(),
        create_revision: 0,
        mod_revision: revision,
        version: 0,
        lease: None,
    }
}

/// etcd's rules for one branch: no key put twice, no put inside a deleted range.
fn check_branch(ops: &[TxnOp]) -> Result<()> {
    let mut puts = BTreeSet::new();
    let put_keys = ops.iter().filter_map(|op| match op {
        TxnOp::Put { key, .. } => Some(key.as_slice()),
        _ => None,
    });
    for key in put_keys {
        if !puts.insert(key) {
            return Err(Error::invalid("duplicate key given in txn request"));
        }
    }
    for op in ops {
        let covers = |put: &&[u8]| match op {
            TxnOp::Delete { key } => *put == key.as_slice(),
            TxnOp::DeletePrefix { prefix } => put.starts_with(prefix),
            _ => false,
        };
        if puts.iter().any(covers) {
            return Err(Error::invalid("duplicate key given in txn request"));
        }
    }
    Ok(())
}

fn prefixed<'a, V>(
    map: &'a BTreeMap<Vec<u8>, V>,
    prefix: &'a [u8],
) -> impl Iterator<Item = (&'a Vec<u8>, &'a V)> {
    map.range::<[u8], _>((Bound::Included(prefix), Bound::Unbounded))
        .take_while(move |(k, _)| k.starts_with(prefix))
}

/// The store as seen from inside a txn: the committed keys plus the txn's own writes.
struct Overlay<'a> {
    base: &'a BTreeMap<Vec<u8>, KeyValue>,
    /// `None` marks a key deleted by the txn.
    changes: BTreeMap<Vec<u8>, Option<KeyValue>>,
}

impl<'a> Overlay<'a> {
    fn new(base: &'a BTreeMap<Vec<u8>, KeyValue>) -> Self {
        Overlay {
            base,
            changes: BTreeMap::new(),
        }
    }

    fn get(&self, key: &[u8]) -> Option<&KeyValue> {
        match self.changes.get(key) {
            Some(changed) => changed.as_ref(),
            None => self.base.get(key),
        }
    }

    fn set(&mut self, key: Vec<u8>, kv: Option<KeyValue>) {
        self.changes.insert(key, kv);
    }

    fn range(&self, prefix: &[u8], limit: Option<usize>) -> (Vec<KeyValue>, bool) {
        let limit = limit.unwrap_or(usize::MAX);
        if self.changes.is_empty() {
            let mut matching = prefixed(self.base, prefix).map(|(_, kv)| kv);
            let kvs: Vec<KeyValue> = matching.by_ref().take(limit).cloned().collect();
            return (kvs, matching.next().is_some());
        }
        let mut merged: BTreeMap<&[u8], &KeyValue> = prefixed(self.base, prefix)
            .map(|(k, v)| (k.as_slice(), v))
            .collect();
        for (key, change) in prefixed(&self.changes, prefix) {
            match change {
                Some(kv) => merged.insert(key.as_slice(), kv),
                None => merged.remove(key.as_slice()),
            };
        }
        let more = merged.len() > limit;
        let kvs = merged.into_values().take(limit).cloned().collect();
        (kvs, more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> State {
        State::new(1, BTreeMap::new(), 0, 4)
    }

    fn apply_txn(s: &mut State, txn: Txn) -> TxnResponse {
        let (plan, resp) = s.plan_txn(txn, Instant::now(), 128).expect("txn");
        s.apply(plan);
        resp
    }

    #[test]
    fn history_keeps_whole_revisions_and_tracks_compaction() {
        let mut s = state();
        for i in 0..3 {
            let ops = (0..3).map(|j| TxnOp::put(format!("k{i}{j}"), "v", None));
            apply_txn(&mut s, Txn::new().and_then(ops));
        }
        // limit 4: only the newest revision (3 events) fits.
        let mut out = VecDeque::new();
        s.collect_events(b"", 0, &mut out);
        assert_eq!(out.len(), 3);
        assert!(out.iter().all(|e| e.revision == 4));
        assert_eq!(s.compacted, 3);

        // A revision bigger than the limit is still kept whole when it is the newest.
        let ops = (0..6).map(|j| TxnOp::put(format!("big{j}"), "v", None));
        apply_txn(&mut s, Txn::new().and_then(ops));
        out.clear();
        s.collect_events(b"", 0, &mut out);
        assert_eq!(out.len(), 6);
        assert_eq!(s.compacted, 4);
    }

    #[test]
    fn overlay_range_merges_own_writes() {
        let mut s = state();
        apply_txn(
            &mut s,
            Txn::new().and_then([TxnOp::put("a/1", "x", None), TxnOp::put("a/3", "x", None)]),
        );
        let resp = apply_txn(
            &mut s,
            Txn::new().and_then([
                TxnOp::put("a/2", "y", None),
                TxnOp::delete("a/1"),
                TxnOp::range("a/", Some(1)),
                TxnOp::range("a/", None),
            ]),
        );
        let keys = |r: &TxnOpResponse| match r {
            TxnOpResponse::Range { kvs, more } => (
                kvs.iter().map(|kv| kv.key.clone()).collect::<Vec<_>>(),
                *more,
            ),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(keys(&resp.responses[2]), (vec![b"a/2".to_vec()], true));
        assert_eq!(
            keys(&resp.responses[3]),
            (vec![b"a/2".to_vec(), b"a/3".to_vec()], false)
        );
        assert_eq!(s.kvs().len(), 2);
    }

    #[test]
    fn branch_conflicts_are_rejected() {
        let s = state();
        let now = Instant::now();
        let dup = Txn::new().and_then([TxnOp::put("k", "1", None), TxnOp::put("k", "2", None)]);
        assert!(matches!(
            s.plan_txn(dup, now, 128),
            Err(Error::InvalidArgument(_))
        ));
        let covered = Txn::new().and_then([TxnOp::delete_prefix("k"), TxnOp::put("k2", "", None)]);
        assert!(matches!(
            s.plan_txn(covered, now, 128),
            Err(Error::InvalidArgument(_))
        ));
        // The branch that does not run is not checked.
        let other = Txn::new()
            .when([crate::kv::Compare::absent("k")])
            .or_else([TxnOp::put("k", "1", None), TxnOp::put("k", "2", None)]);
        assert!(s.plan_txn(other, now, 128).is_ok());
        let wide = Txn::new().and_then((0..3).map(|i| TxnOp::get(format!("{i}"))));
        assert!(matches!(
            s.plan_txn(wide, now, 2),
            Err(Error::InvalidArgument(_))
        ));
    }
}
