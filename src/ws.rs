//! WebSocket framing (RFC 6455) for the server side.
//!
//! Outbound frames are encoded once into a shared [`Frame`] and the same bytes are queued to every
//! recipient: server frames are never masked, so a broadcast frame is identical for all of them.
//! Inbound frames are parsed with tungstenite's header codec straight out of whatever buffer the
//! connection read into, so an idle connection holds no read buffer at all.

use std::io::Cursor;
use std::rc::Rc;

use tungstenite::protocol::frame::FrameHeader;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};

/// Encoded bytes shared by every connection they are queued to. The server is single-threaded,
/// so a plain `Rc` is enough.
pub type Frame = Rc<[u8]>;

pub const OP_CONT: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Close codes we send, in one place.
pub mod close {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL: u16 = 1002;
    pub const UNSUPPORTED: u16 = 1003;
    pub const INVALID_DATA: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const INTERNAL: u16 = 1011;
    pub const RESTART: u16 = 1012;
}

/// Writes a final, unmasked frame header for `len` payload bytes.
pub fn write_header(out: &mut Vec<u8>, opcode: u8, len: usize) {
    out.push(0x80 | opcode);
    if len < 126 {
        out.push(len as u8);
    } else if len <= u16::MAX as usize {
        out.push(126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
}

pub fn encode(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 10);
    write_header(&mut out, opcode, payload.len());
    out.extend_from_slice(payload);
    out
}

/// A final frame whose payload is compressed (permessage-deflate: RSV1 set).
pub fn encode_compressed(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = encode(opcode, payload);
    out[0] |= 0x40;
    out
}

/// The opcode and payload of one of our own final, uncompressed text or binary frames; `None`
/// for anything else (control frames, HTTP answers, compressed frames).
pub fn data_payload(frame: &[u8]) -> Option<(u8, &[u8])> {
    let first = *frame.first()?;
    let opcode = first & 0x0f;
    if first & 0xf0 != 0x80 || !matches!(opcode, OP_TEXT | OP_BINARY) {
        return None;
    }
    Some((opcode, payload(frame)))
}

pub fn text(payload: &[u8]) -> Frame {
    encode(OP_TEXT, payload).into()
}

/// A text frame of bytes that may not be UTF-8 (a line a script wrote): invalid sequences
/// become U+FFFD, since a text frame that is not UTF-8 makes every browser fail the connection.
pub fn text_lossy(payload: &[u8]) -> Frame {
    match std::str::from_utf8(payload) {
        Ok(_) => text(payload),
        Err(_) => {
            log::warn!(
                "a line of {} bytes is not UTF-8: invalid bytes sent as U+FFFD",
                payload.len()
            );
            text(String::from_utf8_lossy(payload).as_bytes())
        }
    }
}

/// The payload of a frame we encoded (skips our own header).
pub fn payload(frame: &[u8]) -> &[u8] {
    let header = match frame.get(1).map(|b| b & 0x7f) {
        Some(126) => 4,
        Some(127) => 10,
        Some(_) => 2,
        None => return &[],
    };
    frame.get(header..).unwrap_or(&[])
}

pub fn close_frame(code: u16, reason: &str) -> Frame {
    // Control frame payloads are limited to 125 bytes: 2 for the code, 123 for the reason.
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    let mut payload = Vec::with_capacity(2 + cut);
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    encode(OP_CLOSE, &payload).into()
}

/// Why an inbound stream of frames must be closed: the close code and a reason for the peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

const fn violation(code: u16, reason: &'static str) -> Violation {
    Violation { code, reason }
}

/// A complete inbound message or control frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Inbound<'a> {
    Text(&'a str),
    Binary(&'a [u8]),
    Ping(&'a [u8]),
    Pong,
    /// The peer's close code (None when it sent none) and reason.
    Close(Option<u16>, &'a str),
}

/// Reassembly state for a fragmented message. Lives in the connection only while a fragmented
/// message is in flight.
#[derive(Debug, Default)]
pub struct Reassembly {
    pub opcode: u8,
    pub data: Vec<u8>,
    /// Its first frame had RSV1 set: the data is deflated (permessage-deflate).
    pub compressed: bool,
}

/// The outcome of trying to take one frame off the front of `buf`.
pub enum Parsed {
    /// Not enough bytes yet for a whole frame.
    Incomplete,
    /// `consumed` bytes made a frame; `message` is set when it completed a message or was a
    /// control frame. Payload bytes were unmasked in place.
    Frame {
        consumed: usize,
        message: Option<MessageRef>,
    },
}

/// Where a complete message's payload is: in the input buffer (unfragmented) or in the
/// reassembly buffer.
#[derive(Debug, Clone, Copy)]
pub enum MessageRef {
    InBuf {
        opcode: u8,
        start: usize,
        end: usize,
        compressed: bool,
    },
    Reassembled {
        opcode: u8,
        compressed: bool,
    },
}

impl MessageRef {
    pub fn opcode(&self) -> u8 {
        match *self {
            MessageRef::InBuf { opcode, .. } | MessageRef::Reassembled { opcode, .. } => opcode,
        }
    }

    /// The payload as it came: in `buf` or in the reassembled message.
    pub fn raw<'a>(&self, buf: &'a [u8], reassembled: Option<&'a Reassembly>) -> &'a [u8] {
        match *self {
            MessageRef::InBuf { start, end, .. } => &buf[start..end],
            MessageRef::Reassembled { .. } => {
                reassembled.map(|r| r.data.as_slice()).unwrap_or_default()
            }
        }
    }

    /// Whether the message is deflated (permessage-deflate) and must be inflated first.
    pub fn compressed(&self) -> bool {
        match *self {
            MessageRef::InBuf { compressed, .. } | MessageRef::Reassembled { compressed, .. } => {
                compressed
            }
        }
    }
}

/// Parses one frame from the front of `buf` (client → server: must be masked).
/// `fragments` holds the partial message across calls. `max_message` bounds a message's size
/// *before* its bytes are buffered, so a peer cannot make us hold more than that.
pub fn parse_frame(
    buf: &mut [u8],
    fragments: &mut Option<Box<Reassembly>>,
    max_message: usize,
) -> Result<Parsed, Violation> {
    parse_frame_as(buf, fragments, max_message, false)
}

/// [`parse_frame`] on a connection that negotiated permessage-deflate (`deflate`): the first
/// frame of a data message may then set RSV1, which marks the message compressed.
pub fn parse_frame_as(
    buf: &mut [u8],
    fragments: &mut Option<Box<Reassembly>>,
    max_message: usize,
    deflate: bool,
) -> Result<Parsed, Violation> {
    let mut cursor = Cursor::new(&buf[..]);
    let (header, len) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(h)) => h,
        Ok(None) => return Ok(Parsed::Incomplete),
        Err(_) => return Err(violation(close::PROTOCOL, "malformed frame header")),
    };
    let header_len = cursor.position() as usize;
    let Some(mask) = header.mask else {
        return Err(violation(close::PROTOCOL, "client frames must be masked"));
    };
    let opcode = opcode_of(&header)?;
    // RSV1 only on the first frame of a data message, and only once deflate was agreed.
    let compressed = header.rsv1 && deflate && matches!(opcode, OP_TEXT | OP_BINARY);
    if header.rsv2 || header.rsv3 || (header.rsv1 && !compressed) {
        return Err(violation(close::PROTOCOL, "reserved bits set"));
    }
    check_sequence(
        opcode,
        header.is_final,
        len,
        fragments.as_deref(),
        max_message,
    )?;
    // Within `max_message` (or 125 for control frames): fits a usize.
    let len = len as usize;
    if buf.len() - header_len < len {
        return Ok(Parsed::Incomplete);
    }
    let (start, end) = (header_len, header_len + len);
    unmask(&mut buf[start..end], mask);
    let message = match (opcode, header.is_final) {
        (OP_CLOSE | OP_PING | OP_PONG, _) | (OP_TEXT | OP_BINARY, true) => {
            Some(MessageRef::InBuf {
                opcode,
                start,
                end,
                compressed,
            })
        }
        (OP_TEXT | OP_BINARY, false) => {
            let data = buf[start..end].to_vec();
            *fragments = Some(Box::new(Reassembly {
                opcode,
                data,
                compressed,
            }));
            None
        }
        (_, is_final) => match fragments.as_mut() {
            Some(f) => {
                f.data.extend_from_slice(&buf[start..end]);
                is_final.then_some(MessageRef::Reassembled {
                    opcode: f.opcode,
                    compressed: f.compressed,
                })
            }
            None => return Err(violation(close::PROTOCOL, "continuation without a message")),
        },
    };
    Ok(Parsed::Frame {
        consumed: end,
        message,
    })
}

fn opcode_of(header: &FrameHeader) -> Result<u8, Violation> {
    Ok(match header.opcode {
        OpCode::Data(Data::Continue) => OP_CONT,
        OpCode::Data(Data::Text) => OP_TEXT,
        OpCode::Data(Data::Binary) => OP_BINARY,
        OpCode::Control(Control::Close) => OP_CLOSE,
        OpCode::Control(Control::Ping) => OP_PING,
        OpCode::Control(Control::Pong) => OP_PONG,
        _ => return Err(violation(close::PROTOCOL, "reserved opcode")),
    })
}

/// Whether a frame of `len` bytes may come now: control frames are short and whole, a
/// continuation needs a message in flight and a new message needs none, and a message stays
/// within `max_message` (checked before anything is buffered).
fn check_sequence(
    opcode: u8,
    is_final: bool,
    len: u64,
    fragments: Option<&Reassembly>,
    max_message: usize,
) -> Result<(), Violation> {
    let is_control = opcode >= OP_CLOSE;
    if is_control && (len > 125 || !is_final) {
        return Err(violation(close::PROTOCOL, "invalid control frame"));
    }
    let already = match (opcode, fragments) {
        (OP_CONT, None) => {
            return Err(violation(close::PROTOCOL, "continuation without a message"));
        }
        (OP_TEXT | OP_BINARY, Some(_)) => {
            return Err(violation(
                close::PROTOCOL,
                "new message inside a fragmented one",
            ));
        }
        (OP_CONT, Some(f)) => f.data.len(),
        _ => 0,
    };
    if !is_control && u128::from(len) + already as u128 > max_message as u128 {
        return Err(violation(close::TOO_BIG, "message too big"));
    }
    Ok(())
}

/// Turns a located message into an [`Inbound`], checking UTF-8 and close payloads.
pub fn view<'a>(
    buf: &'a [u8],
    reassembled: Option<&'a Reassembly>,
    msg: MessageRef,
) -> Result<Inbound<'a>, Violation> {
    view_payload(msg.opcode(), msg.raw(buf, reassembled))
}

/// A whole message's payload (inflated, if it was compressed) as an [`Inbound`].
pub fn view_payload(opcode: u8, payload: &[u8]) -> Result<Inbound<'_>, Violation> {
    match opcode {
        OP_TEXT => std::str::from_utf8(payload)
            .map(Inbound::Text)
            .map_err(|_| violation(close::INVALID_DATA, "text message is not valid UTF-8")),
        OP_BINARY => Ok(Inbound::Binary(payload)),
        OP_PING => Ok(Inbound::Ping(payload)),
        OP_PONG => Ok(Inbound::Pong),
        _ => match payload.len() {
            0 => Ok(Inbound::Close(None, "")),
            1 => Err(violation(
                close::PROTOCOL,
                "close frame with a 1-byte payload",
            )),
            _ => {
                let code = u16::from_be_bytes([payload[0], payload[1]]);
                let reason = std::str::from_utf8(&payload[2..])
                    .map_err(|_| violation(close::INVALID_DATA, "close reason is not UTF-8"))?;
                if !valid_peer_close_code(code) {
                    return Err(violation(close::PROTOCOL, "invalid close code"));
                }
                Ok(Inbound::Close(Some(code), reason))
            }
        },
    }
}

/// RFC 6455 §7.4: codes a peer may send on the wire.
fn valid_peer_close_code(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// XORs the payload with the client's masking key.
pub fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let v = u32::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]) ^ word;
        chunk.copy_from_slice(&v.to_ne_bytes());
    }
    for (i, b) in chunks.into_remainder().iter_mut().enumerate() {
        *b ^= mask[i];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(opcode: u8, fin: bool, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut out = vec![if fin { 0x80 } else { 0 } | opcode];
        if payload.len() < 126 {
            out.push(0x80 | payload.len() as u8);
        } else {
            out.push(0x80 | 126);
            out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        out.extend_from_slice(&mask);
        out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        out
    }

    fn one(
        buf: &mut Vec<u8>,
        frags: &mut Option<Box<Reassembly>>,
    ) -> Result<Option<String>, Violation> {
        match parse_frame(buf, frags, 100)? {
            Parsed::Incomplete => Ok(None),
            Parsed::Frame { consumed, message } => {
                let out = match message {
                    Some(m) => match view(buf, frags.as_deref(), m)? {
                        Inbound::Text(t) => Some(t.to_string()),
                        other => Some(format!("{other:?}")),
                    },
                    None => Some(String::new()),
                };
                if matches!(message, Some(MessageRef::Reassembled { .. })) {
                    *frags = None;
                }
                buf.drain(..consumed);
                Ok(out)
            }
        }
    }

    #[test]
    fn text_roundtrip_and_header_sizes() {
        assert_eq!(&text(b"hi")[..], &[0x81, 2, b'h', b'i']);
        let big = text(&[b'a'; 300]);
        assert_eq!(&big[..4], &[0x81, 126, 1, 44]);
        let huge = encode(OP_BINARY, &vec![0; 70_000]);
        assert_eq!(huge[1], 127);
        assert_eq!(huge.len(), 70_000 + 10);
    }

    #[test]
    fn parses_masked_text() {
        let mut frags = None;
        let mut buf = masked(OP_TEXT, true, b"hello");
        assert_eq!(one(&mut buf, &mut frags).unwrap().as_deref(), Some("hello"));
        assert!(buf.is_empty());
    }

    #[test]
    fn incomplete_consumes_nothing() {
        let mut frags = None;
        let full = masked(OP_TEXT, true, b"hello");
        let mut buf = full[..4].to_vec();
        assert_eq!(one(&mut buf, &mut frags).unwrap(), None);
        assert_eq!(buf.len(), 4);
    }

    #[test]
    fn reassembles_fragments_with_interleaved_ping() {
        let mut frags = None;
        let mut buf = masked(OP_TEXT, false, b"hel");
        buf.extend(masked(OP_PING, true, b"p"));
        buf.extend(masked(OP_CONT, true, b"lo"));
        assert_eq!(one(&mut buf, &mut frags).unwrap().as_deref(), Some(""));
        assert_eq!(
            one(&mut buf, &mut frags).unwrap().as_deref(),
            Some("Ping([112])")
        );
        assert_eq!(one(&mut buf, &mut frags).unwrap().as_deref(), Some("hello"));
    }

    #[test]
    fn violations() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (vec![0x81, 0x02, b'h', b'i'], close::PROTOCOL), // unmasked
            (masked(OP_TEXT, true, &[0xff, 0xfe]), close::INVALID_DATA),
            (masked(OP_CONT, true, b"x"), close::PROTOCOL),
            (masked(0x3, true, b"x"), close::PROTOCOL),
            (masked(OP_PING, false, b"x"), close::PROTOCOL),
            (masked(OP_TEXT, true, &[b'a'; 101]), close::TOO_BIG),
            (masked(OP_CLOSE, true, &[0x03, 0xed]), close::PROTOCOL), // 1005 is not for the wire
        ];
        for (mut buf, code) in cases {
            let mut frags = None;
            let got = one(&mut buf, &mut frags).unwrap_err();
            assert_eq!(got.code, code, "{got:?}");
        }
    }

    #[test]
    fn size_limit_applies_across_fragments() {
        let mut frags = None;
        let mut buf = masked(OP_TEXT, false, &[b'a'; 60]);
        buf.extend(masked(OP_CONT, true, &[b'a'; 60]));
        one(&mut buf, &mut frags).unwrap();
        assert_eq!(one(&mut buf, &mut frags).unwrap_err().code, close::TOO_BIG);
    }

    #[test]
    fn close_reason_is_cut_on_char_boundary() {
        let f = close_frame(1000, &"é".repeat(100));
        assert!(f.len() <= 127);
        assert!(std::str::from_utf8(&f[4..]).is_ok());
    }
}
