//! What a worker hands back: the in-process result framing (`worker::decode_result`, fed in
//! pieces as reads deliver it) and the decoding of a handler's exit (or a FastCGI answer's
//! status) and output into a session verdict (`jobs::validation_verdict`) and route replies
//! (`jobs::route_replies`).
#![no_main]

use ferrocast::jobs::{self, MAX_USER_ID};
use ferrocast::worker::{self, FrameError, Outcome};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&[kind, c0, c1, lim], rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    framing(rest, usize::from(lim) << (c0 % 16));
    let code = i32::from(i16::from_le_bytes([c0, c1]));
    let stdout = rest.to_vec();
    let truncated = kind & 0x80 != 0;
    let outcome = match kind % 5 {
        4 => Outcome::Answered {
            status: 100 + (c0 as u16 % 5) * 100 + u16::from(c1 % 4),
            body: stdout,
            truncated,
        },
        0 => Outcome::Exited {
            code: if kind & 0x40 != 0 { code } else { 0 },
            stdout,
            truncated,
        },
        1 => Outcome::Signaled {
            signal: code,
            stdout,
            truncated,
        },
        2 => Outcome::TimedOut,
        _ => Outcome::SpawnFailed("no such file".into()),
    };
    verdict(&outcome, rest);
    replies(&outcome, rest);
});

/// Whatever the read boundaries, the decoder agrees with itself and with the encoder.
fn framing(buf: &[u8], limit: usize) {
    let whole = worker::decode_result(buf, limit);
    if let Ok(Some(body)) = whole {
        assert_eq!(body, &buf[4..]);
        assert!(body.len() <= limit);
        assert_eq!(worker::encode_result(body).as_deref(), Ok(buf));
    }
    for cut in 0..buf.len() {
        match worker::decode_result(&buf[..cut], limit) {
            Ok(None) => {}
            Ok(Some(body)) => {
                // A complete result before the end: the rest of the buffer is trailing bytes.
                assert_eq!(body, &buf[4..cut]);
                assert_eq!(
                    whole,
                    Err(FrameError::Trailing {
                        extra: buf.len() - cut
                    })
                );
            }
            Err(FrameError::TooLong { len, .. }) => {
                // Refused from the header alone, so the whole buffer is refused the same way.
                assert!(len as usize > limit);
                assert!(matches!(whole, Err(FrameError::TooLong { .. })));
            }
            Err(FrameError::Trailing { .. }) => {
                // Only a complete result can have bytes after it: the whole has more.
                assert!(matches!(whole, Err(FrameError::Trailing { .. })));
            }
        }
    }
}

fn verdict(outcome: &Outcome, stdout: &[u8]) {
    let first = String::from_utf8_lossy(stdout)
        .lines()
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    match jobs::validation_verdict(outcome, 5) {
        Ok(user) => {
            assert!(matches!(
                outcome,
                Outcome::Exited { code: 0, .. } | Outcome::Answered { status: 200..=299, .. }
            ));
            assert_eq!(user, first);
            assert!(!user.is_empty() && user.len() <= MAX_USER_ID);
            assert!(!user.contains('\n'));
            assert_ne!(user, "forbidden");
            // The id names the user's FIFO: always one plain file name.
            let file = jobs::user_file_name(&user);
            assert!(!file.is_empty() && file.len() <= 250, "{file:?}");
            assert!(!file.contains('/') && !file.starts_with('.'), "{file:?}");
        }
        Err(refusal) => {
            let printed = matches!(
                outcome,
                Outcome::Exited { .. } | Outcome::Signaled { .. } | Outcome::Answered { .. }
            );
            let said_forbidden = (printed && first == "forbidden")
                || matches!(outcome, Outcome::Answered { status: 403, .. });
            assert_eq!(refusal.forbidden, said_forbidden);
            // The reason is logged: one bounded line, whatever the child printed.
            assert!(
                !refusal.why.is_empty() && refusal.why.len() <= 200,
                "{:?}",
                refusal.why
            );
            assert!(!refusal.why.contains('\n'));
        }
    }
}

fn replies(outcome: &Outcome, stdout: &[u8]) {
    let out = jobs::route_replies(outcome, 1 << 16);
    assert!(!out.is_empty(), "a routed request always gets an answer");
    for reply in &out {
        assert!(!reply.is_empty());
        // Lossy decoding turns each bad byte into at most 3 bytes; notices are short.
        assert!(reply.len() <= stdout.len() * 3 + 100);
    }
    if let Outcome::Exited {
        code: 0, truncated, ..
    }
    | Outcome::Answered {
        status: 200..=399,
        truncated,
        ..
    } = outcome
    {
        let text = String::from_utf8_lossy(stdout);
        let text = text.trim_end();
        if !text.is_empty() {
            assert_eq!(out[0], text);
        }
        assert_eq!(out.len(), 1 + usize::from(*truncated));
    } else {
        assert_eq!(out.len(), 1);
        assert!(out[0].starts_with("[ferrocast] "));
    }
}
