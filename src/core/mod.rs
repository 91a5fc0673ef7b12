//! The server's state and rules, without sockets: what the loop in `server.rs` drives.

pub mod cache;
pub mod hub;
