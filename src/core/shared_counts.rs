//! Limits of the whole process when it runs several loops: each loop writes its own connection
//! counts to the board (`board.rs`), and a limit compares the sum with its bound, so
//! `max_connections`, `max_connections_per_ip` and an app's quota hold for the process as they
//! do for one loop; the apps' REST rates are token buckets on the board that every loop takes
//! from.

use std::net::IpAddr;

use super::state::State;

fn ip_key(ip: IpAddr) -> String {
    format!("ip:{ip}")
}

fn app_key(st: &State, app: usize) -> String {
    format!("app:{}", st.apps.get(app).cfg.id)
}

/// Open sessions of the other loops.
pub fn others_total(st: &State) -> usize {
    st.board.as_ref().map_or(0, |b| b.others_count("total"))
}

/// The other loops' sessions from `ip`.
pub fn others_at_ip(st: &State, ip: IpAddr) -> usize {
    st.board.as_ref().map_or(0, |b| b.others_count(&ip_key(ip)))
}

/// The other loops' connections of `app`.
pub fn others_of_app(st: &State, app: usize) -> usize {
    st.board
        .as_ref()
        .map_or(0, |b| b.others_count(&app_key(st, app)))
}

/// Writes this loop's session counts after a session from `ip` opened or closed.
pub fn sync_sessions(st: &State, ip: IpAddr) {
    let Some(board) = &st.board else {
        return;
    };
    board.set_count("total", st.sessions.open());
    if st.cfg.max_connections_per_ip > 0 {
        board.set_count(&ip_key(ip), st.sessions.at_ip(ip));
    }
}

/// Writes this loop's count of `app`'s connections after one opened or closed.
pub fn sync_app(st: &State, app: usize) {
    if let Some(board) = &st.board {
        board.set_count(&app_key(st, app), st.apps.get(app).connections);
    }
}

/// Takes `n` of `app`'s REST tokens of one kind (`max_read_requests_per_second` or
/// `max_backend_events_per_second`): from the process's bucket with several loops, else from
/// this loop's own.
pub fn take_rate(st: &mut State, app: usize, read: bool, n: u32) -> bool {
    let now = st.clock.now();
    let cfg = &st.apps.get(app).cfg;
    let (rate, kind) = if read {
        (cfg.max_read_requests_per_second, "read")
    } else {
        (cfg.max_backend_events_per_second, "events")
    };
    // Through Redis, the machines divide the rate, as nodes do.
    let share = rate.div_ceil(u32::try_from(super::cluster::machines(st)).unwrap_or(1));
    if rate > 0
        && let Some(board) = &st.board
        && let Some(ok) = board.take_tokens(&format!("rate:{kind}:{}", cfg.id), share, n)
    {
        return ok;
    }
    let app = st.apps.get_mut(app);
    let bucket = if read {
        &mut app.read_requests
    } else {
        &mut app.backend_events
    };
    bucket.try_take(n, now)
}

/// Writes how many consoles this loop has, and learns whether another loop has one.
pub fn sync_consoles(st: &mut State) {
    let Some(board) = &st.board else {
        return;
    };
    board.set_count("consoles", st.consoles.feeds().len());
    let elsewhere = board.others_count("consoles") > 0;
    st.consoles.set_elsewhere(elsewhere);
}
