//! Named pipes: the global broadcast FIFO (and, later, per-user FIFOs).
//!
//! The server opens its FIFO `O_RDWR | O_NONBLOCK`: holding a write end itself means the read
//! side never sees EOF when the last script closes its end, so the poll loop never spins on it.
//! An exclusive `flock` on the FIFO marks it as served: a second server refuses to start, and
//! because the kernel drops the lock when a process dies, a FIFO left behind by a `kill -9`'d
//! server is simply reused.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

/// How much a pipe may buffer. The default 64 KiB fills in a few milliseconds of a burst; a
/// larger pipe lets the loop drain a burst in one wake-up (and batch the writes that follow).
const PIPE_SIZE: libc::c_int = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FifoError {
    #[error("{path} exists and is not a FIFO; remove it or choose another `fifo` path")]
    NotAFifo { path: PathBuf },
    #[error(
        "another ferrocast server is already reading {path}; stop it or choose another `fifo` path"
    )]
    AlreadyServed { path: PathBuf },
    #[error("cannot create the FIFO directory {path}: {source}")]
    Dir { path: PathBuf, source: io::Error },
    #[error("cannot create FIFO {path}: {source}")]
    Create { path: PathBuf, source: nix::Error },
    #[error("cannot open FIFO {path}: {source}")]
    Open { path: PathBuf, source: io::Error },
    #[error("no ferrocast server is reading {path}")]
    NoReader { path: PathBuf },
    #[error("cannot write to FIFO {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
}

/// A FIFO this server reads, with the line it is in the middle of.
pub struct Fifo {
    path: PathBuf,
    file: Handle,
    dev_ino: (u64, u64),
    mode: u32,
    /// Bytes of a line whose newline has not arrived yet.
    partial: Vec<u8>,
    /// The current line went over the limit: drop bytes until its newline.
    discarding: bool,
}

/// What one read pass found.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ReadStats {
    pub bytes: usize,
    pub lines: usize,
    /// Lengths of lines dropped for exceeding the limit.
    pub dropped: Vec<usize>,
    /// The read budget ran out before the pipe was empty: read again next turn.
    pub more: bool,
}

/// The open FIFO: locked by this process (the server lock `ferrocast restart` and
/// `server_pid` look for), or opened beside a supervisor that holds the lock.
enum Handle {
    Locked(Flock<File>),
    Shared(File),
}

impl Handle {
    fn get(&self) -> &File {
        match self {
            Handle::Locked(lock) => lock,
            Handle::Shared(file) => file,
        }
    }
}

/// Attempts to open a user's FIFO that loops share, while another removes it.
const SHARED_OPEN_TRIES: usize = 50;

impl Fifo {
    /// Opens the FIFO a supervisor created and locked (it re-created it after someone removed
    /// it), for the loop that reads it.
    pub fn open_shared(path: &Path, mode: u32) -> Result<Fifo, FifoError> {
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path);
        let err = |source| FifoError::Open {
            path: path.into(),
            source,
        };
        let file = opened.map_err(err)?;
        let meta = file.metadata().map_err(err)?;
        if !meta.file_type().is_fifo() {
            return Err(FifoError::NotAFifo { path: path.into() });
        }
        Ok(Fifo {
            path: path.into(),
            dev_ino: (meta.dev(), meta.ino()),
            file: Handle::Shared(file),
            mode,
            partial: Vec::new(),
            discarding: false,
        })
    }

    /// Creates the FIFO if absent (with `mode`), opens it and takes the server lock.
    pub fn open(path: &Path, mode: u32) -> Result<Fifo, FifoError> {
        Fifo::open_with(path, mode, FlockArg::LockExclusiveNonblock)
    }

    /// A user's FIFO that the loops of one process may read together (each line goes to one
    /// of them): opened under a shared lock, so [`Fifo::remove_if_last`] can tell when no loop
    /// reads it any more. One that another loop is removing is opened afresh.
    pub fn open_shared_reader(path: &Path, mode: u32) -> Result<Fifo, FifoError> {
        let mut last = None;
        for _ in 0..SHARED_OPEN_TRIES {
            match Fifo::open_with(path, mode, FlockArg::LockSharedNonblock) {
                // Removed between our open and our lock: read the one that replaces it.
                Ok(f) if f.is_detached() => {
                    last = Some(FifoError::AlreadyServed { path: path.into() })
                }
                Ok(f) => return Ok(f),
                // Being removed by the last loop that read it (it holds the lock a moment).
                Err(e @ FifoError::AlreadyServed { .. }) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or(FifoError::AlreadyServed { path: path.into() }))
    }

    /// Closes a FIFO opened with [`Fifo::open_shared_reader`], and removes it when no other
    /// loop reads it (the lock says so).
    pub fn remove_if_last(self) {
        let (path, dev_ino) = (self.path.clone(), self.dev_ino);
        drop(self);
        let Ok(file) = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(&path)
        else {
            return;
        };
        // Another loop's new FIFO is theirs.
        if file.metadata().map(|m| (m.dev(), m.ino())).ok() != Some(dev_ino) {
            return;
        }
        if let Ok(lock) = Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            let _ = std::fs::remove_file(&path);
            drop(lock);
        }
    }

    fn open_with(path: &Path, mode: u32, lock: FlockArg) -> Result<Fifo, FifoError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
            && !dir.exists()
        {
            std::fs::create_dir_all(dir).map_err(|source| FifoError::Dir {
                path: dir.to_path_buf(),
                source,
            })?;
            // Traversable by the FIFO's group (so the web server can reach the FIFO), closed
            // to everyone else.
            let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750));
        }
        let created = match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_fifo() => false,
            Ok(_) => return Err(FifoError::NotAFifo { path: path.into() }),
            Err(_) => {
                match nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(mode)) {
                    Ok(()) => true,
                    // Lost a race with another process creating it: fine, it's a FIFO or we'll see.
                    Err(nix::Error::EEXIST) => false,
                    Err(source) => {
                        return Err(FifoError::Create {
                            path: path.into(),
                            source,
                        });
                    }
                }
            }
        };
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
            .open(path)
            .map_err(|source| FifoError::Open {
                path: path.into(),
                source,
            })?;
        let meta = file.metadata().map_err(|source| FifoError::Open {
            path: path.into(),
            source,
        })?;
        if !meta.file_type().is_fifo() {
            return Err(FifoError::NotAFifo { path: path.into() });
        }
        let file =
            Flock::lock(file, lock).map_err(|_| FifoError::AlreadyServed { path: path.into() })?;
        if created {
            // mkfifo applied the umask; the configured mode is what the operator asked for.
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode));
        }
        // SAFETY: F_SETPIPE_SZ on a pipe fd we own; failure (e.g. over /proc/sys/fs/pipe-max-size)
        // just leaves the default size.
        unsafe {
            libc::fcntl(file.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE);
        }
        Ok(Fifo {
            path: path.into(),
            dev_ino: (meta.dev(), meta.ino()),
            file: Handle::Locked(file),
            mode,
            partial: Vec::new(),
            discarding: false,
        })
    }

    /// Opens the FIFO, or takes over the one a restarting predecessor handed on
    /// (`FERROCAST_FIFO_FD`).
    pub fn open_or_adopt(path: &Path, mode: u32) -> Result<Fifo, FifoError> {
        let handed = std::env::var("FERROCAST_FIFO_FD")
            .ok()
            .and_then(|v| v.parse::<i32>().ok());
        if let Some(raw) = handed {
            // SAFETY: the variable is removed at once and only ever set by our own restart,
            // which leaves this descriptor open for us; the process has no other thread.
            unsafe { std::env::remove_var("FERROCAST_FIFO_FD") };
            // SAFETY: only inspected; closed or not, nothing else in this process refers to it.
            let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
            if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_ok() {
                // SAFETY: checked open above; nothing else in this process refers to it.
                let fd =
                    unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
                return Fifo::adopt(path, mode, fd);
            }
        }
        Fifo::open(path, mode)
    }

    /// Takes over a FIFO handed on by a restarting server (`FERROCAST_FIFO_FD`): the same open
    /// pipe, so nothing written during the restart is lost, and the same lock.
    pub fn adopt(path: &Path, mode: u32, fd: std::os::fd::OwnedFd) -> Result<Fifo, FifoError> {
        let file = File::from(fd);
        let meta = file.metadata().map_err(|source| FifoError::Open {
            path: path.into(),
            source,
        })?;
        let on_disk = std::fs::symlink_metadata(path)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        if !meta.file_type().is_fifo() || on_disk != Some((meta.dev(), meta.ino())) {
            // The path moved on (config changed, or the FIFO was replaced): start afresh.
            drop(file);
            return Fifo::open(path, mode);
        }
        nix::fcntl::fcntl(
            file.as_fd(),
            nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
        )
        .map_err(|e| FifoError::Open {
            path: path.into(),
            source: e.into(),
        })?;
        let file = Flock::lock(file, FlockArg::LockExclusiveNonblock)
            .map_err(|_| FifoError::AlreadyServed { path: path.into() })?;
        Ok(Fifo {
            path: path.into(),
            dev_ino: (meta.dev(), meta.ino()),
            file: Handle::Locked(file),
            mode,
            partial: Vec::new(),
            discarding: false,
        })
    }

    /// Gives up the FIFO without removing it, for a restart handoff. The lock belongs to the
    /// open file description, so the successor holds it from the first instant.
    pub fn into_fd(self) -> io::Result<std::os::fd::OwnedFd> {
        let dup = self.file.get().try_clone()?;
        // Dropping the Flock would unlock the shared description; the original descriptor is
        // close-on-exec and goes away with the exec that follows.
        if let Handle::Locked(lock) = self.file {
            std::mem::forget(lock);
        }
        Ok(dup.into())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn mode(&self) -> u32 {
        self.mode
    }

    /// Another descriptor of the same open FIFO (and so of the same lock), for a loop of a
    /// supervisor to read while the supervisor keeps this one.
    pub fn dup_fd(&self) -> io::Result<std::os::fd::OwnedFd> {
        Ok(self.file.get().try_clone()?.into())
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        self.file.get().as_raw_fd()
    }

    /// True when the path no longer names the FIFO we hold (deleted or replaced).
    pub fn is_detached(&self) -> bool {
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) => (meta.dev(), meta.ino()) != self.dev_ino,
            Err(_) => true,
        }
    }

    /// Re-creates the FIFO at our path, for when someone deleted it while we run.
    pub fn reopen(&self) -> Result<Fifo, FifoError> {
        Fifo::open(&self.path, self.mode)
    }

    /// Reads until the pipe is empty, calling `on_line` for every complete line (without its
    /// newline or a trailing `\r`). Lines over `max_line` bytes are dropped and counted.
    pub fn read_lines(
        &mut self,
        scratch: &mut [u8],
        max_line: usize,
        on_line: impl FnMut(&[u8]),
    ) -> io::Result<ReadStats> {
        self.read_lines_within(scratch, max_line, usize::MAX, on_line)
    }

    /// As [`Fifo::read_lines`], but stops once `budget` bytes were read (`stats.more` then):
    /// a flood of lines must not keep the loop from its clients.
    pub fn read_lines_within(
        &mut self,
        scratch: &mut [u8],
        max_line: usize,
        budget: usize,
        mut on_line: impl FnMut(&[u8]),
    ) -> io::Result<ReadStats> {
        let mut stats = ReadStats::default();
        loop {
            if stats.bytes >= budget {
                stats.more = true;
                return Ok(stats);
            }
            let n = match self.file.get().read(scratch) {
                Ok(0) => return Ok(stats),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(stats),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            stats.bytes += n;
            self.split_lines(&scratch[..n], max_line, &mut stats, &mut on_line);
        }
    }

    fn split_lines(
        &mut self,
        mut data: &[u8],
        max_line: usize,
        stats: &mut ReadStats,
        on_line: &mut impl FnMut(&[u8]),
    ) {
        while !data.is_empty() {
            match memchr(b'\n', data) {
                Some(nl) => {
                    let piece = &data[..nl];
                    data = &data[nl + 1..];
                    if self.discarding {
                        self.discarding = false;
                        continue;
                    }
                    let total = self.partial.len() + piece.len();
                    if total > max_line {
                        stats.dropped.push(total);
                        self.partial.clear();
                        continue;
                    }
                    stats.lines += 1;
                    if self.partial.is_empty() {
                        on_line(trim_cr(piece));
                    } else {
                        self.partial.extend_from_slice(piece);
                        on_line(trim_cr(&self.partial));
                        self.partial.clear();
                    }
                }
                None => {
                    if !self.discarding {
                        if self.partial.len() + data.len() > max_line {
                            stats.dropped.push(self.partial.len() + data.len());
                            self.partial = Vec::new();
                            self.discarding = true;
                        } else {
                            self.partial.extend_from_slice(data);
                        }
                    }
                    return;
                }
            }
        }
        if self.partial.is_empty() && self.partial.capacity() > 64 * 1024 {
            self.partial = Vec::new();
        }
    }

    /// Deletes the FIFO from the file system if it is still ours (clean shutdown).
    pub fn remove(&self) {
        if !self.is_detached() {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The pid of the server holding the FIFO's lock, from `/proc/locks` (for `ferrocast restart`).
pub fn server_pid(path: &Path) -> Option<i32> {
    let meta = std::fs::metadata(path).ok()?;
    let dev = meta.dev();
    let want = format!(
        "{:02x}:{:02x}:{}",
        libc::major(dev),
        libc::minor(dev),
        meta.ino()
    );
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    locks.lines().find_map(|line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        // "1: FLOCK  ADVISORY  WRITE 1234 00:1f:5678 0 EOF"
        (f.len() >= 6 && f[1] == "FLOCK" && f[5] == want)
            .then(|| f[4].parse().ok())
            .flatten()
    })
}

fn trim_cr(line: &[u8]) -> &[u8] {
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// Writes one message line to a FIFO for `ferrocast broadcast`: fails at once, instead of
/// blocking, when no server reads it. A line of up to PIPE_BUF (4096) bytes is written atomically,
/// so concurrent writers never interleave.
pub fn write_line(path: &Path, line: &[u8]) -> Result<(), FifoError> {
    let meta = std::fs::metadata(path).map_err(|_| FifoError::NoReader { path: path.into() })?;
    if !meta.file_type().is_fifo() {
        return Err(FifoError::NotAFifo { path: path.into() });
    }
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(libc::ENXIO) => FifoError::NoReader { path: path.into() },
            _ => FifoError::Open {
                path: path.into(),
                source,
            },
        })?;
    // The server holds a write end itself, so an open reader does not prove a server: check
    // its lock too (a stray `cat` reading the pipe would swallow our line).
    let probe = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    if let Ok(probe) = probe
        && let Ok(unlocked) = Flock::lock(probe, FlockArg::LockSharedNonblock)
    {
        drop(unlocked);
        return Err(FifoError::NoReader { path: path.into() });
    }
    // Blocking from here: a full pipe means a busy server, and waiting is right for a CLI.
    let flags = nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_GETFL).map_err(|e| {
        FifoError::Write {
            path: path.into(),
            source: e.into(),
        }
    })?;
    let mut flags = nix::fcntl::OFlag::from_bits_truncate(flags);
    flags.remove(nix::fcntl::OFlag::O_NONBLOCK);
    nix::fcntl::fcntl(file.as_fd(), nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(|e| {
        FifoError::Write {
            path: path.into(),
            source: e.into(),
        }
    })?;
    let mut buf = Vec::with_capacity(line.len() + 1);
    buf.extend_from_slice(line);
    buf.push(b'\n');
    (&file).write_all(&buf).map_err(|source| FifoError::Write {
        path: path.into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fifo_for_split() -> Fifo {
        let dir = std::env::temp_dir().join(format!("ferrocast-fifo-unit-{}", std::process::id()));
        let path = dir.join(format!("{}.fifo", rand_suffix()));
        Fifo::open(&path, 0o600).unwrap()
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    fn split(f: &mut Fifo, chunks: &[&[u8]], max: usize) -> (Vec<String>, Vec<usize>) {
        let mut lines = Vec::new();
        let mut stats = ReadStats::default();
        for c in chunks {
            f.split_lines(c, max, &mut stats, &mut |l: &[u8]| {
                lines.push(String::from_utf8_lossy(l).into_owned())
            });
        }
        (lines, stats.dropped)
    }

    #[test]
    fn lines_split_across_reads_and_crlf() {
        let mut f = fifo_for_split();
        let (lines, dropped) = split(&mut f, &[b"hel", b"lo\r\nwor", b"ld\n\n"], 100);
        assert_eq!(lines, vec!["hello", "world", ""]);
        assert!(dropped.is_empty());
        f.remove();
    }

    #[test]
    fn oversize_line_dropped_next_kept() {
        let mut f = fifo_for_split();
        let long = vec![b'x'; 30];
        let (lines, dropped) = split(&mut f, &[&long, &long, b"\nok\n"], 40);
        assert_eq!(lines, vec!["ok"]);
        assert_eq!(dropped, vec![60]);
        let (lines, dropped) = split(&mut f, &[&[b'y'; 50], b"\nfine\n"], 40);
        assert_eq!(lines, vec!["fine"]);
        assert_eq!(dropped, vec![50]);
        f.remove();
    }

    #[test]
    fn second_open_refused_and_write_line_roundtrip() {
        let mut f = fifo_for_split();
        match Fifo::open(f.path(), 0o600) {
            Err(FifoError::AlreadyServed { .. }) => {}
            Err(other) => panic!("{other}"),
            Ok(_) => panic!("second open succeeded"),
        }
        write_line(f.path(), b"hi there").unwrap();
        let mut scratch = vec![0; 1024];
        let mut got = Vec::new();
        f.read_lines(&mut scratch, 100, |l| got.push(l.to_vec()))
            .unwrap();
        assert_eq!(got, vec![b"hi there".to_vec()]);
        let path = f.path().to_path_buf();
        f.remove();
        drop(f);
        assert!(matches!(
            write_line(&path, b"x"),
            Err(FifoError::NoReader { .. })
        ));
    }
}
