//! A job for a forked worker, and how it ended: plain data shared by the core, which asks for
//! jobs, and `worker.rs`, which runs them.

use std::time::Duration;

/// What the child runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    /// Run a command, without a shell. `argv[0]` is resolved via `PATH` (see the module docs).
    Exec { argv: Vec<String> },
}

/// One unit of work for one child process.
#[derive(Debug, Clone)]
pub struct Job {
    pub handler: Handler,
    /// The child's *entire* environment: nothing of the server's is inherited.
    pub env: Vec<(String, String)>,
    pub stdin: Vec<u8>,
    /// Counted from the moment the child starts (time spent queued does not count).
    pub deadline: Duration,
    /// Output beyond this is read and discarded, and the outcome marked `truncated`.
    pub max_output: usize,
}

/// How a job ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The command exited; `truncated` means it wrote more than `max_output` bytes.
    Exited {
        code: i32,
        stdout: Vec<u8>,
        truncated: bool,
    },
    /// The command was killed by a signal it did not get from us (e.g. `SIGSEGV`).
    Signaled {
        signal: i32,
        stdout: Vec<u8>,
        truncated: bool,
    },
    /// It ran past its deadline and its process group was sent `SIGKILL`.
    TimedOut,
    /// It could not be started; the reason is meant for the log.
    SpawnFailed(String),
}
