use super::*;

fn outside(name: &str) -> Option<String> {
    (name == "HOME").then(|| "/home/app".to_string())
}

fn ok(text: &str) -> Vec<(String, String)> {
    parse(text, &outside).unwrap()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn plain_lines_comments_and_export() {
    let text = "# a comment\n\nFERROCAST_PORT=6001\n  export FERROCAST_HOST = 0.0.0.0  \nA=b # trailing\nB=c#not-a-comment\nEMPTY=\n";
    assert_eq!(
        ok(text),
        pairs(&[
            ("FERROCAST_PORT", "6001"),
            ("FERROCAST_HOST", "0.0.0.0"),
            ("A", "b"),
            ("B", "c#not-a-comment"),
            ("EMPTY", ""),
        ])
    );
}

#[test]
fn single_quotes_are_literal() {
    let text = "S='a $HOME # b \\n'  # comment\n";
    assert_eq!(ok(text), pairs(&[("S", "a $HOME # b \\n")]));
}

#[test]
fn double_quotes_understand_escapes() {
    let text = r#"D="line1\nline2\t\"q\" \\ \$HOME # kept""#;
    assert_eq!(
        ok(text),
        pairs(&[("D", "line1\nline2\t\"q\" \\ $HOME # kept")])
    );
}

#[test]
fn quoted_values_may_span_lines() {
    let text = "K=\"-----BEGIN\nabc\n-----END\"\nNEXT='x\ny'\nLAST=1\n";
    assert_eq!(
        ok(text),
        pairs(&[
            ("K", "-----BEGIN\nabc\n-----END"),
            ("NEXT", "x\ny"),
            ("LAST", "1"),
        ])
    );
}

#[test]
fn variables_expand_from_the_file_then_the_environment() {
    let text =
        "HOST=redis.local\nURL=redis://${HOST}:6379/$DB\nD=\"$HOME/x\"\nS='$HOME'\nLONE=a$ b ${}\n";
    assert_eq!(
        ok(text),
        pairs(&[
            ("HOST", "redis.local"),
            ("URL", "redis://redis.local:6379/"),
            ("D", "/home/app/x"),
            ("S", "$HOME"),
            ("LONE", "a$ b ${}"),
        ])
    );
}

#[test]
fn a_bad_line_is_named_by_its_number() {
    let cases = [
        ("A=1\nthis is not a pair\n", 2, "expected KEY=VALUE"),
        ("A=1\n\n1BAD=x\n", 3, "is not a variable name"),
        ("A=1\nB=\"open\nstill open\n", 2, "never closed"),
        ("A='x' y\n", 1, "after the closing quote"),
        ("BAD KEY=1\n", 1, "is not a variable name"),
    ];
    for (text, line, words) in cases {
        let err = parse(text, &outside).unwrap_err();
        assert_eq!(err.line, line, "{text:?}: {err:?}");
        assert!(err.message.contains(words), "{text:?}: {err:?}");
    }
}

#[test]
fn a_later_line_wins_and_crlf_files_read_the_same() {
    let text = "A=1\r\nA=2\r\nB=\"x\"\r\n";
    assert_eq!(ok(text), pairs(&[("A", "1"), ("A", "2"), ("B", "x")]));
}
