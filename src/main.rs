//! The `ferrocast` command line: parse, load the configuration, hand over to the library.

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ferrocast::config::{self, Sources};
use ferrocast::fifo;
use ferrocast::server::{Exit, Handoff, Server};
use log::error;

#[derive(Parser)]
#[command(
    name = "ferrocast",
    version,
    about = "Self-hosted realtime WebSocket server: broadcast to browsers from any script through a FIFO",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the WebSocket server (embedded defaults; no configuration file needed).
    Websocket(ConfigArgs),
    /// Publish one message through the server's FIFO.
    ///
    /// With --channel, writes {"channel":…,"data":DATA} so the channel's subscribers receive DATA;
    /// without, DATA goes verbatim to every connected client. DATA `-` reads standard input, one
    /// message per line.
    Broadcast(BroadcastArgs),
    /// Print the effective configuration as JSON (secrets masked), or check a file.
    Config(ConfigCommand),
    /// Restart the running server in place (re-reads the binary and the configuration).
    ///
    /// Clients are closed with 1012 (service restart) so browsers reconnect at once; the
    /// listening socket and the FIFO pass to the new process, so no connection is refused and
    /// no FIFO line is lost. For a configuration change alone, SIGHUP (systemctl reload) keeps
    /// every connection.
    Restart(ConfigArgs),
    /// Used by worker processes: one HTTP call for an `http` validation or routing handler.
    #[command(hide = true)]
    HttpRequest(HttpRequestArgs),
    /// Used by worker processes: resolve a host name (getaddrinfo blocks; the loop must not).
    #[command(hide = true)]
    Resolve { host: String, port: u16 },
    /// Read apps from the app store's table (FERROCAST_APP_STORE_DRIVER, _URL, _TABLE): `key K`,
    /// `id I` or `all`. Prints each app as a JSON line; none for an unknown key or id. `changes
    /// [SECS]` waits for PostgreSQL's NOTIFY and prints the ids changed. Used by worker
    /// processes, and to check a table by hand.
    AppStore {
        /// `key`, `id`, `all` or `changes`.
        by: String,
        value: Option<String>,
    },
}

#[derive(Args)]
struct HttpRequestArgs {
    /// `validate` (GET, forwards the client's cookies) or `route` (POST, stdin as body).
    purpose: String,
    url: String,
}

/// Where the configuration comes from. Flags beat FERROCAST_* variables (the environment, then
/// the env file), which beat the JSON file, unless --prefer-config-file puts the file first.
#[derive(Args, Clone, Default)]
struct ConfigArgs {
    /// JSON configuration file.
    #[arg(long, short = 'c', value_name = "FILE")]
    config: Option<PathBuf>,
    /// A .env file of FERROCAST_* variables, read under the real environment [env: FERROCAST_ENV_FILE].
    #[arg(long, value_name = "PATH")]
    env_file: Option<PathBuf>,
    /// Let the JSON file's keys beat FERROCAST_* variables (flags still beat both).
    #[arg(long)]
    prefer_config_file: bool,
    /// Address to listen on [default: 127.0.0.1].
    #[arg(long)]
    host: Option<String>,
    /// Port to listen on; 0 lets the system choose [default: 8080].
    #[arg(long, short = 'p')]
    port: Option<u16>,
    /// If the port is taken, try the next ones (up to +1000) and log the one chosen.
    #[arg(long)]
    auto_port: bool,
    /// Event loops to run, sharing the port and every channel: a number, or auto for one per
    /// core [default: 1].
    #[arg(long, value_name = "N|auto")]
    loops: Option<String>,
    /// URL prefix for every endpoint, e.g. /realtime.
    #[arg(long, value_name = "PREFIX")]
    path: Option<String>,
    /// The broadcast FIFO [default: $RUNTIME_DIRECTORY, $XDG_RUNTIME_DIR or /tmp/ferrocast-$UID, + /broadcast.fifo].
    #[arg(long, value_name = "PATH")]
    fifo: Option<PathBuf>,
    /// Id of the default Pusher app (used when the file lists no `apps`) [default: app-id].
    #[arg(long, value_name = "ID")]
    app_id: Option<String>,
    /// Key of the default Pusher app [default: app-key].
    #[arg(long, value_name = "KEY")]
    app_key: Option<String>,
    /// Secret of the default Pusher app [default: app-secret]. Prefer FERROCAST_APP_SECRET: flags show in `ps`.
    #[arg(long, value_name = "SECRET")]
    app_secret: Option<String>,
    /// Serve the live debug console at /console (login: an app's key and secret).
    #[arg(long)]
    console: bool,
    /// Set any configuration key, e.g. --set max_connections=1000 (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ConfigArgs {
    fn sources(&self) -> Result<Sources, String> {
        let mut overrides = Vec::new();
        for kv in &self.set {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("--set {kv}: expected KEY=VALUE"))?;
            overrides.push((k.trim().to_string(), v.to_string()));
        }
        let mut flag = |k: &str, v: Option<String>| {
            if let Some(v) = v {
                overrides.push((k.to_string(), v));
            }
        };
        flag("host", self.host.clone());
        flag("port", self.port.map(|p| p.to_string()));
        flag("path", self.path.clone());
        flag("loops", self.loops.clone());
        flag("fifo", self.fifo.as_ref().map(|p| p.display().to_string()));
        flag("auto_port", self.auto_port.then(|| "true".to_string()));
        flag("console.enabled", self.console.then(|| "true".to_string()));
        flag("app_id", self.app_id.clone());
        flag("app_key", self.app_key.clone());
        flag("app_secret", self.app_secret.clone());
        Ok(Sources {
            file: self.config.clone(),
            env_file: self.env_file.clone(),
            prefer_file: self.prefer_config_file,
            overrides,
        })
    }
}

#[derive(Args)]
struct BroadcastArgs {
    #[command(flatten)]
    config: ConfigArgs,
    /// Channel to publish to (repeatable); without it the message goes to every client.
    #[arg(long = "channel", short = 'C', value_name = "NAME")]
    channels: Vec<String>,
    /// Event name (Pusher clients bind to it) [default: message].
    #[arg(long, short = 'e')]
    event: Option<String>,
    /// Socket id of a connection to leave out (the one that caused the event).
    #[arg(long, value_name = "ID")]
    socket_id: Option<String>,
    /// DATA is JSON: embed it as a value instead of as a string.
    #[arg(long)]
    json: bool,
    /// The message, or - to read one message per line from standard input.
    #[arg(value_name = "DATA")]
    data: String,
}

#[derive(Args)]
struct ConfigCommand {
    #[command(flatten)]
    config: ConfigArgs,
    /// Only validate: print "configuration OK" or the first error, and set the exit status.
    #[arg(long)]
    check: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    match cli.command {
        Command::Websocket(args) => websocket(args),
        Command::Broadcast(args) => broadcast(args),
        Command::Config(args) => config_command(args),
        Command::Restart(args) => restart(args),
        Command::HttpRequest(args) => http_request(args),
        Command::Resolve { host, port } => resolve(&host, port),
        Command::AppStore { by, value } => app_store(&by, value.as_deref()),
    }
}

fn websocket(args: ConfigArgs) -> ExitCode {
    let sources = match args.sources() {
        Ok(s) => s,
        Err(e) => return fail(&e, 2),
    };
    let cfg = match sources.load() {
        Ok(c) => c,
        Err(e) => return fail(&e.to_string(), 2),
    };
    let ran = if cfg.loops.resolve() > 1 {
        ferrocast::loops::Supervisor::bind(sources, cfg).map(|s| s.run())
    } else {
        Server::bind(sources, cfg).map(|s| s.run())
    };
    let ran = match ran {
        Ok(ran) => ran,
        Err(e) => return fail(&e.to_string(), 1),
    };
    match ran {
        Ok(Exit::Stopped | Exit::LoopRestart(_)) => ExitCode::SUCCESS,
        Ok(Exit::Restart(handoff)) => reexec(handoff),
        Err(e) => fail(&format!("event loop failed: {e}"), 1),
    }
}

fn broadcast(args: BroadcastArgs) -> ExitCode {
    let cfg = match args
        .config
        .sources()
        .and_then(|s| s.load().map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => return fail(&e, 2),
    };
    let messages: Vec<String> = if args.data == "-" {
        let stdin = std::io::stdin();
        if stdin.is_terminal() {
            eprintln!("reading messages from standard input, one per line (Ctrl-D to end)");
        }
        let mut lines = Vec::new();
        for line in stdin.lock().lines() {
            match line {
                Ok(l) => lines.push(l),
                Err(e) => return fail(&format!("reading standard input: {e}"), 1),
            }
        }
        lines
    } else {
        vec![args.data.clone()]
    };
    for data in messages {
        let line = match build_line(&args, &data) {
            Ok(l) => l,
            Err(e) => return fail(&e, 2),
        };
        if let Err(e) = fifo::write_line(&cfg.fifo, line.as_bytes()) {
            return fail(&e.to_string(), 1);
        }
    }
    ExitCode::SUCCESS
}

fn build_line(args: &BroadcastArgs, data: &str) -> Result<String, String> {
    if args.channels.is_empty() {
        if data.contains('\n') {
            return Err("a global message cannot contain a newline".into());
        }
        if args.event.is_some() || args.socket_id.is_some() {
            return Err("--event and --socket-id need --channel".into());
        }
        return Ok(data.to_string());
    }
    let value = if args.json {
        serde_json::from_str::<serde_json::Value>(data)
            .map_err(|e| format!("--json: DATA is not JSON: {e}"))?
    } else {
        serde_json::Value::String(data.to_string())
    };
    let mut line = serde_json::Map::new();
    if args.channels.len() == 1 {
        line.insert("channel".into(), args.channels[0].clone().into());
    } else {
        line.insert("channels".into(), args.channels.clone().into());
    }
    if let Some(e) = &args.event {
        line.insert("event".into(), e.clone().into());
    }
    line.insert("data".into(), value);
    if let Some(s) = &args.socket_id {
        line.insert("socket_id".into(), s.clone().into());
    }
    Ok(serde_json::Value::Object(line).to_string())
}

fn config_command(args: ConfigCommand) -> ExitCode {
    let sources = match args.config.sources() {
        Ok(s) => s,
        Err(e) => return fail(&e, 2),
    };
    let result = if args.check {
        match &sources.file {
            Some(path) => config::check_file(path).and_then(|_| sources.load()),
            None => sources.load(),
        }
    } else {
        sources.load()
    };
    match result {
        Ok(_) if args.check => {
            println!("configuration OK");
            ExitCode::SUCCESS
        }
        Ok(cfg) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&cfg.masked_json()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string(), 2),
    }
}

/// The child side of `http` handlers. Exit 0 with the result on stdout means success; the
/// server reads nothing else, so errors go to stderr (the server's log) with their reason.
fn http_request(args: HttpRequestArgs) -> ExitCode {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let timeout = std::time::Duration::from_secs(
        env("FERROCAST_HTTP_TIMEOUT_SECS")
            .and_then(|v| v.parse().ok())
            .unwrap_or(5),
    );
    let (method, headers, body) = match http_request_parts(&args.purpose) {
        Ok(parts) => parts,
        Err(code) => return code,
    };
    let max = env("FERROCAST_MAX_OUTPUT_BYTES")
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 20);
    let ca_file = env("FERROCAST_TLS_CA_FILE").map(std::path::PathBuf::from);
    let sent = ferrocast::httpclient::request(
        method,
        &args.url,
        &headers,
        &body,
        timeout,
        max,
        ca_file.as_deref(),
    );
    match sent {
        Ok(resp) => http_request_answer(&args, &resp),
        Err(e) => {
            eprintln!("ferrocast http-request: {e}");
            ExitCode::from(1)
        }
    }
}

type RequestParts = (&'static str, Vec<(String, String)>, Vec<u8>);

/// The method, headers and body of an `http` handler's request, from the CGI environment the
/// server gave the child (and stdin, for a routed message or a webhook batch).
fn http_request_parts(purpose: &str) -> Result<RequestParts, ExitCode> {
    use std::io::Read;
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let mut headers: Vec<(String, String)> = Vec::new();
    let forward = |pairs: &[(&str, &str)], headers: &mut Vec<(String, String)>| {
        for (var, name) in pairs {
            if let Some(v) = env(var) {
                headers.push((name.to_string(), v));
            }
        }
    };
    forward(
        &[
            ("HTTP_COOKIE", "Cookie"),
            ("HTTP_AUTHORIZATION", "Authorization"),
            ("REMOTE_ADDR", "X-Forwarded-For"),
            ("FERROCAST_SOCKET_ID", "X-Ferrocast-Socket-Id"),
            ("FERROCAST_USER_ID", "X-Ferrocast-User"),
        ],
        &mut headers,
    );
    let content_type = match purpose {
        "validate" => return Ok(("GET", headers, Vec::new())),
        "webhook" => {
            let signed = [
                ("FERROCAST_WEBHOOK_KEY", "X-Pusher-Key"),
                ("FERROCAST_WEBHOOK_SIGNATURE", "X-Pusher-Signature"),
            ];
            forward(&signed, &mut headers);
            "application/json"
        }
        "route" => "text/plain; charset=utf-8",
        other => {
            eprintln!("ferrocast http-request: unknown purpose {other}");
            return Err(ExitCode::from(2));
        }
    };
    let mut body = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut body) {
        eprintln!("ferrocast http-request: reading the {purpose} body: {e}");
        return Err(ExitCode::from(1));
    }
    headers.push(("Content-Type".into(), content_type.into()));
    Ok(("POST", headers, body))
}

/// What the server reads from an `http` handler: a user id (and the whole answer), routed
/// output, or only the exit status.
fn http_request_answer(args: &HttpRequestArgs, resp: &ferrocast::httpclient::Response) -> ExitCode {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match (args.purpose.as_str(), resp.status) {
        ("validate", 200) => {
            let v: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or_default();
            let id = match v.get("id") {
                Some(serde_json::Value::String(s)) if !s.is_empty() => s.clone(),
                Some(serde_json::Value::Number(n)) => n.to_string(),
                _ => {
                    eprintln!(
                        "ferrocast http-request: {} answered 200 without an \"id\"",
                        args.url
                    );
                    return ExitCode::from(1);
                }
            };
            // First line: the user id; second: the whole answer, kept as user info.
            let _ = writeln!(out, "{id}\n{v}");
            ExitCode::SUCCESS
        }
        ("validate", 403) => {
            let _ = writeln!(out, "forbidden");
            ExitCode::from(1)
        }
        ("webhook", 200..=299) => ExitCode::SUCCESS,
        ("route", 200..=299) => {
            let _ = out.write_all(&resp.body);
            ExitCode::SUCCESS
        }
        (_, status) => {
            eprintln!("ferrocast http-request: {} answered {status}", args.url);
            ExitCode::from(1)
        }
    }
}

/// Prints every address of `host`, one per line (the child side of the Redis link's lookup).
fn resolve(host: &str, port: u16) -> ExitCode {
    use std::net::ToSocketAddrs;
    match (host, port).to_socket_addrs() {
        Ok(addrs) => {
            let mut any = false;
            for a in addrs {
                println!("{a}");
                any = true;
            }
            if any {
                ExitCode::SUCCESS
            } else {
                fail(&format!("{host} resolves to no address"), 1)
            }
        }
        Err(e) => fail(&format!("cannot resolve {host}: {e}"), 1),
    }
}

/// The child side of the app store: exit 0 with one JSON app per line (none: no such app),
/// 1 with the reason on stderr when the database cannot answer.
fn app_store(by: &str, value: Option<&str>) -> ExitCode {
    use ferrocast::app_store::{By, Store};
    let by = match (by, value) {
        ("key", Some(k)) => By::Key(k),
        ("id", Some(i)) => By::Id(i),
        ("all", None) => By::All,
        ("changes", secs) => return app_store_changes(secs),
        _ => {
            return fail(
                "usage: ferrocast app-store key KEY | id ID | all | changes [SECS]",
                2,
            );
        }
    };
    let mut skipped = Vec::new();
    match Store::from_env().fetch(by, &mut skipped) {
        Ok(apps) => {
            for why in skipped {
                eprintln!("ferrocast: skipped a row of the app store: {why}");
            }
            for app in apps {
                match serde_json::to_string(&app) {
                    Ok(line) => println!("{line}"),
                    Err(e) => return fail(&format!("cannot print app {}: {e}", app.id), 1),
                }
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string(), 1),
    }
}

/// Waits for the table to change (PostgreSQL's NOTIFY) for SECS (default 50), then prints the
/// ids changed, one per line (none: nothing changed).
fn app_store_changes(secs: Option<&str>) -> ExitCode {
    let secs = match secs.map(str::parse::<u64>) {
        None => 50,
        Some(Ok(s)) => s,
        Some(Err(_)) => return fail("ferrocast app-store changes [SECS]: SECS is a number", 2),
    };
    let wait = std::time::Duration::from_secs(secs);
    match ferrocast::app_store::Store::from_env().changes(wait) {
        Ok(ids) => {
            for id in ids {
                println!("{id}");
            }
            ExitCode::SUCCESS
        }
        Err(e) => fail(&e.to_string(), 1),
    }
}

fn restart(args: ConfigArgs) -> ExitCode {
    let cfg = match args
        .sources()
        .and_then(|s| s.load().map_err(|e| e.to_string()))
    {
        Ok(c) => c,
        Err(e) => return fail(&e, 2),
    };
    let Some(pid) = fifo::server_pid(&cfg.fifo) else {
        return fail(
            &format!("no ferrocast server is reading {}", cfg.fifo.display()),
            1,
        );
    };
    match nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR2,
    ) {
        Ok(()) => {
            println!("asked ferrocast (pid {pid}) to restart");
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("cannot signal pid {pid}: {e}"), 1),
    }
}

/// Replaces this process with a fresh copy of the binary (same pid, so systemd keeps tracking
/// it), passing the listener the systemd way (fd 3, LISTEN_FDS) and the FIFO by number.
fn reexec(handoff: Handoff) -> ExitCode {
    use std::os::fd::{AsRawFd, IntoRawFd};
    use std::os::unix::process::CommandExt;
    // Move the FIFO out of the way of fd 3 first, without close-on-exec.
    let fifo = match nix::fcntl::fcntl(&handoff.fifo, nix::fcntl::FcntlArg::F_DUPFD(10)) {
        Ok(fd) => fd,
        Err(e) => return fail(&format!("restart: cannot pass the FIFO on: {e}"), 1),
    };
    let listener = handoff.listener.as_raw_fd();
    // SAFETY: plain descriptor calls on fds we own, in a process with no other thread, right
    // before exec.
    let ok = unsafe {
        (listener == 3 || libc::dup2(listener, 3) == 3) && libc::fcntl(3, libc::F_SETFD, 0) == 0
    };
    if !ok {
        return fail(
            &format!(
                "restart: cannot pass the listener on: {}",
                std::io::Error::last_os_error()
            ),
            1,
        );
    }
    let _ = handoff.listener.into_raw_fd();
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    let mut next = std::process::Command::new("/proc/self/exe");
    next.args(args)
        .env("LISTEN_FDS", "1")
        .env("LISTEN_PID", std::process::id().to_string())
        .env("FERROCAST_FIFO_FD", fifo.to_string());
    match ferrocast::handoff::history_file(&handoff.history) {
        Ok(fd) => {
            next.env("FERROCAST_HISTORY_FD", fd.to_string());
        }
        Err(e) => error!("restart: channel history not handed on: {e}"),
    }
    let err = next.exec();
    fail(&format!("restart: cannot exec a new server: {err}"), 1)
}

fn fail(message: &str, code: u8) -> ExitCode {
    error!("{message}");
    eprintln!("ferrocast: {message}");
    ExitCode::from(code)
}
