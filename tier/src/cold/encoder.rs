//! Encoder threads: segment → Parquet conversion runs on a few dedicated threads at the lowest
//! CPU priority the OS gives without privileges (Linux: nice 19, per thread).
//!
//! Conversion is CPU-bound (zstd). Run at normal priority on a small machine it takes cores
//! from appends and reads and turns into produce latency; at the lowest priority it uses only
//! what ingest leaves idle, and a backlog waits on the hot tier (bounded by its disk budget,
//! which pushes back on producers) instead of in ack latency.
//!
//! The exception is a small segment that acks=all requests wait for: its conversion *is* their
//! latency, and on a busy machine a nice-19 thread gets almost no CPU (about 1.5% against a
//! normal one). Such jobs go to threads of their own at normal priority ([`Urgency::Waited`]).
//! Invariant: at most `threads` conversions of each kind run at once, so their memory is
//! bounded too (waited-for ones are small by the caller's rule).

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

type Job = Box<dyn FnOnce() + Send>;

/// Who waits for a conversion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Urgency {
    /// Nobody: lowest priority.
    Background,
    /// Acknowledgements wait for it: normal priority.
    Waited,
}

/// Two fixed pools of threads, low and normal priority. The threads exit when the pools are
/// dropped.
#[derive(Debug)]
pub(crate) struct Encoders {
    background: mpsc::Sender<Job>,
    waited: mpsc::Sender<Job>,
}

fn pool(threads: usize, name: &str, low_priority: bool) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..threads.max(1) {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                if low_priority {
                    crate::background_priority("an encoder thread");
                }
                loop {
                    let job = match rx.lock() {
                        Ok(rx) => rx.recv(),
                        Err(_) => return,
                    };
                    match job {
                        Ok(job) => job(),
                        Err(_) => return,
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start an encoder thread");
        }
    }
    tx
}

impl Encoders {
    pub fn start(threads: usize) -> Encoders {
        Encoders {
            background: pool(threads, "tierlog-encode", true),
            waited: pool(threads, "tierlog-encode-ack", false),
        }
    }

    /// Runs `f` on an encoder thread of the given urgency and waits for its result.
    pub async fn run<T: Send + 'static>(
        &self,
        urgency: Urgency,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        });
        let pool = match urgency {
            Urgency::Background => &self.background,
            Urgency::Waited => &self.waited,
        };
        pool.send(job).map_err(|_| Error::Closed)?;
        match result.await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::invalid("a segment conversion panicked")),
            Err(_) => Err(Error::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_reports_panics() {
        let e = Encoders::start(2);
        for urgency in [Urgency::Background, Urgency::Waited] {
            assert_eq!(e.run(urgency, || Ok(21 * 2)).await.unwrap(), 42);
            let r: Result<()> = e.run(urgency, || panic!("boom")).await;
            assert!(r.unwrap_err().to_string().contains("panicked"));
            // The pool survives a panicking job.
            assert_eq!(e.run(urgency, || Ok(7)).await.unwrap(), 7);
        }
    }
}
