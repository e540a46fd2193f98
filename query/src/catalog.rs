//! Where the tables come from: which topics exist, what each partition has committed to the
//! cold tier, and (on the node that leads a partition) its hot tail.
//!
//! Invariant: a [`ColdView`] lists only segments a committed manifest delta names, so a scan never
//! sees an orphaned upload; the hot tail starts exactly at the view's `next_offset`, so a record
//! is read from one tier or the other, never both and never neither.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

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
    /// Offsets below this were removed by retention.
    pub start_offset: i64,
    /// The offset after the last committed segment: where the hot tail starts.
    pub next_offset: i64,
    /// Committed segments in offset order, with their full object paths.
    pub segments: Vec<(Path, SegmentEntry)>,
}

/// The source of topic tables.
#[async_trait]
pub trait Catalog: Send + Sync + fmt::Debug + 'static {
    /// Every topic, with its partitions.
    async fn topics(&self) -> Result<Vec<TopicInfo>>;

    /// The committed segments of one partition, as of now.
    async fn cold(&self, topic: &str, partition: u32) -> Result<ColdView>;

    /// Records at and after `from` that are not yet committed to the cold tier, as Arrow batches
    /// in the cold schema. A catalog without access to hot tiers returns nothing.
    async fn hot_tail(&self, topic: &str, partition: u32, from: i64) -> Result<Vec<RecordBatch>> {
        let _ = (topic, partition, from);
        Ok(Vec::new())
    }
}

/// A catalog read from the bucket alone (no node, no metadata service): topics and partitions
/// are the prefixes under `<root>/topics/`, segments come from each partition's manifest. Sees
/// committed data only. Used by benchmarks, tests and by tools pointed at a bucket.
#[derive(Debug)]
pub struct BucketCatalog {
    store: Arc<dyn ObjectStore>,
    root: Path,
}

impl BucketCatalog {
    pub fn new(store: Arc<dyn ObjectStore>, root: Path) -> Self {
        BucketCatalog { store, root }
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
        let topics_prefix = self.root.clone().join("topics");
        let mut out = BTreeMap::new();
        for name in self.children(&topics_prefix).await? {
            let mut partitions: Vec<u32> = self
                .children(&topics_prefix.clone().join(name.as_str()))
                .await?
                .iter()
                .filter_map(|p| p.parse().ok())
                .collect();
            partitions.sort_unstable();
            out.insert(name, partitions);
        }
        Ok(out
            .into_iter()
            .map(|(name, partitions)| TopicInfo { name, partitions })
            .collect())
    }

    async fn cold(&self, topic: &str, partition: u32) -> Result<ColdView> {
        let manifest = Manifest::new(self.store.clone(), &self.root, topic, partition);
        let state = manifest.load().await?;
        let segments = manifest.segment_paths(&state).await?;
        Ok(ColdView {
            start_offset: state.start_offset,
            next_offset: state.next_offset,
            segments,
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
