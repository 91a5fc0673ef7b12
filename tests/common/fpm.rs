//! A private php-fpm for tests: its own configuration, pool and socket in a temporary
//! directory, the scripts beside them, killed (with its children) when dropped.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use ferrocast::fastcgi::{self, End, Reply};

/// What one FastCGI request got back.
pub struct Answer {
    pub end: End,
    pub status: u16,
    pub body: Vec<u8>,
    pub truncated: bool,
}

impl Answer {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// One request on `conn`, with blocking reads, as a web server would make it (CONTENT_LENGTH
/// added: PHP reads a body only up to it). STDOUT is kept up to `max_output` bytes.
pub fn exchange(
    conn: &mut UnixStream,
    params: &[(&str, &str)],
    stdin: &[u8],
    max_output: usize,
) -> Answer {
    let length = stdin.len().to_string();
    let all = params
        .iter()
        .copied()
        .chain([("CONTENT_LENGTH", length.as_str())]);
    let pairs = fastcgi::encode_pairs(all.map(|(k, v)| (k, v.as_bytes()))).expect("pairs");
    conn.write_all(&fastcgi::encode_request(1, &pairs, stdin))
        .expect("send request");
    let mut reply = Reply::new(1, max_output);
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 65536]);
    while reply.end().is_none() {
        let n = conn.read(&mut chunk).expect("read answer");
        assert!(n > 0, "php-fpm closed the connection before END_REQUEST");
        buf.extend_from_slice(&chunk[..n]);
        let used = reply.read(&buf).expect("FastCGI records");
        buf.drain(..used);
    }
    assert!(buf.is_empty(), "bytes after END_REQUEST");
    let end = reply.end().expect("end");
    let (out, truncated) = reply.into_output();
    let cgi = fastcgi::parse_response(&out).expect("a CGI response");
    Answer {
        end,
        status: cgi.status,
        body: cgi.body.to_vec(),
        truncated,
    }
}

/// Debian's php-fpm binary (`apt-get install php-fpm`; `tests/run.sh` installs it).
pub fn binary() -> PathBuf {
    ["/usr/sbin/php-fpm8.2", "/usr/sbin/php-fpm"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("php-fpm is not installed (apt-get install php-fpm)")
}

pub struct Fpm {
    child: Child,
    dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Fpm {
    /// A pool of `children` workers (`pm = static`) listening on a private Unix socket.
    pub fn start(children: usize) -> Fpm {
        Fpm::start_with_env(children, &[])
    }

    /// [`Fpm::start`] with environment variables for the scripts (`env[NAME] = value`).
    pub fn start_with_env(children: usize, env: &[(&str, &str)]) -> Fpm {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path();
        let socket = d.join("fpm.sock");
        let user = String::from_utf8(Command::new("id").arg("-un").output().expect("id").stdout)
            .expect("user name");
        let conf = format!(
            "[global]\npid = {d}/fpm.pid\nerror_log = {d}/fpm.log\ndaemonize = no\n\
             [ferrocast-test]\nuser = {user}\nlisten = {sock}\npm = static\n\
             pm.max_children = {children}\nclear_env = yes\ncatch_workers_output = yes\n\
             php_admin_value[session.save_path] = {d}/sessions\n",
            d = d.display(),
            user = user.trim(),
            sock = socket.display(),
        );
        let conf = env
            .iter()
            .fold(conf, |conf, (k, v)| conf + &format!("env[{k}] = {v}\n"));
        std::fs::create_dir(d.join("sessions")).expect("sessions dir");
        std::fs::write(d.join("fpm.conf"), conf).expect("write fpm.conf");
        // -R: the test suite may run as root, which php-fpm otherwise refuses.
        let child = Command::new(binary())
            .args(["-F", "-R", "-y"])
            .arg(d.join("fpm.conf"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start php-fpm");
        let fpm = Fpm { child, dir, socket };
        let up = super::wait_until(Duration::from_secs(20), || fpm.socket.exists());
        assert!(up, "php-fpm did not open its socket:\n{}", fpm.log());
        fpm
    }

    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// The directory of the pool: sessions in `sessions/`, scripts written by [`Fpm::script`].
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a PHP script into the pool's directory; returns its path.
    pub fn script(&self, name: &str, code: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, code).expect("write script");
        path
    }

    /// A new connection to the pool (reads time out after 20 s).
    pub fn connect(&self) -> UnixStream {
        let conn = UnixStream::connect(&self.socket).expect("connect to php-fpm");
        conn.set_read_timeout(Some(Duration::from_secs(20)))
            .expect("timeout");
        conn
    }

    /// Runs `script` once, on a connection of its own, as a `GET` with `query`.
    pub fn get(&self, script: &Path, query: &str) -> Answer {
        let script = script.to_str().expect("path");
        let uri = format!("/{}?{query}", script.rsplit('/').next().unwrap_or(""));
        let params = [
            ("SCRIPT_FILENAME", script),
            ("REQUEST_METHOD", "GET"),
            ("REQUEST_URI", uri.as_str()),
            ("QUERY_STRING", query),
        ];
        exchange(&mut self.connect(), &params, b"", 1 << 20)
    }

    /// php-fpm's own log (start-up errors, workers' output).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("fpm.log")).unwrap_or_default()
    }
}

impl Drop for Fpm {
    fn drop(&mut self) {
        // SIGTERM: the master stops its workers before it exits.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}
