//! What the core does with a job's outcome (or with its refusal when the worker queue is
//! full): a handshake's verdict, a routed request's replies, a webhook batch's fate.

use log::warn;

use super::conns::Conns;
use super::jobs::JobFor;
use super::state::State;
use super::{JobId, app_sync, close, notify, routing, upgrade};
use crate::http;
use crate::job::Outcome;

/// A job ended. Returns the connection whose buffered input is to be handled now (a handshake
/// that just opened, with frames behind it).
pub fn done(conns: &mut Conns, st: &mut State, id: JobId, outcome: Outcome) -> Option<usize> {
    let why = st.jobs.finish(id)?;
    if !matches!(outcome, Outcome::Exited { code: 0, .. }) {
        st.stats.workers_failed += 1;
    }
    match why {
        JobFor::Validate {
            key,
            conn_id,
            mode,
            accept,
        } => {
            upgrade::validated(conns, st, (key, conn_id), mode, &accept, &outcome);
            return Some(key);
        }
        JobFor::Route { key, conn_id } => routing::replied(conns, st, key, conn_id, &outcome),
        JobFor::Webhook(delivery) => notify::finished(st, delivery, outcome),
        JobFor::UserRoute { user } => routing::user_replied(st, &user, &outcome),
        JobFor::AppSync => app_sync::done(conns, st, Some(&outcome)),
        JobFor::AppLookup(what) => app_sync::looked_up(conns, st, what, Some(&outcome)),
        JobFor::AppChanges => app_sync::watched(st, Some(&outcome)),
    }
    None
}

/// The worker queue was full: the job never ran.
pub fn refused(conns: &mut Conns, st: &mut State, id: JobId) {
    let Some(why) = st.jobs.finish(id) else {
        return;
    };
    st.stats.workers_started = st.stats.workers_started.saturating_sub(1);
    st.stats.workers_refused += 1;
    match why {
        JobFor::Validate { key, conn_id, .. } => {
            if conns.get(key).is_none_or(|c| c.id != conn_id) {
                return;
            }
            warn!(
                "refusing a handshake: all {} workers busy and the queue is full",
                st.cfg.max_workers
            );
            let body = http::error_body("too many handshakes being validated; retry");
            let answer = http::response(503, &[("Retry-After", "1")], &body);
            close::respond_and_close(conns, st, key, answer);
        }
        JobFor::Route { key, conn_id } => routing::refused(conns, key, conn_id),
        JobFor::UserRoute { user } => warn!("dropped a line for {user}: worker queue full"),
        JobFor::Webhook(d) => notify::failed(st, d, "worker queue full"),
        JobFor::AppSync => app_sync::done(conns, st, None),
        JobFor::AppLookup(what) => app_sync::looked_up(conns, st, what, None),
        JobFor::AppChanges => app_sync::watched(st, None),
    }
}
