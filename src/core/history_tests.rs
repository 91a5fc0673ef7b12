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
        Some(vec![]),
        "ahead of this node (it saw more elsewhere): what follows comes live"
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

fn cluster_at(epoch: &str, offset: u64) -> Position {
    Position {
        epoch: epoch.into(),
        offset,
    }
}

/// What `place` allowed, appended as the publish path does.
fn place(h: &mut History, at: &Position, t: Instant) -> bool {
    let placed = h.place(0, "c", at, (10, TTL));
    if placed {
        h.append(0, "c", kept(at.offset, 10), t, &|_, _| true);
    }
    placed
}

#[test]
fn cluster_positions_are_followed_and_a_gap_or_another_epoch_starts_afresh() {
    let t = Instant::now();
    let mut h = History::new(1 << 20, 7);
    // The node first hears of the stream at offset 41: it can give what follows 40 only.
    assert!(place(&mut h, &cluster_at("6750a1b0.3", 41), t));
    assert!(place(&mut h, &cluster_at("6750a1b0.3", 42), t));
    assert!(!place(&mut h, &cluster_at("6750a1b0.3", 42), t), "a repeat");
    let from = |o| cluster_at("6750a1b0.3", o);
    assert_eq!(offsets(h.recover(0, "c", &from(40), t)), Some(vec![41, 42]));
    assert_eq!(offsets(h.recover(0, "c", &from(39), t)), None);
    // Offsets 43 and 44 never reached this node: what it kept before cannot be given whole.
    assert!(place(&mut h, &cluster_at("6750a1b0.3", 45), t));
    assert_eq!(offsets(h.recover(0, "c", &from(42), t)), None);
    assert_eq!(offsets(h.recover(0, "c", &from(44), t)), Some(vec![45]));
    assert_eq!(h.sizes().0, 1, "the entries before the gap went");
    // Another epoch replaces this one.
    assert!(place(&mut h, &cluster_at("6750a1b9.4", 1), t));
    assert_eq!(offsets(h.recover(0, "c", &from(45), t)), None);
    // Numbering alone (Redis out of reach) never continues the cluster's epoch.
    let local = h.next_position(0, "c", 10, TTL);
    assert!(!is_cluster_epoch(&local.epoch));
    assert_eq!(local.offset, 1);
}

#[test]
fn a_position_read_from_redis_is_adopted_unless_the_node_follows_that_epoch_or_a_newer_one() {
    let t = Instant::now();
    let mut h = History::new(1 << 20, 7);
    h.adopt(0, "c", &cluster_at("10.5", 7), (10, TTL));
    assert_eq!(h.position(0, "c"), Some(cluster_at("10.5", 7)));
    // Publications that were on their way when Redis answered: the node is further on.
    assert!(place(&mut h, &cluster_at("10.5", 8), t));
    h.adopt(0, "c", &cluster_at("10.5", 7), (10, TTL));
    assert_eq!(h.position(0, "c"), Some(cluster_at("10.5", 8)));
    // An older epoch is not adopted; a newer one is.
    h.adopt(0, "c", &cluster_at("f.9", 3), (10, TTL));
    assert_eq!(h.position(0, "c"), Some(cluster_at("10.5", 8)));
    h.adopt(0, "c", &cluster_at("10.6", 0), (10, TTL));
    assert_eq!(h.position(0, "c"), Some(cluster_at("10.6", 0)));
    assert_eq!(h.sizes(), (0, 0));
    // A stream this process numbered alone gives way to the cluster's.
    h.next_position(1, "d", 10, TTL);
    h.adopt(1, "d", &cluster_at("1.1", 4), (10, TTL));
    assert_eq!(h.position(1, "d"), Some(cluster_at("1.1", 4)));
}

#[test]
fn an_epoch_the_cluster_numbers_in_is_never_continued_alone_whatever_its_form() {
    let t = Instant::now();
    let mut h = History::new(1 << 20, 7);
    // A loop's own epoch, seeded to its bus after a restart, comes back numbered.
    let own = publish(&mut h, "c", 10, t);
    assert!(!is_cluster_epoch(&own.epoch));
    assert!(place(&mut h, &cluster_at(&own.epoch, own.offset + 1), t));
    let alone = h.next_position(0, "c", 10, TTL);
    assert_ne!(
        alone.epoch, own.epoch,
        "the cluster numbers in that epoch now"
    );
    assert_eq!(alone.offset, 1);
    // Seeding alone is enough: the bus may number in every seeded epoch.
    let other = publish(&mut h, "d", 10, t);
    h.shared_all();
    let p = h.next_position(0, "d", 10, TTL);
    assert_ne!(p.epoch, other.epoch);
}
