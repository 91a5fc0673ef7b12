//! A job for a worker, and how it ended: plain data shared by the core, which asks for jobs,
//! and `worker/`, which runs them (a child process, or a request to a FastCGI application).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// What runs the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Handler {
    /// Run a command, without a shell. `argv[0]` is resolved via `PATH` (see the module docs).
    Exec { argv: Vec<String> },
    /// Ask a FastCGI application (php-fpm) to run `script`: the environment becomes the
    /// request's parameters, stdin its body.
    FastCgi { target: FcgiTarget, script: PathBuf },
}

/// Where a FastCGI application listens.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum FcgiTarget {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl std::fmt::Display for FcgiTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FcgiTarget::Unix(path) => write!(f, "unix:{}", path.display()),
            FcgiTarget::Tcp(addr) => write!(f, "{addr}"),
        }
    }
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
    /// An application asked over a protocol with statuses (FastCGI) answered; `body` is what it
    /// sent after its headers.
    Answered {
        status: u16,
        body: Vec<u8>,
        truncated: bool,
    },
    /// It ran past its deadline: its process group was sent `SIGKILL`, or its request aborted.
    TimedOut,
    /// It could not be started, or the application could not be asked (refused connection, an
    /// answer that is not FastCGI); the reason is meant for the log.
    SpawnFailed(String),
}
