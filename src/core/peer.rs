//! One connection while a protocol handler works on it.

use super::conns::{Conn, Lists};
use super::pending::Closing;
use crate::ws::Frame;

/// One connection while a protocol handler works on it: its state, its output, and what it
/// asked to happen to itself.
pub struct Peer<'a> {
    pub key: usize,
    pub conn: &'a mut Conn,
    pub(super) out: &'a mut Lists,
    /// Set by [`Peer::close`]: applied by the core when the handler returns.
    pub(super) closing: Option<Closing>,
}

impl<'a> Peer<'a> {
    pub(super) fn new(key: usize, conn: &'a mut Conn, out: &'a mut Lists) -> Peer<'a> {
        Peer {
            key,
            conn,
            out,
            closing: None,
        }
    }

    /// Queues a text message to this connection, within its output bound.
    pub fn reply(&mut self, text: &str) {
        self.send(crate::ws::text(text.as_bytes()));
    }

    pub fn send(&mut self, frame: Frame) {
        self.out.send(self.key, self.conn, &frame);
    }

    /// Asks for a close frame with `code` (the core applies it when the handler returns).
    pub fn close(&mut self, code: u16, reason: &str) {
        self.closing
            .get_or_insert(Closing::Frame(code, reason.to_string()));
    }

    pub fn socket_id(&self, process: u32) -> String {
        self.conn.socket_id(process)
    }
}
