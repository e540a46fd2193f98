//! Node registry: `nodes/<id>` holds a JSON [`NodeInfo`] attached to the node's lease, so a
//! node disappears from [`Meta::list_nodes`] when it stops renewing its lease.

use serde::{Deserialize, Serialize};

use super::{Meta, NodeId, decode_json, encode_json};
use crate::error::{Error, Result};
use crate::kv::{Compare, LeaseId, Txn, TxnOp, TxnOpResponse};

/// A live broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: NodeId,
    /// Where other nodes and clients reach it (`host:port`).
    pub addr: String,
    /// Where Kafka clients reach it (`host:port`), when it listens for the Kafka protocol.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kafka_addr: Option<String>,
}

impl Meta {
    /// The cluster's id: made up by the first node that asks, the same for every node after
    /// (`cluster/id`, never changed). 22 characters of URL-safe base64, as Kafka's.
    pub async fn cluster_id(&self) -> Result<String> {
        use base64::Engine;
        let key = self.keys.cluster_id();
        let bytes: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
        let fresh = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let txn = Txn::new()
            .when([Compare::absent(key.clone())])
            .and_then([TxnOp::put(key.clone(), fresh.into_bytes(), None)])
            .or_else([TxnOp::get(key.clone())]);
        let resp = self.kv.txn(txn).await?;
        if resp.succeeded {
            let kv = self.kv.get(key.as_bytes()).await?;
            return kv
                .map(|kv| String::from_utf8_lossy(&kv.value).into_owned())
                .ok_or_else(|| {
                    Error::corrupt(key, "the cluster id vanished after it was written")
                });
        }
        match resp.responses.into_iter().last() {
            Some(TxnOpResponse::Get(Some(kv))) => {
                Ok(String::from_utf8_lossy(&kv.value).into_owned())
            }
            _ => Err(Error::corrupt(key, "the cluster id txn read nothing back")),
        }
    }

    /// Registers (or re-registers) a node under `lease`.
    pub async fn register_node(&self, node_id: NodeId, addr: &str, lease: LeaseId) -> Result<()> {
        let info = NodeInfo {
            node_id,
            addr: addr.to_owned(),
            kafka_addr: None,
        };
        self.register(&info, lease).await
    }

    /// Registers (or re-registers) a node, with all its listeners, under `lease`.
    pub async fn register(&self, info: &NodeInfo, lease: LeaseId) -> Result<()> {
        if info.addr.is_empty() || info.kafka_addr.as_ref().is_some_and(String::is_empty) {
            return Err(Error::invalid("node address must not be empty"));
        }
        self.kv
            .put(
                self.keys.node(info.node_id).as_bytes(),
                encode_json(info),
                Some(lease),
            )
            .await?;
        tracing::info!(node_id = info.node_id, addr = info.addr, kafka = ?info.kafka_addr, lease = %lease, "registered node");
        Ok(())
    }

    /// Ends a previous incarnation of `node_id` (a process that died without revoking its
    /// lease): revokes the lease its registration is attached to, which drops that
    /// registration and every leadership held under it, so a restarted node need not wait out
    /// the old lease's TTL. Returns whether there was one. Node ids must be unique: a second
    /// live process with the same id would lose its lease here.
    pub async fn reclaim_node(&self, node_id: NodeId) -> Result<bool> {
        let Some(kv) = self.kv.get(self.keys.node(node_id).as_bytes()).await? else {
            return Ok(false);
        };
        let Some(lease) = kv.lease else {
            return Ok(false);
        };
        match self.kv.revoke_lease(lease).await {
            Ok(()) => {
                tracing::info!(node_id, lease = %lease, "reclaimed the lease of an earlier run of this node");
                Ok(true)
            }
            Err(Error::LeaseNotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Removes a node's registration; `false` if it was not registered.
    pub async fn deregister_node(&self, node_id: NodeId) -> Result<bool> {
        let resp = self.kv.delete(self.keys.node(node_id).as_bytes()).await?;
        Ok(resp.deleted > 0)
    }

    /// Registered nodes, sorted by id.
    pub async fn list_nodes(&self) -> Result<Vec<NodeInfo>> {
        let range = self.kv.range(self.keys.nodes().as_bytes(), None).await?;
        let mut nodes: Vec<NodeInfo> = range.kvs.iter().map(decode_json).collect::<Result<_>>()?;
        nodes.sort_by_key(|n| n.node_id);
        Ok(nodes)
    }
}

impl Meta {
    /// Follows what moves partition leadership: nodes joining or leaving, topics created or
    /// deleted, leaders elected or lost. An item only says that something changed (re-read the
    /// state to see what); the stream ends or fails when one of its watches does, and then the
    /// caller re-creates it and re-reads.
    pub async fn watch_cluster(&self) -> Result<futures::stream::BoxStream<'static, Result<()>>> {
        use futures::StreamExt;
        let nodes = self
            .kv
            .watch_prefix(self.keys.nodes().as_bytes(), None)
            .await?
            .map(|e| e.map(|_| ()));
        let topics = self
            .kv
            .watch_prefix(self.keys.topics().as_bytes(), None)
            .await?
            .map(|e| e.map(|_| ()));
        let keys = self.keys.clone();
        let leaders = self
            .kv
            .watch_prefix(self.keys.partitions().as_bytes(), None)
            .await?
            .filter_map(move |e| {
                let keep = match e {
                    Ok(e) => matches!(
                        keys.parse_partition_key(&e.kv.key),
                        Some((_, _, super::keys::PartitionKey::Leader))
                    )
                    .then_some(Ok(())),
                    Err(e) => Some(Err(e)),
                };
                futures::future::ready(keep)
            });
        Ok(futures::stream::select_all([nodes.boxed(), topics.boxed(), leaders.boxed()]).boxed())
    }
}
