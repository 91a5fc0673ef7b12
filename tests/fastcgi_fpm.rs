//! The FastCGI codec (`ferrocast::fastcgi`) against a real php-fpm: requests as the loop will
//! send them, over one kept-alive connection, answers read back record by record.

mod common;

use common::fpm::{Fpm, exchange};

const SCRIPT: &str = r#"<?php
if (($_COOKIE['banned'] ?? '') === '1') { http_response_code(403); echo "forbidden\n"; exit; }
echo "user-", $_COOKIE['sid'] ?? 'none', "\n";
echo $_SERVER['REQUEST_METHOD'], " ", $_SERVER['REQUEST_URI'], " ", $_SERVER['REMOTE_ADDR'], "\n";
echo file_get_contents('php://input');
"#;

#[test]
fn requests_over_one_kept_connection() {
    let fpm = Fpm::start(2);
    let script = fpm.script("validate.php", SCRIPT);
    let script = script.to_str().expect("path");
    let mut conn = fpm.connect();
    let base = [
        ("SCRIPT_FILENAME", script),
        ("REQUEST_METHOD", "POST"),
        ("REQUEST_URI", "/ws?room=1"),
        ("REMOTE_ADDR", "203.0.113.7"),
        ("CONTENT_TYPE", "text/plain"),
    ];
    let with = |cookie: &'static str| {
        let mut p = base.to_vec();
        p.push(("HTTP_COOKIE", cookie));
        p
    };
    let a = exchange(&mut conn, &with("sid=abc; x=1"), b"hello", 1 << 20);
    assert_eq!((a.end.protocol_status, a.status), (0, 200));
    assert_eq!(a.text(), "user-abc\nPOST /ws?room=1 203.0.113.7\nhello");
    // The same connection again (FCGI_KEEP_CONN), with a body over one record.
    let big = vec![b'z'; 150_000];
    let a = exchange(&mut conn, &with("sid=def"), &big, 1 << 20);
    assert_eq!(a.status, 200);
    assert!(a.body.starts_with(b"user-def\n") && a.body.ends_with(&big));
    let a = exchange(&mut conn, &with("banned=1"), b"", 1 << 20);
    assert_eq!((a.status, a.text().as_str()), (403, "forbidden\n"));
}

#[test]
fn output_past_the_bound_is_read_and_dropped() {
    let fpm = Fpm::start(1);
    let script = fpm.script("flood.php", "<?php echo str_repeat('x', 1000000);");
    let params = [
        ("SCRIPT_FILENAME", script.to_str().expect("path")),
        ("REQUEST_METHOD", "GET"),
    ];
    // 1 000 bytes of STDOUT kept: the headers, and the start of the body.
    let a = exchange(&mut fpm.connect(), &params, b"", 1000);
    assert!(a.truncated, "{}", fpm.log());
    assert!(a.body.len() < 1000 && a.body.iter().all(|&b| b == b'x'));
}

#[test]
fn without_a_method_php_sends_headers_only() {
    let fpm = Fpm::start(1);
    let script = fpm.script("hello.php", "<?php echo 'hello';");
    let a = exchange(
        &mut fpm.connect(),
        &[("SCRIPT_FILENAME", script.to_str().expect("path"))],
        b"",
        1000,
    );
    assert_eq!((a.status, a.text().as_str()), (200, ""));
    let a = fpm.get(&script, "");
    assert_eq!((a.status, a.text().as_str()), (200, "hello"));
}

#[test]
fn the_example_pool_configuration_is_valid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let pool = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/php-fpm-pool.conf");
    let d = dir.path().display();
    let conf = format!(
        "[global]\npid = {d}/fpm.pid\nerror_log = {d}/fpm.log\ninclude = {}\n",
        pool.display()
    );
    std::fs::write(dir.path().join("fpm.conf"), conf).expect("write");
    let out = std::process::Command::new(common::fpm::binary())
        .args(["-t", "-R", "-y"])
        .arg(dir.path().join("fpm.conf"))
        .output()
        .expect("php-fpm -t");
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("test is successful"),
        "{text}"
    );
}
