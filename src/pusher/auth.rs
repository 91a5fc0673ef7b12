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
#[path = "auth_tests.rs"]
mod tests;
