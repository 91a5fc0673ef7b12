//! What the core asks of the loop, besides writing queued bytes.

use crate::job::Job;

/// Identifies a job the core asked for, from [`Effects::jobs`] to [`Core::on_job_done`].
pub type JobId = u64;

/// What the loop must do besides writing queued bytes.
#[derive(Default)]
pub struct Effects {
    /// Connections that are gone: drop their sockets now.
    pub closed: Vec<usize>,
    /// Jobs to run in forked workers; their outcomes come back through [`Core::on_job_done`].
    pub jobs: Vec<(JobId, Job)>,
    /// Messages and commands for the Redis link.
    pub link: Vec<LinkOp>,
    /// Per-user FIFOs to open (a user's first connection) or close (its last).
    pub user_fifos: Vec<UserFifo>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        self.closed.is_empty()
            && self.jobs.is_empty()
            && self.link.is_empty()
            && self.user_fifos.is_empty()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserFifo {
    Open(String),
    Close(String),
}

/// How a shutdown closes the connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stop {
    /// SIGTERM, SIGINT: 1001.
    GoingAway,
    /// SIGUSR2 (`ferrocast restart`): 1012, browsers reconnect at once.
    Restart,
}

/// What the loop must do with the Redis link.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LinkOp {
    /// Publish on the nodes' channel (dropped and counted while Redis is down).
    Publish(Vec<u8>),
    /// A command; its reply comes back to `Core::on_link_reply` with `tag`.
    Command { tag: u64, args: Vec<Vec<u8>> },
    /// For the other loops of this process only (console events), on the bus's own channel.
    Loops(Vec<u8>),
    /// Ask the loops' bus for barrier `n` (`barrier.rs`): its marker comes back to
    /// `Core::on_barrier` once everything the loops wrote before is here.
    Barrier(u64),
}
