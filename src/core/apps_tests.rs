use super::*;
use std::time::Duration;

#[test]
fn rate_limit_refills() {
    let t0 = Instant::now();
    let mut r = RateLimit::new(2, t0);
    assert!(r.try_take(1, t0));
    assert!(r.try_take(1, t0));
    assert!(!r.try_take(1, t0));
    assert!(r.try_take(1, t0 + Duration::from_millis(600)));
    let mut unlimited = RateLimit::new(0, t0);
    assert!((0..1000).all(|_| unlimited.try_take(1, t0)));
}

fn cfg(id: &str, key: &str, secret: &str) -> AppConfig {
    AppConfig {
        id: id.into(),
        key: key.into(),
        secret: secret.into(),
        ..Default::default()
    }
}

#[test]
fn the_store_adds_changes_and_disables_but_never_moves_an_app() {
    let now = Instant::now();
    let mut apps = Apps::new(vec![cfg("file", "file-key", "s")], now);
    assert!(
        apps.sync(vec![cfg("1", "k1", "a"), cfg("2", "k2", "b")], now)
            .is_empty()
    );
    assert_eq!((apps.by_key("k1"), apps.by_id("2")), (Some(1), Some(2)));
    // A rotated secret and a new key; app 2 gone from the table.
    let disabled = apps.sync(vec![cfg("1", "k1-new", "a2")], now);
    assert_eq!(
        disabled,
        [2],
        "gone from the table: disabled, kept in place"
    );
    assert!(!apps.get(2).cfg.enabled);
    assert_eq!((apps.by_key("k1"), apps.by_key("k1-new")), (None, Some(1)));
    assert_eq!(apps.get(1).cfg.secret, "a2");
    // Disabled in the table; back again later under its index.
    let mut off = cfg("1", "k1-new", "a2");
    off.enabled = false;
    assert_eq!(apps.sync(vec![off, cfg("2", "k2", "b")], now), [1]);
    assert!(apps.get(2).cfg.enabled && apps.by_id("2") == Some(2));
}

#[test]
fn the_store_cannot_take_a_file_apps_id_or_another_apps_key() {
    let now = Instant::now();
    let mut apps = Apps::new(vec![cfg("file", "file-key", "s")], now);
    apps.sync(
        vec![cfg("file", "x", "evil"), cfg("3", "file-key", "evil")],
        now,
    );
    assert_eq!(apps.len(), 1, "neither was taken");
    assert_eq!(apps.get(0).cfg.secret, "s");
    assert_eq!(apps.by_key("file-key"), Some(0));
}
