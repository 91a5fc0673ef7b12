//! Forked workers, end to end: session validation before the 101, application routing of raw-mode
//! messages, and per-user FIFOs (the CarbonPHP model).
//!
//! Every test runs the real `ferrocast` binary, which forks and execs real `/bin/sh` scripts the
//! test writes into a temporary directory (run as `/bin/sh SCRIPT`, so a script being written in
//! this multi-threaded test process is never exec'd itself). `php_examples` runs the PHP examples
//! with php-cli, which tests/run.sh installs (the test fails without it).
//!
//! Rules: generous deadlines (`T` = 15 s), wait on events, never assert on elapsed time.
mod common;
use common::*;

use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::Duration;

/// Raw-mode path (anything but `/ws` and `/app/...`).
const RAW: &str = "/chat";
/// A secret in the server's environment that no handler may see.
const SECRET_ENV: [(&str, &str); 2] = [
    ("FERROCAST_APP_SECRET", "topsecret"),
    ("DB_PASSWORD", "hunter2"),
];

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Writes a `/bin/sh` script; `{DIR}` in `body` is replaced by `dir`.
fn script(dir: &Path, name: &str, body: &str) -> String {
    let path = dir.join(name);
    let text = format!(
        "#!/bin/sh\n{}\n",
        body.replace("{DIR}", &dir.display().to_string())
    );
    std::fs::write(&path, text).expect("write script");
    path.display().to_string()
}

fn exec(script: &str) -> Value {
    json!({"handler": "exec", "command": ["/bin/sh", script]})
}

/// Starts a server with `cfg` (written as a JSON config file into `dir`) and extra environment.
fn start(dir: &Path, cfg: Value, env: &[(&str, &str)]) -> Server {
    let path = write_config(dir, "ferrocast.json", &cfg);
    let path = path.display().to_string();
    Server::start(&["--config", &path], env)
}

fn cookie(s: &Server, path: &str, cookie: &str) -> Result<Client, ConnectError> {
    s.try_ws(path, &[("Cookie", cookie)])
}

/// Connects as the user `sid` maps to and expects the 101.
fn login(s: &Server, path: &str, sid: &str) -> Client {
    match cookie(s, path, &format!("sid={sid}")) {
        Ok(c) => c,
        Err(e) => panic!("login sid={sid} on {path}: {e:?}\nlogs:\n{}", s.logs_text()),
    }
}

/// A raw-mode client that must have received nothing else: `ping` must be answered by `pong`
/// as the very next message.
fn assert_nothing_pending(c: &mut Client, who: &str) {
    c.send_text("ping");
    let got = c.recv_text(T);
    assert_eq!(got, "pong", "{who} received something that was not for it");
}

/// A complete upgrade request with a Cookie header, for hand-driven connections.
fn handshake_request(path: &str, cookie: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Cookie: {cookie}\r\nSec-WebSocket-Key: {SAMPLE_KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
}

fn user_fifo(s: &Server, file_name: &str) -> PathBuf {
    s.fifo()
        .parent()
        .expect("fifo dir")
        .join("users")
        .join(format!("{file_name}.fifo"))
}

/// `KEY=VALUE` lines (as printed by `env`) → map.
fn env_map(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The handler environment must hold nothing of the server's own.
fn assert_no_server_env(env: &BTreeMap<String, String>, text: &str) {
    for (k, v) in SECRET_ENV {
        assert!(!env.contains_key(k), "{k} leaked into the handler: {text}");
        assert!(
            !text.contains(v),
            "the value of {k} leaked into the handler: {text}"
        );
    }
    for k in [
        "HOME",
        "RUST_LOG",
        "RUNTIME_DIRECTORY",
        "XDG_RUNTIME_DIR",
        "CARGO_MANIFEST_DIR",
    ] {
        assert!(
            !env.contains_key(k),
            "{k} of the server leaked into the handler: {text}"
        );
    }
}

/// (pid, state) of every process whose parent is `ppid`.
/// The server's worker processes: its children, or with several loops its loops' children.
fn workers_of(server: i32) -> Vec<(i32, char)> {
    let direct = children_of(server);
    if common::loop_count() == 1 {
        return direct;
    }
    direct.iter().flat_map(|(l, _)| children_of(*l)).collect()
}

fn children_of(ppid: i32) -> Vec<(i32, char)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // "pid (comm) S ppid ...": comm may hold spaces and parentheses.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next().and_then(|s| s.chars().next()).unwrap_or('?');
        if f.next().and_then(|p| p.parse::<i32>().ok()) == Some(ppid) {
            out.push((pid, state));
        }
    }
    out
}

/// Whether `pid` is still a live (non-zombie) process.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().next())
            .is_some_and(|st| st != "Z" && st != "X"),
        Err(_) => false,
    }
}

/// A `/proc/<pid>/status` field in kB (VmRSS, VmHWM, ...).
fn status_kb(pid: i32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/pid/status");
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

fn read_pid_file(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

// --- a tiny HTTP server for the `http` handlers ----------------------------------------------

#[derive(Debug, Clone)]
struct SeenRequest {
    method: String,
    path: String,
    /// Lower-case names.
    headers: HashMap<String, String>,
    body: String,
}

type Answer = Arc<dyn Fn(&SeenRequest) -> (u16, String) + Send + Sync>;

struct MiniHttp {
    port: u16,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
}

impl MiniHttp {
    fn start(answer: Answer) -> MiniHttp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let seen: Arc<Mutex<Vec<SeenRequest>>> = Arc::default();
        let seen2 = seen.clone();
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (answer, seen) = (answer.clone(), seen2.clone());
                thread::spawn(move || serve_one(stream, &*answer, &seen));
            }
        });
        MiniHttp { port, seen }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

fn serve_one(
    mut stream: TcpStream,
    answer: &(dyn Fn(&SeenRequest) -> (u16, String) + Send + Sync),
    seen: &Mutex<Vec<SeenRequest>>,
) {
    stream.set_read_timeout(Some(T)).unwrap();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        match stream.read(&mut tmp) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or("").split(' ');
    let method = first.next().unwrap_or("").to_string();
    let path = first.next().unwrap_or("").to_string();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        match stream.read(&mut tmp) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
        }
    }
    let body =
        String::from_utf8_lossy(&buf[head_end..(head_end + len).min(buf.len())]).into_owned();
    let req = SeenRequest {
        method,
        path,
        headers,
        body,
    };
    let (code, body) = answer(&req);
    seen.lock().unwrap().push(req);
    let resp = format!(
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(resp.as_bytes());
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

const VALIDATE: &str = r#"
case "$HTTP_COOKIE" in
    *sid=alice*) echo alice ;;
    *sid=bob*) echo bob; echo "a second line is not the user id" ;;
    *sid=banned*) echo forbidden; exit 1 ;;
    *sid=silent*) exit 0 ;;
    *sid=crash*) ulimit -c 0; kill -SEGV $$ ;;
    *sid=envdump*) env > "{DIR}/validate-env.txt"; echo envuser ;;
    *sid=evil*) echo "../evil" ;;
    *) echo "no session" >&2; exit 1 ;;
esac
"#;

#[test]
fn validation_accepts_and_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let v = script(dir.path(), "validate.sh", VALIDATE);
    let s = start(dir.path(), json!({"validate": exec(&v)}), &SECRET_ENV);

    // Accepted: raw mode and channel mode.
    let mut alice = login(&s, RAW, "alice");
    alice.raw_ping_pong();
    let mut bob = login(&s, "/other?x=1", "bob");
    bob.raw_ping_pong();
    let mut chan = login(&s, "/ws", "alice");
    chan.subscribe("news");

    // Refused.
    expect_refused(&s, RAW, None, 401);
    expect_refused(&s, RAW, Some("sid=nobody"), 401);
    expect_refused(&s, RAW, Some("sid=silent"), 401); // exit 0, no user id
    expect_refused(&s, RAW, Some("sid=banned"), 403);
    expect_refused(&s, RAW, Some("sid=crash"), 401); // SIGSEGV
    expect_refused(&s, "/ws", None, 401); // validation applies to /ws too
    expect_refused(&s, "/ws", Some("sid=banned"), 403);
    match s.try_ws(RAW, &[("Cookie", "sid=banned")]) {
        Err(ConnectError::Refused(r)) => {
            assert!(r.body.contains("error"), "JSON error body expected: {r:?}")
        }
        Err(other) => panic!("expected a 403 refusal, got {other:?}"),
        Ok(_) => panic!("expected a 403 refusal, got a 101"),
    }
    let crash_log = s.wait_for_log("signal 11", T);
    assert!(
        crash_log.is_some(),
        "the crash is logged:\n{}",
        s.logs_text()
    );

    // A first frame sent right behind the handshake waits for the verdict, then is answered.
    let mut early = s.raw();
    let mut req = handshake_request(RAW, "sid=alice").into_bytes();
    req.extend(client_frame(true, OP_TEXT, b"ping"));
    early.send(&req).unwrap();
    let resp = early.read_http_response(T).expect("handshake answer");
    assert_eq!(resp.status, 101);
    assert_eq!(early.recv_text(T), "pong");

    // Plain HTTP is not validated.
    assert_eq!(s.get("/up").status, 200);

    // The handler's environment: the handshake as CGI, nothing of the server's.
    let dump = dir.path().join("validate-env.txt");
    let mut c = s
        .try_ws(
            "/chat?room=1",
            &[("Cookie", "sid=envdump"), ("X-Custom-Thing", "yes")],
        )
        .expect("envdump accepted");
    c.raw_ping_pong();
    let text = std::fs::read_to_string(&dump).expect("validator wrote its env");
    let env = env_map(&text);
    let port = s.port().to_string();
    for (k, want) in [
        ("REQUEST_METHOD", "GET"),
        ("REQUEST_URI", "/chat?room=1"),
        ("QUERY_STRING", "room=1"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("SERVER_PORT", port.as_str()),
        ("HTTP_COOKIE", "sid=envdump"),
        ("HTTP_X_CUSTOM_THING", "yes"),
        ("HTTP_UPGRADE", "websocket"),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(want), "{k} in: {text}");
    }
    for k in ["REMOTE_PORT", "FERROCAST_SOCKET_ID", "PATH"] {
        assert!(env.get(k).is_some_and(|v| !v.is_empty()), "{k} in: {text}");
    }
    assert_no_server_env(&env, &text);

    // Everything still works for the accepted clients.
    alice.raw_ping_pong();
    bob.raw_ping_pong();
    s.publish_line("to everyone");
    assert_eq!(alice.recv_text(T), "to everyone");
    assert_eq!(bob.recv_text(T), "to everyone");
    assert_eq!(chan.recv_text(T), "to everyone");
}

/// A validator that prints `forbidden` but exits 0 (what a PHP script ending in `echo
/// "forbidden"; exit;` does) is refused with 403 too: `forbidden` is never a user id.
#[test]
fn validation_forbidden_with_exit_0_is_403() {
    let dir = tempfile::tempdir().unwrap();
    let v = script(dir.path(), "validate.sh", "echo forbidden");
    let s = start(dir.path(), json!({"validate": exec(&v)}), &[]);
    expect_refused(&s, RAW, Some("sid=x"), 403);
    assert!(!user_fifo(&s, "forbidden").exists());
}

#[test]
fn slow_validator_is_killed_and_the_server_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let v = script(
        dir.path(),
        "validate.sh",
        r#"
case "$HTTP_COOKIE" in
    *sid=slow*)
        sleep 60 &
        echo $! > "{DIR}/sleep.tmp" && mv "{DIR}/sleep.tmp" "{DIR}/sleep.pid"
        echo $$ > "{DIR}/sh.tmp" && mv "{DIR}/sh.tmp" "{DIR}/sh.pid"
        wait
        echo too-late ;;
    *) echo alice ;;
esac
"#,
    );
    let s = start(
        dir.path(),
        json!({"validate": exec(&v), "validate_timeout_secs": 1}),
        &[],
    );
    let mut alice = login(&s, RAW, "alice");
    let addr = s.addr();
    let slow = thread::spawn(move || {
        let r = connect(&addr, RAW, &[("Cookie", "sid=slow")]);
        handshake_status(&r)
    });

    // While the validator sleeps, the loop serves everyone else.
    let sh_pid_file = dir.path().join("sh.pid");
    assert!(
        wait_until(T, || sh_pid_file.exists()),
        "the slow validator never started"
    );
    assert_eq!(s.get("/up").status, 200);
    s.publish_line("meanwhile");
    assert_eq!(alice.recv_text(T), "meanwhile");
    alice.raw_ping_pong();

    assert_eq!(slow.join().unwrap(), 401, "logs:\n{}", s.logs_text());
    assert!(
        s.wait_for_log("validate_timeout_secs", T).is_some(),
        "the timeout is logged:\n{}",
        s.logs_text()
    );
    // Its whole process group was killed, and the server reaped its child.
    let sh = read_pid_file(&sh_pid_file).expect("sh.pid");
    let sleep = read_pid_file(&dir.path().join("sleep.pid")).expect("sleep.pid");
    assert!(
        wait_until(T, || !alive(sh) && !alive(sleep)),
        "validator still running"
    );
    assert!(
        wait_until(T, || workers_of(s.pid()).is_empty()),
        "server children left: {:?}",
        workers_of(s.pid())
    );
    alice.raw_ping_pong();
    login(&s, RAW, "alice").raw_ping_pong();

    // A client that leaves while it is being validated: the job still ends and is reaped.
    for f in ["sh.pid", "sleep.pid"] {
        let _ = std::fs::remove_file(dir.path().join(f));
    }
    let mut gone = s.raw();
    gone.send(handshake_request(RAW, "sid=slow").as_bytes())
        .unwrap();
    assert!(
        wait_until(T, || sh_pid_file.exists()),
        "second slow validator never started"
    );
    drop(gone);
    assert!(
        wait_until(T, || workers_of(s.pid()).is_empty()),
        "server children left: {:?}",
        workers_of(s.pid())
    );
    alice.raw_ping_pong();
}

#[test]
fn validator_that_cannot_start_refuses_with_401() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-validator");
    let s = start(
        dir.path(),
        json!({"validate": {"handler": "exec", "command": [missing.display().to_string()]}}),
        &[],
    );
    expect_refused(&s, RAW, Some("sid=alice"), 401);
    assert!(
        s.wait_for_log("no-such-validator", T).is_some(),
        "the reason is logged:\n{}",
        s.logs_text()
    );
    assert_eq!(s.get("/up").status, 200);
}

/// SIGTERM while a validator runs: its process group is killed and the server exits at once.
#[test]
fn shutdown_kills_running_validators() {
    let dir = tempfile::tempdir().unwrap();
    let v = script(
        dir.path(),
        "validate.sh",
        r#"
sleep 60 &
echo $! > "{DIR}/sleep.tmp" && mv "{DIR}/sleep.tmp" "{DIR}/sleep.pid"
echo $$ > "{DIR}/sh.tmp" && mv "{DIR}/sh.tmp" "{DIR}/sh.pid"
wait
echo alice
"#,
    );
    let mut s = start(
        dir.path(),
        json!({"validate": exec(&v), "validate_timeout_secs": 60}),
        &[],
    );
    let addr = s.addr();
    let pending = thread::spawn(move || connect(&addr, RAW, &[("Cookie", "sid=x")]).is_ok());
    let sh_pid_file = dir.path().join("sh.pid");
    assert!(
        wait_until(T, || sh_pid_file.exists()),
        "the validator never started"
    );
    let sh = read_pid_file(&sh_pid_file).expect("sh.pid");
    let sleep = read_pid_file(&dir.path().join("sleep.pid")).expect("sleep.pid");
    s.signal(Signal::SIGTERM);
    assert!(s.wait_exit(T).success(), "logs:\n{}", s.logs_text());
    assert!(
        wait_until(T, || !alive(sh) && !alive(sleep)),
        "the validator outlived the server"
    );
    assert!(
        !pending.join().unwrap(),
        "no 101 from a server that is shutting down"
    );
}

#[test]
fn huge_validator_output_keeps_the_server_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let v = script(
        dir.path(),
        "validate.sh",
        r#"
case "$HTTP_COOKIE" in
    *sid=zeros*) head -c 100000000 /dev/zero; echo ;;
    *sid=first*) echo alice; head -c 100000000 /dev/zero; echo ;;
    *) echo bob ;;
esac
"#,
    );
    // Room for 2 × 100 MB through a pipe on a slow machine.
    let s = start(
        dir.path(),
        json!({"validate": exec(&v), "validate_timeout_secs": 30}),
        &[],
    );
    let mut bob = login(&s, RAW, "bob");
    // A 100 MB "first line": no user id.
    expect_refused(&s, RAW, Some("sid=zeros"), 401);
    // A user id, then 100 MB: the id is read, the rest discarded.
    let mut alice = login(&s, RAW, "first");
    alice.raw_ping_pong();
    bob.raw_ping_pong();
    let hwm = status_kb(s.pid(), "VmHWM");
    assert!(
        hwm < 100 * 1024,
        "server peak RSS {hwm} kB: worker output is not bounded"
    );
    login(&s, RAW, "bob").raw_ping_pong();
}

#[test]
fn many_concurrent_validations_are_all_answered_without_zombies() {
    const N: usize = 300;
    let dir = tempfile::tempdir().unwrap();
    let v = script(dir.path(), "validate.sh", "sleep 0.3\necho \"u$$\"");
    let s = start(
        dir.path(),
        json!({"validate": exec(&v), "max_workers": 16, "max_queued_jobs": 50}),
        &[],
    );
    let barrier = Arc::new(Barrier::new(N));
    let threads: Vec<_> = (0..N)
        .map(|i| {
            let (addr, barrier) = (s.addr(), barrier.clone());
            thread::spawn(move || {
                barrier.wait();
                let sid = format!("sid=c{i}");
                let r = connect_timeout(&addr, RAW, &[("Cookie", &sid)], T);
                let retry_after = match &r {
                    Err(ConnectError::Refused(refusal)) => {
                        refusal.header("retry-after").map(String::from)
                    }
                    _ => None,
                };
                (r, retry_after)
            })
        })
        .collect();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut open = Vec::new();
    for t in threads {
        let (r, retry_after) = t.join().unwrap();
        let key = match &r {
            Ok(_) => "101".to_string(),
            Err(ConnectError::Refused(refusal)) => {
                if refusal.status == 503 {
                    assert!(retry_after.is_some(), "503 without Retry-After");
                }
                refusal.status.to_string()
            }
            Err(e) => format!("no answer: {e:?}"),
        };
        *counts.entry(key).or_default() += 1;
        if let Ok(c) = r {
            open.push(c);
        }
    }
    eprintln!("{N} concurrent validations: {counts:?}");
    let answered: usize = ["101", "401", "503"]
        .iter()
        .map(|k| counts.get(*k).copied().unwrap_or(0))
        .sum();
    assert_eq!(
        answered, N,
        "every handshake answered 101/401/503: {counts:?}"
    );
    assert!(
        counts.get("503").copied().unwrap_or(0) > 0,
        "queue full → 503: {counts:?}"
    );
    assert!(
        counts.get("101").copied().unwrap_or(0) > 0,
        "some accepted: {counts:?}"
    );

    for c in open.iter_mut().take(5) {
        c.raw_ping_pong();
    }
    drop(open);
    let pid = s.pid();
    assert!(
        wait_until(T, || workers_of(pid).is_empty()),
        "children of the server left (zombies are 'Z'): {:?}",
        workers_of(pid)
    );
    assert_eq!(s.get("/up").status, 200);
    login(&s, RAW, "after").raw_ping_pong();
}

#[test]
fn http_validation_asks_the_auth_endpoint() {
    let auth = MiniHttp::start(Arc::new(|req: &SeenRequest| {
        let cookie = req.headers.get("cookie").cloned().unwrap_or_default();
        if cookie.contains("sid=good") {
            (200, r#"{"id":"u7","name":"Ursula"}"#.into())
        } else if cookie.contains("sid=numeric") {
            (200, r#"{"id":42}"#.into())
        } else if cookie.contains("sid=banned") {
            (403, r#"{"error":"banned"}"#.into())
        } else if cookie.contains("sid=noid") {
            (200, r#"{"name":"who"}"#.into())
        } else {
            (401, r#"{"error":"login"}"#.into())
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        dir.path(),
        json!({"validate": {"handler": "http", "url": auth.url("/auth.php")}}),
        &SECRET_ENV,
    );
    let mut c = s
        .try_ws(
            RAW,
            &[("Cookie", "a=1; sid=good"), ("Authorization", "Bearer abc")],
        )
        .unwrap_or_else(|e| panic!("sid=good: {e:?}\nlogs:\n{}", s.logs_text()));
    c.raw_ping_pong();
    assert!(is_fifo(&user_fifo(&s, "u7")), "the user id is u7");
    let mut n = login(&s, "/ws", "numeric");
    n.ping_pong();
    assert!(is_fifo(&user_fifo(&s, "42")), "a numeric id is a user id");
    expect_refused(&s, RAW, Some("sid=banned"), 403);
    expect_refused(&s, RAW, Some("sid=noid"), 401);
    expect_refused(&s, RAW, Some("sid=other"), 401);
    expect_refused(&s, RAW, None, 401);

    let seen = auth.seen();
    let good = seen
        .iter()
        .find(|r| {
            r.headers
                .get("cookie")
                .is_some_and(|c| c.contains("sid=good"))
        })
        .expect("the auth endpoint saw the good request");
    assert_eq!(
        (good.method.as_str(), good.path.as_str()),
        ("GET", "/auth.php")
    );
    assert_eq!(
        good.headers.get("cookie").map(String::as_str),
        Some("a=1; sid=good")
    );
    assert_eq!(
        good.headers.get("authorization").map(String::as_str),
        Some("Bearer abc")
    );
    assert_eq!(
        good.headers.get("x-forwarded-for").map(String::as_str),
        Some("127.0.0.1")
    );
    for r in &seen {
        let all = format!("{r:?}");
        assert!(
            !all.contains("topsecret") && !all.contains("hunter2"),
            "{all}"
        );
    }

    // An auth endpoint that is down: 401, and the server goes on.
    let closed_port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir2 = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{closed_port}/auth");
    let s2 = start(
        dir2.path(),
        json!({"validate": {"handler": "http", "url": url}}),
        &[],
    );
    expect_refused(&s2, RAW, Some("sid=good"), 401);
    assert_eq!(s2.get("/up").status, 200);
}

// ---------------------------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------------------------

const ROUTE: &str = r#"
case "$REQUEST_URI" in
    empty) ;;
    fail) echo partial; exit 3 ;;
    crash) ulimit -c 0; kill -SEGV $$ ;;
    hang) sleep 60 ;;
    env) env ;;
    stdin) echo "stdin:$(cat)" ;;
    big) head -c 300000 /dev/zero | tr '\0' x ;;
    slow-1) sleep 0.4; echo reply-1 ;;
    slow-2) sleep 0.2; echo reply-2 ;;
    slow-3) echo reply-3 ;;
    *) echo "hello $FERROCAST_USER_ID: $REQUEST_URI" ;;
esac
"#;

#[test]
fn routing_answers_the_sender_only() {
    let dir = tempfile::tempdir().unwrap();
    let r = script(dir.path(), "route.sh", ROUTE);
    let s = start(
        dir.path(),
        json!({"route": exec(&r), "route_timeout_secs": 2, "max_worker_output_bytes": 100000}),
        &SECRET_ENV,
    );
    let mut a = s
        .try_ws(
            "/chat?room=1",
            &[("Cookie", "sid=abc"), ("X-Custom", "yes")],
        )
        .expect("raw client a");
    let mut b = s.ws("/other");
    a.raw_ping_pong(); // answered by the server, no process

    a.send_text("hi");
    let hello = a.recv_text(T);
    assert!(
        hello.starts_with("hello ") && hello.ends_with(": hi"),
        "{hello:?}"
    );
    assert_nothing_pending(&mut b, "client b");

    a.send_text("stdin");
    assert_eq!(a.recv_text(T), "stdin:stdin", "the message is on stdin too");

    a.send_text("empty");
    let t = a.recv_text(T);
    assert!(
        t.starts_with("[ferrocast] the application produced no output"),
        "{t:?}"
    );

    a.send_text("fail");
    assert_eq!(
        a.recv_text(T),
        "[ferrocast] the application failed (exit 3)"
    );
    a.send_text("crash");
    let t = a.recv_text(T);
    assert!(
        t.starts_with("[ferrocast] the application crashed (signal 11)"),
        "{t:?}"
    );
    a.send_text("after-failures");
    assert!(
        a.recv_text(T).ends_with(": after-failures"),
        "the connection survives failures"
    );

    // A message the environment cannot carry (NUL): a notice, not a dead connection.
    a.send_text("a\u{0}b");
    let t = a.recv_text(T);
    assert!(t.starts_with("[ferrocast] the application"), "{t:?}");
    a.raw_ping_pong();

    a.send_text("hang");
    let t = a.recv_text(T);
    assert!(
        t.starts_with("[ferrocast] the application did not answer in time"),
        "{t:?}"
    );

    a.send_text("big");
    let first = a.recv_text(T);
    assert_eq!(first.len(), 100000, "output cut at max_worker_output_bytes");
    assert!(first.bytes().all(|b| b == b'x'));
    let t = a.recv_text(T);
    assert!(t.starts_with("[ferrocast] output cut at"), "{t:?}");

    // max_inflight_per_connection = 1: replies in request order, whatever each one takes.
    for m in ["slow-1", "slow-2", "slow-3"] {
        a.send_text(m);
    }
    for want in ["reply-1", "reply-2", "reply-3"] {
        assert_eq!(a.recv_text(T), want);
    }

    a.send_text("env");
    let text = a.recv_text(T);
    let env = env_map(&text);
    let port = s.port().to_string();
    for (k, want) in [
        ("REQUEST_URI", "env"),
        ("QUERY_STRING", "room=1"),
        ("HTTP_COOKIE", "sid=abc"),
        ("HTTP_X_CUSTOM", "yes"),
        ("REMOTE_ADDR", "127.0.0.1"),
        ("SERVER_PORT", port.as_str()),
    ] {
        assert_eq!(env.get(k).map(String::as_str), Some(want), "{k} in: {text}");
    }
    let socket_id = env.get("FERROCAST_SOCKET_ID").expect("FERROCAST_SOCKET_ID");
    assert_eq!(
        env.get("FERROCAST_USER_ID"),
        Some(socket_id),
        "no validation: the user is the socket id"
    );
    assert_eq!(hello, format!("hello {socket_id}: hi"));
    assert_no_server_env(&env, &text);

    a.raw_ping_pong();
    assert_nothing_pending(&mut b, "client b");
    // b routes too, and gets its own answers.
    b.send_text("from-b");
    assert!(b.recv_text(T).ends_with(": from-b"));
    assert_nothing_pending(&mut a, "client a");
}

#[test]
fn http_routing_posts_the_message() {
    let app = MiniHttp::start(Arc::new(|req: &SeenRequest| match req.body.as_str() {
        "fail" => (500, "oops".into()),
        body => {
            let user = req
                .headers
                .get("x-ferrocast-user")
                .cloned()
                .unwrap_or_default();
            (
                200,
                format!("{{\"echo\":{},\"user\":\"{user}\"}}", json!(body)),
            )
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let v = script(dir.path(), "validate.sh", VALIDATE);
    let s = start(
        dir.path(),
        json!({"validate": exec(&v), "route": {"handler": "http", "url": app.url("/ws-route")}}),
        &[],
    );
    let mut a = login(&s, RAW, "alice");
    a.send_text("hello there");
    let v: Value = serde_json::from_str(&a.recv_text(T)).expect("JSON reply");
    assert_eq!(v, json!({"echo": "hello there", "user": "alice"}));
    a.send_text("fail");
    assert_eq!(
        a.recv_text(T),
        "[ferrocast] the application failed (exit 1)"
    );
    a.raw_ping_pong();
    let seen = app.seen();
    let post = seen
        .iter()
        .find(|r| r.body == "hello there")
        .expect("POST seen");
    assert_eq!(
        (post.method.as_str(), post.path.as_str()),
        ("POST", "/ws-route")
    );
    assert_eq!(
        post.headers.get("x-ferrocast-user").map(String::as_str),
        Some("alice")
    );
    assert_eq!(
        post.headers.get("cookie").map(String::as_str),
        Some("sid=alice")
    );
}

/// A validated connection's routed requests carry the handshake's CGI environment (the cookie
/// the PHP session needs) and the validated user.
#[test]
fn routing_after_validation_keeps_the_handshake_environment() {
    let dir = tempfile::tempdir().unwrap();
    let v = script(dir.path(), "validate.sh", VALIDATE);
    let r = script(dir.path(), "route.sh", ROUTE);
    let s = start(
        dir.path(),
        json!({"validate": exec(&v), "route": exec(&r)}),
        &SECRET_ENV,
    );
    let mut a = login(&s, "/chat?room=2", "alice");
    a.send_text("hi");
    assert_eq!(a.recv_text(T), "hello alice: hi");
    a.send_text("env");
    let text = a.recv_text(T);
    let env = env_map(&text);
    assert_eq!(
        env.get("FERROCAST_USER_ID").map(String::as_str),
        Some("alice"),
        "{text}"
    );
    assert_eq!(
        env.get("HTTP_COOKIE").map(String::as_str),
        Some("sid=alice"),
        "{text}"
    );
    assert_eq!(
        env.get("QUERY_STRING").map(String::as_str),
        Some("room=2"),
        "{text}"
    );
    assert!(env.contains_key("FERROCAST_SOCKET_ID"), "{text}");
    assert_no_server_env(&env, &text);
}

// ---------------------------------------------------------------------------------------------
// Per-user FIFOs
// ---------------------------------------------------------------------------------------------

#[test]
fn user_fifo_delivers_to_all_of_a_users_connections() {
    let dir = tempfile::tempdir().unwrap();
    let v = script(dir.path(), "validate.sh", VALIDATE);
    let mut s = start(dir.path(), json!({"validate": exec(&v)}), &[]);
    let mut a1 = login(&s, RAW, "alice");
    let mut a2 = login(&s, "/ws", "alice");
    let mut b = login(&s, RAW, "bob");
    let alice = user_fifo(&s, "alice");
    let bob = user_fifo(&s, "bob");
    assert!(is_fifo(&alice), "{} exists", alice.display());
    assert!(is_fifo(&bob), "{} exists", bob.display());

    fifo_write(&alice, b"for alice\n");
    assert_eq!(a1.recv_text(T), "for alice");
    assert_eq!(a2.recv_text(T), "for alice");
    assert_nothing_pending(&mut b, "bob");

    // An unsafe user id is hex-encoded.
    let _evil = login(&s, RAW, "evil");
    let hex = user_fifo(&s, &format!("hex-{}", "2e2e2f6576696c")); // "../evil"
    assert!(is_fifo(&hex), "{} exists", hex.display());
    assert!(!s.fifo().parent().unwrap().join("evil.fifo").exists());

    // The FIFO lives as long as the user's last connection.
    a1.close();
    assert!(is_fifo(&alice), "alice still has a connection");
    fifo_write(&alice, b"still here\n");
    assert_eq!(a2.recv_text(T), "still here");
    a2.close();
    assert!(
        wait_until(T, || !alice.exists()),
        "alice's FIFO removed after her last connection"
    );
    assert!(is_fifo(&bob));

    // Shutdown removes the rest.
    s.signal(Signal::SIGTERM);
    assert!(s.wait_exit(T).success());
    assert!(!bob.exists(), "bob's FIFO removed on shutdown");
    assert!(!hex.exists(), "the hex FIFO removed on shutdown");
}

#[test]
fn user_fifo_route_sends_the_output_to_the_user() {
    let dir = tempfile::tempdir().unwrap();
    let v = script(dir.path(), "validate.sh", VALIDATE);
    let r = script(dir.path(), "route.sh", ROUTE);
    let s = start(
        dir.path(),
        json!({"validate": exec(&v), "route": exec(&r), "user_fifo": "route"}),
        &[],
    );
    let mut a1 = login(&s, RAW, "alice");
    let mut a2 = login(&s, RAW, "alice");
    let mut b = login(&s, RAW, "bob");
    fifo_write(&user_fifo(&s, "alice"), b"notify\n");
    assert_eq!(a1.recv_text(T), "hello alice: notify");
    assert_eq!(a2.recv_text(T), "hello alice: notify");
    assert_nothing_pending(&mut b, "bob");
    // And each connection's own messages still go to it alone.
    a1.send_text("mine");
    assert_eq!(a1.recv_text(T), "hello alice: mine");
    assert_nothing_pending(&mut a2, "alice's other connection");
}

#[test]
fn user_fifo_off_creates_no_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let v = script(dir.path(), "validate.sh", VALIDATE);
    let s = start(
        dir.path(),
        json!({"validate": exec(&v), "user_fifo": "off"}),
        &[],
    );
    let mut a = login(&s, RAW, "alice");
    a.raw_ping_pong();
    assert!(!user_fifo(&s, "alice").exists());
    s.publish_line("global still works");
    assert_eq!(a.recv_text(T), "global still works");
}

/// A regular file where a user's FIFO goes (what `file_put_contents()` leaves when it writes to
/// the FIFO of a user who is not connected, if it may create files there) must not cost that
/// user the FIFO for good.
#[test]
fn stale_regular_file_in_place_of_a_user_fifo_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let v = script(dir.path(), "validate.sh", VALIDATE);
    let s = start(dir.path(), json!({"validate": exec(&v)}), &[]);
    let alice = user_fifo(&s, "alice");
    std::fs::create_dir_all(alice.parent().unwrap()).unwrap();
    std::fs::write(&alice, "written while alice was offline\n").unwrap();
    let mut a = login(&s, RAW, "alice");
    a.raw_ping_pong();
    assert!(
        is_fifo(&alice),
        "{} is still a regular file: alice gets no per-user FIFO\nlogs:\n{}",
        alice.display(),
        s.logs_text()
    );
    fifo_write(&alice, b"now\n");
    assert_eq!(a.recv_text(T), "now");
}

/// Validation accepts user ids of up to 256 bytes; each gets a per-user FIFO whose name fits in a
/// directory entry (255 bytes), however it is encoded.
#[test]
fn long_user_ids_get_a_user_fifo() {
    let dir = tempfile::tempdir().unwrap();
    let v = script(
        dir.path(),
        "validate.sh",
        r#"
case "$HTTP_COOKIE" in
    *sid=long*) printf 'u%.0s' $(seq 200); echo ;;
    *) printf 'user/%.0s' $(seq 40); echo ;;
esac
"#,
    );
    let s = start(dir.path(), json!({"validate": exec(&v)}), &[]);
    let users = s.fifo().parent().unwrap().join("users");
    let fifos = || -> Vec<String> {
        std::fs::read_dir(&users)
            .map(|d| {
                d.flatten()
                    .filter(|e| is_fifo(&e.path()))
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut long = login(&s, RAW, "long"); // 200 safe bytes
    long.raw_ping_pong();
    assert_eq!(
        fifos().len(),
        1,
        "no FIFO for a 200-byte user id\nlogs:\n{}",
        s.logs_text()
    );
    let mut unsafe_id = login(&s, RAW, "slashes"); // 200 bytes that need encoding
    unsafe_id.raw_ping_pong();
    assert_eq!(
        fifos().len(),
        2,
        "no FIFO for a 200-byte unsafe user id\nlogs:\n{}",
        s.logs_text()
    );
}

/// "../evil" is stored as `hex-2e2e2f6576696c.fifo`; the user literally named
/// "hex-2e2e2f6576696c" (all safe characters) must not share that FIFO.
#[test]
fn user_fifo_names_never_collide() {
    let dir = tempfile::tempdir().unwrap();
    let v = script(
        dir.path(),
        "validate.sh",
        r#"
case "$HTTP_COOKIE" in
    *sid=dots*) echo "../evil" ;;
    *) echo "hex-2e2e2f6576696c" ;;
esac
"#,
    );
    let s = start(dir.path(), json!({"validate": exec(&v)}), &[]);
    let mut dots = login(&s, RAW, "dots");
    let mut lookalike = login(&s, RAW, "lookalike");
    let users = s.fifo().parent().unwrap().join("users");
    let count = std::fs::read_dir(&users)
        .unwrap()
        .flatten()
        .filter(|e| is_fifo(&e.path()))
        .count();
    assert_eq!(
        count, 2,
        "two users, one FIFO: lines for one reach the other"
    );
    dots.raw_ping_pong();
    lookalike.raw_ping_pong();
}

/// Lines written to a user's FIFO for a client that does not read are held to
/// `outbound_queue_bytes` like every other delivery: the client is closed as a slow consumer.
#[test]
fn user_fifo_flood_to_a_stalled_client_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let v = script(dir.path(), "validate.sh", VALIDATE);
    let s = start(
        dir.path(),
        json!({"validate": exec(&v), "outbound_queue_bytes": 65536}),
        &[],
    );
    let mut stalled = RawConn::from_stream(tiny_rcvbuf_stream(&s.addr()));
    stalled
        .send(handshake_request(RAW, "sid=alice").as_bytes())
        .unwrap();
    let resp = stalled.read_http_response(T).expect("handshake answer");
    assert_eq!(resp.status, 101);
    let fifo = user_fifo(&s, "alice");
    assert!(wait_until(T, || is_fifo(&fifo)));
    // 16 MB in 60 kB lines; the FIFO may vanish once the client is dropped (then writes fail).
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open alice's FIFO");
    let line = format!("{}\n", "y".repeat(60_000));
    let mut written = 0usize;
    let deadline = std::time::Instant::now() + T;
    while written < 16_000_000 && std::time::Instant::now() < deadline {
        match f.write(line.as_bytes()) {
            Ok(n) => written += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5))
            }
            Err(_) => break, // nobody reads it any more
        }
    }
    drop(f);
    assert!(
        s.wait_for_log("slow consumer", T).is_some(),
        "no slow-consumer close after {written} bytes for a client that reads nothing; server RSS {} kB",
        status_kb(s.pid(), "VmRSS")
    );
}

// ---------------------------------------------------------------------------------------------
// The examples
// ---------------------------------------------------------------------------------------------

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

#[test]
fn shell_examples() {
    let sessions = tempfile::tempdir().unwrap();
    std::fs::write(sessions.path().join("abc123"), "alice\n").unwrap();
    std::fs::write(sessions.path().join("evil1"), "banned:eve\n").unwrap();
    let ex = examples_dir();
    let validate = ex.join("validate.sh").display().to_string();
    let route = ex.join("route.sh").display().to_string();
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        dir.path(),
        json!({
            "validate": {"handler": "exec",
                         "command": ["/bin/sh", validate, sessions.path().display().to_string()]},
            "route": {"handler": "exec", "command": ["/bin/sh", route]},
            "user_fifo": "route",
        }),
        &[],
    );
    let mut a = cookie(&s, RAW, "x=1; sid=abc123").expect("alice accepted");
    expect_refused(&s, RAW, Some("sid=evil1"), 403);
    expect_refused(&s, RAW, Some("sid=nope"), 401);
    expect_refused(&s, RAW, Some("sid=../abc123"), 401);
    expect_refused(&s, RAW, None, 401);
    a.send_text("/whoami");
    assert_eq!(a.recv_json(T), json!({"route": "/whoami", "user": "alice"}));
    a.send_text("/echo?text=hi \"there\"");
    assert_eq!(
        a.recv_json(T),
        json!({"route": "/echo", "echo": "hi \"there\""})
    );
    a.send_text("/silent");
    assert!(
        a.recv_text(T)
            .starts_with("[ferrocast] the application produced no output")
    );
    a.send_text("/nowhere");
    assert_eq!(a.recv_json(T)["error"], "no route");
    fifo_write(&user_fifo(&s, "alice"), b"/whoami\n");
    assert_eq!(a.recv_json(T), json!({"route": "/whoami", "user": "alice"}));
}

fn find_php() -> Option<PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .chain(["/usr/bin".into(), "/usr/local/bin".into()])
        .map(|d| d.join("php"))
        .find(|p| p.is_file())
}

/// The per-user push helper of the README's PHP section, verbatim.
const PHP_PUSH: &str = r#"<?php
/**
 * The FIFO of one user: the id itself when plainly safe, else "hex-" + bin2hex(id), or
 * "sha256-" + sha256(id) when the hex form would be over 240 characters.
 */
function ferrocast_user_fifo(string $userId, string $dir = '/run/ferrocast'): string
{
    $safe = preg_match('/\A[A-Za-z0-9_@-][A-Za-z0-9_.@-]{0,127}\z/', $userId) === 1
        && !str_starts_with($userId, 'hex-') && !str_starts_with($userId, 'sha256-');
    $hex = bin2hex($userId);
    $name = $safe ? $userId : (strlen($hex) <= 240 ? "hex-$hex" : 'sha256-' . hash('sha256', $userId));
    return "$dir/users/$name.fifo";
}

/** Sends one line to every connection of $userId; false when the user is not connected. */
function ferrocast_push_user(string $userId, string $message, string $dir = '/run/ferrocast'): bool
{
    $path = ferrocast_user_fifo($userId, $dir);
    if (@filetype($path) !== 'fifo') {
        return false; // not connected: no FIFO (and never create a regular file in its place)
    }
    $fifo = @fopen($path, 'r+'); // r+: never creates the file, never blocks on a FIFO
    if ($fifo === false) {
        return false; // the user just left
    }
    $line = str_replace(["\r", "\n"], ' ', $message) . "\n";
    $ok = fwrite($fifo, $line) === strlen($line); // one write, atomic up to 4096 bytes
    fclose($fifo);
    return $ok;
}
"#;

#[test]
fn php_examples() {
    let php = find_php()
        .expect("php-cli is not installed: tests/run.sh installs it (apt-get install php-cli)");
    let php = php.display().to_string();
    let sessions = tempfile::tempdir().unwrap();
    let sp = sessions.path();
    std::fs::write(sp.join("sess_abc123"), r#"user_id|s:5:"alice";"#).unwrap();
    std::fs::write(sp.join("sess_evil1"), r#"user_id|s:3:"eve";banned|b:1;"#).unwrap();
    std::fs::write(sp.join("sess_anon1"), r#"cart|a:0:{}"#).unwrap();
    std::fs::write(sp.join("sess_evil2"), r#"user_id|s:7:"../evil";"#).unwrap();
    let ex = examples_dir();
    let dir = tempfile::tempdir().unwrap();
    let s = start(
        dir.path(),
        json!({
            "validate": {"handler": "exec", "command": [
                php.as_str(), "-d", format!("session.save_path={}", sp.display()),
                ex.join("validate.php").display().to_string()]},
            "route": {"handler": "exec", "command": [
                php.as_str(), ex.join("route.php").display().to_string()]},
            "user_fifo": "route",
            // php-cli can take a while to start on a loaded machine.
            "validate_timeout_secs": 15,
        }),
        &SECRET_ENV,
    );
    let mut a = cookie(&s, RAW, "theme=dark; PHPSESSID=abc123")
        .unwrap_or_else(|e| panic!("alice refused: {e:?}\nlogs:\n{}", s.logs_text()));
    expect_refused(&s, RAW, Some("PHPSESSID=evil1"), 403);
    expect_refused(&s, RAW, Some("PHPSESSID=anon1"), 401);
    expect_refused(&s, RAW, Some("PHPSESSID=unknown9"), 401);
    expect_refused(&s, RAW, Some("PHPSESSID=../../etc/passwd"), 401);
    expect_refused(&s, "/ws", None, 401);
    assert!(
        !sp.join("sess_unknown9").exists(),
        "an unknown id leaves no session file"
    );

    check_example_routes(&mut a, "alice");
    // A push through alice's FIFO, routed on her behalf.
    fifo_write(&user_fifo(&s, "alice"), b"/whoami\n");
    let v = a.recv_json(T);
    assert_eq!(v["user"], "alice", "{v}");

    // The README's push helper, from PHP: to a connected user (an id that needs hex-encoding
    // too), and to one who is not connected.
    let mut evil = cookie(&s, RAW, "PHPSESSID=evil2").expect("../evil accepted");
    let helper = dir.path().join("push.php");
    let fifo_dir = s.fifo().parent().unwrap().display().to_string();
    std::fs::write(
        &helper,
        format!(
            "{PHP_PUSH}\n$d = {dir:?};\n\
             var_export([ferrocast_push_user('alice', '/whoami', $d),\n\
                         ferrocast_push_user('../evil', '/users/7', $d),\n\
                         ferrocast_push_user('offline', '/whoami', $d)]);\n",
            dir = fifo_dir
        ),
    )
    .unwrap();
    let out = std::process::Command::new(&php)
        .arg(&helper)
        .output()
        .expect("run php");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.split_whitespace().collect::<String>(),
        "array(0=>true,1=>true,2=>false,)"
    );
    let v = a.recv_json(T);
    assert_eq!(v["user"], "alice", "{v}");
    assert_eq!(
        evil.recv_json(T),
        json!({"route": "/users/{id}", "id": 7, "requested_by": "../evil"})
    );
    assert!(
        !user_fifo(&s, "offline").exists(),
        "no file left for an offline user"
    );
}
