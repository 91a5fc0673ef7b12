//! The Redis link between nodes: a non-blocking client in the loop (no threads: the server
//! forks) and its RESP codec. What crosses it, and what a node does with it, is
//! `core/cluster/`.

pub mod redis;
pub mod resp;
