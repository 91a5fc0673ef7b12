//! Several event loops in one service (`loops: N`): a supervisor process binds the listener
//! and opens the FIFO, then forks N single-threaded loop processes that accept from that one
//! listener. The supervisor is the loops' local bus (`bus.rs`, the part of Redis the cluster
//! layer uses, over socketpairs): channels, presence, counts, rate shares and numbered history
//! are shared between loops exactly as between the nodes of a Redis cluster, without a Redis.
//! With Redis configured, every loop is a node of the cluster instead.
//!
//! The supervisor replaces a loop that dies, passes signals on, and speaks to systemd; it
//! never serves a client. No process ever starts a thread.

mod bus;
mod spawn;
mod store;
mod supervisor;

use crate::config::Config;
use crate::scaling::redis::BusEnds;

pub use supervisor::Supervisor;

/// Where one loop stands among its siblings: given to the server of a forked loop.
#[derive(Debug, Clone)]
pub struct Place {
    pub index: usize,
    pub count: usize,
    /// This loop's ends of its socketpairs to the bus; `None` when the loops share channels
    /// through Redis.
    pub bus: Option<BusEnds>,
    /// The loop's name among the nodes: the same for the loop that replaces it, so the others
    /// take the newcomer's state for the dead one's.
    pub node_id: String,
    /// Where the loops pin their numbers for one another (`/metrics`, `/up`, console).
    pub board: crate::board::Board,
}

impl Place {
    /// The loop's view of a configuration (at start and on every reload): its node of the
    /// cluster, and its share of the process's worker bounds.
    pub fn adjust(&self, cfg: &mut Config) {
        if self.bus.is_some() {
            cfg.scaling.driver = "bus".into();
        }
        cfg.scaling.node_id = self.node_id.clone();
        cfg.max_workers = share(cfg.max_workers, self.count, self.index);
        cfg.max_queued_jobs = share(cfg.max_queued_jobs, self.count, self.index);
    }
}

/// Loop `index`'s part of `total` split between `count` loops: the parts add up to `total`
/// (the first loops take the remainder), and none is 0, so every loop can run a worker.
fn share(total: usize, count: usize, index: usize) -> usize {
    let count = count.max(1);
    let part = total / count + usize::from(index < total % count);
    part.max(1)
}

/// The node name of loop `index`: `loop-N` on the local bus, the configured (or generated)
/// node id with the loop's number through Redis.
fn node_id(cfg: &Config, base: &str, index: usize) -> String {
    if cfg.scaling.driver == "redis" {
        format!("{base}-{index}")
    } else {
        format!("loop-{index}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_the_whole_and_none_is_empty() {
        for (total, count) in [(64, 2), (64, 3), (5, 4), (1, 3), (1000, 16)] {
            let parts: Vec<usize> = (0..count).map(|i| share(total, count, i)).collect();
            assert!(parts.iter().all(|&p| p >= 1), "{parts:?}");
            if total >= count {
                assert_eq!(parts.iter().sum::<usize>(), total, "{parts:?}");
            }
        }
        assert_eq!(share(64, 3, 0), 22);
        assert_eq!(share(64, 3, 2), 21);
    }
}
