//! `.env` files (`--env-file`): `KEY=VALUE` lines as the dotenv tools of PHP, Node and Go write
//! them, so an application's existing file can configure ferrocast.
//!
//! - blank lines and `# comments` are skipped; `export KEY=VALUE` is accepted;
//! - unquoted values end at ` #` (a comment) and are trimmed;
//! - `'single quotes'` are literal and may span lines;
//! - `"double quotes"` may span lines and understand `\n`, `\r`, `\t`, `\"`, `\\` and `\$`;
//! - `${NAME}` and `$NAME` in unquoted and double-quoted values expand to a variable defined
//!   earlier in the file, or else to the process environment, or else to nothing.
//!
//! A line that is none of these is an error naming the file and the line, never skipped.

use std::collections::HashMap;

/// A line that cannot be read, with its 1-based number.
#[derive(Debug, PartialEq, Eq)]
pub struct LineError {
    pub line: usize,
    pub message: String,
}

/// Parses the whole file into `(key, value)` pairs in file order. `outside` looks a name up in
/// the process environment, for expansion.
pub fn parse(
    text: &str,
    outside: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<(String, String)>, LineError> {
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut seen: HashMap<String, String> = HashMap::new();
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let number = i + 1;
        let fail = |message: String| LineError {
            line: number,
            message,
        };
        let line = lines[i].trim();
        i += 1;
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let (key, rest) = line
            .split_once('=')
            .ok_or_else(|| fail("expected KEY=VALUE".into()))?;
        let key = key.trim();
        if !valid_key(key) {
            return Err(fail(format!(
                "\"{key}\" is not a variable name (letters, digits, _ and ., not starting with a digit)"
            )));
        }
        let rest = rest.trim_start();
        let lookup = |name: &str| seen.get(name).cloned().or_else(|| outside(name));
        let value = match rest.chars().next() {
            Some(q @ ('\'' | '"')) => {
                let (raw, after, used) = quoted(&lines, i - 1, rest, q).map_err(fail)?;
                i += used;
                if !(after.is_empty() || after.starts_with('#')) {
                    return Err(fail(format!(
                        "unexpected \"{after}\" after the closing quote"
                    )));
                }
                if q == '\'' {
                    raw
                } else {
                    render(&raw, true, &lookup)
                }
            }
            _ => render(unquoted(rest), false, &lookup),
        };
        seen.insert(key.to_string(), value.clone());
        pairs.push((key.to_string(), value));
    }
    Ok(pairs)
}

fn valid_key(key: &str) -> bool {
    let mut chars = key.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
}

/// An unquoted value: up to a comment (`#` after whitespace), trimmed.
fn unquoted(rest: &str) -> &str {
    let bytes = rest.as_bytes();
    let end = (0..bytes.len())
        .find(|&j| bytes[j] == b'#' && j > 0 && bytes[j - 1].is_ascii_whitespace())
        .unwrap_or(bytes.len());
    rest[..end].trim()
}

/// The text between quote `q` at the start of `rest` (line `at`) and its closing quote, which may
/// be on a later line. Returns the raw text (escapes kept), what follows the closing quote
/// (trimmed) and how many more lines it took.
fn quoted(
    lines: &[&str],
    at: usize,
    rest: &str,
    q: char,
) -> Result<(String, String, usize), String> {
    let mut raw = String::new();
    let mut current = &rest[1..];
    let mut used = 0;
    loop {
        let mut escaped = false;
        for (j, c) in current.char_indices() {
            if c == q && !escaped {
                raw.push_str(&current[..j]);
                let after = current[j + 1..].trim().to_string();
                return Ok((raw, after, used));
            }
            escaped = q == '"' && c == '\\' && !escaped;
        }
        raw.push_str(current);
        raw.push('\n');
        used += 1;
        match lines.get(at + used) {
            Some(next) => current = next,
            None => return Err(format!("the quote {q} opened here is never closed")),
        }
    }
}

/// The value of unquoted (`escapes` false) or double-quoted text: `${NAME}` and `$NAME` replaced
/// by `lookup(NAME)` (or nothing), and in double quotes the backslash escapes (`\$` is a `$`).
fn render(raw: &str, escapes: bool, lookup: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(c) = rest.chars().next() {
        rest = &rest[c.len_utf8()..];
        match c {
            '\\' if escapes => {
                let Some(next) = rest.chars().next() else {
                    out.push('\\');
                    break;
                };
                rest = &rest[next.len_utf8()..];
                match next {
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    '"' | '\\' | '$' => out.push(next),
                    other => {
                        out.push('\\');
                        out.push(other);
                    }
                }
            }
            '$' => {
                let (name, after) = variable(rest);
                match name {
                    Some(name) => out.push_str(&lookup(name).unwrap_or_default()),
                    None => out.push('$'),
                }
                rest = after;
            }
            c => out.push(c),
        }
    }
    out
}

/// The variable name after a `$` (`{NAME}` or `NAME`) and the text after it; `None` when there
/// is none (a lone `$` stays literal).
fn variable(rest: &str) -> (Option<&str>, &str) {
    if let Some(braced) = rest.strip_prefix('{') {
        return match braced.find('}') {
            Some(end) if end > 0 => (Some(&braced[..end]), &braced[end + 1..]),
            _ => (None, rest),
        };
    }
    let end = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    if end == 0 {
        (None, rest)
    } else {
        (Some(&rest[..end]), &rest[end..])
    }
}

#[cfg(test)]
#[path = "dotenv_tests.rs"]
mod tests;
