//! [`EmbeddedKv`]: the single-node [`KvBackend`], in memory with durability on local disk.
//!
//! State lives in a `BTreeMap` (see `state`); every write is first committed to a redb database
//! in the store's directory with immediate durability (see `store`), and only then becomes
//! visible to readers and watchers. [`EmbeddedKv::memory`] is the same code without the disk.
//!
//! Concurrency: writers are serialised by one mutex that also owns the database; a writer plans
//! its change under a short read lock, commits it to disk (on a blocking thread), then applies
//! it under a short write lock. Readers never wait for a disk commit.
//!
//! Leases are process-local: they are not persisted. When a store is reopened, every key that
//! was attached to a lease is deleted in one write (the process that kept those leases alive is
//! gone), so e.g. leadership and node registrations of a previous run do not survive it.
//! Expired leases are collected lazily before every operation and by a background sweeper
//! (started when the backend is created inside a Tokio runtime), so idle watchers still see
//! the deletes. Time comes from the configured [`Clock`].
//!
//! Watch history is kept in memory only, bounded by [`EmbeddedOptions::history_limit`]
//! events; after a reopen it starts empty, so a watch from an older revision is
//! [`Error::Compacted`].

mod state;
mod store;
mod watch;

#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use self::state::{Plan, State};
use self::store::Store;
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::kv::{KvBackend, LeaseId, Txn, TxnOp, TxnResponse, WatchStream};

/// Tunables of [`EmbeddedKv`].
#[derive(Debug, Clone)]
pub struct EmbeddedOptions {
    /// Time source for lease deadlines.
    pub clock: Arc<dyn Clock>,
    /// Watch events kept in memory for replay and for slow watchers. More costs memory; fewer
    /// makes slow or late watchers fail with `Compacted` sooner.
    pub history_limit: usize,
    /// Most compares or ops per txn branch, as etcd's `--max-txn-ops` (default 128 there too),
    /// so code tested here does not break on etcd.
    pub max_txn_ops: usize,
    /// How often the background sweeper looks for expired leases.
    pub sweep_interval: Duration,
}

impl Default for EmbeddedOptions {
    fn default() -> Self {
        Self {
            clock: Arc::new(SystemClock),
            history_limit: 10_000,
            max_txn_ops: 128,
            sweep_interval: Duration::from_millis(100),
        }
    }
}

/// The embedded metadata backend. Cheap to clone; clones share one store.
#[derive(Clone, Debug)]
pub struct EmbeddedKv {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    state: RwLock<State>,
    /// Held for the whole of every write; owns the database (`None`: in memory, or closed).
    writer: Mutex<Option<Store>>,
    durable: bool,
    options: EmbeddedOptions,
    /// Carries the latest revision to watchers after every commit.
    events: tokio::sync::watch::Sender<i64>,
}

impl EmbeddedKv {
    /// Opens (or creates) a durable store in directory `dir`, with default options.
    pub async fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(dir, EmbeddedOptions::default()).await
    }

    /// Opens (or creates) a durable store in directory `dir`. Keys that were attached to
    /// leases are deleted (see the module docs).
    pub async fn open_with(dir: impl AsRef<Path>, options: EmbeddedOptions) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        let history_limit = options.history_limit;
        let (store, state) = tokio::task::spawn_blocking(move || -> Result<(Store, State)> {
            let (mut store, loaded) = Store::open(&dir)?;
            // No history before this point: watches must start after the loaded revision.
            let mut state = State::new(loaded.revision, loaded.kvs, loaded.revision, history_limit);
            let orphans = state.plan_drop_leased_keys();
            if !orphans.is_noop() {
                let keys = orphans.changes.len();
                store.persist(&orphans)?;
                state.apply(orphans);
                tracing::info!(keys, "deleted keys of leases from a previous run");
            }
            Ok((store, state))
        })
        .await
        .map_err(join_error)??;
        tracing::info!(revision = state.revision, "opened embedded metadata store");
        Ok(Self::from_parts(state, Some(store), options))
    }

    /// A store that lives only in memory: same semantics, nothing survives the process.
    pub fn memory() -> Self {
        Self::memory_with(EmbeddedOptions::default())
    }

    pub fn memory_with(options: EmbeddedOptions) -> Self {
        let state = State::new(1, Default::default(), 0, options.history_limit);
        Self::from_parts(state, None, options)
    }

    fn from_parts(state: State, store: Option<Store>, options: EmbeddedOptions) -> Self {
        let (events, _) = tokio::sync::watch::channel(state.revision);
        let inner = Arc::new(Inner {
            state: RwLock::new(state),
            durable: store.is_some(),
            writer: Mutex::new(store),
            options,
            events,
        });
        spawn_sweeper(&inner);
        EmbeddedKv { inner }
    }

    /// Closes the store for every clone: waits for the write in progress, releases the
    /// database file, ends watches with [`Error::Closed`]. Later calls fail with `Closed`.
    pub async fn close(&self) -> Result<()> {
        let inner = Arc::clone(&self.inner);
        let close = move || {
            let mut writer = inner.lock_writer();
            inner
                .state
                .write()
                .expect("metadata state lock poisoned by an earlier panic")
                .closed = true;
            writer.take();
            inner.events.send_modify(|_| {});
        };
        if self.inner.durable {
            tokio::task::spawn_blocking(close)
                .await
                .map_err(join_error)?;
        } else {
            close();
        }
        Ok(())
    }
}

impl Inner {
    fn read_state(&self) -> Result<RwLockReadGuard<'_, State>> {
        let state = self
            .state
            .read()
            .expect("metadata state lock poisoned by an earlier panic");
        if state.closed {
            return Err(Error::Closed);
        }
        Ok(state)
    }

    /// For lease bookkeeping that needs no disk write (grant, keep-alive).
    fn write_state(&self) -> Result<RwLockWriteGuard<'_, State>> {
        let state = self
            .state
            .write()
            .expect("metadata state lock poisoned by an earlier panic");
        if state.closed {
            return Err(Error::Closed);
        }
        Ok(state)
    }

    fn lock_writer(&self) -> MutexGuard<'_, Option<Store>> {
        self.writer
            .lock()
            .expect("metadata writer lock poisoned by an earlier panic")
    }

    fn now(&self) -> Instant {
        self.options.clock.now()
    }

    /// Runs a write: expires due leases, then plans `op` and commits its plan. Disk commits
    /// run on a blocking thread.
    async fn write<T, F>(self: &Arc<Self>, op: F) -> Result<T>
    where
        F: FnOnce(&State, Instant) -> Result<(Plan, T)> + Send + 'static,
        T: Send + 'static,
    {
        if self.durable {
            let inner = Arc::clone(self);
            tokio::task::spawn_blocking(move || inner.write_blocking(op))
                .await
                .map_err(join_error)?
        } else {
            self.write_blocking(op)
        }
    }

    fn write_blocking<T>(
        &self,
        op: impl FnOnce(&State, Instant) -> Result<(Plan, T)>,
    ) -> Result<T> {
        let mut writer = self.lock_writer();
        let now = self.now();
        let expiry = self.read_state()?.plan_expiry(now);
        if let Some(plan) = expiry {
            self.commit(&mut writer, plan)?;
        }
        let (plan, out) = op(&*self.read_state()?, now)?;
        self.commit(&mut writer, plan)?;
        Ok(out)
    }

    fn commit(&self, writer: &mut Option<Store>, plan: Plan) -> Result<()> {
        if plan.is_noop() {
            return Ok(());
        }
        if self.durable && !plan.changes.is_empty() {
            writer.as_mut().ok_or(Error::Closed)?.persist(&plan)?;
        }
        let revision = {
            let mut state = self
                .state
                .write()
                .expect("metadata state lock poisoned by an earlier panic");
            state.apply(plan);
            state.revision
        };
        self.events.send_replace(revision);
        Ok(())
    }

    /// Collects expired leases now if any is due (reads call this so they never see keys of a
    /// lease that has expired).
    async fn expire_due(self: &Arc<Self>) -> Result<()> {
        let due = self
            .read_state()?
            .next_deadline()
            .is_some_and(|deadline| deadline <= self.now());
        if due {
            self.write(|state, _| Ok((Plan::noop(state.revision), ())))
                .await?;
        }
        Ok(())
    }
}

fn spawn_sweeper(inner: &Arc<Inner>) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        tracing::debug!("no Tokio runtime: leases expire lazily only");
        return;
    };
    let weak = Arc::downgrade(inner);
    let period = inner.options.sweep_interval;
    runtime.spawn(async move {
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let Some(inner) = weak.upgrade() else { break };
            match inner.expire_due().await {
                Ok(()) => {}
                Err(Error::Closed) => break,
                Err(error) => tracing::warn!(%error, "lease sweep failed"),
            }
        }
    });
}

fn join_error(e: tokio::task::JoinError) -> Error {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic());
    }
    Error::Unavailable {
        backend: "embedded store".into(),
        source: e.into(),
    }
}

fn is_read_only(txn: &Txn) -> bool {
    txn.success
        .iter()
        .chain(&txn.failure)
        .all(|op| matches!(op, TxnOp::Get { .. } | TxnOp::Range { .. }))
}

#[async_trait]
impl KvBackend for EmbeddedKv {
    async fn txn(&self, txn: Txn) -> Result<TxnResponse> {
        let max_ops = self.inner.options.max_txn_ops;
        if is_read_only(&txn) {
            self.inner.expire_due().await?;
            let now = self.inner.now();
            let (_, response) = self.inner.read_state()?.plan_txn(txn, now, max_ops)?;
            return Ok(response);
        }
        self.inner
            .write(move |state, now| state.plan_txn(txn, now, max_ops))
            .await
    }

    async fn grant_lease(&self, ttl: Duration) -> Result<LeaseId> {
        if ttl.is_zero() {
            return Err(Error::invalid("lease TTL must be positive"));
        }
        let now = self.inner.now();
        Ok(self.inner.write_state()?.grant(ttl, now))
    }

    async fn keep_alive(&self, lease: LeaseId) -> Result<Duration> {
        let now = self.inner.now();
        self.inner.write_state()?.keep_alive(lease, now)
    }

    async fn revoke_lease(&self, lease: LeaseId) -> Result<()> {
        self.inner
            .write(move |state, now| Ok((state.plan_revoke(lease, now)?, ())))
            .await
    }

    async fn watch_prefix(
        &self,
        prefix: &[u8],
        start_revision: Option<i64>,
    ) -> Result<WatchStream> {
        self.inner.expire_due().await?;
        watch::watch_prefix(&self.inner, prefix, start_revision)
    }

    async fn revision(&self) -> Result<i64> {
        self.inner.expire_due().await?;
        Ok(self.inner.read_state()?.revision)
    }
}
