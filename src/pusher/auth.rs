//! Pusher Channels authentication primitives (protocol v7).
//!
//! Everything here is a pure function: no I/O, no clocks, no global state.
//! The caller passes in "now" and looks up secrets, so this module is easy to
//! test and can be shared by the server, its tests and the load generator.
//!
//! What is covered, with the public Pusher documentation it implements:
//!
//! * **Channel authorization** (`private-*`, `presence-*`) — "Authentication
//!   and authorization signatures"
//!   (`docs/channels/library_auth_reference/auth-signatures`):
//!   `auth = "<key>:" + hex(HMAC-SHA256(secret, "<socket_id>:<channel>"))`,
//!   with `":<channel_data>"` appended for presence channels. `channel_data`
//!   is signed exactly as the client sent it (the raw JSON string); it is
//!   never re-serialized.
//! * **User authentication** (`pusher:signin`) — same page:
//!   `hex(HMAC-SHA256(secret, "<socket_id>::user::<user_data>"))`.
//! * **Webhooks** — "Webhooks" (`docs/channels/server_api/webhooks`):
//!   `X-Pusher-Key: <key>` and
//!   `X-Pusher-Signature: hex(HMAC-SHA256(secret, <raw POST body>))`.
//! * **HTTP (REST) API request signing** — "HTTP API reference", section
//!   "Authentication" (`docs/channels/library_auth_reference/rest-api`):
//!   query parameters `auth_key`, `auth_timestamp` (within 600 s of server
//!   time), `auth_version=1.0`, `body_md5` (hex MD5, required when the body
//!   is non-empty) and `auth_signature = hex(HMAC-SHA256(secret,
//!   "METHOD\nPATH\nQUERY"))` where `QUERY` is every parameter except
//!   `auth_signature`, keys lowercased, sorted by key, joined as
//!   `k=v&k=v` **without** URL escaping.
//!
//! All hex digests are lowercase. Every secret-dependent comparison in the
//! server goes through [`secret_eq`].

use std::fmt::Write as _;

use hmac::{Hmac, KeyInit, Mac};
use md5::{Digest as _, Md5};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The only REST API auth version Pusher defines.
pub const AUTH_VERSION: &str = "1.0";

/// Default clock-skew window for REST requests. The HTTP API reference says
/// "The server will only accept requests where the timestamp is within 600s
/// of the current time".
pub const DEFAULT_MAX_SKEW_SECS: u64 = 600;

/// Query parameters that carry REST authentication data. They may appear at
/// most once in a request, and [`sign_rest_request`] refuses them as user
/// parameters (the Node SDK does the same: "... is a required parameter and
/// cannot be overidden").
const RESERVED_PARAMS: [&str; 5] = [
    "auth_key",
    "auth_timestamp",
    "auth_version",
    "auth_signature",
    "body_md5",
];

// ---------------------------------------------------------------------------
// Primitives
// ---------------------------------------------------------------------------

fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC accepts keys of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Lowercase hex HMAC-SHA256 of `message` keyed with `secret`.
///
/// This is the "HMAC SHA256 hex digest" used by every Pusher signature.
pub fn sign(secret: &str, message: &str) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), message.as_bytes()))
}

/// Compares a secret (a token, a password, a signature) with what a client
/// sent, in a time that depends on neither their contents nor their lengths:
/// both are hashed, and the digests compared without an early exit. The one
/// comparison used for anything secret.
pub fn secret_eq(expected: &[u8], given: &[u8]) -> bool {
    constant_time_eq(&Sha256::digest(expected), &Sha256::digest(given))
}

/// Compares two equally long digests without an early exit on the first
/// difference (lengths are compared first: use [`secret_eq`] for anything
/// whose length is not public).
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        // black_box keeps the optimizer from turning this into an early exit.
        diff |= std::hint::black_box(x ^ y);
    }
    std::hint::black_box(diff) == 0
}

/// Lowercase hex MD5 of a request body, as sent in the `body_md5` parameter.
pub fn body_md5(body: &[u8]) -> String {
    hex::encode(Md5::digest(body))
}

// ---------------------------------------------------------------------------
// Channel authorization and user authentication
// ---------------------------------------------------------------------------

/// The string signed for channel authorization:
/// `socket_id:channel` or, when `channel_data` is given (presence channels),
/// `socket_id:channel:channel_data`.
pub fn channel_auth_string_to_sign(
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    match channel_data {
        Some(data) => format!("{socket_id}:{channel}:{data}"),
        None => format!("{socket_id}:{channel}"),
    }
}

/// Produces the `auth` value (`"<key>:<hex signature>"`) for a channel
/// subscription. This is what an application's auth endpoint returns; the
/// server only needs it for tests and the load generator.
pub fn channel_auth(
    app_key: &str,
    app_secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
) -> String {
    let signature = sign(
        app_secret,
        &channel_auth_string_to_sign(socket_id, channel, channel_data),
    );
    format!("{app_key}:{signature}")
}

/// Checks the `auth` field of a `pusher:subscribe` for a private or presence
/// channel.
///
/// * `auth` must be exactly `"<app_key>:<lowercase hex HMAC-SHA256>"`.
/// * `channel_data` must be the raw string the client sent (presence
///   channels); pass `None` when the subscribe message had none. It is signed
///   byte-for-byte: re-serializing the JSON would break valid signatures.
/// * Deciding whether a channel *needs* `channel_data` (presence) is the
///   caller's job.
///
/// An empty `app_secret` never authorizes anything, and neither does an
/// empty channel name or one containing `:`. Valid Pusher channel names never
/// are (allowed characters: `A-Z a-z 0-9 _ - = @ , . ;`), and refusing them
/// here keeps the signed strings unambiguous: without it, the user
/// authentication string `socket_id::user::<user_data>` is also the channel
/// string for channel `""` with channel_data `user::<user_data>`, so a signin
/// signature would pass as a channel authorization.
pub fn verify_channel_auth(
    app_key: &str,
    app_secret: &str,
    socket_id: &str,
    channel: &str,
    channel_data: Option<&str>,
    auth: &str,
) -> bool {
    if app_secret.is_empty() || channel.is_empty() || channel.contains(':') {
        return false;
    }
    let expected = channel_auth(app_key, app_secret, socket_id, channel, channel_data);
    // The whole "key:signature" string is compared, so a wrong key prefix
    // fails just like a wrong signature.
    secret_eq(expected.as_bytes(), auth.as_bytes())
}

/// The string signed for user authentication (`pusher:signin`):
/// `socket_id::user::user_data`.
pub fn user_auth_string_to_sign(socket_id: &str, user_data: &str) -> String {
    format!("{socket_id}::user::{user_data}")
}

/// Produces the `auth` value (`"<key>:<hex signature>"`) for `pusher:signin`.
pub fn user_auth(app_key: &str, app_secret: &str, socket_id: &str, user_data: &str) -> String {
    let signature = sign(app_secret, &user_auth_string_to_sign(socket_id, user_data));
    format!("{app_key}:{signature}")
}

/// Checks the `auth` field of a `pusher:signin` message. `user_data` is the
/// raw JSON string the client sent, signed byte-for-byte. Validating its
/// content (an `id` that is a non-empty string) is the caller's job.
///
/// An empty `app_secret` never authenticates anything.
pub fn verify_user_auth(
    app_key: &str,
    app_secret: &str,
    socket_id: &str,
    user_data: &str,
    auth: &str,
) -> bool {
    if app_secret.is_empty() {
        return false;
    }
    let expected = user_auth(app_key, app_secret, socket_id, user_data);
    secret_eq(expected.as_bytes(), auth.as_bytes())
}

// ---------------------------------------------------------------------------
// Webhooks
// ---------------------------------------------------------------------------

/// Value of the `X-Pusher-Signature` header for a webhook whose POST body is
/// `body`: lowercase hex HMAC-SHA256 of the exact body bytes. Send it along
/// with `X-Pusher-Key: <app key>`.
pub fn webhook_signature(secret: &str, body: &[u8]) -> String {
    hex::encode(hmac_sha256(secret.as_bytes(), body))
}

/// Checks an `X-Pusher-Signature` header value against a webhook body.
pub fn verify_webhook_signature(secret: &str, body: &[u8], signature: &str) -> bool {
    if secret.is_empty() {
        return false;
    }
    secret_eq(
        webhook_signature(secret, body).as_bytes(),
        signature.as_bytes(),
    )
}

// ---------------------------------------------------------------------------
// Query strings
// ---------------------------------------------------------------------------

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes one `application/x-www-form-urlencoded` component: `+` is a
/// space, `%XX` is a byte. Like the WHATWG URL parser, a `%` that is not
/// followed by two hex digits is kept literally, and invalid UTF-8 is
/// replaced by U+FFFD (such a request cannot carry a valid signature anyway,
/// and the server sees the same decoded value that was verified).
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                match (
                    bytes.get(i + 1).copied().and_then(hex_value),
                    bytes.get(i + 2).copied().and_then(hex_value),
                ) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 3;
                    }
                    _ => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    match String::from_utf8(out) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Parses a raw query string (without the leading `?`; one is tolerated)
/// into decoded `(key, value)` pairs, in request order, keys untouched.
///
/// Pairs are separated by `&`; the first `=` splits key from value; a pair
/// without `=` has an empty value; empty pairs (`a=1&&b=2`) are skipped.
/// `+` decodes to a space and `%XX` to a byte, as for
/// `application/x-www-form-urlencoded` (what Rack, which Pusher's own API
/// runs on, does for query strings).
pub fn parse_query(query: &str) -> Vec<(String, String)> {
    let query = query.strip_prefix('?').unwrap_or(query);
    query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (form_decode(k), form_decode(v)),
            None => (form_decode(pair), String::new()),
        })
        .collect()
}

/// Builds the query part of the REST string to sign from *decoded*
/// parameters: keys lowercased, `auth_signature` left out, stable-sorted by
/// key (so repeated keys such as `channels[]` keep their request order),
/// joined as `k=v&k=v` with no escaping at all.
///
/// Example from the HTTP API reference: `auth_key: foo`,
/// `Name: Something else` gives `auth_key=foo&name=Something else`.
pub fn canonical_query<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> String {
    let mut pairs: Vec<(String, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref().to_lowercase(), v.as_ref()))
        .filter(|(k, _)| k != "auth_signature")
        .collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut out = String::new();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
    out
}

/// The full string signed for a REST request: `METHOD\nPATH\nQUERY`, with
/// the method uppercased and `QUERY` built by [`canonical_query`].
pub fn rest_string_to_sign<K: AsRef<str>, V: AsRef<str>>(
    method: &str,
    path: &str,
    params: &[(K, V)],
) -> String {
    format!(
        "{}\n{}\n{}",
        method.to_ascii_uppercase(),
        path,
        canonical_query(params)
    )
}

/// Percent-encodes a query component: everything except the RFC 3986
/// unreserved characters (`A-Z a-z 0-9 - . _ ~`) becomes `%XX` (so a space
/// is `%20`, never `+`, and the result decodes unambiguously).
pub fn percent_encode_component(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            // Writing to a String cannot fail.
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// Encodes parameters as a wire query string: percent-encoded with
/// [`percent_encode_component`], stable-sorted by lowercased key, keys kept
/// as given.
pub fn encode_query_sorted<K: AsRef<str>, V: AsRef<str>>(params: &[(K, V)]) -> String {
    let mut sorted: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    sorted.sort_by_cached_key(|(k, _)| k.to_lowercase());
    let mut out = String::new();
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(&percent_encode_component(k));
        out.push('=');
        out.push_str(&percent_encode_component(v));
    }
    out
}

/// Client side: signs a REST request the way the official server SDKs do
/// and returns the complete query string to append after `?`.
///
/// `params` are the request's own (unencoded) query parameters; the result
/// also carries `auth_key`, `auth_timestamp`, `auth_version=1.0`,
/// `body_md5` (only when `body` is non-empty) and, last, `auth_signature`.
/// `path` is the full path that will be requested, e.g. `/apps/123/events`.
///
/// # Panics
///
/// If `params` contains one of the reserved auth parameters (`auth_key`,
/// `auth_timestamp`, `auth_version`, `auth_signature`, `body_md5`, in any
/// case): that is a bug in the calling test or tool.
pub fn sign_rest_request(
    method: &str,
    path: &str,
    params: &[(&str, &str)],
    body: &[u8],
    key: &str,
    secret: &str,
    timestamp: u64,
) -> String {
    for (k, _) in params {
        let lower = k.to_lowercase();
        assert!(
            !RESERVED_PARAMS.contains(&lower.as_str()),
            "{lower} is set by sign_rest_request and cannot be passed as a parameter (got {k:?})"
        );
    }
    let timestamp = timestamp.to_string();
    let md5 = (!body.is_empty()).then(|| body_md5(body));
    let mut all: Vec<(&str, &str)> = vec![
        ("auth_key", key),
        ("auth_timestamp", &timestamp),
        ("auth_version", AUTH_VERSION),
    ];
    if let Some(md5) = &md5 {
        all.push(("body_md5", md5));
    }
    all.extend_from_slice(params);
    let signature = sign(secret, &rest_string_to_sign(method, path, &all));
    let mut query = encode_query_sorted(&all);
    query.push_str("&auth_signature=");
    query.push_str(&signature);
    query
}

// ---------------------------------------------------------------------------
// REST request verification
// ---------------------------------------------------------------------------

/// The parts of an incoming HTTP API request that the signature covers.
#[derive(Debug, Clone, Copy)]
pub struct RestRequest<'a> {
    /// HTTP method as received (uppercased before signing).
    pub method: &'a str,
    /// Path exactly as it appeared in the request line, without the query
    /// string and without any percent-decoding, e.g. `/apps/123/events`.
    /// The SDKs sign the path they send, so it must not be normalized.
    pub path: &'a str,
    /// Raw query string (the part after `?`, still percent-encoded).
    pub query: &'a str,
    /// Raw request body bytes.
    pub body: &'a [u8],
}

/// Why a REST request was refused. The `Display` text is meant to be sent
/// back in the response body, so it says what to fix.
///
/// HTTP status (see [`RestAuthError::status`]): Pusher's own API answers
/// `401 Unauthorized` to *every* authentication failure, including missing or
/// malformed auth parameters and an unsupported `auth_version` (its reference
/// verifier, the `signature` gem, raises `AuthenticationError` for "Missing
/// parameter: auth_key", "Timestamp required", "Version not supported",
/// "Timestamp expired", "Unknown auth_key" and "Invalid signature", and the
/// HTTP API reference lists 401 as "Authentication error: response body will
/// contain an explanation"). We do the same, so clients and SDKs that branch
/// on 401 behave as against Pusher. `body_md5` is one of the documented
/// authentication parameters, so a mismatch is a 401 too. The one `400 Bad
/// Request` is [`RestAuthError::DuplicateParam`]: a query that repeats an auth
/// parameter is ambiguous rather than wrongly signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestAuthError {
    /// A required query parameter is absent.
    #[error(
        "missing query parameter `{0}`: every HTTP API request must carry auth_key, auth_timestamp, auth_version and auth_signature, plus body_md5 when the body is non-empty"
    )]
    MissingParam(&'static str),
    /// An auth parameter appears more than once in the query string.
    #[error("query parameter `{0}` appears more than once; send each auth parameter exactly once")]
    DuplicateParam(&'static str),
    /// `auth_timestamp` is not a non-negative decimal integer.
    #[error(
        "auth_timestamp {0:?} is not a Unix time in whole seconds (a non-negative decimal integer)"
    )]
    BadTimestamp(String),
    /// `auth_timestamp` is too far from the server clock.
    #[error(
        "auth_timestamp is {skew}s away from server time (allowed: less than {max_skew}s either way); check the client's clock (e.g. NTP) and sign each request just before sending it"
    )]
    Expired {
        /// `auth_timestamp - now`, in seconds: positive if the client clock
        /// is ahead, negative if it is behind (or the request is stale).
        skew: i64,
        /// The configured window.
        max_skew: u64,
    },
    /// `auth_version` is not `1.0`.
    #[error("auth_version {0:?} is not supported; use auth_version=1.0")]
    BadVersion(String),
    /// No app has this `auth_key`.
    #[error("unknown auth_key {0:?}: use the key of an app configured on this server")]
    UnknownKey(String),
    /// `body_md5` does not match the MD5 of the received body.
    #[error(
        "body_md5 {got:?} does not match the MD5 of the request body ({expected}); hash exactly the bytes that are sent as the body"
    )]
    BodyMd5Mismatch {
        /// MD5 of the body actually received.
        expected: String,
        /// Value of the `body_md5` parameter.
        got: String,
    },
    /// `auth_signature` is wrong (wrong secret, or the request was signed
    /// differently from how it was sent).
    #[error(
        "invalid auth_signature: expected lowercase hex HMAC-SHA256 of {string_to_sign:?} keyed with the app secret"
    )]
    BadSignature {
        /// What the server signed; comparing it with what the client signed
        /// usually shows the problem (path, method, escaping, key case).
        string_to_sign: String,
    },
}

impl RestAuthError {
    /// HTTP status to answer with; see the type-level docs for the choice.
    pub fn status(&self) -> u16 {
        match self {
            RestAuthError::DuplicateParam(_) => 400,
            RestAuthError::MissingParam(_)
            | RestAuthError::BadTimestamp(_)
            | RestAuthError::Expired { .. }
            | RestAuthError::BadVersion(_)
            | RestAuthError::UnknownKey(_)
            | RestAuthError::BodyMd5Mismatch { .. }
            | RestAuthError::BadSignature { .. } => 401,
        }
    }
}

/// Looks up a reserved (already lowercased) parameter that may appear once.
fn single_param<'p>(
    params: &'p [(String, String)],
    name: &'static str,
) -> Result<Option<&'p str>, RestAuthError> {
    let mut found = None;
    for (k, v) in params {
        if k == name {
            if found.is_some() {
                return Err(RestAuthError::DuplicateParam(name));
            }
            found = Some(v.as_str());
        }
    }
    Ok(found)
}

fn required_param<'p>(
    params: &'p [(String, String)],
    name: &'static str,
) -> Result<&'p str, RestAuthError> {
    single_param(params, name)?.ok_or(RestAuthError::MissingParam(name))
}

fn parse_timestamp(s: &str) -> Result<u64, RestAuthError> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return Err(RestAuthError::BadTimestamp(s.to_owned()));
    }
    s.parse::<u64>()
        .map_err(|_| RestAuthError::BadTimestamp(s.to_owned()))
}

/// Verifies an HTTP API request signed as described in the HTTP API
/// reference and returns its `auth_key` on success.
///
/// Checks, in this order: the auth parameters are present (each at most
/// once); `auth_version` is `1.0`; `auth_timestamp` is an integer;
/// `lookup_secret(auth_key)` knows the key; `|auth_timestamp - now_unix| <
/// max_skew_secs` (strictly: with the documented 600 s window, 599 s of skew
/// passes and 600 s fails, like Pusher's reference verifier); `body_md5` is
/// present when the body is non-empty and, whenever present, equals the MD5
/// of `req.body`; and `auth_signature` equals
/// `HMAC-SHA256(secret, METHOD\nPATH\nQUERY)` (constant-time comparison).
///
/// `lookup_secret` returning `None` or an empty secret means "unknown key".
/// Parameter keys are matched case-insensitively (they are lowercased, as
/// for signing). Use [`parse_query`] to read the request's other parameters:
/// it decodes exactly the values that were verified here.
pub fn verify_rest_request(
    req: &RestRequest<'_>,
    lookup_secret: impl Fn(&str) -> Option<String>,
    now_unix: u64,
    max_skew_secs: u64,
) -> Result<String, RestAuthError> {
    let params: Vec<(String, String)> = parse_query(req.query)
        .into_iter()
        .map(|(k, v)| (k.to_lowercase(), v))
        .collect();

    let auth_key = required_param(&params, "auth_key")?;
    let auth_timestamp = required_param(&params, "auth_timestamp")?;
    let auth_version = required_param(&params, "auth_version")?;
    let auth_signature = required_param(&params, "auth_signature")?;
    let md5_param = single_param(&params, "body_md5")?;

    if auth_version != AUTH_VERSION {
        return Err(RestAuthError::BadVersion(auth_version.to_owned()));
    }
    let timestamp = parse_timestamp(auth_timestamp)?;

    let secret = match lookup_secret(auth_key) {
        Some(secret) if !secret.is_empty() => secret,
        _ => return Err(RestAuthError::UnknownKey(auth_key.to_owned())),
    };

    let skew = i128::from(timestamp) - i128::from(now_unix);
    if skew.unsigned_abs() >= u128::from(max_skew_secs) {
        let skew = i64::try_from(skew).unwrap_or(if skew < 0 { i64::MIN } else { i64::MAX });
        return Err(RestAuthError::Expired {
            skew,
            max_skew: max_skew_secs,
        });
    }

    match md5_param {
        None if !req.body.is_empty() => return Err(RestAuthError::MissingParam("body_md5")),
        None => {}
        Some(got) => {
            let expected = body_md5(req.body);
            if !got.eq_ignore_ascii_case(&expected) {
                return Err(RestAuthError::BodyMd5Mismatch {
                    expected,
                    got: got.to_owned(),
                });
            }
        }
    }

    let string_to_sign = rest_string_to_sign(req.method, req.path, &params);
    let expected = sign(&secret, &string_to_sign);
    if !secret_eq(expected.as_bytes(), auth_signature.as_bytes()) {
        return Err(RestAuthError::BadSignature { string_to_sign });
    }
    Ok(auth_key.to_owned())
}

/// Alternative HTTP API authentication: `Authorization: Bearer <secret>`.
///
/// `authorization_header` is the header *value*. The scheme is matched
/// case-insensitively (RFC 7235); surrounding whitespace is ignored. Both
/// sides are hashed before the constant-time comparison so that not even the
/// secret's length leaks. An empty secret or token never matches.
pub fn verify_bearer(authorization_header: &str, secret: &str) -> bool {
    let header = authorization_header.trim();
    let Some((scheme, token)) = header.split_once([' ', '\t']) else {
        return false;
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return false;
    }
    let token = token.trim();
    if token.is_empty() || secret.is_empty() {
        return false;
    }
    secret_eq(secret.as_bytes(), token.as_bytes())
}

// ---------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests {
    use super::*;

    // Credentials used by every worked example in the Pusher docs.
    const DOC_KEY: &str = "278d425bdf160c739803";
    const DOC_SECRET: &str = "7ad3773142a6692b25b8";

    // Credentials used to generate vectors with the official Node SDK
    // (npm `pusher` 5.3.4), see the `node_sdk_*` tests.
    const NODE_KEY: &str = "my-key";
    const NODE_SECRET: &str = "my-secret";
    const NODE_NOW: u64 = 1_700_000_000;

    fn doc_lookup(key: &str) -> Option<String> {
        (key == DOC_KEY).then(|| DOC_SECRET.to_owned())
    }

    fn node_lookup(key: &str) -> Option<String> {
        (key == NODE_KEY).then(|| NODE_SECRET.to_owned())
    }

    /// Splits "/path?query" into a RestRequest.
    fn req<'a>(method: &'a str, url: &'a str, body: &'a [u8]) -> RestRequest<'a> {
        let (path, query) = url.split_once('?').unwrap_or((url, ""));
        RestRequest {
            method,
            path,
            query,
            body,
        }
    }

    // ----- primitives -----------------------------------------------------

    #[test]
    fn sign_is_lowercase_hex_hmac_sha256() {
        // RFC 4231 test case 2.
        assert_eq!(
            sign("Jefe", "what do ya want for nothing?"),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn constant_time_eq_basics() {
        assert!(constant_time_eq(b"", b""));
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(secret_eq(b"s3cret", b"s3cret"));
        assert!(!secret_eq(b"s3cret", b"s3cre"));
        assert!(!secret_eq(b"s3cret", b"s3cret "));
        assert!(!secret_eq(b"", b"x"));
        assert!(secret_eq(b"", b""));
    }

    #[test]
    fn body_md5_known_answers() {
        assert_eq!(body_md5(b""), "d41d8cd98f00b204e9800998ecf8427e");
        // HTTP API reference, "Worked authentication example".
        assert_eq!(
            body_md5(br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#),
            "ec365a775a4cd0599faeb73354201b6f"
        );
    }

    // ----- channel authorization ------------------------------------------

    #[test]
    fn private_channel_doc_example() {
        // "Authentication and authorization signatures" doc
        // (docs/channels/library_auth_reference/auth-signatures),
        // "Worked examples" -> "Private channel".
        let auth =
            "278d425bdf160c739803:58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4";
        assert_eq!(
            channel_auth(DOC_KEY, DOC_SECRET, "1234.1234", "private-foobar", None),
            auth
        );
        assert!(verify_channel_auth(
            DOC_KEY,
            DOC_SECRET,
            "1234.1234",
            "private-foobar",
            None,
            auth
        ));
    }

    #[test]
    fn presence_channel_doc_example() {
        // Same doc, "Presence channels". The page shows the user data as
        // {"user_id":10,"user_info":{"name":"Mr. Channels"}} but its signature
        // (afaed369...) is the one for "Mr. Pusher": the text was renamed
        // after the value was generated. The official Node SDK and openssl
        // both give 31935e7d... for "Mr. Channels".
        let mr_pusher = r#"{"user_id":10,"user_info":{"name":"Mr. Pusher"}}"#;
        let auth =
            "278d425bdf160c739803:afaed3695da2ffd16931f457e338e6c9f2921fa133ce7dac49f529792be6304c";
        assert!(verify_channel_auth(
            DOC_KEY,
            DOC_SECRET,
            "1234.1234",
            "presence-foobar",
            Some(mr_pusher),
            auth
        ));

        let mr_channels = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let auth =
            "278d425bdf160c739803:31935e7d86dba64c2a90aed31fdc61869f9b22ba9d8863bba239c03ca481bc80";
        assert_eq!(
            channel_auth(
                DOC_KEY,
                DOC_SECRET,
                "1234.1234",
                "presence-foobar",
                Some(mr_channels)
            ),
            auth
        );
        assert!(verify_channel_auth(
            DOC_KEY,
            DOC_SECRET,
            "1234.1234",
            "presence-foobar",
            Some(mr_channels),
            auth
        ));
    }

    #[test]
    fn node_sdk_channel_auth_vectors() {
        // pusher.authorizeChannel("1234.1234", "private-foobar")
        assert!(verify_channel_auth(
            NODE_KEY,
            NODE_SECRET,
            "1234.1234",
            "private-foobar",
            None,
            "my-key:bd3653a704c2933012b0f30eed88afebbe200ea678302698274ae34875c029fe"
        ));
        // pusher.authorizeChannel("1234.1234", "presence-foobar",
        //   { user_id: "10", user_info: { name: "Mr. Channels" } })
        // -> channel_data is the SDK's JSON.stringify output, signed raw.
        assert!(verify_channel_auth(
            NODE_KEY,
            NODE_SECRET,
            "1234.1234",
            "presence-foobar",
            Some(r#"{"user_id":"10","user_info":{"name":"Mr. Channels"}}"#),
            "my-key:8899d83bf5b424f25b9cbcabad067f1d030fc2d42cffbfd786208a56027998b0"
        ));
    }

    #[test]
    fn channel_auth_rejects_tampering() {
        let data = r#"{"user_id":10,"user_info":{"name":"Mr. Channels"}}"#;
        let good = channel_auth(
            DOC_KEY,
            DOC_SECRET,
            "1234.1234",
            "presence-foobar",
            Some(data),
        );
        let ok = |socket: &str, channel: &str, cd: Option<&str>, auth: &str| {
            verify_channel_auth(DOC_KEY, DOC_SECRET, socket, channel, cd, auth)
        };
        assert!(ok("1234.1234", "presence-foobar", Some(data), &good));
        // Other socket, other channel.
        assert!(!ok("1234.1235", "presence-foobar", Some(data), &good));
        assert!(!ok("1234.1234", "presence-foobaz", Some(data), &good));
        // channel_data is signed raw: semantically equal JSON is still a
        // different string.
        let reformatted = r#"{"user_id": 10,"user_info":{"name":"Mr. Channels"}}"#;
        assert!(!ok(
            "1234.1234",
            "presence-foobar",
            Some(reformatted),
            &good
        ));
        let other_user = r#"{"user_id":11,"user_info":{"name":"Mr. Channels"}}"#;
        assert!(!ok("1234.1234", "presence-foobar", Some(other_user), &good));
        // Dropping or adding channel_data changes the string to sign.
        assert!(!ok("1234.1234", "presence-foobar", None, &good));
        let private = channel_auth(DOC_KEY, DOC_SECRET, "1234.1234", "private-foobar", None);
        assert!(!ok("1234.1234", "private-foobar", Some(""), &private));
        // Wrong secret.
        assert!(!verify_channel_auth(
            DOC_KEY,
            "other-secret",
            "1234.1234",
            "private-foobar",
            None,
            &private
        ));
        // Empty secret never authorizes, even with a matching signature.
        let empty = channel_auth(DOC_KEY, "", "1234.1234", "private-foobar", None);
        assert!(!verify_channel_auth(
            DOC_KEY,
            "",
            "1234.1234",
            "private-foobar",
            None,
            &empty
        ));
    }

    #[test]
    fn channel_auth_rejects_wrong_key_prefix_and_malformed_auth() {
        let sig = "58df8b0c36d6982b82c3ecf6b4662e34fe8c25bba48f5369f135bf843651c3a4";
        let check = |auth: &str| {
            verify_channel_auth(
                DOC_KEY,
                DOC_SECRET,
                "1234.1234",
                "private-foobar",
                None,
                auth,
            )
        };
        assert!(check(&format!("{DOC_KEY}:{sig}")));
        assert!(!check(&format!("other-key:{sig}")));
        assert!(!check(&format!("{DOC_KEY}x:{sig}")));
        assert!(!check(&format!(":{sig}")));
        assert!(!check(sig));
        assert!(!check(&format!("{DOC_KEY}{sig}")));
        assert!(!check(&format!("{DOC_KEY}:{}", sig.to_uppercase())));
        assert!(!check(&format!("{DOC_KEY}:{sig} ")));
        assert!(!check(&format!("{DOC_KEY}:{}", &sig[..63])));
        assert!(!check(""));
    }

    // ----- user authentication --------------------------------------------

    #[test]
    fn user_signin_doc_example() {
        // auth-signatures doc, "Worked examples" -> "User authentication".
        let auth =
            "278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba";
        assert_eq!(
            user_auth_string_to_sign("1234.1234", r#"{"id":"12345"}"#),
            r#"1234.1234::user::{"id":"12345"}"#
        );
        assert_eq!(
            user_auth(DOC_KEY, DOC_SECRET, "1234.1234", r#"{"id":"12345"}"#),
            auth
        );
        assert!(verify_user_auth(
            DOC_KEY,
            DOC_SECRET,
            "1234.1234",
            r#"{"id":"12345"}"#,
            auth
        ));
    }

    #[test]
    fn node_sdk_user_auth_vector_with_utf8() {
        // pusher.authenticateUser("1234.1234", { id: "12345", name: "Zoë" })
        assert!(verify_user_auth(
            NODE_KEY,
            NODE_SECRET,
            "1234.1234",
            r#"{"id":"12345","name":"Zoë"}"#,
            "my-key:55f27ed461c6c5f226458b53f191657223f2d45ed1ef5cceb9f7b3c7de7028d7"
        ));
    }

    #[test]
    fn user_signin_rejects_tampering() {
        let auth =
            "278d425bdf160c739803:4708d583dada6a56435fb8bc611c77c359a31eebde13337c16ab43aa6de336ba";
        let check = |key: &str, socket: &str, data: &str, auth: &str| {
            verify_user_auth(key, DOC_SECRET, socket, data, auth)
        };
        assert!(check(DOC_KEY, "1234.1234", r#"{"id":"12345"}"#, auth));
        assert!(!check(DOC_KEY, "1234.1234", r#"{"id":"12346"}"#, auth));
        assert!(!check(DOC_KEY, "1234.1234", r#"{"id": "12345"}"#, auth));
        assert!(!check(DOC_KEY, "4321.1234", r#"{"id":"12345"}"#, auth));
        assert!(!check("other-key", "1234.1234", r#"{"id":"12345"}"#, auth));
        assert!(!verify_user_auth(
            DOC_KEY,
            "",
            "1234.1234",
            r#"{"id":"12345"}"#,
            auth
        ));
    }

    #[test]
    fn signin_signature_is_not_a_channel_authorization() {
        // The signed strings collide for channel "" with channel_data
        // "user::<user_data>"; verify_channel_auth refuses such channel names.
        let auth = user_auth(DOC_KEY, DOC_SECRET, "1234.1234", r#"{"id":"12345"}"#);
        assert_eq!(
            channel_auth(
                DOC_KEY,
                DOC_SECRET,
                "1234.1234",
                "",
                Some(r#"user::{"id":"12345"}"#)
            ),
            auth
        );
        assert!(!verify_channel_auth(
            DOC_KEY,
            DOC_SECRET,
            "1234.1234",
            "",
            Some(r#"user::{"id":"12345"}"#),
            &auth
        ));
        // A private channel named ":user::{...}" would collide too.
        let auth = channel_auth(
            DOC_KEY,
            DOC_SECRET,
            "1234.1234",
            r#":user::{"id":"1"}"#,
            None,
        );
        assert_eq!(
            auth,
            user_auth(DOC_KEY, DOC_SECRET, "1234.1234", r#"{"id":"1"}"#)
        );
        assert!(!verify_channel_auth(
            DOC_KEY,
            DOC_SECRET,
            "1234.1234",
            r#":user::{"id":"1"}"#,
            None,
            &auth
        ));
    }

    // ----- webhooks ---------------------------------------------------------

    #[test]
    fn webhook_signature_node_sdk_vector() {
        // The Node SDK's WebHook#isValid() accepts this signature for this body.
        let body = br#"{"time_ms":1327078148132,"events":[{"name":"channel_occupied","channel":"test_channel"}]}"#;
        let sig = "7156f5c01eb6baddac3efe41eee4e8a668cb4ed77f7389ad968400e2b27bb076";
        assert_eq!(webhook_signature(NODE_SECRET, body), sig);
        assert!(verify_webhook_signature(NODE_SECRET, body, sig));
        assert!(!verify_webhook_signature(NODE_SECRET, &body[1..], sig));
        assert!(!verify_webhook_signature("other", body, sig));
        assert!(!verify_webhook_signature(
            "",
            body,
            &webhook_signature("", body)
        ));
    }

    // ----- query handling ---------------------------------------------------

    #[test]
    fn parse_query_decodes_form_encoding() {
        assert_eq!(
            parse_query("a=1&b=x+y&c=%7B%22k%22%3A%22v%22%7D&d&&e=&f=a=b&%41=%c3%a9"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), r#"{"k":"v"}"#.into()),
                ("d".into(), "".into()),
                ("e".into(), "".into()),
                ("f".into(), "a=b".into()),
                ("A".into(), "é".into()),
            ]
        );
        // Broken escapes are kept literally; a leading '?' is tolerated.
        assert_eq!(
            parse_query("?x=%&y=%4&z=%zz&w=100%"),
            vec![
                ("x".into(), "%".into()),
                ("y".into(), "%4".into()),
                ("z".into(), "%zz".into()),
                ("w".into(), "100%".into()),
            ]
        );
        // %2B is a literal plus, + is a space.
        assert_eq!(parse_query("q=%2B+"), vec![("q".into(), "+ ".into())]);
        assert!(parse_query("").is_empty());
    }

    #[test]
    fn canonical_query_doc_rules() {
        // HTTP API reference: "given the keys auth_key: foo, Name: Something
        // else, you get auth_key=foo&name=Something else".
        assert_eq!(
            canonical_query(&[("Name", "Something else"), ("auth_key", "foo")]),
            "auth_key=foo&name=Something else"
        );
        // auth_signature is excluded; duplicates keep their order.
        assert_eq!(
            canonical_query(&[
                ("channels[]", "b"),
                ("auth_signature", "zzz"),
                ("AUTH_SIGNATURE", "zzz"),
                ("channels[]", "a"),
                ("auth_key", "k"),
            ]),
            "auth_key=k&channels[]=b&channels[]=a"
        );
    }

    #[test]
    fn percent_encoding_round_trips() {
        let v = "a b+c&d=é/ü%;,@~";
        let enc = percent_encode_component(v);
        assert_eq!(enc, "a%20b%2Bc%26d%3D%C3%A9%2F%C3%BC%25%3B%2C%40~");
        assert_eq!(
            parse_query(&format!("k={enc}")),
            vec![("k".into(), v.into())]
        );
    }

    // ----- REST signing: documented and SDK vectors ------------------------

    const DOC_BODY: &[u8] =
        br#"{"name":"foo","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#;
    const DOC_QUERY: &str = "auth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f&auth_signature=da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c";
    const DOC_TS: u64 = 1_353_088_179;

    #[test]
    fn rest_doc_worked_example() {
        // HTTP API reference (docs/channels/library_auth_reference/rest-api),
        // "Worked authentication example".
        let params = parse_query(DOC_QUERY);
        assert_eq!(
            rest_string_to_sign("POST", "/apps/3/events", &params),
            "POST\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f"
        );
        assert_eq!(
            sign_rest_request(
                "POST",
                "/apps/3/events",
                &[],
                DOC_BODY,
                DOC_KEY,
                DOC_SECRET,
                DOC_TS
            ),
            DOC_QUERY
        );
        let r = RestRequest {
            method: "POST",
            path: "/apps/3/events",
            query: DOC_QUERY,
            body: DOC_BODY,
        };
        assert_eq!(
            verify_rest_request(&r, doc_lookup, DOC_TS, DEFAULT_MAX_SKEW_SECS),
            Ok(DOC_KEY.to_owned())
        );
    }

    #[test]
    fn signature_gem_vector_with_uppercase_keys() {
        // Pusher's reference signer/verifier, the Ruby `signature` gem
        // (spec/signature_spec.rb): key "key", secret "secret", POST
        // /some/path, {query: params, go: here}, timestamp 1234 ->
        // 3b237953..., and "should cope with upcase keys (keys are lowercased
        // before signing)" with {"Query" => "params", "GO" => "here"}.
        let sig = "3b237953a5ba6619875cbb2a2d43e8da9ef5824e8a2c689f6284ac85bc1ea0db";
        let lookup = |k: &str| (k == "key").then(|| "secret".to_owned());
        assert_eq!(
            rest_string_to_sign(
                "POST",
                "/some/path",
                &[
                    ("query", "params"),
                    ("go", "here"),
                    ("auth_key", "key"),
                    ("auth_timestamp", "1234"),
                    ("auth_version", "1.0")
                ]
            ),
            "POST\n/some/path\nauth_key=key&auth_timestamp=1234&auth_version=1.0&go=here&query=params"
        );
        for query in [
            format!(
                "query=params&go=here&auth_key=key&auth_timestamp=1234&auth_version=1.0&auth_signature={sig}"
            ),
            format!(
                "Query=params&GO=here&auth_key=key&auth_timestamp=1234&auth_version=1.0&auth_signature={sig}"
            ),
            format!(
                "QUERY=params&Go=here&AUTH_KEY=key&Auth_Timestamp=1234&auth_VERSION=1.0&Auth_Signature={sig}"
            ),
        ] {
            let r = req("POST", "/some/path", b"");
            let r = RestRequest { query: &query, ..r };
            assert_eq!(
                verify_rest_request(&r, lookup, 1234, 600),
                Ok("key".to_owned()),
                "{query}"
            );
        }
        // The gem's own expectation for just {query: params}.
        assert_eq!(
            sign_rest_request(
                "POST",
                "/some/path",
                &[("query", "params")],
                b"",
                "key",
                "secret",
                1234
            ),
            "auth_key=key&auth_timestamp=1234&auth_version=1.0&query=params&auth_signature=da078fcedd72941b6c873caa40d0d6b2000ebfc700cee802b128dd20f72e74e9"
        );
    }

    /// Requests captured from the official Node SDK (npm `pusher` 5.3.4,
    /// appId "123", key "my-key", secret "my-secret", Date.now() pinned to
    /// 1700000000123) sending to a loopback HTTP server: (method, url, body).
    const NODE_REQUESTS: &[(&str, &str, &str)] = &[
        // pusher.trigger("my-channel", "my-event", { hello: "world" })
        (
            "POST",
            "/apps/123/events?auth_key=my-key&auth_timestamp=1700000000&auth_version=1.0&body_md5=d7c48e936f1d67eaf07e79f7cb899c7a&auth_signature=1cf1290a40b28f01ae88a25f719d8c6024034c5fef82f98ac7ab0d512dc91cc1",
            r#"{"name":"my-event","data":"{\"hello\":\"world\"}","channels":["my-channel"]}"#,
        ),
        // pusher.trigger(["a-channel","b-channel"], "multi", "plain string", { socket_id: "123.456" })
        (
            "POST",
            "/apps/123/events?auth_key=my-key&auth_timestamp=1700000000&auth_version=1.0&body_md5=ac3da64dd0fbb28f0d87ede6e89b86be&auth_signature=291d937d7aa9f9c0a617feef936c9c20f183a71174def9681991770420ec77e5",
            r#"{"name":"multi","data":"plain string","channels":["a-channel","b-channel"],"socket_id":"123.456"}"#,
        ),
        // pusher.get({ path: "/channels", params: { filter_by_prefix: "presence-", info: "user_count" } })
        (
            "GET",
            "/apps/123/channels?auth_key=my-key&auth_timestamp=1700000000&auth_version=1.0&filter_by_prefix=presence-&info=user_count&auth_signature=30dc6e1fb821b4f00f66711d2eb4ed5ca103c9edb702dfb58fa802a2d07675b1",
            "",
        ),
        // pusher.get({ path: "/channels/presence-room/users" })
        (
            "GET",
            "/apps/123/channels/presence-room/users?auth_key=my-key&auth_timestamp=1700000000&auth_version=1.0&auth_signature=27e5669fa6807804c67bcbd2de4bf6fb01ab2262d6600046f2559292aa680846",
            "",
        ),
        // pusher.get({ path: "/channels", params: { filter_by_prefix: "a b", info: "user_count,subscription_count" } })
        // (the SDK signs the raw value "a b"; the HTTP client sends %20)
        (
            "GET",
            "/apps/123/channels?auth_key=my-key&auth_timestamp=1700000000&auth_version=1.0&filter_by_prefix=a%20b&info=user_count,subscription_count&auth_signature=e328bc36a6a7f0482619d9e6c5293dd33ed487efcc3222c568ce426f2875a254",
            "",
        ),
        // pusher.triggerBatch([{ channel: "c1", name: "e1", data: "d1" }])
        (
            "POST",
            "/apps/123/batch_events?auth_key=my-key&auth_timestamp=1700000000&auth_version=1.0&body_md5=db96d0899e81e843e426431a7a76404e&auth_signature=f4d60de0deacef7e34a771d5b46d35f7ae55e861c9637c16aca4765718d03a2e",
            r#"{"batch":[{"channel":"c1","name":"e1","data":"d1"}]}"#,
        ),
    ];

    #[test]
    fn node_sdk_requests_verify() {
        for (method, url, body) in NODE_REQUESTS {
            let r = req(method, url, body.as_bytes());
            assert_eq!(
                verify_rest_request(&r, node_lookup, NODE_NOW, DEFAULT_MAX_SKEW_SECS),
                Ok(NODE_KEY.to_owned()),
                "{method} {url}"
            );
        }
    }

    #[test]
    fn sign_rest_request_matches_node_sdk() {
        for (method, url, body) in NODE_REQUESTS {
            let (path, query) = url.split_once('?').unwrap();
            let parsed = parse_query(query);
            let user: Vec<(&str, &str)> = parsed
                .iter()
                .filter(|(k, _)| !RESERVED_PARAMS.contains(&k.as_str()))
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            let ours = sign_rest_request(
                method,
                path,
                &user,
                body.as_bytes(),
                NODE_KEY,
                NODE_SECRET,
                NODE_NOW,
            );
            let sig = |q: &str| {
                parse_query(q)
                    .into_iter()
                    .find(|(k, _)| k == "auth_signature")
                    .map(|(_, v)| v)
            };
            assert_eq!(sig(&ours), sig(query), "{method} {url}");
            // Our own output verifies too.
            let r = RestRequest {
                method,
                path,
                query: &ours,
                body: body.as_bytes(),
            };
            assert!(verify_rest_request(&r, node_lookup, NODE_NOW, 600).is_ok());
        }
    }

    // ----- REST verification: behaviour ------------------------------------

    fn doc_request(query: &str) -> Result<String, RestAuthError> {
        let r = RestRequest {
            method: "POST",
            path: "/apps/3/events",
            query,
            body: DOC_BODY,
        };
        verify_rest_request(&r, doc_lookup, DOC_TS, DEFAULT_MAX_SKEW_SECS)
    }

    #[test]
    fn rest_order_independence() {
        let mut pairs: Vec<&str> = DOC_QUERY.split('&').collect();
        for rotation in 0..pairs.len() {
            pairs.rotate_left(1);
            let q = pairs.join("&");
            assert_eq!(
                doc_request(&q),
                Ok(DOC_KEY.to_owned()),
                "rotation {rotation}: {q}"
            );
        }
        pairs.reverse();
        assert_eq!(doc_request(&pairs.join("&")), Ok(DOC_KEY.to_owned()));
    }

    #[test]
    fn rest_percent_escapes_and_plus() {
        // Signed over the decoded value "a b"; '+' and '%20' both decode to it.
        let (_, url, _) = NODE_REQUESTS[4];
        let (path, query) = url.split_once('?').unwrap();
        for q in [
            query.to_owned(),
            query.replace("a%20b", "a+b"),
            query.replace(
                "user_count,subscription_count",
                "user_count%2Csubscription_count",
            ),
            query.replace("auth_key=my-key", "auth%5Fkey=my%2Dkey"),
        ] {
            let r = RestRequest {
                method: "GET",
                path,
                query: &q,
                body: b"",
            };
            assert_eq!(
                verify_rest_request(&r, node_lookup, NODE_NOW, 600),
                Ok(NODE_KEY.to_owned()),
                "{q}"
            );
        }
        // A literal plus (%2B) is a different value.
        let q = query.replace("a%20b", "a%2Bb");
        let r = RestRequest {
            method: "GET",
            path,
            query: &q,
            body: b"",
        };
        assert!(matches!(
            verify_rest_request(&r, node_lookup, NODE_NOW, 600),
            Err(RestAuthError::BadSignature { .. })
        ));

        // Round trip of awkward values through sign_rest_request.
        let params = [
            ("filter_by_prefix", "presence-a b+c&d=é/ü"),
            ("info", "user_count,subscription_count"),
            ("Mixed_Case", "%41"),
        ];
        let q = sign_rest_request("GET", "/apps/1/channels", &params, b"", "k", "s", 50);
        let r = RestRequest {
            method: "GET",
            path: "/apps/1/channels",
            query: &q,
            body: b"",
        };
        let lookup = |k: &str| (k == "k").then(|| "s".to_owned());
        assert_eq!(verify_rest_request(&r, lookup, 50, 600), Ok("k".to_owned()));
        let decoded = parse_query(&q);
        assert!(decoded.contains(&("filter_by_prefix".into(), "presence-a b+c&d=é/ü".into())));
        assert!(decoded.contains(&("Mixed_Case".into(), "%41".into())));
    }

    #[test]
    fn rest_timestamp_window() {
        let body = b"{}";
        let lookup = |k: &str| (k == "k").then(|| "s".to_owned());
        let at = |ts: u64, now: u64| {
            let q = sign_rest_request("POST", "/apps/1/events", &[], body, "k", "s", ts);
            let r = RestRequest {
                method: "POST",
                path: "/apps/1/events",
                query: &q,
                body,
            };
            verify_rest_request(&r, lookup, now, 600)
        };
        let ts = 1_000_000;
        assert!(at(ts, ts).is_ok());
        assert!(at(ts, ts + 599).is_ok());
        assert!(at(ts, ts - 599).is_ok());
        assert_eq!(
            at(ts, ts + 600),
            Err(RestAuthError::Expired {
                skew: -600,
                max_skew: 600
            })
        );
        assert_eq!(
            at(ts, ts - 600),
            Err(RestAuthError::Expired {
                skew: 600,
                max_skew: 600
            })
        );
        assert_eq!(
            at(0, u64::MAX),
            Err(RestAuthError::Expired {
                skew: i64::MIN,
                max_skew: 600
            })
        );
        // The documented example is long expired today.
        assert!(matches!(
            doc_request_at(DOC_QUERY, 1_700_000_000),
            Err(RestAuthError::Expired {
                skew: -346_911_821,
                ..
            })
        ));
    }

    fn doc_request_at(query: &str, now: u64) -> Result<String, RestAuthError> {
        let r = RestRequest {
            method: "POST",
            path: "/apps/3/events",
            query,
            body: DOC_BODY,
        };
        verify_rest_request(&r, doc_lookup, now, DEFAULT_MAX_SKEW_SECS)
    }

    #[test]
    fn rest_bad_timestamp_and_version() {
        for bad in [
            "",
            "abc",
            "+1353088179",
            "-5",
            "1353088179.0",
            " 1353088179",
            "99999999999999999999999",
        ] {
            let q = DOC_QUERY.replace(
                "auth_timestamp=1353088179",
                &format!("auth_timestamp={}", percent_encode_component(bad)),
            );
            assert_eq!(
                doc_request(&q),
                Err(RestAuthError::BadTimestamp(bad.to_owned())),
                "{bad:?}"
            );
        }
        let q = DOC_QUERY.replace("auth_version=1.0", "auth_version=1.1");
        assert_eq!(
            doc_request(&q),
            Err(RestAuthError::BadVersion("1.1".into()))
        );
    }

    #[test]
    fn rest_body_md5() {
        // Tampered body, query untouched.
        let r = RestRequest {
            method: "POST",
            path: "/apps/3/events",
            query: DOC_QUERY,
            body: br#"{"name":"bar","channels":["project-3"],"data":"{\"some\":\"data\"}"}"#,
        };
        assert!(matches!(
            verify_rest_request(&r, doc_lookup, DOC_TS, 600),
            Err(RestAuthError::BodyMd5Mismatch { ref got, .. }) if got == "ec365a775a4cd0599faeb73354201b6f"
        ));
        // Non-empty body without body_md5.
        let q = DOC_QUERY.replace("&body_md5=ec365a775a4cd0599faeb73354201b6f", "");
        assert_eq!(
            doc_request(&q),
            Err(RestAuthError::MissingParam("body_md5"))
        );
        // body_md5 present with an empty body must match the empty MD5.
        let r = RestRequest { body: b"", ..r };
        assert!(matches!(
            verify_rest_request(&r, doc_lookup, DOC_TS, 600),
            Err(RestAuthError::BodyMd5Mismatch { .. })
        ));
        // Uppercase hex in body_md5 is accepted as the same digest, but it is
        // still signed as sent, so the doc signature no longer matches.
        let q = DOC_QUERY.replace(
            "ec365a775a4cd0599faeb73354201b6f",
            "EC365A775A4CD0599FAEB73354201B6F",
        );
        assert!(matches!(
            doc_request(&q),
            Err(RestAuthError::BadSignature { .. })
        ));
    }

    #[test]
    fn rest_missing_duplicate_and_unknown() {
        for name in [
            "auth_key",
            "auth_timestamp",
            "auth_version",
            "auth_signature",
        ] {
            let q: Vec<&str> = DOC_QUERY
                .split('&')
                .filter(|p| !p.starts_with(&format!("{name}=")))
                .collect();
            assert_eq!(
                doc_request(&q.join("&")),
                Err(RestAuthError::MissingParam(name)),
                "{name}"
            );
        }
        assert_eq!(
            doc_request(""),
            Err(RestAuthError::MissingParam("auth_key"))
        );
        for name in RESERVED_PARAMS {
            let (_, value) = DOC_QUERY
                .split('&')
                .find_map(|p| p.split_once('=').filter(|(k, _)| *k == name))
                .unwrap();
            let q = format!("{DOC_QUERY}&{}={value}", name.to_uppercase());
            assert_eq!(
                doc_request(&q),
                Err(RestAuthError::DuplicateParam(name)),
                "{name}"
            );
        }
        let q = DOC_QUERY.replace("auth_key=278d425bdf160c739803", "auth_key=nope");
        assert_eq!(
            doc_request(&q),
            Err(RestAuthError::UnknownKey("nope".into()))
        );
        // An empty secret counts as unknown.
        let r = RestRequest {
            method: "POST",
            path: "/apps/3/events",
            query: DOC_QUERY,
            body: DOC_BODY,
        };
        assert_eq!(
            verify_rest_request(&r, |_| Some(String::new()), DOC_TS, 600),
            Err(RestAuthError::UnknownKey(DOC_KEY.into()))
        );
    }

    #[test]
    fn rest_rejects_tampering() {
        let bad_sig = |r: &RestRequest<'_>| {
            matches!(
                verify_rest_request(r, doc_lookup, DOC_TS, 600),
                Err(RestAuthError::BadSignature { .. })
            )
        };
        let base = RestRequest {
            method: "POST",
            path: "/apps/3/events",
            query: DOC_QUERY,
            body: DOC_BODY,
        };
        // Method is uppercased before signing, so lowercase still verifies.
        assert!(
            verify_rest_request(
                &RestRequest {
                    method: "post",
                    ..base
                },
                doc_lookup,
                DOC_TS,
                600
            )
            .is_ok()
        );
        assert!(bad_sig(&RestRequest {
            method: "PUT",
            ..base
        }));
        assert!(bad_sig(&RestRequest {
            path: "/apps/4/events",
            ..base
        }));
        assert!(bad_sig(&RestRequest {
            path: "/apps/3/events/",
            ..base
        }));
        assert!(bad_sig(&RestRequest {
            path: "/apps/3/batch_events",
            ..base
        }));
        // An extra unsigned parameter.
        let q = format!("{DOC_QUERY}&socket_id=1.1");
        assert!(bad_sig(&RestRequest { query: &q, ..base }));
        // A different timestamp (still within the window).
        let q = DOC_QUERY.replace("1353088179", "1353088180");
        assert!(bad_sig(&RestRequest { query: &q, ..base }));
        // Uppercase or truncated signature.
        let q = DOC_QUERY.replace(
            "da454824c97ba181a32ccc17a72625ba02771f50b50e1e7430e47a1f3f457e6c",
            "DA454824C97BA181A32CCC17A72625BA02771F50B50E1E7430E47A1F3F457E6C",
        );
        assert!(bad_sig(&RestRequest { query: &q, ..base }));
        let q = &DOC_QUERY[..DOC_QUERY.len() - 1];
        assert!(bad_sig(&RestRequest { query: q, ..base }));
        // Wrong secret.
        assert!(matches!(
            verify_rest_request(&base, |_| Some("wrong".into()), DOC_TS, 600),
            Err(RestAuthError::BadSignature { .. })
        ));
        // The error shows what the server signed.
        let err = verify_rest_request(
            &RestRequest {
                method: "PUT",
                ..base
            },
            doc_lookup,
            DOC_TS,
            600,
        )
        .unwrap_err();
        assert_eq!(
            err,
            RestAuthError::BadSignature {
                string_to_sign: "PUT\n/apps/3/events\nauth_key=278d425bdf160c739803&auth_timestamp=1353088179&auth_version=1.0&body_md5=ec365a775a4cd0599faeb73354201b6f".into()
            }
        );
        assert!(err.to_string().contains(r"PUT\n/apps/3/events\nauth_key="));
    }

    #[test]
    #[should_panic(expected = "auth_key is set by sign_rest_request")]
    fn sign_rest_request_refuses_reserved_params() {
        sign_rest_request(
            "GET",
            "/apps/1/channels",
            &[("Auth_Key", "x")],
            b"",
            "k",
            "s",
            1,
        );
    }

    #[test]
    fn error_status_mapping_and_messages() {
        let cases: Vec<(RestAuthError, u16)> = vec![
            (RestAuthError::MissingParam("auth_key"), 401),
            (RestAuthError::DuplicateParam("auth_key"), 400),
            (RestAuthError::BadTimestamp("x".into()), 401),
            (
                RestAuthError::Expired {
                    skew: -700,
                    max_skew: 600,
                },
                401,
            ),
            (RestAuthError::BadVersion("2.0".into()), 401),
            (RestAuthError::UnknownKey("k".into()), 401),
            (
                RestAuthError::BodyMd5Mismatch {
                    expected: "a".into(),
                    got: "b".into(),
                },
                401,
            ),
            (
                RestAuthError::BadSignature {
                    string_to_sign: "GET\n/\n".into(),
                },
                401,
            ),
        ];
        for (err, status) in cases {
            assert_eq!(err.status(), status, "{err}");
            assert!(!err.to_string().is_empty());
        }
        assert_eq!(
            RestAuthError::Expired {
                skew: -700,
                max_skew: 600
            }
            .to_string(),
            "auth_timestamp is -700s away from server time (allowed: less than 600s either way); check the client's clock (e.g. NTP) and sign each request just before sending it"
        );
        assert!(
            RestAuthError::MissingParam("body_md5")
                .to_string()
                .starts_with("missing query parameter `body_md5`")
        );
    }

    // ----- bearer -----------------------------------------------------------

    #[test]
    fn bearer_token() {
        assert!(verify_bearer("Bearer s3cret", "s3cret"));
        assert!(verify_bearer("bearer s3cret", "s3cret"));
        assert!(verify_bearer("BEARER   s3cret  ", "s3cret"));
        assert!(verify_bearer("Bearer\ts3cret", "s3cret"));
        assert!(!verify_bearer("Bearer s3cret", "s3cre"));
        assert!(!verify_bearer("Bearer s3cre", "s3cret"));
        assert!(!verify_bearer("Bearer S3CRET", "s3cret"));
        assert!(!verify_bearer("Basic s3cret", "s3cret"));
        assert!(!verify_bearer("Bearers3cret", "s3cret"));
        assert!(!verify_bearer("s3cret", "s3cret"));
        assert!(!verify_bearer("Bearer", ""));
        assert!(!verify_bearer("Bearer ", ""));
        assert!(!verify_bearer("", ""));
        assert!(!verify_bearer("Bearer x", ""));
        assert!(!verify_bearer("Bearer s3cret extra", "s3cret"));
    }
}
