use super::*;

fn when(grace: Duration, keep: Duration) -> Vacating {
    Vacating {
        grace,
        keep,
        now: Instant::now(),
        at_ms: 1,
    }
}
use crate::config::WebhookConfig;

fn hook(types: &[&str], prefix: &str) -> WebhookConfig {
    WebhookConfig {
        url: "http://127.0.0.1:1/h".into(),
        event_types: types.iter().map(|s| s.to_string()).collect(),
        channel_prefix: prefix.into(),
        ..Default::default()
    }
}

#[test]
fn filters_batches_and_signs() {
    let hooks = [hook(&["channel_occupied"], "private-"), hook(&[], "")];
    let mut w = Webhooks::default();
    w.emit(
        0,
        &hooks,
        true,
        json!({"name":"channel_occupied","channel":"private-a"}),
        Instant::now(),
    );
    w.emit(
        0,
        &hooks,
        true,
        json!({"name":"channel_occupied","channel":"public"}),
        Instant::now(),
    );
    w.emit(
        0,
        &hooks,
        true,
        json!({"name":"subscription_count","channel":"public","subscription_count":1}),
        Instant::now(),
    );
    w.emit(
        0,
        &hooks,
        true,
        json!({"name":"subscription_count","channel":"public","subscription_count":2}),
        Instant::now(),
    );
    let settings = WebhookSettings::default();
    let later = Instant::now() + Duration::from_secs(1);
    w.seal(later, 1, &settings, |_| "secret".into());
    assert_eq!(w.pending.len(), 2);
    let first = w.pending.iter().find(|d| d.hook == 0).unwrap();
    let v: Value = serde_json::from_str(&first.body).unwrap();
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    assert!(crate::pusher::auth::verify_webhook_signature(
        "secret",
        first.body.as_bytes(),
        &first.signature
    ));
    let all = w.pending.iter().find(|d| d.hook == 1).unwrap();
    let v: Value = serde_json::from_str(&all.body).unwrap();
    assert_eq!(
        v["events"].as_array().unwrap().len(),
        3,
        "the counts of one channel coalesce: {v}"
    );
    assert!(v["time_ms"].as_u64().unwrap() > 0);
}

#[test]
fn without_batching_every_event_is_its_own_request() {
    let hooks = [hook(&[], "")];
    let mut w = Webhooks::default();
    w.emit(
        1,
        &hooks,
        false,
        json!({"name":"channel_occupied","channel":"a"}),
        Instant::now(),
    );
    w.emit(
        1,
        &hooks,
        false,
        json!({"name":"subscription_count","channel":"a","subscription_count":1}),
        Instant::now(),
    );
    w.emit(
        0,
        &hooks,
        true,
        json!({"name":"channel_occupied","channel":"b"}),
        Instant::now(),
    );
    w.seal(Instant::now(), 1, &WebhookSettings::default(), |_| {
        "s".into()
    });
    assert_eq!(
        w.pending.len(),
        2,
        "the unbatched app's two events go at once, one each"
    );
    assert!(w.pending.iter().all(|d| d.app == 1));
    assert!(w.has_work(), "the batching app still waits for its window");
}

#[test]
fn retries_then_drops() {
    let settings = WebhookSettings::default();
    let mut w = Webhooks::default();
    let d = Delivery {
        app: 0,
        hook: 0,
        body: "{}".into(),
        signature: String::new(),
        attempt: 1,
        not_before: Instant::now(),
    };
    w.failed(d, "500", &settings, Instant::now());
    let d = w.pending.pop_front().unwrap();
    assert_eq!(d.attempt, 2);
    assert!(d.not_before > Instant::now());
    w.failed(d, "500", &settings, Instant::now());
    let d = w.pending.pop_front().unwrap();
    w.failed(d, "500", &settings, Instant::now());
    assert!(w.pending.is_empty());
    assert_eq!(w.dropped, 1);
}

#[test]
fn quick_resubscribe_does_not_flap() {
    let mut w = Webhooks::default();
    w.vacated(0, "a", 0, when(Duration::from_secs(1), Duration::ZERO));
    assert!(!w.occupied(0, "a"));
    assert!(
        w.due_vacated(Instant::now() + Duration::from_secs(2))
            .is_empty()
    );
    w.vacated(0, "b", 0, when(Duration::from_millis(0), Duration::ZERO));
    let due = w.due_vacated(Instant::now() + Duration::from_millis(1));
    assert_eq!(due.len(), 1);
    assert_eq!((due[0].0, due[0].1.as_str()), (0, "b"));
    w.resolve(0, "b", Instant::now() + Duration::from_millis(1));
    assert!(!w.has_work(), "a single node forgets a sent vacate at once");
    assert!(w.occupied(0, "b"));
}

#[test]
fn cluster_vacate_records_outlive_the_decision() {
    let mut w = Webhooks::default();
    let t0 = Instant::now();
    w.vacated(
        0,
        "a",
        0,
        when(Duration::from_secs(1), Duration::from_secs(10)),
    );
    w.vacated(
        0,
        "w",
        0,
        when(Duration::from_secs(1), Duration::from_secs(10)),
    );
    assert_eq!(w.due_vacated(t0 + Duration::from_secs(2)).len(), 2);
    w.resolve(0, "a", t0 + Duration::from_secs(2));
    // "a" is decided but still shown to the other nodes; "w" waits for the cluster.
    assert_eq!(w.vacates().count(), 2);
    let due = w.due_vacated(t0 + Duration::from_secs(3));
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].1, "w");
    // Both expire after the keep time; the undecided one is given up.
    assert!(w.has_work(), "\"w\" is still undecided");
    assert!(w.due_vacated(t0 + Duration::from_secs(12)).is_empty());
    assert_eq!(w.vacates().count(), 0);
    assert!(!w.has_work());
    // A decided record does not hold back the next occupied event.
    w.vacated(0, "b", 0, when(Duration::ZERO, Duration::from_secs(10)));
    w.resolve(0, "b", Instant::now());
    assert!(w.occupied(0, "b"));
    assert_eq!(w.vacates().count(), 0);
}
