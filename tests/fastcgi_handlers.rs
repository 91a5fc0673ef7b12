//! Validation and routing through a real php-fpm (`"handler": "fastcgi"`): the PHP examples,
//! unchanged, against sessions PHP itself wrote; php-fpm down or missing; a script that hangs;
//! a script that prints far more than `max_worker_output_bytes`.
//!
//! Rules: generous deadlines (`T` = 15 s), wait on events, never assert on elapsed time.
mod common;
use common::fpm::Fpm;
use common::*;

use std::path::{Path, PathBuf};

const RAW: &str = "/chat";

fn examples() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn fastcgi(fpm: &Fpm, script: &Path) -> Value {
    json!({"handler": "fastcgi", "socket": fpm.socket(), "script": script})
}

fn start(dir: &Path, cfg: Value) -> Server {
    let path = write_config(dir, "ferrocast.json", &cfg);
    Server::start(&["--config", &path.display().to_string()], &[])
}

/// Logs a user in the way the web application would: a PHP session written by PHP.
const LOGIN: &str = r#"<?php
session_start();
if (isset($_GET['user'])) { $_SESSION['user_id'] = $_GET['user']; }
if (isset($_GET['banned'])) { $_SESSION['banned'] = true; }
$_SESSION['cart'] = [];
echo session_id();
"#;

#[test]
fn the_php_examples_through_php_fpm() {
    let fpm = Fpm::start(4);
    let login = fpm.script("login.php", LOGIN);
    let session = |query: &str| {
        let a = fpm.get(&login, query);
        assert_eq!(a.status, 200, "login.php: {}\n{}", a.text(), fpm.log());
        a.text()
    };
    let (alice, eve, anon) = (
        session("user=alice"),
        session("user=eve&banned=1"),
        session(""),
    );
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(
        dir.path(),
        json!({
            "validate": fastcgi(&fpm, &examples().join("validate.php")),
            "route": fastcgi(&fpm, &examples().join("route.php")),
        }),
    );
    let mut a = s
        .try_ws(
            RAW,
            &[("Cookie", &format!("theme=dark; PHPSESSID={alice}"))],
        )
        .unwrap_or_else(|e| panic!("alice refused: {e:?}\nlogs:\n{}", s.logs_text()));
    expect_refused(&s, RAW, Some(&format!("PHPSESSID={eve}")), 403);
    expect_refused(&s, RAW, Some(&format!("PHPSESSID={anon}")), 401);
    expect_refused(&s, RAW, Some("PHPSESSID=unknown9"), 401);
    expect_refused(&s, RAW, Some("PHPSESSID=../../etc/passwd"), 401);
    expect_refused(&s, "/ws", None, 401);
    assert!(
        !fpm.dir().join("sessions/sess_unknown9").exists(),
        "an unknown id leaves no session file"
    );
    // The script's error_log() lines come back as FastCGI STDERR records, into our log.
    assert!(
        s.wait_for_log("validate.php: unknown session", T).is_some(),
        "{}",
        s.logs_text()
    );

    check_example_routes(&mut a, "alice");
}

/// The handshake's status and the log, for failures.
fn handshake(s: &Server, path: &str) -> u16 {
    handshake_status(&s.try_ws(path, &[("Cookie", "PHPSESSID=x")]))
}

#[test]
fn php_fpm_missing_or_gone() {
    let dir = tempfile::tempdir().expect("tempdir");
    let missing = dir.path().join("no-such.sock");
    let cfg =
        |socket: &Path| json!({"handler": "fastcgi", "socket": socket, "script": "/srv/x.php"});
    let s = start(
        dir.path(),
        json!({"validate": cfg(&missing), "route": cfg(&missing)}),
    );
    assert_eq!(handshake(&s, RAW), 401);
    assert!(
        s.wait_for_log("cannot connect to unix:", T).is_some(),
        "{}",
        s.logs_text()
    );
    assert_eq!(s.get("/up").status, 200);
    drop(s);

    // Up, then gone: a kept connection fails, and so does the new one.
    let fpm = Fpm::start(1);
    let ok = fpm.script("ok.php", "<?php echo \"u1\\n\";");
    let s = start(
        dir.path(),
        json!({"validate": fastcgi(&fpm, &ok), "route": fastcgi(&fpm, &ok)}),
    );
    let mut c = s.try_ws(RAW, &[]).expect("accepted while php-fpm runs");
    drop(fpm);
    assert_eq!(handshake(&s, RAW), 401);
    c.send_text("/anything");
    let notice = c.recv_text(T);
    assert!(
        notice.starts_with("[ferrocast] the application could not start"),
        "{notice}"
    );
    c.send_text("ping");
    assert_eq!(c.recv_text(T), "pong");
}

#[test]
fn a_hanging_script_is_cut_at_its_deadline_and_nobody_waits() {
    let fpm = Fpm::start(1);
    let hang = fpm.script("hang.php", "<?php sleep(60);");
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(
        dir.path(),
        json!({
            "validate": fastcgi(&fpm, &hang),
            "validate_timeout_secs": 2,
            "max_workers": 1,
            "max_queued_jobs": 0,
        }),
    );
    let pending = std::thread::spawn({
        let addr = s.addr();
        move || common::connect(&addr, RAW, &[]).map(|_| ())
    });
    // Once the one worker slot is taken, the next handshake is refused at once.
    let started = || s.metric("workers_started_total") == 1;
    assert!(wait_until(T, started), "{}", s.logs_text());
    assert_eq!(handshake(&s, RAW), 503, "{}", s.logs_text());
    // Meanwhile the loop serves everyone else.
    assert_eq!(s.get("/up").status, 200);
    match pending.join().expect("thread") {
        Err(ConnectError::Refused(r)) => assert_eq!(r.status, 401),
        other => panic!("the hanging validation ended with {other:?}"),
    }
    assert!(
        s.wait_for_log("did not answer in time", T).is_some(),
        "{}",
        s.logs_text()
    );
    // php-fpm's only worker still sleeps: the next request waits in its queue, and is cut too.
    assert_eq!(handshake(&s, RAW), 401);
}

#[test]
fn a_hundred_megabytes_of_output_are_read_and_dropped() {
    let fpm = Fpm::start(1);
    let flood = fpm.script(
        "flood.php",
        "<?php echo \"start\\n\"; for ($i = 0; $i < 100; $i++) { echo str_repeat('x', 1 << 20); }",
    );
    let ok = fpm.script("ok.php", "<?php echo \"u1\\n\";");
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(
        dir.path(),
        json!({"validate": fastcgi(&fpm, &ok), "route": fastcgi(&fpm, &flood)}),
    );
    let mut c = s.try_ws(RAW, &[]).expect("accepted");
    c.send_text("/flood");
    let first = c.recv_text(T);
    assert!(
        first.starts_with("start\nxxx") && first.len() <= 1 << 20,
        "{} bytes",
        first.len()
    );
    let notice = c.recv_text(T);
    assert!(
        notice.starts_with("[ferrocast] output cut at max_worker_output_bytes"),
        "{notice}"
    );
    // The connection to php-fpm was kept and works for the next request.
    c.send_text("/again");
    assert!(c.recv_text(T).starts_with("start\n"));
    assert!(c.recv_text(T).starts_with("[ferrocast] output cut"));
    assert_eq!(s.get("/up").status, 200);
}

/// A webhook receiver as a Laravel application would have it: checks the signature, keeps the
/// batch.
const HOOK: &str = r#"<?php
$body = file_get_contents('php://input');
$ok = ($_SERVER['HTTP_X_PUSHER_KEY'] ?? '') === 'app-key'
    && hash_equals(hash_hmac('sha256', $body, 'app-secret'), $_SERVER['HTTP_X_PUSHER_SIGNATURE'] ?? '')
    && $_SERVER['REQUEST_METHOD'] === 'POST' && $_SERVER['CONTENT_TYPE'] === 'application/json';
if (!$ok) { http_response_code(401); exit; }
file_put_contents(__DIR__ . '/hooks.log', $body . "\n", FILE_APPEND);
"#;

#[test]
fn webhooks_reach_php_fpm_signed() {
    let fpm = Fpm::start(2);
    let hook = fpm.script("hook.php", HOOK);
    let dir = tempfile::tempdir().expect("tempdir");
    let s = start(
        dir.path(),
        json!({"apps": [{"id": "app-id", "key": "app-key", "secret": "app-secret",
                         "webhooks": [{"script": hook, "socket": fpm.socket()}]}]}),
    );
    let mut c = s.ws("/app/app-key?protocol=7");
    assert_eq!(c.recv_json(T)["event"], "pusher:connection_established");
    c.send_json(&json!({"event": "pusher:subscribe", "data": {"channel": "orders"}}));
    assert_eq!(
        c.recv_json(T)["event"],
        "pusher_internal:subscription_succeeded"
    );
    let log = fpm.dir().join("hooks.log");
    let arrived = wait_until(T, || {
        std::fs::read_to_string(&log).is_ok_and(|t| !t.is_empty())
    });
    assert!(
        arrived,
        "no webhook reached the script\n{}\n{}",
        s.logs_text(),
        fpm.log()
    );
    let text = std::fs::read_to_string(&log).expect("hooks.log");
    let batch: Value = serde_json::from_str(text.lines().next().unwrap_or("")).expect("JSON batch");
    assert_eq!(batch["events"][0]["name"], "channel_occupied", "{batch}");
    assert_eq!(batch["events"][0]["channel"], "orders", "{batch}");
    assert_eq!(s.metric("webhooks_sent_total"), 1);
}
