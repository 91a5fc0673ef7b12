//! From an upgrade request to a WebSocket session: the checks (RFC 6455, origins, limits, the
//! Pusher app and protocol version), session validation by a forked handler when configured,
//! then the 101 and the session's start.

use log::{debug, info};

use std::net::SocketAddr;

use super::answer::{Decision, Upgrade, respond_error};
use super::apps::RateLimit;
use super::conns::{Conn, Conns, Mode, Phase, PusherConn, RouteState};
use super::effects::UserFifo;
use super::jobs::{self, JobFor};
use super::state::{State, Via};
use super::{close, console, console_http, hooks, membership, shared_counts};
use crate::http::{self, Request};
use crate::job::Outcome;
use crate::pusher::protocol as pp;

/// Checks an upgrade request for `rel` (the path under the server's prefix).
pub fn check(st: &State, conn: &Conn, req: &Request, rel: &str) -> Decision {
    let accept = match http::check_upgrade(req, &st.cfg.allowed_origins) {
        Ok(accept) => accept,
        Err(refusal) => return Decision::Respond(refusal.response()),
    };
    if let Some(refused) = over_limits(st, conn) {
        return refused;
    }
    let (mode, pusher) = if rel == "/ws" {
        (Mode::Channel, None)
    } else if console_http::route(st, rel) == Some("/feed") {
        if !console_http::feed_allowed(st, req) {
            return respond_error(401, "console session expired: log in again");
        }
        (Mode::Console, None)
    } else if let Some(app_key) = rel.strip_prefix("/app/") {
        (Mode::Pusher, Some(pusher_admission(st, req, app_key)))
    } else {
        (Mode::Raw, None)
    };
    // An app's own origin list narrows the server-wide one.
    if let Some(Ok(app)) = pusher
        && let Some(origin) = req.header("origin")
        && !http::origin_allowed(origin, &st.apps.get(app).cfg.allowed_origins)
    {
        return Decision::Respond(http::Refusal::OriginForbidden.response());
    }
    // Validation (raw and channel clients) and routing (raw clients) run handlers that see the
    // handshake as a CGI request.
    let needs_env = (st.cfg.validate.enabled() && matches!(mode, Mode::Raw | Mode::Channel))
        || (st.cfg.route.enabled() && mode == Mode::Raw);
    let env = needs_env.then(|| {
        let socket_id = conn.socket_id(st.process_id);
        jobs::cgi_env(req, conn.peer, st.local_port, &socket_id)
    });
    let deflate = st.cfg.compression_from().is_some()
        && crate::deflate::accepts(&req.headers_named("sec-websocket-extensions"));
    Decision::Upgrade(Upgrade {
        mode,
        accept,
        head_len: req.head_len,
        env,
        pusher,
        deflate,
    })
}

/// `max_connections` (503) and `max_connections_per_ip` (429).
fn over_limits(st: &State, conn: &Conn) -> Option<Decision> {
    let open = st.sessions.open() + shared_counts::others_total(st);
    if st.cfg.max_connections > 0 && open >= st.cfg.max_connections {
        return Some(Decision::Respond(http::response(
            503,
            &[("Retry-After", "5")],
            &http::error_body("server at max_connections"),
        )));
    }
    let limit = st.cfg.max_connections_per_ip;
    let ip = conn.peer.ip();
    if limit > 0 && st.sessions.at_ip(ip) + shared_counts::others_at_ip(st, ip) >= limit {
        return Some(Decision::Respond(http::response(
            429,
            &[("Retry-After", "5")],
            &http::error_body("too many connections from this address (max_connections_per_ip)"),
        )));
    }
    None
}

/// Which app a Pusher connection belongs to, or the protocol error it gets (sent after the
/// upgrade, because pusher-js only sees WebSocket close codes, not HTTP statuses).
fn pusher_admission(st: &State, req: &Request, app_key: &str) -> Result<usize, (u16, String)> {
    let Some(app) = st.apps.by_key(app_key) else {
        return Err((
            pp::code::APP_NOT_FOUND,
            format!("App key {app_key} not in this cluster"),
        ));
    };
    let cfg = &st.apps.get(app).cfg;
    if !cfg.enabled {
        return Err((pp::code::APP_DISABLED, "Application is disabled".into()));
    }
    let protocol = req
        .query()
        .split('&')
        .find_map(|kv| kv.strip_prefix("protocol="));
    match protocol.map(|v| (v, v.parse::<u32>())) {
        None => return Err((pp::code::NO_VERSION, "No protocol version supplied".into())),
        Some((v, Err(_))) => {
            return Err((
                pp::code::INVALID_VERSION,
                format!("Invalid version string format: {v}"),
            ));
        }
        Some((_, Ok(v))) if !(pp::MIN_PROTOCOL..=pp::MAX_PROTOCOL).contains(&v) => {
            return Err((
                pp::code::UNSUPPORTED_VERSION,
                format!("Unsupported protocol version {v}"),
            ));
        }
        Some(_) => {}
    }
    let connections = st.apps.get(app).connections + shared_counts::others_of_app(st, app);
    if cfg.max_connections > 0 && connections >= cfg.max_connections {
        return Err((
            pp::code::OVER_QUOTA,
            "Application is over connection quota".into(),
        ));
    }
    Ok(app)
}

/// An accepted upgrade: validated first when a handler must say who the client is, opened
/// at once otherwise. `rest` is what the client sent behind its request head.
pub fn begin(conns: &mut Conns, st: &mut State, key: usize, up: Upgrade, rest: &[u8]) {
    let Upgrade {
        mode,
        accept,
        env,
        pusher,
        deflate,
        ..
    } = up;
    if let Some(conn) = conns.get_mut(key) {
        // Compressed frames only once open (`Lists::send` checks the phase): the answers of a
        // refused validation are plain HTTP.
        conn.deflate = deflate;
    }
    let Some(env) = env else {
        return open(conns, st, key, mode, &accept, pusher, rest);
    };
    // Routed requests of a raw client keep its handshake's environment (cookies and all).
    if st.cfg.route.enabled()
        && mode == Mode::Raw
        && let Some(conn) = conns.get_mut(key)
    {
        conn.route = Some(Box::new(RouteState::new(env.clone())));
    }
    if st.cfg.validate.enabled() && matches!(mode, Mode::Raw | Mode::Channel) {
        start_validation(conns, st, key, mode, accept, env, rest);
    } else {
        open(conns, st, key, mode, &accept, pusher, rest);
    }
}

/// Sends the 101 and starts the session.
pub fn open(
    conns: &mut Conns,
    st: &mut State,
    key: usize,
    mode: Mode,
    accept: &str,
    pusher: Option<Result<usize, (u16, String)>>,
    rest: &[u8],
) {
    let Some(conn) = conns.get_mut(key) else {
        return;
    };
    conn.phase = Phase::Open;
    conn.mode = mode;
    let due = st.clock.secs() + st.cfg.ping_interval_secs as u32;
    conn.timer_due = st.timers.schedule(key, conn.id, due);
    let (id, peer) = (conn.id, conn.peer);
    let deflate = conn.deflate;
    conns.push(key, http::switching_protocols(accept, deflate).into());
    if mode == Mode::Console {
        // Not a client: no session count, no channels.
        st.consoles.add(key);
        shared_counts::sync_consoles(st);
        return console::hello(conns, st, key);
    }
    if st.consoles.listening() {
        // Formatted only for a console: every handshake would pay for it otherwise.
        let socket_id = st.socket_id_of(id);
        let detail = format!("{mode:?} from {peer}");
        console::event(
            st,
            "connection_opened",
            Some(&socket_id),
            None,
            None,
            Some(&detail),
        );
    }
    st.sessions
        .opened(peer.ip(), st.cfg.max_connections_per_ip > 0);
    shared_counts::sync_sessions(st, peer.ip());
    st.hub.attach(key, 0);
    if matches!(mode, Mode::Raw | Mode::Channel) {
        st.hub.listen_global(key);
    }
    debug!("connection {key} upgraded ({mode:?}) for {peer}");
    match pusher {
        None => {}
        Some(Err((code, message))) => {
            info!("connection {key}: refused Pusher connection: {message} ({code})");
            conns.send(
                key,
                &crate::ws::text(pp::error(Some(code), &message).as_bytes()),
            );
            return close::close_with(conns, st, key, code, &message);
        }
        Some(Ok(app)) => start_pusher(conns, st, key, app, &st.socket_id_of(id)),
    }
    // Frames sent right behind the request head (pipelined) are already here: they wait in
    // the buffer for the caller, which handles a session's input.
    if let Some(conn) = conns.get_mut(key)
        && conn.phase == Phase::Open
    {
        conn.inbuf.extend_from_slice(rest);
        hooks::connected(st, conn);
    }
}

/// A Pusher session of `app` begins: `pusher:connection_established`, and the sign-in deadline
/// when the app requires one.
fn start_pusher(conns: &mut Conns, st: &mut State, key: usize, app: usize, socket_id: &str) {
    let cfg = &st.apps.get(app).cfg;
    let activity_timeout = cfg.activity_timeout.min(st.cfg.activity_timeout_secs);
    let client_rate = cfg.max_client_events_per_second;
    let signin_after = cfg
        .require_user_authentication
        .then_some(cfg.user_authentication_timeout_secs as u32);
    st.apps.get_mut(app).connections += 1;
    shared_counts::sync_app(st, app);
    st.hub.attach(key, app);
    let now = st.clock.secs();
    let Some(conn) = conns.get_mut(key) else {
        return;
    };
    conn.pusher = Some(Box::new(PusherConn {
        app: app as u16,
        user_id: None,
        client_events: RateLimit::new(client_rate, st.clock.now()),
        signin_deadline: signin_after.map(|s| now + s),
    }));
    if let Some(after) = signin_after {
        let due = now + after;
        if due < conn.timer_due {
            conn.timer_due = st.timers.schedule(key, conn.id, due);
        }
    }
    let established = pp::connection_established(socket_id, activity_timeout);
    conns.send(key, &crate::ws::text(established.as_bytes()));
}

/// Starts validating a handshake; the connection waits in `Validating`.
fn start_validation(
    conns: &mut Conns,
    st: &mut State,
    key: usize,
    mode: Mode,
    accept: String,
    env: Vec<(String, String)>,
    rest: &[u8],
) {
    let Some(conn) = conns.get_mut(key) else {
        return;
    };
    conn.phase = Phase::Validating;
    conn.inbuf = rest.to_vec();
    // The worker's deadline rules now; the handshake timer must not fire.
    conn.timer_due = u32::MAX;
    let conn_id = conn.id;
    let cfg = &st.cfg;
    let timeout = cfg.validate_timeout_secs;
    let job = jobs::job(cfg, &cfg.validate, "validate", env, Vec::new(), timeout);
    st.start_job(
        job,
        JobFor::Validate {
            key,
            conn_id,
            mode,
            accept,
        },
    );
}

/// A handshake's verdict: the session opens as the user the handler named, or the request is
/// refused (401, or 403 when the handler said `forbidden`). `conn` is (key, id): the client may
/// have left meanwhile, and its key been reused.
pub fn validated(
    conns: &mut Conns,
    st: &mut State,
    conn: (usize, u64),
    mode: Mode,
    accept: &str,
    outcome: &Outcome,
) {
    let (key, conn_id) = conn;
    let Some(conn) = conns
        .get_mut(key)
        .filter(|c| c.id == conn_id && c.phase == Phase::Validating)
    else {
        return; // the client left meanwhile
    };
    let peer = conn.peer;
    let user = match jobs::validation_verdict(outcome, st.cfg.validate_timeout_secs) {
        Ok(user) => user,
        Err(refusal) => return refuse_validation(conns, st, key, peer, refusal),
    };
    log::debug!("validated {peer} as {user}");
    let rest = std::mem::take(&mut conn.inbuf);
    conn.user = Some(user.as_str().into());
    open(conns, st, key, mode, accept, None, &rest);
    if conns.get(key).map(|c| c.phase) != Some(Phase::Open) {
        return;
    }
    if st.sessions.user_attached(0, &user, key, Via::Validation) && st.cfg.user_fifo != "off" {
        st.effects.user_fifos.push(UserFifo::Open(user.clone()));
    }
    membership::user_changed(st, 0, &user);
}

fn refuse_validation(
    conns: &mut Conns,
    st: &mut State,
    key: usize,
    peer: SocketAddr,
    refusal: jobs::Refusal,
) {
    let jobs::Refusal { forbidden, why } = refusal;
    let status = if forbidden { 403 } else { 401 };
    info!("validation refused {peer} ({status}): {why}");
    let detail = format!("validation refused {peer}: {why}");
    super::console::event(st, "worker", None, None, None, Some(&detail));
    let message = if forbidden {
        "forbidden"
    } else {
        "not logged in"
    };
    let answer = http::response(status, &[], &http::error_body(message));
    close::respond_and_close(conns, st, key, answer);
}
