//! Runs a fuzz target: `fuzz <batch|produce|cold|kafka> [--seed N] [--execs N]`. Replays the target's
//! corpus first, then generates inputs from the seed. Memory in use may grow by at most
//! `tierlog_tests::fuzz::ALLOCATION_BOUND` during one input: an allocation past that fails and
//! aborts the run (the defect class "one request aborts the node"), with the seed and the
//! input's number printed so it can be found again.

use std::time::Instant;

use tierlog_tests::fuzz::{self, Target};

#[global_allocator]
static ALLOCATOR: cap::Cap<std::alloc::System> = cap::Cap::new(std::alloc::System, usize::MAX);

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: fuzz <batch|produce|cold|kafka> [--seed N] [--execs N] [--chunk N]";
    let target = args
        .first()
        .and_then(|t| Target::parse(t))
        .unwrap_or_else(|| panic!("{usage}"));
    let flag = |name: &str, default: u64| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .map(|v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name} takes a number; {usage}"))
            })
            .unwrap_or(default)
    };
    // One line per panic (the harness reports the panics it catches as findings; a panic the
    // code under test catches itself is only noise here).
    std::panic::set_hook(Box::new(|info| eprintln!("panic: {info}")));
    let seed = flag("--seed", 1);
    let execs = flag("--execs", 10_000);
    // Chunks of executions, each from its own seed (seed + chunk index), so progress shows and
    // an abort names a chunk small enough to re-run.
    let chunk = flag("--chunk", 100_000).max(1);
    let started = Instant::now();
    let (mut total, mut accepted) = (0u64, 0u64);
    let mut findings = Vec::new();
    let mut i = 0;
    while total < execs {
        let n = chunk.min(execs - total);
        let chunk_seed = seed.wrapping_add(i);
        eprintln!(
            "target {} chunk {i}: seed {chunk_seed}, {n} executions",
            target.name()
        );
        // The corpus is replayed once, with the first chunk.
        let report = fuzz::run_with(target, chunk_seed, n, i == 0, &|on| {
            let limit = if on {
                ALLOCATOR.allocated() + fuzz::ALLOCATION_BOUND
            } else {
                usize::MAX
            };
            ALLOCATOR
                .set_limit(limit)
                .expect("limit above what is allocated");
        });
        total += report.executions;
        accepted += report.accepted;
        findings.extend(report.findings);
        i += 1;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "target {}: {total} executions from seed {seed} ({accepted} accepted) in {secs:.1} s ({:.0}/s); {} findings",
        target.name(),
        total as f64 / secs.max(1e-9),
        findings.len()
    );
    for (path, why) in &findings {
        println!("finding {}: {why}", path.display());
    }
    if !findings.is_empty() {
        std::process::exit(1);
    }
}
