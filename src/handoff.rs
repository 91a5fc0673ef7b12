//! What a restarting server hands to the process that replaces it, besides the listening
//! socket and the FIFO (`server.rs`, `main.rs`): the channel history, in a memory file whose
//! descriptor survives the exec.

use log::{info, warn};

use crate::core::Core;

/// Channel history in a memory file for the next process: its descriptor, left open across exec.
pub fn history_file(bytes: &[u8]) -> std::io::Result<i32> {
    use std::io::{Seek, Write};
    use std::os::fd::IntoRawFd;
    let fd =
        nix::sys::memfd::memfd_create(c"ferrocast-history", nix::sys::memfd::MFdFlags::empty())?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    file.rewind()?;
    Ok(file.into_raw_fd())
}

/// Takes over the channel history a restarting predecessor handed on (`FERROCAST_HISTORY_FD`):
/// a memory file it wrote, read once and closed. A history that cannot be read is logged and
/// dropped; its clients are told `recovered: false`.
pub fn adopt_history(core: &mut Core) {
    let Some(raw) = std::env::var("FERROCAST_HISTORY_FD")
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
    else {
        return;
    };
    // SAFETY: the variable is removed at once and only ever set by our own restart; the process
    // has no other thread.
    unsafe { std::env::remove_var("FERROCAST_HISTORY_FD") };
    // SAFETY: only inspected; closed or not, nothing else in this process refers to it.
    let fd = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    if nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).is_err() {
        return;
    }
    // SAFETY: checked open above; nothing else in this process refers to it.
    let file = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    // Read from the start, whatever the descriptor's offset: the loops of a supervisor share
    // this one open file, and each reads it whole.
    let read = file.metadata().and_then(|m| {
        let mut bytes = vec![0; usize::try_from(m.len()).map_err(std::io::Error::other)?];
        std::os::unix::fs::FileExt::read_exact_at(&file, &mut bytes, 0).map(|()| bytes)
    });
    match read
        .map_err(|e| e.to_string())
        .and_then(|bytes| core.restore_history(&bytes))
    {
        Ok(n) => info!("took over the history of {n} channel(s) from the previous process"),
        Err(e) => warn!("channel history from the previous process dropped: {e}"),
    }
}
