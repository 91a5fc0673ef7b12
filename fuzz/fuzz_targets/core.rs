//! The whole server without sockets: arbitrary interleavings of clients of every protocol (and
//! raw bytes), FIFO lines, REST calls, other nodes' messages, job outcomes, reads of any size,
//! timer ticks, EOFs and disconnects, driven through `core::Core`. After every step: the core's
//! own invariants (`Core::audit`), bounded queues and buffers, nothing held for a dropped
//! connection; at the end, every client received each publication for its channels exactly
//! once and in publish order (or was closed as a slow consumer). The harness is shared with
//! `tests/core_sim.rs`, which runs it on random inputs in CI.
#![no_main]

#[path = "../../tests/sim/mod.rs"]
mod sim;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sim::Sim::run(data);
});
