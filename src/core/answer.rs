//! How a request is answered: the decision every HTTP handler returns.

use super::conns::Mode;
use crate::http;

/// How a request is answered.
pub enum Decision {
    /// Answer and close.
    Respond(Vec<u8>),
    /// A complete plain-HTTP exchange on a keep-alive connection: answer, drop the request's
    /// `consumed` bytes and wait for the next one.
    RespondKeepAlive(Vec<u8>, usize),
    Upgrade(Upgrade),
    /// The head (or the body) is not complete yet.
    NeedMore,
    /// The request names an app the store is asked for: the connection reads nothing until the
    /// answer, then the request is handled again.
    Wait,
}

pub fn respond(status: u16, body: &serde_json::Value) -> Decision {
    Decision::Respond(http::response(status, &[], &body.to_string()))
}

pub fn respond_error(status: u16, message: &str) -> Decision {
    Decision::Respond(http::response(status, &[], &http::error_body(message)))
}

/// An accepted upgrade request, before the 101.
pub struct Upgrade {
    pub mode: Mode,
    pub accept: String,
    pub head_len: usize,
    /// The handshake's CGI environment, when a validation or routing handler needs it.
    pub env: Option<Vec<(String, String)>>,
    /// Pusher: the app, or the error to send right after the upgrade.
    pub pusher: Option<Result<usize, (u16, String)>>,
    /// The client offered permessage-deflate as we can honour it, and compression is on.
    pub deflate: bool,
}
