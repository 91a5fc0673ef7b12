//! permessage-deflate (RFC 7692): the offer a client makes, and compressing and inflating
//! messages without any per-connection state.
//!
//! ferrocast always answers `server_no_context_takeover; client_no_context_takeover`: every
//! message, either way, is compressed on its own. A message the server compresses does not
//! depend on what a connection was sent before, so one compressed copy of a broadcast serves
//! every subscriber; a message a client compresses does not depend on its earlier ones, so one
//! inflater serves every connection and an idle connection keeps no compression state at all.
//!
//! The deflate work is `flate2` on its `zlib-rs` backend (pure Rust, zlib's format and speed).

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// What every compressed message ends with before its last four bytes are taken off
/// (RFC 7692 §7.2.1), and what an inflater appends back (§7.2.2).
const TAIL: [u8; 4] = [0x00, 0x00, 0xff, 0xff];

/// The answer to an accepted offer.
pub const RESPONSE: &str =
    "permessage-deflate; server_no_context_takeover; client_no_context_takeover";

/// Whether one of the `Sec-WebSocket-Extensions` offers is a `permessage-deflate` this server
/// can honour: one with known, well-formed, unrepeated parameters, and no
/// `server_max_window_bits` under 15 (our one compressed copy uses a 15-bit window). Offers
/// are tried in order; when none fits, the connection runs uncompressed.
pub fn accepts(header_values: &[&str]) -> bool {
    header_values
        .iter()
        .flat_map(|v| v.split(','))
        .any(|offer| acceptable(offer.trim()))
}

fn acceptable(offer: &str) -> bool {
    let mut parts = offer.split(';').map(str::trim);
    if parts.next() != Some("permessage-deflate") {
        return false;
    }
    let mut seen: Vec<&str> = Vec::new();
    for param in parts {
        let (name, value) = match param.split_once('=') {
            Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
            None => (param, None),
        };
        if seen.contains(&name) {
            return false;
        }
        seen.push(name);
        let ok = match (name, value) {
            ("server_no_context_takeover" | "client_no_context_takeover", None) => true,
            // The client's window: we inflate with the largest, so any is fine.
            ("client_max_window_bits", None) => true,
            ("client_max_window_bits", Some(v)) => window_bits(v).is_some(),
            ("server_max_window_bits", Some(v)) => window_bits(v) == Some(15),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    true
}

fn window_bits(v: &str) -> Option<u8> {
    v.parse::<u8>().ok().filter(|b| (8..=15).contains(b))
}

/// Compresses messages one at a time, each on its own (no context carried over).
pub struct Compressor {
    z: Compress,
}

impl Default for Compressor {
    fn default() -> Self {
        Compressor {
            z: Compress::new(Compression::new(6), false),
        }
    }
}

impl Compressor {
    /// The payload of a compressed message, or `None` when compressing does not make it
    /// smaller (then it goes as it is).
    pub fn compress(&mut self, payload: &[u8]) -> Option<Vec<u8>> {
        self.z.reset();
        // Deflate never grows data by more than a few bytes per 16 KiB block.
        let mut out = Vec::with_capacity(payload.len() + payload.len() / 64 + 64);
        let status = self
            .z
            .compress_vec(payload, &mut out, FlushCompress::Sync)
            .ok()?;
        let whole = self.z.total_in() == payload.len() as u64;
        if status != Status::Ok || !whole || !out.ends_with(&TAIL) {
            return None;
        }
        out.truncate(out.len() - TAIL.len());
        (out.len() < payload.len()).then_some(out)
    }
}

/// Why a compressed message cannot be taken.
#[derive(Debug, PartialEq, Eq)]
pub enum InflateError {
    /// It inflates past the limit: the work stopped there.
    TooBig,
    /// Not a deflate stream.
    Malformed,
}

/// Inflates messages one at a time, each on its own.
pub struct Inflater {
    z: Decompress,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater {
            z: Decompress::new(false),
        }
    }
}

impl Inflater {
    /// Inflates `payload` into `out` (cleared first), stopping with [`InflateError::TooBig`]
    /// as soon as the result passes `max` bytes: a bomb costs at most `max` bytes of work.
    pub fn inflate(
        &mut self,
        payload: &[u8],
        max: usize,
        out: &mut Vec<u8>,
    ) -> Result<(), InflateError> {
        self.z.reset(false);
        out.clear();
        let mut chunk = [0u8; 16 * 1024];
        for input in [payload, &TAIL[..]] {
            let mut taken = 0;
            loop {
                // One byte past the limit tells a message of exactly `max` from a bomb.
                let room = (max + 1 - out.len()).min(chunk.len());
                let (before_in, before_out) = (self.z.total_in(), self.z.total_out());
                let status = self
                    .z
                    .decompress(&input[taken..], &mut chunk[..room], FlushDecompress::Sync)
                    .map_err(|_| InflateError::Malformed)?;
                let used = (self.z.total_in() - before_in) as usize;
                let made = (self.z.total_out() - before_out) as usize;
                taken += used;
                out.extend_from_slice(&chunk[..made]);
                if out.len() > max {
                    return Err(InflateError::TooBig);
                }
                if status == Status::StreamEnd {
                    return Ok(());
                }
                let drained = taken == input.len() && made < room;
                if drained || (used == 0 && made == 0) {
                    if taken < input.len() {
                        return Err(InflateError::Malformed);
                    }
                    break;
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "deflate_tests.rs"]
mod tests;
