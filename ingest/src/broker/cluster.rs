//! Which node leads which partition, and moving leadership between nodes.
//!
//! Every node runs the same controller: it watches the live nodes, the topics and the leaders in
//! `meta` (watches only wake it; it then re-reads the whole state, so a missed event costs
//! nothing), computes the same [`assign`]ment from the same inputs, and acts on its own share:
//! - a partition assigned to it with no leader: acquire leadership (a new epoch), open it in the
//!   tier (which fences the manifest with that epoch), then accept appends;
//! - a partition it leads but is assigned elsewhere (a node joined): hand it off — close the
//!   append gate, seal and upload everything, close it, then resign, so the next leader starts
//!   from a manifest that holds every acknowledged record;
//! - a partition it believes it leads but `meta` says otherwise (lease lost, topic deleted):
//!   stop at once, without uploading — a newer epoch may already own the manifest.
//!
//! A dead node's leaderships vanish with its lease; the others then see those partitions without
//! a leader and take them: failover within the lease TTL plus one reconciliation.
//!
//! A node whose lease lapses by its own clock (metadata store unreachable, process paused) stops
//! appending before the lease can have expired in the store. Once the store answers again:
//! - the lease still exists (an etcd restart keeps leases and restarts their TTLs): it renews
//!   it and goes on leading everything it led, hot tails included;
//! - the lease is gone: it steps down from everything (hot tails stay on disk) and rejoins under
//!   a new lease. For a grace period (a TTL, at least 5 s) it then takes only leaderless
//!   partitions it led before, whether assigned to it or not, and hands nothing off: when every
//!   node lost its lease at once (etcd unreachable for longer than a TTL), each retakes its own
//!   partitions with the hot tails it holds instead of one node taking over from what was
//!   uploaded.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use meta::{NodeId, TopicMeta};

use super::{Broker, Led, PartitionKey, storage_name};
use crate::error::{Error, Result};

/// How long a hand-off may take to seal and upload before it is abandoned (and retried later).
const HANDOFF_UPLOAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Partitions opened at once when taking over many.
const TAKE_CONCURRENCY: usize = 8;

/// After a partition fails to open here, the first wait before trying again; it doubles up to
/// [`TAKE_BACKOFF_MAX`].
const TAKE_BACKOFF_MIN: Duration = Duration::from_millis(500);
const TAKE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why a partition leaves this node without a hand-off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Retire {
    /// Leadership is gone: close, keep local data (reconciled if it comes back).
    Lost,
    /// The topic is gone: close and delete its data.
    Delete,
}

/// The leader of every partition: each partition ranks the nodes by a hash of (partition, node)
/// (rendezvous hashing, so most partitions keep their node when others come and go) and takes
/// the best-ranked node that has fewer than ⌈partitions / nodes⌉, so the load is even. A node in
/// `passed_over` for a partition (it said it cannot open it now) is skipped for that partition
/// while another node can take it, past the even share if need be. Every node computes the same
/// answer from the same sorted inputs. The hash is part of the cluster protocol: nodes of one
/// cluster must agree on it.
pub fn assign(
    parts: &[PartitionKey],
    nodes: &[NodeId],
    passed_over: &std::collections::HashSet<(PartitionKey, NodeId)>,
) -> HashMap<PartitionKey, NodeId> {
    let mut out = HashMap::with_capacity(parts.len());
    if nodes.is_empty() {
        return out;
    }
    let cap = parts.len().div_ceil(nodes.len());
    let mut load: HashMap<NodeId, usize> = HashMap::new();
    let mut ranked = nodes.to_vec();
    for part in parts {
        let base = fnv1a(part.0.as_bytes()) ^ u64::from(part.1).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        ranked.sort_by_key(|&n| (std::cmp::Reverse(mix(base ^ mix(n))), n));
        let able = |n: &NodeId| !passed_over.contains(&(part.clone(), *n));
        let room = |n: &NodeId| load.get(n).copied().unwrap_or(0) < cap;
        let node = ranked
            .iter()
            .copied()
            .find(|n| able(n) && room(n))
            .or_else(|| ranked.iter().copied().find(able))
            .or_else(|| ranked.iter().copied().find(room))
            .expect("capacity covers every partition");
        *load.entry(node).or_default() += 1;
        out.insert(part.clone(), node);
    }
    out
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// splitmix64's finalizer.
fn mix(mut x: u64) -> u64 {
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Broker {
    pub(super) fn spawn_controller(&self) {
        let this = self.clone();
        tokio::spawn(async move { this.control_loop().await });
    }

    async fn control_loop(&self) {
        let every = (self.inner.cfg.lease_ttl / 3).min(Duration::from_secs(2));
        let mut watch = None;
        loop {
            if self.inner.cancel.is_cancelled() {
                return;
            }
            if watch.is_none() {
                match self.inner.meta.watch_cluster().await {
                    Ok(w) => watch = Some(w),
                    Err(e) => tracing::warn!(error = %e, "cannot watch the cluster; polling"),
                }
            }
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "reconciling partition leadership failed; retrying");
            }
            let changed = async {
                match watch.as_mut() {
                    Some(w) => w.next().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = self.inner.cancel.cancelled() => return,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep(every) => {}
                event = changed => match event {
                    Some(Ok(())) => {
                        // Changes come in bursts (a node's lease takes all its keys along).
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        if let Some(w) = watch.as_mut() {
                            while let Some(Some(Ok(()))) = futures::FutureExt::now_or_never(w.next()) {}
                        }
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "cluster watch failed; re-creating it");
                        watch = None;
                    }
                    None => watch = None,
                },
            }
        }
    }

    /// One pass: make this node lead exactly its share of the partitions.
    pub(super) async fn reconcile(&self) -> Result<()> {
        let _one = self.inner.reconciling.lock().await;
        if self.inner.cancel.is_cancelled() {
            return Ok(());
        }
        let me = self.inner.cfg.node_id;
        // Lapsed by our own clock (appends have stopped): the store may still hold the lease.
        // An etcd restart keeps leases and restarts their TTLs, so renewing it then keeps every
        // leadership and its hot tail; only a lease the store let go means stepping down.
        if self.lease_lapsed() && !super::renew_lease(&self.inner).await? {
            self.lost_lease("the node's lease expired in the metadata store")
                .await?;
        }
        let mut nodes = self.inner.meta.list_nodes().await?;
        if !nodes
            .iter()
            .any(|n| n.node_id == me && n.addr == self.inner.cfg.advertised_addr)
        {
            self.lost_lease("the node's registration is gone (its lease expired)")
                .await?;
            nodes = self.inner.meta.list_nodes().await?;
        }
        let topics = self.inner.meta.list_topics().await?;
        let snapshot = self.inner.meta.list_leaders().await?;
        let leaders: HashMap<PartitionKey, meta::Leader> = snapshot
            .leaders
            .iter()
            .map(|l| ((l.topic.clone(), l.partition), l.leader))
            .collect();
        *self.inner.nodes.write().expect("nodes lock poisoned") =
            nodes.iter().map(|n| (n.node_id, n.addr.clone())).collect();
        *self.inner.leaders.write().expect("leaders lock poisoned") = leaders
            .iter()
            .map(|(k, l)| (k.clone(), l.node_id))
            .collect();
        let by_name: HashMap<String, TopicMeta> =
            topics.into_iter().map(|t| (t.name.clone(), t)).collect();
        *self.inner.topics.write().expect("topics lock poisoned") = by_name.clone();

        let mut parts: Vec<PartitionKey> = by_name
            .values()
            .flat_map(|t| (0..t.partitions()).map(|p| (t.name.clone(), p)))
            .collect();
        parts.sort();
        let live: Vec<NodeId> = nodes.iter().map(|n| n.node_id).collect();
        let now = super::now_ms();
        let passed_over = snapshot
            .unable
            .iter()
            .filter(|u| u.until_ms > now)
            .map(|u| ((u.topic.clone(), u.partition), u.node_id))
            .collect();
        let owners = assign(&parts, &live, &passed_over);

        // Just back from a lost lease: at first, retake only what we led before (its hot tail is
        // here), assigned to us or not, and leave the rest to the nodes that led it, which are
        // likely rejoining too. Hand-offs wait until then as well.
        let rejoined = {
            let mut r = self.inner.rejoined.lock().expect("rejoined lock poisoned");
            if r.as_ref()
                .is_some_and(|(until, _)| Instant::now() >= *until)
            {
                *r = None;
            }
            r.clone()
        };
        let held = self.held();
        let mut hand_offs = Vec::new();
        for ((topic, p), led) in held {
            let current = by_name.get(&topic).map(storage_name);
            if current.as_deref() != Some(led.storage.as_str()) {
                self.retire(&topic, p, &led, Retire::Delete).await?;
                continue;
            }
            let key = (topic, p);
            let ours = leaders
                .get(&key)
                .is_some_and(|l| l.node_id == me && l.epoch == led.epoch);
            if !ours {
                self.retire(&key.0, p, &led, Retire::Lost).await?;
                continue;
            }
            if let Some(since) = self.inner.tier.reopen_pending_since(&led.storage, p)
                && since.elapsed() >= self.inner.cfg.reopen_give_up
            {
                self.give_up(&key, &led, since.elapsed()).await;
                continue;
            }
            // Settings changed since the partition was taken apply at once.
            if let Some(t) = by_name.get(&key.0)
                && let Err(e) =
                    self.inner
                        .tier
                        .set_cold_retention(&led.storage, p, cold_policy(&t.config))
            {
                tracing::debug!(topic = key.0, partition = p, error = %e, "applying cold settings");
            }
            if owners.get(&key) != Some(&me) && rejoined.is_none() {
                hand_offs.push(self.hand_off(key, led));
            }
        }
        let takes: Vec<_> = parts
            .iter()
            .filter(|k| match &rejoined {
                Some((_, before)) => before.contains(*k),
                None => owners.get(*k) == Some(&me),
            })
            .filter(|k| !leaders.contains_key(*k))
            .filter(|k| self.led(&k.0, k.1).is_none())
            .filter(|k| {
                self.inner
                    .take_backoff
                    .lock()
                    .expect("backoff lock poisoned")
                    .get(*k)
                    .is_none_or(|(not_before, _)| Instant::now() >= *not_before)
            })
            .map(|(topic, p)| self.take(&by_name[topic], *p))
            .collect();
        let taken = futures::stream::iter(takes)
            .buffer_unordered(TAKE_CONCURRENCY)
            .collect::<Vec<_>>();
        let (_, taken) = futures::join!(futures::future::join_all(hand_offs), taken);
        taken.into_iter().collect()
    }

    /// Acquires leadership of a partition and opens it. Losing the race to another node is not
    /// an error.
    async fn take(&self, t: &TopicMeta, p: u32) -> Result<()> {
        let inner = &self.inner;
        let lease = *inner.lease.lock().expect("lease lock poisoned");
        let epoch = match inner
            .meta
            .acquire_leadership(&t.name, p, inner.cfg.node_id, lease)
            .await
        {
            Ok(e) => e,
            Err(meta::Error::LeaderExists { .. }) => return Ok(()),
            Err(e) => return Err(e.into()),
        };
        let storage = storage_name(t);
        let opened = async {
            inner.tier.open_partition(&storage, p, epoch).await?;
            inner
                .tier
                .set_cold_retention(&storage, p, cold_policy(&t.config))
        }
        .await;
        let key = (t.name.clone(), p);
        if let Err(e) = opened {
            let delay = {
                let mut backoff = inner.take_backoff.lock().expect("backoff lock poisoned");
                let delay = backoff
                    .get(&key)
                    .map_or(TAKE_BACKOFF_MIN, |(_, d)| (*d * 2).min(TAKE_BACKOFF_MAX));
                backoff.insert(key.clone(), (Instant::now() + delay, delay));
                delay
            };
            tracing::warn!(topic = t.name, partition = p, epoch, error = %e, retry_in = ?delay,
                "cannot open the partition; resigning so it can be retried");
            if let Err(c) = inner.tier.close_partition(&storage, p).await {
                tracing::warn!(topic = t.name, partition = p, error = %c, "closing after a failed open");
            }
            if let Err(r) = inner.meta.resign_leadership(&t.name, p, epoch).await {
                // The lease takes the leader key along when it ends.
                tracing::warn!(topic = t.name, partition = p, error = %r, "resigning after a failed open");
            }
            self.pass_over(&key, delay, &format!("cannot open it: {e}"))
                .await;
            return Err(e.into());
        }
        inner
            .take_backoff
            .lock()
            .expect("backoff lock poisoned")
            .remove(&key);
        let was_passed_over = inner
            .passed_over
            .lock()
            .expect("passed-over lock poisoned")
            .remove(&key);
        if was_passed_over
            && let Err(e) = inner.meta.clear_unable(&t.name, p, inner.cfg.node_id).await
        {
            tracing::warn!(topic = t.name, partition = p, error = %e,
                "could not take back the word that this node cannot open the partition; it expires");
        }
        inner.metrics.leadership_changed();
        inner.led.write().expect("led lock poisoned").insert(
            (t.name.clone(), p),
            Arc::new(Led {
                epoch,
                storage,
                open: Arc::new(tokio::sync::RwLock::new(true)),
            }),
        );
        inner
            .leaders
            .write()
            .expect("leaders lock poisoned")
            .insert((t.name.clone(), p), inner.cfg.node_id);
        tracing::info!(topic = t.name, partition = p, epoch, "leading partition");
        Ok(())
    }

    /// Hands a partition to the node it is assigned to: no more appends, everything uploaded
    /// and committed, closed, resigned. If the upload does not finish in time (object store
    /// down), appends resume and a later pass tries again.
    async fn hand_off(&self, key: PartitionKey, led: Arc<Led>) {
        let (topic, p) = (&key.0, key.1);
        *led.open.write().await = false;
        let flushed = tokio::time::timeout(
            HANDOFF_UPLOAD_TIMEOUT,
            self.inner.tier.flush(&led.storage, p),
        )
        .await;
        match flushed {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(topic, partition = p, error = %e, "hand-off upload failed; keeping the partition");
                *led.open.write().await = true;
                return;
            }
            Err(_) => {
                tracing::warn!(
                    topic,
                    partition = p,
                    "hand-off upload timed out; keeping the partition"
                );
                *led.open.write().await = true;
                return;
            }
        }
        if let Err(e) = self.inner.tier.close_partition(&led.storage, p).await {
            tracing::warn!(topic, partition = p, error = %e, "closing a handed-off partition");
        }
        self.inner
            .led
            .write()
            .expect("led lock poisoned")
            .remove(&key);
        self.inner.metrics.leadership_changed();
        match self.inner.meta.resign_leadership(topic, p, led.epoch).await {
            Ok(_) => tracing::info!(topic, partition = p, epoch = led.epoch, "handed off"),
            // The lease will take the leader key along when it ends.
            Err(e) => tracing::warn!(topic, partition = p, error = %e, "resigning after hand-off"),
        }
    }

    /// Says in `meta` that this node cannot open `key` for the next `for_how_long`, so that
    /// every node's assignment hands it to another node meanwhile (under this node's lease: the
    /// word goes with the node).
    async fn pass_over(&self, key: &PartitionKey, for_how_long: Duration, why: &str) {
        let inner = &self.inner;
        let lease = *inner.lease.lock().expect("lease lock poisoned");
        let word = meta::Unable {
            topic: key.0.clone(),
            partition: key.1,
            node_id: inner.cfg.node_id,
            until_ms: super::now_ms()
                .saturating_add(i64::try_from(for_how_long.as_millis()).unwrap_or(i64::MAX)),
            reason: why.to_string(),
        };
        match inner.meta.mark_unable(&word, lease).await {
            Ok(()) => {
                inner
                    .passed_over
                    .lock()
                    .expect("passed-over lock poisoned")
                    .insert(key.clone());
                inner.wake.notify_one();
            }
            Err(e) => tracing::warn!(topic = key.0, partition = key.1, error = %e,
                "could not tell the cluster to pass this node over for the partition"),
        }
    }

    /// A partition whose reopen (after a failed fsync) keeps failing here: stop leading it and
    /// have the cluster pass this node over for it, so another node serves it instead of
    /// clients being sent NOT_LEADER here forever. What its hot tail held that was not uploaded
    /// stays on this disk.
    async fn give_up(&self, key: &PartitionKey, led: &Led, failing_for: Duration) {
        tracing::error!(
            topic = key.0,
            partition = key.1,
            epoch = led.epoch,
            ?failing_for,
            "the partition cannot be reopened here; handing it to another node"
        );
        if let Err(e) = self.retire(&key.0, key.1, led, Retire::Lost).await {
            tracing::warn!(topic = key.0, partition = key.1, error = %e, "closing a partition given up");
        }
        if let Err(e) = self
            .inner
            .meta
            .resign_leadership(&key.0, key.1, led.epoch)
            .await
        {
            tracing::warn!(topic = key.0, partition = key.1, error = %e, "resigning a partition given up");
        }
        let delay = self.inner.cfg.reopen_give_up.max(TAKE_BACKOFF_MAX);
        self.inner
            .take_backoff
            .lock()
            .expect("backoff lock poisoned")
            .insert(key.clone(), (Instant::now() + delay, delay));
        self.pass_over(key, delay, "its reopen after a failed fsync keeps failing")
            .await;
    }

    /// Stops leading a partition without uploading.
    pub(super) async fn retire(&self, topic: &str, p: u32, led: &Led, how: Retire) -> Result<()> {
        *led.open.write().await = false;
        self.inner
            .led
            .write()
            .expect("led lock poisoned")
            .remove(&(topic.to_string(), p));
        self.inner.metrics.leadership_changed();
        match how {
            Retire::Lost => {
                tracing::warn!(
                    topic,
                    partition = p,
                    epoch = led.epoch,
                    "lost leadership; closing"
                );
                self.inner.tier.close_partition(&led.storage, p).await?;
            }
            Retire::Delete => {
                self.inner.tier.remove_partition(&led.storage, p).await?;
            }
        }
        Ok(())
    }

    /// The partitions this node leads now.
    fn held(&self) -> Vec<(PartitionKey, Arc<Led>)> {
        self.inner
            .led
            .read()
            .expect("led lock poisoned")
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The lease is gone, and with it every leadership: step down from all of them (keeping
    /// their hot tails on disk) and rejoin under a new lease. For a grace period the node
    /// retakes only what it led (see [`Broker::reconcile`]).
    async fn lost_lease(&self, why: &str) -> Result<()> {
        let held = self.held();
        if !held.is_empty() {
            tracing::warn!(
                partitions = held.len(),
                why,
                "stepping down from every partition"
            );
        }
        let mut before = std::collections::HashSet::new();
        for ((topic, p), led) in held {
            if let Err(e) = self.retire(&topic, p, &led, Retire::Lost).await {
                tracing::warn!(topic, partition = p, error = %e, "closing while stepping down");
            }
            before.insert((topic, p));
        }
        let rejoined = self.rejoin().await;
        // The grace period starts once the node is back (or failed to be: the set is kept for
        // the next attempt). Partitions from an earlier loss not retaken yet stay ours to retake.
        let mut r = self.inner.rejoined.lock().expect("rejoined lock poisoned");
        if let Some((_, earlier)) = r.take() {
            before.extend(earlier);
        }
        *r = Some((Instant::now() + self.rejoin_grace(), before));
        rejoined
    }

    /// How long a node back from a lost lease leaves other nodes' partitions alone: long
    /// enough for them to notice the loss by their own clocks and rejoin too. It delays taking
    /// over from nodes that died meanwhile by as much.
    fn rejoin_grace(&self) -> Duration {
        self.inner.cfg.lease_ttl.max(Duration::from_secs(5))
    }

    /// Registers again under a new lease (the old one is revoked first, in case it is still
    /// alive: its leader keys must not linger).
    async fn rejoin(&self) -> Result<()> {
        let inner = &self.inner;
        let old = *inner.lease.lock().expect("lease lock poisoned");
        match inner.meta.kv().revoke_lease(old).await {
            Ok(()) | Err(meta::Error::LeaseNotFound { .. }) => {}
            Err(e) => return Err(Error::Meta(e)),
        }
        let granted_at = Instant::now();
        let lease = inner.meta.kv().grant_lease(inner.cfg.lease_ttl).await?;
        inner.meta.register(&inner.cfg.node_info(), lease).await?;
        *inner.lease.lock().expect("lease lock poisoned") = lease;
        *inner.lease_valid_until.lock().expect("lease lock poisoned") =
            granted_at + inner.cfg.lease_ttl;
        tracing::info!(node_id = inner.cfg.node_id, lease = %lease, "rejoined the cluster");
        Ok(())
    }
}

/// What a topic's settings ask of its partitions' cold tier: retention by age and size when
/// `cleanup.policy` has `delete`, key compaction when it has `compact`.
pub(crate) fn cold_policy(c: &meta::TopicConfig) -> tier::ColdRetention {
    let deletes = c.deletes();
    tier::ColdRetention {
        age: c
            .retention_ms
            .filter(|_| deletes)
            .map(|ms| Duration::from_millis(ms.get())),
        bytes: c.retention_bytes.filter(|_| deletes),
        compact: c.compacted().then(|| tier::KeyCompaction {
            min_lag: Duration::from_millis(c.min_compaction_lag_ms()),
            delete_retention: Duration::from_millis(c.delete_retention_ms()),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(topics: &[(&str, u32)]) -> Vec<PartitionKey> {
        let mut v: Vec<PartitionKey> = topics
            .iter()
            .flat_map(|(t, n)| (0..*n).map(move |p| (t.to_string(), p)))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn assignment_is_even_and_covers_everything() {
        for nodes in 1..=5u64 {
            let ids: Vec<NodeId> = (1..=nodes).collect();
            let ps = parts(&[("orders", 6), ("clicks", 7), ("a", 1)]);
            let a = assign(&ps, &ids, &Default::default());
            assert_eq!(a.len(), ps.len());
            let cap = ps.len().div_ceil(ids.len());
            for n in &ids {
                let load = a.values().filter(|&&x| x == *n).count();
                assert!(load <= cap, "node {n} has {load} > {cap}");
                assert!(load + 1 >= ps.len() / ids.len(), "node {n} has only {load}");
            }
        }
    }

    #[test]
    fn assignment_is_deterministic_and_mostly_stable() {
        let ps = parts(&[("orders", 60)]);
        let none = Default::default();
        let three = assign(&ps, &[1, 2, 3], &none);
        assert_eq!(three, assign(&ps, &[3, 1, 2], &none));
        let four = assign(&ps, &[1, 2, 3, 4], &none);
        let moved = ps.iter().filter(|k| three[*k] != four[*k]).count();
        // A fourth node should take about a quarter, not reshuffle everything.
        assert!(moved <= 30, "{moved} of 60 partitions moved");
        assert!(ps.iter().filter(|k| four[*k] == 4).count() == 15);
    }

    #[test]
    fn no_nodes_no_assignment() {
        assert!(assign(&parts(&[("t", 3)]), &[], &Default::default()).is_empty());
    }

    /// A node passed over for a partition does not get it while another node can take it, even
    /// past the even share; nothing else moves; with every node passed over it is assigned as
    /// usual.
    #[test]
    fn a_passed_over_node_is_skipped_for_that_partition_only() {
        let ps = parts(&[("orders", 6)]);
        let nodes = [1, 2, 3];
        let before = assign(&ps, &nodes, &Default::default());
        let victim = ps[0].clone();
        let owner = before[&victim];
        let passed: std::collections::HashSet<_> = [(victim.clone(), owner)].into();
        let after = assign(&ps, &nodes, &passed);
        assert_ne!(after[&victim], owner);
        assert_eq!(after.len(), ps.len());
        let all: std::collections::HashSet<_> =
            nodes.iter().map(|n| (victim.clone(), *n)).collect();
        assert_eq!(assign(&ps, &nodes, &all)[&victim], owner);
        let single: std::collections::HashSet<_> = [(victim.clone(), 7)].into();
        assert_eq!(
            assign(&ps, &[7], &single)[&victim],
            7,
            "no one else: still assigned"
        );
    }
}
