//! The time seam: everything in this crate that needs "now" asks a [`Clock`].
//!
//! Lease deadlines use the monotonic [`Clock::now`]; timestamps stored in metadata (such as a
//! topic's `created_at_ms`) use the wall clock [`Clock::system_time`]. Tests use
//! [`ManualClock`] and move time forward with [`ManualClock::advance`] instead of sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Source of time. Implementations must be monotonic in [`Clock::now`].
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// Monotonic time, for deadlines.
    fn now(&self) -> Instant;

    /// Wall-clock time, for timestamps shown to people.
    fn system_time(&self) -> SystemTime;

    /// Wall-clock milliseconds since the Unix epoch (0 before 1970).
    fn unix_millis(&self) -> i64 {
        self.system_time()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn system_time(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// A clock that only moves when told to. Both readings advance together.
#[derive(Debug)]
pub struct ManualClock {
    base_instant: Instant,
    base_system: SystemTime,
    offset: Mutex<Duration>,
}

impl ManualClock {
    /// A clock frozen at the current real time.
    pub fn new() -> Self {
        Self {
            base_instant: Instant::now(),
            base_system: SystemTime::now(),
            offset: Mutex::new(Duration::ZERO),
        }
    }

    /// Move time forward by `by`.
    pub fn advance(&self, by: Duration) {
        *self.offset.lock().expect("ManualClock lock poisoned") += by;
    }

    fn offset(&self) -> Duration {
        *self.offset.lock().expect("ManualClock lock poisoned")
    }
}

impl Default for ManualClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Instant {
        self.base_instant + self.offset()
    }

    fn system_time(&self) -> SystemTime {
        self.base_system + self.offset()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_advanced() {
        let clock = ManualClock::new();
        let (t0, w0) = (clock.now(), clock.unix_millis());
        assert_eq!(clock.now(), t0);
        clock.advance(Duration::from_secs(3));
        assert_eq!(clock.now() - t0, Duration::from_secs(3));
        assert_eq!(clock.unix_millis() - w0, 3000);
    }
}
