//! One request's answer as its records arrive: STDOUT kept up to a bound (the rest is read and
//! dropped, as a worker's output is), STDERR kept for the log, then END_REQUEST.

use super::record::{self, END_REQUEST, Record, RecordError, STDERR, STDOUT};

/// What the application said when it ended the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// The script's exit status.
    pub app_status: u32,
    /// 0 complete; 1 cannot multiplex; 2 overloaded; 3 unknown role.
    pub protocol_status: u8,
}

/// STDERR kept per request for the log; a script that writes more is cut.
const MAX_STDERR: usize = 8 * 1024;

pub struct Reply {
    id: u16,
    max_output: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    truncated: bool,
    end: Option<End>,
}

impl Reply {
    /// The answer to request `id`, keeping at most `max_output` bytes of STDOUT.
    pub fn new(id: u16, max_output: usize) -> Reply {
        Reply {
            id,
            max_output,
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated: false,
            end: None,
        }
    }

    /// Takes the complete records at the start of `buf`, up to and including END_REQUEST.
    /// Returns how many bytes it took: the caller drops them from its buffer.
    pub fn read(&mut self, buf: &[u8]) -> Result<usize, RecordError> {
        let mut used = 0;
        while self.end.is_none() {
            let Some((rec, n)) = record::next_record(&buf[used..])? else {
                break;
            };
            used += n;
            self.take(rec)?;
        }
        Ok(used)
    }

    fn take(&mut self, rec: Record<'_>) -> Result<(), RecordError> {
        if rec.request_id == 0 {
            // A management record (GET_VALUES_RESULT, UNKNOWN_TYPE): nothing we asked for.
            return Ok(());
        }
        if rec.request_id != self.id {
            return Err(RecordError::RequestId {
                got: rec.request_id,
                want: self.id,
            });
        }
        match rec.kind {
            STDOUT => {
                let room = self.max_output.saturating_sub(self.stdout.len());
                let kept = rec.content.len().min(room);
                self.stdout.extend_from_slice(&rec.content[..kept]);
                self.truncated |= kept < rec.content.len();
            }
            STDERR => {
                let room = MAX_STDERR.saturating_sub(self.stderr.len());
                let kept = rec.content.len().min(room);
                self.stderr.extend_from_slice(&rec.content[..kept]);
            }
            END_REQUEST => {
                let body: [u8; 8] = rec
                    .content
                    .get(..8)
                    .and_then(|b| b.try_into().ok())
                    .ok_or(RecordError::EndRequest(rec.content.len()))?;
                self.end = Some(End {
                    app_status: u32::from_be_bytes([body[0], body[1], body[2], body[3]]),
                    protocol_status: body[4],
                });
            }
            // Streams a Responder does not send (DATA) and types from later versions.
            _ => {}
        }
        Ok(())
    }

    /// The END_REQUEST record, once it came.
    pub fn end(&self) -> Option<End> {
        self.end
    }

    /// What the script wrote to STDERR (bounded), for the log.
    pub fn stderr(&self) -> &[u8] {
        &self.stderr
    }

    /// STDOUT, and whether some of it was dropped past the bound.
    pub fn into_output(self) -> (Vec<u8>, bool) {
        (self.stdout, self.truncated)
    }
}

#[cfg(test)]
mod tests {
    use super::super::record::{BEGIN_REQUEST, push_record};
    use super::*;

    /// What php-fpm sends for `<?php echo "u1\n"; error_log("e");` (records of request `id`).
    fn answer(id: u16, stdout: &[u8], end: [u8; 8]) -> Vec<u8> {
        let mut b = Vec::new();
        push_record(&mut b, STDERR, id, b"PHP message: e");
        push_record(&mut b, STDOUT, id, &stdout[..stdout.len() / 2]);
        push_record(&mut b, STDOUT, id, &stdout[stdout.len() / 2..]);
        push_record(&mut b, STDOUT, id, b"");
        push_record(&mut b, END_REQUEST, id, &end);
        b
    }

    #[test]
    fn records_split_anywhere_give_the_same_reply() {
        let stdout = b"Content-type: text/html\r\n\r\nu1\n";
        let bytes = answer(1, stdout, [0, 0, 0, 7, 0, 0, 0, 0]);
        for cut in 0..=bytes.len() {
            let mut reply = Reply::new(1, 1 << 20);
            let mut buf = bytes[..cut].to_vec();
            let used = reply.read(&buf).expect("valid");
            buf.drain(..used);
            buf.extend_from_slice(&bytes[cut..]);
            let used = reply.read(&buf).expect("valid");
            assert_eq!(used, buf.len());
            let end = End {
                app_status: 7,
                protocol_status: 0,
            };
            assert_eq!(reply.end(), Some(end));
            assert_eq!(reply.stderr(), b"PHP message: e");
            assert_eq!(reply.into_output(), (stdout.to_vec(), false));
        }
    }

    #[test]
    fn output_past_the_bound_is_dropped_and_marked() {
        let mut reply = Reply::new(1, 10);
        let bytes = answer(1, &[b'x'; 100], [0; 8]);
        assert_eq!(reply.read(&bytes), Ok(bytes.len()));
        assert_eq!(reply.into_output(), (vec![b'x'; 10], true));
    }

    #[test]
    fn nothing_is_taken_after_the_end_and_other_requests_are_errors() {
        let mut bytes = answer(1, b"A: b\r\n\r\n", [0; 8]);
        let end_at = bytes.len();
        push_record(&mut bytes, STDOUT, 1, b"late");
        let mut reply = Reply::new(1, 100);
        assert_eq!(reply.read(&bytes), Ok(end_at));
        let mut other = Vec::new();
        push_record(&mut other, STDOUT, 0, b"management records are ignored");
        push_record(&mut other, STDOUT, 2, b"x");
        let mut reply = Reply::new(1, 100);
        assert_eq!(
            reply.read(&other),
            Err(RecordError::RequestId { got: 2, want: 1 })
        );
        let mut short = Vec::new();
        push_record(&mut short, END_REQUEST, 1, &[0; 4]);
        assert_eq!(
            Reply::new(1, 100).read(&short),
            Err(RecordError::EndRequest(4))
        );
        let mut unknown = Vec::new();
        push_record(&mut unknown, BEGIN_REQUEST, 1, &[0; 8]);
        assert_eq!(Reply::new(1, 100).read(&unknown), Ok(unknown.len()));
    }
}
