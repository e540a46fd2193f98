//! In-process watches for the embedded backend.
//!
//! A watch is a cursor over the shared event history: it remembers the next revision it needs,
//! copies matching events out of the history under the read lock, and sleeps on a
//! `tokio::sync::watch` channel that every commit bumps. Replay from a start revision and live
//! delivery are the same code path. A watcher that falls so far behind that the history has
//! been trimmed past its cursor gets [`Error::Compacted`], like a slow etcd watcher after a
//! compaction, and must resynchronise.
//!
//! The stream holds only a weak reference to the backend: it ends when the backend is dropped,
//! and yields [`Error::Closed`] once when it is closed.

use std::collections::VecDeque;
use std::sync::{Arc, Weak};

use futures::StreamExt;
use tokio::sync::watch;

use super::Inner;
use crate::error::{Error, Result};
use crate::kv::{WatchEvent, WatchStream};

struct Cursor {
    inner: Weak<Inner>,
    notify: watch::Receiver<i64>,
    prefix: Vec<u8>,
    /// Next revision this watcher has not seen.
    next: i64,
    pending: VecDeque<WatchEvent>,
    done: bool,
}

pub(super) fn watch_prefix(
    inner: &Arc<Inner>,
    prefix: &[u8],
    start_revision: Option<i64>,
) -> Result<WatchStream> {
    let notify = inner.events.subscribe();
    let next = {
        let state = inner.read_state()?;
        match start_revision {
            None => state.revision + 1,
            Some(rev) if rev < 1 => {
                return Err(Error::invalid(format!(
                    "watch start revision must be >= 1, got {rev}"
                )));
            }
            Some(rev) if rev <= state.compacted => {
                return Err(Error::Compacted {
                    requested: rev,
                    compacted: state.compacted,
                });
            }
            Some(rev) => rev,
        }
    };
    let cursor = Cursor {
        inner: Arc::downgrade(inner),
        notify,
        prefix: prefix.to_vec(),
        next,
        pending: VecDeque::new(),
        done: false,
    };
    Ok(futures::stream::unfold(cursor, next_event).boxed())
}

async fn next_event(mut cursor: Cursor) -> Option<(Result<WatchEvent>, Cursor)> {
    loop {
        if let Some(event) = cursor.pending.pop_front() {
            return Some((Ok(event), cursor));
        }
        if cursor.done {
            return None;
        }
        // Mark the current notification as seen *before* scanning, so a commit that lands
        // after the scan is never missed.
        cursor.notify.borrow_and_update();
        if let Err(e) = cursor.poll_history() {
            cursor.done = true;
            return Some((Err(e), cursor));
        }
        if cursor.pending.is_empty() && cursor.notify.changed().await.is_err() {
            return None; // the backend was dropped
        }
    }
}

impl Cursor {
    /// Moves new matching events from the history into `pending`.
    fn poll_history(&mut self) -> Result<()> {
        let Some(inner) = self.inner.upgrade() else {
            self.done = true;
            return Ok(());
        };
        let state = inner.read_state()?;
        if self.next <= state.compacted {
            return Err(Error::Compacted {
                requested: self.next,
                compacted: state.compacted,
            });
        }
        state.collect_events(&self.prefix, self.next, &mut self.pending);
        self.next = self.next.max(state.revision + 1);
        Ok(())
    }
}
