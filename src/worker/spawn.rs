//! Starting a child: the job's program and environment prepared in the parent, then one of
//! three strategies (see the module docs of `worker`).

use super::*;

/// Number of threads of this process, from `/proc/self/status`.
pub fn thread_count() -> Option<usize> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
}

// ---- preparing and spawning -------------------------------------------------------------------

/// Everything the child needs, built in the parent (nothing is allocated after a fork).
pub(super) struct Prepared {
    pub(super) path: CString,
    argv: Vec<CString>,
    pub(super) envp: Vec<CString>,
    env: Vec<(String, String)>,
}

pub(super) fn prepare(job: &Job) -> Result<Prepared, String> {
    let Handler::Exec { argv } = &job.handler else {
        return Err("not a command: FastCGI jobs are not spawned".into());
    };
    let Some(program) = argv.first() else {
        return Err("empty argv".into());
    };
    // Last definition of a name wins; names must be non-empty and free of '=' and NUL.
    let mut env: Vec<(String, String)> = Vec::with_capacity(job.env.len());
    for (i, (k, v)) in job.env.iter().enumerate() {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return Err(format!("invalid environment variable {k:?}"));
        }
        if !job.env[i + 1..].iter().any(|(k2, _)| k2 == k) {
            env.push((k.clone(), v.clone()));
        }
    }
    let job_path = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str());
    let path = resolve(program, job_path)?;
    let argv = argv
        .iter()
        .map(|a| CString::new(a.as_str()).map_err(|_| format!("NUL byte in argument {a:?}")))
        .collect::<Result<Vec<_>, _>>()?;
    let envp = env
        .iter()
        .map(|(k, v)| {
            CString::new(format!("{k}={v}")).map_err(|_| "NUL in environment".to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Prepared {
        path,
        argv,
        envp,
        env,
    })
}

/// Resolves `program` like `execvp` would, but against the job's `PATH`, and checks that it is an
/// executable file so the caller gets a clear reason without forking.
pub(super) fn resolve(program: &str, job_path: Option<&str>) -> Result<CString, String> {
    if program.is_empty() {
        return Err("empty program name".into());
    }
    let nul = |_| format!("NUL byte in program name {program:?}");
    if program.contains('/') {
        check_executable(program)?;
        return CString::new(program).map_err(nul);
    }
    let server_path = std::env::var("PATH").ok();
    let search = job_path.or(server_path.as_deref()).unwrap_or(DEFAULT_PATH);
    let mut denied = None;
    for dir in search.split(':') {
        let candidate = if dir.is_empty() {
            format!("./{program}")
        } else {
            format!("{}/{program}", dir.trim_end_matches('/'))
        };
        match check_executable(&candidate) {
            Ok(()) => return CString::new(candidate).map_err(nul),
            Err(reason) if denied.is_none() && !reason.starts_with("no such file") => {
                denied = Some(reason)
            }
            Err(_) => {}
        }
    }
    Err(denied.unwrap_or_else(|| format!("no such file: {program} (not found in PATH={search})")))
}

fn check_executable(path: &str) -> Result<(), String> {
    match std::fs::metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("no such file: {path}"));
        }
        Err(e) => return Err(format!("{path}: {e}")),
        Ok(m) if !m.is_file() => return Err(format!("not a regular file: {path}")),
        Ok(_) => {}
    }
    access(path, AccessFlags::X_OK).map_err(|e| match e {
        Errno::EACCES => format!("not executable: {path}"),
        e => format!("{path}: {e}"),
    })
}

pub(super) fn spawn(
    strategy: Strategy,
    p: &Prepared,
    stdin: OwnedFd,
    stdout: OwnedFd,
) -> Result<Pid, String> {
    match strategy {
        Strategy::PosixSpawn => spawn_posix(p, &stdin, &stdout),
        Strategy::Fork => spawn_fork(p, &stdin, &stdout),
        Strategy::Command => spawn_command(p, stdin, stdout),
    }
    .map_err(|e| format!("cannot start {}: {e}", p.path.to_string_lossy()))
}

fn spawn_posix(p: &Prepared, stdin: &OwnedFd, stdout: &OwnedFd) -> Result<Pid, String> {
    use nix::spawn::{PosixSpawnAttr, PosixSpawnFileActions, PosixSpawnFlags, posix_spawn};
    let err = |e: Errno| e.desc().to_string();
    let mut actions = PosixSpawnFileActions::init().map_err(err)?;
    actions.add_dup2(stdin.as_raw_fd(), 0).map_err(err)?;
    actions.add_dup2(stdout.as_raw_fd(), 1).map_err(err)?;
    let mut attr = PosixSpawnAttr::init().map_err(err)?;
    attr.set_sigdefault(&SigSet::all()).map_err(err)?;
    attr.set_sigmask(&SigSet::empty()).map_err(err)?;
    attr.set_pgroup(Pid::from_raw(0)).map_err(err)?;
    attr.set_flags(
        PosixSpawnFlags::POSIX_SPAWN_SETSIGDEF
            | PosixSpawnFlags::POSIX_SPAWN_SETSIGMASK
            | PosixSpawnFlags::POSIX_SPAWN_SETPGROUP,
    )
    .map_err(err)?;
    posix_spawn(p.path.as_c_str(), &actions, &attr, &p.argv, &p.envp).map_err(err)
}

fn spawn_command(p: &Prepared, stdin: OwnedFd, stdout: OwnedFd) -> Result<Pid, String> {
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(OsStr::from_bytes(p.path.as_bytes()));
    if let Some((arg0, rest)) = p.argv.split_first() {
        cmd.arg0(OsStr::from_bytes(arg0.as_bytes()));
        cmd.args(rest.iter().map(|a| OsStr::from_bytes(a.as_bytes())));
    }
    cmd.env_clear()
        .envs(p.env.iter().map(|(k, v)| (k, v)))
        .process_group(0)
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::inherit());
    let child = cmd.spawn().map_err(|e| e.to_string())?;
    let pid = Pid::from_raw(child.id() as libc::pid_t);
    drop(child); // no wait(): the pid is reaped by `Workers::reap`
    Ok(pid)
}

fn spawn_fork(p: &Prepared, stdin: &OwnedFd, stdout: &OwnedFd) -> Result<Pid, String> {
    let null = std::ptr::null::<libc::c_char>();
    let argv: Vec<*const libc::c_char> = p.argv.iter().map(|a| a.as_ptr()).chain([null]).collect();
    let envp: Vec<*const libc::c_char> = p.envp.iter().map(|a| a.as_ptr()).chain([null]).collect();
    let (path, stdin, stdout) = (p.path.as_ptr(), stdin.as_raw_fd(), stdout.as_raw_fd());

    // Block every signal across the fork so none of the server's handlers runs in the child
    // before it has reset them.
    let mut old = SigSet::empty();
    pthread_sigmask(
        SigmaskHow::SIG_SETMASK,
        Some(&SigSet::all()),
        Some(&mut old),
    )
    .map_err(|e| format!("sigprocmask: {e}"))?;
    // SAFETY: the child only makes async-signal-safe calls on memory prepared above, then execs
    // or _exits; it never returns into Rust code.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        unsafe { exec_child(path, argv.as_ptr(), envp.as_ptr(), stdin, stdout) }
    }
    let fork_err = io::Error::last_os_error();
    let _ = pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&old), None);
    if pid < 0 {
        return Err(format!("fork: {fork_err}"));
    }
    // Also from the parent, so a kill of the group cannot race the child's own setpgid (fails
    // harmlessly with EACCES once the child has exec'd).
    let _ = nix::unistd::setpgid(Pid::from_raw(pid), Pid::from_raw(pid));
    Ok(Pid::from_raw(pid))
}

/// In the forked child: async-signal-safe calls only, no allocation, never returns.
unsafe fn exec_child(
    path: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    stdin: libc::c_int,
    stdout: libc::c_int,
) -> ! {
    unsafe {
        libc::setpgid(0, 0);
        let mut dfl: libc::sigaction = std::mem::zeroed();
        dfl.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut dfl.sa_mask);
        for sig in 1..65 {
            // Fails harmlessly for SIGKILL, SIGSTOP and libc-reserved signals.
            libc::sigaction(sig, &dfl, std::ptr::null_mut());
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        // Both fds are > 2 (see `above_stdio`); dup2 clears O_CLOEXEC on the copies.
        if libc::dup2(stdin, 0) < 0 || libc::dup2(stdout, 1) < 0 {
            libc::_exit(127);
        }
        libc::execve(path, argv, envp);
        libc::_exit(127)
    }
}

// ---- result framing for in-process jobs -------------------------------------------------------
