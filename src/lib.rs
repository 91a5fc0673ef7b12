//! ferrocast: a self-hosted realtime WebSocket server.
//!
//! One `mio` poll loop on one thread multiplexes the listening socket, every client, the global
//! broadcast FIFO and the signals. Read `server.rs` first: it is the loop, and every other module
//! is one of the things it drives.

pub mod api;
pub mod channel_protocol;
pub mod channels;
pub mod config;
pub mod conn;
pub mod console;
pub mod core;
pub mod fifo;
pub mod http;
pub mod httpclient;
pub mod jobs;
pub mod listener;
pub mod message;
pub mod metrics;
pub mod proxy;
pub mod pusher;
pub mod scaling;
pub mod server;
pub mod systemd;
pub mod timers;
pub mod tls;
pub mod worker;
pub mod ws;
