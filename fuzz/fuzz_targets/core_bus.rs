//! The whole server without sockets, as one loop of several on their local bus: the `core`
//! target's interleavings, plus the bus setting the loop's barriers at any point. Questions,
//! REST calls and FIFO lines wait for them; after every step the invariants hold, and at the
//! end every client received each publication for its channels exactly once, in order. The
//! harness is shared with `tests/core_sim.rs`, which runs it on random inputs in CI.
#![no_main]

#[path = "../../tests/sim/mod.rs"]
mod sim;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    sim::Sim::run_on_bus(data);
});
