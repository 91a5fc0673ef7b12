//! What the link does with each decoded reply: command replies matched to their tags, pushed
//! messages turned into events, and the replies of the link's own handshake and health checks.

use super::conn::{Expect, Which};
use super::{KEEP_CAPACITY, LinkEvent, READ_CHUNK, RedisLink, Reply};
use log::debug;

impl RedisLink {
    pub(super) fn parse(&mut self, which: Which) -> Result<(), String> {
        let max_reply = self.opts.max_reply_bytes;
        let mut start = 0;
        let result = loop {
            let c = self.conn_mut(which);
            if start == c.rbuf.len() {
                break Ok(());
            }
            match c.decoder.decode(&c.rbuf[start..]) {
                Ok(Some((reply, used))) => {
                    start += used;
                    if let Err(e) = self.dispatch(which, reply) {
                        break Err(e);
                    }
                }
                Ok(None) if c.rbuf.len() - start > max_reply => {
                    break Err(format!("reply larger than {max_reply} bytes"));
                }
                Ok(None) => break Ok(()),
                Err(e) => break Err(format!("protocol error: {e}")),
            }
        };
        let c = self.conn_mut(which);
        if result.is_ok() && start > 0 {
            c.rbuf.drain(..start);
            if c.rbuf.is_empty() && c.rbuf.capacity() > KEEP_CAPACITY {
                c.rbuf.shrink_to(READ_CHUNK);
            }
        }
        result
    }

    fn dispatch(&mut self, which: Which, reply: Reply) -> Result<(), String> {
        match which {
            Which::Cmd => self.cmd_reply(reply),
            Which::Sub => match reply {
                Reply::Array(items) => self.sub_push(items),
                other => self.sub_reply(which, other),
            },
        }
    }

    fn cmd_reply(&mut self, reply: Reply) -> Result<(), String> {
        let p = self
            .cmd
            .pending
            .pop_front()
            .ok_or_else(|| format!("unexpected reply {}", brief(&reply)))?;
        self.queued_bytes -= p.size;
        match p.expect {
            Expect::Tag(tag) => self.out.push(LinkEvent::Reply { tag, reply }),
            Expect::Publish => {
                if let Reply::Error(e) = reply {
                    self.stats.publish_errors += 1;
                    debug!("redis PUBLISH failed: {e}");
                }
            }
            other => self.control_reply(Which::Cmd, other, reply)?,
        }
        Ok(())
    }

    fn sub_push(&mut self, items: Vec<Reply>) -> Result<(), String> {
        #[derive(PartialEq)]
        enum Kind {
            Message,
            PMessage,
            Confirm,
            Pong,
        }
        let kind = match items.first() {
            Some(Reply::Bulk(k)) => match k.as_slice() {
                b"message" => Kind::Message,
                b"pmessage" => Kind::PMessage,
                b"subscribe" | b"psubscribe" | b"unsubscribe" | b"punsubscribe" => Kind::Confirm,
                b"pong" => Kind::Pong,
                _ => return Err(format!("unexpected push {}", brief(&Reply::Array(items)))),
            },
            _ => return self.sub_reply(Which::Sub, Reply::Array(items)),
        };
        match kind {
            Kind::Confirm => Ok(()),
            Kind::Pong => self.sub_reply(Which::Sub, Reply::Status(b"PONG".to_vec())),
            Kind::Message | Kind::PMessage => {
                let mut it = items
                    .into_iter()
                    .skip(if kind == Kind::PMessage { 2 } else { 1 });
                match (it.next(), it.next(), it.next()) {
                    (Some(Reply::Bulk(channel)), Some(Reply::Bulk(payload)), None) => {
                        self.stats.messages_received += 1;
                        self.out.push(LinkEvent::Message { channel, payload });
                        Ok(())
                    }
                    _ => Err("malformed message push".into()),
                }
            }
        }
    }

    fn sub_reply(&mut self, which: Which, reply: Reply) -> Result<(), String> {
        if let Reply::Error(e) = &reply {
            // SUBSCRIBE errors (ACL, NOAUTH) are not in `pending`: any
            // error here is fatal for the subscriber connection.
            if self.sub.pending.front().map(|p| p.expect) == Some(Expect::Auth) {
                return Err(format!("AUTH failed: {e}"));
            }
            return Err(format!("redis error: {e}"));
        }
        let p = self
            .sub
            .pending
            .pop_front()
            .ok_or_else(|| format!("unexpected reply {}", brief(&reply)))?;
        self.control_reply(which, p.expect, reply)
    }

    fn control_reply(&mut self, which: Which, expect: Expect, reply: Reply) -> Result<(), String> {
        if let Reply::Error(e) = &reply {
            return Err(match expect {
                Expect::Auth => format!("AUTH failed: {e}"),
                Expect::Select => format!("SELECT {} failed: {e}", self.url.db),
                _ => format!("redis error: {e}"),
            });
        }
        match expect {
            Expect::Hello => {
                self.conn_mut(which).handshaken = true;
                self.check_up();
            }
            Expect::Health => self.conn_mut(which).health_sent = None,
            _ => {}
        }
        Ok(())
    }
}

/// A reply shortened for log lines.
fn brief(reply: &Reply) -> String {
    let mut s = format!("{reply:?}");
    if s.len() > 120 {
        let mut end = 120;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}
