//! [`GroupConsumer`]: a member of a consumer group. The group's coordinator (a node) decides
//! which partitions it reads; it reads them as [`Consumer`] does, and gives a partition up only
//! after committing what `poll` handed out of it.
//!
//! A background task sends heartbeats (at the interval the coordinator asks for) reporting
//! the partitions `poll` holds; the coordinator answers with what the member may consume.
//! `poll` applies that answer before it reads: partitions taken away are committed (when
//! `commit_on_revoke`), reported to the listener as revoked and dropped, then the heartbeat
//! task is woken so the coordinator learns at once; partitions granted start at the group's
//! committed offset, else where `offset_reset` says.
//!
//! When the coordinator no longer knows the member (its session timed out, or its epoch is
//! stale), its partitions are lost: dropped without a commit (the coordinator would refuse it),
//! reported as lost, and the member joins again under its id.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proto::v1 as pb;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::consumer::{ConsumedRecord, Consumer, ConsumerConfig, Member, SeekTo, Tp};
use crate::{Client, Error, ErrorCode, Result};

/// Where a granted partition without a committed offset starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetReset {
    Earliest,
    Latest,
}

#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub group: String,
    pub topics: Vec<String>,
    /// Also every topic whose whole name matches, as topics are created.
    pub regex: Option<String>,
    /// "range", "roundrobin" or "cooperative-sticky" (`None`: the group's; new groups use
    /// cooperative-sticky).
    pub assignor: Option<String>,
    /// Static membership (Kafka's `group.instance.id`): a restart keeps the partitions.
    pub instance_id: Option<String>,
    pub client_id: String,
    pub session_timeout: Duration,
    /// How long the member may take to give up a revoked partition (Kafka's
    /// `max.poll.interval.ms` plays this part): `poll` must be called at least this often.
    pub rebalance_timeout: Duration,
    /// Commit what `poll` handed out every this often (at the start of a `poll`).
    pub auto_commit: Option<Duration>,
    /// Commit a partition's position before giving it up.
    pub commit_on_revoke: bool,
    pub offset_reset: OffsetReset,
    pub max_bytes: u32,
    pub prefetch_messages: usize,
    pub max_poll_records: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        let c = ConsumerConfig::default();
        GroupConfig {
            group: String::new(),
            topics: Vec::new(),
            regex: None,
            assignor: None,
            instance_id: None,
            client_id: "tierlog-client".into(),
            session_timeout: Duration::from_secs(45),
            rebalance_timeout: Duration::from_secs(60),
            auto_commit: Some(Duration::from_secs(5)),
            commit_on_revoke: true,
            offset_reset: OffsetReset::Latest,
            max_bytes: c.max_bytes,
            prefetch_messages: c.prefetch_messages,
            max_poll_records: c.max_poll_records,
        }
    }
}

/// A change of what this member reads, as Kafka's `ConsumerRebalanceListener` sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rebalance {
    /// Granted: reading starts at the committed offset.
    Assigned(Vec<Tp>),
    /// Taken away in a rebalance; their positions were committed first (`commit_on_revoke`).
    Revoked(Vec<Tp>),
    /// Taken away without a chance to commit (the member timed out or was fenced).
    Lost(Vec<Tp>),
}

/// What the heartbeat task and `poll` share.
#[derive(Debug, Default)]
struct Shared {
    /// What `poll` holds now: reported in every heartbeat.
    held: BTreeSet<Tp>,
    /// The coordinator's latest word on what this member may consume.
    assignment: Option<BTreeSet<Tp>>,
    /// The member was dropped by the coordinator: `poll` drops everything, then the task
    /// joins again.
    lost: bool,
    /// An error `poll` should return (not retriable: a bad subscription, a fenced instance).
    failed: Option<Error>,
    stop: bool,
}

/// A refusal that means the group has moved on without this member's knowing.
fn is_fenced(e: &Error) -> bool {
    matches!(
        e.code(),
        Some(ErrorCode::UnknownMemberId | ErrorCode::IllegalGeneration)
    )
}

/// The rebalance callback.
type Listener = Box<dyn FnMut(&Rebalance) + Send>;

pub struct GroupConsumer {
    cfg: GroupConfig,
    consumer: Consumer,
    member: Member,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
    listener: Option<Listener>,
}

impl Drop for GroupConsumer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl GroupConsumer {
    /// Joins the group; partitions arrive with the following polls.
    pub async fn join(client: Client, cfg: GroupConfig) -> Result<GroupConsumer> {
        if cfg.group.is_empty() {
            return Err(Error::Server {
                code: ErrorCode::InvalidGroupId,
                message: "the group id is empty".into(),
                retriable: false,
            });
        }
        let inner = ConsumerConfig {
            group: Some(cfg.group.clone()),
            auto_commit: cfg.auto_commit,
            max_bytes: cfg.max_bytes,
            prefetch_messages: cfg.prefetch_messages,
            max_poll_records: cfg.max_poll_records,
        };
        let mut consumer =
            Consumer::empty(client.clone(), inner, cfg.prefetch_messages.max(1) * 16);
        let member: Member = Arc::new(tokio::sync::Mutex::new((String::new(), 0)));
        consumer.member = Some(member.clone());
        let shared = Arc::new(Mutex::new(Shared::default()));
        let wake = Arc::new(Notify::new());
        // The first heartbeat (the join) is sent here, so a bad subscription fails `join`.
        let first = heartbeat(&client, &cfg, &member, &shared).await?;
        let task = tokio::spawn(heartbeat_loop(
            client,
            cfg.clone(),
            member.clone(),
            shared.clone(),
            wake.clone(),
            first,
        ));
        Ok(GroupConsumer {
            cfg,
            consumer,
            member,
            shared,
            wake,
            task,
            listener: None,
        })
    }

    /// Called (inside `poll` and `close`) at every change of what this member reads.
    pub fn set_listener(&mut self, f: impl FnMut(&Rebalance) + Send + 'static) {
        self.listener = Some(Box::new(f));
    }

    /// The member id the coordinator handed out, and the member's epoch.
    pub async fn member(&self) -> (String, i32) {
        self.member.lock().await.clone()
    }

    /// The partitions this member reads now.
    pub fn assignment(&self) -> Vec<Tp> {
        self.consumer.positions().keys().cloned().collect()
    }

    /// The next offset this member reads, per partition.
    pub fn positions(&self) -> &BTreeMap<Tp, i64> {
        self.consumer.positions()
    }

    fn tell(&mut self, event: Rebalance) {
        tracing::debug!(group = %self.cfg.group, ?event, "rebalance");
        if let Some(f) = self.listener.as_mut() {
            f(&event);
        }
    }

    /// Applies the coordinator's latest answer: gives up, then takes.
    async fn rebalance(&mut self) -> Result<()> {
        let (lost, assignment, failed) = {
            let mut s = self.shared.lock().expect("shared lock");
            (s.lost, s.assignment.take(), s.failed.take())
        };
        if let Some(e) = failed {
            return Err(e);
        }
        if lost {
            let all = self.assignment();
            for tp in &all {
                self.consumer.remove(tp);
            }
            let mut s = self.shared.lock().expect("shared lock");
            s.held.clear();
            s.lost = false;
            drop(s);
            if !all.is_empty() {
                self.tell(Rebalance::Lost(all));
            }
            self.wake.notify_one();
            return Ok(());
        }
        let Some(target) = assignment else {
            return Ok(());
        };
        let held: BTreeSet<Tp> = self.consumer.positions().keys().cloned().collect();
        let revoked: Vec<Tp> = held.difference(&target).cloned().collect();
        let added: Vec<Tp> = target.difference(&held).cloned().collect();
        if !revoked.is_empty() {
            if self.cfg.commit_on_revoke {
                self.consumer.commit_partitions(Some(&revoked)).await?;
            }
            for tp in &revoked {
                self.consumer.remove(tp);
            }
            // The listener hears first; only then may a heartbeat report them given up.
            self.tell(Rebalance::Revoked(revoked));
            self.shared.lock().expect("shared lock").held =
                self.consumer.positions().keys().cloned().collect();
            // Tell the coordinator now: the next owner is waiting for these.
            self.wake.notify_one();
        }
        if !added.is_empty() {
            let client = self.consumer.client().clone();
            let committed: BTreeMap<Tp, i64> = client
                .fetch_offsets(&self.cfg.group, "")
                .await?
                .into_iter()
                .map(|o| ((o.topic, o.partition), o.offset))
                .collect();
            for tp in &added {
                let pos = match committed.get(tp) {
                    Some(&o) => o,
                    None => {
                        let to = match self.cfg.offset_reset {
                            OffsetReset::Earliest => SeekTo::Beginning,
                            OffsetReset::Latest => SeekTo::End,
                        };
                        self.consumer.resolve(tp, to).await?
                    }
                };
                self.consumer.add(tp.clone(), pos);
            }
            self.shared.lock().expect("shared lock").held =
                self.consumer.positions().keys().cloned().collect();
            self.tell(Rebalance::Assigned(added));
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Records from the partitions this member reads, at most `max_poll_records`; applies
    /// rebalances first (and while it waits).
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumedRecord>> {
        let max = self.cfg.max_poll_records;
        self.poll_at_most(timeout, max).await
    }

    /// [`GroupConsumer::poll`] handing out at most `max` records.
    pub async fn poll_at_most(
        &mut self,
        timeout: Duration,
        max: usize,
    ) -> Result<Vec<ConsumedRecord>> {
        let deadline = Instant::now() + timeout;
        loop {
            self.rebalance().await?;
            // Short waits, so a rebalance is applied soon even while nothing arrives.
            let slice = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(100));
            let records = match self.consumer.poll_at_most(slice, max).await {
                Ok(r) => r,
                // A partition's node refused this member (the group moved the partition or
                // dropped the member): the heartbeat brings the group's answer, which the next
                // turn applies; the stream restarts until then.
                Err(e) if is_fenced(&e) => {
                    self.wake.notify_one();
                    Vec::new()
                }
                Err(e) => return Err(e),
            };
            if !records.is_empty() || Instant::now() >= deadline {
                return Ok(records);
            }
        }
    }

    /// Commits the positions of every partition this member reads, as the member.
    pub async fn commit(&mut self) -> Result<()> {
        self.consumer.commit().await
    }

    /// Commits chosen offsets (with their metadata), as the member: for an application that
    /// tracks what it has processed itself.
    pub async fn commit_offsets(&mut self, offsets: Vec<pb::GroupOffset>) -> Result<()> {
        self.consumer.commit_offsets(&self.cfg.group, offsets).await
    }

    /// [`GroupConsumer::commit`] in the background.
    pub fn commit_async(&mut self) -> tokio::task::JoinHandle<Result<()>> {
        self.consumer.commit_async()
    }

    /// Commits, then leaves the group (a static member leaves for a restart and keeps its
    /// partitions until its session times out).
    pub async fn close(mut self) -> Result<()> {
        let committed = self.consumer.commit().await;
        self.shared.lock().expect("shared lock").stop = true;
        self.task.abort();
        let all = self.assignment();
        for tp in &all {
            self.consumer.remove(tp);
        }
        if !all.is_empty() {
            self.tell(Rebalance::Revoked(all));
        }
        let (id, _) = self.member.lock().await.clone();
        let leave = pb::GroupHeartbeatRequest {
            group: self.cfg.group.clone(),
            member_id: id,
            instance_id: self.cfg.instance_id.clone().unwrap_or_default(),
            member_epoch: if self.cfg.instance_id.is_some() {
                -2
            } else {
                -1
            },
            ..Default::default()
        };
        let left = self.consumer.client().group_heartbeat(leave).await;
        committed?;
        left.map(|_| ())
    }
}

/// The outcome of one heartbeat: when to send the next.
async fn heartbeat(
    client: &Client,
    cfg: &GroupConfig,
    member: &Member,
    shared: &Arc<Mutex<Shared>>,
) -> Result<Duration> {
    // Held until the answer is stored: commits wait, so none carries a stale epoch.
    let mut guard = member.lock().await;
    let (id, epoch) = guard.clone();
    let held = shared.lock().expect("shared lock").held.clone();
    let mut owned: BTreeMap<String, Vec<u32>> = BTreeMap::new();
    for (t, p) in held {
        owned.entry(t).or_default().push(p);
    }
    let req = pb::GroupHeartbeatRequest {
        group: cfg.group.clone(),
        member_id: id,
        instance_id: cfg.instance_id.clone().unwrap_or_default(),
        member_epoch: epoch,
        client_id: cfg.client_id.clone(),
        subscription: Some(pb::Subscription {
            topics: cfg.topics.clone(),
            regex: cfg.regex.clone().unwrap_or_default(),
        }),
        assignor: cfg.assignor.clone().unwrap_or_default(),
        session_timeout_ms: cfg.session_timeout.as_millis() as u32,
        rebalance_timeout_ms: cfg.rebalance_timeout.as_millis() as u32,
        owned: Some(pb::OwnedPartitions {
            topics: owned
                .into_iter()
                .map(|(topic, partitions)| pb::TopicPartitions { topic, partitions })
                .collect(),
        }),
    };
    let r = match client.group_heartbeat(req).await {
        Ok(r) => r,
        Err(e) => {
            if matches!(
                e.code(),
                Some(ErrorCode::UnknownMemberId | ErrorCode::IllegalGeneration)
            ) {
                // Dropped by the coordinator: the next heartbeat joins again.
                guard.1 = 0;
            }
            return Err(e);
        }
    };
    *guard = (r.member_id, r.member_epoch);
    let assignment: BTreeSet<Tp> = r
        .assignment
        .into_iter()
        .flat_map(|t| {
            let topic = t.topic;
            t.partitions.into_iter().map(move |p| (topic.clone(), p))
        })
        .collect();
    shared.lock().expect("shared lock").assignment = Some(assignment);
    Ok(Duration::from_millis(u64::from(
        r.heartbeat_interval_ms.max(50),
    )))
}

async fn heartbeat_loop(
    client: Client,
    cfg: GroupConfig,
    member: Member,
    shared: Arc<Mutex<Shared>>,
    wake: Arc<Notify>,
    mut every: Duration,
) {
    loop {
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = wake.notified() => {}
        }
        {
            let s = shared.lock().expect("shared lock");
            if s.stop {
                return;
            }
            if s.lost {
                // `poll` drops everything first; then this member joins again.
                continue;
            }
        }
        match heartbeat(&client, &cfg, &member, &shared).await {
            Ok(next) => every = next,
            Err(e) => {
                let code = e.code();
                match code {
                    Some(ErrorCode::UnknownMemberId | ErrorCode::IllegalGeneration) => {
                        tracing::warn!(group = %cfg.group, error = %e, "the member was dropped; joining again");
                        let mut s = shared.lock().expect("shared lock");
                        s.lost = true;
                        s.assignment = None;
                        every = Duration::from_millis(50);
                    }
                    _ if e.is_retriable() => {
                        tracing::debug!(group = %cfg.group, error = %e, "heartbeat failed; retrying");
                        every = Duration::from_millis(200);
                    }
                    _ => {
                        let mut s = shared.lock().expect("shared lock");
                        s.failed = Some(e);
                        if code == Some(ErrorCode::FencedInstanceId) {
                            s.lost = true;
                            s.assignment = None;
                            return;
                        }
                        every = Duration::from_secs(1);
                    }
                }
            }
        }
    }
}
