//! The console's HTTP side: the page behind a login, the feed's admission, the publish form.

use base64::Engine;
use serde_json::json;

use super::answer::{Decision, respond, respond_error};
use super::publication::{Origin, Publication};
use super::state::State;
use crate::http::{self, Request};

const PAGE: &str = include_str!("../console.html");

/// The part of `rel` under the console's path ("" for the page itself), when enabled.
pub fn route<'r>(st: &State, rel: &'r str) -> Option<&'r str> {
    if !st.cfg.console.enabled {
        return None;
    }
    rel.strip_prefix(st.cfg.console.path.trim_end_matches('/'))
        .filter(|sub| matches!(*sub, "" | "/" | "/feed" | "/publish"))
}

/// Whether a feed upgrade carries a valid login (`?session=`).
pub fn feed_allowed(st: &State, req: &Request) -> bool {
    let session = crate::query::param(req.query(), "session").unwrap_or_default();
    st.consoles.valid(&session, st.clock.wall_ms())
}

pub fn http(st: &mut State, req: &Request, sub: &str, body: &[u8]) -> Decision {
    match (req.method, sub) {
        ("GET", "" | "/") => page(st, req),
        ("POST", "/publish") => publish(st, req, body),
        _ => respond_error(404, "not found"),
    }
}

fn page(st: &mut State, req: &Request) -> Decision {
    if !basic_auth_ok(st, req.header("authorization")) {
        return Decision::Respond(http::response(
            401,
            &[(
                "WWW-Authenticate",
                "Basic realm=\"ferrocast console\", charset=\"UTF-8\"",
            )],
            &http::error_body("log in with an app's key and secret"),
        ));
    }
    let session = st.consoles.login(st.clock.wall_ms());
    let base = format!(
        "{}{}",
        st.cfg.prefix(),
        st.cfg.console.path.trim_end_matches('/')
    );
    // `{{BASE}}` is the console's own path (server prefix and `console.path`), `{{PREFIX}}`
    // the server's URL prefix.
    let page = PAGE
        .replace("{{SESSION}}", &session)
        .replace("{{BASE}}", &base)
        .replace("{{PREFIX}}", st.cfg.prefix());
    Decision::Respond(http::response_with(
        200,
        "text/html; charset=utf-8",
        &[("Cache-Control", "no-store"), ("X-Frame-Options", "DENY")],
        &page,
    ))
}

/// The console's publish form.
fn publish(st: &mut State, req: &Request, body: &[u8]) -> Decision {
    let session = req.header("x-console-session").unwrap_or("");
    if !st.consoles.valid(session, st.clock.wall_ms()) {
        return respond_error(401, "console session expired: log in again");
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
        Err(e) => return respond_error(400, &format!("invalid JSON: {e}")),
    };
    let app = match form.app.as_deref() {
        None | Some("") => 0,
        Some(id) => match st.apps.by_id(id) {
            Some(a) => a,
            None => return respond_error(400, &format!("unknown app \"{id}\"")),
        },
    };
    if !crate::pusher::rest::valid_channel(&form.channel, &st.apps.get(app).cfg)
        || form.event.is_empty()
    {
        return respond_error(400, "a valid channel and an event name are required");
    }
    st.publish(Publication::Event {
        app,
        channels: vec![form.channel],
        event: form.event,
        data: form.data,
        except: None,
        origin: Origin::Here("console"),
    });
    respond(200, &json!({}))
}

/// Checks `Authorization: Basic` against the apps' key/secret pairs and the console token.
fn basic_auth_ok(st: &State, header: Option<&str>) -> bool {
    let Some(encoded) = header.and_then(|h| {
        h.strip_prefix("Basic ")
            .or_else(|| h.strip_prefix("basic "))
    }) else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    let Some((user, password)) = text.split_once(':') else {
        return false;
    };
    let eq = |a: &str, b: &str| crate::pusher::auth::secret_eq(a.as_bytes(), b.as_bytes());
    let token = &st.cfg.console.token;
    if !token.is_empty() && user == "token" && eq(token, password) {
        return true;
    }
    st.apps
        .iter()
        .any(|app| eq(&app.cfg.key, user) && eq(&app.cfg.secret, password))
}
