use super::*;

const TTL: Duration = Duration::from_secs(60);

fn kept(offset: u64, n: usize) -> Kept {
    Kept {
        offset,
        event: "e".into(),
        plain: crate::ws::text(&vec![b'x'; n - 2]),
    }
}

fn publish(h: &mut History, channel: &str, size: usize, now: Instant) -> Position {
    let p = h.next_position(0, channel, size, TTL);
    h.append(0, channel, kept(p.offset, 10), now, &|_, _| false);
    p
}

fn offsets(r: Recovery) -> Option<Vec<u64>> {
    match r {
        Recovery::Complete(list) => Some(list.iter().map(|k| k.offset).collect()),
        Recovery::Lost => None,
    }
}

#[test]
fn offsets_increase_and_a_gap_in_history_is_recovered_whole() {
    let t = Instant::now();
    let mut h = History::new(1 << 20, 7);
    let first = publish(&mut h, "orders", 5, t);
    assert_eq!(first.offset, 1);
    for _ in 0..4 {
        publish(&mut h, "orders", 5, t);
    }
    let at = |offset| Position {
        epoch: first.epoch.clone(),
        offset,
    };
    assert_eq!(
        offsets(h.recover(0, "orders", &at(2), t)),
        Some(vec![3, 4, 5])
    );
    assert_eq!(
        offsets(h.recover(0, "orders", &at(5), t)),
        Some(vec![]),
        "nothing missed"
    );
    // Two more: offset 1 and 2 leave the ring of 5.
    publish(&mut h, "orders", 5, t);
    publish(&mut h, "orders", 5, t);
    assert_eq!(
        offsets(h.recover(0, "orders", &at(2), t)),
        Some(vec![3, 4, 5, 6, 7])
    );
    assert_eq!(
        offsets(h.recover(0, "orders", &at(1), t)),
        None,
        "2 is gone: never partial"
    );
    assert_eq!(
        offsets(h.recover(0, "orders", &at(9), t)),
        None,
        "ahead of the stream"
    );
    let other = Position {
        epoch: "elsewhere".into(),
        offset: 5,
    };
    assert_eq!(
        offsets(h.recover(0, "orders", &other, t)),
        None,
        "another epoch"
    );
    assert_eq!(offsets(h.recover(0, "nothing", &at(0), t)), None);
}

#[test]
fn the_byte_bound_evicts_oldest_first_across_streams_and_a_new_stream_gets_a_new_epoch() {
    let t = Instant::now();
    let per = 10 + 1 + ENTRY_OVERHEAD;
    let mut h = History::new(per * 3, 7);
    let a = publish(&mut h, "a", 100, t);
    publish(&mut h, "b", 100, t);
    publish(&mut h, "a", 100, t);
    publish(&mut h, "b", 100, t);
    assert_eq!(h.sizes(), (3, per * 3), "the first of a went");
    assert_eq!(h.evicted, 1);
    let from = Position {
        epoch: a.epoch.clone(),
        offset: 0,
    };
    assert_eq!(
        offsets(h.recover(0, "a", &from, t)),
        None,
        "offset 1 of a was evicted"
    );
    // Everything of a goes by age: a later publication starts a new epoch at offset 1.
    h.expire(t + TTL, &|_, _| false);
    assert_eq!(h.sizes(), (0, 0));
    let again = publish(&mut h, "a", 100, t + TTL);
    assert_eq!(again.offset, 1);
    assert_ne!(again.epoch, a.epoch);
}

#[test]
fn a_snapshot_restores_every_stream_and_what_it_keeps() {
    let t = Instant::now();
    let mut h = History::new(1 << 20, 7);
    let a = publish(&mut h, "a", 5, t);
    publish(&mut h, "a", 5, t);
    publish(&mut h, "b", 5, t);
    let bytes = h.snapshot(t + Duration::from_secs(1));
    let mut next = History::new(1 << 20, 8);
    assert_eq!(next.restore(&bytes, t), Ok(2));
    assert_eq!(next.sizes(), h.sizes());
    let from = Position {
        epoch: a.epoch.clone(),
        offset: 1,
    };
    assert_eq!(
        offsets(next.recover(0, "a", &from, t)),
        Some(vec![2]),
        "same epoch, same offsets"
    );
    assert_eq!(next.next_position(0, "a", 5, TTL).offset, 3);
    // Cut anywhere, or not a snapshot: refused whole.
    for cut in [3, 10, bytes.len() - 1] {
        assert!(
            History::new(1 << 20, 9).restore(&bytes[..cut], t).is_err(),
            "cut at {cut}"
        );
    }
    assert!(History::new(1 << 20, 9).restore(b"nope", t).is_err());
}
