//! FastCGI 1.0 records as a web server writes and reads them (the specification's section 3):
//! an 8-byte header (version, type, request id, content length, padding), then the content.
//! Everything here is plain bytes: the loop owns the sockets.

/// Bytes of a record header.
pub const HEADER_LEN: usize = 8;
const VERSION: u8 = 1;

pub const BEGIN_REQUEST: u8 = 1;
pub const ABORT_REQUEST: u8 = 2;
pub const END_REQUEST: u8 = 3;
pub const PARAMS: u8 = 4;
pub const STDIN: u8 = 5;
pub const STDOUT: u8 = 6;
pub const STDERR: u8 = 7;

/// The Responder role: the application answers a request, as a CGI script would.
const RESPONDER: u16 = 1;
/// `FCGI_KEEP_CONN`: the application keeps the connection open after the request.
const KEEP_CONN: u8 = 1;
/// Stream content is cut at a multiple of 8 below the 65 535-byte record limit, so only a
/// stream's last record needs padding.
const CHUNK: usize = 65_528;
/// The largest name or value a pair can announce (a 31-bit length).
const MAX_PAIR_PART: usize = 0x7fff_ffff;

/// Why bytes from the application are not FastCGI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("not FastCGI: a record of version {0}, expected 1")]
    Version(u8),
    #[error("a record for request {got}, expected {want}")]
    RequestId { got: u16, want: u16 },
    #[error("an END_REQUEST record of {0} bytes, expected 8")]
    EndRequest(usize),
}

/// A name-value pair that cannot be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("FastCGI parameter {name:?} is over 2 GiB")]
pub struct PairTooLong {
    pub name: String,
}

/// One record read from the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    pub kind: u8,
    pub request_id: u16,
    pub content: &'a [u8],
}

/// The record at the start of `buf` and the bytes it takes (padding included); `None` until
/// the whole record is there.
pub fn next_record(buf: &[u8]) -> Result<Option<(Record<'_>, usize)>, RecordError> {
    let Some(head) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    if head[0] != VERSION {
        return Err(RecordError::Version(head[0]));
    }
    let content_len = usize::from(u16::from_be_bytes([head[4], head[5]]));
    // At most 8 + 65 535 + 255: no sum here can overflow.
    let total = HEADER_LEN + content_len + usize::from(head[6]);
    if buf.len() < total {
        return Ok(None);
    }
    let record = Record {
        kind: head[1],
        request_id: u16::from_be_bytes([head[2], head[3]]),
        content: &buf[HEADER_LEN..HEADER_LEN + content_len],
    };
    Ok(Some((record, total)))
}

/// Appends one record; `content` is at most 65 535 bytes.
pub(super) fn push_record(out: &mut Vec<u8>, kind: u8, id: u16, content: &[u8]) {
    debug_assert!(content.len() <= usize::from(u16::MAX));
    let padding = (8 - content.len() % 8) % 8;
    let len = content.len() as u16;
    out.extend_from_slice(&[VERSION, kind]);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&[padding as u8, 0]);
    out.extend_from_slice(content);
    out.extend_from_slice(&[0; 8][..padding]);
}

/// Appends a stream: its content in records, then the empty record that ends it.
fn push_stream(out: &mut Vec<u8>, kind: u8, id: u16, content: &[u8]) {
    for chunk in content.chunks(CHUNK) {
        push_record(out, kind, id, chunk);
    }
    push_record(out, kind, id, &[]);
}

/// Appends a pair's length: one byte below 128, else four with the high bit set.
fn push_pair_len(out: &mut Vec<u8>, len: usize) {
    match u8::try_from(len) {
        Ok(short) if short < 0x80 => out.push(short),
        _ => out.extend_from_slice(&(len as u32 | 0x8000_0000).to_be_bytes()),
    }
}

/// The name-value pairs of a PARAMS stream.
pub fn encode_pairs<'a>(
    pairs: impl IntoIterator<Item = (&'a str, &'a [u8])>,
) -> Result<Vec<u8>, PairTooLong> {
    let mut out = Vec::new();
    for (name, value) in pairs {
        if name.len() > MAX_PAIR_PART || value.len() > MAX_PAIR_PART {
            return Err(PairTooLong { name: name.into() });
        }
        push_pair_len(&mut out, name.len());
        push_pair_len(&mut out, value.len());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(value);
    }
    Ok(out)
}

/// A whole Responder request: BEGIN_REQUEST asking to keep the connection, the PARAMS stream
/// (`pairs`, from [`encode_pairs`]) and the STDIN stream, each ended by an empty record.
pub fn encode_request(id: u16, pairs: &[u8], stdin: &[u8]) -> Vec<u8> {
    let records = 3 + pairs.len() / CHUNK + stdin.len() / CHUNK + 2;
    let mut out = Vec::with_capacity(pairs.len() + stdin.len() + records * 16);
    let mut begin = [0u8; 8];
    begin[..2].copy_from_slice(&RESPONDER.to_be_bytes());
    begin[2] = KEEP_CONN;
    push_record(&mut out, BEGIN_REQUEST, id, &begin);
    push_stream(&mut out, PARAMS, id, pairs);
    push_stream(&mut out, STDIN, id, stdin);
    out
}

/// ABORT_REQUEST: the application should stop the request and end it.
pub fn encode_abort(id: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_LEN);
    push_record(&mut out, ABORT_REQUEST, id, &[]);
    out
}

#[cfg(test)]
#[path = "record_tests.rs"]
mod tests;
