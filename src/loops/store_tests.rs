use std::time::{Duration, Instant};

use super::*;
use crate::core::cluster::numbering::{NUMBER, POSITION, SEED};

fn run(store: &mut Store, now: Instant, args: &[&str]) -> (Reply, Vec<Publish>) {
    let args: Vec<Vec<u8>> = args.iter().map(|a| a.as_bytes().to_vec()).collect();
    let mut published = Vec::new();
    let reply = store.run(&args, now, 0x6000_0000, &mut published);
    (reply, published)
}

#[test]
fn hashes_sets_and_expiry_behave_as_in_redis() {
    let (mut s, t0) = (Store::default(), Instant::now());
    assert_eq!(
        run(&mut s, t0, &["HSET", "h", "a", "1", "b", "2"]).0,
        Reply::Integer(2)
    );
    assert_eq!(
        run(&mut s, t0, &["HDEL", "h", "a", "zz"]).0,
        Reply::Integer(1)
    );
    let all = run(&mut s, t0, &["HGETALL", "h"]).0;
    assert_eq!(
        all,
        Reply::Array(vec![Reply::Bulk(b"b".to_vec()), Reply::Bulk(b"2".to_vec())])
    );
    assert_eq!(
        run(&mut s, t0, &["PEXPIRE", "h", "1000"]).0,
        Reply::Integer(1)
    );
    let later = t0 + Duration::from_millis(1001);
    assert_eq!(
        run(&mut s, later, &["HGETALL", "h"]).0,
        Reply::Array(Vec::new())
    );
    assert_eq!(
        run(&mut s, t0, &["SADD", "s", "x", "y", "x"]).0,
        Reply::Integer(2)
    );
    assert_eq!(run(&mut s, t0, &["SREM", "s", "x"]).0, Reply::Integer(1));
    assert_eq!(
        run(&mut s, t0, &["SMEMBERS", "s"]).0,
        Reply::Array(vec![Reply::Bulk(b"y".to_vec())])
    );
    assert!(
        run(&mut s, t0, &["HGETALL", "s"]).0.is_error(),
        "wrong type"
    );
    assert!(
        run(&mut s, t0, &["FLUSHALL"]).0.is_error(),
        "unknown command"
    );
    assert!(run(&mut s, t0, &["HSET", "h", "a"]).0.is_error(), "arity");
}

#[test]
fn the_numbering_scripts_run_natively_with_the_lua_ones_output() {
    let (mut s, t0) = (Store::default(), Instant::now());
    let envelope = r#"{"node":"a","kind":"publish"}"#;
    let number = |s: &mut Store| {
        run(
            s,
            t0,
            &[
                "EVAL", NUMBER, "3", "ep", "st:1", "st:2", "ch", envelope, "60000",
            ],
        )
    };
    let (reply, published) = number(&mut s);
    assert_eq!(reply, Reply::Integer(2));
    let text = String::from_utf8(published[0].payload.clone()).unwrap();
    assert_eq!(
        text,
        r#"{"positions":[["60000000.1",1],["60000000.2",1]],"node":"a","kind":"publish"}"#
    );
    assert_eq!(published[0].channel, b"ch");
    let (_, published) = number(&mut s);
    assert!(String::from_utf8_lossy(&published[0].payload).contains(r#"["60000000.1",2]"#));
    let position = run(&mut s, t0, &["EVAL", POSITION, "2", "ep", "st:1", "60000"]).0;
    let want = Reply::Array(vec![Reply::Bulk(b"60000000.1".to_vec()), Reply::Integer(2)]);
    assert_eq!(position, want);
    let fresh = run(&mut s, t0, &["EVAL", POSITION, "2", "ep", "st:9", "60000"]).0;
    let want = Reply::Array(vec![Reply::Bulk(b"60000000.3".to_vec()), Reply::Integer(0)]);
    assert_eq!(fresh, want);
    assert!(
        run(&mut s, t0, &["EVAL", "return 1", "0"]).0.is_error(),
        "foreign script"
    );
    // A seed sets an unknown stream only; numbering goes on from it.
    let seed =
        |s: &mut Store, key: &str| run(s, t0, &["EVAL", SEED, "1", key, "old.7", "41", "60000"]).0;
    assert_eq!(seed(&mut s, "st:1"), Reply::Integer(0));
    assert_eq!(seed(&mut s, "st:5"), Reply::Integer(1));
    let position = run(&mut s, t0, &["EVAL", POSITION, "2", "ep", "st:5", "60000"]).0;
    let want = Reply::Array(vec![Reply::Bulk(b"old.7".to_vec()), Reply::Integer(41)]);
    assert_eq!(position, want);
    // In the same epoch a later offset moves the stream on (a loop numbered alone meanwhile);
    // an earlier one, or another epoch, does not.
    let seed_at = |s: &mut Store, epoch: &str, offset: &str| {
        run(s, t0, &["EVAL", SEED, "1", "st:5", epoch, offset, "60000"]).0
    };
    assert_eq!(seed_at(&mut s, "old.7", "40"), Reply::Integer(0));
    assert_eq!(seed_at(&mut s, "other.1", "90"), Reply::Integer(0));
    assert_eq!(seed_at(&mut s, "old.7", "45"), Reply::Integer(1));
    let position = run(&mut s, t0, &["EVAL", POSITION, "2", "ep", "st:5", "60000"]).0;
    let want = Reply::Array(vec![Reply::Bulk(b"old.7".to_vec()), Reply::Integer(45)]);
    assert_eq!(position, want);
}
