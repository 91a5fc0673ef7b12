//! ferrocast: a self-hosted realtime WebSocket server.
//!
//! One `mio` poll loop on one thread (`server.rs`) multiplexes the listening socket, every
//! client, the broadcast FIFO, forked workers, the Redis link and the signals; it knows no
//! protocol. Everything the server decides is in `core/`, which never touches a socket: the
//! loop hands it bytes, lines, outcomes and the time, and applies what it asks for. The rest
//! are the codecs both use and the I/O the loop does. `docs/ARCHITECTURE.md` walks through it.

// The loop and its I/O.
pub mod fifo;
pub mod httpclient;
pub mod identity;
pub mod link;
pub mod listener;
pub mod loops;
pub mod scaling;
pub mod server;
pub mod socket;
pub mod systemd;
pub mod tls;
pub mod user_fifos;
pub mod worker;

// Worker processes' own work (never in the server's process).
pub mod app_store;

// The state and rules.
pub mod config;
pub mod core;

// Codecs and small shared helpers.
pub mod board;
pub mod broadcast_fifo;
pub mod channel_protocol;
pub mod channels;
pub mod deflate;
pub mod fastcgi;
pub mod handoff;
pub mod http;
pub mod job;
pub mod message;
pub mod proxy;
pub mod pusher;
pub mod query;
pub mod secret;
pub mod time;
pub mod ws;

/// The decoders of what handlers answer (validation verdicts, routed replies), where the
/// fuzz targets and property tests have always found them.
pub use crate::core::jobs;
