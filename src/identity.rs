//! Who this server is: the first half of every socket id it hands out, and its node id in a
//! cluster.

use std::time::{SystemTime, UNIX_EPOCH};

/// First half of every socket id: distinguishes this process from others (and restarts).
pub fn process_id() -> u32 {
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    ((micros ^ (u64::from(std::process::id()) << 20)) % 1_000_000_000) as u32
}

/// A node id for a cluster member that was not given one: host, pid, and time.
pub fn node_id() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "node".into());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!("{host}-{}-{nanos:x}", std::process::id())
}
