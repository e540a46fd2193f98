//! Prefix watches on etcd: one etcd watch, on its own gRPC stream, per [`WatchStream`].
//!
//! `watch_prefix` returns only once etcd confirmed the watch (its `created` answer), so every
//! write that completes after it returns is seen. A creation left unanswered for a third of
//! the request timeout is abandoned and made again on a new stream: creating a watch changes
//! nothing, and one stuck stream must not cost the whole timeout. The stream then yields
//! etcd's events as they come (etcd sends them in revision order, and in op order within a
//! revision). It ends after
//! its first error: a compaction ([`Error::Compacted`], with the revision the watch needed
//! next), a cancellation by etcd, the server closing the stream, or a transport failure
//! ([`Error::Unavailable`]). It never resubscribes by itself, so no gap can go unnoticed: the
//! caller re-reads and watches again from its last revision + 1.
//!
//! Dropping the stream drops the gRPC stream, which cancels the watch on the server.

use std::collections::VecDeque;
use std::time::Duration;

use futures::StreamExt;

use super::{EtcdKv, ec};
use crate::error::{Error, Result};
use crate::kv::{EventKind, KeyValue, WatchEvent, WatchStream};

pub(super) async fn watch_prefix(
    kv: &EtcdKv,
    prefix: &[u8],
    start_revision: Option<i64>,
) -> Result<WatchStream> {
    if let Some(rev) = start_revision
        && rev < 1
    {
        return Err(Error::invalid(format!(
            "watch start revision must be >= 1, got {rev}"
        )));
    }
    let (start, end) = kv.prefix_range(prefix);
    let mut options = ec::WatchOptions::new().with_range(end);
    if let Some(rev) = start_revision {
        options = options.with_start_revision(rev);
    }
    // Creating a watch changes nothing in etcd, so an attempt that got no answer is dropped
    // (which cancels it) and made again on a fresh stream, until the request timeout.
    let deadline = tokio::time::Instant::now() + kv.options.request_timeout;
    let attempt_bound = (kv.options.request_timeout / 3).max(Duration::from_millis(200));
    let (stream, created) = loop {
        let now = tokio::time::Instant::now();
        let bound = attempt_bound.min(deadline.saturating_duration_since(now));
        let attempt = kv
            .call_within(bound, "watch", None, || {
                let mut client = kv.client.watch_client();
                let (start, options) = (start.clone(), options.clone());
                async move {
                    let mut stream = client.watch(start, Some(options)).await?;
                    let created = stream.message().await?;
                    Ok((stream, created))
                }
            })
            .await;
        match attempt {
            Err(Error::Timeout { .. }) if tokio::time::Instant::now() < deadline => {
                tracing::debug!(backend = %kv.backend, after = ?bound, "watch creation unanswered, retrying on a new stream");
            }
            attempt => break attempt?,
        }
    };
    let created = match created {
        Some(created) => created,
        None => return Err(kv.unavailable("etcd closed the watch stream at creation".into())),
    };
    let mut cursor = Cursor {
        kv: kv.clone(),
        stream,
        // Without a start revision the watch begins after the revision etcd created it at.
        next: start_revision.unwrap_or_else(|| created.header().map_or(1, |h| h.revision() + 1)),
        pending: VecDeque::new(),
        done: false,
    };
    if !created.created() {
        return Err(Error::corrupt(
            "etcd's first watch answer is not a creation",
            format!("{created:?}"),
        ));
    }
    // A compacted start revision is refused in the creation answer or in the next one (etcd
    // 3.4 does the latter): an error from here, or as the stream's first item.
    cursor.absorb(created)?;
    Ok(futures::stream::unfold(cursor, Cursor::next_item).boxed())
}

struct Cursor {
    kv: EtcdKv,
    stream: ec::WatchStream,
    /// The next revision this watch has not delivered.
    next: i64,
    pending: VecDeque<WatchEvent>,
    done: bool,
}

impl Cursor {
    async fn next_item(mut self) -> Option<(Result<WatchEvent>, Self)> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some((Ok(event), self));
            }
            if self.done {
                return None;
            }
            let result = match self.stream.message().await {
                Ok(Some(response)) => self.absorb(response),
                Ok(None) => Err(self.kv.unavailable("etcd closed the watch stream".into())),
                Err(e) => Err(self.kv.error("watch", e, None)),
            };
            if let Err(e) = result {
                self.done = true;
                return Some((Err(e), self));
            }
        }
    }

    /// Queues the events of one etcd answer, or turns it into the error that ends the watch.
    fn absorb(&mut self, response: ec::WatchResponse) -> Result<()> {
        if response.compact_revision() > 0 {
            // etcd keeps history from `compact_revision` on: everything before it is gone.
            return Err(Error::Compacted {
                requested: self.next,
                compacted: response.compact_revision() - 1,
            });
        }
        if response.canceled() {
            let reason = match response.cancel_reason() {
                "" => "no reason given",
                reason => reason,
            };
            return Err(self
                .kv
                .unavailable(format!("etcd cancelled the watch: {reason}").into()));
        }
        for event in response.events() {
            let Some(kv) = event.kv() else {
                return Err(Error::corrupt(
                    "etcd sent a watch event without a key",
                    format!("{event:?}"),
                ));
            };
            let kv: KeyValue = self.kv.key_value(kv.clone())?;
            let kind = match event.event_type() {
                ec::EventType::Put => EventKind::Put,
                ec::EventType::Delete => EventKind::Delete,
            };
            self.next = kv.mod_revision + 1;
            self.pending.push_back(WatchEvent {
                kind,
                revision: kv.mod_revision,
                kv,
            });
        }
        Ok(())
    }
}
