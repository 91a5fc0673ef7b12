//! Application routing (CarbonPHP's `startApplication`): a raw-mode client's messages and the
//! lines of per-user FIFOs, run by the application in forked workers; their output goes back
//! to the client (or to every connection of the user).

use super::conns::Conns;
use super::jobs::{JobFor, job, route_replies, set_var};
use super::peer::Peer;
use super::publication::{Origin, Publication};
use super::state::State;
use crate::job::Outcome;
use crate::ws;

/// Routed messages a connection may have waiting behind the ones in flight.
const MAX_WAITING_PER_CONNECTION: usize = 64;

/// A raw-mode message for the application.
pub fn route_message(st: &mut State, peer: &mut Peer<'_>, text: &str) {
    let max_inflight = st.cfg.max_inflight_per_connection;
    let state = peer.conn.route.get_or_insert_with(Default::default);
    if state.inflight < max_inflight {
        return submit_route(st, peer, text);
    }
    if state.waiting.len() >= MAX_WAITING_PER_CONNECTION {
        return peer.reply("[ferrocast] too many requests waiting for the application; slow down");
    }
    state.waiting.push_back(text.to_string());
}

fn submit_route(st: &mut State, peer: &mut Peer<'_>, text: &str) {
    let user = match &peer.conn.user {
        Some(u) => u.to_string(),
        None => peer.socket_id(st.process_id),
    };
    let Some(state) = peer.conn.route.as_mut() else {
        return;
    };
    state.inflight += 1;
    let mut env = state.env.clone();
    set_var(&mut env, "REQUEST_URI", text);
    set_var(&mut env, "FERROCAST_USER_ID", &user);
    let cfg = &st.cfg;
    let job = job(
        cfg,
        &cfg.route,
        "route",
        env,
        text.as_bytes().to_vec(),
        cfg.route_timeout_secs,
    );
    let (key, conn_id) = (peer.key, peer.conn.id);
    st.start_job(job, JobFor::Route { key, conn_id });
}

/// A line from a user's FIFO: routed to the application on the user's behalf (`user_fifo:
/// route`) or delivered to every connection of the user.
pub fn user_line(st: &mut State, user: &str, line: &[u8]) {
    if line.is_empty() {
        return;
    }
    if st.cfg.user_fifo == "route" && st.cfg.route.enabled() {
        let mut env = vec![(
            "PATH".to_string(),
            "/usr/local/bin:/usr/bin:/bin".to_string(),
        )];
        let text = String::from_utf8_lossy(line).into_owned();
        set_var(&mut env, "REQUEST_URI", &text);
        set_var(&mut env, "FERROCAST_USER_ID", user);
        let cfg = &st.cfg;
        let job = job(
            cfg,
            &cfg.route,
            "route",
            env,
            line.to_vec(),
            cfg.route_timeout_secs,
        );
        let user = user.to_string();
        st.start_job(job, JobFor::UserRoute { user });
    } else {
        st.publish(Publication::User {
            user: user.to_string(),
            frame: ws::text_lossy(line),
            origin: Origin::Here("user_fifo"),
        });
    }
}

/// A routed request's outcome: its replies to the connection, then the next waiting request.
pub fn replied(conns: &mut Conns, st: &mut State, key: usize, conn_id: u64, outcome: &Outcome) {
    if conns.get(key).is_none_or(|c| c.id != conn_id) {
        return;
    }
    for text in route_replies(outcome, st.cfg.max_worker_output_bytes) {
        conns.send(key, &ws::text(text.as_bytes()));
    }
    next_route(conns, st, key);
}

/// A line routed for a user: the replies go to every connection of the user.
pub fn user_replied(st: &mut State, user: &str, outcome: &Outcome) {
    for text in route_replies(outcome, st.cfg.max_worker_output_bytes) {
        st.publish(Publication::User {
            user: user.to_string(),
            frame: ws::text(text.as_bytes()),
            origin: Origin::Here("route"),
        });
    }
}

/// The worker queue was full: the request is not routed, and the client is told.
pub fn refused(conns: &mut Conns, key: usize, conn_id: u64) {
    let Some(state) = conns
        .get_mut(key)
        .filter(|c| c.id == conn_id)
        .and_then(|c| c.route.as_mut())
    else {
        return;
    };
    state.inflight = state.inflight.saturating_sub(1);
    let busy = "[ferrocast] the application is busy (worker queue full); try again";
    conns.send(key, &ws::text(busy.as_bytes()));
}

fn next_route(conns: &mut Conns, st: &mut State, key: usize) {
    let Some((conn, lists)) = conns.split(key) else {
        return;
    };
    let Some(state) = conn.route.as_mut() else {
        return;
    };
    state.inflight = state.inflight.saturating_sub(1);
    if let Some(next) = state.waiting.pop_front() {
        let mut peer = Peer::new(key, conn, lists);
        submit_route(st, &mut peer, &next);
    }
}
