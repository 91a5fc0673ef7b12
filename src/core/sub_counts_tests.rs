use super::*;

const SEC: Duration = Duration::from_secs(1);

fn key(name: &str) -> Key {
    (0, name.into())
}

#[test]
fn first_change_is_due_at_once_later_ones_after_the_interval() {
    let t0 = Instant::now();
    let mut s = SubCounts::default();
    s.changed(key("a"), t0, SEC);
    s.changed(key("a"), t0, SEC);
    assert_eq!(s.next_due(), Some(t0));
    assert_eq!(
        s.take_due(t0, |_| SEC),
        [key("a")],
        "one telling for two changes"
    );
    s.changed(key("a"), t0 + SEC / 2, SEC);
    assert!(s.take_due(t0 + SEC / 2, |_| SEC).is_empty(), "throttled");
    assert_eq!(s.take_due(t0 + SEC, |_| SEC), [key("a")]);
}

#[test]
fn quiet_channels_are_forgotten() {
    let t0 = Instant::now();
    let mut s = SubCounts::default();
    for name in ["a", "b", "c"] {
        s.changed(key(name), t0, SEC);
    }
    assert_eq!(s.take_due(t0, |_| SEC).len(), 3);
    assert_eq!(s.channels.len(), 3);
    // A change after the interval is told at once, and keeps its channel a while longer.
    s.changed(key("a"), t0 + 2 * SEC, SEC);
    assert_eq!(s.take_due(t0 + 2 * SEC, |_| SEC), [key("a")]);
    assert_eq!(s.channels.len(), 1, "b and c were quiet for an interval");
    assert!(s.take_due(t0 + 3 * SEC, |_| SEC).is_empty());
    assert!(s.channels.is_empty() && s.queue.is_empty(), "nothing kept");
}
