//! `--env-file` / `FERROCAST_ENV_FILE` and `--prefer-config-file`: Socket Rush's configuration
//! habits, through the real binary.
mod common;
use common::*;

fn config_json(args: &[&str], env: &[(&str, &str)]) -> Value {
    let mut all = vec!["config"];
    all.extend_from_slice(args);
    let out = run_cli(&all, env, None);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    serde_json::from_str(&out.stdout).expect("`ferrocast config` prints JSON")
}

fn env_file(dir: &std::path::Path, text: &str) -> String {
    let path = dir.join(".env");
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn env_file_sets_keys_under_the_real_environment() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(
        dir.path(),
        "# as a PHP application keeps it\nAPP_NAME=Shop\nexport FERROCAST_PORT=6001\n\
         FERROCAST_APP_KEY='key with # and $dollar'\nFERROCAST_APP_ID=\"id-${APP_NAME}\"\n\
         FERROCAST_MAX_CONNECTIONS=50 # a comment\n",
    );
    let v = config_json(&["--env-file", &env], &[]);
    assert_eq!(v["port"], 6001, "{v:#}");
    assert_eq!(v["app_key"], "key with # and $dollar");
    assert_eq!(v["app_id"], "id-Shop");
    assert_eq!(v["max_connections"], 50);
    // The real environment wins over the file, and a flag over both.
    let v = config_json(&["--env-file", &env], &[("FERROCAST_PORT", "7001")]);
    assert_eq!(v["port"], 7001, "the environment is read over the file");
    assert_eq!(v["max_connections"], 50, "other keys keep the file's value");
    let v = config_json(
        &["--env-file", &env, "--port", "8001"],
        &[("FERROCAST_PORT", "7001")],
    );
    assert_eq!(v["port"], 8001, "a flag beats both");
    // FERROCAST_ENV_FILE names the file when the flag does not.
    let v = config_json(&[], &[("FERROCAST_ENV_FILE", &env)]);
    assert_eq!(v["port"], 6001, "{v:#}");
}

#[test]
fn prefer_config_file_puts_the_file_over_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(dir.path(), "c.json", &json!({"port": 7000}));
    let cfg = cfg.to_str().unwrap();
    let env = env_file(
        dir.path(),
        "FERROCAST_PORT=6001\nFERROCAST_MAX_CONNECTIONS=9\n",
    );
    let both = ["--config", cfg, "--env-file", &env];
    assert_eq!(
        config_json(&both, &[])["port"],
        6001,
        "by default the environment wins"
    );
    let mut preferred = both.to_vec();
    preferred.push("--prefer-config-file");
    let v = config_json(&preferred, &[("FERROCAST_PORT", "6002")]);
    assert_eq!(
        v["port"], 7000,
        "the file wins over the environment and the env file"
    );
    assert_eq!(
        v["max_connections"], 9,
        "keys the file leaves out still come from the environment"
    );
    preferred.extend(["--set", "port=7100"]);
    assert_eq!(
        config_json(&preferred, &[])["port"],
        7100,
        "flags still win"
    );
}

#[test]
fn a_bad_env_file_names_the_file_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(dir.path(), "FERROCAST_PORT=6001\n\nnot a pair\n");
    for cmd in [&["config"][..], &["config", "--check"], &["websocket"]] {
        let mut args = cmd.to_vec();
        args.extend(["--env-file", &env]);
        let out = run_cli(&args, &[], None);
        assert_eq!(out.code(), Some(2), "{args:?}: {}", out.describe());
        assert!(
            out.stderr.contains(&format!("{env}:3: expected KEY=VALUE")),
            "{args:?}: {}",
            out.describe()
        );
    }
    let env = env_file(dir.path(), "FERROCAST_PORT=lots\n");
    let out = run_cli(&["config", "--env-file", &env], &[], None);
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(out.stderr.contains("FERROCAST_PORT"), "{}", out.describe());
    let missing = dir.path().join("missing.env");
    let out = run_cli(
        &["config", "--env-file", missing.to_str().unwrap()],
        &[],
        None,
    );
    assert_eq!(out.code(), Some(2), "{}", out.describe());
    assert!(
        out.stderr.contains("cannot read env file"),
        "{}",
        out.describe()
    );
}

#[test]
fn a_socket_rush_env_file_works_as_it_did() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(
        dir.path(),
        "# Socket Rush\nPORT=6001\nBIND_ADDRESS=0.0.0.0\nAPP_ID=123\nAPP_KEY=app1key\n\
         APP_SECRET=app1secret\nADAPTER_DRIVER=redis\nREDIS_URL=redis://127.0.0.1:6390/0\n\
         REDIS_PREFIX=pusher\nAPP_ENV=production\n",
    );
    let out = run_cli(&["config", "--env-file", &env], &[], None);
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["port"], 6001, "{v:#}");
    assert_eq!(v["host"], "0.0.0.0");
    assert_eq!(
        (&v["app_id"], &v["app_key"]),
        (&json!("123"), &json!("app1key"))
    );
    assert_eq!(v["scaling"]["driver"], "redis");
    assert_eq!(v["scaling"]["redis_url"], "redis://127.0.0.1:6390/0");
    assert_eq!(v["scaling"]["prefix"], "pusher");
    assert!(
        out.stderr.contains("read Socket Rush's PORT"),
        "{}",
        out.describe()
    );
    // FERROCAST_* names, in the file or the environment, win over Socket Rush's.
    let v = config_json(&["--env-file", &env], &[("FERROCAST_PORT", "7001")]);
    assert_eq!(v["port"], 7001);
}

#[test]
fn a_laravel_env_file_keeps_its_app_key_to_itself() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_file(
        dir.path(),
        "APP_NAME=Shop\nAPP_ENV=local\nAPP_KEY=base64:c2VjcmV0IGVuY3J5cHRpb24ga2V5\n\
         FERROCAST_APP_KEY=pusher-key\nFERROCAST_APP_SECRET=pusher-secret\n",
    );
    let v = config_json(&["--env-file", &env], &[]);
    assert_eq!(v["app_key"], "pusher-key", "{v:#}");
    let env = env_file(dir.path(), "APP_KEY=base64:c2VjcmV0\n");
    let v = config_json(&["--env-file", &env], &[]);
    assert_eq!(
        v["app_key"], "app-key",
        "a lone APP_KEY is Laravel's encryption key: {v:#}"
    );
}
