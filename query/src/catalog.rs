//! Where the tables come from: which topics exist, what each partition has committed to the
//! cold tier, and its hot tail (the records after that, read while the query runs).
//!
//! Invariant: a [`ColdView`] lists only segments a committed manifest delta names, so a scan never
//! sees an orphaned upload; the hot tail starts exactly at the view's `next_offset`, so a record
//! is read from one tier or the other, never both and never neither.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::{Arc, Mutex};

use arrow_array::RecordBatch;
use async_trait::async_trait;
use futures::TryStreamExt;
use object_store::ObjectStore;
use object_store::path::Path;
use tier::cold::manifest::{Manifest, SegmentEntry};

use crate::error::Result;

/// A topic and the partitions a query may read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    pub name: String,
    pub partitions: Vec<u32>,
}

/// What one partition has committed to the cold tier.
#[derive(Debug, Clone, Default)]
pub struct ColdView {
    /// The log start: offsets below it were removed (retention, deleted records). A segment
    /// may begin below it (deleting records cuts anywhere); its rows below it are not read.
    pub start_offset: i64,
    /// The offset after the last committed segment: where the hot tail starts.
    pub next_offset: i64,
    /// Committed segments in offset order, with their full object paths.
    pub segments: Vec<(Path, SegmentEntry)>,
}

/// A consistent read of one partition: its committed segments and the records after them.
#[derive(Debug, Clone, Default)]
pub struct PartitionSnapshot {
    pub cold: ColdView,
    /// Records from `cold.next_offset` on that are not committed yet (none unless asked for
    /// and the catalog can reach the partition's hot tier).
    pub hot: Option<Arc<dyn HotTail>>,
}

/// The not yet committed records of a partition as of a snapshot, read a chunk at a time while
/// the query runs (a hot tail can be gigabytes: it is never held in memory whole).
#[async_trait]
pub trait HotTail: Send + Sync + fmt::Debug {
    /// The offsets it holds: from the cold view's `next_offset` to the log end at the snapshot.
    fn offsets(&self) -> std::ops::Range<i64>;

    /// The records from `at` on (about one chunk), as Arrow batches in the topic schema, and the
    /// offset after them; `at` itself once the end is reached. Fails (retryably) when the
    /// records left the hot tier meanwhile.
    async fn read(&self, at: i64) -> Result<(Vec<RecordBatch>, i64)>;
}

/// The source of topic tables.
#[async_trait]
pub trait Catalog: Send + Sync + fmt::Debug + 'static {
    /// Every topic, with its partitions.
    async fn topics(&self) -> Result<Vec<TopicInfo>>;

    /// The committed segments of one partition and, with `hot`, the records after them, as
    /// Arrow batches in the cold schema. A catalog without access to hot tiers returns the
    /// committed part only.
    async fn snapshot(&self, topic: &str, partition: u32, hot: bool) -> Result<PartitionSnapshot>;
}

/// A catalog read from the bucket alone (no node, no metadata service): topics and partitions
/// are the prefixes under `<root>/topics/`, segments come from each partition's manifest. Sees
/// committed data only. Used by benchmarks, tests and by tools pointed at a bucket.
///
/// A node stores topic `t` under `t.<id>` (the id changes when a topic is deleted and created
/// again); the table is named `t` and reads the highest id present.
#[derive(Debug)]
pub struct BucketCatalog {
    store: Arc<dyn ObjectStore>,
    root: Path,
    /// Table name → the directory its data is stored under (filled by `topics`).
    dirs: Mutex<HashMap<String, String>>,
}

/// `events.7` → (`events`, 7): the topic name and id a topic's directory is stored under; a name
/// without a numeric suffix has id 0.
pub fn split_storage_name(dir: &str) -> (&str, u64) {
    match dir.rsplit_once('.') {
        Some((name, id)) if !name.is_empty() => match id.parse() {
            Ok(id) => (name, id),
            Err(_) => (dir, 0),
        },
        _ => (dir, 0),
    }
}

impl BucketCatalog {
    pub fn new(store: Arc<dyn ObjectStore>, root: Path) -> Self {
        BucketCatalog {
            store,
            root,
            dirs: Mutex::default(),
        }
    }

    async fn children(&self, prefix: &Path) -> Result<Vec<String>> {
        let listed = self
            .store
            .list_with_delimiter(Some(prefix))
            .await
            .map_err(tier::Error::from)?;
        Ok(listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect())
    }
}

#[async_trait]
impl Catalog for BucketCatalog {
    async fn topics(&self) -> Result<Vec<TopicInfo>> {
        let topics_prefix = tier::cold::manifest::PartitionPaths::topics(&self.root);
        let mut newest: BTreeMap<String, (u64, String)> = BTreeMap::new();
        for dir in self.children(&topics_prefix).await? {
            let (name, id) = split_storage_name(&dir);
            if newest.get(name).is_none_or(|(seen, _)| id > *seen) {
                newest.insert(name.to_string(), (id, dir.clone()));
            }
        }
        let mut out = Vec::new();
        for (name, (_, dir)) in newest {
            let mut partitions: Vec<u32> = self
                .children(&topics_prefix.clone().join(dir.as_str()))
                .await?
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect();
            partitions.sort_unstable();
            self.dirs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(name.clone(), dir);
            out.push(TopicInfo { name, partitions });
        }
        Ok(out)
    }

    async fn snapshot(&self, topic: &str, partition: u32, _hot: bool) -> Result<PartitionSnapshot> {
        let dir = self
            .dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(topic)
            .cloned()
            .unwrap_or_else(|| topic.to_string());
        let manifest = Manifest::new(self.store.clone(), &self.root, &dir, partition);
        let state = manifest.load().await?;
        let segments = manifest.segment_paths(&state).await?;
        Ok(PartitionSnapshot {
            cold: ColdView {
                start_offset: state.start_offset,
                next_offset: state.next_offset,
                segments,
            },
            hot: None,
        })
    }
}

/// Lists every object under a prefix (used by tests and tools to count what a bucket holds).
pub async fn list_objects(store: &dyn ObjectStore, prefix: &Path) -> Result<Vec<Path>> {
    Ok(store
        .list(Some(prefix))
        .map_ok(|m| m.location)
        .try_collect()
        .await
        .map_err(tier::Error::from)?)
}

#[cfg(test)]
mod tests {
    use super::split_storage_name;

    #[test]
    fn storage_names_split_at_a_numeric_suffix() {
        assert_eq!(split_storage_name("events.7"), ("events", 7));
        assert_eq!(split_storage_name("a.b.12"), ("a.b", 12));
        assert_eq!(split_storage_name("events"), ("events", 0));
        assert_eq!(split_storage_name("v.x"), ("v.x", 0));
        assert_eq!(split_storage_name(".5"), (".5", 0));
    }
}
