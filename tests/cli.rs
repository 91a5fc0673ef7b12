//! The command line: config printing/checking, layering, help.
mod common;
use common::*;

fn config_json(args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut all = vec!["config"];
    all.extend_from_slice(args);
    let out = run_cli(&all, env, None);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "`ferrocast config` stdout is not JSON ({e}):\n{}",
            out.describe()
        )
    })
}

#[test]
fn config_prints_effective_configuration_as_json() {
    let v = config_json(&[], &[]);
    assert_eq!(v["port"], 8080, "{v:#}");
    assert_eq!(v["host"], "127.0.0.1");
    assert_eq!(v["path"], "");
    assert_eq!(v["allowed_origins"], json!(["*"]));
    assert_eq!(v["max_request_bytes"], 10000);
    assert_eq!(v["max_message_bytes"], 10000);
    assert_eq!(v["max_fifo_line_bytes"], 65536);
    assert_eq!(v["ping_interval_secs"], 30);
    assert_eq!(v["activity_timeout_secs"], 120);
    assert_eq!(v["handshake_timeout_secs"], 10);
    assert_eq!(v["max_connections"], 0);
    assert_eq!(v["outbound_queue_bytes"], 1048576);
    assert_eq!(v["shutdown_timeout_secs"], 5);
    assert_eq!(v["fifo_mode"], "0660");
}

#[test]
fn config_is_pretty_printed() {
    let out = run_cli(&["config"], &[], None);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert!(
        out.stdout.lines().count() > 5,
        "pretty JSON spans lines:\n{}",
        out.stdout
    );
}

#[test]
fn default_fifo_follows_runtime_directory() {
    let rt = tempfile::tempdir().unwrap();
    let out = run_cli_in(rt.path(), &["config"], &[], None);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    let expected = rt.path().join("broadcast.fifo");
    assert_eq!(
        v["fifo"],
        expected.to_str().unwrap(),
        "RUNTIME_DIRECTORY/broadcast.fifo"
    );
}

#[test]
fn default_fifo_uses_xdg_runtime_dir_without_runtime_directory() {
    let rt = tempfile::tempdir().unwrap();
    let mut cmd = command(rt.path());
    cmd.env_remove("RUNTIME_DIRECTORY").arg("config");
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        v["fifo"],
        rt.path().join("broadcast.fifo").to_str().unwrap()
    );
}

#[test]
fn env_overrides_file_and_flags_override_env() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "c.json",
        &json!({"port": 7000, "host": "127.0.0.2"}),
    );
    let cfg = cfg.to_str().unwrap();
    assert_eq!(
        config_json(&["--config", cfg], &[])["port"],
        7000,
        "file over defaults"
    );
    assert_eq!(config_json(&["--config", cfg], &[])["host"], "127.0.0.2");
    assert_eq!(
        config_json(&["--config", cfg], &[("FERROCAST_PORT", "9000")])["port"],
        9000,
        "env over file"
    );
    assert_eq!(
        config_json(&[], &[("FERROCAST_PORT", "9000")])["port"],
        9000,
        "env over defaults"
    );
    assert_eq!(
        config_json(
            &["--config", cfg, "--port", "9100"],
            &[("FERROCAST_PORT", "9000")]
        )["port"],
        9100,
        "flag over env"
    );
    assert_eq!(
        config_json(
            &["--config", cfg, "--set", "port=9200"],
            &[("FERROCAST_PORT", "9000")]
        )["port"],
        9200,
        "--set over env"
    );
    // Unrelated keys keep their layer.
    let v = config_json(
        &["--config", cfg, "--port", "9100"],
        &[("FERROCAST_PORT", "9000")],
    );
    assert_eq!(v["host"], "127.0.0.2");
}

#[test]
fn env_list_and_path_and_fifo() {
    let v = config_json(
        &[],
        &[
            ("FERROCAST_ALLOWED_ORIGINS", "http://a,http://b"),
            ("FERROCAST_PATH", "/rt"),
            ("FERROCAST_FIFO", "/tmp/x/y.fifo"),
            ("FERROCAST_MAX_CONNECTIONS", "7"),
        ],
    );
    assert_eq!(v["allowed_origins"], json!(["http://a", "http://b"]));
    assert_eq!(v["path"], "/rt");
    assert_eq!(v["fifo"], "/tmp/x/y.fifo");
    assert_eq!(v["max_connections"], 7);
    let v = config_json(
        &[
            "--path",
            "/flag",
            "--fifo",
            "/tmp/f.fifo",
            "--host",
            "0.0.0.0",
        ],
        &[("FERROCAST_PATH", "/env")],
    );
    assert_eq!(v["path"], "/flag");
    assert_eq!(v["fifo"], "/tmp/f.fifo");
    assert_eq!(v["host"], "0.0.0.0");
}

#[test]
fn set_flag_sets_any_key() {
    let v = config_json(
        &[
            "--set",
            "max_message_bytes=123",
            "--set",
            "ping_interval_secs=7",
        ],
        &[],
    );
    assert_eq!(v["max_message_bytes"], 123);
    assert_eq!(v["ping_interval_secs"], 7);
}

#[test]
fn set_flag_with_unknown_key_or_bad_value_fails_naming_the_key() {
    let out = run_cli(&["config", "--set", "prot=1"], &[], None);
    assert_ne!(out.code(), Some(0), "{}", out.describe());
    assert!(out.stderr.contains("prot"), "{}", out.describe());
    let out = run_cli(&["config", "--set", "max_message_bytes=lots"], &[], None);
    assert_ne!(out.code(), Some(0), "{}", out.describe());
    assert!(
        out.stderr.contains("max_message_bytes"),
        "{}",
        out.describe()
    );
}

#[test]
fn bad_env_value_fails_naming_the_key() {
    let out = run_cli(&["config"], &[("FERROCAST_PORT", "not-a-port")], None);
    assert_ne!(out.code(), Some(0), "{}", out.describe());
    assert!(
        out.stderr.to_lowercase().contains("port"),
        "{}",
        out.describe()
    );
}

#[test]
fn config_check_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "ok.json",
        &json!({"port": 9001, "allowed_origins": ["https://*.example.com"], "max_connections": 10}),
    );
    let out = run_cli(
        &["config", "--check", "--config", cfg.to_str().unwrap()],
        &[],
        None,
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert!(
        out.stdout.contains("configuration OK"),
        "{}",
        out.describe()
    );
}

#[test]
fn config_check_unknown_key() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "bad.json", &json!({"prot": 9001}));
    let out = run_cli(
        &["config", "--check", "--config", cfg.to_str().unwrap()],
        &[],
        None,
    );
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(
        out.stderr.contains("unknown key \"prot\""),
        "{}",
        out.describe()
    );
}

#[test]
fn config_check_wrong_type() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "bad.json", &json!({"port": "x"}));
    let out = run_cli(
        &["config", "--check", "--config", cfg.to_str().unwrap()],
        &[],
        None,
    );
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(out.stderr.contains("port"), "{}", out.describe());
    assert!(out.stderr.contains("invalid type"), "{}", out.describe());
    let cfg = write_config(
        dir.path(),
        "bad2.json",
        &json!({"allowed_origins": "http://a"}),
    );
    let out = run_cli(
        &["config", "--check", "--config", cfg.to_str().unwrap()],
        &[],
        None,
    );
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(out.stderr.contains("allowed_origins"), "{}", out.describe());
}

#[test]
fn config_check_invalid_json_and_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("broken.json");
    std::fs::write(&p, "{ \"port\": ").unwrap();
    let out = run_cli(
        &["config", "--check", "--config", p.to_str().unwrap()],
        &[],
        None,
    );
    assert_ne!(out.code(), Some(0), "{}", out.describe());
    assert!(
        !out.stderr.trim().is_empty(),
        "an error message: {}",
        out.describe()
    );
    let missing = dir.path().join("missing.json");
    let out = run_cli(
        &["config", "--check", "--config", missing.to_str().unwrap()],
        &[],
        None,
    );
    assert_ne!(out.code(), Some(0), "{}", out.describe());
    assert!(
        out.stderr.contains("missing.json"),
        "names the file: {}",
        out.describe()
    );
}

#[test]
fn websocket_refuses_to_start_with_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "bad.json", &json!({"prot": 1}));
    let out = run_cli(
        &[
            "websocket",
            "--port",
            "0",
            "--config",
            cfg.to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_ne!(out.code(), Some(0), "{}", out.describe());
    assert!(out.stderr.contains("prot"), "{}", out.describe());
}

#[test]
fn flag_beats_env_for_the_running_server() {
    // The harness passes --port 0; a FERROCAST_PORT the server could not bind must be ignored.
    let s = Server::start(
        &[],
        &[
            ("FERROCAST_PORT", "1"),
            ("FERROCAST_MAX_MESSAGE_BYTES", "500"),
        ],
    );
    assert_ne!(s.port(), 1);
    let mut c = s.channel_client();
    c.ping_pong();
    // ...while env still applies to keys without a flag.
    c.send_text(&"a".repeat(800));
    assert_eq!(
        c.expect_close(T).0,
        1009,
        "FERROCAST_MAX_MESSAGE_BYTES=500 applies"
    );
}

#[test]
fn config_file_applies_to_running_server() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "c.json",
        &json!({"port": 1, "max_message_bytes": 500}),
    );
    let s = Server::start(&["--config", cfg.to_str().unwrap()], &[]);
    let mut c = s.channel_client();
    c.send_text(&"a".repeat(800));
    assert_eq!(c.expect_close(T).0, 1009);
}

#[test]
fn auto_port_falls_back_when_port_is_taken() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port().to_string();
    // Without --auto-port: refuses to start.
    let rt = tempfile::tempdir().unwrap();
    let fifo = rt.path().join("a.fifo");
    let out = run_cli_in(
        rt.path(),
        &[
            "websocket",
            "--port",
            &port,
            "--fifo",
            fifo.to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_ne!(out.code(), Some(0), "{}", out.describe());
    assert!(!fifo.exists(), "FIFO not left behind by a failed start");
    // With --auto-port: starts on another port.
    let p: u16 = port.parse().unwrap();
    let s = Server::start_opts(Opts {
        port: Some(p),
        args: &["--auto-port"],
        ..Default::default()
    });
    assert_ne!(s.port(), p);
    s.channel_client().ping_pong();
    drop(busy);
}

#[test]
fn help_for_each_subcommand() {
    let out = run_cli(&["--help"], &[], None);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    for sub in ["websocket", "broadcast", "config"] {
        assert!(
            out.stdout.contains(sub),
            "top-level help lists {sub}:\n{}",
            out.stdout
        );
    }
    let cases: [(&str, &[&str]); 3] = [
        (
            "websocket",
            &[
                "--config",
                "--host",
                "--port",
                "--path",
                "--fifo",
                "--auto-port",
                "--set",
            ],
        ),
        (
            "broadcast",
            &[
                "--config",
                "--fifo",
                "--channel",
                "--event",
                "--socket-id",
                "--json",
            ],
        ),
        ("config", &["--config", "--check"]),
    ];
    for (sub, flags) in cases {
        let out = run_cli(&[sub, "--help"], &[], None);
        assert_eq!(out.code(), Some(0), "{sub} --help: {}", out.describe());
        for f in flags {
            assert!(
                out.stdout.contains(f),
                "`{sub} --help` mentions {f}:\n{}",
                out.stdout
            );
        }
    }
}

#[test]
fn unknown_subcommand_fails() {
    let out = run_cli(&["frobnicate"], &[], None);
    assert_ne!(out.code(), Some(0), "{}", out.describe());
}

#[test]
fn config_shows_every_per_app_setting_of_the_default_app() {
    let v = config_json(&["--app-key", "k1"], &[]);
    let app = &v["apps"][0];
    assert_eq!(app["key"], "k1", "{v:#}");
    assert_eq!(app["secret"], "********", "masked");
    for key in [
        "subscription_count_events",
        "subscription_count_interval_ms",
        "watchlist_events",
        "max_watchlist_users",
        "hooks",
        "webhooks",
    ] {
        assert!(app.get(key).is_some(), "{key} missing: {app:#}");
    }
}
