//! Reads as a Kafka consumer sees them: record batches up to the partition's high watermark.
//!
//! The high watermark is the end of what no failover can take back. For a topic with the
//! default visibility (`tierlog.visibility = committed`) that is what is committed to the
//! object store: a takeover never loses it, so a consumer never reads a record that a later
//! reader finds replaced. A topic set to `leader` visibility shows everything its leader
//! appended at once, and accepts the acks=leader loss window (docs/kafka.md).
//!
//! Invariants: only the leader answers (it alone knows both ends); no batch past the high
//! watermark is handed out; batches still on local disk are handed out as stored, those read
//! back from the cold tier are encoded again with their own offsets and timestamps.

use meta::TopicMeta;
use tier::epochs::{end_offset_for, epoch_at};
use tier::{PartitionOffsets, RecordBatch};

use super::{Broker, FetchPermit};
use crate::error::{Error, Result};

/// What one partition's fetch found.
#[derive(Debug)]
pub struct Fetched {
    /// Whole batches from the one holding the fetch offset; the first may start before it.
    pub batches: Vec<RecordBatch>,
    pub high_watermark: i64,
    pub log_start: i64,
    /// The leader's epoch (Kafka's leader epoch).
    pub leader_epoch: u64,
    /// Holds the batches' bytes against the node's fetch buffer until the answer is sent.
    pub permit: Option<FetchPermit>,
}

/// Where a Kafka ListOffsets request points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    Earliest,
    /// The high watermark.
    Latest,
    /// The first record with a timestamp at or after this (ms).
    Timestamp(i64),
    /// The record with the highest timestamp (the first of equals) below the high watermark.
    MaxTimestamp,
}

/// The end of what consumers of `t` may read.
fn visible_end(t: &TopicMeta, o: &PartitionOffsets) -> i64 {
    if t.config.leader_visible() {
        o.next
    } else {
        o.cold_next
    }
}

impl Broker {
    /// The partition's offsets and high watermark on its leader (NOT_LEADER elsewhere).
    async fn led_offsets(
        &self,
        topic: &str,
        partition: u32,
    ) -> Result<(TopicMeta, String, u64, PartitionOffsets, i64)> {
        let (t, storage) = self.partition(topic, partition).await?;
        let Some(led) = self.led(topic, partition) else {
            return Err(self
                .not_leader(topic, partition, "this node does not lead it")
                .await);
        };
        let o = match self.inner.tier.offsets(&storage, partition) {
            Ok(o) => o,
            Err(e) => return Err(self.tier_error(topic, partition, e).await),
        };
        let hw = visible_end(&t, &o);
        Ok((t, storage, led.epoch, o, hw))
    }

    /// Batches from `offset` (about `max_bytes`, at least one batch when there is one, cut to
    /// [`crate::Limits::max_fetch_bytes`]) below the high watermark. An offset before the log
    /// start or past the log end is OFFSET_OUT_OF_RANGE; one at or past the high watermark
    /// finds nothing yet.
    pub async fn fetch_visible(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        max_bytes: usize,
    ) -> Result<Fetched> {
        let (_, storage, epoch, o, hw) = self.led_offsets(topic, partition).await?;
        if offset < o.log_start || offset > o.next {
            return Err(Error::Storage(tier::Error::OffsetOutOfRange {
                topic: topic.to_string(),
                partition,
                offset,
                start: o.log_start,
                end: o.next,
            }));
        }
        let mut fetched = Fetched {
            batches: Vec::new(),
            high_watermark: hw,
            log_start: o.log_start,
            leader_epoch: epoch,
            permit: None,
        };
        if offset >= hw {
            return Ok(fetched);
        }
        let max_bytes = max_bytes.clamp(1, self.inner.cfg.limits.max_fetch_bytes);
        fetched.permit = Some(self.fetch_permit(max_bytes).await?);
        let tier = &self.inner.tier;
        let read = async {
            Ok::<_, tier::Error>(
                match tier
                    .read_hot_batches(&storage, partition, offset, max_bytes)
                    .await?
                {
                    Some((batches, _)) => batches,
                    None => {
                        // Uploaded and gone from local disk: read it back from the cold tier,
                        // each batch stamped with the epoch that appended its records.
                        let mut r = tier.read(&storage, partition, offset, max_bytes).await?;
                        r.records.retain(|r| r.offset < hw);
                        let runs = tier.leader_epochs(&storage, partition)?;
                        let at = |o| epoch_at(&runs, o).unwrap_or(-1);
                        let mut batches = Vec::new();
                        for run in r.records.chunk_by(|a, b| at(a.offset) == at(b.offset)) {
                            let e = at(run[0].offset);
                            batches.extend(proto::batch::batches_of(run, e)?);
                        }
                        batches
                    }
                },
            )
        };
        let mut batches = match read.await {
            Ok(b) => b,
            Err(e) => return Err(self.tier_error(topic, partition, e).await),
        };
        // Batches are appended and committed whole: one that ends past the watermark starts
        // at or past it.
        if let Some(end) = batches.iter().position(|b| b.header().last_offset() >= hw) {
            batches.truncate(end);
        }
        self.count_fetched(topic, &batches);
        fetched.batches = batches;
        Ok(fetched)
    }

    /// Waits until the high watermark passes `offset`, or until `until`. For committed
    /// visibility it asks the uploader to commit what is appended past `offset` (as an
    /// acks=all producer does), so a consumer waits about one upload interval, not a segment.
    /// Returns at once on a partition this node does not lead (the next read says so).
    pub async fn wait_visible(
        &self,
        topic: &str,
        partition: u32,
        offset: i64,
        until: tokio::time::Instant,
    ) -> Result<()> {
        let (t, storage) = self.partition(topic, partition).await?;
        if self.led(topic, partition).is_none() {
            return Ok(());
        }
        if !t.config.leader_visible() {
            let wait =
                self.inner
                    .tier
                    .wait_committed(&storage, partition, offset.saturating_add(1));
            // An error (the partition closed, say) is the next read's to report.
            let _ = tokio::time::timeout_at(until, wait).await;
            return Ok(());
        }
        let arrivals = self.arrivals(topic, partition);
        loop {
            let appended = arrivals.notified();
            tokio::pin!(appended);
            appended.as_mut().enable();
            match self.inner.tier.offsets(&storage, partition) {
                Ok(o) if o.next <= offset => {}
                _ => return Ok(()),
            }
            tokio::select! {
                _ = appended => {}
                _ = tokio::time::sleep_until(until) => return Ok(()),
                _ = self.inner.draining.cancelled() => return Err(Error::ShuttingDown),
            }
        }
    }

    /// Kafka's ListOffsets on the leader: the offset, the timestamp of its record (`-1`
    /// where there is none) and the leader epoch that appended it (the current one for the
    /// high watermark), or `None` when no record below the high watermark has a timestamp at
    /// or after the one asked for.
    pub async fn list_offset(
        &self,
        topic: &str,
        partition: u32,
        spec: OffsetSpec,
    ) -> Result<Option<(i64, i64, i32)>> {
        let (_, storage, epoch, o, hw) = self.led_offsets(topic, partition).await?;
        let found = async {
            let found = self.find_offset(&storage, partition, spec, &o, hw).await?;
            Ok::<_, tier::Error>((found, self.inner.tier.leader_epochs(&storage, partition)?))
        };
        let (found, runs) = match found.await {
            Ok(f) => f,
            Err(e) => return Err(self.tier_error(topic, partition, e).await),
        };
        let current = i32::try_from(epoch).unwrap_or(i32::MAX);
        Ok(found.map(|(offset, ts)| {
            let e = match spec {
                OffsetSpec::Latest => current,
                _ => epoch_at(&runs, offset).unwrap_or(current),
            };
            (offset, ts, e)
        }))
    }

    /// Kafka's OffsetForLeaderEpoch on the leader: the largest epoch at or below `epoch` in
    /// the partition's history and where the epoch after it begins (the high watermark for
    /// the current epoch), or `None` for an epoch after the current one; with the leader's
    /// own epoch, which the caller checks the request's against.
    ///
    /// Every epoch stamped on a batch a consumer can read is in the history, so a consumer
    /// whose position is still in the log never gets an end offset below it; after an
    /// acks=leader takeover lost records it read (`tierlog.visibility = leader`), it does.
    pub async fn end_offset_for_epoch(
        &self,
        topic: &str,
        partition: u32,
        epoch: i32,
    ) -> Result<(u64, Option<(i32, i64)>)> {
        let (_, storage, leader_epoch, _, hw) = self.led_offsets(topic, partition).await?;
        let runs = match self.inner.tier.leader_epochs(&storage, partition) {
            Ok(r) => r,
            Err(e) => return Err(self.tier_error(topic, partition, e).await),
        };
        Ok((leader_epoch, end_offset_for(&runs, epoch, hw)))
    }

    /// Kafka's DeleteRecords on the leader: moves the partition's log start to `before` (`-1`:
    /// the high watermark) once the cold tier holds what lies below it, and returns the new
    /// log start. An offset past the high watermark is OFFSET_OUT_OF_RANGE; one at or below
    /// the log start changes nothing.
    pub async fn delete_records(&self, topic: &str, partition: u32, before: i64) -> Result<i64> {
        let (_, storage, _, o, hw) = self.led_offsets(topic, partition).await?;
        let before = match before {
            -1 => hw,
            b if b < 0 => {
                return Err(Error::InvalidRequest(format!(
                    "records cannot be deleted before offset {b}: give an offset or -1 (the \
                     high watermark)"
                )));
            }
            b => b,
        };
        if before > hw {
            return Err(Error::Storage(tier::Error::OffsetOutOfRange {
                topic: topic.to_string(),
                partition,
                offset: before,
                start: o.log_start,
                end: hw,
            }));
        }
        match self
            .inner
            .tier
            .delete_records(&storage, partition, before)
            .await
        {
            Ok(start) => Ok(start),
            Err(e) => Err(self.tier_error(topic, partition, e).await),
        }
    }

    /// The offset and timestamp `spec` points at below the high watermark `hw`.
    async fn find_offset(
        &self,
        storage: &str,
        partition: u32,
        spec: OffsetSpec,
        o: &PartitionOffsets,
        hw: i64,
    ) -> tier::Result<Option<(i64, i64)>> {
        let tier = &self.inner.tier;
        let ts = match spec {
            OffsetSpec::Earliest => return Ok(Some((o.log_start, -1))),
            OffsetSpec::Latest => return Ok(Some((hw, -1))),
            OffsetSpec::Timestamp(ts) => ts,
            OffsetSpec::MaxTimestamp => {
                return tier.max_timestamp_record(storage, partition, hw).await;
            }
        };
        let Some(offset) = tier.offset_for_timestamp(storage, partition, ts).await? else {
            return Ok(None);
        };
        if offset >= hw {
            return Ok(None);
        }
        let r = tier.read(storage, partition, offset, 1).await?;
        Ok(r.records.first().map(|r| (r.offset, r.timestamp)))
    }
}
