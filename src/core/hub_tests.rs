use super::*;
use std::time::Duration;

fn hub() -> Hub {
    Hub::new(2, CacheStore::new(1 << 20, Duration::from_secs(60)))
}

/// Checks both sides of every cross-reference.
fn check(h: &Hub) {
    if let Err(e) = h.audit() {
        panic!("{e}");
    }
}

#[test]
fn join_leave_and_vacate() {
    let mut h = hub();
    h.attach(1, 0);
    h.attach(2, 0);
    let a = h.subscribe(1, "a");
    assert!(matches!(
        a,
        Subscribed::New {
            created: true,
            count: 1,
            ..
        }
    ));
    assert_eq!(h.subscribe(1, "a"), Subscribed::Already(a.id()));
    assert!(matches!(
        h.subscribe(2, "a"),
        Subscribed::New {
            created: false,
            count: 2,
            ..
        }
    ));
    check(&h);
    let left = h.unsubscribe(1, "a").expect("was subscribed");
    assert_eq!((left.count, left.vacated()), (1, false));
    assert!(h.unsubscribe(1, "a").is_none());
    let left = h.detach(2);
    assert_eq!(left.len(), 1);
    assert!(left[0].vacated());
    assert_eq!(&*left[0].channel, "a");
    assert!(h.is_empty());
    check(&h);
}

#[test]
fn apps_do_not_share_channels() {
    let mut h = hub();
    h.attach(1, 0);
    h.attach(2, 1);
    h.subscribe(1, "a");
    h.subscribe(2, "a");
    assert_eq!(h.channel_named(0, "a").map(Channel::count), Some(1));
    assert_eq!(h.channel_named(1, "a").map(Channel::count), Some(1));
    assert_eq!(h.len(), 2);
}

#[test]
fn presence_counts_users_once() {
    let mut h = hub();
    for k in 1..=3 {
        h.attach(k, 0);
    }
    let id = h.subscribe(1, "presence-x").id();
    h.subscribe(2, "presence-x");
    h.subscribe(3, "presence-x");
    assert!(h.add_member(1, id, "alice", None));
    assert!(!h.add_member(2, id, "alice", None));
    assert!(h.add_member(3, id, "bob", None));
    assert!(!h.add_member(3, id, "bob", None), "a connection joins once");
    assert_eq!(h.channel(0, id).and_then(Channel::member_count), Some(2));
    assert_eq!(h.member_of(2, id), Some("alice"));
    assert_eq!(h.unsubscribe(1, "presence-x").unwrap().member_removed, None);
    assert_eq!(
        h.unsubscribe(2, "presence-x")
            .unwrap()
            .member_removed
            .as_deref(),
        Some("alice")
    );
    assert_eq!(h.detach(3)[0].member_removed.as_deref(), Some("bob"));
    assert!(h.is_empty());
}

#[test]
fn global_listeners_leave_in_constant_time() {
    let mut h = hub();
    for k in 0..100 {
        h.attach(k, 0);
        h.listen_global(k);
        h.listen_global(k);
    }
    assert_eq!(h.global().count(), 100);
    for k in (0..100).step_by(3) {
        h.detach(k);
        check(&h);
    }
    let mut left: Vec<usize> = h.global().collect();
    left.sort();
    assert_eq!(left, (0..100).filter(|k| k % 3 != 0).collect::<Vec<_>>());
}

#[test]
fn positions_stay_true_through_any_order_of_leaving() {
    let mut h = hub();
    let mut seed = 7u64;
    let mut rand = move |n: usize| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) as usize % n
    };
    for k in 0..200 {
        h.attach(k, 0);
    }
    for _ in 0..3000 {
        let key = rand(200);
        let name = format!("c{}", rand(12));
        match rand(4) {
            0 => {
                h.unsubscribe(key, &name);
            }
            1 if rand(10) == 0 => {
                h.detach(key);
            }
            _ => {
                h.subscribe(key, &name);
            }
        }
    }
    check(&h);
    for k in 0..200 {
        h.detach(k);
    }
    assert!(h.is_empty());
    check(&h);
}
