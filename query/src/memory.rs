//! The memory pool of one query: a fixed limit, shared fairly among the operators that can spill
//! (sorts, aggregations, joins), with a share kept back for the ones that cannot.
//!
//! DataFusion's `FairSpillPool` lets spilling operators divide the whole limit among themselves,
//! so when they are full, an operator that cannot spill (the merge above two spilled sorts, for
//! one) finds nothing left and the query fails although spilling would have worked. Here the
//! spilling operators divide only `limit - headroom`.
//!
//! Invariant: the reserved total never exceeds the limit by more than what `grow` (the
//! infallible path DataFusion uses for tiny bookkeeping) adds.

use std::fmt;
use std::sync::Mutex;

use datafusion::error::{DataFusionError, Result};
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};

#[derive(Debug, Default)]
struct State {
    /// Registered consumers that can spill.
    spillers: usize,
    spillable: usize,
    unspillable: usize,
}

/// A per-query pool of `limit` bytes; spilling operators share `limit - headroom`.
#[derive(Debug)]
pub struct QueryPool {
    limit: usize,
    headroom: usize,
    state: Mutex<State>,
}

impl QueryPool {
    /// Keeps a quarter of the limit for operators that cannot spill.
    pub fn new(limit: usize) -> Self {
        QueryPool {
            limit,
            headroom: limit / 4,
            state: Mutex::default(),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl fmt::Display for QueryPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "query pool of {} MiB", self.limit >> 20)
    }
}

fn exhausted(r: &MemoryReservation, additional: usize, available: usize) -> DataFusionError {
    DataFusionError::ResourcesExhausted(format!(
        "{} needed {} KiB more (holding {} KiB) and {} KiB were available",
        r.consumer().name(),
        additional >> 10,
        r.size() >> 10,
        available >> 10
    ))
}

impl MemoryPool for QueryPool {
    fn name(&self) -> &str {
        "tierlog-query"
    }

    fn register(&self, consumer: &MemoryConsumer) {
        if consumer.can_spill() {
            self.state().spillers += 1;
        }
    }

    fn unregister(&self, consumer: &MemoryConsumer) {
        if consumer.can_spill() {
            let mut s = self.state();
            s.spillers = s.spillers.saturating_sub(1);
        }
    }

    fn grow(&self, r: &MemoryReservation, additional: usize) {
        let mut s = self.state();
        if r.consumer().can_spill() {
            s.spillable += additional;
        } else {
            s.unspillable += additional;
        }
    }

    fn shrink(&self, r: &MemoryReservation, shrink: usize) {
        let mut s = self.state();
        if r.consumer().can_spill() {
            s.spillable = s.spillable.saturating_sub(shrink);
        } else {
            s.unspillable = s.unspillable.saturating_sub(shrink);
        }
    }

    fn try_grow(&self, r: &MemoryReservation, additional: usize) -> Result<()> {
        let mut s = self.state();
        if r.consumer().can_spill() {
            let shared = (self.limit - self.headroom).saturating_sub(s.unspillable);
            let share = shared / s.spillers.max(1);
            if r.size() + additional > share {
                return Err(exhausted(r, additional, share.saturating_sub(r.size())));
            }
            s.spillable += additional;
        } else {
            let available = self.limit.saturating_sub(s.unspillable + s.spillable);
            if additional > available {
                return Err(exhausted(r, additional, available));
            }
            s.unspillable += additional;
        }
        Ok(())
    }

    fn reserved(&self) -> usize {
        let s = self.state();
        s.spillable + s.unspillable
    }

    fn memory_limit(&self) -> MemoryLimit {
        MemoryLimit::Finite(self.limit)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    #[test]
    fn spillers_leave_headroom_for_the_rest() {
        let pool: Arc<dyn MemoryPool> = Arc::new(QueryPool::new(1000));
        let a = MemoryConsumer::new("sort a")
            .with_can_spill(true)
            .register(&pool);
        let b = MemoryConsumer::new("sort b")
            .with_can_spill(true)
            .register(&pool);
        let merge = MemoryConsumer::new("merge").register(&pool);
        // Two spillers share 750: 375 each.
        a.try_grow(375).unwrap();
        assert!(a.try_grow(1).is_err());
        b.try_grow(375).unwrap();
        // The non-spilling merge still gets the rest.
        merge.try_grow(250).unwrap();
        let e = merge.try_grow(1).unwrap_err();
        assert!(e.to_string().contains("merge needed 0 KiB more"), "{e}");
        assert_eq!(pool.reserved(), 1000);
        a.free();
        merge.try_grow(375).unwrap();
        // Spillers' share shrinks by what non-spillers hold.
        assert!(b.try_grow(1).is_err());
    }
}
