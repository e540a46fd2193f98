//! The consumer: owns its position per partition, polls, seeks, and commits a group's offsets
//! (the next offset to read, as Kafka does) synchronously, asynchronously or every N ms.
//!
//! Fetching runs ahead of `poll`: each assigned partition has a follow-mode fetch stream (the
//! node pushes records as they arrive, no polling interval) feeding a bounded channel, so a
//! consumer holds at most `prefetch_messages` responses per partition.
//!
//! Invariants:
//! - a partition's position is the offset after the last record `poll` handed to the
//!   application; records fetched but not yet handed out (over `max_poll_records`) wait in a
//!   buffer and do not move it, so a commit never covers a record the application has not had;
//! - auto-commit runs at the start of a `poll`, and commits what earlier polls handed out;
//! - `poll` returns only records at the current position of their partition; responses from a
//!   stream started before a `seek` (an older generation) are dropped, and a failed stream is
//!   restarted from the position on the next `poll`.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use proto::v1 as pb;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::{Client, Result};

#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// The consumer group whose committed offsets this consumer starts from and commits to.
    pub group: Option<String>,
    /// Commit every this often during `poll` (needs a group). `None`: commit by hand.
    pub auto_commit: Option<Duration>,
    /// Payload bytes per fetch response.
    pub max_bytes: u32,
    /// Fetch responses buffered ahead per partition.
    pub prefetch_messages: usize,
    /// The most records one `poll` hands out (Kafka's `max.poll.records`); the rest wait.
    pub max_poll_records: usize,
}

impl Default for ConsumerConfig {
    fn default() -> Self {
        ConsumerConfig {
            group: None,
            auto_commit: None,
            max_bytes: 1 << 20,
            prefetch_messages: 4,
            max_poll_records: 500,
        }
    }
}

/// Where to move a partition's position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SeekTo {
    Beginning,
    End,
    Offset(i64),
    /// The first record with timestamp ≥ this (ms).
    Timestamp(i64),
}

/// A topic partition.
pub type Tp = (String, u32);

/// A group member's (member id, epoch), shared by its commits and heartbeats.
pub(crate) type Member = std::sync::Arc<tokio::sync::Mutex<(String, i32)>>;

/// Orders a consumer's commits. Each commit takes a number when it is made (in call order)
/// and, when its turn comes, sends only the partitions no later commit has committed yet,
/// holding the lane while it is sent: a `commit_async` that runs after a newer commit never
/// moves an offset back.
#[derive(Debug, Default)]
pub(crate) struct CommitLane {
    next: std::sync::atomic::AtomicU64,
    sent: tokio::sync::Mutex<std::collections::HashMap<Tp, u64>>,
}

impl CommitLane {
    /// The number of a commit made now.
    fn ticket(&self) -> u64 {
        self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1
    }
}

/// A record and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct ConsumedRecord {
    pub topic: String,
    pub partition: u32,
    pub offset: i64,
    pub timestamp_ms: i64,
    pub key: Option<Bytes>,
    pub value: Option<Bytes>,
    pub headers: Vec<pb::Header>,
}

/// A fetch stream's output: (partition, generation, response or error).
type Fetched = (Tp, u64, Result<pb::FetchResponse>);

struct Fetcher {
    generation: u64,
    task: tokio::task::JoinHandle<()>,
}

pub struct Consumer {
    client: Client,
    cfg: ConsumerConfig,
    topic: String,
    positions: BTreeMap<Tp, i64>,
    last_commit: Instant,
    fetchers: BTreeMap<Tp, Fetcher>,
    generation: u64,
    /// Fetched records not handed out yet, in offset order per partition.
    buffered: BTreeMap<Tp, VecDeque<pb::FetchedRecord>>,
    hand_out_turn: usize,
    /// For a group member: (member id, epoch). Held across every commit and heartbeat, so a
    /// commit never carries an epoch a heartbeat in flight is moving on.
    pub(crate) member: Option<Member>,
    commits: std::sync::Arc<CommitLane>,
    tx: mpsc::Sender<Fetched>,
    rx: mpsc::Receiver<Fetched>,
}

impl Drop for Consumer {
    fn drop(&mut self) {
        for f in self.fetchers.values() {
            f.task.abort();
        }
    }
}

impl Consumer {
    /// A consumer with nothing assigned yet (the group consumer adds and removes partitions).
    pub(crate) fn empty(client: Client, cfg: ConsumerConfig, channel: usize) -> Consumer {
        let (tx, rx) = mpsc::channel(channel.max(1));
        Consumer {
            client,
            cfg,
            topic: String::new(),
            positions: BTreeMap::new(),
            last_commit: Instant::now(),
            fetchers: BTreeMap::new(),
            generation: 0,
            buffered: BTreeMap::new(),
            hand_out_turn: 0,
            member: None,
            commits: Default::default(),
            tx,
            rx,
        }
    }

    /// Reads `partitions` of `topic` (all of them when empty), each from the group's committed
    /// offset when there is one, otherwise from the beginning. The group's offsets are
    /// committed without membership: this consumer assigns its partitions itself.
    pub async fn assign(
        client: Client,
        cfg: ConsumerConfig,
        topic: &str,
        partitions: &[u32],
    ) -> Result<Consumer> {
        let parts: Vec<u32> = if partitions.is_empty() {
            let d = client.describe_topic(topic).await?;
            d.partitions.iter().map(|p| p.partition).collect()
        } else {
            partitions.to_vec()
        };
        let channel = cfg.prefetch_messages.max(1) * parts.len().max(1);
        let mut c = Consumer::empty(client, cfg, channel);
        c.topic = topic.to_string();
        let committed: BTreeMap<u32, i64> = match &c.cfg.group {
            Some(g) => c
                .client
                .fetch_offsets(g, topic)
                .await?
                .into_iter()
                .map(|o| (o.partition, o.offset))
                .collect(),
            None => BTreeMap::new(),
        };
        for p in parts {
            let tp = (topic.to_string(), p);
            let pos = match committed.get(&p) {
                Some(o) => *o,
                None => c.resolve(&tp, SeekTo::Beginning).await?,
            };
            c.positions.insert(tp, pos);
        }
        Ok(c)
    }

    /// Starts reading `tp` at `position` (no-op when it is read already).
    pub(crate) fn add(&mut self, tp: Tp, position: i64) {
        self.positions.entry(tp).or_insert(position);
    }

    /// Stops reading `tp`; returns its position.
    pub(crate) fn remove(&mut self, tp: &Tp) -> Option<i64> {
        self.stop_fetcher(tp);
        self.positions.remove(tp)
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) async fn resolve(&self, tp: &Tp, to: SeekTo) -> Result<i64> {
        use pb::list_offsets_request::Spec;
        let spec = match to {
            SeekTo::Offset(o) => return Ok(o),
            SeekTo::Beginning => Spec::Position(pb::StartPosition::StartEarliest as i32),
            SeekTo::End => Spec::Position(pb::StartPosition::StartLatest as i32),
            SeekTo::Timestamp(ts) => Spec::TimestampMs(ts),
        };
        let r = self.client.list_offsets(&tp.0, tp.1, spec).await?;
        if r < 0 {
            // No record at or after the timestamp: the end of the log.
            return Box::pin(self.resolve(tp, SeekTo::End)).await;
        }
        Ok(r)
    }

    /// Moves a partition's position (all assigned partitions when `partition` is `None`; a
    /// partition number names one of the topic given to [`Consumer::assign`]).
    pub async fn seek(&mut self, partition: Option<u32>, to: SeekTo) -> Result<()> {
        let parts: Vec<Tp> = match partition {
            Some(p) => vec![(self.topic.clone(), p)],
            None => self.positions.keys().cloned().collect(),
        };
        for tp in parts {
            self.seek_partition(tp, to).await?;
        }
        Ok(())
    }

    /// Moves one partition's position.
    pub async fn seek_partition(&mut self, tp: Tp, to: SeekTo) -> Result<()> {
        let pos = self.resolve(&tp, to).await?;
        self.stop_fetcher(&tp);
        self.positions.insert(tp, pos);
        Ok(())
    }

    fn stop_fetcher(&mut self, tp: &Tp) {
        if let Some(f) = self.fetchers.remove(tp) {
            f.task.abort();
        }
        self.buffered.remove(tp);
    }

    /// Starts a follow stream from the position of every partition that has none.
    fn start_fetchers(&mut self) {
        for (tp, &from) in &self.positions {
            if self.fetchers.contains_key(tp) {
                continue;
            }
            self.generation += 1;
            let generation = self.generation;
            // A member's streams carry its id: the node refuses a partition the group has
            // moved away from it.
            let fence = self.cfg.group.clone().zip(self.member.clone());
            let task = tokio::spawn(fetch_loop(
                self.client.clone(),
                tp.clone(),
                from,
                self.cfg.max_bytes,
                generation,
                fence,
                self.tx.clone(),
            ));
            self.fetchers
                .insert(tp.clone(), Fetcher { generation, task });
        }
    }

    /// The next offset this consumer reads, per partition.
    pub fn positions(&self) -> &BTreeMap<Tp, i64> {
        &self.positions
    }

    /// Records after the current positions, at most `max_poll_records`, waiting up to
    /// `timeout` when there are none yet. Returns what has arrived (from one or more
    /// partitions) as soon as anything has.
    pub async fn poll(&mut self, timeout: Duration) -> Result<Vec<ConsumedRecord>> {
        self.poll_at_most(timeout, self.cfg.max_poll_records).await
    }

    /// [`Consumer::poll`] handing out at most `max` records (at least one).
    pub async fn poll_at_most(
        &mut self,
        timeout: Duration,
        max: usize,
    ) -> Result<Vec<ConsumedRecord>> {
        let max = max.max(1);
        // What earlier polls handed out has been processed by now: commit it first.
        self.maybe_auto_commit().await?;
        let deadline = Instant::now() + timeout;
        self.start_fetchers();
        // At most one channel's worth of responses per poll, so a poll returns.
        let mut budget = self.rx.max_capacity();
        while budget > 0 && self.buffered_len() < max {
            budget -= 1;
            let next = if self.buffered_len() == 0 {
                match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                    Ok(m) => m,
                    Err(_) => break,
                }
            } else {
                match self.rx.try_recv() {
                    Ok(m) => Some(m),
                    Err(_) => break,
                }
            };
            let Some((tp, generation, msg)) = next else {
                break;
            };
            if self.fetchers.get(&tp).map(|f| f.generation) != Some(generation) {
                continue; // from before a seek
            }
            match msg {
                Ok(m) => self.buffered.entry(tp).or_default().extend(m.records),
                Err(e) => {
                    // Restarted from the position on the next poll.
                    self.stop_fetcher(&tp);
                    if self.buffered_len() == 0 {
                        return Err(e);
                    }
                    break;
                }
            }
        }
        Ok(self.hand_out(max))
    }

    fn buffered_len(&self) -> usize {
        self.buffered.values().map(VecDeque::len).sum()
    }

    /// Takes up to `max` buffered records, in offset order per partition and fairly across
    /// partitions, moving each partition's position past what it hands out.
    fn hand_out(&mut self, max: usize) -> Vec<ConsumedRecord> {
        let mut out = Vec::new();
        let mut parts: Vec<Tp> = self.buffered.keys().cloned().collect();
        // Start one partition further each time, so a small `max` starves none.
        self.hand_out_turn = self.hand_out_turn.wrapping_add(1);
        if !parts.is_empty() {
            let turn = self.hand_out_turn % parts.len();
            parts.rotate_left(turn);
        }
        let share = max.div_ceil(parts.len().max(1));
        for tp in parts {
            let Some(queue) = self.buffered.get_mut(&tp) else {
                continue;
            };
            let mut taken = 0;
            while taken < share && out.len() < max {
                let Some(r) = queue.pop_front() else { break };
                let Some(pos) = self.positions.get_mut(&tp) else {
                    break;
                };
                if r.offset < *pos {
                    continue;
                }
                *pos = r.offset + 1;
                taken += 1;
                out.push(ConsumedRecord {
                    topic: tp.0.clone(),
                    partition: tp.1,
                    offset: r.offset,
                    timestamp_ms: r.timestamp_ms,
                    key: r.key,
                    value: r.value,
                    headers: r.headers,
                });
            }
            if queue.is_empty() {
                self.buffered.remove(&tp);
            }
        }
        out
    }

    /// Auto-commit: a failure is logged, not returned (as Kafka's consumers do); the next
    /// one commits the positions again. A member that was dropped learns it from its
    /// heartbeats, which also make it join again.
    async fn maybe_auto_commit(&mut self) -> Result<()> {
        if let Some(every) = self.cfg.auto_commit
            && self.last_commit.elapsed() >= every
            && let Err(e) = self.commit().await
        {
            tracing::warn!(error = %e, "auto-commit failed; retrying at the next interval");
            self.last_commit = Instant::now();
        }
        Ok(())
    }

    /// The positions of `tps` (all assigned partitions when `None`) as offsets to commit.
    pub(crate) fn offsets_of(&self, tps: Option<&[Tp]>) -> Vec<pb::GroupOffset> {
        self.positions
            .iter()
            .filter(|(tp, _)| tps.is_none_or(|only| only.contains(tp)))
            .map(|((topic, p), o)| pb::GroupOffset {
                topic: topic.clone(),
                partition: *p,
                offset: *o,
                metadata: String::new(),
            })
            .collect()
    }

    /// Commits the current positions for the group and waits for the answer.
    pub async fn commit(&mut self) -> Result<()> {
        self.commit_partitions(None).await
    }

    /// Commits the positions of `tps` (all assigned partitions when `None`): as the group's
    /// member when this consumer is one, else without membership.
    pub(crate) async fn commit_partitions(&mut self, tps: Option<&[Tp]>) -> Result<()> {
        let Some(group) = self.cfg.group.clone() else {
            return Ok(());
        };
        let offsets = self.offsets_of(tps);
        self.commit_offsets(&group, offsets).await?;
        if tps.is_none() {
            self.last_commit = Instant::now();
        }
        Ok(())
    }

    /// Commits chosen offsets for `group`, in turn with this consumer's other commits.
    pub(crate) async fn commit_offsets(
        &self,
        group: &str,
        offsets: Vec<pb::GroupOffset>,
    ) -> Result<()> {
        let ticket = self.commits.ticket();
        commit(
            &self.client,
            group,
            self.member.as_ref(),
            &self.commits,
            ticket,
            offsets,
        )
        .await
    }

    /// Commits the current positions in the background; the handle reports the outcome. A
    /// commit made after this one wins where both name a partition, whichever is sent first.
    pub fn commit_async(&mut self) -> tokio::task::JoinHandle<Result<()>> {
        let (client, group, offsets) = (
            self.client.clone(),
            self.cfg.group.clone(),
            self.offsets_of(None),
        );
        let (member, lane) = (self.member.clone(), self.commits.clone());
        let ticket = lane.ticket();
        self.last_commit = Instant::now();
        tokio::spawn(async move {
            match group {
                Some(g) => commit(&client, &g, member.as_ref(), &lane, ticket, offsets).await,
                None => Ok(()),
            }
        })
    }
}

/// Commits `offsets` in its turn on `lane` (see [`CommitLane`]): as a member at its current
/// epoch (holding the member's lock, so no heartbeat moves the epoch meanwhile), or without
/// membership. Nothing left to commit sends nothing.
async fn commit(
    client: &Client,
    group: &str,
    member: Option<&Member>,
    lane: &CommitLane,
    ticket: u64,
    offsets: Vec<pb::GroupOffset>,
) -> Result<()> {
    let mut sent = lane.sent.lock().await;
    let offsets: Vec<pb::GroupOffset> = offsets
        .into_iter()
        .filter(|o| {
            let tp = (o.topic.clone(), o.partition);
            sent.get(&tp).is_none_or(|&newer| newer < ticket)
        })
        .collect();
    if offsets.is_empty() {
        return Ok(());
    }
    let tps: Vec<Tp> = offsets
        .iter()
        .map(|o| (o.topic.clone(), o.partition))
        .collect();
    let done = match member {
        None => client.commit_offsets(group, offsets).await,
        Some(member) => {
            let guard = member.lock().await;
            let (id, epoch) = &*guard;
            client
                .commit_member_offsets(group, id, *epoch, offsets)
                .await
        }
    };
    // Only a commit that landed supersedes older ones: after a failed one, an older commit
    // still waiting is sent.
    if done.is_ok() {
        for tp in tps {
            sent.insert(tp, ticket);
        }
    }
    done
}
/// Follows one partition from `from`, at its leader: a retriable failure (leader moved or died,
/// node shutting down) re-routes and resumes after the last record passed on, with backoff; only
/// other errors reach `poll`.
async fn fetch_loop(
    client: Client,
    tp: Tp,
    mut from: i64,
    max_bytes: u32,
    generation: u64,
    fence: Option<(String, Member)>,
    tx: tokio::sync::mpsc::Sender<Fetched>,
) {
    let (topic, partition) = (tp.0.clone(), tp.1);
    let mut backoff = Duration::from_millis(50);
    // The member as the last stream carried it: a heartbeat or commit holds the member's
    // lock through its request, and a stream restarted meanwhile (its leader died, say) does
    // not wait for that.
    let mut carried: Option<pb::FetchMember> = None;
    loop {
        if let Some((group, m)) = &fence {
            let now = match (m.try_lock(), &carried) {
                (Ok(g), _) => Some(g.clone()),
                (Err(_), Some(_)) => None,
                (Err(_), None) => Some(m.lock().await.clone()),
            };
            if let Some((id, epoch)) = now {
                carried = Some(pb::FetchMember {
                    group: group.clone(),
                    member_id: id,
                    member_epoch: epoch,
                });
            }
        }
        let member = carried.clone();
        let req = pb::FetchRequest {
            topic: topic.clone(),
            partition,
            start: Some(pb::fetch_request::Start::Offset(from)),
            max_bytes,
            follow: true,
            max_records: 0,
            member,
        };
        let failed: tonic::Status = match client.leader_rpc(&topic, partition).await {
            Err(e) if e.is_retriable() => tonic::Status::unavailable(e.to_string()),
            Err(e) => {
                let _ = tx.send((tp.clone(), generation, Err(e))).await;
                return;
            }
            Ok(mut rpc) => match rpc.fetch(req).await {
                Err(s) => s,
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    loop {
                        match stream.message().await {
                            Ok(Some(m)) => {
                                if let Some(last) = m.records.last() {
                                    from = last.offset + 1;
                                    backoff = Duration::from_millis(50);
                                }
                                if tx.send((tp.clone(), generation, Ok(m))).await.is_err() {
                                    return;
                                }
                            }
                            Ok(None) => break tonic::Status::unavailable("the fetch stream ended"),
                            Err(s) => break s,
                        }
                    }
                }
            },
        };
        let moved = client.reroute(&topic, partition, &failed);
        let e = crate::Error::from(failed);
        if !e.is_retriable() {
            let _ = tx.send((tp.clone(), generation, Err(e))).await;
            return;
        }
        if !moved {
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
        }
    }
}
