//! A small RESP2 codec for the Redis link.
//!
//! * Encoding: commands are written as arrays of bulk strings straight into the
//!   caller's output buffer (no intermediate allocation).
//! * Decoding: [`Decoder`] is *resumable*. It first scans the buffered bytes
//!   without allocating anything; only when a whole reply is present does it
//!   build the [`Reply`] value. A partial reply keeps the scan position, so
//!   bytes already checked are not scanned again when more arrive (headers of
//!   an unfinished bulk string are re-read, which is a few bytes).
//! * Every size taken from the wire is checked against [`Limits`] before it is
//!   used: bulk length, element count of a whole reply, nesting depth and line
//!   length. A reply that breaks a limit is a [`RespError`], never an
//!   allocation.

use std::fmt;

/// One decoded RESP2 reply.
#[derive(Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`
    Status(Vec<u8>),
    /// `-ERR ...` (lossily converted to UTF-8).
    Error(String),
    /// `:42`
    Integer(i64),
    /// `$3\r\nfoo`
    Bulk(Vec<u8>),
    /// `$-1` or `*-1`
    Nil,
    /// `*2\r\n...`
    Array(Vec<Reply>),
}

impl Reply {
    /// True for `-ERR ...` replies.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// The bytes of a status or bulk reply.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Reply::Status(b) | Reply::Bulk(b) => Some(b),
            _ => None,
        }
    }

    /// The value of an integer reply.
    pub fn as_integer(&self) -> Option<i64> {
        match self {
            Reply::Integer(i) => Some(*i),
            _ => None,
        }
    }
}

impl fmt::Debug for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reply::Status(s) => write!(f, "Status({:?})", String::from_utf8_lossy(s)),
            Reply::Error(e) => write!(f, "Error({e:?})"),
            Reply::Integer(i) => write!(f, "Integer({i})"),
            Reply::Bulk(b) if b.len() > 256 => write!(f, "Bulk({} bytes)", b.len()),
            Reply::Bulk(b) => write!(f, "Bulk({:?})", String::from_utf8_lossy(b)),
            Reply::Nil => f.write_str("Nil"),
            Reply::Array(items) => f.debug_tuple("Array").field(items).finish(),
        }
    }
}

/// Bounds applied to everything read from the network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted bulk string (Redis' own `proto-max-bulk-len` default is 512 MiB).
    pub max_bulk: usize,
    /// Most values (at any depth) in one reply.
    pub max_elements: usize,
    /// Deepest nesting of arrays.
    pub max_depth: usize,
    /// Longest `+`, `-`, `:`, `$`, `*` line (without CRLF).
    pub max_line: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_bulk: 64 << 20,
            max_elements: 1 << 20,
            max_depth: 32,
            max_line: 64 << 10,
        }
    }
}

/// A reply that is not valid RESP2 or breaks a [`Limits`] bound.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RespError {
    #[error("unknown RESP type byte 0x{0:02x}")]
    BadType(u8),
    #[error("malformed RESP line")]
    BadLine,
    #[error("invalid RESP integer")]
    BadInteger,
    #[error("invalid RESP length {0}")]
    BadLength(i64),
    #[error("bulk string of {0} bytes exceeds the limit of {1}")]
    BulkTooLarge(i64, usize),
    #[error("RESP line longer than {0} bytes")]
    LineTooLong(usize),
    #[error("reply has more than {0} elements")]
    TooManyElements(usize),
    #[error("reply nested deeper than {0} arrays")]
    TooDeep(usize),
    #[error("bulk string not terminated by CRLF")]
    BadTerminator,
}

/// Resumable RESP2 decoder. Feed it the buffered bytes that start at the
/// beginning of the next reply (the same start each call, with more bytes
/// appended, until it returns a reply).
#[derive(Debug)]
pub struct Decoder {
    limits: Limits,
    /// Offset (from the frame start) of the next value header to scan.
    pos: usize,
    /// Remaining element counts of the arrays being scanned.
    stack: Vec<usize>,
    /// Values counted so far in this frame.
    elements: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder::new(Limits::default())
    }
}

impl Decoder {
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            limits,
            pos: 0,
            stack: Vec::new(),
            elements: 0,
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Forget any partially scanned reply (after the connection is dropped).
    pub fn reset(&mut self) {
        self.pos = 0;
        self.stack.clear();
        self.elements = 0;
    }

    /// Decode one reply from the start of `buf`.
    ///
    /// `Ok(None)`: incomplete, call again with more bytes (same frame start).
    /// `Ok(Some((reply, used)))`: `used` bytes form the reply; the decoder is
    /// ready for the next frame, which starts at `buf[used..]`.
    /// `Err(_)`: the stream is not valid RESP2 (or breaks a limit); it cannot
    /// be resynchronised, the connection should be dropped.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
        let len = match self.scan(buf) {
            Ok(Some(len)) => len,
            Ok(None) => return Ok(None),
            Err(e) => {
                self.reset();
                return Err(e);
            }
        };
        self.reset();
        let mut pos = 0;
        let reply = build(&buf[..len], &mut pos)?;
        debug_assert_eq!(pos, len);
        Ok(Some((reply, len)))
    }

    /// Check the frame without allocating. `Ok(Some(len))` when complete.
    fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, RespError> {
        loop {
            let Some((line, next)) = read_line(buf, self.pos, self.limits.max_line)? else {
                return Ok(None);
            };
            match line[0] {
                b'+' | b'-' => self.pos = next,
                b':' => {
                    parse_int(&line[1..])?;
                    self.pos = next;
                }
                b'$' => {
                    let n = parse_int(&line[1..])?;
                    if n == -1 {
                        self.pos = next;
                    } else if n < 0 {
                        return Err(RespError::BadLength(n));
                    } else if n as u64 > self.limits.max_bulk as u64 {
                        return Err(RespError::BulkTooLarge(n, self.limits.max_bulk));
                    } else {
                        let n = n as usize;
                        let end = next + n + 2;
                        if buf.len() < end {
                            return Ok(None);
                        }
                        if &buf[next + n..end] != b"\r\n" {
                            return Err(RespError::BadTerminator);
                        }
                        self.pos = end;
                    }
                }
                b'*' => {
                    let n = parse_int(&line[1..])?;
                    if n < -1 {
                        return Err(RespError::BadLength(n));
                    }
                    self.pos = next;
                    if n > 0 {
                        if n as u64 > (self.limits.max_elements - self.elements) as u64 {
                            return Err(RespError::TooManyElements(self.limits.max_elements));
                        }
                        if self.stack.len() >= self.limits.max_depth {
                            return Err(RespError::TooDeep(self.limits.max_depth));
                        }
                        self.elements += n as usize;
                        self.stack.push(n as usize);
                        continue;
                    }
                }
                other => return Err(RespError::BadType(other)),
            }
            // One value complete: close every array it completes.
            loop {
                match self.stack.last_mut() {
                    None => return Ok(Some(self.pos)),
                    Some(top) => {
                        *top -= 1;
                        if *top == 0 {
                            self.stack.pop();
                        } else {
                            break;
                        }
                    }
                }
            }
        }
    }
}

/// Decode one reply with default limits (stateless convenience for tests and
/// one-off use).
pub fn decode(buf: &[u8]) -> Result<Option<(Reply, usize)>, RespError> {
    Decoder::default().decode(buf)
}

/// Find the line starting at `start`. Returns the line without CRLF (never
/// empty) and the offset after the CRLF.
fn read_line(
    buf: &[u8],
    start: usize,
    max_line: usize,
) -> Result<Option<(&[u8], usize)>, RespError> {
    let rest = buf.get(start..).unwrap_or(&[]);
    let window = &rest[..rest.len().min(max_line.saturating_add(2))];
    match window.iter().position(|&b| b == b'\n') {
        Some(i) => {
            if i < 2 || rest[i - 1] != b'\r' {
                return Err(RespError::BadLine);
            }
            Ok(Some((&rest[..i - 1], start + i + 1)))
        }
        None if rest.len() > max_line.saturating_add(1) => Err(RespError::LineTooLong(max_line)),
        None => Ok(None),
    }
}

fn parse_int(digits: &[u8]) -> Result<i64, RespError> {
    let (neg, digits) = match digits.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, digits),
    };
    if digits.is_empty() {
        return Err(RespError::BadInteger);
    }
    let mut v: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(RespError::BadInteger);
        }
        let d = i64::from(d - b'0');
        v = v
            .checked_mul(10)
            .and_then(|v| {
                if neg {
                    v.checked_sub(d)
                } else {
                    v.checked_add(d)
                }
            })
            .ok_or(RespError::BadInteger)?;
    }
    Ok(v)
}

/// Build the value of a frame that [`Decoder::scan`] accepted. Still checks
/// everything (returns errors, never panics) but no limits are needed here.
fn build(buf: &[u8], pos: &mut usize) -> Result<Reply, RespError> {
    let (line, next) = read_line(buf, *pos, usize::MAX)?.ok_or(RespError::BadLine)?;
    *pos = next;
    let body = &line[1..];
    Ok(match line[0] {
        b'+' => Reply::Status(body.to_vec()),
        b'-' => Reply::Error(String::from_utf8_lossy(body).into_owned()),
        b':' => Reply::Integer(parse_int(body)?),
        b'$' => {
            let n = parse_int(body)?;
            if n == -1 {
                return Ok(Reply::Nil);
            }
            let n = usize::try_from(n).map_err(|_| RespError::BadLength(n))?;
            let data = buf.get(next..next + n).ok_or(RespError::BadTerminator)?;
            *pos = next + n + 2;
            Reply::Bulk(data.to_vec())
        }
        b'*' => {
            let n = parse_int(body)?;
            if n == -1 {
                return Ok(Reply::Nil);
            }
            let n = usize::try_from(n).map_err(|_| RespError::BadLength(n))?;
            // Each element takes at least 3 bytes ("+\r\n"), so the scanned
            // frame bounds the allocation.
            let mut items = Vec::with_capacity(n.min(buf.len() / 3));
            for _ in 0..n {
                items.push(build(buf, pos)?);
            }
            Reply::Array(items)
        }
        other => return Err(RespError::BadType(other)),
    })
}

fn push_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut tmp = [0u8; 20];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&tmp[i..]);
}

fn decimal_len(mut n: u64) -> usize {
    let mut len = 1;
    while n >= 10 {
        n /= 10;
        len += 1;
    }
    len
}

/// Append `args` as a RESP2 command (array of bulk strings) to `out`.
pub fn encode_command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.reserve(encoded_command_len(args));
    out.push(b'*');
    push_decimal(out, args.len() as u64);
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        push_decimal(out, arg.len() as u64);
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

/// Number of bytes [`encode_command`] appends for `args`.
pub fn encoded_command_len(args: &[&[u8]]) -> usize {
    let mut n = 3 + decimal_len(args.len() as u64);
    for arg in args {
        n += 5 + decimal_len(arg.len() as u64) + arg.len();
    }
    n
}

/// Append `reply` in RESP2 (used by tests and fake servers). Nil is written as
/// a nil bulk string. Error text must not contain CR or LF.
pub fn encode_reply(out: &mut Vec<u8>, reply: &Reply) {
    match reply {
        Reply::Status(s) => {
            out.push(b'+');
            out.extend_from_slice(s);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Error(e) => {
            out.push(b'-');
            out.extend_from_slice(e.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        Reply::Integer(i) => {
            out.push(b':');
            if *i < 0 {
                out.push(b'-');
            }
            push_decimal(out, i.unsigned_abs());
            out.extend_from_slice(b"\r\n");
        }
        Reply::Bulk(b) => {
            out.push(b'$');
            push_decimal(out, b.len() as u64);
            out.extend_from_slice(b"\r\n");
            out.extend_from_slice(b);
            out.extend_from_slice(b"\r\n");
        }
        Reply::Nil => out.extend_from_slice(b"$-1\r\n"),
        Reply::Array(items) => {
            out.push(b'*');
            push_decimal(out, items.len() as u64);
            out.extend_from_slice(b"\r\n");
            for item in items {
                encode_reply(out, item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &str) -> Reply {
        Reply::Bulk(s.as_bytes().to_vec())
    }

    fn sample() -> Vec<(Vec<u8>, Reply)> {
        vec![
            (b"+OK\r\n".to_vec(), Reply::Status(b"OK".to_vec())),
            (b"+\r\n".to_vec(), Reply::Status(Vec::new())),
            (
                b"-ERR unknown command\r\n".to_vec(),
                Reply::Error("ERR unknown command".into()),
            ),
            (b":0\r\n".to_vec(), Reply::Integer(0)),
            (b":-42\r\n".to_vec(), Reply::Integer(-42)),
            (
                b":9223372036854775807\r\n".to_vec(),
                Reply::Integer(i64::MAX),
            ),
            (
                b":-9223372036854775808\r\n".to_vec(),
                Reply::Integer(i64::MIN),
            ),
            (b"$3\r\nfoo\r\n".to_vec(), bulk("foo")),
            (b"$0\r\n\r\n".to_vec(), bulk("")),
            (b"$4\r\na\r\nb\r\n".to_vec(), bulk("a\r\nb")),
            (b"$-1\r\n".to_vec(), Reply::Nil),
            (b"*-1\r\n".to_vec(), Reply::Nil),
            (b"*0\r\n".to_vec(), Reply::Array(vec![])),
            (
                b"*3\r\n$7\r\nmessage\r\n$2\r\nch\r\n$5\r\nhello\r\n".to_vec(),
                Reply::Array(vec![bulk("message"), bulk("ch"), bulk("hello")]),
            ),
            (
                b"*4\r\n*2\r\n:1\r\n*0\r\n$-1\r\n*1\r\n*1\r\n+x\r\n-E e\r\n".to_vec(),
                Reply::Array(vec![
                    Reply::Array(vec![Reply::Integer(1), Reply::Array(vec![])]),
                    Reply::Nil,
                    Reply::Array(vec![Reply::Array(vec![Reply::Status(b"x".to_vec())])]),
                    Reply::Error("E e".into()),
                ]),
            ),
        ]
    }

    #[test]
    fn decodes_all_types() {
        for (wire, expected) in sample() {
            let got = decode(&wire).expect("valid").expect("complete");
            assert_eq!(
                got,
                (expected, wire.len()),
                "{:?}",
                String::from_utf8_lossy(&wire)
            );
        }
    }

    #[test]
    fn roundtrip_encode_reply() {
        for (wire, expected) in sample() {
            let mut out = Vec::new();
            encode_reply(&mut out, &expected);
            // Nil arrays are re-encoded as nil bulks; everything else is identical.
            if wire != b"*-1\r\n" {
                assert_eq!(out, wire);
            }
            assert_eq!(decode(&out).unwrap().unwrap().0, expected);
        }
    }

    #[test]
    fn every_split_point_resumes() {
        let mut stream = Vec::new();
        let mut expected = Vec::new();
        for (wire, reply) in sample() {
            stream.extend_from_slice(&wire);
            expected.push(reply);
        }
        // Feed byte counts 1..=len, the way a socket would; one decoder for
        // the whole stream (resumable state), and also a fresh one per call.
        for fresh in [false, true] {
            let mut dec = Decoder::default();
            let mut got = Vec::new();
            let mut start = 0;
            for end in 1..=stream.len() {
                if fresh {
                    dec = Decoder::default();
                }
                while let Some((reply, used)) = dec.decode(&stream[start..end]).unwrap() {
                    got.push(reply);
                    start += used;
                }
            }
            assert_eq!(start, stream.len());
            assert_eq!(got, expected);
        }
    }

    #[test]
    fn split_at_each_point_of_one_frame() {
        for (wire, expected) in sample() {
            for split in 0..wire.len() {
                let mut dec = Decoder::default();
                assert_eq!(dec.decode(&wire[..split]).unwrap(), None, "split {split}");
                assert_eq!(
                    dec.decode(&wire).unwrap(),
                    Some((expected.clone(), wire.len()))
                );
            }
        }
    }

    #[test]
    fn pipelined_frames_decode_in_order() {
        let wire = b"+OK\r\n:1\r\n$1\r\nx\r\n";
        let mut dec = Decoder::default();
        let (a, n1) = dec.decode(wire).unwrap().unwrap();
        let (b, n2) = dec.decode(&wire[n1..]).unwrap().unwrap();
        let (c, n3) = dec.decode(&wire[n1 + n2..]).unwrap().unwrap();
        assert_eq!(
            (a, b, c),
            (Reply::Status(b"OK".to_vec()), Reply::Integer(1), bulk("x"))
        );
        assert_eq!(n1 + n2 + n3, wire.len());
    }

    #[test]
    fn oversize_bulk_rejected_from_header_alone() {
        let limits = Limits {
            max_bulk: 1024,
            ..Limits::default()
        };
        let mut dec = Decoder::new(limits);
        assert_eq!(
            dec.decode(b"$1025\r\n"),
            Err(RespError::BulkTooLarge(1025, 1024))
        );
        // The default limit (64 MiB) rejects a 10 GB claim before any byte of it.
        assert!(matches!(
            decode(b"$10000000000\r\n"),
            Err(RespError::BulkTooLarge(..))
        ));
        assert!(matches!(
            decode(b"*1\r\n$99999999999999\r\n"),
            Err(RespError::BulkTooLarge(..))
        ));
        // Exactly at the limit is fine once complete.
        let mut wire = b"$1024\r\n".to_vec();
        assert_eq!(dec.decode(&wire), Ok(None));
        wire.extend(std::iter::repeat_n(b'a', 1024));
        wire.extend_from_slice(b"\r\n");
        assert_eq!(dec.decode(&wire).unwrap().unwrap().1, wire.len());
    }

    #[test]
    fn huge_array_claims_do_not_allocate() {
        // 2^62 elements claimed: rejected by the element limit, no Vec made.
        assert!(matches!(
            decode(b"*4611686018427387904\r\n"),
            Err(RespError::TooManyElements(_))
        ));
        // Within the limit but not present: incomplete, nothing allocated.
        assert_eq!(decode(b"*1000000\r\n:1\r\n"), Ok(None));
        let limits = Limits {
            max_elements: 4,
            ..Limits::default()
        };
        assert!(matches!(
            Decoder::new(limits).decode(b"*2\r\n*2\r\n:1\r\n:2\r\n*2\r\n"),
            Err(RespError::TooManyElements(4))
        ));
    }

    #[test]
    fn depth_limit() {
        let mut wire = Vec::new();
        for _ in 0..40 {
            wire.extend_from_slice(b"*1\r\n");
        }
        wire.extend_from_slice(b":1\r\n");
        assert_eq!(decode(&wire), Err(RespError::TooDeep(32)));
        let limits = Limits {
            max_depth: 64,
            ..Limits::default()
        };
        assert!(Decoder::new(limits).decode(&wire).unwrap().is_some());
    }

    #[test]
    fn long_line_rejected() {
        let limits = Limits {
            max_line: 16,
            ..Limits::default()
        };
        let mut dec = Decoder::new(limits);
        assert_eq!(dec.decode(b"+0123456789abcdef"), Ok(None));
        assert_eq!(
            dec.decode(b"+0123456789abcdefXY"),
            Err(RespError::LineTooLong(16))
        );
        // A 16-byte line (with type byte) plus CRLF is accepted.
        let mut dec = Decoder::new(limits);
        assert!(dec.decode(b"+0123456789abcde\r\n").unwrap().is_some());
    }

    #[test]
    fn malformed_input_is_an_error() {
        let cases: &[&[u8]] = &[
            b"garbage\r\n",
            b"\r\n",
            b"+OK\n",
            b"\n",
            b":12a\r\n",
            b":\r\n",
            b":-\r\n",
            b":99999999999999999999\r\n",
            b"$-2\r\n",
            b"*-5\r\n",
            b"$3\r\nfooXY",
            b"$x\r\n",
            b"%2\r\n",
            b"*2\r\n:1\r\n?\r\n",
        ];
        for case in cases {
            assert!(
                decode(case).is_err(),
                "{:?} should fail",
                String::from_utf8_lossy(case)
            );
        }
    }

    #[test]
    fn decoder_resets_after_error() {
        let mut dec = Decoder::default();
        assert_eq!(dec.decode(b"*2\r\n:1\r\n"), Ok(None));
        assert!(dec.decode(b"*2\r\n:1\r\n!\r\n").is_err());
        assert_eq!(dec.decode(b":5\r\n").unwrap().unwrap().0, Reply::Integer(5));
    }

    #[test]
    fn encodes_commands() {
        let args: &[&[u8]] = &[b"SET", b"key", b"", b"a\r\nb"];
        let mut out = Vec::new();
        encode_command(&mut out, args);
        assert_eq!(
            out,
            b"*4\r\n$3\r\nSET\r\n$3\r\nkey\r\n$0\r\n\r\n$4\r\na\r\nb\r\n".to_vec()
        );
        assert_eq!(encoded_command_len(args), out.len());
        let big = vec![b'x'; 12345];
        let args: &[&[u8]] = &[b"PUBLISH", b"c", &big];
        let mut out = Vec::new();
        encode_command(&mut out, args);
        assert_eq!(encoded_command_len(args), out.len());
        // A command is a valid RESP array of bulks.
        let (reply, used) = decode(&out).unwrap().unwrap();
        assert_eq!(used, out.len());
        assert_eq!(
            reply,
            Reply::Array(vec![bulk("PUBLISH"), bulk("c"), Reply::Bulk(big)])
        );
    }

    #[test]
    fn decimal_helpers() {
        for n in [0u64, 9, 10, 99, 100, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string().into_bytes());
            assert_eq!(decimal_len(n), out.len());
        }
    }
}
