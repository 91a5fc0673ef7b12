//! The compressed copies of outgoing frames, for connections that negotiated
//! permessage-deflate: a broadcast is compressed once and the same bytes are queued to every
//! compressing subscriber. A few recent frames are remembered by identity (the `Rc`), because a
//! publication alternates between its variants (the Pusher frame naming the channel, the bare
//! payload) as it walks a channel's subscribers.

use crate::deflate::Compressor;
use crate::ws::{self, Frame};

/// How many recent frames keep their compressed copy.
const RECENT: usize = 4;

pub struct Deflated {
    compressor: Compressor,
    /// Frames with a payload under this many bytes go as they are; `None`: compression off.
    min_bytes: Option<usize>,
    /// (plain frame, what compressing subscribers get): the plain `Rc` is held, so its address
    /// cannot be reused by another frame while it is here.
    recent: [Option<(Frame, Frame)>; RECENT],
    next: usize,
    /// Messages compressed, and their bytes before and after (for `/metrics`).
    pub compressed: u64,
    pub bytes_in: u64,
    pub bytes_out: u64,
}

impl Deflated {
    pub fn new(min_bytes: Option<usize>) -> Deflated {
        Deflated {
            compressor: Compressor::default(),
            min_bytes,
            recent: Default::default(),
            next: 0,
            compressed: 0,
            bytes_in: 0,
            bytes_out: 0,
        }
    }

    pub fn set_min_bytes(&mut self, min_bytes: Option<usize>) {
        self.min_bytes = min_bytes;
        self.recent = Default::default();
    }

    /// What a compressing connection gets for `frame`: its compressed copy (made once), or the
    /// frame itself when it is a control frame, small, or does not shrink.
    pub fn variant(&mut self, frame: &Frame) -> Frame {
        let Some(min) = self.min_bytes else {
            return frame.clone();
        };
        if let Some((_, z)) = self
            .recent
            .iter()
            .flatten()
            .find(|(f, _)| Frame::ptr_eq(f, frame))
        {
            return z.clone();
        }
        let z = match ws::data_payload(frame) {
            Some((opcode, payload)) if payload.len() >= min => {
                match self.compressor.compress(payload) {
                    Some(packed) => {
                        self.compressed += 1;
                        self.bytes_in += payload.len() as u64;
                        self.bytes_out += packed.len() as u64;
                        ws::encode_compressed(opcode, &packed).into()
                    }
                    None => frame.clone(),
                }
            }
            _ => return frame.clone(),
        };
        self.recent[self.next] = Some((frame.clone(), z.clone()));
        self.next = (self.next + 1) % RECENT;
        z
    }
}
