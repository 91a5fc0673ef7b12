use super::*;

fn roundtrip(data: &[u8]) -> Vec<u8> {
    let packed = Compressor::default().compress(data).expect("compressible");
    let mut out = Vec::new();
    Inflater::default()
        .inflate(&packed, data.len(), &mut out)
        .expect("inflates");
    out
}

#[test]
fn offers_are_accepted_or_declined_by_their_parameters() {
    for yes in [
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; client_max_window_bits=10; server_no_context_takeover",
        "permessage-deflate; server_max_window_bits=15",
        "x-webkit-deflate-frame, permessage-deflate; client_no_context_takeover",
        "permessage-deflate; client_max_window_bits=\"12\"",
    ] {
        assert!(accepts(&[yes]), "{yes}");
    }
    for no in [
        "",
        "x-webkit-deflate-frame",
        "permessage-deflate; server_max_window_bits=10",
        "permessage-deflate; client_max_window_bits=16",
        "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
        "permessage-deflate; unknown_param",
        "permessage-deflate; server_no_context_takeover=1",
    ] {
        assert!(!accepts(&[no]), "{no}");
    }
    // A second offer that fits is taken when the first does not.
    assert!(accepts(&[
        "permessage-deflate; server_max_window_bits=9, permessage-deflate"
    ]));
}

#[test]
fn messages_roundtrip_and_compress_on_their_own() {
    let event =
        br#"{"event":"App\\Events\\OrderShipped","data":{"order":{"id":1,"items":[1,2,3]}}}"#
            .repeat(20);
    assert_eq!(roundtrip(&event), event);
    let mut c = Compressor::default();
    let first = c.compress(&event).unwrap();
    let second = c.compress(&event).unwrap();
    assert_eq!(first, second, "no context carried between messages");
    assert!(
        first.len() * 3 < event.len(),
        "{} → {}",
        event.len(),
        first.len()
    );
    assert_eq!(c.compress(b"ab"), None, "not smaller: sent as it is");
}

#[test]
fn a_bomb_stops_at_the_limit_and_garbage_is_malformed() {
    let bomb = Compressor::default()
        .compress(&vec![b'a'; 10 << 20])
        .unwrap();
    assert!(bomb.len() < 20_000, "{}", bomb.len());
    let mut out = Vec::new();
    let mut inf = Inflater::default();
    assert_eq!(
        inf.inflate(&bomb, 10_000, &mut out),
        Err(InflateError::TooBig)
    );
    assert!(
        out.len() <= 10_001,
        "work stopped at the limit: {}",
        out.len()
    );
    assert_eq!(
        inf.inflate(&[0xff, 0xff, 0xff, 0x00], 10_000, &mut out),
        Err(InflateError::Malformed)
    );
    // The same inflater serves the next message.
    let ok = Compressor::default().compress(&[b'x'; 1000]).unwrap();
    inf.inflate(&ok, 1000, &mut out).unwrap();
    assert_eq!(out, vec![b'x'; 1000], "exactly at the limit is fine");
}
