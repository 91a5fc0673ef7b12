//! Several event loops in one service (`loops: N`): a supervisor process binds the listener
//! and opens the FIFO, then forks N single-threaded loop processes that accept from that one
//! listener. The supervisor is the loops' local bus (`bus.rs`, the part of Redis the cluster
//! layer uses, over socketpairs): channels, presence, counts, rate shares and numbered history
//! are shared between loops exactly as between the nodes of a Redis cluster, without a Redis.
//! With Redis configured, the supervisor is also the loops' one link to Redis
//! (`upstream.rs`): each loop is a node of the cluster.
//!
//! The supervisor replaces a loop that dies, passes signals on, and speaks to systemd; it
//! never serves a client. No process ever starts a thread.

mod bus;
mod readers;
mod spawn;
mod store;
mod supervisor;
mod upstream;

use crate::config::Config;
use crate::scaling::redis::BusEnds;

pub use supervisor::Supervisor;

/// Where one loop stands among its siblings: given to the server of a forked loop.
#[derive(Debug, Clone)]
pub struct Place {
    pub index: usize,
    pub count: usize,
    /// This loop's ends of its socketpairs to the bus.
    pub bus: BusEnds,
    /// The loop's name among the nodes: the same for the loop that replaces it, so the others
    /// take the newcomer's state for the dead one's.
    pub node_id: String,
    /// Where the loops pin their numbers for one another (`/metrics`, `/up`, console).
    pub board: crate::board::Board,
}

impl Place {
    /// The loop's view of a configuration (at start and on every reload): its node of the
    /// cluster. (`max_workers` stays the process's: the loops count one another's workers on
    /// the board.)
    pub fn adjust(&self, cfg: &mut Config) {
        cfg.scaling.driver = "bus".into();
        cfg.scaling.node_id = self.node_id.clone();
    }
}

/// The loops' names among the nodes: `loop-N` on the bus alone; through Redis the configured
/// (or a generated) node id with the loop's number. The loop that replaces one takes its name,
/// so the others take the newcomer's state for the dead one's.
fn node_names(cfg: &Config, count: usize) -> Vec<String> {
    let base = match cfg.scaling.node_id.as_str() {
        _ if cfg.scaling.driver != "redis" => "loop".to_string(),
        "" => crate::identity::node_id(),
        id => id.to_string(),
    };
    (0..count).map(|i| format!("{base}-{i}")).collect()
}
