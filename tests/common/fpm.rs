//! A private php-fpm for tests: its own configuration, pool and socket in a temporary
//! directory, the scripts beside them, killed (with its children) when dropped.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
