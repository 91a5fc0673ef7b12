//! What the HTTP side of a connection asks for: a WebSocket upgrade (raw, channel or Pusher), the
//! Pusher REST API, cadsock's `/internal/broadcast`, health and metrics.

use std::time::Instant;

use log::{debug, info, warn};
use serde_json::{Map, Value, json};

use crate::conn::{Mode, Phase};
use crate::http::{self, Request};
use crate::pusher::protocol as pp;
use crate::pusher::rest::{self, Endpoint, Info, RestError};
use crate::pusher::{PusherConn, RateLimit};
use crate::server::Server;
use crate::ws::{self, close};

/// How a request is answered.
enum Decision {
    Respond(Vec<u8>),
    /// A complete plain-HTTP exchange on a keep-alive connection: answer, drop the request's
    /// `consumed` bytes and wait for the next one.
    RespondKeepAlive(Vec<u8>, usize),
    Upgrade {
        mode: Mode,
        accept: String,
        head_len: usize,
        /// The handshake's CGI environment, when a validation or routing handler needs it.
        env: Option<Vec<(String, String)>>,
        /// Pusher: the app, or the error to send right after the upgrade.
        pusher: Option<Result<usize, (u16, String)>>,
    },
    /// The head is complete but the body is not.
    NeedBody,
}

fn respond(status: u16, body: &Value) -> Decision {
    Decision::Respond(http::response(status, &[], &body.to_string()))
}

fn respond_error(e: RestError) -> Decision {
    Decision::Respond(http::response(e.status, &[], &http::error_body(&e.message)))
}

fn not_found() -> Decision {
    Decision::Respond(http::response(404, &[], &http::error_body("not found")))
}

impl Server {
    /// Called with new bytes in a connection's request buffer.
    pub(crate) fn handle_request(&mut self, key: usize) {
        // One pass per complete request: a keep-alive connection may have several queued
        // (pipelined) in one read.
        loop {
            // Pipelined requests wait while earlier answers are not taken.
            if self.pause_if_over(key) {
                return;
            }
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            let inbuf = std::mem::take(&mut conn.inbuf);
            let decision = match http::parse(&inbuf, self.cfg.max_request_bytes) {
                Ok(None) => Decision::NeedBody,
                Err(http::ParseError::TooLarge) => Decision::Respond(http::response(
                    431,
                    &[],
                    &http::error_body("request head too large"),
                )),
                Err(http::ParseError::Malformed) => Decision::Respond(http::response(
                    400,
                    &[],
                    &http::error_body("malformed HTTP request"),
                )),
                Ok(Some(req)) => self.route(key, &req, &inbuf),
            };
            match decision {
                Decision::NeedBody => {
                    if let Some(conn) = self.conns.get_mut(key) {
                        conn.inbuf = inbuf;
                    }
                    return;
                }
                Decision::Respond(bytes) => return self.respond_and_close(key, bytes),
                Decision::Upgrade {
                    mode,
                    accept,
                    head_len,
                    env,
                    pusher,
                } => {
                    let rest = &inbuf[head_len..];
                    match env {
                        Some(env)
                            if self.cfg.validate.enabled()
                                && matches!(mode, Mode::Raw | Mode::Channel) =>
                        {
                            // Routed requests of a validated raw client keep its handshake's
                            // environment (cookies and all).
                            if self.cfg.route.enabled()
                                && mode == Mode::Raw
                                && let Some(conn) = self.conns.get_mut(key)
                            {
                                conn.route = Some(Box::new(crate::jobs::RouteState {
                                    env: env.clone(),
                                    ..Default::default()
                                }));
                            }
                            return self.start_validation(key, mode, accept, env, rest);
                        }
                        Some(env) => {
                            self.upgrade(key, mode, &accept, pusher, rest);
                            if let Some(conn) = self.conns.get_mut(key) {
                                conn.route = Some(Box::new(crate::jobs::RouteState {
                                    env,
                                    ..Default::default()
                                }));
                            }
                            return;
                        }
                        None => return self.upgrade(key, mode, &accept, pusher, rest),
                    }
                }
                Decision::RespondKeepAlive(bytes, consumed) => {
                    let limit = self.cfg.outbound_queue_bytes;
                    let Some(conn) = self.conns.get_mut(key) else {
                        return;
                    };
                    if !conn.enqueue(&bytes.into(), limit) {
                        self.stats.slow_consumers += 1;
                        warn!(
                            "closing connection {key} from {}: its HTTP answers are not read (over outbound_queue_bytes)",
                            conn.peer
                        );
                        return self.close_now(key, "slow consumer");
                    }
                    // The next request gets a fresh handshake_timeout_secs; an idle keep-alive
                    // connection is closed when it passes.
                    let due = self.now + self.cfg.handshake_timeout_secs as u32;
                    // One timer entry per connection and second, however many requests it
                    // pipelines: entries are never cancelled, so each one costs until it fires.
                    if conn.timer_due != due {
                        conn.timer_due = self.timers.schedule(key, conn.id, due);
                    }
                    conn.inbuf = inbuf[consumed..].to_vec();
                    let more = !conn.inbuf.is_empty();
                    self.mark_dirty(key);
                    if !more {
                        return;
                    }
                }
            }
        }
    }

    fn route(&mut self, key: usize, req: &Request, buf: &[u8]) -> Decision {
        if !self.trusted_proxies.is_empty()
            && let Some(conn) = self.conns.get_mut(key)
        {
            let ip = crate::proxy::client_ip(
                conn.peer.ip(),
                req.header("x-forwarded-for"),
                &self.trusted_proxies,
            );
            if ip != conn.peer.ip() {
                conn.peer = std::net::SocketAddr::new(ip, 0);
            }
        }
        let path = req.path();
        let prefix = self.cfg.prefix();
        let Some(rel) = path
            .strip_prefix(prefix)
            .filter(|r| r.is_empty() || r.starts_with('/'))
        else {
            return not_found();
        };
        let rel = if rel.is_empty() { "/" } else { rel };
        if http::wants_upgrade(req) {
            return self.route_upgrade(key, req, rel);
        }
        // Plain HTTP: wait for the whole body first.
        let end = match http::framing(req, buf.len(), self.cfg.max_body_bytes) {
            http::Framing::Complete { end } => end,
            http::Framing::NeedBody => return Decision::NeedBody,
            http::Framing::Refuse(status, why) => {
                info!(
                    "connection {key}: {} {}: {why} ({status})",
                    req.method,
                    req.path()
                );
                let why = match status {
                    413 => format!("{why} ({})", self.cfg.max_body_bytes),
                    _ => why.to_string(),
                };
                return Decision::Respond(http::response(status, &[], &http::error_body(&why)));
            }
        };
        let body = &buf[req.head_len..end];
        debug!("connection {key}: {} {}", req.method, req.target);
        match self.dispatch(req, rel, body) {
            // Only a request we framed exactly may be followed by another on this connection:
            // `end` covers at least the head, so the next pass starts past it.
            Decision::Respond(mut bytes) if req.keep_alive() => {
                http::keep_connection_open(&mut bytes);
                Decision::RespondKeepAlive(bytes, end)
            }
            other => other,
        }
    }

    /// Answers a complete plain-HTTP request.
    fn dispatch(&mut self, req: &Request, rel: &str, body: &[u8]) -> Decision {
        if let Some(sub) = self.console_route(rel) {
            return self.console_http(req, sub, body);
        }
        match (req.method, rel) {
            ("GET" | "HEAD", "/up") | ("GET" | "HEAD", "/pusher/health") => {
                Decision::Respond(http::response(200, &[], &self.health()))
            }
            ("GET", "/metrics") => Decision::Respond(http::response_typed(
                200,
                "text/plain; version=0.0.4",
                &crate::metrics::render(self),
            )),
            ("POST", "/internal/broadcast") => self.internal_broadcast(req, body),
            // pusher (PyPI) 3.x posts terminate_connections without the /apps/{id} prefix;
            // the app is the one whose key signed the request.
            ("POST", p) if p.starts_with("/users/") && p.ends_with("/terminate_connections") => {
                let params = crate::pusher::auth::parse_query(req.query());
                let app = params
                    .iter()
                    .find(|(k, _)| k == "auth_key")
                    .and_then(|(_, key)| self.apps.by_key(key))
                    .unwrap_or(0);
                let app_id = self.apps.get(app).cfg.id.clone();
                let user = p
                    .trim_start_matches("/users/")
                    .trim_end_matches("/terminate_connections");
                let user = crate::pusher::auth::parse_query(&format!("u={user}"))
                    .into_iter()
                    .next()
                    .map(|(_, v)| v)
                    .unwrap_or_default();
                self.rest_call(req, &app_id, Endpoint::TerminateUser(user), body)
            }
            _ => match rest::route(req.method, rel) {
                Some(Ok((app_id, endpoint))) => self.rest_call(req, app_id, endpoint, body),
                Some(Err(e)) => respond_error(e),
                None => not_found(),
            },
        }
    }

    fn route_upgrade(&self, key: usize, req: &Request, rel: &str) -> Decision {
        let accept = match http::check_upgrade(req, &self.cfg.allowed_origins) {
            Ok(accept) => accept,
            Err(refusal) => return Decision::Respond(refusal.response()),
        };
        if self.cfg.max_connections > 0 && self.sessions >= self.cfg.max_connections {
            return Decision::Respond(http::response(
                503,
                &[("Retry-After", "5")],
                &http::error_body("server at max_connections"),
            ));
        }
        let limit = self.cfg.max_connections_per_ip;
        if limit > 0
            && let Some(conn) = self.conns.get(key)
            && self.per_ip.get(&conn.peer.ip()).copied().unwrap_or(0) as usize >= limit
        {
            return Decision::Respond(http::response(
                429,
                &[("Retry-After", "5")],
                &http::error_body(
                    "too many connections from this address (max_connections_per_ip)",
                ),
            ));
        }
        let (mode, pusher) = if rel == "/ws" {
            (Mode::Channel, None)
        } else if self.console_route(rel) == Some("/feed") {
            let session = crate::pusher::auth::parse_query(req.query())
                .into_iter()
                .find(|(k, _)| k == "session")
                .map(|(_, v)| v)
                .unwrap_or_default();
            if !self.console_sessions.valid(&session) {
                return Decision::Respond(http::response(
                    401,
                    &[],
                    &http::error_body("console session expired: log in again"),
                ));
            }
            (Mode::Console, None)
        } else if let Some(app_key) = rel.strip_prefix("/app/") {
            (Mode::Pusher, Some(self.pusher_admission(req, app_key)))
        } else {
            (Mode::Raw, None)
        };
        // An app's own origin list narrows the server-wide one.
        if let Some(Ok(app)) = pusher {
            let origins = &self.apps.get(app).cfg.allowed_origins;
            if let Some(origin) = req.header("origin")
                && !http::origin_allowed(origin, origins)
            {
                return Decision::Respond(http::Refusal::OriginForbidden.response());
            }
        }
        // Validation (raw and channel clients) and routing (raw clients) run handlers that see
        // the handshake as a CGI request.
        let needs_env = (self.cfg.validate.enabled() && matches!(mode, Mode::Raw | Mode::Channel))
            || (self.cfg.route.enabled() && mode == Mode::Raw);
        let env = needs_env.then(|| {
            let conn = &self.conns[key];
            crate::jobs::cgi_env(
                req,
                conn.peer,
                self.local_addr.port(),
                &conn.socket_id(self.process_id),
            )
        });
        Decision::Upgrade {
            mode,
            accept,
            head_len: req.head_len,
            env,
            pusher,
        }
    }

    /// Which app a Pusher connection belongs to, or the protocol error it gets (sent after the
    /// upgrade, because pusher-js only sees WebSocket close codes, not HTTP statuses).
    fn pusher_admission(&self, req: &Request, app_key: &str) -> Result<usize, (u16, String)> {
        let Some(app) = self.apps.by_key(app_key) else {
            return Err((
                pp::code::APP_NOT_FOUND,
                format!("App key {app_key} not in this cluster"),
            ));
        };
        let cfg = &self.apps.get(app).cfg;
        if !cfg.enabled {
            return Err((pp::code::APP_DISABLED, "Application is disabled".into()));
        }
        let protocol = req
            .query()
            .split('&')
            .find_map(|kv| kv.strip_prefix("protocol="));
        match protocol {
            None => return Err((pp::code::NO_VERSION, "No protocol version supplied".into())),
            Some(v) => match v.parse::<u32>() {
                Err(_) => {
                    return Err((
                        pp::code::INVALID_VERSION,
                        format!("Invalid version string format: {v}"),
                    ));
                }
                Ok(v) if !(pp::MIN_PROTOCOL..=pp::MAX_PROTOCOL).contains(&v) => {
                    return Err((
                        pp::code::UNSUPPORTED_VERSION,
                        format!("Unsupported protocol version {v}"),
                    ));
                }
                Ok(_) => {}
            },
        }
        if cfg.max_connections > 0 && self.apps.get(app).connections >= cfg.max_connections {
            return Err((
                pp::code::OVER_QUOTA,
                "Application is over connection quota".into(),
            ));
        }
        Ok(app)
    }

    pub(crate) fn upgrade(
        &mut self,
        key: usize,
        mode: Mode,
        accept: &str,
        pusher: Option<Result<usize, (u16, String)>>,
        rest: &[u8],
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.push(http::switching_protocols(accept).into());
        conn.phase = Phase::Open;
        conn.mode = mode;
        if mode == Mode::Console {
            // Not a client: no session count, no pings from the timer beyond the usual.
            let due = self.now + self.cfg.ping_interval_secs as u32;
            conn.timer_due = self.timers.schedule(key, conn.id, due);
            self.consoles.push(key);
            self.mark_dirty(key);
            self.console_hello(key);
            return;
        }
        if !self.consoles.is_empty() {
            let socket_id = conn.socket_id(self.process_id);
            let detail = format!("{mode:?} from {}", conn.peer);
            self.console_event(
                "connection_opened",
                Some(&socket_id),
                None,
                None,
                Some(&detail),
            );
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        self.sessions += 1;
        if self.cfg.max_connections_per_ip > 0 {
            *self.per_ip.entry(conn.peer.ip()).or_insert(0) += 1;
        }
        let due = self.now + self.cfg.ping_interval_secs as u32;
        conn.timer_due = self.timers.schedule(key, conn.id, due);
        self.hub.attach(key, 0);
        if matches!(mode, Mode::Raw | Mode::Channel) {
            self.hub.listen_global(key);
        }
        self.mark_dirty(key);
        debug!(
            "connection {key} upgraded ({mode:?}) for {}",
            self.conns
                .get(key)
                .map(|c| c.peer.to_string())
                .unwrap_or_default()
        );
        match pusher {
            None => {}
            Some(Err((code, message))) => {
                info!("connection {key}: refused Pusher connection: {message} ({code})");
                self.reply(key, &pp::error(Some(code), &message));
                self.close_with(key, code, &message);
                return;
            }
            Some(Ok(app)) => {
                let cfg = &self.apps.get(app).cfg;
                let activity_timeout = cfg.activity_timeout.min(self.cfg.activity_timeout_secs);
                let client_rate = cfg.max_client_events_per_second;
                let signin_deadline = cfg
                    .require_user_authentication
                    .then_some(cfg.user_authentication_timeout_secs);
                self.apps.get_mut(app).connections += 1;
                self.hub.attach(key, app);
                let Some(conn) = self.conns.get_mut(key) else {
                    return;
                };
                conn.pusher = Some(Box::new(PusherConn {
                    app: app as u16,
                    user_id: None,
                    client_events: RateLimit::new(client_rate),
                    signin_deadline: signin_deadline.map(|s| self.now + s as u32),
                }));
                let socket_id = conn.socket_id(self.process_id);
                self.reply(
                    key,
                    &pp::connection_established(&socket_id, activity_timeout),
                );
                if let Some(s) = signin_deadline {
                    self.schedule_signin_check(key, s as u32);
                }
            }
        }
        // Frames sent right behind the request head (pipelined) are already here.
        if !rest.is_empty() {
            let mut rest = rest.to_vec();
            let used = self.handle_frames(key, &mut rest);
            self.keep_unconsumed(key, &rest[used..]);
        }
    }

    pub(crate) fn health(&self) -> String {
        json!({
            "status": if self.shutdown_deadline.is_some() {
                "stopping"
            } else if self.scaling.as_ref().is_some_and(|s| !s.link.is_up()) {
                // Serving local clients, but not reaching the other nodes.
                "degraded"
            } else {
                "ok"
            },
            "version": env!("CARGO_PKG_VERSION"),
            "connections": self.sessions,
            "channels": self.hub.len(),
            "uptime_secs": self.started.elapsed().as_secs(),
            "frames_out": self.stats.frames_out,
            "write_calls": self.stats.write_calls,
            "scaling": self.scaling.as_ref().map(|s| json!({
                "driver": "redis",
                "node": s.node_id,
                "redis": if s.link.is_up() { "up" } else { "down" },
                "published": s.published,
                "received": s.received,
                "dropped": s.link.dropped_publishes(),
            })),
        })
        .to_string()
    }

    /// The part of `rel` under the console's path ("" for the page itself), when enabled.
    fn console_route<'r>(&self, rel: &'r str) -> Option<&'r str> {
        if !self.cfg.console.enabled {
            return None;
        }
        rel.strip_prefix(self.cfg.console.path.trim_end_matches('/'))
            .filter(|sub| sub.is_empty() || *sub == "/" || *sub == "/feed" || *sub == "/publish")
    }

    fn console_http(&mut self, req: &Request, sub: &str, body: &[u8]) -> Decision {
        match (req.method, sub) {
            ("GET", "" | "/") => {
                if !crate::console::basic_auth_ok(self, req.header("authorization")) {
                    return Decision::Respond(http::response(
                        401,
                        &[(
                            "WWW-Authenticate",
                            "Basic realm=\"ferrocast console\", charset=\"UTF-8\"",
                        )],
                        &http::error_body("log in with an app's key and secret"),
                    ));
                }
                let session = self.console_sessions.create();
                let prefix = format!(
                    "{}{}",
                    self.cfg.prefix(),
                    self.cfg.console.path.trim_end_matches('/')
                );
                let page = crate::console::page(&session, &prefix, self.cfg.prefix());
                Decision::Respond(http::response_with(
                    200,
                    "text/html; charset=utf-8",
                    &[("Cache-Control", "no-store"), ("X-Frame-Options", "DENY")],
                    &page,
                ))
            }
            ("POST", "/publish") => {
                let session = req.header("x-console-session").unwrap_or("");
                if !self.console_sessions.valid(session) {
                    return Decision::Respond(http::response(
                        401,
                        &[],
                        &http::error_body("console session expired: log in again"),
                    ));
                }
                #[derive(serde::Deserialize)]
                struct Form {
                    app: Option<String>,
                    channel: String,
                    event: String,
                    data: String,
                }
                let form: Form = match serde_json::from_slice(body) {
                    Ok(f) => f,
                    Err(e) => {
                        return respond_error(RestError {
                            status: 400,
                            message: format!("invalid JSON: {e}"),
                        });
                    }
                };
                let app = match form.app.as_deref() {
                    None | Some("") => 0,
                    Some(id) => match self.apps.by_id(id) {
                        Some(a) => a,
                        None => {
                            return respond_error(RestError {
                                status: 400,
                                message: format!("unknown app \"{id}\""),
                            });
                        }
                    },
                };
                if !rest::valid_channel(&form.channel, &self.apps.get(app).cfg)
                    || form.event.is_empty()
                {
                    return respond_error(RestError {
                        status: 400,
                        message: "a valid channel and an event name are required".into(),
                    });
                }
                let channels = [form.channel];
                self.broadcast_event(app, &channels, &form.event, &form.data, None, "console");
                respond(200, &json!({}))
            }
            _ => not_found(),
        }
    }

    /// cadsock's broadcast endpoint: form fields `channel` and `message`, bearer token required.
    fn internal_broadcast(&mut self, req: &Request, body: &[u8]) -> Decision {
        let token = &self.cfg.internal_token;
        if token.is_empty() {
            return Decision::Respond(http::response(
                404,
                &[],
                &http::error_body(
                    "/internal/broadcast is disabled: set internal_token to enable it",
                ),
            ));
        }
        let given = req
            .header("authorization")
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .or_else(|| req.header("x-ferrocast-token"))
            .unwrap_or("");
        if !crate::pusher::auth::secret_eq(token.as_bytes(), given.trim().as_bytes()) {
            return Decision::Respond(http::response(401, &[], &http::error_body("invalid token")));
        }
        let text = String::from_utf8_lossy(body);
        let form = crate::pusher::auth::parse_query(&text);
        let field = |name: &str| form.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
        let (Some(channel), Some(message)) = (field("channel"), field("message")) else {
            return Decision::Respond(http::response(
                400,
                &[],
                &http::error_body("form fields \"channel\" and \"message\" are required"),
            ));
        };
        if !crate::channels::valid_name(&channel) {
            return Decision::Respond(http::response(
                400,
                &[],
                &http::error_body("invalid channel name"),
            ));
        }
        let event = field("event").unwrap_or_else(|| "message".into());
        self.broadcast_event(0, &[channel], &event, &message, None, "internal");
        self.stats.api_publishes += 1;
        respond(200, &json!({}))
    }

    fn rest_call(
        &mut self,
        req: &Request,
        app_id: &str,
        endpoint: Endpoint,
        body: &[u8],
    ) -> Decision {
        let Some(app) = self.apps.by_id(app_id) else {
            return self.rest_result(
                404,
                respond_error(RestError {
                    status: 404,
                    message: format!("unknown app id \"{app_id}\""),
                }),
            );
        };
        let now_unix = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let cfg = &self.apps.get(app).cfg;
        if let Err(e) = rest::authenticate(
            cfg,
            req.method,
            req.path(),
            req.query(),
            body,
            req.header("authorization"),
            now_unix,
        ) {
            warn!("REST {} {}: {}", req.method, req.path(), e.message);
            let detail = format!("REST {} {}: {}", req.method, req.path(), e.message);
            self.console_event("error", None, None, None, Some(&detail));
            return self.rest_result(e.status, respond_error(e));
        }
        if !cfg.enabled {
            return self.rest_result(
                403,
                respond_error(RestError {
                    status: 403,
                    message: "application is disabled".into(),
                }),
            );
        }
        let limiter_ok = {
            let app_state = self.apps.get_mut(app);
            let now = Instant::now();
            if endpoint.is_read() {
                app_state.read_requests.try_take(1, now)
            } else {
                true
            }
        };
        if !limiter_ok {
            self.stats.rate_limited += 1;
            return self.rest_result(
                429,
                respond_error(RestError {
                    status: 429,
                    message: "over max_read_requests_per_second".into(),
                }),
            );
        }
        let result = match endpoint {
            Endpoint::Events => rest::parse_events(body, &self.apps.get(app).cfg)
                .and_then(|e| self.trigger(app, vec![e], false)),
            Endpoint::BatchEvents => rest::parse_batch(body, &self.apps.get(app).cfg)
                .and_then(|events| self.trigger(app, events, true)),
            Endpoint::Channels => self.query_channels(app, req),
            Endpoint::Channel(name) => self.query_channel(app, req, &name),
            Endpoint::ChannelUsers(name) => self.query_users(app, &name),
            Endpoint::TerminateUser(user) => {
                if let Some(scaling) = self.scaling.as_mut() {
                    let app_id = self.apps.get(app).cfg.id.clone();
                    scaling.send(
                        Some(&app_id),
                        crate::scaling::Body::Terminate {
                            user_id: user.clone(),
                        },
                    );
                }
                self.terminate_local(app, &user);
                Ok(json!({}))
            }
        };
        match result {
            Ok(body) => self.rest_result(200, respond(200, &body)),
            Err(e) => self.rest_result(e.status, respond_error(e)),
        }
    }

    fn rest_result(&mut self, status: u16, decision: Decision) -> Decision {
        *self.stats.rest_calls.entry(status).or_insert(0) += 1;
        decision
    }

    fn trigger(
        &mut self,
        app: usize,
        events: Vec<rest::Event>,
        batch: bool,
    ) -> Result<Value, RestError> {
        let count = events
            .iter()
            .map(|e| u32::try_from(e.channels.len()).unwrap_or(u32::MAX))
            .fold(0u32, u32::saturating_add);
        if !self
            .apps
            .get_mut(app)
            .backend_events
            .try_take(count, Instant::now())
        {
            self.stats.rate_limited += 1;
            return Err(RestError {
                status: 429,
                message: "over max_backend_events_per_second".into(),
            });
        }
        let mut infos = Vec::new();
        for event in &events {
            let except = event.socket_id.as_deref();
            self.broadcast_event(
                app,
                &event.channels,
                &event.name,
                &event.data,
                except,
                "rest",
            );
            self.stats.api_publishes += 1;
            if event.info.any() {
                let mut channels = Map::new();
                for channel in &event.channels {
                    channels.insert(channel.clone(), self.channel_info(app, channel, event.info));
                }
                infos.push(Value::Object(channels));
            } else {
                infos.push(json!({}));
            }
        }
        let any_info = events.iter().any(|e| e.info.any());
        Ok(match (batch, any_info) {
            (_, false) => json!({}),
            (false, true) => json!({ "channels": infos.into_iter().next().unwrap_or(json!({})) }),
            (true, true) => json!({ "batch": infos }),
        })
    }

    /// The attributes `info` asks for, for one channel.
    /// The attributes `info` asks for, for one channel, across the cluster.
    fn channel_info(&self, app: usize, name: &str, info: Info) -> Value {
        let mut out = Map::new();
        let (subscribers, members) = self.cluster_channel(app, name);
        if info.subscription_count {
            out.insert("subscription_count".into(), json!(subscribers));
        }
        if info.user_count {
            out.insert("user_count".into(), json!(members.len()));
        }
        Value::Object(out)
    }

    /// Subscribers and presence member ids of a channel on this node and the others.
    fn cluster_channel(
        &self,
        app: usize,
        name: &str,
    ) -> (usize, std::collections::BTreeSet<String>) {
        let local = self.hub.channel_named(app, name);
        let (remote_subscribers, remote_members) = self.remote_channel(app, name);
        let mut members: std::collections::BTreeSet<String> = remote_members.into_keys().collect();
        if let Some(c) = local {
            members.extend(c.members().map(|(u, _)| u.to_string()));
        }
        let subscribers = local
            .map(|c| c.count())
            .unwrap_or(0)
            .saturating_add(remote_subscribers);
        (subscribers, members)
    }

    fn query_channels(&self, app: usize, req: &Request) -> Result<Value, RestError> {
        let params = crate::pusher::auth::parse_query(req.query());
        let param = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let prefix = param("filter_by_prefix").unwrap_or("");
        let info = Info::parse(param("info"))?;
        if info.user_count && !prefix.starts_with("presence-") {
            return Err(RestError {
                status: 400,
                message: "info=user_count needs filter_by_prefix=presence-".into(),
            });
        }
        if info.subscription_count || info.cache {
            return Err(RestError {
                status: 400,
                message: "only info=user_count is available when listing channels".into(),
            });
        }
        let mut names: std::collections::BTreeSet<String> = self
            .hub
            .channels(app)
            .map(|ch| ch.name().to_string())
            .collect();
        names.extend(self.remote_channels(app));
        let mut channels = Map::new();
        for name in names {
            if name.starts_with(prefix) && !name.starts_with('#') {
                let attrs = self.channel_info(app, &name, info);
                channels.insert(name, attrs);
            }
        }
        Ok(json!({ "channels": channels }))
    }

    fn query_channel(&self, app: usize, req: &Request, name: &str) -> Result<Value, RestError> {
        let params = crate::pusher::auth::parse_query(req.query());
        let info = Info::parse(
            params
                .iter()
                .find(|(k, _)| k == "info")
                .map(|(_, v)| v.as_str()),
        )?;
        if info.user_count && !name.starts_with("presence-") {
            return Err(RestError {
                status: 400,
                message: "info=user_count is only for presence channels".into(),
            });
        }
        let occupied = self.cluster_channel(app, name).0 > 0;
        let mut out = match self.channel_info(app, name, info) {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        out.insert("occupied".into(), json!(occupied));
        if info.cache
            && let Some((frame, left)) = self.hub.cache().get(app as u16, name, Instant::now())
        {
            let text = String::from_utf8_lossy(ws::payload(frame)).into_owned();
            let event: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            out.insert(
                "cache".into(),
                json!({"event": event.get("event"), "data": event.get("data"),
                               "ttl": left.as_secs()}),
            );
        }
        Ok(Value::Object(out))
    }

    fn query_users(&self, app: usize, name: &str) -> Result<Value, RestError> {
        if !name.starts_with("presence-") {
            return Err(RestError {
                status: 400,
                message: "users can only be listed for presence channels".into(),
            });
        }
        let users: Vec<Value> = self
            .cluster_channel(app, name)
            .1
            .into_iter()
            .map(|id| json!({ "id": id }))
            .collect();
        Ok(json!({ "users": users }))
    }

    /// Closes every connection of the app signed in (`pusher:signin`) as `user`. As Pusher
    /// documents, connections that only joined presence channels under that id are left alone:
    /// presence ids are asserted by the app's auth endpoint, not proven by the user.
    pub(crate) fn terminate_local(&mut self, app: usize, user: &str) {
        let keys: Vec<usize> = self
            .user_conns
            .get(&(app, Box::from(user)))
            .into_iter()
            .flatten()
            .copied()
            .filter(|&k| {
                self.conns.get(k).is_some_and(|c| {
                    c.pusher
                        .as_ref()
                        .is_some_and(|p| p.user_id.as_deref() == Some(user))
                })
            })
            .collect();
        info!(
            "terminating {} connection(s) of user \"{user}\"",
            keys.len()
        );
        for key in keys {
            self.reply(
                key,
                &pp::error(
                    Some(pp::code::UNAUTHORIZED),
                    "Connection terminated by the server",
                ),
            );
            self.close_with(key, pp::code::UNAUTHORIZED, "terminated");
        }
    }
}

/// Unused-variable guard for closing codes referenced in docs.
#[allow(dead_code)]
const _CLOSE: u16 = close::NORMAL;
