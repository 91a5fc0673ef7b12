//! Apps from a database table, read by `ferrocast app-store` (the worker the server forks) from
//! real PostgreSQL and MariaDB servers started here on loopback ports, with the tables of
//! `migrations/`: a row becomes an app with every setting typed, NULL is the default, a bad row
//! is skipped with its reason, an unknown key is no app, a stopped database is an error, and the
//! password never shows in `ferrocast config`.

mod common;
use common::db::{Mariadb, PASSWORD, Postgres};
use common::*;

use std::process::{Command, Output};

fn app_store(driver: &str, url: &str, args: &[&str]) -> Output {
    Command::new(bin())
        .arg("app-store")
        .args(args)
        .env("FERROCAST_APP_STORE_DRIVER", driver)
        .env("FERROCAST_APP_STORE_URL", url)
        .env_remove("FERROCAST_APP_STORE_TABLE")
        .output()
        .expect("ferrocast app-store")
}

/// The apps printed, one JSON object per line.
fn apps(out: &Output) -> Vec<Value> {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON app"))
        .collect()
}

const MIGRATION_PG: &str = include_str!("../migrations/postgres/001_ferrocast_apps.sql");
const MIGRATION_MYSQL: &str = include_str!("../migrations/mysql/001_ferrocast_apps.sql");

/// The same three rows in either database: a full app, a minimal one, and one that is not
/// a valid app (an empty secret).
const ROWS: &str = "INSERT INTO ferrocast_apps (id, app_key, secret, name, enabled, max_connections, \
    enable_client_messages, history, webhooks, allowed_origins) VALUES \
    ('1', 'key-1', 'secret-1', 'Shop', TRUE, 250, TRUE, \
     '[{\"prefix\": \"orders.\", \"size\": 100, \"ttl_secs\": 300}]', \
     '[{\"url\": \"https://example.com/hook\", \"event_types\": [\"channel_occupied\"]}]', \
     '[\"https://shop.example\"]'), \
    ('2', 'key-2', 'secret-2', NULL, FALSE, NULL, NULL, NULL, NULL, NULL), \
    ('3', 'key-3', '', NULL, TRUE, NULL, NULL, NULL, NULL, NULL)";

fn check_rows(driver: &str, url: &str) {
    let full = apps(&app_store(driver, url, &["key", "key-1"]));
    assert_eq!(full.len(), 1, "{full:?}");
    let a = &full[0];
    assert_eq!(
        (&a["id"], &a["key"], &a["secret"]),
        (&json!("1"), &json!("key-1"), &json!("secret-1"))
    );
    assert_eq!(
        (&a["enabled"], &a["enable_client_messages"]),
        (&json!(true), &json!(true))
    );
    assert_eq!(a["max_connections"], 250);
    assert_eq!(a["history"][0]["prefix"], "orders.");
    assert_eq!(a["webhooks"][0]["url"], "https://example.com/hook");
    assert_eq!(a["allowed_origins"], json!(["https://shop.example"]));

    let by_id = apps(&app_store(driver, url, &["id", "2"]));
    assert_eq!(by_id[0]["key"], "key-2");
    assert_eq!(by_id[0]["enabled"], false);
    assert_eq!(by_id[0]["max_connections"], 0, "NULL takes the default");

    assert!(apps(&app_store(driver, url, &["key", "no-such-key"])).is_empty());
    // A key that tries to be SQL is only a value.
    assert!(apps(&app_store(driver, url, &["key", "x' OR '1'='1"])).is_empty());

    let out = app_store(driver, url, &["all"]);
    let ids: Vec<Value> = apps(&out).iter().map(|a| a["id"].clone()).collect();
    assert_eq!(ids.len(), 2, "the bad row is skipped: {ids:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("app \"3\""),
        "the bad row is named: {stderr}"
    );
}

fn check_down(driver: &str, url: &str) {
    let out = app_store(driver, url, &["key", "key-1"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot reach the app store"), "{stderr}");
    assert!(
        !stderr.contains(PASSWORD),
        "the password is never printed: {stderr}"
    );
}

#[test]
fn postgresql_rows_are_apps() {
    let mut db = Postgres::start();
    db.sql(MIGRATION_PG);
    db.sql(ROWS);
    check_rows("postgres", &db.url());
    db.stop();
    check_down("postgres", &db.url());
}

#[test]
fn mariadb_rows_are_apps() {
    let mut db = Mariadb::start();
    db.sql(MIGRATION_MYSQL);
    db.sql(ROWS);
    check_rows("mysql", &db.url());
    db.stop();
    check_down("mysql", &db.url());
}

#[test]
fn the_store_password_is_masked_in_ferrocast_config() {
    let url = format!("postgres://ferro:{PASSWORD}@db.internal:5432/apps");
    let out = Command::new(bin())
        .arg("config")
        .env("FERROCAST_APP_STORE_DRIVER", "postgres")
        .env("FERROCAST_APP_STORE_URL", &url)
        .output()
        .expect("ferrocast config");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!text.contains(PASSWORD), "{text}");
    assert!(
        text.contains("postgres://ferro:********@db.internal:5432/apps"),
        "{text}"
    );
}

/// A Pusher connection to `key`: the first message (connection_established or an error).
fn connect(s: &Server, key: &str) -> (Client, Value) {
    let mut c = s.ws(&format!("/app/{key}?protocol=7"));
    let first = c.recv_json(T);
    (c, first)
}

/// The status of `POST /apps/{id}/events` with `Bearer {secret}`.
fn rest_status(s: &Server, id: &str, secret: &str) -> u16 {
    let body = r#"{"name":"e","channel":"c","data":"{}"}"#;
    let req = format!(
        "POST /apps/{id}/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {secret}\r\n\
         Connection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    http_raw(&s.addr(), req.as_bytes()).map_or(0, |r| r.status)
}

fn up(s: &Server) -> String {
    let v: Value = serde_json::from_slice(&s.get("/up").body).unwrap_or(Value::Null);
    v["status"].as_str().unwrap_or("").to_string()
}

/// Connects with keys `nope-{i}` for every i in `range`, all at once, and waits until each got
/// its 101 (the 4001 follows it).
fn unknown_keys(s: &Server, range: std::ops::Range<usize>) {
    let mut flood: Vec<std::net::TcpStream> = range
        .map(|i| {
            let mut c = std::net::TcpStream::connect(s.addr()).expect("connect");
            let req = format!(
                "GET /app/nope-{i}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n\
                 Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
                 Sec-WebSocket-Version: 13\r\n\r\n"
            );
            std::io::Write::write_all(&mut c, req.as_bytes()).expect("write");
            c
        })
        .collect();
    for c in &mut flood {
        c.set_read_timeout(Some(T)).expect("timeout");
        let mut head = [0u8; 12];
        std::io::Read::read_exact(c, &mut head).expect("an answer");
        assert_eq!(&head, b"HTTP/1.1 101");
    }
}

/// A database the server reads its apps from, for the test below.
trait Table {
    fn driver(&self) -> &'static str;
    fn url(&self) -> String;
    fn sql(&self, sql: &str);
    fn stop(&mut self);
    fn restart(&mut self);
}

impl Table for Postgres {
    fn driver(&self) -> &'static str {
        "postgres"
    }
    fn url(&self) -> String {
        Postgres::url(self)
    }
    fn sql(&self, sql: &str) {
        Postgres::sql(self, sql)
    }
    fn stop(&mut self) {
        Postgres::stop(self)
    }
    fn restart(&mut self) {
        Postgres::restart(self)
    }
}

impl Table for Mariadb {
    fn driver(&self) -> &'static str {
        "mysql"
    }
    fn url(&self) -> String {
        Mariadb::url(self)
    }
    fn sql(&self, sql: &str) {
        Mariadb::sql(self, sql)
    }
    fn stop(&mut self) {
        Mariadb::stop(self)
    }
    fn restart(&mut self) {
        Mariadb::restart(self)
    }
}

#[test]
fn the_server_serves_postgresql_apps_and_follows_the_table() {
    let mut db = Postgres::start();
    db.sql(MIGRATION_PG);
    serves_and_follows(&mut db);
}

#[test]
fn the_server_serves_mariadb_apps_and_follows_the_table() {
    let mut db = Mariadb::start();
    db.sql(MIGRATION_MYSQL);
    serves_and_follows(&mut db);
}

fn serves_and_follows(db: &mut dyn Table) {
    db.sql("INSERT INTO ferrocast_apps (id, app_key, secret) VALUES ('1', 'key-1', 'secret-1')");
    let url = db.url();
    let env = [
        ("FERROCAST_APP_STORE_DRIVER", db.driver()),
        ("FERROCAST_APP_STORE_URL", url.as_str()),
        ("FERROCAST_APP_STORE_CACHE_TTL_SECS", "3600"),
    ];
    let s = Server::start(&[], &env);
    let served = wait_until(T, || {
        connect(&s, "key-1").1["event"] == "pusher:connection_established"
    });
    assert!(served, "the table's app is served:\n{}", s.logs_text());
    let (mut client, _) = connect(&s, "key-1");
    assert_eq!(rest_status(&s, "1", "secret-1"), 200);
    assert!(
        !s.logs_text().contains(PASSWORD),
        "the password is never logged"
    );

    // A rotated secret signs the next request (SIGHUP reads the table at once).
    db.sql("UPDATE ferrocast_apps SET secret = 'secret-2' WHERE id = '1'");
    let mark = s.log_mark();
    s.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(s.wait_for_reload(mark, T).is_some(), "{}", s.logs_text());
    assert!(wait_until(T, || rest_status(&s, "1", "secret-1") == 401));
    assert_eq!(rest_status(&s, "1", "secret-2"), 200);

    // A new app is served; a disabled one has its connections closed with 4003.
    db.sql("INSERT INTO ferrocast_apps (id, app_key, secret) VALUES ('2', 'key-2', 's2')");
    db.sql("UPDATE ferrocast_apps SET enabled = FALSE WHERE id = '1'");
    let mark = s.log_mark();
    s.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(s.wait_for_reload(mark, T).is_some(), "{}", s.logs_text());
    let notice = client.recv_json(T);
    assert_eq!(notice["event"], "pusher:error", "{notice}");
    assert_eq!(notice["data"]["code"], 4003, "{notice}");
    assert!(wait_until(T, || connect(&s, "key-2").1["event"]
        == "pusher:connection_established"));
    assert_eq!(connect(&s, "key-1").1["data"]["code"], 4003);

    // A row written now is served at once: the connection waits for a lookup by key, the REST
    // call for one by id, without a SIGHUP.
    db.sql("INSERT INTO ferrocast_apps (id, app_key, secret) VALUES ('5', 'key-5', 's5')");
    assert_eq!(
        connect(&s, "key-5").1["event"],
        "pusher:connection_established"
    );
    db.sql("INSERT INTO ferrocast_apps (id, app_key, secret) VALUES ('6', 'key-6', 's6')");
    assert_eq!(rest_status(&s, "6", "s6"), 200);

    // 10 000 distinct unknown keys, 500 at a time: every one is answered (4001 after the
    // upgrade), and the queries they cause are bounded by the lookup rate, not by their number.
    let before = s.metric("app_store_lookups_total");
    let started = std::time::Instant::now();
    for wave in 0..20 {
        unknown_keys(&s, wave * 500..(wave + 1) * 500);
    }
    let secs = started.elapsed().as_secs() + 1;
    let lookups = s.metric("app_store_lookups_total") - before;
    assert!(
        lookups >= 1 && lookups <= 20 * (secs + 1),
        "{lookups} lookups for 10 000 unknown keys in {secs} s"
    );

    // A key no row can hold (over 64 bytes) is unknown without asking the database.
    let before = s.metric("app_store_lookups_total");
    assert_eq!(connect(&s, &"k".repeat(65)).1["data"]["code"], 4001);
    assert_eq!(s.metric("app_store_lookups_total"), before);

    // The database stops: the apps read keep working, /up says degraded, unknown keys 4001.
    db.stop();
    s.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(wait_until(T, || up(&s) == "degraded"), "{}", s.logs_text());
    assert_eq!(
        connect(&s, "key-2").1["event"],
        "pusher:connection_established"
    );
    assert_eq!(connect(&s, "no-such-key").1["data"]["code"], 4001);
    // And comes back.
    db.restart();
    s.signal(nix::sys::signal::Signal::SIGHUP);
    assert!(wait_until(T, || up(&s) == "ok"), "{}", s.logs_text());
}

#[test]
fn postgresql_changes_take_effect_at_once_through_notify() {
    let db = Postgres::start();
    db.sql(MIGRATION_PG);
    db.sql("INSERT INTO ferrocast_apps (id, app_key, secret) VALUES ('1', 'key-1', 'secret-1')");
    let url = db.url();
    let env = [
        ("FERROCAST_APP_STORE_DRIVER", "postgres"),
        ("FERROCAST_APP_STORE_URL", url.as_str()),
        ("FERROCAST_APP_STORE_CACHE_TTL_SECS", "3600"),
    ];
    let s = Server::start(&[], &env);
    let served = wait_until(T, || {
        connect(&s, "key-1").1["event"] == "pusher:connection_established"
    });
    assert!(served, "{}", s.logs_text());
    let (mut client, _) = connect(&s, "key-1");
    // The worker that waits for NOTIFY listens once a change it saw made the server read the
    // table again (a read for another reason, like the first one, says nothing of it). A change
    // made while the next worker starts is read 3 s later.
    let listening = wait_until(T, || {
        let mark = s.log_mark();
        db.sql("UPDATE ferrocast_apps SET name = 'poke' WHERE id = '1'");
        s.wait_for_log_since(mark, "the table changed", std::time::Duration::from_secs(2))
            .is_some()
    });
    assert!(
        listening,
        "a change to the table was never noticed:\n{}",
        s.logs_text()
    );
    db.sql("UPDATE ferrocast_apps SET enabled = FALSE WHERE id = '1'");
    let notice = match client.next_event(T) {
        Event::Text(t) => serde_json::from_str::<serde_json::Value>(&t).unwrap_or_default(),
        other => panic!("no notice ({other:?}):\n{}", s.logs_text()),
    };
    assert_eq!(notice["data"]["code"], 4003, "{notice}");
}

/// A CA and a certificate for 127.0.0.1 signed by it: (CA PEM, certificate PEM, key PEM).
fn certificates() -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let ca_key = KeyPair::generate().expect("CA key");
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "test database CA");
    let ca_pem = params.self_signed(&ca_key).expect("CA").pem();
    let issuer = Issuer::new(params, ca_key);
    let key = KeyPair::generate().expect("key");
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()]).expect("params");
    let cert = leaf.signed_by(&key, &issuer).expect("certificate");
    (ca_pem, cert.pem(), key.serialize_pem())
}

#[test]
fn tls_to_postgresql_checks_the_servers_certificate() {
    let (ca, cert, key) = certificates();
    let db = Postgres::start_tls(&cert, &key);
    db.sql(MIGRATION_PG);
    tls_checks_the_certificate(&db, "sslmode=require", &ca);
}

#[test]
fn tls_to_mariadb_checks_the_servers_certificate() {
    let (ca, cert, key) = certificates();
    let db = Mariadb::start_tls(&cert, &key);
    db.sql(MIGRATION_MYSQL);
    tls_checks_the_certificate(&db, "ssl-mode=REQUIRED", &ca);
}

/// Over TLS (asked for by `ask` in the URL) the table is read when the server's CA is trusted
/// (`app_store.ca_file`), and refused (never read in the clear) when it is not.
fn tls_checks_the_certificate(db: &dyn Table, ask: &str, ca: &str) {
    db.sql("INSERT INTO ferrocast_apps (id, app_key, secret) VALUES ('1', 'key-1', 'secret-1')");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).expect("ca");
    let url = format!("{}?{ask}", db.url());
    let with_ca = Command::new(bin())
        .args(["app-store", "key", "key-1"])
        .env("FERROCAST_APP_STORE_DRIVER", db.driver())
        .env("FERROCAST_APP_STORE_URL", &url)
        .env("FERROCAST_APP_STORE_CA_FILE", &ca_file)
        .output()
        .expect("ferrocast app-store");
    assert_eq!(
        apps(&with_ca)[0]["id"],
        "1",
        "read over TLS, the CA trusted"
    );
    let out = app_store(db.driver(), &url, &["key", "key-1"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the CA not trusted: {stderr}");
    assert!(stderr.contains("cannot reach the app store"), "{stderr}");
}
