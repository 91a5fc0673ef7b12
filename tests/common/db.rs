//! Private database servers for tests: a PostgreSQL cluster and a MariaDB server, each in a
//! temporary directory on a loopback port, with a user that has a password, killed when
//! dropped. Both refuse to run as root: as root they run as the packages' `postgres` and
//! `mysql` users.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::free_port;

pub const USER: &str = "ferro";
pub const PASSWORD: &str = "pw-S3cret";

/// The uid and gid of `name`, when this process runs as root (they run as that user then).
fn run_as(name: &str) -> Option<(u32, u32)> {
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let user = nix::unistd::User::from_name(name).ok().flatten()?;
    Some((user.uid.as_raw(), user.gid.as_raw()))
}

fn command(program: &str, who: Option<(u32, u32)>) -> Command {
    let mut c = Command::new(program);
    if let Some((uid, gid)) = who {
        c.uid(uid).gid(gid);
    }
    c
}

fn chown_all(dir: &Path, who: Option<(u32, u32)>) {
    if let Some((uid, gid)) = who {
        let ids = (
            Some(nix::unistd::Uid::from_raw(uid)),
            Some(nix::unistd::Gid::from_raw(gid)),
        );
        nix::unistd::chown(dir, ids.0, ids.1).expect("chown");
    }
}

/// A server's certificate and key (PEM) written in `dir` for the user it runs as, the key
/// readable by it alone (PostgreSQL refuses it otherwise).
fn tls_files(dir: &Path, who: Option<(u32, u32)>, cert: &str, key: &str) -> (PathBuf, PathBuf) {
    let (cert_file, key_file) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&cert_file, cert).expect("cert");
    std::fs::write(&key_file, key).expect("key");
    let private = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&key_file, private).expect("key mode");
    chown_all(&cert_file, who);
    chown_all(&key_file, who);
    (cert_file, key_file)
}

fn ran(out: std::io::Result<Output>, what: &str) -> Output {
    let out = out.unwrap_or_else(|e| panic!("{what}: {e} (tests/run.sh installs it)"));
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn wait_for(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "{what} did not start within 60 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub struct Postgres {
    _dir: tempfile::TempDir,
    pub port: u16,
    child: Option<Child>,
    data: PathBuf,
    who: Option<(u32, u32)>,
    /// `-c name=value` settings beyond the defaults (TLS).
    settings: Vec<String>,
}

/// The newest installed PostgreSQL's programs (Debian keeps them out of PATH, per version).
fn pg_bin() -> PathBuf {
    let versions = std::fs::read_dir("/usr/lib/postgresql").expect("postgresql is installed");
    let newest = versions
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .max()
        .expect("a PostgreSQL version under /usr/lib/postgresql");
    PathBuf::from(format!("/usr/lib/postgresql/{newest}/bin"))
}

impl Postgres {
    pub fn start() -> Postgres {
        Postgres::start_with(None)
    }

    /// With TLS: the server's certificate chain and key (PEM).
    pub fn start_tls(cert: &str, key: &str) -> Postgres {
        Postgres::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Postgres {
        let dir = tempfile::tempdir().expect("tempdir");
        let who = run_as("postgres");
        chown_all(dir.path(), who);
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("pwfile");
        chown_all(&pwfile, who);
        let out = command(&pg_bin().join("initdb").display().to_string(), who)
            .args([
                "-D",
                &data.display().to_string(),
                "-U",
                USER,
                "--auth-local=trust",
            ])
            .args([
                "--auth-host=scram-sha-256",
                "--pwfile",
                &pwfile.display().to_string(),
            ])
            .output();
        ran(out, "initdb");
        let mut settings = vec!["fsync=off".to_string()];
        if let Some((cert, key)) = tls {
            let (cert_file, key_file) = tls_files(dir.path(), who, cert, key);
            settings.push("ssl=on".into());
            settings.push(format!("ssl_cert_file={}", cert_file.display()));
            settings.push(format!("ssl_key_file={}", key_file.display()));
        }
        let mut pg = Postgres {
            port: free_port(),
            _dir: dir,
            child: None,
            data,
            who,
            settings,
        };
        pg.run();
        pg
    }

    fn run(&mut self) {
        let socket_dir = self.data.parent().expect("dir").display().to_string();
        let child = command(&pg_bin().join("postgres").display().to_string(), self.who)
            .args(["-D", &self.data.display().to_string(), "-k", &socket_dir])
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(self.settings.iter().flat_map(|s| ["-c", s.as_str()]))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("postgres (tests/run.sh installs postgresql)");
        self.child = Some(child);
        wait_for("postgres", || self.psql("SELECT 1").status.success());
    }

    /// `postgres://ferro:…@127.0.0.1:PORT/postgres`.
    pub fn url(&self) -> String {
        format!(
            "postgres://{USER}:{PASSWORD}@127.0.0.1:{}/postgres",
            self.port
        )
    }

    /// Runs SQL through `psql` (over TCP, with the password).
    pub fn psql(&self, sql: &str) -> Output {
        Command::new("psql")
            .env("PGPASSWORD", PASSWORD)
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                USER,
                "-d",
                "postgres",
            ])
            .args(["-v", "ON_ERROR_STOP=1", "-qAt", "-c", sql])
            .output()
            .expect("psql")
    }

    pub fn sql(&self, sql: &str) {
        ran(Ok(self.psql(sql)), &format!("psql -c {sql}"));
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct Mariadb {
    _dir: tempfile::TempDir,
    pub port: u16,
    socket: PathBuf,
    child: Option<Child>,
    server: Command,
}

impl Mariadb {
    pub fn start() -> Mariadb {
        Mariadb::start_with(None)
    }

    /// With TLS: the server's certificate chain and key (PEM).
    pub fn start_tls(cert: &str, key: &str) -> Mariadb {
        Mariadb::start_with(Some((cert, key)))
    }

    fn start_with(tls: Option<(&str, &str)>) -> Mariadb {
        let dir = tempfile::tempdir().expect("tempdir");
        let who = run_as("mysql");
        chown_all(dir.path(), who);
        let data = dir.path().join("data");
        let user = match who {
            Some(_) => "mysql".to_string(),
            None => nix::unistd::User::from_uid(nix::unistd::Uid::effective())
                .ok()
                .flatten()
                .map_or("root".into(), |u| u.name),
        };
        // As root, the database's root is the system's root over the socket; otherwise it has
        // no password (a private server on a loopback port, for one test).
        let method = if who.is_some() { "socket" } else { "normal" };
        let out = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                &format!("--auth-root-authentication-method={method}"),
            ])
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--user={user}"))
            .output();
        ran(out, "mariadb-install-db");
        let port = free_port();
        let socket = dir.path().join("mysqld.sock");
        let mut server = Command::new("mariadbd");
        server
            .arg("--no-defaults")
            .arg(format!("--datadir={}", data.display()))
            .arg(format!("--socket={}", socket.display()))
            .args([&format!("--port={port}"), "--bind-address=127.0.0.1"])
            .args([
                &format!("--user={user}"),
                "--skip-log-bin",
                "--innodb-buffer-pool-size=16M",
            ])
            .arg(format!("--pid-file={}", dir.path().join("pid").display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((cert, key)) = tls {
            let (cert_file, key_file) = tls_files(dir.path(), who, cert, key);
            server.arg(format!("--ssl-cert={}", cert_file.display()));
            server.arg(format!("--ssl-key={}", key_file.display()));
        }
        let mut db = Mariadb {
            _dir: dir,
            port,
            socket,
            child: None,
            server,
        };
        db.run();
        let setup = format!(
            "CREATE DATABASE apps; CREATE USER '{USER}'@'127.0.0.1' IDENTIFIED BY '{PASSWORD}'; \
             GRANT ALL ON apps.* TO '{USER}'@'127.0.0.1';"
        );
        ran(Ok(db.root_sql(&setup)), "creating the test user");
        db
    }

    /// SQL as root, over the server's socket.
    fn root_sql(&self, sql: &str) -> Output {
        Command::new("mariadb")
            .arg("--no-defaults")
            .arg(format!("--socket={}", self.socket.display()))
            .args(["-u", "root", "-e", sql])
            .output()
            .expect("mariadb client")
    }

    /// `mysql://ferro:…@127.0.0.1:PORT/apps`.
    pub fn url(&self) -> String {
        format!("mysql://{USER}:{PASSWORD}@127.0.0.1:{}/apps", self.port)
    }

    /// Runs SQL in the `apps` database as the test user, over TCP.
    pub fn sql(&self, sql: &str) {
        let out = Command::new("mariadb")
            .arg("--no-defaults")
            .args(["-h", "127.0.0.1", "-P", &self.port.to_string(), "-u", USER])
            .arg(format!("-p{PASSWORD}"))
            .args(["apps", "-e", sql])
            .output();
        ran(out, &format!("mariadb -e {sql}"));
    }

    fn run(&mut self) {
        let child = self
            .server
            .spawn()
            .expect("mariadbd (tests/run.sh installs mariadb-server)");
        self.child = Some(child);
        wait_for("mariadbd", || self.root_sql("SELECT 1").status.success());
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn restart(&mut self) {
        self.stop();
        self.run();
    }
}

impl Drop for Mariadb {
    fn drop(&mut self) {
        self.stop();
    }
}
