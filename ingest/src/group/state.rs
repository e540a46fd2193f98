//! One group's coordination state machine. Pure: the time and the cluster's topics come in as
//! arguments, and the caller stores [`Group::record`] whenever it changed.
//!
//! Invariants (checked by the tests below):
//! - a partition is in at most one member's `owned` set: it is granted only when no other
//!   member holds it, and a member's holding ends only when it reports it gave the partition
//!   up, or when it is removed (left, session timed out, or did not give up a revoked
//!   partition within its rebalance timeout);
//! - the generation grows by one with every change of membership, subscription or subscribed
//!   partitions, never otherwise, and never decreases;
//! - a member reaches the current generation only once it holds nothing it must give up:
//!   under an eager strategy nothing at all, under the cooperative one nothing outside its
//!   target.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use meta::{GroupRecord, MemberRecord};

use super::assign::{MemberInput, Strategy, Tp};
use super::classic::{Classic, Delivery, JoinRequest, Joined, SyncRequest, Synced};
use super::{GroupView, HeartbeatReply, HeartbeatRequest, MemberView, Subscription};
use crate::error::{Error, Result};

/// Session timeouts a member may ask for.
pub const SESSION_TIMEOUT_RANGE_MS: std::ops::RangeInclusive<u32> = 500..=1_800_000;
pub const DEFAULT_SESSION_TIMEOUT_MS: u32 = 45_000;
pub const DEFAULT_REBALANCE_TIMEOUT_MS: u32 = 60_000;
/// The most members one group admits.
pub const MAX_MEMBERS: usize = 10_000;
/// The longest subscription regex (characters).
const MAX_REGEX_LEN: usize = 1_000;

/// The time, in both forms the state needs.
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub at: Instant,
    /// Unix ms (stored timestamps).
    pub ms: i64,
}

pub struct Group {
    name: String,
    rec: GroupRecord,
    /// Member id → the partitions it should own at `rec.generation`.
    target: BTreeMap<String, BTreeSet<Tp>>,
    /// The subscribed topics' partition counts the target was computed from.
    resolved: BTreeMap<String, u32>,
    session_deadline: HashMap<String, Instant>,
    /// Members that hold partitions they must give up, since when.
    revoking_since: HashMap<String, Instant>,
    /// Member ids replaced by a static member's restart → the instance id.
    fenced: HashMap<String, String>,
    regexes: HashMap<String, regex::Regex>,
    next_member: u64,
    /// The classic protocol's members, when the group has those.
    classic: Classic,
}

fn tps(owned: &BTreeMap<String, Vec<u32>>) -> BTreeSet<Tp> {
    owned
        .iter()
        .flat_map(|(t, ps)| ps.iter().map(move |p| (t.clone(), *p)))
        .collect()
}

fn owned_map(set: &BTreeSet<Tp>) -> BTreeMap<String, Vec<u32>> {
    let mut out: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (t, p) in set {
        out.entry(t.clone()).or_default().push(*p);
    }
    out
}

/// Whether `member` may read `topic`/`partition` now: `rec` has the partition with it (at
/// most one member of a group holds a partition in `owned`, so a fetch that passes is the
/// partition's only reader in the group).
pub fn check_fetch(
    group: &str,
    rec: &GroupRecord,
    member: &str,
    epoch: i32,
    topic: &str,
    partition: u32,
) -> Result<()> {
    let Some(m) = rec.members.iter().find(|m| m.member_id == member) else {
        return Err(Error::UnknownMember {
            group: group.to_string(),
            member: member.to_string(),
        });
    };
    if m.owned.get(topic).is_some_and(|ps| ps.contains(&partition)) {
        return Ok(());
    }
    Err(Error::PartitionNotHeld {
        group: group.to_string(),
        member: member.to_string(),
        epoch,
        topic: topic.to_string(),
        partition,
    })
}

fn compile(re: &str) -> Result<regex::Regex> {
    if re.len() > MAX_REGEX_LEN {
        return Err(Error::InvalidRequest(format!(
            "a subscription regex may have at most {MAX_REGEX_LEN} characters, got {}",
            re.len()
        )));
    }
    regex::RegexBuilder::new(&format!("^(?:{re})$"))
        .size_limit(1 << 20)
        .build()
        .map_err(|e| Error::InvalidRequest(format!("subscription regex {re:?}: {e}")))
}

impl Group {
    /// The group as stored (`None`: a new group), every member given a fresh session.
    pub fn load(
        name: &str,
        rec: Option<GroupRecord>,
        now: Now,
        topics: &BTreeMap<String, u32>,
    ) -> Result<Group> {
        let rec = rec.unwrap_or_default();
        let mut g = Group {
            name: name.to_string(),
            target: BTreeMap::new(),
            resolved: BTreeMap::new(),
            session_deadline: HashMap::new(),
            revoking_since: HashMap::new(),
            fenced: HashMap::new(),
            regexes: HashMap::new(),
            next_member: 0,
            classic: Classic::load(&rec, now),
            rec,
        };
        for m in &g.rec.members {
            let session = Duration::from_millis(u64::from(m.session_timeout_ms));
            g.session_deadline
                .insert(m.member_id.clone(), now.at + session);
            if let Some(re) = &m.regex {
                g.regexes.insert(re.clone(), compile(re)?);
            }
        }
        g.compute_target(topics);
        Ok(g)
    }

    pub fn record(&self) -> &GroupRecord {
        &self.rec
    }

    pub fn is_empty(&self) -> bool {
        self.rec.is_empty()
    }

    /// Replies that wait for the record to be stored (see [`Delivery`]).
    pub fn take_outbox(&mut self) -> Vec<Delivery> {
        self.classic.take_outbox()
    }

    fn has_classic_members(&self) -> bool {
        self.rec
            .classic
            .as_ref()
            .is_some_and(|c| !c.members.is_empty())
    }

    /// A classic member's JoinGroup. `initial_delay`: how long a new group waits for more
    /// members before its first round ends.
    pub fn classic_join(
        &mut self,
        req: &JoinRequest,
        now: Now,
        initial_delay: Duration,
    ) -> Result<Joined> {
        self.classic
            .join(&self.name, &mut self.rec, req, now, initial_delay)
    }

    /// A classic member's SyncGroup.
    pub fn classic_sync(&mut self, req: &SyncRequest, now: Now) -> Result<Synced> {
        self.classic.sync(&self.name, &mut self.rec, req, now)
    }

    /// A classic member's Heartbeat.
    pub fn classic_heartbeat(&mut self, member_id: &str, generation: i32, now: Now) -> Result<()> {
        if !self.has_classic_members() {
            return Err(Error::UnknownMember {
                group: self.name.clone(),
                member: member_id.to_string(),
            });
        }
        self.classic
            .heartbeat(&self.name, &self.rec, member_id, generation, now)
    }

    /// Classic members leave: (member id, instance id) each; a result per member.
    pub fn classic_leave(
        &mut self,
        leaving: &[(String, Option<String>)],
        now: Now,
    ) -> Vec<Result<String>> {
        self.classic.leave(&self.name, &mut self.rec, leaving, now)
    }

    fn strategy(&self) -> Strategy {
        Strategy::parse(&self.rec.assignor).unwrap_or(Strategy::CooperativeSticky)
    }

    fn member(&self, id: &str) -> Option<&MemberRecord> {
        self.rec.members.iter().find(|m| m.member_id == id)
    }

    fn member_mut(&mut self, id: &str) -> Option<&mut MemberRecord> {
        self.rec.members.iter_mut().find(|m| m.member_id == id)
    }

    /// The existing topics a member subscribes to.
    fn resolve(&self, m: &MemberRecord, topics: &BTreeMap<String, u32>) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = m
            .topics
            .iter()
            .filter(|t| topics.contains_key(*t))
            .cloned()
            .collect();
        if let Some(re) = m.regex.as_ref().and_then(|r| self.regexes.get(r)) {
            out.extend(topics.keys().filter(|t| re.is_match(t)).cloned());
        }
        out
    }

    /// The subscribed topics' partition counts.
    fn subscribed(&self, topics: &BTreeMap<String, u32>) -> BTreeMap<String, u32> {
        let mut out = BTreeMap::new();
        for m in &self.rec.members {
            for t in self.resolve(m, topics) {
                out.insert(t.clone(), topics[&t]);
            }
        }
        out
    }

    fn compute_target(&mut self, topics: &BTreeMap<String, u32>) {
        let inputs: Vec<MemberInput> = self
            .rec
            .members
            .iter()
            .map(|m| MemberInput {
                member_id: m.member_id.clone(),
                sort_key: m.instance_id.clone().unwrap_or_else(|| m.member_id.clone()),
                topics: self.resolve(m, topics),
                owned: tps(&m.owned),
            })
            .collect();
        self.resolved = self.subscribed(topics);
        self.target = self.strategy().assign(&inputs, &self.resolved);
    }

    /// A new generation: the target is computed again for the members as they are now.
    fn rebalance(&mut self, now: Now, topics: &BTreeMap<String, u32>, why: &str) {
        self.rec.generation += 1;
        self.rec.empty_since_ms = if self.rec.is_empty() {
            Some(now.ms)
        } else {
            None
        };
        self.compute_target(topics);
        tracing::info!(
            group = %self.name,
            generation = self.rec.generation,
            members = self.rec.members.len(),
            why,
            "rebalance"
        );
    }

    /// Sets a member's subscription; a change starts a new generation.
    fn resubscribe(
        &mut self,
        id: &str,
        sub: &Subscription,
        now: Now,
        topics: &BTreeMap<String, u32>,
        why: &str,
    ) {
        let m = self
            .member_mut(id)
            .expect("resubscribe is called for members");
        if m.topics != sub.topics || m.regex != sub.regex {
            m.topics = sub.topics.clone();
            m.regex = sub.regex.clone();
            self.rebalance(now, topics, why);
        }
    }

    fn remove(&mut self, id: &str) {
        self.rec.members.retain(|m| m.member_id != id);
        self.session_deadline.remove(id);
        self.revoking_since.remove(id);
    }

    fn new_member_id(&mut self, client_id: &str) -> String {
        self.next_member += 1;
        let prefix = if client_id.is_empty() {
            "member"
        } else {
            client_id
        };
        format!(
            "{prefix}-{:016x}{:04x}",
            fastrand::u64(..),
            self.next_member & 0xffff
        )
    }

    fn unknown_member(&self, id: &str) -> Error {
        match self.fenced.get(id) {
            Some(instance) => Error::FencedInstance {
                group: self.name.clone(),
                instance: instance.clone(),
            },
            None => Error::UnknownMember {
                group: self.name.clone(),
                member: id.to_string(),
            },
        }
    }

    fn check_subscription(&mut self, s: &Subscription) -> Result<()> {
        if s.topics.is_empty() && s.regex.is_none() {
            return Err(Error::InvalidRequest(
                "a member must subscribe to at least one topic or a regex".into(),
            ));
        }
        for t in &s.topics {
            meta::validate_topic_name(t).map_err(|e| Error::InvalidRequest(e.to_string()))?;
        }
        if let Some(re) = &s.regex
            && !self.regexes.contains_key(re)
        {
            let compiled = compile(re)?;
            self.regexes.insert(re.clone(), compiled);
        }
        Ok(())
    }

    fn check_timeouts(req: &HeartbeatRequest) -> Result<(u32, u32)> {
        let session = match req.session_timeout_ms {
            0 => DEFAULT_SESSION_TIMEOUT_MS,
            ms if SESSION_TIMEOUT_RANGE_MS.contains(&ms) => ms,
            ms => {
                return Err(Error::InvalidRequest(format!(
                    "session timeout {ms} ms is outside {}..={} ms",
                    SESSION_TIMEOUT_RANGE_MS.start(),
                    SESSION_TIMEOUT_RANGE_MS.end()
                )));
            }
        };
        let rebalance = match req.rebalance_timeout_ms {
            0 => DEFAULT_REBALANCE_TIMEOUT_MS,
            ms if SESSION_TIMEOUT_RANGE_MS.contains(&ms) => ms,
            ms => {
                return Err(Error::InvalidRequest(format!(
                    "rebalance timeout {ms} ms is outside {}..={} ms",
                    SESSION_TIMEOUT_RANGE_MS.start(),
                    SESSION_TIMEOUT_RANGE_MS.end()
                )));
            }
        };
        Ok((session, rebalance))
    }

    /// A member's heartbeat (join, leave, or keep alive and report what it holds).
    pub fn heartbeat(
        &mut self,
        req: &HeartbeatRequest,
        now: Now,
        topics: &BTreeMap<String, u32>,
    ) -> Result<HeartbeatReply> {
        let id = match req.member_epoch {
            -1 | -2 => return self.leave(req, now, topics),
            0 => self.join(req, now, topics)?,
            e if e < 0 => {
                return Err(Error::InvalidRequest(format!(
                    "member epoch {e}: 0 joins, -1 leaves, -2 leaves for a restart (static \
                     members), a positive epoch keeps the member alive"
                )));
            }
            e => {
                let id = req.member_id.as_str();
                let Some(m) = self.member(id) else {
                    return Err(self.unknown_member(id));
                };
                if e != m.member_epoch {
                    return Err(Error::IllegalGeneration {
                        group: self.name.clone(),
                        member: id.to_string(),
                        got: e,
                        current: m.member_epoch,
                    });
                }
                let session = Duration::from_millis(u64::from(m.session_timeout_ms));
                self.session_deadline
                    .insert(id.to_string(), now.at + session);
                if let Some(owned) = &req.owned {
                    let reported: BTreeSet<Tp> = owned.iter().cloned().collect();
                    let m = self.member_mut(id).expect("checked above");
                    let kept: BTreeSet<Tp> =
                        tps(&m.owned).intersection(&reported).cloned().collect();
                    m.owned = owned_map(&kept);
                }
                if let Some(s) = &req.subscription {
                    self.check_subscription(s)?;
                    self.resubscribe(id, s, now, topics, "a member changed its subscription");
                }
                id.to_string()
            }
        };
        Ok(self.reconcile(&id, now))
    }

    /// Joins a new member, or brings one back: a static member's restart (same instance id)
    /// takes over its old self's partitions without a rebalance; a member rejoining under its
    /// id after it dropped everything starts from nothing. Returns the member id.
    fn join(
        &mut self,
        req: &HeartbeatRequest,
        now: Now,
        topics: &BTreeMap<String, u32>,
    ) -> Result<String> {
        let Some(sub) = &req.subscription else {
            return Err(Error::InvalidRequest(
                "a join must carry the member's subscription".into(),
            ));
        };
        if self.has_classic_members() {
            return Err(Error::InconsistentGroupProtocol {
                group: self.name.clone(),
                why: "the group's members use the classic protocol (JoinGroup/SyncGroup); a \
                      member with server-side assignment cannot join it until they leave"
                    .into(),
            });
        }
        self.check_subscription(sub)?;
        let (session_ms, rebalance_ms) = Self::check_timeouts(req)?;
        if let Some(name) = &req.assignor {
            let Some(strategy) = Strategy::parse(name) else {
                return Err(Error::UnsupportedAssignor {
                    group: self.name.clone(),
                    assignor: name.clone(),
                    known: Strategy::NAMES.join(", "),
                });
            };
            if self.rec.members.is_empty() {
                self.rec.assignor = strategy.name().to_string();
            } else if strategy != self.strategy() {
                return Err(Error::InconsistentAssignor {
                    group: self.name.clone(),
                    assignor: name.clone(),
                    current: self.strategy().name().to_string(),
                });
            }
        } else if self.rec.members.is_empty() {
            self.rec.assignor = Strategy::CooperativeSticky.name().to_string();
        }
        let session = Duration::from_millis(u64::from(session_ms));
        // A static member coming back (after a restart, or replacing a live twin, which is
        // fenced): same partitions, same epoch, a new member id.
        if let Some(instance) = &req.instance_id
            && let Some(old) = self
                .rec
                .members
                .iter()
                .find(|m| m.instance_id.as_deref() == Some(instance.as_str()))
                .map(|m| m.member_id.clone())
        {
            let id = self.new_member_id(&req.client_id);
            self.fenced.insert(old.clone(), instance.clone());
            self.session_deadline.remove(&old);
            if let Some(since) = self.revoking_since.remove(&old) {
                self.revoking_since.insert(id.clone(), since);
            }
            if let Some(t) = self.target.remove(&old) {
                self.target.insert(id.clone(), t);
            }
            let m = self.member_mut(&old).expect("found above");
            m.member_id = id.clone();
            m.away = false;
            m.client_id = req.client_id.clone();
            m.host = req.host.clone();
            m.session_timeout_ms = session_ms;
            m.rebalance_timeout_ms = rebalance_ms;
            self.session_deadline.insert(id.clone(), now.at + session);
            self.resubscribe(
                &id,
                sub,
                now,
                topics,
                "a static member came back with a new subscription",
            );
            tracing::info!(group = %self.name, instance, member = %id, "static member is back");
            return Ok(id);
        }
        if let Some(instance) = self.fenced.get(&req.member_id) {
            return Err(Error::FencedInstance {
                group: self.name.clone(),
                instance: instance.clone(),
            });
        }
        // A member rejoining under its id: it has dropped everything it held.
        if !req.member_id.is_empty()
            && let Some(m) = self.member_mut(&req.member_id)
        {
            m.owned.clear();
            m.member_epoch = 0;
            m.session_timeout_ms = session_ms;
            m.rebalance_timeout_ms = rebalance_ms;
            let id = req.member_id.clone();
            self.revoking_since.remove(&id);
            self.session_deadline.insert(id.clone(), now.at + session);
            self.resubscribe(
                &id,
                sub,
                now,
                topics,
                "a member rejoined with a new subscription",
            );
            return Ok(id);
        }
        if self.rec.members.len() >= MAX_MEMBERS {
            return Err(Error::LimitExceeded {
                what: "members of one group",
                asked: self.rec.members.len() as u64 + 1,
                limit: MAX_MEMBERS as u64,
                setting: "(fixed)",
            });
        }
        let id = if req.member_id.is_empty() {
            self.new_member_id(&req.client_id)
        } else {
            req.member_id.clone()
        };
        self.rec.members.push(MemberRecord {
            member_id: id.clone(),
            instance_id: req.instance_id.clone(),
            client_id: req.client_id.clone(),
            host: req.host.clone(),
            session_timeout_ms: session_ms,
            rebalance_timeout_ms: rebalance_ms,
            topics: sub.topics.clone(),
            regex: sub.regex.clone(),
            member_epoch: 0,
            owned: BTreeMap::new(),
            away: false,
        });
        self.session_deadline.insert(id.clone(), now.at + session);
        self.rebalance(now, topics, "a member joined");
        Ok(id)
    }

    fn leave(
        &mut self,
        req: &HeartbeatRequest,
        now: Now,
        topics: &BTreeMap<String, u32>,
    ) -> Result<HeartbeatReply> {
        let id = req.member_id.as_str();
        let Some(m) = self.member_mut(id) else {
            return Err(self.unknown_member(id));
        };
        if req.member_epoch == -2 {
            if m.instance_id.is_none() {
                return Err(Error::InvalidRequest(
                    "only a static member (with an instance id) can leave for a restart".into(),
                ));
            }
            // It keeps its partitions until its session times out or it comes back.
            m.away = true;
            tracing::info!(group = %self.name, member = id, "static member left for a restart");
        } else {
            self.remove(id);
            self.rebalance(now, topics, "a member left");
        }
        Ok(HeartbeatReply {
            member_id: id.to_string(),
            member_epoch: req.member_epoch,
            heartbeat_interval_ms: 0,
            assignment: Vec::new(),
        })
    }

    /// Moves a member toward its target: what it must give up first, then what is free.
    fn reconcile(&mut self, id: &str, now: Now) -> HeartbeatReply {
        let generation = self.rec.generation;
        let eager = self.strategy().is_eager();
        let target = self.target.get(id).cloned().unwrap_or_default();
        let held_by_others: BTreeSet<Tp> = self
            .rec
            .members
            .iter()
            .filter(|m| m.member_id != id)
            .flat_map(|m| tps(&m.owned))
            .collect();
        let m = self.member(id).expect("reconcile is called for members");
        let mut owned = tps(&m.owned);
        let mut member_epoch = m.member_epoch;
        let session_ms = m.session_timeout_ms;
        let mut may_consume = owned.clone();
        if member_epoch != generation {
            let revoke: BTreeSet<Tp> = if eager {
                owned.clone()
            } else {
                owned.difference(&target).cloned().collect()
            };
            if revoke.is_empty() {
                member_epoch = generation;
                self.revoking_since.remove(id);
            } else {
                self.revoking_since.entry(id.to_string()).or_insert(now.at);
                may_consume = owned.difference(&revoke).cloned().collect();
            }
        }
        if member_epoch == generation {
            for tp in &target {
                if !held_by_others.contains(tp) {
                    owned.insert(tp.clone());
                }
            }
            may_consume = owned.clone();
        }
        let settled = member_epoch == generation && owned == target;
        let m = self.member_mut(id).expect("checked above");
        m.member_epoch = member_epoch;
        m.owned = owned_map(&owned);
        // A settled member learns of the next rebalance at its next heartbeat: about 1 s.
        let base = (session_ms / 10).clamp(100, 1_000);
        HeartbeatReply {
            member_id: id.to_string(),
            member_epoch,
            // Sooner while the member has something to give up or to take.
            heartbeat_interval_ms: if settled { base } else { base.min(200) },
            assignment: may_consume.into_iter().collect(),
        }
    }

    /// Removes members whose session timed out or that kept a revoked partition past their
    /// rebalance timeout, and starts a generation when the subscribed topics changed.
    pub fn tick(&mut self, now: Now, topics: &BTreeMap<String, u32>) {
        self.classic.tick(&self.name, &mut self.rec, now);
        let mut gone = Vec::new();
        for m in &self.rec.members {
            let expired = self
                .session_deadline
                .get(&m.member_id)
                .is_some_and(|d| now.at >= *d);
            let stuck = self.revoking_since.get(&m.member_id).is_some_and(|since| {
                now.at >= *since + Duration::from_millis(u64::from(m.rebalance_timeout_ms))
            });
            if expired || stuck {
                tracing::warn!(
                    group = %self.name,
                    member = %m.member_id,
                    why = if expired { "session timed out" } else { "rebalance timed out" },
                    "removing member"
                );
                gone.push(m.member_id.clone());
            }
        }
        for id in &gone {
            self.remove(id);
        }
        if !gone.is_empty() {
            self.rebalance(now, topics, "members timed out");
        } else if self.subscribed(topics) != self.resolved {
            self.rebalance(now, topics, "subscribed topics or partitions changed");
        }
    }

    /// Whether a commit by `member_id` at `epoch` may land: a member of the group at its
    /// current epoch, or (no member id, epoch -1) anyone while the group has no members.
    pub fn check_commit(&self, member_id: &str, epoch: i32) -> Result<()> {
        if self.has_classic_members() && !member_id.is_empty() {
            return self
                .classic
                .check_commit(&self.name, &self.rec, member_id, epoch);
        }
        if member_id.is_empty() {
            if self.rec.is_empty() {
                return Ok(());
            }
            return Err(Error::UnknownMember {
                group: self.name.clone(),
                member: String::new(),
            });
        }
        let Some(m) = self.member(member_id) else {
            return Err(self.unknown_member(member_id));
        };
        if epoch != m.member_epoch {
            return Err(Error::IllegalGeneration {
                group: self.name.clone(),
                member: member_id.to_string(),
                got: epoch,
                current: m.member_epoch,
            });
        }
        Ok(())
    }

    /// What `groups describe` shows.
    pub fn view(&self) -> GroupView {
        if let Some(cr) = self.rec.classic.as_ref().filter(|c| !c.members.is_empty()) {
            let protocol = cr.protocol.clone().unwrap_or_default();
            return GroupView {
                group: self.name.clone(),
                state: self.classic.state(),
                generation: self.rec.generation,
                protocol_type: cr.protocol_type.clone(),
                classic: true,
                assignor: protocol.clone(),
                members: cr
                    .members
                    .iter()
                    .map(|m| {
                        let held: Vec<Tp> = tps(&m.assigned).into_iter().collect();
                        MemberView {
                            member_id: m.member_id.clone(),
                            instance_id: m.instance_id.clone(),
                            client_id: m.client_id.clone(),
                            host: m.host.clone(),
                            member_epoch: self.rec.generation,
                            topics: m.topics.clone(),
                            regex: None,
                            owned: held.clone(),
                            target: held,
                            metadata: m
                                .protocols
                                .iter()
                                .find(|p| p.name == protocol)
                                .map(|p| p.metadata.clone())
                                .unwrap_or_default(),
                            assignment: m.assignment.clone(),
                        }
                    })
                    .collect(),
            };
        }
        let settled = self.rec.members.iter().all(|m| {
            m.member_epoch == self.rec.generation
                && tps(&m.owned) == self.target.get(&m.member_id).cloned().unwrap_or_default()
        });
        GroupView {
            group: self.name.clone(),
            state: if self.rec.members.is_empty() {
                "Empty"
            } else if settled {
                "Stable"
            } else {
                "Reconciling"
            },
            generation: self.rec.generation,
            protocol_type: "consumer".to_string(),
            classic: false,
            assignor: self.rec.assignor.clone(),
            members: self
                .rec
                .members
                .iter()
                .map(|m| MemberView {
                    member_id: m.member_id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    host: m.host.clone(),
                    member_epoch: m.member_epoch,
                    topics: m.topics.clone(),
                    regex: m.regex.clone(),
                    owned: tps(&m.owned).into_iter().collect(),
                    target: self
                        .target
                        .get(&m.member_id)
                        .map(|t| t.iter().cloned().collect())
                        .unwrap_or_default(),
                    metadata: Vec::new(),
                    assignment: Vec::new(),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topics(n: u32) -> BTreeMap<String, u32> {
        [("t".to_string(), n)].into_iter().collect()
    }

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

    fn join(assignor: &str, instance: Option<&str>) -> HeartbeatRequest {
        HeartbeatRequest {
            group: "g".into(),
            member_epoch: 0,
            subscription: Some(Subscription {
                topics: vec!["t".into()],
                regex: None,
            }),
            assignor: Some(assignor.into()),
            instance_id: instance.map(str::to_string),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 20_000,
            ..Default::default()
        }
    }

    /// A simulated client: holds what the coordinator let it consume and reports it.
    struct Sim {
        id: String,
        epoch: i32,
        holds: BTreeSet<Tp>,
    }

    impl Sim {
        fn beat(&mut self, g: &mut Group, now: Now, t: &BTreeMap<String, u32>) -> HeartbeatReply {
            let r = g
                .heartbeat(
                    &HeartbeatRequest {
                        group: "g".into(),
                        member_id: self.id.clone(),
                        member_epoch: self.epoch,
                        owned: Some(self.holds.iter().cloned().collect()),
                        ..Default::default()
                    },
                    now,
                    t,
                )
                .unwrap();
            self.apply(&r);
            r
        }
        fn apply(&mut self, r: &HeartbeatReply) {
            self.id = r.member_id.clone();
            self.epoch = r.member_epoch;
            // Gives up what it may no longer consume, takes what it may.
            self.holds = r.assignment.iter().cloned().collect();
        }
    }

    fn at_most_one_owner(g: &Group, sims: &[Sim]) {
        let mut seen = BTreeSet::new();
        for m in &g.record().members {
            for tp in tps(&m.owned) {
                assert!(seen.insert(tp.clone()), "{tp:?} granted twice");
            }
        }
        let mut held = BTreeSet::new();
        for s in sims {
            for tp in &s.holds {
                assert!(
                    held.insert(tp.clone()),
                    "{tp:?} consumed by two members at once"
                );
            }
        }
    }

    fn settle(g: &mut Group, sims: &mut [Sim], clock: &Clock, t: &BTreeMap<String, u32>) {
        for _ in 0..10 {
            for i in 0..sims.len() {
                sims[i].beat(g, clock.now(), t);
                at_most_one_owner(g, sims);
            }
        }
        assert_eq!(g.view().state, "Stable", "{:?}", g.view());
    }

    fn start(
        g: &mut Group,
        req: HeartbeatRequest,
        clock: &Clock,
        t: &BTreeMap<String, u32>,
    ) -> Sim {
        let r = g.heartbeat(&req, clock.now(), t).unwrap();
        let mut s = Sim {
            id: String::new(),
            epoch: 0,
            holds: BTreeSet::new(),
        };
        s.apply(&r);
        s
    }

    #[test]
    fn members_share_partitions_and_never_overlap_through_joins_and_leaves() {
        for assignor in Strategy::NAMES {
            let clock = Clock(Instant::now(), 1_000);
            let t = topics(12);
            let mut g = Group::load("g", None, clock.now(), &t).unwrap();
            let mut sims = vec![start(&mut g, join(assignor, None), &clock, &t)];
            settle(&mut g, &mut sims, &clock, &t);
            assert_eq!(sims[0].holds.len(), 12);
            for _ in 0..3 {
                sims.push(start(&mut g, join(assignor, None), &clock, &t));
                settle(&mut g, &mut sims, &clock, &t);
            }
            assert!(sims.iter().all(|s| s.holds.len() == 3), "{assignor}");
            let gen_before = g.record().generation;
            // One leaves: the rest take its partitions.
            let gone = sims.remove(1);
            g.heartbeat(
                &HeartbeatRequest {
                    group: "g".into(),
                    member_id: gone.id.clone(),
                    member_epoch: -1,
                    ..Default::default()
                },
                clock.now(),
                &t,
            )
            .unwrap();
            assert_eq!(g.record().generation, gen_before + 1);
            settle(&mut g, &mut sims, &clock, &t);
            let total: usize = sims.iter().map(|s| s.holds.len()).sum();
            assert_eq!(total, 12, "{assignor}");
        }
    }

    #[test]
    fn cooperative_members_keep_consuming_what_stays_theirs() {
        let clock = Clock(Instant::now(), 1_000);
        let t = topics(12);
        let mut g = Group::load("g", None, clock.now(), &t).unwrap();
        let mut sims = Vec::new();
        for _ in 0..3 {
            sims.push(start(&mut g, join("cooperative-sticky", None), &clock, &t));
            settle(&mut g, &mut sims, &clock, &t);
        }
        let before: Vec<BTreeSet<Tp>> = sims.iter().map(|s| s.holds.clone()).collect();
        sims.push(start(&mut g, join("cooperative-sticky", None), &clock, &t));
        for _ in 0..5 {
            for i in 0..3 {
                sims[i].beat(&mut g, clock.now(), &t);
                let lost: Vec<&Tp> = before[i].difference(&sims[i].holds).collect();
                assert!(
                    lost.len() <= 1,
                    "member {i} stopped more than what moves: {lost:?}"
                );
            }
            sims[3].beat(&mut g, clock.now(), &t);
            at_most_one_owner(&g, &sims);
        }
        assert!(sims.iter().all(|s| s.holds.len() == 3));
    }

    #[test]
    fn eager_members_give_up_everything_before_anything_moves() {
        let clock = Clock(Instant::now(), 1_000);
        let t = topics(4);
        let mut g = Group::load("g", None, clock.now(), &t).unwrap();
        let mut sims = vec![start(&mut g, join("range", None), &clock, &t)];
        settle(&mut g, &mut sims, &clock, &t);
        sims.push(start(&mut g, join("range", None), &clock, &t));
        assert!(sims[1].holds.is_empty(), "nothing is free yet");
        let r = sims[0].beat(&mut g, clock.now(), &t);
        assert!(r.assignment.is_empty(), "eager: revoke all first");
        settle(&mut g, &mut sims, &clock, &t);
        assert_eq!(sims[0].holds.len(), 2);
    }

    #[test]
    fn a_silent_member_is_removed_after_its_session_and_its_partitions_move() {
        let mut clock = Clock(Instant::now(), 1_000);
        let t = topics(6);
        let mut g = Group::load("g", None, clock.now(), &t).unwrap();
        let mut sims = vec![
            start(&mut g, join("cooperative-sticky", None), &clock, &t),
            start(&mut g, join("cooperative-sticky", None), &clock, &t),
        ];
        settle(&mut g, &mut sims, &clock, &t);
        let dead = sims.remove(0);
        for _ in 0..4 {
            clock.advance(3_000);
            sims[0].beat(&mut g, clock.now(), &t);
            g.tick(clock.now(), &t);
        }
        assert_eq!(g.record().members.len(), 1);
        settle(&mut g, &mut sims, &clock, &t);
        assert_eq!(sims[0].holds.len(), 6);
        let err = g
            .heartbeat(
                &HeartbeatRequest {
                    group: "g".into(),
                    member_id: dead.id.clone(),
                    member_epoch: dead.epoch,
                    ..Default::default()
                },
                clock.now(),
                &t,
            )
            .unwrap_err();
        assert!(matches!(err, Error::UnknownMember { .. }), "{err}");
        assert!(matches!(
            g.check_commit(&dead.id, dead.epoch),
            Err(Error::UnknownMember { .. })
        ));
    }

    #[test]
    fn a_member_that_keeps_a_revoked_partition_past_its_rebalance_timeout_is_removed() {
        let mut clock = Clock(Instant::now(), 1_000);
        let t = topics(4);
        let mut g = Group::load("g", None, clock.now(), &t).unwrap();
        let mut sims = vec![start(&mut g, join("cooperative-sticky", None), &clock, &t)];
        settle(&mut g, &mut sims, &clock, &t);
        let mut newcomer = start(&mut g, join("cooperative-sticky", None), &clock, &t);
        // The first member heartbeats but never gives anything up.
        let stubborn = |g: &mut Group, s: &Sim, now| {
            g.heartbeat(
                &HeartbeatRequest {
                    group: "g".into(),
                    member_id: s.id.clone(),
                    member_epoch: s.epoch,
                    owned: Some(s.holds.iter().cloned().collect()),
                    ..Default::default()
                },
                now,
                &t,
            )
        };
        for _ in 0..8 {
            clock.advance(3_000);
            let _ = stubborn(&mut g, &sims[0], clock.now());
            newcomer.beat(&mut g, clock.now(), &t);
            g.tick(clock.now(), &t);
        }
        assert_eq!(
            g.record().members.len(),
            1,
            "removed after 20 s of not giving up"
        );
        let mut only = vec![newcomer];
        settle(&mut g, &mut only, &clock, &t);
        assert_eq!(only[0].holds.len(), 4);
    }

    #[test]
    fn stale_epochs_are_refused_for_heartbeats_and_commits() {
        let clock = Clock(Instant::now(), 1_000);
        let t = topics(4);
        let mut g = Group::load("g", None, clock.now(), &t).unwrap();
        let mut sims = vec![start(&mut g, join("cooperative-sticky", None), &clock, &t)];
        settle(&mut g, &mut sims, &clock, &t);
        let old = sims[0].epoch;
        sims.push(start(&mut g, join("cooperative-sticky", None), &clock, &t));
        settle(&mut g, &mut sims, &clock, &t);
        assert!(sims[0].epoch > old);
        assert!(matches!(
            g.check_commit(&sims[0].id, old),
            Err(Error::IllegalGeneration { .. })
        ));
        g.check_commit(&sims[0].id, sims[0].epoch).unwrap();
        assert!(matches!(
            g.check_commit("", -1),
            Err(Error::UnknownMember { .. })
        ));
        let err = g
            .heartbeat(
                &HeartbeatRequest {
                    group: "g".into(),
                    member_id: sims[0].id.clone(),
                    member_epoch: old,
                    ..Default::default()
                },
                clock.now(),
                &t,
            )
            .unwrap_err();
        assert!(matches!(err, Error::IllegalGeneration { .. }), "{err}");
    }

    #[test]
    fn a_static_member_comes_back_without_a_rebalance_and_fences_its_old_self() {
        let clock = Clock(Instant::now(), 1_000);
        let t = topics(4);
        let mut g = Group::load("g", None, clock.now(), &t).unwrap();
        let mut sims = vec![
            start(&mut g, join("cooperative-sticky", Some("a")), &clock, &t),
            start(&mut g, join("cooperative-sticky", Some("b")), &clock, &t),
        ];
        settle(&mut g, &mut sims, &clock, &t);
        let generation = g.record().generation;
        let held = sims[0].holds.clone();
        g.heartbeat(
            &HeartbeatRequest {
                group: "g".into(),
                member_id: sims[0].id.clone(),
                member_epoch: -2,
                ..Default::default()
            },
            clock.now(),
            &t,
        )
        .unwrap();
        let back = start(&mut g, join("cooperative-sticky", Some("a")), &clock, &t);
        assert_eq!(g.record().generation, generation, "no rebalance");
        assert_eq!(back.holds, held, "same partitions");
        let err = g.check_commit(&sims[0].id, sims[0].epoch).unwrap_err();
        assert!(matches!(err, Error::FencedInstance { .. }), "{err}");
    }

    #[test]
    fn a_group_reloaded_from_its_record_carries_on() {
        let clock = Clock(Instant::now(), 1_000);
        let t = topics(6);
        let mut g = Group::load("g", None, clock.now(), &t).unwrap();
        let mut sims = vec![
            start(&mut g, join("cooperative-sticky", None), &clock, &t),
            start(&mut g, join("cooperative-sticky", None), &clock, &t),
        ];
        settle(&mut g, &mut sims, &clock, &t);
        let record = g.record().clone();
        let mut g2 = Group::load("g", Some(record.clone()), clock.now(), &t).unwrap();
        settle(&mut g2, &mut sims, &clock, &t);
        assert_eq!(g2.record(), &record, "nothing moved, nothing to store");
    }

    #[test]
    fn bad_joins_get_clear_errors() {
        let clock = Clock(Instant::now(), 1_000);
        let t = topics(1);
        let mut g = Group::load("g", None, clock.now(), &t).unwrap();
        let err = g
            .heartbeat(&join("sticky-ish", None), clock.now(), &t)
            .unwrap_err();
        assert!(matches!(err, Error::UnsupportedAssignor { .. }), "{err}");
        g.heartbeat(&join("range", None), clock.now(), &t).unwrap();
        let err = g
            .heartbeat(&join("roundrobin", None), clock.now(), &t)
            .unwrap_err();
        assert!(matches!(err, Error::InconsistentAssignor { .. }), "{err}");
        let mut bad = join("range", None);
        bad.subscription = Some(Subscription {
            topics: vec![],
            regex: Some("(".into()),
        });
        let err = g.heartbeat(&bad, clock.now(), &t).unwrap_err();
        assert!(err.to_string().contains("regex"), "{err}");
        let mut bad = join("range", None);
        bad.session_timeout_ms = 1;
        assert!(g.heartbeat(&bad, clock.now(), &t).is_err());
        let err = g
            .heartbeat(
                &HeartbeatRequest {
                    group: "g".into(),
                    member_id: "nobody".into(),
                    member_epoch: 3,
                    ..Default::default()
                },
                clock.now(),
                &t,
            )
            .unwrap_err();
        assert!(matches!(err, Error::UnknownMember { .. }), "{err}");
    }

    #[test]
    fn regex_subscriptions_pick_up_new_topics_and_partitions() {
        let clock = Clock(Instant::now(), 1_000);
        let mut t = topics(2);
        let mut g = Group::load("g", None, clock.now(), &t).unwrap();
        let mut req = join("cooperative-sticky", None);
        req.subscription = Some(Subscription {
            topics: vec![],
            regex: Some("t.*".into()),
        });
        let mut sims = vec![start(&mut g, req, &clock, &t)];
        settle(&mut g, &mut sims, &clock, &t);
        assert_eq!(sims[0].holds.len(), 2);
        t.insert("tx".into(), 3);
        t.insert("other".into(), 5);
        t.insert("t".into(), 4);
        g.tick(clock.now(), &t);
        settle(&mut g, &mut sims, &clock, &t);
        assert_eq!(sims[0].holds.len(), 7);
    }
}
