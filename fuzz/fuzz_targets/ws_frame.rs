//! Inbound WebSocket frames: `ws::parse_frame` + `ws::view`, driven the way the server drives
//! them (a buffer that grows by whatever the socket returned, frames taken off its front,
//! fragments reassembled across calls). Properties: the outcome does not depend on how the bytes
//! were split into reads, a message is never bigger than `max_message`, and consumed ranges stay
//! inside the buffer.
#![no_main]

use ferrocast::ws::{self, Inbound, MessageRef, Parsed, Reassembly};
use libfuzzer_sys::fuzz_target;

#[derive(Debug, PartialEq, Eq)]
enum Out {
    Msg(String),
    Partial,
    Violation(u16),
}

fn run(stream: &[u8], chunk: usize, max: usize) -> Vec<Out> {
    let mut out = Vec::new();
    let mut buf: Vec<u8> = Vec::new();
    let mut frags: Option<Box<Reassembly>> = None;
    let mut fed = 0;
    while fed < stream.len() {
        let n = chunk.min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        loop {
            let len_before = buf.len();
            match ws::parse_frame(&mut buf, &mut frags, max) {
                Ok(Parsed::Incomplete) => break,
                Err(v) => {
                    out.push(Out::Violation(v.code));
                    return out;
                }
                Ok(Parsed::Frame { consumed, message }) => {
                    assert!(
                        consumed > 0 && consumed <= len_before,
                        "consumed {consumed} of {len_before}"
                    );
                    match message {
                        None => out.push(Out::Partial),
                        Some(m) => {
                            if let MessageRef::InBuf { start, end, .. } = m {
                                assert!(start <= end && end <= consumed);
                            }
                            if let Some(f) = &frags {
                                assert!(
                                    f.data.len() <= max,
                                    "reassembled {} > {max}",
                                    f.data.len()
                                );
                            }
                            match ws::view(&buf, frags.as_deref(), m) {
                                Ok(Inbound::Text(t)) => {
                                    assert!(t.len() <= max, "text of {} bytes > {max}", t.len());
                                    out.push(Out::Msg(format!("T{t}")))
                                }
                                Ok(other) => out.push(Out::Msg(format!("{other:?}"))),
                                Err(v) => {
                                    out.push(Out::Violation(v.code));
                                    return out;
                                }
                            }
                            if matches!(m, MessageRef::Reassembled { .. }) {
                                frags = None;
                            }
                        }
                    }
                    buf.drain(..consumed);
                }
            }
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&sel, stream)) = data.split_first() else {
        return;
    };
    let max = match sel >> 4 {
        0 => 10_000,
        n => (n as usize) * 7,
    };
    let chunk = usize::from(sel & 0x0f) + 1;
    let whole = run(stream, stream.len().max(1), max);
    let split = run(stream, chunk, max);
    assert_eq!(
        whole, split,
        "outcome depends on read boundaries (chunk {chunk})"
    );
});
