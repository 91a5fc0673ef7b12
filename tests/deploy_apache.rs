//! Deployment behind Apache 2.4: a private Apache (Debian's apache2 package) built from
//! tests/apache/httpd.conf.in, serving a DocumentRoot that holds the repository's
//! apache/.htaccess (its backend port replaced by the test server's), proxies WebSocket
//! handshakes to a real ferrocast. Real WebSocket clients talk to Apache only.
//!
//! Needs: apache2 (`apt-get install -y apache2`). Missing, the tests fail and say so.

mod common;

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use tungstenite::client::IntoClientRequest;

const APACHE: &str = "/usr/sbin/apache2";
const MODULES: &str = "/usr/lib/apache2/modules";
const INDEX_MARKER: &str = "ferrocast-apache-test-page";

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn require_apache() {
    assert!(
        Path::new(APACHE).is_file(),
        "{APACHE} not found: these tests need Debian's apache2 package (apt-get install -y apache2)"
    );
    for m in [
        "mod_proxy.so",
        "mod_proxy_http.so",
        "mod_proxy_wstunnel.so",
        "mod_rewrite.so",
        "mod_mpm_event.so",
    ] {
        let p = Path::new(MODULES).join(m);
        assert!(
            p.is_file(),
            "{} not found: install apache2 (apt-get install -y apache2)",
            p.display()
        );
    }
}

/// A port that was free a moment ago on 127.0.0.1.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A private Apache in the foreground (`-DFOREGROUND`), stopped by its PID on drop.
struct Apache {
    child: Option<Child>,
    root: tempfile::TempDir,
    port: u16,
}

impl Apache {
    /// Writes httpd.conf and the DocumentRoot (index.html + the repository's .htaccess pointing at
    /// `backend_port`), starts Apache and waits until it serves index.html.
    fn start(backend_port: u16) -> Apache {
        Apache::start_with(backend_port, |c| c)
    }

    /// Like `start`, with `tweak` applied to the generated httpd.conf text.
    fn start_with(backend_port: u16, tweak: impl Fn(String) -> String) -> Apache {
        require_apache();
        let mut last_err = String::new();
        // The port is picked before Apache binds it: retry if something else grabbed it.
        for _ in 0..3 {
            match Apache::try_start(backend_port, &tweak) {
                Ok(a) => return a,
                Err(e) => last_err = e,
            }
        }
        panic!("Apache did not start:\n{last_err}");
    }

    fn try_start(backend_port: u16, tweak: &dyn Fn(String) -> String) -> Result<Apache, String> {
        let root = tempfile::tempdir().expect("tempdir");
        let server_root = root.path().to_path_buf();
        let docroot = server_root.join("htdocs");
        std::fs::create_dir(&docroot).unwrap();
        // Run as root, Apache's workers become www-data: they must traverse and read these.
        use std::os::unix::fs::PermissionsExt;
        for d in [&server_root, &docroot] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).unwrap();
        }

        // .htaccess: the repository's file, the backend port replaced (it occurs exactly once).
        let htaccess = std::fs::read_to_string(manifest_dir().join("apache/.htaccess"))
            .expect("read apache/.htaccess");
        assert_eq!(
            htaccess.matches("127.0.0.1:8080").count(),
            1,
            "apache/.htaccess should name the backend 127.0.0.1:8080 exactly once"
        );
        let htaccess = htaccess.replace("127.0.0.1:8080", &format!("127.0.0.1:{backend_port}"));
        std::fs::write(docroot.join(".htaccess"), htaccess).unwrap();
        std::fs::write(
            docroot.join("index.html"),
            format!("<!doctype html><title>{INDEX_MARKER}</title><p>{INDEX_MARKER}</p>\n"),
        )
        .unwrap();
        for f in [".htaccess", "index.html"] {
            std::fs::set_permissions(docroot.join(f), std::fs::Permissions::from_mode(0o644))
                .unwrap();
        }

        let port = free_port();
        let template = std::fs::read_to_string(manifest_dir().join("tests/apache/httpd.conf.in"))
            .expect("read tests/apache/httpd.conf.in");
        let conf = template
            .replace("@SERVERROOT@", server_root.to_str().unwrap())
            .replace("@DOCROOT@", docroot.to_str().unwrap())
            .replace("@BACKEND_PORT@", &backend_port.to_string())
            .replace("@PORT@", &port.to_string());
        assert!(
            !conf.contains('@'),
            "unreplaced placeholder in httpd.conf:\n{conf}"
        );
        let conf = tweak(conf);
        let conf_path = server_root.join("httpd.conf");
        std::fs::write(&conf_path, conf).unwrap();

        // Syntax check first: a clear message instead of a silent exit.
        let check = Command::new(APACHE)
            .arg("-f")
            .arg(&conf_path)
            .arg("-t")
            .output()
            .map_err(|e| format!("cannot run {APACHE}: {e}"))?;
        if !check.status.success() {
            panic!(
                "apache2 -t rejected the configuration:\n{}{}",
                String::from_utf8_lossy(&check.stdout),
                String::from_utf8_lossy(&check.stderr)
            );
        }

        let child = Command::new(APACHE)
            .arg("-f")
            .arg(&conf_path)
            .arg("-DFOREGROUND")
            // Its own process group (id = its PID), so that the fallback SIGKILL also reaches
            // the worker process.
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {APACHE}: {e}"))?;
        let mut apache = Apache {
            child: Some(child),
            root,
            port,
        };

        // Ready when index.html comes back through it.
        let deadline = Instant::now() + START;
        loop {
            if let Some(st) = apache.child.as_mut().unwrap().try_wait().unwrap() {
                apache.child = None;
                return Err(format!(
                    "apache2 exited with {st}; error.log:\n{}",
                    apache.error_log()
                ));
            }
            if let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) {
                let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                use std::io::Write;
                let req = format!(
                    "GET /index.html HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
                );
                if s.write_all(req.as_bytes()).is_ok() {
                    let mut c = RawConn::from_stream(s);
                    if let Some(r) = c.read_http_response(Duration::from_secs(2))
                        && r.status == 200
                        && r.body_text().contains(INDEX_MARKER)
                    {
                        return Ok(apache);
                    }
                }
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "apache2 did not serve index.html on port {port} within {START:?}; error.log:\n{}",
                    apache.error_log()
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn error_log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("error.log")).unwrap_or_default()
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.root.path().join("access.log")).unwrap_or_default()
    }

    fn pid_file(&self) -> PathBuf {
        self.root.path().join("httpd.pid")
    }

    /// SIGTERM to the Apache parent (its PID), then SIGKILL if it has not exited in 10 s.
    fn stop(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        let _ = nix::sys::signal::kill(pid, Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Some(st);
            }
            if Instant::now() >= deadline {
                // The group Apache leads (process_group(0) at spawn): parent and workers.
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(-pid.as_raw()),
                    Signal::SIGKILL,
                );
                return child.wait().ok();
            }
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Apache {
    fn drop(&mut self) {
        let panicking = thread::panicking();
        self.stop();
        if panicking {
            eprintln!(
                "----- apache error.log -----\n{}\n----- apache access.log -----\n{}\n-----",
                self.error_log(),
                self.access_log()
            );
        }
    }
}

/// A TCP connection to `addr` from a chosen local loopback address (e.g. 127.0.0.2), so that
/// Apache sees a client address different from its own 127.0.0.1.
fn tcp_from(local: Ipv4Addr, addr: SocketAddrV4) -> TcpStream {
    // SAFETY: plain socket calls on a descriptor we own; it is handed to TcpStream at the end.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", io::Error::last_os_error());
        let stream = TcpStream::from_raw_fd(fd);
        let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        };
        let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
        let l = sin(local, 0);
        let r = libc::bind(fd, &l as *const _ as *const libc::sockaddr, len);
        assert_eq!(r, 0, "bind {local}: {}", io::Error::last_os_error());
        let a = sin(*addr.ip(), addr.port());
        let r = libc::connect(fd, &a as *const _ as *const libc::sockaddr, len);
        assert_eq!(
            r,
            0,
            "connect {addr} from {local}: {}",
            io::Error::last_os_error()
        );
        stream
    }
}

/// A WebSocket client on `ws://addr{path}` whose TCP connection comes from `local`.
fn ws_from(local: Ipv4Addr, addr: &str, path: &str, headers: &[(&str, &str)]) -> Client {
    let sa: SocketAddrV4 = addr.parse().unwrap();
    let stream = tcp_from(local, sa);
    let _ = stream.set_nodelay(true);
    stream.set_read_timeout(Some(T)).unwrap();
    stream.set_write_timeout(Some(T)).unwrap();
    let mut req = format!("ws://{addr}{path}").into_client_request().unwrap();
    for (k, v) in headers {
        let name = tungstenite::http::HeaderName::from_bytes(k.as_bytes()).unwrap();
        req.headers_mut().insert(name, v.parse().unwrap());
    }
    match tungstenite::client::client(req, stream) {
        Ok((ws, resp)) => {
            assert_eq!(
                resp.status().as_u16(),
                101,
                "handshake through Apache on {path}"
            );
            Client { ws, pings: 0 }
        }
        Err(e) => panic!("WebSocket handshake through Apache on {path} failed: {e:?}"),
    }
}

/// Waits for the debug line ferrocast logs when it closes connection N:
/// `connection N from ADDR closed: ...`; returns ADDR.
fn closed_from(server: &Server, mark: usize) -> Vec<String> {
    server
        .logs()
        .into_iter()
        .skip(mark)
        .filter_map(|l| {
            let i = l.find("connection ")?;
            let rest = &l[i..];
            let (_, after) = rest.split_once(" from ")?;
            let (addr, tail) = after.split_once(' ')?;
            tail.starts_with("closed").then(|| addr.to_string())
        })
        .collect()
}

fn wait_closed_from(server: &Server, mark: usize, want: &str) -> Vec<String> {
    let ok = server
        .wait_for_log_where(mark, T, |l| {
            l.contains(" closed") && l.contains(&format!(" from {want}"))
        })
        .is_some();
    let got = closed_from(server, mark);
    assert!(
        ok,
        "expected ferrocast to log `connection N from {want}... closed`; closed-connection addresses seen: {got:?}; logs:\n{}",
        server.logs_text()
    );
    got
}

const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

#[test]
fn websocket_and_html_through_apache() {
    let server = Server::start(&["--set", "trusted_proxies=127.0.0.1"], &[]);
    let apache = Apache::start(server.port());

    // Plain HTTP: Apache serves the site itself.
    for path in ["/index.html", "/"] {
        let r = http_get(&apache.addr(), path);
        assert_eq!(r.status, 200, "GET {path} through Apache: {r:?}");
        assert!(
            r.body_text().contains(INDEX_MARKER),
            "GET {path}: {:?}",
            r.body_text()
        );
    }
    // Plain HTTP on /ws is not proxied by the .htaccess (only upgrades are): Apache's own 404,
    // not ferrocast's JSON.
    let r = http_get(&apache.addr(), "/ws");
    assert_eq!(r.status, 404, "plain GET /ws through Apache: {r:?}");
    assert!(
        !r.body_text().contains("\"error\""),
        "plain GET /ws reached ferrocast: {r:?}"
    );

    // /ws: the .htaccess RewriteRule [P]; /pp/ws: the ProxyPass variant of apache/ferrocast.conf.
    for path in ["/ws", "/pp/ws"] {
        let mut c = ws_from(CLIENT_IP, &apache.addr(), path, &[]);
        c.subscribe("orders");
        let mut other = connect(&apache.addr(), path, &[])
            .unwrap_or_else(|e| panic!("second client on {path}: {e:?}"));
        other.subscribe("orders");
        server.publish_json(&json!({"channel": "orders", "data": "hi"}));
        assert_eq!(c.recv_text(T), "hi", "broadcast through Apache ({path})");
        assert_eq!(
            other.recv_text(T),
            "hi",
            "broadcast through Apache ({path}), second client"
        );
        c.ping_pong();
        c.close();
        other.close();
    }
}

#[test]
fn forwarded_client_address_reaches_ferrocast_through_apache() {
    // ferrocast trusts Apache (127.0.0.1); the client connects to Apache from 127.0.0.2.
    // mod_proxy adds `X-Forwarded-For: 127.0.0.2`; ferrocast then records 127.0.0.2 as the
    // connection's address, visible in its debug line `connection N from 127.0.0.2:0 closed`.
    let server = Server::start(&["--set", "trusted_proxies=127.0.0.1"], &[]);
    let apache = Apache::start(server.port());

    for path in ["/ws", "/pp/ws"] {
        let mark = server.log_mark();
        let mut c = ws_from(CLIENT_IP, &apache.addr(), path, &[]);
        c.subscribe("orders");
        c.close();
        wait_closed_from(&server, mark, &format!("{CLIENT_IP}:"));

        // A client-supplied X-Forwarded-For is not believed: Apache appends the real address and
        // ferrocast reads the chain from the right.
        let mark = server.log_mark();
        let mut c = ws_from(
            CLIENT_IP,
            &apache.addr(),
            path,
            &[("X-Forwarded-For", "203.0.113.7")],
        );
        c.subscribe("orders");
        c.close();
        let got = wait_closed_from(&server, mark, &format!("{CLIENT_IP}:"));
        assert!(
            !got.iter().any(|a| a.starts_with("203.0.113.7")),
            "a spoofed X-Forwarded-For was believed ({path}): {got:?}"
        );
    }

    // Control: without trusted_proxies the header is ignored; the address is Apache's.
    drop(apache);
    let plain = Server::start(&[], &[]);
    let apache = Apache::start(plain.port());
    let mark = plain.log_mark();
    let mut c = ws_from(CLIENT_IP, &apache.addr(), "/ws", &[]);
    c.subscribe("orders");
    c.close();
    let got = wait_closed_from(&plain, mark, "127.0.0.1:");
    assert!(
        !got.iter().any(|a| a.starts_with("127.0.0.2")),
        "X-Forwarded-For believed without trusted_proxies: {got:?}"
    );
    drop(apache);
}

#[test]
fn apache_is_stopped_by_its_pid() {
    let server = Server::start(&[], &[]);
    let mut apache = Apache::start(server.port());
    let pid_in_file: i32 = std::fs::read_to_string(apache.pid_file())
        .expect("Apache wrote its PidFile")
        .trim()
        .parse()
        .expect("PID in httpd.pid");
    assert_eq!(pid_in_file, apache.child.as_ref().unwrap().id() as i32);
    let addr = apache.addr();
    let st = apache.stop().expect("Apache was running");
    assert!(st.success(), "Apache exit status after SIGTERM: {st:?}");
    assert!(
        wait_until(T, || TcpStream::connect(&addr).is_err()),
        "Apache still accepts on {addr} after SIGTERM to its PID"
    );
}

#[test]
fn large_messages_and_server_shutdown_pass_through_apache() {
    let mut server = Server::start(&[], &[]);
    let apache = Apache::start(server.port());
    let mut clients: Vec<Client> = ["/ws", "/pp/ws"]
        .iter()
        .map(|p| connect(&apache.addr(), p, &[]).unwrap_or_else(|e| panic!("connect {p}: {e:?}")))
        .collect();
    for c in &mut clients {
        c.subscribe("orders");
    }
    let big: String = (0..50_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    server.publish_json(&json!({"channel": "orders", "data": big}));
    for c in &mut clients {
        assert!(
            c.recv_text(T) == big,
            "50 KB broadcast through Apache arrived altered"
        );
    }
    // Client -> server through Apache still works after that.
    for c in &mut clients {
        c.ping_pong();
    }

    // SIGTERM: the server's close 1001 reaches the clients through the tunnel.
    server.signal(Signal::SIGTERM);
    for c in &mut clients {
        let (code, _) = c.expect_close(T);
        assert_eq!(code, 1001, "close code through Apache on server shutdown");
    }
    drop(clients);
    let st = server.wait_exit(T);
    assert!(st.success(), "ferrocast exit status {st}");
    drop(apache);
}

/// httpd.conf with every idle limit of the proxy (Timeout, ProxyTimeout, ProxyPass timeout=)
/// cut to `secs`.
fn short_proxy_timeouts(conf: String, secs: u32) -> String {
    let out: Vec<String> = conf
        .lines()
        .map(|l| {
            if l.starts_with("Timeout ") {
                format!("Timeout {secs}")
            } else if l.starts_with("ProxyTimeout ") {
                format!("ProxyTimeout {secs}")
            } else {
                l.replace("timeout=120", &format!("timeout={secs}"))
            }
        })
        .collect();
    let out = out.join("\n");
    assert!(
        out.contains(&format!("ProxyTimeout {secs}")) && out.contains(&format!("Timeout {secs}"))
    );
    out
}

/// Reads for `idle` without sending anything; returns the pings seen, panics if the connection
/// ends meanwhile.
fn idle_for(c: &mut Client, idle: Duration, what: &str) -> usize {
    let before = c.pings;
    match c.next_event(idle) {
        Event::Timeout => c.pings - before,
        other => panic!("{what}: idle connection through Apache ended or got data: {other:?}"),
    }
}

#[test]
fn server_pings_keep_idle_websockets_open_through_apache() {
    // apache/ferrocast.conf: the tunnel closes after its idle limit with no traffic either way;
    // ferrocast's pings (ping_interval_secs) must keep an idle client connected. Limits scaled
    // down: Apache 2 s, pings every 1 s, the client idles 6 s.
    let server = Server::start(&["--set", "ping_interval_secs=1"], &[]);
    let apache = Apache::start_with(server.port(), |c| short_proxy_timeouts(c, 2));
    for path in ["/ws", "/pp/ws"] {
        let mut c =
            connect(&apache.addr(), path, &[]).unwrap_or_else(|e| panic!("connect {path}: {e:?}"));
        c.subscribe("orders");
        let pings = idle_for(&mut c, Duration::from_secs(6), path);
        assert!(
            pings >= 2,
            "{path}: expected server pings while idle, saw {pings}"
        );
        c.ping_pong();
        server.publish_json(&json!({"channel": "orders", "data": "still open"}));
        assert_eq!(c.recv_text(T), "still open", "{path}");
        c.close();
    }

    // Control: without pings inside the limit, the same Apache does cut an idle tunnel, so the
    // check above is meaningful.
    let quiet = Server::start(&["--set", "ping_interval_secs=60"], &[]);
    let apache2 = Apache::start_with(quiet.port(), |c| short_proxy_timeouts(c, 2));
    let mut c = connect(&apache2.addr(), "/ws", &[]).unwrap();
    c.subscribe("orders");
    match c.next_event(T) {
        Event::Close(_) | Event::Gone(_) => {}
        other => panic!(
            "control: Apache did not close an idle tunnel after 2 s without traffic: {other:?}"
        ),
    }
    drop(c);
    drop(apache2);
    drop(apache);
}
