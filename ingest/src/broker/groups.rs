//! The group coordinator: which node coordinates a group, and the calls every front end makes.
//!
//! Placement: a group is coordinated by the node holding its claim (`meta`'s
//! `coordinators/<group>`, on that node's lease). An unclaimed group is pointed at the live
//! node that ranks highest for it by rendezvous hashing, and the first node that is asked to
//! coordinate it claims it. When the coordinator dies its lease ends, the claim goes with it,
//! and the next request claims it again elsewhere, loading the group from `meta`: members
//! carry on with at most one rebalance, committed offsets are all in `meta`.
//!
//! What is stored: membership, generations and grants (the group record, on every change) and
//! commits, each write fenced by the claim. Heartbeats that change nothing stay in memory. A
//! reply is sent only after what it tells the member is stored, so a member never acts on a
//! grant a new coordinator would not know.
//!
//! Record writes are group-committed: a change is applied in memory and numbered, and one
//! write of the newest record stores every change made before it, so the requests of a large
//! group that change the record at once share one write instead of queueing one each behind
//! the group's lock. Lock order: the record writer, then the state.

use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meta::{GroupClaim, LeaseId, NodeId, PartitionOffset};
use proto::v1 as pb;

use super::{Broker, StartAt, now_ms};
use crate::error::{Error, Result};
use crate::group::state::Now;
use crate::group::{
    Group, GroupView, HeartbeatReply, HeartbeatRequest, JoinReply, JoinRequest, Joined,
    ResetOffset, ResetTo, SyncReply, SyncRequest, Synced,
};

/// Topic name → partitions, shared.
pub(super) type TopicPartitions = Arc<BTreeMap<String, u32>>;

/// A group in [`Broker::list_groups`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    pub group: String,
    /// "Empty" or "Active".
    pub state: &'static str,
    pub members: usize,
    /// "consumer", or a classic group's members' protocol type.
    pub protocol_type: String,
    /// Whether its members use the classic protocol.
    pub classic: bool,
}

/// A group this node coordinates.
pub(super) struct Coordinated {
    claim: GroupClaim,
    lease: LeaseId,
    pub(super) state: tokio::sync::Mutex<Group>,
    /// How many changes of the record were made in memory (numbered under `state`'s lock).
    changes: std::sync::atomic::AtomicU64,
    /// The record writer: the number of the last change stored, or `None` once a write failed
    /// (the group is dropped from memory; waiting callers get NOT_COORDINATOR).
    stored: tokio::sync::Mutex<Option<u64>>,
    /// The record as last stored (or loaded), which members' fetches are checked against
    /// without waiting for `state`.
    fenced_by: std::sync::RwLock<Arc<meta::GroupRecord>>,
}

impl Coordinated {
    /// Marks what is stored as everything changed so far: after the record was deleted, the
    /// state in memory is the empty group that `meta` now holds.
    fn all_stored(&self, stored: &mut Option<u64>) {
        if stored.is_some() {
            *stored = Some(self.changes.load(std::sync::atomic::Ordering::SeqCst));
        }
    }
}

impl std::fmt::Debug for Coordinated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Coordinated")
            .field("claim", &self.claim)
            .finish()
    }
}

/// A group member's claim on the partition it fetches (gRPC's `FetchMember`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchFence {
    pub group: String,
    pub member_id: String,
    pub member_epoch: i32,
}

/// How long a node that does not coordinate a group lets members' fetches through on a copy
/// of the group's record; a refusal always reads the record again first (or takes a copy read
/// after it asked).
const FENCE_TTL: Duration = Duration::from_secs(1);
/// A node's copy of a group's record for fetch fences: when it was read, and the record. Its
/// lock is held while the record is read again.
pub(super) type FenceCopy = tokio::sync::Mutex<Option<(Instant, Arc<meta::GroupRecord>)>>;
/// Groups whose record copies a node keeps for fetch fences before it drops stale ones.
const FENCE_COPIES: usize = 1024;

/// How often the coordinator looks for timed-out members and changed topics.
const TICK: Duration = Duration::from_millis(250);
/// How long a snapshot of the cluster's topics is reused by the coordinator.
const TOPICS_TTL: Duration = Duration::from_millis(500);

fn now() -> Now {
    Now {
        at: Instant::now(),
        ms: now_ms(),
    }
}

fn rendezvous(group: &str, node: NodeId) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (group, node).hash(&mut h);
    h.finish()
}

fn validate_group(group: &str) -> Result<()> {
    meta::validate_group(group).map_err(|e| Error::InvalidGroup(e.to_string()))
}

impl Broker {
    /// The node that coordinates `group` (or will, when it is asked): (id, address).
    pub async fn find_coordinator(&self, group: &str) -> Result<(NodeId, String)> {
        let n = self.coordinator_node(group).await?;
        Ok((n.node_id, n.addr))
    }

    /// The node that coordinates `group` (or will), with all its listeners.
    pub async fn coordinator_node(&self, group: &str) -> Result<meta::NodeInfo> {
        validate_group(group)?;
        let mut nodes = self.inner.meta.list_nodes().await?;
        if let Some(claim) = self.inner.meta.group_coordinator(group).await?
            && let Some(i) = nodes.iter().position(|n| n.node_id == claim.node_id)
        {
            return Ok(nodes.swap_remove(i));
        }
        nodes
            .into_iter()
            .max_by_key(|n| rendezvous(group, n.node_id))
            .ok_or_else(|| Error::NotCoordinator {
                group: group.to_string(),
                coordinator: None,
            })
    }

    fn not_coordinator(&self, group: &str, addr: Option<String>) -> Error {
        Error::NotCoordinator {
            group: group.to_string(),
            coordinator: addr,
        }
    }

    /// Topic name → partitions, reused for [`TOPICS_TTL`].
    async fn topic_partitions(&self) -> Result<TopicPartitions> {
        if let Some((at, t)) = &*self.inner.group_topics.lock().expect("lock poisoned")
            && at.elapsed() < TOPICS_TTL
        {
            return Ok(t.clone());
        }
        let topics: BTreeMap<String, u32> = self
            .inner
            .meta
            .list_topics()
            .await?
            .into_iter()
            .map(|t| {
                let n = t.partitions();
                (t.name, n)
            })
            .collect();
        let topics = Arc::new(topics);
        *self.inner.group_topics.lock().expect("lock poisoned") =
            Some((Instant::now(), topics.clone()));
        Ok(topics)
    }

    /// This node's coordination of `group`, claiming it when nobody holds it.
    async fn coordinate(&self, group: &str) -> Result<Arc<Coordinated>> {
        validate_group(group)?;
        if self.lease_lapsed() {
            self.inner
                .coordinated
                .lock()
                .expect("lock poisoned")
                .clear();
            return Err(self.not_coordinator(group, None));
        }
        let lease = *self.inner.lease.lock().expect("lease lock poisoned");
        if let Some(c) = self
            .inner
            .coordinated
            .lock()
            .expect("lock poisoned")
            .get(group)
            && c.lease == lease
        {
            return Ok(c.clone());
        }
        let claim = match self
            .inner
            .meta
            .claim_group(group, self.inner.cfg.node_id, lease)
            .await?
        {
            Ok(claim) => claim,
            Err(holder) => {
                let addr = self.node_addr(holder.node_id).await;
                return Err(self.not_coordinator(group, addr));
            }
        };
        let record = self.inner.meta.load_group(group).await?;
        let topics = self.topic_partitions().await?;
        let state = Group::load(group, record, now(), &topics)?;
        let c = Arc::new(Coordinated {
            claim,
            lease,
            fenced_by: std::sync::RwLock::new(Arc::new(state.record().clone())),
            state: tokio::sync::Mutex::new(state),
            changes: std::sync::atomic::AtomicU64::new(0),
            stored: tokio::sync::Mutex::new(Some(0)),
        });
        let mut map = self.inner.coordinated.lock().expect("lock poisoned");
        // Another request may have loaded it meanwhile: keep one.
        let c = map.entry(group.to_string()).or_insert(c).clone();
        Ok(c)
    }

    /// The groups this node coordinates now, with their state.
    pub(super) fn coordinated_groups(&self) -> Vec<(String, Arc<Coordinated>)> {
        self.inner
            .coordinated
            .lock()
            .expect("lock poisoned")
            .iter()
            .map(|(g, c)| (g.clone(), c.clone()))
            .collect()
    }

    /// Forgets a group's in-memory state (the next request reloads it from `meta`).
    fn forget_group(&self, group: &str, c: &Arc<Coordinated>) {
        let mut map = self.inner.coordinated.lock().expect("lock poisoned");
        if map.get(group).is_some_and(|x| Arc::ptr_eq(x, c)) {
            map.remove(group);
        }
    }

    /// A failed coordinator write: the state in memory may be ahead of `meta`, so it is
    /// dropped; a lost claim becomes NOT_COORDINATOR.
    async fn coordinator_write_failed(
        &self,
        group: &str,
        c: &Arc<Coordinated>,
        e: meta::Error,
    ) -> Error {
        self.forget_group(group, c);
        match e {
            meta::Error::GroupFenced { .. } => {
                let holder = self
                    .inner
                    .meta
                    .group_coordinator(group)
                    .await
                    .ok()
                    .flatten();
                let addr = match holder {
                    Some(h) => self.node_addr(h.node_id).await,
                    None => None,
                };
                self.not_coordinator(group, addr)
            }
            e => e.into(),
        }
    }

    /// Runs `f` on the group's state and, when `f` changed the record, waits until a record
    /// holding the change is stored (group commit: see the module's doc).
    async fn with_group<T>(
        &self,
        group: &str,
        f: impl FnOnce(&mut Group, Now, &BTreeMap<String, u32>) -> Result<T>,
    ) -> Result<T> {
        use std::sync::atomic::Ordering::SeqCst;
        let c = self.coordinate(group).await?;
        let topics = self.topic_partitions().await?;
        let mut g = c.state.lock().await;
        let before = g.record().clone();
        let out = f(&mut g, now(), &topics);
        // Replies to other members' requests go out only once what they say is stored.
        let outbox = g.take_outbox();
        if g.record().generation > before.generation {
            self.inner.metrics.rebalanced(group);
        }
        let change = (*g.record() != before).then(|| c.changes.fetch_add(1, SeqCst) + 1);
        drop(g);
        if let Some(change) = change {
            let mut stored = c.stored.lock().await;
            match *stored {
                None => return Err(self.not_coordinator(group, None)),
                Some(done) if done >= change => {}
                Some(_) => {
                    // The newest record holds this change and every one before it.
                    let (newest, record) = {
                        let g = c.state.lock().await;
                        (c.changes.load(SeqCst), g.record().clone())
                    };
                    if let Err(e) = self.inner.meta.store_group(group, &c.claim, &record).await {
                        *stored = None;
                        drop(stored);
                        return Err(self.coordinator_write_failed(group, &c, e).await);
                    }
                    *c.fenced_by.write().expect("lock poisoned") = Arc::new(record);
                    *stored = Some(newest);
                }
            }
        }
        for d in outbox {
            d.deliver();
        }
        out
    }

    /// Waits for a classic round to answer a parked request; a waiter dropped unanswered
    /// means the coordinator gave the group up.
    async fn await_round<T>(
        &self,
        group: &str,
        rx: tokio::sync::oneshot::Receiver<Result<T>>,
        limit: Duration,
    ) -> Result<T> {
        match tokio::time::timeout(limit, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(self.not_coordinator(group, None)),
            Err(_) => Err(Error::RebalanceInProgress {
                group: group.to_string(),
            }),
        }
    }

    /// Refuses a member's fetch of a partition its group's coordinator does not have with it:
    /// UNKNOWN_MEMBER_ID for a member the group dropped, ILLEGAL_GENERATION for a partition a
    /// rebalance moved. The coordinating node checks the record it last stored, in memory (not
    /// waiting for the group's lock, as every answer of every member's stream is checked);
    /// another node checks the group's record in `meta`, allowing on a copy up to
    /// [`FENCE_TTL`] old and reading the record again before it refuses. A grant is stored before the member hears of it,
    /// so a member is never refused a partition it was granted, and a member that lost one is
    /// refused within [`FENCE_TTL`] (at once on the coordinator).
    pub async fn fence_fetch(&self, f: &FetchFence, topic: &str, partition: u32) -> Result<()> {
        use crate::group::state::check_fetch;
        validate_group(&f.group)?;
        let check = |rec: &meta::GroupRecord| {
            check_fetch(
                &f.group,
                rec,
                &f.member_id,
                f.member_epoch,
                topic,
                partition,
            )
        };
        let lease = *self.inner.lease.lock().expect("lease lock poisoned");
        let here = self
            .inner
            .coordinated
            .lock()
            .expect("lock poisoned")
            .get(&f.group)
            .filter(|c| c.lease == lease)
            .cloned();
        if let Some(c) = here
            && !self.lease_lapsed()
        {
            let rec = c.fenced_by.read().expect("lock poisoned").clone();
            return check(&rec);
        }
        // One read of the record at a time per group: streams that find the copy stale
        // wait for it, then use what it read (a read that started after they asked is as
        // fresh as their own), so a thousand streams of one group cost one read, not a flood.
        let slot = {
            let mut copies = self.inner.group_fences.lock().expect("lock poisoned");
            if copies.len() >= FENCE_COPIES {
                copies.retain(|_, slot| {
                    slot.try_lock().map_or(true, |c| {
                        c.as_ref().is_some_and(|(at, _)| at.elapsed() < FENCE_TTL)
                    })
                });
            }
            copies.entry(f.group.clone()).or_default().clone()
        };
        let asked = Instant::now();
        let mut copy = slot.lock().await;
        if let Some((at, rec)) = &*copy {
            if at.elapsed() < FENCE_TTL && check(rec).is_ok() {
                return Ok(());
            }
            if *at >= asked {
                return check(rec);
            }
        }
        // Stamped with when the read started: it holds what was stored before then.
        let started = Instant::now();
        let rec = Arc::new(
            self.inner
                .meta
                .load_group(&f.group)
                .await?
                .unwrap_or_default(),
        );
        *copy = Some((started, rec.clone()));
        check(&rec)
    }

    /// A classic member's JoinGroup (see [`crate::group::classic`]). `Ok(Err(id))`: join again
    /// with member id `id`.
    pub async fn join_group(
        &self,
        req: JoinRequest,
    ) -> Result<std::result::Result<JoinReply, String>> {
        let group = req.group.clone();
        let delay = Duration::from_millis(self.inner.cfg.groups.initial_rebalance_delay_ms);
        // The round ends by the rebalance timeout; the margin covers the ticker.
        let limit = Duration::from_millis(u64::from(
            req.rebalance_timeout_ms.max(req.session_timeout_ms),
        )) + delay
            + Duration::from_secs(5);
        let joined = self
            .with_group(&group, |g, now, _| g.classic_join(&req, now, delay))
            .await?;
        match joined {
            Joined::Done(r) => Ok(Ok(r)),
            Joined::MemberIdRequired(id) => Ok(Err(id)),
            Joined::Wait(rx) => self.await_round(&group, rx, limit).await.map(Ok),
        }
    }

    /// A classic member's SyncGroup: the leader hands in the assignment, the others wait.
    pub async fn sync_group(&self, req: SyncRequest) -> Result<SyncReply> {
        let group = req.group.clone();
        let synced = self
            .with_group(&group, |g, now, _| g.classic_sync(&req, now))
            .await?;
        match synced {
            Synced::Done(r) => Ok(r),
            // The leader's sync or the round's timeout (at most the rebalance timeout, 30
            // minutes) answers it.
            Synced::Wait(rx) => {
                self.await_round(&group, rx, Duration::from_secs(1_800 + 5))
                    .await
            }
        }
    }

    /// A classic member's Heartbeat: REBALANCE_IN_PROGRESS tells it to join again.
    pub async fn classic_heartbeat(
        &self,
        group: &str,
        member_id: &str,
        generation: i32,
    ) -> Result<()> {
        self.with_group(group, |g, now, _| {
            g.classic_heartbeat(member_id, generation, now)
        })
        .await
    }

    /// Classic members leave the group: (member id, instance id) each, a result per member.
    pub async fn leave_group(
        &self,
        group: &str,
        leaving: Vec<(String, Option<String>)>,
    ) -> Result<Vec<Result<String>>> {
        self.with_group(group, |g, now, _| Ok(g.classic_leave(&leaving, now)))
            .await
    }

    /// A member's heartbeat (join, leave, keep alive); see [`crate::group`].
    pub async fn group_heartbeat(&self, req: HeartbeatRequest) -> Result<HeartbeatReply> {
        let group = req.group.clone();
        self.with_group(&group, |g, now, topics| g.heartbeat(&req, now, topics))
            .await
    }

    /// Commits offsets for a group: by a member at its current epoch, or (empty member id,
    /// epoch -1) by anyone while the group has no members. Fenced by the coordinator's claim.
    pub async fn commit_group_offsets(
        &self,
        group: &str,
        member_id: &str,
        member_epoch: i32,
        offsets: Vec<PartitionOffset>,
    ) -> Result<()> {
        validate_group(group)?;
        for o in &offsets {
            self.partition(&o.topic, o.partition).await?;
        }
        let c = self.coordinate(group).await?;
        let g = c.state.lock().await;
        g.check_commit(member_id, member_epoch)?;
        self.commit_under(group, &c, g, &offsets).await
    }

    /// Commits as the coordinator while holding the group's lock (`g`): no rebalance passes
    /// between the caller's check and the write.
    async fn commit_under(
        &self,
        group: &str,
        c: &Arc<Coordinated>,
        g: tokio::sync::MutexGuard<'_, Group>,
        offsets: &[PartitionOffset],
    ) -> Result<()> {
        let stored = self
            .inner
            .meta
            .commit_offsets_as(group, Some(&c.claim), offsets)
            .await;
        drop(g);
        match stored {
            Ok(()) => Ok(()),
            Err(e) => Err(self.coordinator_write_failed(group, c, e).await),
        }
    }

    /// A group's members and assignment, from its coordinator's memory when this node
    /// coordinates it, else from `meta`. UNKNOWN_GROUP when nothing is stored for it.
    pub async fn describe_group(&self, group: &str) -> Result<(GroupView, Option<NodeId>)> {
        validate_group(group)?;
        let coordinator = self
            .inner
            .meta
            .group_coordinator(group)
            .await?
            .map(|c| c.node_id);
        let local = self
            .inner
            .coordinated
            .lock()
            .expect("lock poisoned")
            .get(group)
            .cloned();
        if let Some(c) = local {
            let view = c.state.lock().await.view();
            // A group never joined (or deleted) is known only by its offsets.
            let joined = view.generation > 0 || !view.members.is_empty();
            if joined || !self.inner.meta.fetch_offsets(group, None).await?.is_empty() {
                return Ok((view, coordinator));
            }
            return Err(Error::UnknownGroup(group.to_string()));
        }
        let record = self.inner.meta.load_group(group).await?;
        if record.is_none() && self.inner.meta.fetch_offsets(group, None).await?.is_empty() {
            return Err(Error::UnknownGroup(group.to_string()));
        }
        let topics = self.topic_partitions().await?;
        let view = Group::load(group, record, now(), &topics)?.view();
        Ok((view, coordinator))
    }

    /// Every group with stored state or offsets, as stored.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>> {
        let records = self.inner.meta.list_group_records().await?;
        Ok(records
            .into_iter()
            .map(|(group, r)| {
                let members = r.as_ref().map_or(0, |r| r.member_count());
                let classic = r.as_ref().and_then(|r| r.classic.as_ref());
                GroupListing {
                    group,
                    state: if members == 0 { "Empty" } else { "Active" },
                    members,
                    protocol_type: classic
                        .map_or_else(|| "consumer".to_string(), |c| c.protocol_type.clone()),
                    classic: classic.is_some_and(|c| !c.members.is_empty()),
                }
            })
            .collect())
    }

    /// The groups [`Self::list_groups`] lists that this node coordinates, or would be asked
    /// to (Kafka's ListGroups: clients ask every node and join the answers).
    pub async fn list_groups_here(&self) -> Result<Vec<GroupListing>> {
        let me = self.inner.cfg.node_id;
        let nodes = self.inner.meta.list_nodes().await?;
        let mut out = Vec::new();
        for g in self.list_groups().await? {
            let coordinator = match self.inner.meta.group_coordinator(&g.group).await? {
                Some(claim) => Some(claim.node_id),
                None => nodes
                    .iter()
                    .max_by_key(|n| rendezvous(&g.group, n.node_id))
                    .map(|n| n.node_id),
            };
            if coordinator == Some(me) {
                out.push(g);
            }
        }
        Ok(out)
    }

    /// Deletes a group's offsets and record; refused while it has members.
    pub async fn delete_group(&self, group: &str) -> Result<()> {
        let c = self.coordinate(group).await?;
        let mut stored = c.stored.lock().await;
        let mut g = c.state.lock().await;
        if !g.is_empty() {
            return Err(Error::GroupNotEmpty {
                group: group.to_string(),
                members: g.record().member_count(),
            });
        }
        let deleted = match self.inner.meta.delete_group_as(group, &c.claim).await {
            Ok(d) => d,
            Err(e) => {
                *stored = None;
                drop((g, stored));
                return Err(self.coordinator_write_failed(group, &c, e).await);
            }
        };
        let topics = self.topic_partitions().await?;
        *g = Group::load(group, None, now(), &topics)?;
        c.all_stored(&mut stored);
        if !deleted {
            return Err(Error::UnknownGroup(group.to_string()));
        }
        Ok(())
    }

    /// Deletes a group's committed offsets of `partitions` (Kafka's OffsetDelete), except for
    /// topics a member of the group subscribes to or holds: those are returned, untouched. A
    /// group whose members' topics are unknown (a classic group of another protocol type than
    /// consumers') is refused while it has members.
    pub async fn delete_group_offsets(
        &self,
        group: &str,
        partitions: Vec<(String, u32)>,
    ) -> Result<std::collections::BTreeSet<String>> {
        validate_group(group)?;
        let c = self.coordinate(group).await?;
        let g = c.state.lock().await;
        let view = g.view();
        if view.generation == 0
            && view.members.is_empty()
            && self.inner.meta.fetch_offsets(group, None).await?.is_empty()
        {
            return Err(Error::UnknownGroup(group.to_string()));
        }
        if view.classic && view.protocol_type != crate::group::classic::CONSUMER_PROTOCOL {
            return Err(Error::GroupNotEmpty {
                group: group.to_string(),
                members: view.members.len(),
            });
        }
        let consumed: std::collections::BTreeSet<String> = view
            .members
            .iter()
            .flat_map(|m| {
                m.topics
                    .iter()
                    .cloned()
                    .chain(m.owned.iter().map(|(t, _)| t.clone()))
            })
            .collect();
        let (refused, deletable): (Vec<_>, Vec<_>) = partitions
            .into_iter()
            .partition(|(t, _)| consumed.contains(t));
        let deleted = self
            .inner
            .meta
            .delete_offsets_as(group, &c.claim, &deletable)
            .await;
        drop(g);
        match deleted {
            Ok(()) => Ok(refused.into_iter().map(|(t, _)| t).collect()),
            Err(e) => Err(self.coordinator_write_failed(group, &c, e).await),
        }
    }

    /// Where `at` is in a partition, asked of its leader when another node leads it.
    async fn resolve_anywhere(&self, topic: &str, partition: u32, at: StartAt) -> Result<i64> {
        match self.resolve(topic, partition, at).await {
            Err(Error::NotLeader {
                leader: Some(addr), ..
            }) => {
                use pb::list_offsets_request::Spec;
                let spec = match at {
                    StartAt::Earliest => Spec::Position(pb::StartPosition::StartEarliest as i32),
                    StartAt::Latest => Spec::Position(pb::StartPosition::StartLatest as i32),
                    StartAt::Timestamp(ts) => Spec::TimestampMs(ts),
                    StartAt::Offset(o) => return Ok(o),
                };
                let r = self
                    .peer(&addr)?
                    .list_offsets(pb::ListOffsetsRequest {
                        topic: topic.to_string(),
                        partition,
                        spec: Some(spec),
                    })
                    .await
                    .map_err(|s| Error::Unavailable(format!("leader at {addr}: {}", s.message())))?
                    .into_inner()
                    .offset;
                if r < 0 {
                    // No record at or after the time: the log end.
                    return Box::pin(self.resolve_anywhere(topic, partition, StartAt::Latest))
                        .await;
                }
                Ok(r)
            }
            other => other,
        }
    }

    /// Moves a group's committed offsets for `topic` (`partitions`, or all when empty).
    /// With `dry_run` nothing is written. Refused while the group has members.
    pub async fn reset_offsets(
        &self,
        group: &str,
        topic: &str,
        partitions: &[u32],
        to: ResetTo,
        dry_run: bool,
    ) -> Result<Vec<ResetOffset>> {
        validate_group(group)?;
        let parts: Vec<u32> = if partitions.is_empty() {
            (0..self.topic(topic).await?.partitions()).collect()
        } else {
            for &p in partitions {
                self.partition(topic, p).await?;
            }
            partitions.to_vec()
        };
        let committed: BTreeMap<u32, i64> = self
            .inner
            .meta
            .fetch_offsets(group, Some(topic))
            .await?
            .into_iter()
            .map(|o| (o.partition, o.offset))
            .collect();
        let mut out = Vec::with_capacity(parts.len());
        for p in parts {
            let low = self.resolve_anywhere(topic, p, StartAt::Earliest).await?;
            let high = self.resolve_anywhere(topic, p, StartAt::Latest).await?;
            let before = committed.get(&p).copied();
            let after = match to {
                ResetTo::Earliest => low,
                ResetTo::Latest => high,
                ResetTo::Timestamp(ts) => {
                    self.resolve_anywhere(topic, p, StartAt::Timestamp(ts))
                        .await?
                }
                ResetTo::Offset(o) => o,
                ResetTo::ShiftBy(n) => before.unwrap_or(high).saturating_add(n),
            }
            .clamp(low, high.max(low));
            out.push(ResetOffset {
                topic: topic.to_string(),
                partition: p,
                before,
                after,
            });
        }
        let c = self.coordinate(group).await?;
        let g = c.state.lock().await;
        if !g.is_empty() {
            return Err(Error::GroupNotEmpty {
                group: group.to_string(),
                members: g.record().member_count(),
            });
        }
        if dry_run {
            return Ok(out);
        }
        let offsets: Vec<PartitionOffset> = out
            .iter()
            .map(|r| PartitionOffset {
                topic: r.topic.clone(),
                partition: r.partition,
                offset: r.after,
                metadata: String::new(),
            })
            .collect();
        self.commit_under(group, &c, g, &offsets).await?;
        tracing::info!(group, topic, partitions = out.len(), ?to, "reset offsets");
        Ok(out)
    }

    /// Deletes the offsets of groups without members that nobody committed to for the
    /// retention (counted from the later of the commit and the group becoming empty). Each
    /// group is swept by the live node that ranks highest for it, as its coordinator.
    async fn expire_offsets(&self) -> Result<()> {
        let retention =
            i64::try_from(self.inner.cfg.groups.offsets_retention_ms).unwrap_or(i64::MAX);
        let now = now_ms();
        let nodes = self.inner.meta.list_nodes().await?;
        let me = self.inner.cfg.node_id;
        for (group, record) in self.inner.meta.list_group_records().await? {
            if record.as_ref().is_some_and(|r| !r.is_empty()) {
                continue;
            }
            let empty_since = record.as_ref().and_then(|r| r.empty_since_ms).unwrap_or(0);
            if now.saturating_sub(empty_since) < retention {
                continue;
            }
            let sweeper = nodes.iter().max_by_key(|n| rendezvous(&group, n.node_id));
            if sweeper.is_none_or(|n| n.node_id != me) {
                continue;
            }
            let c = match self.coordinate(&group).await {
                Ok(c) => c,
                Err(Error::NotCoordinator { .. }) => continue,
                Err(e) => return Err(e),
            };
            let mut stored = c.stored.lock().await;
            let g = c.state.lock().await;
            if !g.is_empty() {
                continue;
            }
            let expired = self
                .inner
                .meta
                .expire_offsets(&group, &c.claim, now - retention)
                .await;
            let left = match expired {
                Ok(_) => self.inner.meta.fetch_offsets(&group, None).await?,
                Err(e) => {
                    *stored = None;
                    drop((g, stored));
                    return Err(self.coordinator_write_failed(&group, &c, e).await);
                }
            };
            if left.is_empty() && record.is_some() {
                // Nothing left of the group: its record goes too.
                if let Err(e) = self.inner.meta.delete_group_as(&group, &c.claim).await {
                    *stored = None;
                    drop((g, stored));
                    return Err(self.coordinator_write_failed(&group, &c, e).await);
                }
                c.all_stored(&mut stored);
                drop((g, stored));
                self.forget_group(&group, &c);
                tracing::info!(group, "expired an empty group");
            }
        }
        Ok(())
    }

    /// Times out members and follows topic changes in every group this node coordinates;
    /// expires offsets of groups long empty.
    pub(super) fn spawn_group_ticker(&self) {
        let broker = self.clone();
        let retention = Duration::from_millis(broker.inner.cfg.groups.offsets_retention_ms);
        // As Kafka's `offsets.retention.check.interval.ms` (10 minutes): a sweep lists every
        // group's committed offsets, so it runs rarely against a retention of days.
        let sweep_every = (retention / 2).clamp(TICK, Duration::from_secs(600));
        tokio::spawn(async move {
            let mut last_sweep = Instant::now();
            loop {
                tokio::select! {
                    _ = broker.inner.cancel.cancelled() => return,
                    _ = tokio::time::sleep(TICK) => {}
                }
                if last_sweep.elapsed() >= sweep_every {
                    last_sweep = Instant::now();
                    if let Err(e) = broker.expire_offsets().await {
                        tracing::warn!(error = %e, "expiring group offsets failed");
                    }
                }
                let groups = broker.coordinated_groups();
                if groups.is_empty() {
                    continue;
                }
                let lease = *broker.inner.lease.lock().expect("lease lock poisoned");
                for (group, c) in groups {
                    if c.lease != lease || broker.lease_lapsed() {
                        broker.forget_group(&group, &c);
                        continue;
                    }
                    let r = broker
                        .with_group(&group, |g, now, topics| {
                            g.tick(now, topics);
                            Ok(())
                        })
                        .await;
                    if let Err(e) = r {
                        tracing::warn!(group, error = %e, "group tick failed");
                    }
                }
            }
        });
    }
}
