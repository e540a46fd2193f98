//! Encoder threads: segment → Parquet conversion runs on a few dedicated threads at the lowest
//! CPU priority the OS gives without privileges (Linux: nice 19, per thread).
//!
//! Conversion is CPU-bound (zstd). Run at normal priority on a small machine it takes cores
//! from appends and reads and turns into produce latency; at the lowest priority it uses only
//! what ingest leaves idle, and a backlog waits on the hot tier (bounded by its disk budget,
//! which pushes back on producers) instead of in ack latency. Invariant: at most `threads`
//! conversions run at once, so their memory is bounded too.

use std::sync::mpsc;
use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed pool of low-priority threads. The threads exit when the pool is dropped.
#[derive(Debug)]
pub(crate) struct Encoders {
    tx: mpsc::Sender<Job>,
}

impl Encoders {
    pub fn start(threads: usize) -> Encoders {
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads.max(1) {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("tierlog-encode-{i}"))
                .spawn(move || {
                    crate::background_priority("an encoder thread");
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
        Encoders { tx }
    }

    /// Runs `f` on an encoder thread and waits for its result.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
        });
        self.tx.send(job).map_err(|_| Error::Closed)?;
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
        assert_eq!(e.run(|| Ok(21 * 2)).await.unwrap(), 42);
        let r: Result<()> = e.run(|| panic!("boom")).await;
        assert!(r.unwrap_err().to_string().contains("panicked"));
        // The pool survives a panicking job.
        assert_eq!(e.run(|| Ok(7)).await.unwrap(), 7);
    }
}
