//! Percent-coding, in one place: query strings and form bodies
//! (`application/x-www-form-urlencoded`: `+` is a space, as Rack — on which Pusher's own API
//! runs — reads query strings) through the `form_urlencoded` crate, and single URL parts
//! (`%XX` only) through `percent-encoding`, the crate beneath it.

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// Characters a URL component keeps as they are (RFC 3986 unreserved).
const UNRESERVED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// The decoded `(key, value)` pairs of a query string or form body (a leading `?` is
/// tolerated), in order, keys untouched. A pair without `=` has an empty value; empty pairs
/// are skipped; a `%` not followed by two hex digits is kept literally; invalid UTF-8 becomes
/// U+FFFD.
pub fn pairs(query: &str) -> Vec<(String, String)> {
    let query = query.strip_prefix('?').unwrap_or(query);
    form_urlencoded::parse(query.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The first value of `name` in a query string or form body.
pub fn param(query: &str, name: &str) -> Option<String> {
    let query = query.strip_prefix('?').unwrap_or(query);
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// One URL part (`%XX` decoded, `+` kept); `None` when the result is not UTF-8.
pub fn decode_part(s: &str) -> Option<String> {
    percent_encoding::percent_decode_str(s)
        .decode_utf8()
        .ok()
        .map(|c| c.into_owned())
}

/// Encodes a component: everything but the unreserved characters becomes `%XX` (a space is
/// `%20`, never `+`, so the result decodes the same either way).
pub fn encode_component(s: &str) -> String {
    utf8_percent_encode(s, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_and_parts() {
        assert_eq!(
            pairs("?a=1&b=x+y&c=%7B%22k%22%3A%22v%22%7D&d&&e=&f=a=b&%41=%c3%a9"),
            vec![
                ("a".into(), "1".into()),
                ("b".into(), "x y".into()),
                ("c".into(), "{\"k\":\"v\"}".into()),
                ("d".into(), "".into()),
                ("e".into(), "".into()),
                ("f".into(), "a=b".into()),
                ("A".into(), "é".into()),
            ]
        );
        assert_eq!(
            pairs("x=%&y=%4&z=%zz&w=100%"),
            vec![
                ("x".into(), "%".into()),
                ("y".into(), "%4".into()),
                ("z".into(), "%zz".into()),
                ("w".into(), "100%".into()),
            ]
        );
        assert_eq!(param("a=1&b=2&b=3", "b").as_deref(), Some("2"));
        assert_eq!(decode_part("a%2Bb+c").as_deref(), Some("a+b+c"));
        assert_eq!(decode_part("%ff"), None);
        assert_eq!(encode_component("a b+é~"), "a%20b%2B%C3%A9~");
    }
}
