//! The one error type of the ingest node, with the stable code every front end maps it to.

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Stable error codes (the numbers of `tierlog.v1.ErrorCode`). Append-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Code {
    UnknownTopic = 1,
    UnknownPartition = 2,
    RecordTooLarge = 3,
    InvalidTopicName = 4,
    TopicExists = 5,
    OffsetOutOfRange = 6,
    Backpressure = 7,
    NotLeader = 8,
    InvalidRequest = 9,
    CorruptData = 10,
    Unavailable = 11,
    Internal = 12,
    Unsupported = 13,
    ShuttingDown = 14,
    OutOfOrderSequence = 15,
    ProducerFenced = 16,
    LimitExceeded = 17,
    NotCoordinator = 18,
    UnknownMember = 19,
    IllegalGeneration = 20,
    FencedInstance = 21,
    GroupNotEmpty = 22,
    UnknownGroup = 23,
    InvalidGroup = 24,
    UnsupportedAssignor = 25,
    InconsistentAssignor = 26,
    RebalanceInProgress = 27,
    InconsistentGroupProtocol = 28,
    InvalidRecord = 29,
}

/// Kafka's error codes that tierlog answers with (`org.apache.kafka.common.protocol.Errors`).
pub mod kafka_code {
    pub const NONE: i16 = 0;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const CORRUPT_MESSAGE: i16 = 2;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const LEADER_NOT_AVAILABLE: i16 = 5;
    pub const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    pub const REQUEST_TIMED_OUT: i16 = 7;
    pub const MESSAGE_TOO_LARGE: i16 = 10;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
    pub const INVALID_REQUIRED_ACKS: i16 = 21;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const ILLEGAL_GENERATION: i16 = 22;
    pub const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
    pub const REBALANCE_IN_PROGRESS: i16 = 27;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_MEMBER_ID: i16 = 25;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const TOPIC_ALREADY_EXISTS: i16 = 36;
    pub const INVALID_PARTITIONS: i16 = 37;
    pub const INVALID_REQUEST: i16 = 42;
    pub const POLICY_VIOLATION: i16 = 44;
    pub const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
    pub const INVALID_PRODUCER_EPOCH: i16 = 47;
    pub const INVALID_CONFIG: i16 = 40;
    pub const KAFKA_STORAGE_ERROR: i16 = 56;
    pub const NON_EMPTY_GROUP: i16 = 68;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const FETCH_SESSION_ID_NOT_FOUND: i16 = 70;
    pub const INVALID_FETCH_SESSION_EPOCH: i16 = 71;
    pub const FENCED_LEADER_EPOCH: i16 = 74;
    pub const UNKNOWN_LEADER_EPOCH: i16 = 76;
    pub const INVALID_SESSION_TIMEOUT: i16 = 26;
    pub const MEMBER_ID_REQUIRED: i16 = 79;
    pub const GROUP_MAX_SIZE_REACHED: i16 = 81;
    pub const GROUP_SUBSCRIBED_TO_TOPIC: i16 = 86;
    pub const FENCED_INSTANCE_ID: i16 = 82;
    pub const UNKNOWN_TOPIC_ID: i16 = 100;
    pub const FENCED_MEMBER_EPOCH: i16 = 110;
    pub const UNSUPPORTED_ASSIGNOR: i16 = 112;
    pub const INVALID_RECORD: i16 = 87;
    pub const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
    /// What a transactional producer is told until transactions exist: a fatal,
    /// non-retriable code (librdkafka, the Java client, kafka-python and kafkajs all stop
    /// at once on it instead of retrying), with a message saying why where the API has one.
    pub const TRANSACTIONS_REFUSED: i16 = TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
}

impl Code {
    /// The Kafka error code of this code: the one mapping from tierlog's errors to Kafka's (the
    /// gRPC one is `server::status`). Retriable Kafka codes where the request may succeed
    /// later unchanged, so Kafka clients retry exactly what tierlog's own client retries.
    pub fn kafka(self) -> i16 {
        use kafka_code::*;
        match self {
            Code::UnknownTopic | Code::UnknownPartition => UNKNOWN_TOPIC_OR_PARTITION,
            Code::RecordTooLarge => MESSAGE_TOO_LARGE,
            Code::InvalidTopicName => INVALID_TOPIC_EXCEPTION,
            Code::TopicExists => TOPIC_ALREADY_EXISTS,
            Code::OffsetOutOfRange => OFFSET_OUT_OF_RANGE,
            // Retriable: the hot tier is full until uploads catch up.
            Code::Backpressure => REQUEST_TIMED_OUT,
            Code::NotLeader | Code::ShuttingDown => NOT_LEADER_OR_FOLLOWER,
            Code::InvalidRequest => INVALID_REQUEST,
            Code::CorruptData => CORRUPT_MESSAGE,
            // Retriable: the metadata store or object store did not answer.
            Code::Unavailable => KAFKA_STORAGE_ERROR,
            Code::Internal => UNKNOWN_SERVER_ERROR,
            Code::Unsupported => UNSUPPORTED_VERSION,
            Code::OutOfOrderSequence => OUT_OF_ORDER_SEQUENCE_NUMBER,
            Code::ProducerFenced => INVALID_PRODUCER_EPOCH,
            Code::LimitExceeded => POLICY_VIOLATION,
            Code::NotCoordinator => NOT_COORDINATOR,
            Code::UnknownMember => UNKNOWN_MEMBER_ID,
            Code::IllegalGeneration => ILLEGAL_GENERATION,
            Code::FencedInstance => FENCED_INSTANCE_ID,
            Code::GroupNotEmpty => NON_EMPTY_GROUP,
            Code::UnknownGroup => GROUP_ID_NOT_FOUND,
            Code::InvalidGroup => INVALID_GROUP_ID,
            Code::UnsupportedAssignor => UNSUPPORTED_ASSIGNOR,
            Code::InconsistentAssignor | Code::InconsistentGroupProtocol => {
                INCONSISTENT_GROUP_PROTOCOL
            }
            Code::RebalanceInProgress => REBALANCE_IN_PROGRESS,
            Code::InvalidRecord => INVALID_RECORD,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("unknown topic {0:?}")]
    UnknownTopic(String),
    #[error("topic {topic:?} has {partitions} partitions; there is no partition {partition}")]
    UnknownPartition {
        topic: String,
        partition: u32,
        partitions: u32,
    },
    #[error("record {index} has {size} bytes; the limit is {limit}")]
    RecordTooLarge {
        index: usize,
        size: usize,
        limit: usize,
    },
    /// A record the topic's settings refuse (a record without a key on a compacted topic).
    #[error("record {index} {why}")]
    InvalidRecord { index: usize, why: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// A configured limit refuses the request (`setting` names it, see docs/limits.md).
    #[error("{what}: {asked} asked, the limit is {limit} (setting {setting})")]
    LimitExceeded {
        what: &'static str,
        asked: u64,
        limit: u64,
        setting: &'static str,
    },
    #[error("{0}")]
    InvalidTopicName(String),
    /// The node is draining for shutdown; clients retry (on another node, or after a restart).
    #[error("the node is shutting down")]
    ShuttingDown,
    /// This node does not lead the partition (now). `leader` is the leader's address when
    /// known; clients send the request there, or refresh their metadata and retry.
    #[error("this node cannot serve {topic}/{partition} now: {why}{}", match leader {
        Some(l) => format!("; its leader is at {l}"),
        None => "; no leader is known yet, retry shortly".to_string(),
    })]
    NotLeader {
        topic: String,
        partition: u32,
        leader: Option<String>,
        why: String,
    },
    /// This node does not coordinate the group (now); `coordinator` is the address of the
    /// node that does, when known. Clients find the coordinator again and retry.
    #[error("this node does not coordinate group {group:?}{}", match coordinator {
        Some(c) => format!("; its coordinator is at {c}"),
        None => "; find its coordinator and retry".to_string(),
    })]
    NotCoordinator {
        group: String,
        coordinator: Option<String>,
    },
    /// The member id is not (or no longer) in the group: its session timed out, it left, or
    /// it never joined. The member joins again (epoch 0).
    #[error("group {group:?} has no member {member:?}{}", if member.is_empty() {
        "; the group has members, so commits need a member id and its epoch"
    } else {
        ": it timed out, left or never joined; join again"
    })]
    UnknownMember { group: String, member: String },
    /// A heartbeat or commit carries an epoch that is not the member's current one (a
    /// rebalance moved on). The member joins again.
    #[error("member {member:?} of group {group:?} sent epoch {got}; its epoch is {current}")]
    IllegalGeneration {
        group: String,
        member: String,
        got: i32,
        current: i32,
    },
    /// A member's fetch of a partition the group's coordinator does not have with it (a
    /// rebalance moved it, or it was never granted). The member heartbeats and follows the
    /// assignment it gets; stable code: ILLEGAL_GENERATION.
    #[error(
        "member {member:?} of group {group:?} does not hold {topic}/{partition} (its epoch was {epoch}); a rebalance moved it"
    )]
    PartitionNotHeld {
        group: String,
        member: String,
        epoch: i32,
        topic: String,
        partition: u32,
    },
    /// Another process joined with this static member's instance id and took its place.
    #[error("instance {instance:?} of group {group:?} was taken over by a newer member")]
    FencedInstance { group: String, instance: String },
    #[error("group {group:?} has {members} members; stop them first")]
    GroupNotEmpty { group: String, members: usize },
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
    #[error("invalid group id: {0}")]
    InvalidGroup(String),
    #[error("group {group:?}: unknown assignor {assignor:?}; known: {known}")]
    UnsupportedAssignor {
        group: String,
        assignor: String,
        known: String,
    },
    #[error("group {group:?} uses the {current} assignor; a member asked for {assignor:?}")]
    InconsistentAssignor {
        group: String,
        assignor: String,
        current: String,
    },
    /// A classic-protocol group started a round: the member joins again.
    #[error("group {group:?} is rebalancing; join again")]
    RebalanceInProgress { group: String },
    #[error("group {group:?}: {why}")]
    InconsistentGroupProtocol { group: String, why: String },
    /// A dependency (another node, the metadata store) did not answer.
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Storage(#[from] tier::Error),
    #[error(transparent)]
    Meta(#[from] meta::Error),
}

impl From<tier::batch::Error> for Error {
    fn from(e: tier::batch::Error) -> Self {
        Error::Storage(e.into())
    }
}

impl Code {
    /// The HTTP status of this code (the console's JSON API), next to the gRPC and Kafka ones.
    pub fn http_status(self) -> u16 {
        match self {
            Code::UnknownTopic | Code::UnknownPartition | Code::UnknownGroup => 404,
            Code::RecordTooLarge
            | Code::InvalidRecord
            | Code::InvalidTopicName
            | Code::InvalidRequest
            | Code::InvalidGroup
            | Code::UnsupportedAssignor => 400,
            Code::TopicExists
            | Code::GroupNotEmpty
            | Code::NotLeader
            | Code::NotCoordinator
            | Code::OutOfOrderSequence
            | Code::ProducerFenced
            | Code::UnknownMember
            | Code::IllegalGeneration
            | Code::FencedInstance
            | Code::InconsistentAssignor
            | Code::RebalanceInProgress
            | Code::InconsistentGroupProtocol => 409,
            Code::OffsetOutOfRange => 416,
            Code::Backpressure | Code::LimitExceeded => 429,
            Code::Unavailable | Code::ShuttingDown => 503,
            Code::Unsupported => 501,
            Code::CorruptData | Code::Internal => 500,
        }
    }
}

impl Error {
    /// The stable code of this error.
    pub fn code(&self) -> Code {
        match self {
            Error::UnknownTopic(_) => Code::UnknownTopic,
            Error::UnknownPartition { .. } => Code::UnknownPartition,
            Error::RecordTooLarge { .. } => Code::RecordTooLarge,
            Error::InvalidRecord { .. } => Code::InvalidRecord,
            Error::InvalidRequest(_) => Code::InvalidRequest,
            Error::LimitExceeded { .. } => Code::LimitExceeded,
            Error::InvalidTopicName(_) => Code::InvalidTopicName,
            Error::ShuttingDown => Code::ShuttingDown,
            Error::NotLeader { .. } => Code::NotLeader,
            Error::NotCoordinator { .. } => Code::NotCoordinator,
            Error::UnknownMember { .. } => Code::UnknownMember,
            Error::IllegalGeneration { .. } | Error::PartitionNotHeld { .. } => {
                Code::IllegalGeneration
            }
            Error::FencedInstance { .. } => Code::FencedInstance,
            Error::GroupNotEmpty { .. } => Code::GroupNotEmpty,
            Error::UnknownGroup(_) => Code::UnknownGroup,
            Error::InvalidGroup(_) => Code::InvalidGroup,
            Error::UnsupportedAssignor { .. } => Code::UnsupportedAssignor,
            Error::InconsistentAssignor { .. } => Code::InconsistentAssignor,
            Error::RebalanceInProgress { .. } => Code::RebalanceInProgress,
            Error::InconsistentGroupProtocol { .. } => Code::InconsistentGroupProtocol,
            Error::Unavailable(_) => Code::Unavailable,
            Error::Storage(e) => match e {
                tier::Error::Invalid(_) => Code::InvalidRequest,
                tier::Error::Unsupported(_) => Code::Unsupported,
                tier::Error::TooLarge { .. } => Code::RecordTooLarge,
                tier::Error::UnknownPartition { .. } => Code::UnknownPartition,
                tier::Error::OffsetOutOfRange { .. } => Code::OffsetOutOfRange,
                tier::Error::Backpressure { .. } => Code::Backpressure,
                tier::Error::Corrupt { .. } => Code::CorruptData,
                tier::Error::Fenced { .. } => Code::NotLeader,
                tier::Error::OutOfOrderSequence { .. } => Code::OutOfOrderSequence,
                tier::Error::ProducerFenced { .. } => Code::ProducerFenced,
                tier::Error::Closed => Code::ShuttingDown,
                tier::Error::Io { .. } | tier::Error::ObjectStore { .. } => {
                    if e.is_retryable() {
                        Code::Unavailable
                    } else {
                        Code::Internal
                    }
                }
                tier::Error::Parquet { .. } | tier::Error::Shared(_) => {
                    if e.is_retryable() {
                        Code::Unavailable
                    } else if e.is_corruption() {
                        Code::CorruptData
                    } else {
                        Code::Internal
                    }
                }
            },
            Error::Meta(e) => match e {
                meta::Error::InvalidArgument(_) => Code::InvalidRequest,
                meta::Error::TopicNotFound { .. } => Code::UnknownTopic,
                meta::Error::TopicExists { .. } => Code::TopicExists,
                meta::Error::Fenced { .. } | meta::Error::LeaderExists { .. } => Code::NotLeader,
                meta::Error::GroupFenced { .. } => Code::NotCoordinator,
                meta::Error::Corrupt { .. } => Code::CorruptData,
                meta::Error::Closed => Code::ShuttingDown,
                other if other.is_retryable() => Code::Unavailable,
                _ => Code::Internal,
            },
        }
    }

    /// Where to send the request instead: the leader's address for NOT_LEADER, the
    /// coordinator's for NOT_COORDINATOR, when known.
    pub fn leader(&self) -> Option<&str> {
        match self {
            Error::NotLeader { leader, .. } => leader.as_deref(),
            Error::NotCoordinator { coordinator, .. } => coordinator.as_deref(),
            _ => None,
        }
    }

    /// True when the same request may succeed later unchanged.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self.code(),
            Code::Backpressure
                | Code::NotLeader
                | Code::NotCoordinator
                | Code::Unavailable
                | Code::ShuttingDown
        )
    }
}
