//! The whole server, driven without sockets from random inputs (the short, in-CI run of the
//! `core` fuzz target): arbitrary interleavings of clients of every protocol, FIFO lines, REST
//! calls, other nodes, job outcomes, partial reads, timer ticks and disconnects, with the
//! invariants checked after every step and exactly-once, in-order delivery at the end.

mod sim;

/// A deterministic generator, so a failure names its seed.
fn input(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// `FERROCAST_SIM_RUNS` (1 500 by default) random inputs through `run`; the first that breaks
/// an invariant is named by its seed.
fn random_runs(run: fn(&[u8]), what: &str) {
    let runs: u64 = std::env::var("FERROCAST_SIM_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1500);
    for seed in 0..runs {
        let data = input(seed, 256 + (seed as usize % 7) * 512);
        let result = std::panic::catch_unwind(|| run(&data));
        assert!(
            result.is_ok(),
            "seed {seed} broke an invariant{what} (see the panic above)"
        );
    }
}

#[test]
fn random_interleavings_keep_every_invariant() {
    random_runs(sim::Sim::run, "");
}

/// The same for one loop of several on their bus: questions, REST calls and FIFO lines wait
/// for the bus's barriers, set at any point of the run.
#[test]
fn random_interleavings_keep_every_invariant_on_the_loops_bus() {
    random_runs(sim::Sim::run_on_bus, " on the bus");
}

/// The fuzz target's seed inputs and every input it ever found a bug with, replayed.
#[test]
fn fuzz_seeds_and_regressions_replay() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut replayed = 0;
    for dir in ["seeds/core", "regressions/core"] {
        let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let data = std::fs::read(entry.path()).expect("read fuzz input");
            sim::Sim::run(&data);
            replayed += 1;
        }
    }
    assert!(replayed > 0, "no inputs in fuzz/seeds/core");
}
