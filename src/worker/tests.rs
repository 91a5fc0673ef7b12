use super::spawn::resolve;
use super::*;
use std::time::Duration;

#[test]
fn frame_roundtrip() {
    let framed = encode_result(b"42").expect("small result");
    assert_eq!(framed, b"\0\0\0\x0242");
    assert_eq!(decode_result(&framed, 16), Ok(Some(&b"42"[..])));
    assert_eq!(
        decode_result(&encode_result(b"").expect("empty"), 0),
        Ok(Some(&b""[..]))
    );
}

#[test]
fn frame_incomplete() {
    let framed = encode_result(b"hello").expect("small result");
    for cut in 0..framed.len() {
        assert_eq!(decode_result(&framed[..cut], 16), Ok(None), "cut at {cut}");
    }
}

#[test]
fn frame_over_limit_rejected_from_header() {
    // Only the header is present: a huge length is refused without waiting for (or
    // allocating) the body.
    assert_eq!(
        decode_result(&[0xff, 0xff, 0xff, 0xff], 1 << 20),
        Err(FrameError::TooLong {
            len: u32::MAX as u64,
            limit: 1 << 20
        })
    );
    let framed = encode_result(&[7; 17]).expect("small result");
    assert_eq!(
        decode_result(&framed, 16),
        Err(FrameError::TooLong { len: 17, limit: 16 })
    );
    assert!(decode_result(&framed, 17).is_ok());
}

#[test]
fn frame_trailing_bytes() {
    let mut framed = encode_result(b"ab").expect("small result");
    framed.extend_from_slice(b"zz");
    assert_eq!(
        decode_result(&framed, 16),
        Err(FrameError::Trailing { extra: 2 })
    );
}

#[test]
fn tokens() {
    let w = Workers::new(4, 4, 1000);
    assert!(!w.owns(Token(999)));
    assert!(w.owns(Token(1000)));
    assert!(w.owns(Token(1000 + TOKEN_SPAN - 1)));
    assert!(!w.owns(Token(1000 + TOKEN_SPAN)));
    let top = Workers::new(1, 1, usize::MAX - 10);
    assert!(top.owns(Token(usize::MAX)));
}

#[test]
fn resolve_program() {
    assert_eq!(
        resolve("sh", Some("/nonexistent:/bin")).ok(),
        CString::new("/bin/sh").ok()
    );
    let err = resolve("/x/validate.sh", None).expect_err("missing");
    assert_eq!(err, "no such file: /x/validate.sh");
    let err = resolve("no-such-prog-xyz", Some("/bin:/usr/bin")).expect_err("missing");
    assert!(err.starts_with("no such file: no-such-prog-xyz"), "{err}");
    let plain = std::env::temp_dir().join(format!("worker-plain-{}", std::process::id()));
    std::fs::write(&plain, "data").expect("temp file");
    let plain_str = plain.to_str().expect("utf-8 temp dir");
    let err = resolve(plain_str, None).expect_err("not +x");
    let _ = std::fs::remove_file(&plain);
    assert!(err.starts_with("not executable"), "{err}");
    assert!(
        resolve("/tmp", None)
            .expect_err("dir")
            .starts_with("not a regular file")
    );
    assert!(resolve("", None).is_err());
}

#[test]
fn prepare_rejects_bad_input() {
    let job = |argv: Vec<&str>, env: Vec<(&str, &str)>| Job {
        handler: Handler::Exec {
            argv: argv.into_iter().map(String::from).collect(),
        },
        env: env
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        stdin: Vec::new(),
        deadline: Duration::from_secs(1),
        max_output: 1,
    };
    assert!(prepare(&job(vec![], vec![])).is_err());
    assert!(prepare(&job(vec!["/bin/sh", "a\0b"], vec![])).is_err());
    assert!(prepare(&job(vec!["/bin/sh"], vec![("A=B", "c")])).is_err());
    assert!(prepare(&job(vec!["/bin/sh"], vec![("", "c")])).is_err());
    let p = prepare(&job(
        vec!["sh"],
        vec![("PATH", "/bin"), ("X", "1"), ("X", "2")],
    ))
    .expect("valid job");
    assert_eq!(p.path.as_bytes(), b"/bin/sh");
    let envp: Vec<&[u8]> = p.envp.iter().map(|c| c.as_bytes()).collect();
    assert_eq!(envp, vec![&b"PATH=/bin"[..], b"X=2"]);
}

#[test]
fn submit_and_queue_without_starting() {
    // Spawn failures do not occupy slots; nothing forks here.
    let poll = mio::Poll::new().expect("poll");
    let mut w = Workers::new(2, 1, 0);
    let mut out = Vec::new();
    let bad = Job {
        handler: Handler::Exec {
            argv: vec!["/x/validate.sh".into()],
        },
        env: Vec::new(),
        stdin: Vec::new(),
        deadline: Duration::from_secs(1),
        max_output: 16,
    };
    let id = w.submit(poll.registry(), bad, &mut out).expect("accepted");
    assert_eq!(
        out,
        vec![(
            id,
            Outcome::SpawnFailed("no such file: /x/validate.sh".into())
        )]
    );
    assert_eq!((w.running(), w.queued()), (0, 0));
}
