//! What a FastCGI application (php-fpm) sends back, as the loop will read it: records in pieces
//! of any size through `fastcgi::Reply`, then the CGI response in STDOUT through
//! `fastcgi::parse_response`. The answer must not depend on how reads cut the bytes; what is
//! kept stays within its bound; nothing is taken after END_REQUEST.
#![no_main]

use ferrocast::fastcgi::{self, RecordError, Reply};
use libfuzzer_sys::fuzz_target;

/// Feeds `data` to a fresh reply in reads of `sizes` (cycled); returns the reply, the bytes
/// taken and the first error.
fn feed(data: &[u8], sizes: &[u8], max: usize) -> (Reply, usize, Option<RecordError>) {
    let mut reply = Reply::new(1, max);
    let (mut buf, mut taken, mut at) = (Vec::new(), 0, 0);
    for &size in sizes.iter().cycle().take(data.len() + 1) {
        let n = usize::from(size).max(1).min(data.len() - at);
        buf.extend_from_slice(&data[at..at + n]);
        at += n;
        match reply.read(&buf) {
            Ok(used) => {
                assert!(used <= buf.len());
                buf.drain(..used);
                taken += used;
            }
            Err(e) => return (reply, taken, Some(e)),
        }
        if reply.end().is_some() || at == data.len() {
            break;
        }
    }
    (reply, taken, None)
}

fuzz_target!(|input: &[u8]| {
    let Some((&[s0, s1, s2, m], data)) = input.split_first_chunk::<4>() else {
        return;
    };
    let max = usize::from(m) * 16;
    let (whole, taken_whole, err_whole) = feed(data, &[u8::MAX; 1], max);
    let (split, taken_split, err_split) = feed(data, &[s0, s1, s2], max);
    assert_eq!(err_whole, err_split, "errors depend on read sizes");
    assert_eq!(whole.end(), split.end());
    if err_whole.is_none() && whole.end().is_some() {
        assert_eq!(taken_whole, taken_split, "bytes taken past END_REQUEST");
    }
    assert_eq!(whole.stderr(), split.stderr());
    let (out, truncated) = whole.into_output();
    assert!(out.len() <= max);
    assert_eq!((out.clone(), truncated), split.into_output());
    if let Ok(r) = fastcgi::parse_response(&out) {
        assert!((100..=999).contains(&r.status));
        assert!(r.body.len() <= out.len());
    }
});
