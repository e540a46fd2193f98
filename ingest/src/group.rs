//! The consumer-group coordinator's model: requests, replies and views every front end (gRPC
//! now, the Kafka protocol next) translates to and from. The state machine is [`state`], the
//! strategies [`assign`]; the coordinator itself (placement, storage, fencing, timers) is the
//! broker's (`broker/groups.rs`).
//!
//! The protocol is server-side assignment, as Kafka's KIP-848: a member sends heartbeats that
//! carry what it holds; the coordinator answers with what it may consume now. A member gives a
//! partition up by no longer reporting it, after it has committed what it processed; only then
//! is the partition granted to its next owner.

pub mod assign;
pub mod classic;
pub mod state;

pub use self::assign::{Strategy, Tp};
pub use self::classic::{
    Delivery, JoinReply, JoinRequest, Joined, JoinedMember, MemberAssignment, SyncReply,
    SyncRequest, Synced,
};
pub use self::state::Group;

/// What a member subscribes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscription {
    pub topics: Vec<String>,
    /// Topic names matching this regex (the whole name), as they are created.
    pub regex: Option<String>,
}

/// A member's heartbeat.
#[derive(Debug, Clone, Default)]
pub struct HeartbeatRequest {
    pub group: String,
    /// Empty on a first join: the coordinator hands one out.
    pub member_id: String,
    /// A static member's stable id (Kafka's `group.instance.id`).
    pub instance_id: Option<String>,
    /// 0 joins (or rejoins after dropping everything), -1 leaves, -2 leaves for a restart (a
    /// static member keeps its partitions meanwhile), otherwise the member's current epoch.
    pub member_epoch: i32,
    pub client_id: String,
    pub host: String,
    /// Required on join; otherwise `None` means unchanged.
    pub subscription: Option<Subscription>,
    /// The strategy the member wants (the group's first member chooses); `None`: the group's,
    /// or cooperative-sticky for a new group.
    pub assignor: Option<String>,
    /// 0: the default (45 s).
    pub session_timeout_ms: u32,
    /// How long the member may take to give up a revoked partition. 0: the default (60 s).
    pub rebalance_timeout_ms: u32,
    /// The partitions the member holds now; `None`: unchanged since the last heartbeat.
    pub owned: Option<Vec<Tp>>,
}

/// The coordinator's answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeartbeatReply {
    pub member_id: String,
    pub member_epoch: i32,
    /// When to send the next heartbeat.
    pub heartbeat_interval_ms: u32,
    /// Everything the member may consume now: it stops consuming (and commits) whatever else
    /// it holds, then reports that in its next heartbeat.
    pub assignment: Vec<Tp>,
}

/// A member as `groups describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub member_epoch: i32,
    /// Subscribed topics (a classic member's, when its metadata could be read).
    pub topics: Vec<String>,
    pub regex: Option<String>,
    /// What it holds now.
    pub owned: Vec<Tp>,
    /// What it will hold once the group settles.
    pub target: Vec<Tp>,
    /// Classic-protocol members: their metadata for the group's protocol and their
    /// assignment, as the client sent them (empty for server-side assignment).
    pub metadata: Vec<u8>,
    pub assignment: Vec<u8>,
}

/// A group as `groups describe` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupView {
    pub group: String,
    /// Server-side assignment: "Empty", "Reconciling" or "Stable"; the classic protocol:
    /// "Empty", "PreparingRebalance", "CompletingRebalance" or "Stable".
    pub state: &'static str,
    pub generation: i32,
    /// "consumer" for server-side assignment; a classic group's members' protocol type
    /// ("consumer", "connect", ...).
    pub protocol_type: String,
    /// Whether the members use the classic protocol (JoinGroup/SyncGroup).
    pub classic: bool,
    /// The assignor (a classic group's chosen protocol).
    pub assignor: String,
    pub members: Vec<MemberView>,
}

/// Where [`crate::broker::Broker::reset_offsets`] moves a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    Earliest,
    Latest,
    /// The first record at or after this time (ms); the log end when there is none.
    Timestamp(i64),
    /// This offset, clamped into the partition's range.
    Offset(i64),
    /// The committed offset (else the log end) moved by this many, clamped into range.
    ShiftBy(i64),
}

/// One partition of a reset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetOffset {
    pub topic: String,
    pub partition: u32,
    /// The committed offset before the reset, if any.
    pub before: Option<i64>,
    pub after: i64,
}
