//! Consumer-group coordination state: who coordinates a group, and the group's stored record.
//!
//! Keys:
//! - `coordinators/<group>`: JSON [`Coordinator`], attached to the coordinating node's lease.
//!   A claim's identity is the key's `create_revision` ([`GroupClaim::revision`]): revisions
//!   only grow, so a claim lost (lease ended) and taken again by any node never compares equal
//!   to the old one. Kept outside `groups/<group>/` so deleting a group's data leaves the claim.
//! - `groups/<group>/state`: JSON [`GroupRecord`], written only by the coordinator.
//! - `groups/<group>/offsets/...`: committed offsets (see `offsets`).
//!
//! Every write a coordinator makes (state, commits, deletes, resets) carries a compare on its
//! claim's create revision, in every txn when one logical write is split over several: a
//! deposed coordinator's writes fail with [`Error::GroupFenced`] and change nothing.
//! Heartbeats are never written; membership, generations and assignments are.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::keys::validate_group;
use super::{Meta, NodeId, decode_json, encode_json};
use crate::error::{Error, Result};
use crate::kv::{Compare, CompareOp, LeaseId, Txn, TxnOp, TxnOpResponse};

/// The node coordinating a group (the value of `coordinators/<group>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Coordinator {
    pub node_id: NodeId,
}

/// A held coordinator claim: the fence of every write the coordinator makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupClaim {
    pub node_id: NodeId,
    /// The claim key's create revision.
    pub revision: i64,
}

/// A group's members, generation and assignment, as the coordinator stores them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct GroupRecord {
    /// The group epoch (Kafka's generation): grows with every rebalance, never decreases.
    pub generation: i32,
    /// The assignment strategy chosen by the group's first member ("range", "roundrobin",
    /// "cooperative-sticky").
    pub assignor: String,
    pub members: Vec<MemberRecord>,
    /// Unix ms when the last member left (for offset expiry); `None` while it has members.
    pub empty_since_ms: Option<i64>,
    /// Members of Kafka's classic protocol (JoinGroup/SyncGroup: one member computes the
    /// assignment, metadata and assignments are opaque). A group has members of one protocol
    /// at a time: `members` or these.
    pub classic: Option<ClassicRecord>,
}

impl GroupRecord {
    /// Whether the group has no members of either protocol.
    pub fn is_empty(&self) -> bool {
        self.members.is_empty() && self.classic.as_ref().is_none_or(|c| c.members.is_empty())
    }

    /// Members of either protocol.
    pub fn member_count(&self) -> usize {
        self.members.len() + self.classic.as_ref().map_or(0, |c| c.members.len())
    }
}

/// A classic-protocol group at its generation (`GroupRecord::generation`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassicRecord {
    /// The members' protocol type ("consumer", "connect", ...): the same for every member.
    pub protocol_type: String,
    /// The protocol (assignor) chosen for the generation.
    pub protocol: Option<String>,
    /// The member that computes the assignment.
    pub leader: Option<String>,
    /// The leader has handed in the generation's assignment.
    pub settled: bool,
    pub members: Vec<ClassicMemberRecord>,
}

/// One member of a classic-protocol group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClassicMemberRecord {
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    /// The protocols the member supports, most preferred first, with its opaque metadata for
    /// each.
    pub protocols: Vec<ClassicProtocol>,
    /// The assignment the leader gave it for the generation (opaque).
    #[serde(with = "b64")]
    pub assignment: Vec<u8>,
    /// The topics it subscribes to, when a front end could read them from its metadata.
    pub topics: Vec<String>,
    /// The partitions its assignment names, when a front end could read them.
    pub assigned: BTreeMap<String, Vec<u32>>,
}

/// A protocol a classic member supports, with its metadata.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClassicProtocol {
    pub name: String,
    #[serde(with = "b64")]
    pub metadata: Vec<u8>,
}

/// Opaque bytes as base64 strings in JSON.
mod b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// One member of a group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MemberRecord {
    pub member_id: String,
    /// Static membership (Kafka's `group.instance.id`).
    pub instance_id: Option<String>,
    pub client_id: String,
    pub host: String,
    pub session_timeout_ms: u32,
    pub rebalance_timeout_ms: u32,
    /// Subscribed topics by name.
    pub topics: Vec<String>,
    /// Subscribed topics by regular expression (whole-name match).
    pub regex: Option<String>,
    /// The generation this member's assignment was last reconciled to.
    pub member_epoch: i32,
    /// Partitions the coordinator has granted the member and not seen it give up: at most
    /// one member of a group holds a partition here.
    pub owned: BTreeMap<String, Vec<u32>>,
    /// A static member that left for a restart: it keeps its partitions until its session
    /// times out or it comes back.
    pub away: bool,
}

impl Meta {
    /// Claims coordination of `group` for `node_id` under `lease` when nobody holds it.
    /// `Ok(Ok(claim))`: this node holds it now (a claim it already held is returned as is);
    /// `Ok(Err(holder))`: another claim holds it.
    pub async fn claim_group(
        &self,
        group: &str,
        node_id: NodeId,
        lease: LeaseId,
    ) -> Result<std::result::Result<GroupClaim, GroupClaim>> {
        validate_group(group)?;
        let key = self.keys.coordinator(group);
        let value = encode_json(&Coordinator { node_id });
        let txn = Txn::new()
            .when([Compare::absent(key.clone())])
            .and_then([
                TxnOp::put(key.clone(), value, Some(lease)),
                TxnOp::get(key.clone()),
            ])
            .or_else([TxnOp::get(key.clone())]);
        let resp = self.kv.txn(txn).await?;
        let succeeded = resp.succeeded;
        let Some(TxnOpResponse::Get(Some(kv))) = resp.responses.into_iter().last() else {
            return Err(Error::corrupt(
                key,
                "a claim txn did not read its own key back",
            ));
        };
        let holder: Coordinator = decode_json(&kv)?;
        let claim = GroupClaim {
            node_id: holder.node_id,
            revision: kv.create_revision,
        };
        if succeeded {
            tracing::info!(group, node_id, revision = claim.revision, "claimed group");
            return Ok(Ok(claim));
        }
        if holder.node_id == node_id && kv.lease == Some(lease) {
            return Ok(Ok(claim));
        }
        Ok(Err(claim))
    }

    /// The current coordinator claim of `group`, if any.
    pub async fn group_coordinator(&self, group: &str) -> Result<Option<GroupClaim>> {
        validate_group(group)?;
        let Some(kv) = self.kv.get(self.keys.coordinator(group).as_bytes()).await? else {
            return Ok(None);
        };
        let holder: Coordinator = decode_json(&kv)?;
        Ok(Some(GroupClaim {
            node_id: holder.node_id,
            revision: kv.create_revision,
        }))
    }

    /// Gives up a claim (no-op when it is no longer held).
    pub async fn release_group(&self, group: &str, claim: &GroupClaim) -> Result<()> {
        let key = self.keys.coordinator(group);
        let txn = Txn::new()
            .when([self.claim_fence(group, claim)])
            .and_then([TxnOp::delete(key)]);
        self.kv.txn(txn).await?;
        Ok(())
    }

    fn claim_fence(&self, group: &str, claim: &GroupClaim) -> Compare {
        Compare::create_revision(
            self.keys.coordinator(group),
            CompareOp::Equal,
            claim.revision,
        )
    }

    fn fenced(group: &str, claim: &GroupClaim) -> Error {
        Error::GroupFenced {
            group: group.to_owned(),
            revision: claim.revision,
        }
    }

    /// Runs `ops` only while `claim` holds: [`Error::GroupFenced`] otherwise.
    pub(super) async fn fenced_txn(
        &self,
        group: &str,
        claim: &GroupClaim,
        ops: impl IntoIterator<Item = TxnOp>,
    ) -> Result<()> {
        let txn = Txn::new()
            .when([self.claim_fence(group, claim)])
            .and_then(ops);
        if !self.kv.txn(txn).await?.succeeded {
            return Err(Self::fenced(group, claim));
        }
        Ok(())
    }

    /// The stored record of `group`; `None` when it has none (never joined, or deleted).
    pub async fn load_group(&self, group: &str) -> Result<Option<GroupRecord>> {
        validate_group(group)?;
        match self.kv.get(self.keys.group_state(group).as_bytes()).await? {
            Some(kv) => Ok(Some(decode_json(&kv)?)),
            None => Ok(None),
        }
    }

    /// Stores `record` as the group's state, fenced by `claim`.
    pub async fn store_group(
        &self,
        group: &str,
        claim: &GroupClaim,
        record: &GroupRecord,
    ) -> Result<()> {
        validate_group(group)?;
        let put = TxnOp::put(self.keys.group_state(group), encode_json(record), None);
        self.fenced_txn(group, claim, [put]).await
    }

    /// Deletes everything stored for `group` (state and offsets), fenced by `claim`; `false` if
    /// there was nothing.
    pub async fn delete_group_as(&self, group: &str, claim: &GroupClaim) -> Result<bool> {
        validate_group(group)?;
        let prefix = self.keys.group(group);
        let had = self.kv.range(prefix.as_bytes(), Some(1)).await?;
        self.fenced_txn(group, claim, [TxnOp::delete_prefix(prefix)])
            .await?;
        if !had.kvs.is_empty() {
            tracing::info!(group, "deleted consumer group");
        }
        Ok(!had.kvs.is_empty())
    }

    /// Every group with a stored record or committed offsets, sorted.
    pub async fn list_group_records(&self) -> Result<Vec<(String, Option<GroupRecord>)>> {
        let range = self.kv.range(self.keys.groups().as_bytes(), None).await?;
        let mut out: BTreeMap<String, Option<GroupRecord>> = BTreeMap::new();
        for kv in &range.kvs {
            let Some(group) = self.keys.parse_group(&kv.key) else {
                continue;
            };
            let is_state = kv.key == self.keys.group_state(&group).as_bytes();
            let entry = out.entry(group).or_default();
            if is_state {
                *entry = Some(decode_json(kv)?);
            }
        }
        Ok(out.into_iter().collect())
    }
}
