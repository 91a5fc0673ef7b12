use super::*;
use serde_json::json;
use std::path::Path;

fn write(text: &str) -> (tempdir::Dir, PathBuf) {
    let dir = tempdir::Dir::new();
    let path = dir.0.join("c.json");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

mod tempdir {
    pub struct Dir(pub std::path::PathBuf);
    impl Dir {
        pub fn new() -> Dir {
            use std::sync::atomic::{AtomicUsize, Ordering};
            static N: AtomicUsize = AtomicUsize::new(0);
            let p = std::env::temp_dir().join(format!(
                "ferrocast-cfg-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            Dir(p)
        }
    }
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

#[test]
fn layers_apply_in_order() {
    let (_d, path) = write(r#"{"port": 9000, "max_connections": 5}"#);
    let sources = Sources {
        file: Some(path),
        overrides: vec![("max_connections".into(), "7".into())],
        ..Sources::default()
    };
    let env = vec![
        ("FERROCAST_PORT".to_string(), "9100".to_string()),
        ("FERROCAST_MAX_CONNECTIONS".to_string(), "6".to_string()),
        ("FERROCAST_SOCKET_ID".to_string(), "1.2".to_string()),
    ];
    let c = sources.load_with_env(&env).unwrap();
    assert_eq!(c.port, 9100);
    assert_eq!(c.max_connections, 7);
    assert_eq!(c.host, "127.0.0.1");
}

#[test]
fn unknown_key_is_named() {
    let (_d, path) = write(r#"{"prot": 1}"#);
    let err = check_file(&path).unwrap_err().to_string();
    assert!(err.contains("unknown key \"prot\""), "{err}");
}

#[test]
fn wrong_type_names_key() {
    let (_d, path) = write(r#"{"port": "x"}"#);
    let err = check_file(&path).unwrap_err().to_string();
    assert!(err.contains("port"), "{err}");
    assert!(err.contains("invalid type"), "{err}");
}

#[test]
fn env_lists_split_on_commas() {
    let env = vec![(
        "FERROCAST_ALLOWED_ORIGINS".to_string(),
        "http://a, http://b".to_string(),
    )];
    let c = Sources::default().load_with_env(&env).unwrap();
    assert_eq!(c.allowed_origins, vec!["http://a", "http://b"]);
}

#[test]
fn nested_env_keys() {
    let env = vec![
        ("FERROCAST_TLS_CERT".to_string(), "/c.pem".to_string()),
        ("FERROCAST_TLS_KEY".to_string(), "/k.pem".to_string()),
    ];
    let c = Sources::default().load_with_env(&env).unwrap();
    assert_eq!(c.tls.cert.as_deref(), Some(Path::new("/c.pem")));
    let one = vec![("FERROCAST_TLS_CERT".to_string(), "/c.pem".to_string())];
    assert!(Sources::default().load_with_env(&one).is_err());
}

#[test]
fn bad_env_number_is_reported() {
    let env = vec![("FERROCAST_PORT".to_string(), "eighty".to_string())];
    let err = Sources::default()
        .load_with_env(&env)
        .unwrap_err()
        .to_string();
    assert!(err.contains("FERROCAST_PORT"), "{err}");
}

#[test]
fn world_writable_fifo_refused() {
    let env = vec![("FERROCAST_FIFO_MODE".to_string(), "0666".to_string())];
    assert!(Sources::default().load_with_env(&env).is_err());
}

#[test]
fn durations_past_thirty_days_are_refused_by_name() {
    // Every duration is added to the server's clock; one near u64::MAX would wrap it.
    for (key, value) in [
        ("FERROCAST_ACTIVITY_TIMEOUT_SECS", "18446744073709551615"),
        ("FERROCAST_CACHE_TTL_SECS", "2592001"),
        ("FERROCAST_HANDSHAKE_TIMEOUT_SECS", "99999999999"),
    ] {
        let env = vec![(key.to_string(), value.to_string())];
        let err = Sources::default()
            .load_with_env(&env)
            .unwrap_err()
            .to_string();
        let name = key.trim_start_matches("FERROCAST_").to_lowercase();
        assert!(
            err.contains(&name) && err.contains("30 days"),
            "{key}: {err}"
        );
    }
    let env = vec![(
        "FERROCAST_CACHE_TTL_SECS".to_string(),
        "2592000".to_string(),
    )];
    assert!(Sources::default().load_with_env(&env).is_ok());
}

#[test]
fn secrets_are_masked() {
    let mut v = serde_json::json!({"apps":[{"key":"k","secret":"s"}],"token":"t","x":"y"});
    mask_secrets(&mut v);
    assert_eq!(v["apps"][0]["secret"], "********");
    assert_eq!(v["apps"][0]["key"], "k");
    assert_eq!(v["token"], "********");
    assert_eq!(v["x"], "y");
}

#[test]
fn hooks_are_checked_by_name() {
    let cases = [
        (json!([{"handler": "exec"}]), "apps[0].hooks[0].command"),
        (json!([{"handler": "none"}]), "is not exec, http or fastcgi"),
        (
            json!([{"handler": "http", "url": "http://x/h", "events": ["joined"]}]),
            "\"joined\" is not one of connected",
        ),
        (
            json!([{"handler": "fastcgi", "socket": "/s", "script": "hooks.php"}]),
            "absolute path",
        ),
    ];
    for (hooks, words) in cases {
        let cfg = json!({"apps": [{"id": "a", "key": "k", "secret": "s", "hooks": hooks}]});
        let (_d, path) = write(&cfg.to_string());
        let err = check_file(&path).unwrap_err().to_string();
        assert!(err.contains(words), "{hooks}: {err}");
    }
    let ok = json!({"apps": [{"id": "a", "key": "k", "secret": "s",
                              "hooks": [{"handler": "exec", "command": ["php", "h.php"]}]}]});
    let (_d, path) = write(&ok.to_string());
    let cfg = check_file(&path).unwrap();
    let targets = cfg.apps[0].notify_targets();
    assert_eq!(targets.len(), 1);
    assert!(targets[0].wants("disconnected", ""));
    assert!(
        !targets[0].wants("channel_occupied", "x"),
        "hooks take lifecycle events only"
    );
}

#[test]
fn passwords_in_urls_are_masked() {
    let mut v = serde_json::json!({
        "app_store": {"url": "postgres://ferro:s3cret@db:5432/apps?sslmode=require"},
        "scaling": {"redis_url": "redis://:hunter2@cache:6379/0"},
        "plain_url": "mysql://reader@db/apps"
    });
    mask_secrets(&mut v);
    assert_eq!(
        v["app_store"]["url"],
        "postgres://ferro:********@db:5432/apps?sslmode=require"
    );
    assert_eq!(v["scaling"]["redis_url"], "redis://:********@cache:6379/0");
    assert_eq!(v["plain_url"], "mysql://reader@db/apps");
    assert_eq!(mask_url_password("no url"), "no url");
}

#[test]
fn the_app_store_is_checked() {
    let store = |driver: &str, url: &str, table: &str| AppStoreConfig {
        driver: driver.into(),
        url: url.into(),
        table: table.into(),
        ..Default::default()
    };
    assert!(AppStoreConfig::default().validate().is_ok());
    assert!(
        store("postgres", "postgres://u@h/db", "apps")
            .validate()
            .is_ok()
    );
    assert!(
        store("mysql", "mysql://u@h/db", "ferrocast_apps")
            .validate()
            .is_ok()
    );
    let err = store("mysql", "postgres://u@h/db", "apps")
        .validate()
        .unwrap_err();
    assert!(err.contains("app_store.url"), "{err}");
    let err = store("postgres", "postgres://u@h/db", "apps; DROP TABLE x")
        .validate()
        .unwrap_err();
    assert!(err.contains("app_store.table"), "{err}");
    assert!(store("oracle", "", "apps").validate().is_err());
}
