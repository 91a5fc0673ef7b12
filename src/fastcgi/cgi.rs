//! A CGI response (RFC 3875 section 6), which is what php-fpm writes to STDOUT: header lines,
//! a blank line, the body. There is no status line: a `Status:` header carries the status.

/// The parts of a response ferrocast acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CgiResponse<'a> {
    /// From `Status:`; 302 for a bare `Location:` redirect; 200 otherwise.
    pub status: u16,
    pub body: &'a [u8],
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CgiError {
    #[error("the script's output has no header section (no blank line after the headers)")]
    NoHeaders,
    #[error("the script sent a malformed Status header: {0:?}")]
    Status(String),
}

/// Splits a CGI response into its status and body. Lines may end in CRLF or LF.
pub fn parse_response(out: &[u8]) -> Result<CgiResponse<'_>, CgiError> {
    let mut status = None;
    let mut location = false;
    let mut at = 0;
    loop {
        let Some(eol) = out[at..].iter().position(|&b| b == b'\n') else {
            return Err(CgiError::NoHeaders);
        };
        let line = &out[at..at + eol];
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        at += eol + 1;
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue; // not a header: ignored, as web servers do
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"status") {
            status = Some(parse_status(value)?);
        } else if name.eq_ignore_ascii_case(b"location") {
            location = true;
        }
    }
    let status = status.unwrap_or(if location { 302 } else { 200 });
    Ok(CgiResponse {
        status,
        body: &out[at..],
    })
}

/// `403 Forbidden` → 403: three digits, then a reason or nothing.
fn parse_status(value: &[u8]) -> Result<u16, CgiError> {
    let code = value.split(|&b| b == b' ').next().unwrap_or_default();
    std::str::from_utf8(code)
        .ok()
        .filter(|c| c.len() == 3 && c.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|c| c.parse::<u16>().ok())
        .filter(|&c| c >= 100)
        .ok_or_else(|| CgiError::Status(String::from_utf8_lossy(value).into_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn php_fpm_answers() {
        let ok = parse_response(
            b"X-Powered-By: PHP/8.2\r\nContent-type: text/html; charset=UTF-8\r\n\r\nu1\n",
        );
        assert_eq!(
            ok,
            Ok(CgiResponse {
                status: 200,
                body: b"u1\n"
            })
        );
        let refused = parse_response(b"Status: 403 Forbidden\r\nContent-type: text/html\r\n\r\n");
        assert_eq!(
            refused,
            Ok(CgiResponse {
                status: 403,
                body: b""
            })
        );
        let lf = parse_response(b"status: 404\nLocation: /x\n\nnope");
        assert_eq!(
            lf,
            Ok(CgiResponse {
                status: 404,
                body: b"nope"
            })
        );
        let redirect = parse_response(b"Location: https://example.com/\r\n\r\n");
        assert_eq!(redirect.map(|r| r.status), Ok(302));
        // A body may hold blank lines: only the first one ends the headers.
        let body = parse_response(b"A: b\r\n\r\nline\r\n\r\nmore");
        assert_eq!(body.map(|r| r.body), Ok(&b"line\r\n\r\nmore"[..]));
    }

    #[test]
    fn malformed_answers_are_errors() {
        assert_eq!(parse_response(b""), Err(CgiError::NoHeaders));
        assert_eq!(parse_response(b"u1\n"), Err(CgiError::NoHeaders));
        for bad in [
            "Status: 4033\r\n\r\n",
            "Status: abc\r\n\r\n",
            "Status: 099\r\n\r\n",
            "Status:\r\n\r\n",
        ] {
            assert!(
                matches!(parse_response(bad.as_bytes()), Err(CgiError::Status(_))),
                "{bad:?}"
            );
        }
    }
}
