use super::*;

/// Reads a PARAMS stream's pairs back, as an application does.
fn decode_pairs(mut b: &[u8]) -> Vec<(Vec<u8>, Vec<u8>)> {
    fn len(b: &mut &[u8]) -> usize {
        if b[0] < 0x80 {
            let n = b[0] as usize;
            *b = &b[1..];
            n
        } else {
            let n = u32::from_be_bytes([b[0] & 0x7f, b[1], b[2], b[3]]) as usize;
            *b = &b[4..];
            n
        }
    }
    let mut out = Vec::new();
    while !b.is_empty() {
        let (n, v) = (len(&mut b), len(&mut b));
        out.push((b[..n].to_vec(), b[n..n + v].to_vec()));
        b = &b[n + v..];
    }
    out
}

/// Every record of `bytes`, with the stream contents joined per type.
fn records(mut bytes: &[u8]) -> Vec<(u8, u16, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some((r, n)) = next_record(bytes).expect("valid records") {
        assert_eq!(n % 8, 0, "records are padded to 8 bytes");
        out.push((r.kind, r.request_id, r.content.to_vec()));
        bytes = &bytes[n..];
    }
    assert!(bytes.is_empty(), "trailing bytes");
    out
}

#[test]
fn a_request_is_begin_params_stdin_each_stream_ended() {
    let long = vec![b'v'; 300];
    let pairs = encode_pairs([
        ("SCRIPT_FILENAME", &b"/srv/app/ws/validate.php"[..]),
        ("HTTP_COOKIE", &long[..]),
        ("EMPTY", &b""[..]),
    ])
    .expect("pairs");
    let req = encode_request(1, &pairs, b"hello");
    let recs = records(&req);
    let kinds: Vec<u8> = recs.iter().map(|r| r.0).collect();
    assert_eq!(kinds, [BEGIN_REQUEST, PARAMS, PARAMS, STDIN, STDIN]);
    assert!(recs.iter().all(|r| r.1 == 1));
    // Role 1 (Responder), flags FCGI_KEEP_CONN.
    assert_eq!(recs[0].2, [0, 1, 1, 0, 0, 0, 0, 0]);
    assert!(
        recs[2].2.is_empty() && recs[4].2.is_empty(),
        "streams end empty"
    );
    assert_eq!(recs[3].2, b"hello");
    let decoded = decode_pairs(&recs[1].2);
    assert_eq!(
        decoded[0],
        (
            b"SCRIPT_FILENAME".to_vec(),
            b"/srv/app/ws/validate.php".to_vec()
        )
    );
    assert_eq!(decoded[1], (b"HTTP_COOKIE".to_vec(), long));
    assert_eq!(decoded[2], (b"EMPTY".to_vec(), vec![]));
}

#[test]
fn pair_lengths_switch_to_four_bytes_at_128() {
    for (n, head) in [(127usize, 1usize), (128, 4), (70_000, 4)] {
        let value = vec![b'x'; n];
        let b = encode_pairs([("K", &value[..])]).expect("pairs");
        assert_eq!(b.len(), 1 + head + 1 + n, "value of {n} bytes");
        assert_eq!(decode_pairs(&b), [(b"K".to_vec(), value)]);
    }
}

#[test]
fn large_streams_are_cut_into_records_under_the_limit() {
    let body = vec![7u8; 200_000];
    let req = encode_request(1, &[], &body);
    let recs = records(&req);
    let stdin: Vec<&(u8, u16, Vec<u8>)> = recs.iter().filter(|r| r.0 == STDIN).collect();
    assert!(stdin.iter().all(|r| r.2.len() <= 65_528));
    assert_eq!(stdin.iter().map(|r| r.2.len()).sum::<usize>(), body.len());
    assert!(stdin.last().is_some_and(|r| r.2.is_empty()));
}

#[test]
fn incomplete_and_foreign_input() {
    let abort = encode_abort(1);
    assert_eq!(abort, [1, ABORT_REQUEST, 0, 1, 0, 0, 0, 0]);
    for cut in 0..abort.len() {
        assert_eq!(next_record(&abort[..cut]), Ok(None));
    }
    // A record whose padding has not arrived yet is incomplete too.
    let padded = [1, STDOUT, 0, 1, 0, 1, 7, 0, b'x', 0, 0];
    assert_eq!(next_record(&padded), Ok(None));
    assert_eq!(
        next_record(b"HTTP/1.1 400 Bad Request\r\n"),
        Err(RecordError::Version(b'H'))
    );
}
