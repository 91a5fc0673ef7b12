//! The Pusher Channels protocol's codecs: wire messages, signatures, REST requests. What a
//! Pusher session does with them is `core/pusher.rs` and `core/rest.rs`.

pub mod auth;
pub mod protocol;
pub mod rest;
