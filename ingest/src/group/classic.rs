//! Kafka's classic group protocol (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) in the core:
//! the coordinator gathers the members, one of them (the leader) computes the assignment from
//! the others' metadata, and the coordinator hands each member its part. Metadata and
//! assignments are opaque here (a Kafka consumer's, a Connect worker's), so any classic client
//! works unchanged; a front end that can read them passes the topics and partitions along for
//! views and lag.
//!
//! Phases: Empty → Preparing (members join; it ends when every known member has joined, or at
//! the rebalance timeout, when those that did not are removed) → AwaitingSync (the leader
//! hands in the assignment) → Stable. A join, a leave or a session timeout starts Preparing
//! again. The generation (`GroupRecord::generation`, shared with the server-side protocol)
//! grows by one when Preparing ends, never otherwise.
//!
//! Invariants:
//! - every reply of a round (joins, syncs) is queued in the outbox and sent by the caller
//!   only after the record it depends on is stored;
//! - a member's commit is accepted only at the current generation, and not while the group
//!   waits for the leader's assignment (a member may commit while the group is preparing, so
//!   it can commit what it processed before it rejoins);
//! - a static member (instance id) that comes back takes its old place: the old member id is
//!   fenced, and the group does not rebalance unless the member was the leader or changed
//!   its metadata.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use meta::{ClassicMemberRecord, ClassicProtocol, ClassicRecord, GroupRecord};
use tokio::sync::oneshot;

use super::Tp;
use super::state::{MAX_MEMBERS, Now, SESSION_TIMEOUT_RANGE_MS};
use crate::error::{Error, Result};

/// The most protocols one member may offer.
const MAX_PROTOCOLS: usize = 64;
/// The most metadata one member may send, over all its protocols (bytes).
const MAX_METADATA_BYTES: usize = 64 * 1024;
/// The most assignment bytes one member may be given.
const MAX_ASSIGNMENT_BYTES: usize = 256 * 1024;
/// The most metadata and assignment bytes of all members together: the group record (base64
/// in JSON, a third larger) must fit one metadata write (etcd takes 1.5 MiB by default).
pub const MAX_GROUP_BYTES: usize = 900 * 1024;
/// The longest rebalance timeout: longer ones (a consumer's `max.poll.interval.ms`) are cut
/// to it rather than refused.
const MAX_REBALANCE_TIMEOUT_MS: u32 = 1_800_000;

/// Kafka consumers' protocol type: their assignments name topics and partitions.
pub const CONSUMER_PROTOCOL: &str = "consumer";

/// A member's JoinGroup.
#[derive(Debug, Clone, Default)]
pub struct JoinRequest {
    pub group: String,
    /// Empty on a first join.
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    pub protocol_type: String,
    /// Most preferred first.
    pub protocols: Vec<ClassicProtocol>,
    /// Hand a new member its id and have it join again with it (Kafka's MEMBER_ID_REQUIRED),
    /// so a join retried after a client-side timeout does not leave a member behind.
    pub require_known_member_id: bool,
    /// The topics the member subscribes to, when the front end could read its metadata.
    pub topics: Vec<String>,
}

/// A member as the leader sees it in its join reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinedMember {
    pub member_id: String,
    pub instance_id: Option<String>,
    /// Its metadata for the chosen protocol.
    pub metadata: Vec<u8>,
}

/// The end of a member's join: the generation it is part of.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JoinReply {
    pub generation: i32,
    pub protocol_type: String,
    pub protocol: String,
    pub leader: String,
    pub member_id: String,
    /// Every member, for the leader only (it computes the assignment).
    pub members: Vec<JoinedMember>,
}

/// What a join gets now.
#[derive(Debug)]
pub enum Joined {
    Done(JoinReply),
    /// The round is still gathering members: the reply comes when it ends.
    Wait(oneshot::Receiver<Result<JoinReply>>),
    /// Join again with this member id.
    MemberIdRequired(String),
}

/// One member's part of the leader's assignment.
#[derive(Debug, Clone, Default)]
pub struct MemberAssignment {
    pub member_id: String,
    pub assignment: Vec<u8>,
    /// The partitions it names, when the front end could read it.
    pub partitions: Vec<Tp>,
}

/// A member's SyncGroup.
#[derive(Debug, Clone, Default)]
pub struct SyncRequest {
    pub group: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    /// The leader's assignment (empty from the others).
    pub assignments: Vec<MemberAssignment>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncReply {
    pub protocol_type: String,
    pub protocol: String,
    pub assignment: Vec<u8>,
}

#[derive(Debug)]
pub enum Synced {
    Done(SyncReply),
    /// The leader has not handed in the assignment yet.
    Wait(oneshot::Receiver<Result<SyncReply>>),
}

/// A reply held until the record it depends on is stored.
#[derive(Debug)]
pub enum Delivery {
    Join(oneshot::Sender<Result<JoinReply>>, Result<JoinReply>),
    Sync(oneshot::Sender<Result<SyncReply>>, Result<SyncReply>),
}

impl Delivery {
    pub fn deliver(self) {
        // A waiter that went away (its connection closed) is not an error.
        match self {
            Delivery::Join(tx, r) => drop(tx.send(r)),
            Delivery::Sync(tx, r) => drop(tx.send(r)),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Empty,
    Preparing {
        /// Members that have not joined by then are removed.
        deadline: Instant,
        /// A new group waits this long for more members, even when all have joined.
        not_before: Instant,
    },
    AwaitingSync {
        deadline: Instant,
    },
    Stable,
}

/// The classic protocol's state besides the stored record.
#[derive(Debug)]
pub(super) struct Classic {
    phase: Phase,
    /// Members that joined in this round, waiting for it to end.
    join_waiters: HashMap<String, oneshot::Sender<Result<JoinReply>>>,
    /// Members waiting for the leader's assignment.
    sync_waiters: HashMap<String, oneshot::Sender<Result<SyncReply>>>,
    /// Member ids handed out (MEMBER_ID_REQUIRED) and not used yet, until when.
    pending: HashMap<String, Instant>,
    session_deadline: HashMap<String, Instant>,
    /// Member ids replaced by a static member's return → the instance id.
    fenced: HashMap<String, String>,
    outbox: Vec<Delivery>,
}

/// Bytes a member's protocols take in the group record.
fn metadata_bytes(protocols: &[ClassicProtocol]) -> usize {
    protocols
        .iter()
        .map(|p| p.metadata.len() + p.name.len())
        .sum()
}

fn rec_of(rec: &mut GroupRecord) -> &mut ClassicRecord {
    rec.classic.get_or_insert_with(ClassicRecord::default)
}

fn member<'a>(rec: &'a GroupRecord, id: &str) -> Option<&'a ClassicMemberRecord> {
    rec.classic
        .as_ref()
        .and_then(|c| c.members.iter().find(|m| m.member_id == id))
}

fn members(rec: &GroupRecord) -> &[ClassicMemberRecord] {
    rec.classic.as_ref().map_or(&[], |c| c.members.as_slice())
}

fn timeout(ms: u32, what: &str) -> Result<u32> {
    if SESSION_TIMEOUT_RANGE_MS.contains(&ms) {
        return Ok(ms);
    }
    Err(Error::InvalidRequest(format!(
        "{what} timeout {ms} ms is outside {}..={} ms",
        SESSION_TIMEOUT_RANGE_MS.start(),
        SESSION_TIMEOUT_RANGE_MS.end()
    )))
}

fn inconsistent(group: &str, why: impl Into<String>) -> Error {
    Error::InconsistentGroupProtocol {
        group: group.to_string(),
        why: why.into(),
    }
}

fn grouped(tps: &[Tp]) -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (t, p) in tps {
        out.entry(t.clone()).or_default().push(*p);
    }
    for ps in out.values_mut() {
        ps.sort_unstable();
        ps.dedup();
    }
    out
}

impl Classic {
    /// The state of a group loaded from `meta`: a settled generation carries on (members
    /// keep their sessions fresh); an unsettled one starts a new round.
    pub(super) fn load(rec: &GroupRecord, now: Now) -> Classic {
        let mut c = Classic {
            phase: Phase::Empty,
            join_waiters: HashMap::new(),
            sync_waiters: HashMap::new(),
            pending: HashMap::new(),
            session_deadline: HashMap::new(),
            fenced: HashMap::new(),
            outbox: Vec::new(),
        };
        let Some(cr) = rec.classic.as_ref().filter(|c| !c.members.is_empty()) else {
            return c;
        };
        for m in &cr.members {
            let session = Duration::from_millis(u64::from(m.session_timeout_ms));
            c.session_deadline
                .insert(m.member_id.clone(), now.at + session);
        }
        c.phase = if cr.settled {
            Phase::Stable
        } else {
            let deadline = now.at + Self::rebalance_timeout(rec);
            Phase::Preparing {
                deadline,
                not_before: now.at,
            }
        };
        c
    }

    pub(super) fn take_outbox(&mut self) -> Vec<Delivery> {
        std::mem::take(&mut self.outbox)
    }

    /// "Empty", "PreparingRebalance", "CompletingRebalance" or "Stable" (Kafka's names).
    pub(super) fn state(&self) -> &'static str {
        match self.phase {
            Phase::Empty => "Empty",
            Phase::Preparing { .. } => "PreparingRebalance",
            Phase::AwaitingSync { .. } => "CompletingRebalance",
            Phase::Stable => "Stable",
        }
    }

    fn rebalance_timeout(rec: &GroupRecord) -> Duration {
        let ms = members(rec)
            .iter()
            .map(|m| m.rebalance_timeout_ms)
            .max()
            .unwrap_or(0);
        Duration::from_millis(u64::from(ms))
    }

    fn unknown_member(&self, group: &str, id: &str) -> Error {
        match self.fenced.get(id) {
            Some(instance) => Error::FencedInstance {
                group: group.to_string(),
                instance: instance.clone(),
            },
            None => Error::UnknownMember {
                group: group.to_string(),
                member: id.to_string(),
            },
        }
    }

    /// The protocols every member supports, in the first member's order.
    fn common_protocols(rec: &GroupRecord) -> Vec<&str> {
        let lists: Vec<&[ClassicProtocol]> = members(rec)
            .iter()
            .map(|m| m.protocols.as_slice())
            .collect();
        let Some(first) = lists.first() else {
            return Vec::new();
        };
        first
            .iter()
            .map(|p| p.name.as_str())
            .filter(|name| lists.iter().all(|l| l.iter().any(|p| p.name == *name)))
            .collect()
    }

    /// The protocol of the round: each member votes for the first it supports of those all
    /// members support; the most votes wins, ties going to the earlier in the first member's
    /// list.
    fn choose_protocol(rec: &GroupRecord) -> Option<String> {
        let common = Self::common_protocols(rec);
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in members(rec) {
            if let Some(p) = m
                .protocols
                .iter()
                .find(|p| common.contains(&p.name.as_str()))
            {
                *votes.entry(p.name.as_str()).or_default() += 1;
            }
        }
        let best = votes.values().copied().max()?;
        common
            .into_iter()
            .find(|p| votes.get(p) == Some(&best))
            .map(str::to_string)
    }

    fn check_join(group: &str, rec: &GroupRecord, req: &JoinRequest) -> Result<(u32, u32)> {
        if req.protocol_type.is_empty() || req.protocols.is_empty() {
            return Err(inconsistent(
                group,
                "a join must name a protocol type and at least one protocol",
            ));
        }
        if req.protocols.len() > MAX_PROTOCOLS {
            return Err(Error::LimitExceeded {
                what: "protocols offered by one group member",
                asked: req.protocols.len() as u64,
                limit: MAX_PROTOCOLS as u64,
                setting: "(fixed)",
            });
        }
        let bytes = metadata_bytes(&req.protocols);
        if bytes > MAX_METADATA_BYTES {
            return Err(Error::LimitExceeded {
                what: "group member metadata bytes",
                asked: bytes as u64,
                limit: MAX_METADATA_BYTES as u64,
                setting: "(fixed)",
            });
        }
        if !rec.members.is_empty() {
            return Err(inconsistent(
                group,
                "the group's members use the consumer protocol (server-side assignment); a \
                 classic member cannot join it until they leave",
            ));
        }
        let others: Vec<&ClassicMemberRecord> = members(rec)
            .iter()
            .filter(|m| m.member_id != req.member_id)
            .collect();
        if let Some(m) = others.first()
            && rec
                .classic
                .as_ref()
                .is_some_and(|c| c.protocol_type != req.protocol_type)
        {
            return Err(inconsistent(
                group,
                format!(
                    "protocol type {:?}; the group's members ({}, ...) use {:?}",
                    req.protocol_type,
                    m.member_id,
                    rec.classic
                        .as_ref()
                        .map(|c| c.protocol_type.as_str())
                        .unwrap_or("")
                ),
            ));
        }
        let shared = req.protocols.iter().any(|p| {
            others
                .iter()
                .all(|m| m.protocols.iter().any(|q| q.name == p.name))
        });
        if !shared {
            return Err(inconsistent(
                group,
                "the member supports none of the protocols every other member supports",
            ));
        }
        let session = timeout(req.session_timeout_ms, "session")?;
        let rebalance = match req.rebalance_timeout_ms {
            0 => session,
            ms => ms.clamp(*SESSION_TIMEOUT_RANGE_MS.start(), MAX_REBALANCE_TIMEOUT_MS),
        };
        // The record must stay storable: every member's metadata and assignment together.
        let stored: usize = others
            .iter()
            .map(|m| m.assignment.len() + metadata_bytes(&m.protocols))
            .sum();
        if stored + bytes > MAX_GROUP_BYTES {
            return Err(Error::LimitExceeded {
                what: "metadata and assignment bytes of one group's members",
                asked: (stored + bytes) as u64,
                limit: MAX_GROUP_BYTES as u64,
                setting: "(fixed)",
            });
        }
        Ok((session, rebalance))
    }

    /// A member's JoinGroup.
    pub(super) fn join(
        &mut self,
        group: &str,
        rec: &mut GroupRecord,
        req: &JoinRequest,
        now: Now,
        initial_delay: Duration,
    ) -> Result<Joined> {
        let (session_ms, rebalance_ms) = Self::check_join(group, rec, req)?;
        if let Some(instance) = self.fenced.get(&req.member_id) {
            return Err(Error::FencedInstance {
                group: group.to_string(),
                instance: instance.clone(),
            });
        }
        let session = Duration::from_millis(u64::from(session_ms));
        let existing = members(rec).iter().any(|m| m.member_id == req.member_id);
        let static_old = req.instance_id.as_ref().and_then(|i| {
            members(rec)
                .iter()
                .find(|m| m.instance_id.as_ref() == Some(i))
                .map(|m| m.member_id.clone())
        });
        let id = if existing {
            req.member_id.clone()
        } else if let Some(old) = static_old {
            // The instance's place is taken by whoever comes without a member id (a restart);
            // one that names another member id is a zombie of an earlier incarnation.
            if !req.member_id.is_empty() {
                return Err(Error::FencedInstance {
                    group: group.to_string(),
                    instance: req.instance_id.clone().unwrap_or_default(),
                });
            }
            return Ok(self.static_return(group, rec, req, &old, now, session_ms, rebalance_ms));
        } else if self.pending.remove(&req.member_id).is_some() {
            req.member_id.clone()
        } else if !req.member_id.is_empty() {
            return Err(self.unknown_member(group, &req.member_id));
        } else {
            if members(rec).len() + self.pending.len() >= MAX_MEMBERS {
                return Err(Error::LimitExceeded {
                    what: "members of one group",
                    asked: (members(rec).len() + self.pending.len()) as u64 + 1,
                    limit: MAX_MEMBERS as u64,
                    setting: "(fixed)",
                });
            }
            let id = new_member_id(&req.client_id);
            if req.require_known_member_id && req.instance_id.is_none() {
                self.pending.insert(id.clone(), now.at + session);
                return Ok(Joined::MemberIdRequired(id));
            }
            id
        };
        self.session_deadline.insert(id.clone(), now.at + session);
        let fresh = ClassicMemberRecord {
            member_id: id.clone(),
            instance_id: req.instance_id.clone(),
            client_id: req.client_id.clone(),
            host: req.host.clone(),
            session_timeout_ms: session_ms,
            rebalance_timeout_ms: rebalance_ms,
            protocols: req.protocols.clone(),
            assignment: Vec::new(),
            topics: req.topics.clone(),
            assigned: BTreeMap::new(),
        };
        let cr = rec_of(rec);
        if cr.members.is_empty() {
            cr.protocol_type = req.protocol_type.clone();
        }
        if existing {
            let m = cr
                .members
                .iter_mut()
                .find(|m| m.member_id == id)
                .expect("checked above");
            let changed = m.protocols != req.protocols;
            m.protocols = req.protocols.clone();
            m.topics = req.topics.clone();
            m.session_timeout_ms = session_ms;
            m.rebalance_timeout_ms = rebalance_ms;
            m.client_id = req.client_id.clone();
            let is_leader = cr.leader.as_deref() == Some(id.as_str());
            match self.phase {
                // Nothing changed (the member lost its answer, say): it gets the generation it
                // is part of. A leader rejoining a stable group wants a new round (Kafka's
                // way for a leader to have the assignment computed again).
                Phase::AwaitingSync { .. } if !changed => {
                    return Ok(Joined::Done(self.reply_for(rec, &id)));
                }
                Phase::Stable if !changed && !is_leader => {
                    return Ok(Joined::Done(self.reply_for(rec, &id)));
                }
                Phase::Stable | Phase::AwaitingSync { .. } => {
                    self.prepare(group, rec, now, "a member rejoined with new metadata");
                }
                Phase::Empty => self.prepare(group, rec, now, "a member joined"),
                Phase::Preparing { .. } => {}
            }
        } else {
            cr.members.push(fresh);
            tracing::info!(group, member = %id, "classic member joined");
            match self.phase {
                Phase::Empty => {
                    self.prepare(group, rec, now, "a member joined");
                    if let Phase::Preparing { deadline, .. } = self.phase {
                        // A new group waits a little for the others of a starting set.
                        self.phase = Phase::Preparing {
                            deadline: deadline.max(now.at + initial_delay),
                            not_before: now.at + initial_delay,
                        };
                    }
                }
                Phase::Preparing {
                    deadline,
                    not_before,
                } if not_before > now.at => {
                    // Still starting: each newcomer extends the wait, up to the deadline.
                    self.phase = Phase::Preparing {
                        deadline,
                        not_before: (now.at + initial_delay).min(deadline),
                    };
                }
                Phase::Preparing { .. } => {}
                Phase::Stable | Phase::AwaitingSync { .. } => {
                    self.prepare(group, rec, now, "a member joined")
                }
            }
        }
        let (tx, rx) = oneshot::channel();
        if let Some(old) = self.join_waiters.insert(id.clone(), tx) {
            // The member sent its join again: its older request is told to join again (the
            // newer one gets the round's answer).
            self.outbox.push(Delivery::Join(
                old,
                Err(Error::RebalanceInProgress {
                    group: group.to_string(),
                }),
            ));
        }
        self.maybe_complete(group, rec, now);
        Ok(Joined::Wait(rx))
    }

    /// A static member back under a new member id: the old id is fenced; the group carries
    /// on without a rebalance unless the member led it or changed its metadata.
    #[allow(clippy::too_many_arguments)]
    fn static_return(
        &mut self,
        group: &str,
        rec: &mut GroupRecord,
        req: &JoinRequest,
        old: &str,
        now: Now,
        session_ms: u32,
        rebalance_ms: u32,
    ) -> Joined {
        let id = new_member_id(&req.client_id);
        let instance = req.instance_id.clone().unwrap_or_default();
        if self.fenced.len() >= MAX_MEMBERS {
            // Fenced ids are remembered for clear errors only; a zombie forgotten here gets
            // UNKNOWN_MEMBER_ID instead, which fences it as well.
            self.fenced.clear();
        }
        self.fenced.insert(old.to_string(), instance.clone());
        self.session_deadline.remove(old);
        self.fail_waiters(old, || Error::FencedInstance {
            group: group.to_string(),
            instance: instance.clone(),
        });
        let session = Duration::from_millis(u64::from(session_ms));
        self.session_deadline.insert(id.clone(), now.at + session);
        let cr = rec_of(rec);
        let was_leader = cr.leader.as_deref() == Some(old);
        if was_leader {
            cr.leader = Some(id.clone());
        }
        let m = cr
            .members
            .iter_mut()
            .find(|m| m.member_id == old)
            .expect("found by the caller");
        m.member_id = id.clone();
        m.protocols = req.protocols.clone();
        m.topics = req.topics.clone();
        m.client_id = req.client_id.clone();
        m.host = req.host.clone();
        m.session_timeout_ms = session_ms;
        m.rebalance_timeout_ms = rebalance_ms;
        tracing::info!(group, instance, member = %id, "static member is back");
        // Its metadata may differ (a consumer's names what it owned): only a change of the
        // protocol the group would choose needs a round.
        let changed = Self::choose_protocol(rec) != rec_of(rec).protocol;
        if matches!(self.phase, Phase::Stable) && !changed && !was_leader {
            return Joined::Done(self.reply_for(rec, &id));
        }
        if !matches!(self.phase, Phase::Preparing { .. }) {
            self.prepare(group, rec, now, "a static member came back changed");
        }
        let (tx, rx) = oneshot::channel();
        self.join_waiters.insert(id, tx);
        self.maybe_complete(group, rec, now);
        Joined::Wait(rx)
    }

    /// The join reply of the current generation for `id`.
    fn reply_for(&self, rec: &GroupRecord, id: &str) -> JoinReply {
        let cr = rec.classic.as_ref().expect("a classic group");
        let protocol = cr.protocol.clone().unwrap_or_default();
        let leader = cr.leader.clone().unwrap_or_default();
        let members = if leader == id {
            cr.members
                .iter()
                .map(|m| JoinedMember {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    metadata: m
                        .protocols
                        .iter()
                        .find(|p| p.name == protocol)
                        .map(|p| p.metadata.clone())
                        .unwrap_or_default(),
                })
                .collect()
        } else {
            Vec::new()
        };
        JoinReply {
            generation: rec.generation,
            protocol_type: cr.protocol_type.clone(),
            protocol,
            leader,
            member_id: id.to_string(),
            members,
        }
    }

    /// Starts a round: members are to join again (those waiting for an assignment are told
    /// to).
    fn prepare(&mut self, group: &str, rec: &mut GroupRecord, now: Now, why: &str) {
        for (_, tx) in self.sync_waiters.drain() {
            self.outbox.push(Delivery::Sync(
                tx,
                Err(Error::RebalanceInProgress {
                    group: group.to_string(),
                }),
            ));
        }
        rec_of(rec).settled = false;
        self.phase = Phase::Preparing {
            deadline: now.at + Self::rebalance_timeout(rec),
            not_before: now.at,
        };
        tracing::info!(group, why, "classic group is rebalancing");
    }

    /// Ends the round when every member has joined (and a new group's wait is over).
    fn maybe_complete(&mut self, group: &str, rec: &mut GroupRecord, now: Now) {
        let Phase::Preparing {
            deadline,
            not_before,
        } = self.phase
        else {
            return;
        };
        let all = members(rec)
            .iter()
            .all(|m| self.join_waiters.contains_key(&m.member_id))
            && self.pending.is_empty();
        if (all && now.at >= not_before) || now.at >= deadline {
            self.complete(group, rec, now);
        }
    }

    /// Ends the round: members that did not join are removed, the generation grows, a
    /// protocol and a leader are chosen, and every joined member gets its reply.
    fn complete(&mut self, group: &str, rec: &mut GroupRecord, now: Now) {
        let cr = rec_of(rec);
        let before = cr.members.len();
        let waiters = &self.join_waiters;
        cr.members.retain(|m| waiters.contains_key(&m.member_id));
        if cr.members.len() != before {
            tracing::info!(
                group,
                removed = before - cr.members.len(),
                "members that did not rejoin in time were removed"
            );
        }
        let kept: BTreeSet<String> = cr.members.iter().map(|m| m.member_id.clone()).collect();
        self.session_deadline.retain(|id, _| kept.contains(id));
        rec.generation += 1;
        if kept.is_empty() {
            // The group keeps its protocol type (a Connect group stays one when empty).
            let protocol_type = rec_of(rec).protocol_type.clone();
            rec.classic = Some(ClassicRecord {
                protocol_type,
                ..ClassicRecord::default()
            });
            rec.empty_since_ms = Some(now.ms);
            self.phase = Phase::Empty;
            for (_, tx) in self.join_waiters.drain() {
                drop(tx);
            }
            return;
        }
        rec.empty_since_ms = None;
        let protocol = Self::choose_protocol(rec);
        let cr = rec_of(rec);
        cr.protocol = protocol;
        if cr.leader.as_ref().is_none_or(|l| !kept.contains(l)) {
            cr.leader = cr.members.first().map(|m| m.member_id.clone());
        }
        cr.settled = false;
        for m in &mut cr.members {
            m.assignment.clear();
            m.assigned.clear();
        }
        for (id, tx) in std::mem::take(&mut self.join_waiters) {
            let reply = self.reply_for(rec, &id);
            self.outbox.push(Delivery::Join(tx, Ok(reply)));
        }
        self.phase = Phase::AwaitingSync {
            deadline: now.at + Self::rebalance_timeout(rec),
        };
        // A member's session runs from the end of the round, not from its join.
        for m in members(rec) {
            let session = Duration::from_millis(u64::from(m.session_timeout_ms));
            self.session_deadline
                .insert(m.member_id.clone(), now.at + session);
        }
        tracing::info!(
            group,
            generation = rec.generation,
            members = kept.len(),
            "classic group round complete"
        );
    }

    fn check_member(
        &self,
        group: &str,
        rec: &GroupRecord,
        id: &str,
        generation: i32,
    ) -> Result<()> {
        if member(rec, id).is_none() {
            return Err(self.unknown_member(group, id));
        }
        if generation != rec.generation {
            return Err(Error::IllegalGeneration {
                group: group.to_string(),
                member: id.to_string(),
                got: generation,
                current: rec.generation,
            });
        }
        Ok(())
    }

    /// A member's SyncGroup: the leader's hands in the assignment; the others wait for it.
    pub(super) fn sync(
        &mut self,
        group: &str,
        rec: &mut GroupRecord,
        req: &SyncRequest,
        now: Now,
    ) -> Result<Synced> {
        self.check_member(group, rec, &req.member_id, req.generation)?;
        let cr = rec.classic.as_ref().expect("a member was found");
        if req
            .protocol_type
            .as_ref()
            .is_some_and(|t| *t != cr.protocol_type)
            || req
                .protocol
                .as_ref()
                .is_some_and(|p| Some(p) != cr.protocol.as_ref())
        {
            return Err(inconsistent(
                group,
                "the sync names another protocol than the generation's",
            ));
        }
        self.touch(rec, &req.member_id, now);
        match self.phase {
            Phase::Empty | Phase::Preparing { .. } => Err(Error::RebalanceInProgress {
                group: group.to_string(),
            }),
            Phase::Stable => Ok(Synced::Done(self.sync_reply(rec, &req.member_id))),
            Phase::AwaitingSync { .. } => {
                if cr.leader.as_deref() != Some(req.member_id.as_str()) {
                    let (tx, rx) = oneshot::channel();
                    self.sync_waiters.insert(req.member_id.clone(), tx);
                    return Ok(Synced::Wait(rx));
                }
                for a in &req.assignments {
                    if a.assignment.len() > MAX_ASSIGNMENT_BYTES {
                        return Err(Error::LimitExceeded {
                            what: "assignment bytes of one group member",
                            asked: a.assignment.len() as u64,
                            limit: MAX_ASSIGNMENT_BYTES as u64,
                            setting: "(fixed)",
                        });
                    }
                }
                let total: usize = members(rec)
                    .iter()
                    .map(|m| metadata_bytes(&m.protocols))
                    .sum::<usize>()
                    + req
                        .assignments
                        .iter()
                        .map(|a| a.assignment.len())
                        .sum::<usize>();
                if total > MAX_GROUP_BYTES {
                    return Err(Error::LimitExceeded {
                        what: "metadata and assignment bytes of one group's members",
                        asked: total as u64,
                        limit: MAX_GROUP_BYTES as u64,
                        setting: "(fixed)",
                    });
                }
                let cr = rec_of(rec);
                // Partitions read from an assignment mean something only for consumers.
                let readable = cr.protocol_type == CONSUMER_PROTOCOL;
                for m in &mut cr.members {
                    // A member the leader gave nothing gets an empty assignment.
                    let a = req.assignments.iter().find(|a| a.member_id == m.member_id);
                    m.assignment = a.map(|a| a.assignment.clone()).unwrap_or_default();
                    m.assigned = a
                        .filter(|_| readable)
                        .map(|a| grouped(&a.partitions))
                        .unwrap_or_default();
                }
                cr.settled = true;
                self.phase = Phase::Stable;
                for (id, tx) in std::mem::take(&mut self.sync_waiters) {
                    let reply = self.sync_reply(rec, &id);
                    self.outbox.push(Delivery::Sync(tx, Ok(reply)));
                }
                tracing::info!(
                    group,
                    generation = rec.generation,
                    "classic group is stable"
                );
                Ok(Synced::Done(self.sync_reply(rec, &req.member_id)))
            }
        }
    }

    fn sync_reply(&self, rec: &GroupRecord, id: &str) -> SyncReply {
        let cr = rec.classic.as_ref().expect("a classic group");
        SyncReply {
            protocol_type: cr.protocol_type.clone(),
            protocol: cr.protocol.clone().unwrap_or_default(),
            assignment: member(rec, id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        }
    }

    fn touch(&mut self, rec: &GroupRecord, id: &str, now: Now) {
        if let Some(m) = member(rec, id) {
            let session = Duration::from_millis(u64::from(m.session_timeout_ms));
            self.session_deadline
                .insert(id.to_string(), now.at + session);
        }
    }

    /// A member's Heartbeat: keeps its session; tells it to rejoin while a round is on.
    pub(super) fn heartbeat(
        &mut self,
        group: &str,
        rec: &GroupRecord,
        member_id: &str,
        generation: i32,
        now: Now,
    ) -> Result<()> {
        self.check_member(group, rec, member_id, generation)?;
        self.touch(rec, member_id, now);
        match self.phase {
            Phase::Preparing { .. } | Phase::Empty => Err(Error::RebalanceInProgress {
                group: group.to_string(),
            }),
            Phase::AwaitingSync { .. } | Phase::Stable => Ok(()),
        }
    }

    /// Members leave (by member id, or by instance id for static members). One result per
    /// member, in order.
    pub(super) fn leave(
        &mut self,
        group: &str,
        rec: &mut GroupRecord,
        leaving: &[(String, Option<String>)],
        now: Now,
    ) -> Vec<Result<String>> {
        let mut out = Vec::with_capacity(leaving.len());
        let mut left = false;
        for (member_id, instance) in leaving {
            let found = members(rec)
                .iter()
                .find(|m| match instance {
                    Some(i) => m.instance_id.as_ref() == Some(i),
                    None => m.member_id == *member_id,
                })
                .map(|m| m.member_id.clone());
            match found {
                Some(id) if member_id.is_empty() || *member_id == id => {
                    self.remove(group, rec, &id);
                    left = true;
                    out.push(Ok(id));
                }
                Some(_) => out.push(Err(Error::FencedInstance {
                    group: group.to_string(),
                    instance: instance.clone().unwrap_or_default(),
                })),
                None if self.pending.remove(member_id).is_some() => out.push(Ok(member_id.clone())),
                None => out.push(Err(self.unknown_member(group, member_id))),
            }
        }
        if left {
            self.after_removal(group, rec, now, "members left");
        }
        out
    }

    fn remove(&mut self, group: &str, rec: &mut GroupRecord, id: &str) {
        if let Some(cr) = rec.classic.as_mut() {
            cr.members.retain(|m| m.member_id != id);
        }
        self.session_deadline.remove(id);
        self.fail_waiters(id, || Error::UnknownMember {
            group: group.to_string(),
            member: id.to_string(),
        });
    }

    /// Answers `id`'s parked join and sync requests, if any, with `err`.
    fn fail_waiters(&mut self, id: &str, err: impl Fn() -> Error) {
        if let Some(tx) = self.join_waiters.remove(id) {
            self.outbox.push(Delivery::Join(tx, Err(err())));
        }
        if let Some(tx) = self.sync_waiters.remove(id) {
            self.outbox.push(Delivery::Sync(tx, Err(err())));
        }
    }

    /// After members were removed: a new round for those left, or an empty group.
    fn after_removal(&mut self, group: &str, rec: &mut GroupRecord, now: Now, why: &str) {
        if members(rec).is_empty() {
            // The round ends at once with nobody: the generation moves on, the group is
            // empty.
            self.phase = Phase::Preparing {
                deadline: now.at,
                not_before: now.at,
            };
            self.complete(group, rec, now);
            return;
        }
        if !matches!(self.phase, Phase::Preparing { .. }) {
            self.prepare(group, rec, now, why);
        }
        self.maybe_complete(group, rec, now);
    }

    /// Session and round timeouts.
    pub(super) fn tick(&mut self, group: &str, rec: &mut GroupRecord, now: Now) {
        self.pending.retain(|_, until| *until > now.at);
        let waiting: BTreeSet<&String> = self
            .join_waiters
            .keys()
            .chain(self.sync_waiters.keys())
            .collect();
        // A member with a request parked here is alive.
        let expired: Vec<String> = members(rec)
            .iter()
            .filter(|m| !waiting.contains(&m.member_id))
            .filter(|m| {
                self.session_deadline
                    .get(&m.member_id)
                    .is_none_or(|d| now.at >= *d)
            })
            .map(|m| m.member_id.clone())
            .collect();
        for id in &expired {
            tracing::warn!(group, member = %id, "classic member's session timed out");
            self.remove(group, rec, id);
        }
        if let Phase::AwaitingSync { deadline } = self.phase
            && now.at >= deadline
        {
            // The leader never handed in the assignment: it and every member that did not
            // sync are removed; the rest join again.
            let stuck: Vec<String> = members(rec)
                .iter()
                .filter(|m| !self.sync_waiters.contains_key(&m.member_id))
                .map(|m| m.member_id.clone())
                .collect();
            for id in &stuck {
                tracing::warn!(group, member = %id, "classic member did not sync in time");
                self.remove(group, rec, id);
            }
            self.after_removal(group, rec, now, "the leader did not hand in the assignment");
            return;
        }
        if !expired.is_empty() {
            self.after_removal(group, rec, now, "members timed out");
        } else {
            self.maybe_complete(group, rec, now);
        }
    }

    /// Whether a commit by `member_id` at `generation` may land.
    pub(super) fn check_commit(
        &self,
        group: &str,
        rec: &GroupRecord,
        member_id: &str,
        generation: i32,
    ) -> Result<()> {
        self.check_member(group, rec, member_id, generation)?;
        if matches!(self.phase, Phase::AwaitingSync { .. }) {
            return Err(Error::RebalanceInProgress {
                group: group.to_string(),
            });
        }
        Ok(())
    }
}

fn new_member_id(client_id: &str) -> String {
    let prefix = if client_id.is_empty() {
        "member"
    } else {
        client_id
    };
    // A client id is the client's to choose: keep ids short and printable.
    let prefix: String = prefix
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(64)
        .collect();
    format!(
        "{prefix}-{:016x}{:016x}",
        fastrand::u64(..),
        fastrand::u64(..)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::group::Group;

    const DELAY: Duration = Duration::from_millis(3_000);

    struct Clock(Instant, i64);

    impl Clock {
        fn now(&self) -> Now {
            Now {
                at: self.0,
                ms: self.1,
            }
        }
        fn advance(&mut self, ms: u64) {
            self.0 += Duration::from_millis(ms);
            self.1 += ms as i64;
        }
    }

    fn no_topics() -> BTreeMap<String, u32> {
        BTreeMap::new()
    }

    fn join_req(member_id: &str, instance: Option<&str>, meta: &[u8]) -> JoinRequest {
        JoinRequest {
            group: "g".into(),
            member_id: member_id.into(),
            instance_id: instance.map(str::to_string),
            client_id: "c".into(),
            host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 20_000,
            protocol_type: "consumer".into(),
            protocols: vec![
                ClassicProtocol {
                    name: "range".into(),
                    metadata: meta.to_vec(),
                },
                ClassicProtocol {
                    name: "roundrobin".into(),
                    metadata: meta.to_vec(),
                },
            ],
            require_known_member_id: true,
            topics: vec!["t".into()],
        }
    }

    /// Delivers what the group queued, as the broker does after storing the record.
    fn flush(g: &mut Group) {
        for d in g.take_outbox() {
            d.deliver();
        }
    }

    fn wait_join(g: &mut Group, j: Joined) -> oneshot::Receiver<Result<JoinReply>> {
        flush(g);
        match j {
            Joined::Wait(rx) => rx,
            other => panic!("expected to wait, got {other:?}"),
        }
    }

    fn joined(rx: &mut oneshot::Receiver<Result<JoinReply>>) -> JoinReply {
        rx.try_recv().expect("answered").expect("joined")
    }

    /// A new member: its id first, then its join (which waits for the round).
    fn first_join(
        g: &mut Group,
        clock: &Clock,
        meta: &[u8],
    ) -> (String, oneshot::Receiver<Result<JoinReply>>) {
        let id = match g
            .classic_join(&join_req("", None, meta), clock.now(), DELAY)
            .unwrap()
        {
            Joined::MemberIdRequired(id) => id,
            other => panic!("expected MEMBER_ID_REQUIRED, got {other:?}"),
        };
        let j = g
            .classic_join(&join_req(&id, None, meta), clock.now(), DELAY)
            .unwrap();
        (id.clone(), wait_join(g, j))
    }

    fn sync(
        g: &mut Group,
        clock: &Clock,
        id: &str,
        generation: i32,
        assign: &[(&str, &[u8])],
    ) -> Synced {
        let s = g
            .classic_sync(
                &SyncRequest {
                    group: "g".into(),
                    member_id: id.into(),
                    generation,
                    assignments: assign
                        .iter()
                        .map(|(m, a)| MemberAssignment {
                            member_id: m.to_string(),
                            assignment: a.to_vec(),
                            partitions: vec![("t".into(), a.len() as u32)],
                        })
                        .collect(),
                    ..Default::default()
                },
                clock.now(),
            )
            .unwrap();
        flush(g);
        s
    }

    /// Two members form a group: (group, clock, leader id, follower id, generation).
    fn two_members() -> (Group, Clock, String, String, i32) {
        let mut clock = Clock(Instant::now(), 1_000);
        let mut g = Group::load("g", None, clock.now(), &no_topics()).unwrap();
        let (a, mut ra) = first_join(&mut g, &clock, b"a");
        clock.advance(100);
        let (b, mut rb) = first_join(&mut g, &clock, b"b");
        // All have joined, but a new group waits out its initial delay.
        g.tick(clock.now(), &no_topics());
        flush(&mut g);
        assert!(ra.try_recv().is_err(), "the round ended before the delay");
        assert_eq!(g.view().state, "PreparingRebalance");
        clock.advance(3_000);
        g.tick(clock.now(), &no_topics());
        flush(&mut g);
        let (ja, jb) = (joined(&mut ra), joined(&mut rb));
        assert_eq!(ja.generation, jb.generation);
        assert_eq!(ja.leader, a, "the first member leads");
        assert_eq!(ja.protocol, "range", "both prefer range");
        assert_eq!(ja.members.len(), 2, "the leader sees every member");
        assert!(jb.members.is_empty(), "a follower sees none");
        let metas: BTreeSet<Vec<u8>> = ja.members.iter().map(|m| m.metadata.clone()).collect();
        assert_eq!(metas, [b"a".to_vec(), b"b".to_vec()].into_iter().collect());
        assert_eq!(g.view().state, "CompletingRebalance");
        let generation = ja.generation;
        // The follower's sync waits for the leader's.
        let Synced::Wait(mut rx) = sync(&mut g, &clock, &b, generation, &[]) else {
            panic!("a follower's sync must wait for the leader's")
        };
        assert!(rx.try_recv().is_err());
        let Synced::Done(mine) = sync(&mut g, &clock, &a, generation, &[(&a, b"A"), (&b, b"BB")])
        else {
            panic!("the leader's sync ends the round")
        };
        assert_eq!(mine.assignment, b"A");
        assert_eq!(rx.try_recv().unwrap().unwrap().assignment, b"BB");
        assert_eq!(g.view().state, "Stable");
        assert!(g.record().classic.as_ref().unwrap().settled);
        (g, clock, a, b, generation)
    }

    #[test]
    fn members_join_the_leader_assigns_and_everyone_gets_its_part() {
        let (mut g, clock, a, b, generation) = two_members();
        g.classic_heartbeat(&a, generation, clock.now()).unwrap();
        g.classic_heartbeat(&b, generation, clock.now()).unwrap();
        g.check_commit(&a, generation).unwrap();
        let err = g.check_commit(&a, generation - 1).unwrap_err();
        assert!(matches!(err, Error::IllegalGeneration { .. }), "{err}");
        let err = g.check_commit("nobody", generation).unwrap_err();
        assert!(matches!(err, Error::UnknownMember { .. }), "{err}");
        // Simple commits are refused while the group has members.
        assert!(g.check_commit("", -1).is_err());
        let view = g.view();
        assert!(view.classic);
        assert_eq!(view.members.len(), 2);
        let b_view = view.members.iter().find(|m| m.member_id == b).unwrap();
        assert_eq!(b_view.assignment, b"BB");
        assert_eq!(b_view.owned, vec![("t".to_string(), 2)]);
        assert_eq!(b_view.metadata, b"b");
    }

    #[test]
    fn a_leave_starts_a_round_that_ends_when_the_rest_rejoin() {
        let (mut g, mut clock, a, b, generation) = two_members();
        let left = g.classic_leave(&[(a.clone(), None)], clock.now());
        assert!(left[0].is_ok());
        flush(&mut g);
        let err = g
            .classic_heartbeat(&b, generation, clock.now())
            .unwrap_err();
        assert!(matches!(err, Error::RebalanceInProgress { .. }), "{err}");
        // While preparing, the member may still commit what it processed.
        g.check_commit(&b, generation).unwrap();
        clock.advance(100);
        let j = g
            .classic_join(&join_req(&b, None, b"b"), clock.now(), DELAY)
            .unwrap();
        let mut rx = wait_join(&mut g, j);
        let r = joined(&mut rx);
        assert_eq!(
            r.generation,
            generation + 1,
            "the round ends as the last rejoins"
        );
        assert_eq!(r.leader, b, "the leader left: the next one leads");
        let err = g.check_commit(&b, r.generation).unwrap_err();
        assert!(
            matches!(err, Error::RebalanceInProgress { .. }),
            "no commits while the assignment is awaited: {err}"
        );
        let err = g
            .classic_heartbeat(&a, generation, clock.now())
            .unwrap_err();
        assert!(matches!(err, Error::UnknownMember { .. }), "{err}");
    }

    #[test]
    fn a_silent_member_is_removed_after_its_session_and_a_laggard_after_the_round() {
        let (mut g, mut clock, a, b, generation) = two_members();
        for _ in 0..4 {
            clock.advance(3_000);
            g.classic_heartbeat(&a, generation, clock.now()).unwrap();
            g.tick(clock.now(), &no_topics());
        }
        flush(&mut g);
        // b said nothing for 12 s (session 10 s): gone, and a round started.
        let view = g.view();
        assert_eq!(view.members.len(), 1);
        assert_eq!(view.state, "PreparingRebalance");
        let err = g
            .classic_heartbeat(&b, generation, clock.now())
            .unwrap_err();
        assert!(matches!(err, Error::UnknownMember { .. }), "{err}");
        // a never rejoins: at the rebalance timeout (20 s) it is removed too.
        clock.advance(20_001);
        g.tick(clock.now(), &no_topics());
        flush(&mut g);
        assert_eq!(g.view().state, "Empty");
        assert!(g.is_empty());
        assert_eq!(g.record().generation, generation + 1);
        assert!(g.record().empty_since_ms.is_some());
        g.check_commit("", -1).unwrap();
    }

    #[test]
    fn a_static_member_comes_back_without_a_rebalance_and_its_old_id_is_fenced() {
        let mut clock = Clock(Instant::now(), 1_000);
        let mut g = Group::load("g", None, clock.now(), &no_topics()).unwrap();
        let j = g
            .classic_join(&join_req("", Some("i1"), b"x"), clock.now(), DELAY)
            .unwrap();
        let mut r1 = wait_join(&mut g, j);
        let j = g
            .classic_join(&join_req("", Some("i2"), b"y"), clock.now(), DELAY)
            .unwrap();
        let mut r2 = wait_join(&mut g, j);
        clock.advance(3_000);
        g.tick(clock.now(), &no_topics());
        flush(&mut g);
        let (j1, j2) = (joined(&mut r1), joined(&mut r2));
        let generation = j1.generation;
        let (leader, follower) = if j1.leader == j1.member_id {
            (j1.member_id, j2.member_id)
        } else {
            (j2.member_id, j1.member_id)
        };
        sync(&mut g, &clock, &leader, generation, &[(&follower, b"F")]);
        let instance = g
            .view()
            .members
            .iter()
            .find(|m| m.member_id == follower)
            .unwrap()
            .instance_id
            .clone();
        // A zombie of the follower's earlier incarnation (another member id) is fenced.
        let err = g
            .classic_join(
                &join_req("stale-id", instance.as_deref(), b"y"),
                clock.now(),
                DELAY,
            )
            .unwrap_err();
        assert!(matches!(err, Error::FencedInstance { .. }), "{err}");
        // The follower restarts: same instance id, no member id, its metadata changed (a
        // consumer's names what it owned) but not the protocol the group would choose.
        let back = g
            .classic_join(
                &join_req("", instance.as_deref(), b"y2"),
                clock.now(),
                DELAY,
            )
            .unwrap();
        let Joined::Done(back) = back else {
            panic!("a static follower comes back at once, got {back:?}")
        };
        assert_eq!(back.generation, generation, "no rebalance");
        assert_ne!(back.member_id, follower);
        let Synced::Done(s) = sync(&mut g, &clock, &back.member_id, generation, &[]) else {
            panic!("stable")
        };
        assert_eq!(s.assignment, b"F", "it keeps its assignment");
        let err = g
            .classic_heartbeat(&follower, generation, clock.now())
            .unwrap_err();
        assert!(matches!(err, Error::FencedInstance { .. }), "{err}");
        g.classic_heartbeat(&leader, generation, clock.now())
            .unwrap();
    }

    #[test]
    fn mismatched_protocols_and_mixed_group_protocols_are_refused() {
        let (mut g, clock, _a, _b, _) = two_members();
        let mut other = join_req("", None, b"z");
        other.protocol_type = "connect".into();
        let err = g.classic_join(&other, clock.now(), DELAY).unwrap_err();
        assert!(
            matches!(err, Error::InconsistentGroupProtocol { .. }),
            "{err}"
        );
        let mut other = join_req("", None, b"z");
        other.protocols[0].name = "sticky".into();
        other.protocols[1].name = "cooperative-sticky".into();
        let err = g.classic_join(&other, clock.now(), DELAY).unwrap_err();
        assert!(
            matches!(err, Error::InconsistentGroupProtocol { .. }),
            "{err}"
        );
        // A server-side-assignment member cannot join a classic group...
        let err = g
            .heartbeat(
                &crate::group::HeartbeatRequest {
                    group: "g".into(),
                    member_epoch: 0,
                    subscription: Some(crate::group::Subscription {
                        topics: vec!["t".into()],
                        regex: None,
                    }),
                    ..Default::default()
                },
                clock.now(),
                &no_topics(),
            )
            .unwrap_err();
        assert!(
            matches!(err, Error::InconsistentGroupProtocol { .. }),
            "{err}"
        );
        // ...nor a classic member a group with server-side assignment.
        let mut g = Group::load("h", None, clock.now(), &no_topics()).unwrap();
        g.heartbeat(
            &crate::group::HeartbeatRequest {
                group: "h".into(),
                member_epoch: 0,
                subscription: Some(crate::group::Subscription {
                    topics: vec!["t".into()],
                    regex: None,
                }),
                ..Default::default()
            },
            clock.now(),
            &no_topics(),
        )
        .unwrap();
        let err = g
            .classic_join(&join_req("", None, b"q"), clock.now(), DELAY)
            .unwrap_err();
        assert!(
            matches!(err, Error::InconsistentGroupProtocol { .. }),
            "{err}"
        );
    }

    #[test]
    fn a_leader_that_never_syncs_is_removed_and_the_others_rejoin() {
        let mut clock = Clock(Instant::now(), 1_000);
        let mut g = Group::load("g", None, clock.now(), &no_topics()).unwrap();
        let (a, mut ra) = first_join(&mut g, &clock, b"a");
        let (b, mut rb) = first_join(&mut g, &clock, b"b");
        clock.advance(3_000);
        g.tick(clock.now(), &no_topics());
        flush(&mut g);
        let generation = joined(&mut ra).generation;
        joined(&mut rb);
        let Synced::Wait(mut rx) = sync(&mut g, &clock, &b, generation, &[]) else {
            panic!("the follower waits")
        };
        clock.advance(20_001);
        g.tick(clock.now(), &no_topics());
        flush(&mut g);
        let err = rx.try_recv().unwrap().unwrap_err();
        assert!(matches!(err, Error::RebalanceInProgress { .. }), "{err}");
        let view = g.view();
        assert_eq!(view.members.len(), 1);
        assert_eq!(view.members[0].member_id, b);
        assert!(view.members.iter().all(|m| m.member_id != a));
    }

    #[test]
    fn a_settled_group_loaded_by_a_new_coordinator_carries_on() {
        let (g, clock, a, b, generation) = two_members();
        let rec = g.record().clone();
        let json = serde_json::to_string(&rec).unwrap();
        let rec: GroupRecord = serde_json::from_str(&json).unwrap();
        let mut g = Group::load("g", Some(rec), clock.now(), &no_topics()).unwrap();
        assert_eq!(g.view().state, "Stable");
        g.classic_heartbeat(&a, generation, clock.now()).unwrap();
        g.classic_heartbeat(&b, generation, clock.now()).unwrap();
        let Synced::Done(s) = sync(&mut g, &clock, &b, generation, &[]) else {
            panic!("stable")
        };
        assert_eq!(s.assignment, b"BB", "assignments survive the move");
    }

    #[test]
    fn limits_cut_long_rebalance_timeouts_and_refuse_oversized_groups() {
        let clock = Clock(Instant::now(), 1_000);
        let mut g = Group::load("g", None, clock.now(), &no_topics()).unwrap();
        let mut req = join_req("", None, &[7u8; 30 * 1024]);
        req.require_known_member_id = false;
        // A consumer's max.poll.interval.ms of an hour is its rebalance timeout: cut, not
        // refused.
        req.rebalance_timeout_ms = 3_600_000;
        let mut joined = 0;
        let err = loop {
            match g.classic_join(&req, clock.now(), DELAY) {
                Ok(_) => joined += 1,
                Err(e) => break e,
            }
            assert!(joined < 100, "the group never filled up");
        };
        flush(&mut g);
        assert!(matches!(err, Error::LimitExceeded { .. }), "{err}");
        // Two protocols of 30 KiB each per member: 14 fit in 900 KiB, the 15th does not.
        assert_eq!(joined, 14);
        let cr = g.record().classic.as_ref().unwrap();
        assert!(
            cr.members
                .iter()
                .all(|m| m.rebalance_timeout_ms == 1_800_000)
        );
        let json = serde_json::to_vec(g.record()).unwrap();
        assert!(
            json.len() < 1_500_000,
            "the record fits one etcd write: {}",
            json.len()
        );
    }

    #[test]
    fn a_member_that_lost_its_join_answer_gets_the_same_generation_back() {
        let mut clock = Clock(Instant::now(), 1_000);
        let mut g = Group::load("g", None, clock.now(), &no_topics()).unwrap();
        let (a, mut ra) = first_join(&mut g, &clock, b"a");
        let (b, mut rb) = first_join(&mut g, &clock, b"b");
        clock.advance(3_000);
        g.tick(clock.now(), &no_topics());
        flush(&mut g);
        let first = joined(&mut ra);
        joined(&mut rb);
        // The leader's answer was lost: it joins again, unchanged, while the group awaits
        // its assignment, and gets the same generation with every member.
        let again = g
            .classic_join(&join_req(&a, None, b"a"), clock.now(), DELAY)
            .unwrap();
        let Joined::Done(again) = again else {
            panic!("expected the current generation, got {again:?}")
        };
        assert_eq!(again, first);
        let Synced::Done(_) = sync(&mut g, &clock, &a, first.generation, &[(&b, b"B")]) else {
            panic!("the leader's sync ends the round")
        };
        // A join sent twice: the older request is told to join again, not left hanging.
        let j1 = g
            .classic_join(&join_req(&b, None, b"b-new"), clock.now(), DELAY)
            .unwrap();
        let mut r1 = wait_join(&mut g, j1);
        let j2 = g
            .classic_join(&join_req(&b, None, b"b-new"), clock.now(), DELAY)
            .unwrap();
        let _r2 = wait_join(&mut g, j2);
        let err = r1.try_recv().unwrap().unwrap_err();
        assert!(matches!(err, Error::RebalanceInProgress { .. }), "{err}");
    }
}
