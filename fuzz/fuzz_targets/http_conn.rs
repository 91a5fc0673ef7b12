//! HTTP request handling end to end, through the core: one connection gets arbitrary bytes and
//! well-formed heads with any `Content-Length` (true, false, huge, wrapping), pipelined and cut
//! at any point. After every read: the connection either consumed what it could or closed —
//! handing it nothing new never produces an answer it owed (no request is left half-handled,
//! and none is handled twice); what it buffers and what it queues stay bounded.
#![no_main]

use std::time::Instant;

use ferrocast::config::Config;
use ferrocast::core::{Core, Phase};
use libfuzzer_sys::fuzz_target;

const KEY: usize = 3;

fn drain(core: &mut Core) -> usize {
    let mut dirty = Vec::new();
    core.take_dirty(&mut dirty);
    let mut taken = 0;
    if let Some(out) = core.outbox_mut(KEY) {
        while let Some(front) = out.front() {
            let n = front.len();
            taken += n;
            out.advance(n);
        }
    }
    core.flushed(KEY);
    taken
}

fuzz_target!(|data: &[u8]| {
    let cfg = Config {
        max_request_bytes: 512,
        max_body_bytes: 1024,
        outbound_queue_bytes: 2048,
        internal_token: "t".into(),
        ..Config::default()
    };
    let limit = cfg.max_request_bytes + cfg.max_body_bytes;
    let mut core = Core::new(cfg, 1, Instant::now(), 0);
    core.open(KEY, "127.0.0.1:1000".parse().unwrap());
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let mut chunk: Vec<u8> = if op & 0x80 != 0 {
            // A well-formed head with a chosen Content-Length and (part of) a body.
            let declared = match op & 3 {
                0 => (op as u64 & 0x3f).to_string(),
                1 => (u64::MAX - (op as u64 & 0x3f)).to_string(),
                2 => "9".repeat(1 + (op as usize & 0x1f)),
                _ => format!("{}, {}", op & 7, op & 3),
            };
            let path = ["/up", "/apps/app-id/events", "/internal/broadcast", "/metrics"]
                [(op as usize >> 2) & 3];
            let conn = if op & 0x40 != 0 { "close" } else { "keep-alive" };
            format!("POST {path} HTTP/1.1\r\nHost: x\r\nConnection: {conn}\r\nContent-Length: {declared}\r\n\r\n")
                .into_bytes()
        } else {
            let n = (op as usize & 0x7f).min(rest.len());
            let (bytes, tail) = rest.split_at(n);
            rest = tail;
            bytes.to_vec()
        };
        if core.phase(KEY).is_none() {
            return;
        }
        core.on_bytes(KEY, &mut chunk);
        assert!(core.buffered_bytes(KEY) <= limit, "{} bytes buffered", core.buffered_bytes(KEY));
        assert!(core.queued_bytes(KEY) <= 2048 + 1024 * 1024 + 65536);
        drain(&mut core);
        core.resume(KEY);
        drain(&mut core);
        if core.phase(KEY) == Some(Phase::Request) {
            // Nothing new: nothing may be answered (no request was left unhandled).
            core.on_bytes(KEY, &mut []);
            assert_eq!(drain(&mut core), 0, "an answer came without new input");
        }
        core.audit().expect("core invariants");
    }
});
