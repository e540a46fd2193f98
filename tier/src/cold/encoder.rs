//! Encoder threads: segment → Parquet conversion runs on dedicated threads, in two pools.
//!
//! Conversion is CPU-bound (zstd). The background pool runs at the lowest CPU priority the OS
//! gives without privileges (Linux: SCHED_IDLE, per thread): run at normal priority on a small
//! machine, rolls of large segments would take cores from appends and reads and turn into
//! produce latency; at the lowest priority they use only what ingest leaves idle, and a backlog
//! waits on the hot tier (bounded by its disk budget, which pushes back on producers) instead.
//! The urgent pool runs at normal priority, one thread per core: it converts what acks=all
//! producers wait for (small cuts, one per partition per flush interval), whose conversion *is*
//! their ack latency; on a busy machine the idle class starved them for hundreds of
//! milliseconds. Invariant: at most `threads` background and one per core urgent conversions run
//! at once, so their memory is bounded too.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

type Job = Box<dyn FnOnce() + Send>;

/// The two pools. The threads exit when the pools are dropped.
#[derive(Debug)]
pub(crate) struct Encoders {
    background: mpsc::Sender<Job>,
    urgent: mpsc::Sender<Job>,
}

impl Encoders {
    /// `threads` background threads and one urgent thread per core.
    pub fn start(threads: usize) -> Encoders {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Encoders {
            background: pool("tierlog-encode", threads, true),
            urgent: pool("tierlog-encode-now", cores, false),
        }
    }

    /// Runs `f` on an encoder thread (of the urgent pool if someone waits for its result to
    /// be committed) and waits for its result.
    pub async fn run<T: Send + 'static>(
        &self,
        urgent: bool,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        });
        let tx = if urgent {
            &self.urgent
        } else {
            &self.background
        };
        tx.send(job).map_err(|_| Error::Closed)?;
        match result.await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err(Error::invalid("a segment conversion panicked")),
            Err(_) => Err(Error::Closed),
        }
    }
}

/// Starts `threads` threads named `name-<i>` that run jobs from one queue, at the lowest
/// priority when `background`.
fn pool(name: &str, threads: usize, background: bool) -> mpsc::Sender<Job> {
    let (tx, rx) = mpsc::channel::<Job>();
    let rx = Arc::new(Mutex::new(rx));
    for i in 0..threads.max(1) {
        let rx = rx.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-{i}"))
            .spawn(move || {
                if background {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_reports_panics() {
        let e = Encoders::start(2);
        for urgent in [false, true] {
            assert_eq!(e.run(urgent, || Ok(21 * 2)).await.unwrap(), 42);
            let r: Result<()> = e.run(urgent, || panic!("boom")).await;
            assert!(r.unwrap_err().to_string().contains("panicked"));
            // The pool survives a panicking job.
            assert_eq!(e.run(urgent, || Ok(7)).await.unwrap(), 7);
        }
    }
}
