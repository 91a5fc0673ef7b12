//! The broadcast FIFO: routing, framing of lines, limits, concurrency, lifecycle.
mod common;
use common::*;
use std::io::Write;
use std::thread;
use std::time::Duration;

#[test]
fn channel_message_goes_only_to_its_subscribers() {
    let s = Server::start(&[], &[]);
    let mut a = s.channel_client();
    let mut b = s.channel_client();
    let mut both = s.channel_client();
    let mut raw = s.ws("/raw");
    a.subscribe("a");
    b.subscribe("b");
    both.subscribe("a");
    both.subscribe("b");
    raw.raw_ping_pong();

    s.publish_json(&json!({"channel":"a","data":"to-a"}));
    s.publish_json(&json!({"channel":"b","data":"to-b"}));
    s.publish_line("to-everyone");

    assert_eq!(a.recv_text(T), "to-a");
    assert_eq!(a.recv_text(T), "to-everyone", "a must not get b's message");
    assert_eq!(b.recv_text(T), "to-b", "b must not get a's message");
    assert_eq!(b.recv_text(T), "to-everyone");
    assert_eq!(both.recv_text(T), "to-a");
    assert_eq!(both.recv_text(T), "to-b");
    assert_eq!(both.recv_text(T), "to-everyone");
    assert_eq!(
        raw.recv_text(T),
        "to-everyone",
        "raw clients get no channel messages"
    );
}

#[test]
fn channels_array_and_message_key() {
    let s = Server::start(&[], &[]);
    let mut a = s.channel_client();
    let mut b = s.channel_client();
    let mut c = s.channel_client();
    a.subscribe("a");
    b.subscribe("b");
    c.subscribe("c");
    s.publish_json(&json!({"channels":["a","b"],"data":"a-and-b"}));
    s.publish_json(&json!({"channel":"c","message":"via message key"}));
    s.publish_json(&json!({"channel":"a","event":"my-event","data":"with event"}));
    assert_eq!(a.recv_text(T), "a-and-b");
    assert_eq!(b.recv_text(T), "a-and-b");
    assert_eq!(c.recv_text(T), "via message key");
    assert_eq!(a.recv_text(T), "with event");
}

#[test]
fn subscriber_in_several_listed_channels_gets_message_once() {
    let s = Server::start(&[], &[]);
    let mut c = s.channel_client();
    c.subscribe("x");
    c.subscribe("y");
    s.publish_json(&json!({"channels":["x","y"],"data":"once"}));
    s.publish_line("marker");
    assert_eq!(c.recv_text(T), "once");
    assert_eq!(
        c.recv_text(T),
        "marker",
        "a message for [x,y] is delivered once to a subscriber of both"
    );
}

#[test]
fn data_object_is_sent_as_compact_json() {
    let s = Server::start(&[], &[]);
    let mut c = s.channel_client();
    c.subscribe("obj");
    s.publish_line(r#"{"channel":"obj","data":{"a":1,"b":[true,null,"s"],"c":{"d":2.5}}}"#);
    let got = c.recv_text(T);
    let v: Value = serde_json::from_str(&got).unwrap_or_else(|e| panic!("{e}: {got:?}"));
    assert_eq!(v, json!({"a":1,"b":[true,null,"s"],"c":{"d":2.5}}));
    assert_eq!(
        got, r#"{"a":1,"b":[true,null,"s"],"c":{"d":2.5}}"#,
        "compact JSON text"
    );
    // Whitespace in the published JSON is not passed through: the text is compact.
    s.publish_line(r#"{"channel":"obj", "data": { "k" : "v" ,  "n" : [ 1 , 2 ] } }"#);
    assert_eq!(c.recv_text(T), r#"{"k":"v","n":[1,2]}"#);
    // Non-string values other than objects too.
    s.publish_line(r#"{"channel":"obj","data":[1, 2, 3]}"#);
    assert_eq!(c.recv_text(T), "[1,2,3]");
    s.publish_line(r#"{"channel":"obj","data":42}"#);
    assert_eq!(c.recv_text(T), "42");
    s.publish_line(r#"{"channel":"obj","data":true}"#);
    assert_eq!(c.recv_text(T), "true");
    s.publish_line(r#"{"channel":"obj","data":"a \"quoted\" string\nwith newline"}"#);
    assert_eq!(
        c.recv_text(T),
        "a \"quoted\" string\nwith newline",
        "string data is sent verbatim (decoded)"
    );
}

#[test]
fn unsubscribed_client_no_longer_receives() {
    let s = Server::start(&[], &[]);
    let mut c = s.channel_client();
    c.subscribe("a");
    c.subscribe("b");
    c.unsubscribe("a");
    s.publish_json(&json!({"channel":"a","data":"old"}));
    s.publish_json(&json!({"channel":"b","data":"new"}));
    assert_eq!(c.recv_text(T), "new");
}

#[test]
fn raw_line_goes_to_every_raw_and_channel_client() {
    let s = Server::start(&[], &[]);
    let mut clients: Vec<Client> = Vec::new();
    for p in ["/", "/raw", "/x/y"] {
        let mut c = s.ws(p);
        c.raw_ping_pong();
        clients.push(c);
    }
    let mut unsubscribed = s.channel_client();
    unsubscribed.ping_pong();
    clients.push(unsubscribed);
    let mut sub = s.channel_client();
    sub.subscribe("zzz");
    clients.push(sub);
    // Not JSON, JSON that is not a channel message, JSON object without channel: all verbatim.
    let lines = [
        "plain text line",
        r#"["an","array"]"#,
        r#"{"no":"channel"}"#,
        "  spaced  ",
    ];
    for l in lines {
        s.publish_line(l);
    }
    for c in clients.iter_mut() {
        for l in lines {
            assert_eq!(c.recv_text(T), l);
        }
    }
}

#[test]
fn empty_lines_are_ignored() {
    let s = Server::start(&[], &[]);
    let mut c = s.ws("/raw");
    c.raw_ping_pong();
    s.publish(b"\n\nfirst\n\n\nsecond\n");
    assert_eq!(c.recv_text(T), "first");
    assert_eq!(c.recv_text(T), "second");
}

#[test]
fn several_lines_in_one_write() {
    let s = Server::start(&[], &[]);
    let mut c = s.channel_client();
    c.subscribe("m");
    let mut buf = String::new();
    for i in 0..50 {
        buf.push_str(&json!({"channel":"m","data":format!("n{i}")}).to_string());
        buf.push('\n');
    }
    s.publish(buf.as_bytes());
    for i in 0..50 {
        assert_eq!(c.recv_text(T), format!("n{i}"));
    }
}

#[test]
fn line_split_over_two_writes() {
    let s = Server::start(&[], &[]);
    let mut c = s.channel_client();
    c.subscribe("split");
    let mut f = fifo_open(s.fifo());
    f.write_all(br#"{"channel":"split","da"#).unwrap();
    f.flush().unwrap();
    // Let the server read the first half on its own before the rest arrives.
    thread::sleep(Duration::from_millis(300));
    f.write_all(b"ta\":\"joined\"}\n").unwrap();
    assert_eq!(c.recv_text(T), "joined");
    // Across writer processes/opens too: the partial line is kept until its newline.
    fifo_write(s.fifo(), b"raw-part-1 ");
    thread::sleep(Duration::from_millis(300));
    fifo_write(s.fifo(), b"raw-part-2\n");
    assert_eq!(c.recv_text(T), "raw-part-1 raw-part-2");
}

#[test]
fn oversize_line_is_dropped_and_next_delivered() {
    let s = Server::start(&["--set", "max_fifo_line_bytes=1024"], &[]);
    let mut c = s.channel_client();
    c.subscribe("big");
    let mark = s.log_mark();
    let big = json!({"channel":"big","data":"z".repeat(3000)}).to_string();
    s.publish_line(&big);
    s.publish_json(&json!({"channel":"big","data":"after"}));
    assert_eq!(
        c.recv_text(T),
        "after",
        "the oversize line is dropped, the next one delivered"
    );
    assert!(
        s.wait_for_log_since(mark, "max_fifo_line_bytes", T)
            .is_some(),
        "a log line mentions max_fifo_line_bytes:\n{}",
        s.logs_text()
    );
    // Exactly one warning for one oversize line (even though it spans several reads).
    let n = s.logs()[mark..]
        .iter()
        .filter(|l| l.contains("max_fifo_line_bytes"))
        .count();
    assert_eq!(n, 1, "one log line per dropped line:\n{}", s.logs_text());
    // A line just under the limit is delivered.
    let fits = "q".repeat(900);
    s.publish_line(&fits);
    assert_eq!(c.recv_text(T), fits);
}

#[test]
fn oversize_line_much_larger_than_pipe_buffer() {
    let s = Server::start(&["--set", "max_fifo_line_bytes=4096"], &[]);
    let mut c = s.ws("/raw");
    c.raw_ping_pong();
    let mut data = vec![b'w'; 300_000];
    data.push(b'\n');
    data.extend_from_slice(b"survivor\n");
    s.publish(&data);
    assert_eq!(c.recv_text(T), "survivor");
}

#[test]
fn concurrent_writers_lose_and_interleave_nothing() {
    const WRITERS: usize = 4;
    const LINES: usize = 1000;
    let s = Server::start(&[], &[]);
    let mut c = s.channel_client();
    c.subscribe("load");
    let fifo = s.fifo().to_path_buf();
    let handles: Vec<_> = (0..WRITERS)
        .map(|w| {
            let fifo = fifo.clone();
            thread::spawn(move || {
                let mut f = fifo_open(&fifo);
                for i in 0..LINES {
                    // ~200 bytes, well under PIPE_BUF: one write(2) per line is atomic.
                    let data = format!("w{w}-{i:05}-{}", "p".repeat(150));
                    let line = format!("{}\n", json!({"channel":"load","data":data}));
                    let n = f.write(line.as_bytes()).expect("write");
                    assert_eq!(n, line.len(), "short write to the FIFO");
                }
            })
        })
        .collect();
    let mut next = [0usize; WRITERS];
    for _ in 0..WRITERS * LINES {
        let m = c.recv_text(Duration::from_secs(30));
        let (w, rest) = m
            .strip_prefix('w')
            .and_then(|r| r.split_once('-'))
            .unwrap_or_else(|| panic!("mangled message {m:?}"));
        let w: usize = w
            .parse()
            .unwrap_or_else(|_| panic!("mangled message {m:?}"));
        let (i, pad) = rest
            .split_once('-')
            .unwrap_or_else(|| panic!("mangled message {m:?}"));
        let i: usize = i
            .parse()
            .unwrap_or_else(|_| panic!("mangled message {m:?}"));
        assert_eq!(pad, "p".repeat(150), "mangled message {m:?}");
        assert!(w < WRITERS, "mangled message {m:?}");
        assert_eq!(i, next[w], "writer {w}: messages out of order or lost");
        next[w] += 1;
    }
    for h in handles {
        h.join().expect("writer thread");
    }
    assert_eq!(next, [LINES; WRITERS]);
}

#[test]
fn socket_id_naming_no_connection_excludes_nobody() {
    let s = Server::start(&[], &[]);
    let mut a = s.channel_client();
    let mut b = s.channel_client();
    a.subscribe("s");
    b.subscribe("s");
    s.publish_json(&json!({"channel":"s","data":"hi","socket_id":"999999.999999"}));
    assert_eq!(a.recv_text(T), "hi");
    assert_eq!(b.recv_text(T), "hi");
}

#[test]
fn socket_id_excludes_that_connection() {
    // The contract gives no way to learn a socket id; the server reports it in the `subscribed`
    // and `pong` replies (`socket_id`), which this test relies on.
    let s = Server::start(&[], &[]);
    let mut a = s.channel_client();
    let mut b = s.channel_client();
    let id_a = a.subscribe("s").expect("socket_id in the subscribed reply");
    let id_b = b.subscribe("s").expect("socket_id in the subscribed reply");
    assert_ne!(id_a, id_b, "socket ids are unique");
    assert_eq!(
        a.ping_pong().as_deref(),
        Some(id_a.as_str()),
        "pong carries the same socket id"
    );
    s.publish_json(&json!({"channel":"s","data":"not for a","socket_id":id_a}));
    s.publish_json(&json!({"channel":"s","data":"for all"}));
    assert_eq!(b.recv_text(T), "not for a");
    assert_eq!(b.recv_text(T), "for all");
    assert_eq!(
        a.recv_text(T),
        "for all",
        "the excluded connection skips the message"
    );
    // With `channels` too, and via the broadcast command.
    let out = run_cli(
        &[
            "broadcast",
            "--fifo",
            s.fifo().to_str().unwrap(),
            "--channel",
            "s",
            "--socket-id",
            &id_b,
            "cli not for b",
        ],
        &[],
        None,
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    s.publish_json(&json!({"channels":["s"],"data":"end"}));
    assert_eq!(a.recv_text(T), "cli not for b");
    assert_eq!(a.recv_text(T), "end");
    assert_eq!(
        b.recv_text(T),
        "end",
        "b was excluded from the --socket-id message"
    );
}

#[test]
fn fifo_is_created_as_a_fifo_with_mode() {
    let s = Server::start(&[], &[]);
    assert!(is_fifo(s.fifo()), "{} is a FIFO", s.fifo().display());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(s.fifo()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o660, "default fifo_mode 0660");
    let s2 = Server::start(&["--set", "fifo_mode=0600"], &[]);
    let mode = std::fs::metadata(s2.fifo()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}

#[test]
fn deleted_fifo_is_recreated_and_works() {
    let s = Server::start(&[], &[]);
    let mut c = s.channel_client();
    c.subscribe("r");
    s.publish_json(&json!({"channel":"r","data":"before"}));
    assert_eq!(c.recv_text(T), "before");
    std::fs::remove_file(s.fifo()).unwrap();
    assert!(
        wait_until(T, || is_fifo(s.fifo())),
        "FIFO re-created after deletion:\n{}",
        s.logs_text()
    );
    s.publish_json(&json!({"channel":"r","data":"after"}));
    assert_eq!(c.recv_text(T), "after");
}

#[test]
fn second_server_on_same_fifo_refuses_to_start() {
    let s = Server::start(&[], &[]);
    let rt = tempfile::tempdir().unwrap();
    let out = run_cli_in(
        rt.path(),
        &[
            "websocket",
            "--port",
            "0",
            "--fifo",
            s.fifo().to_str().unwrap(),
        ],
        &[],
        None,
    );
    assert_ne!(
        out.code(),
        Some(0),
        "second server must fail:\n{}",
        out.describe()
    );
    assert!(
        out.stderr.contains("already"),
        "message says `already`:\n{}",
        out.describe()
    );
    // The first server keeps its FIFO and keeps working.
    assert!(
        is_fifo(s.fifo()),
        "the refused server must not remove the running server's FIFO"
    );
    let mut c = s.ws("/raw");
    c.raw_ping_pong();
    s.publish_line("still here");
    assert_eq!(c.recv_text(T), "still here");
}

#[test]
fn stale_fifo_left_by_dead_server_is_reused() {
    // A FIFO file with no reader (e.g. left by a killed server) must not block a new server.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stale.fifo");
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o660)).unwrap();
    let s = Server::start_opts(Opts {
        fifo: Some(path.clone()),
        ..Default::default()
    });
    let mut c = s.ws("/raw");
    c.raw_ping_pong();
    s.publish_line("works");
    assert_eq!(c.recv_text(T), "works");
}

#[test]
fn broadcast_command_delivers() {
    let s = Server::start(&[], &[]);
    let fifo = s.fifo().to_str().unwrap().to_string();
    let mut sub = s.channel_client();
    sub.subscribe("news");
    let mut other = s.channel_client();
    other.subscribe("other");
    let mut raw = s.ws("/raw");
    raw.raw_ping_pong();

    let out = run_cli(
        &[
            "broadcast",
            "--fifo",
            &fifo,
            "--channel",
            "news",
            "--event",
            "e",
            "hello news",
        ],
        &[],
        None,
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(sub.recv_text(T), "hello news");

    let out = run_cli(
        &[
            "broadcast",
            "--fifo",
            &fifo,
            "--channel",
            "news",
            "--json",
            r#"{"k": [1, 2]}"#,
        ],
        &[],
        None,
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(sub.recv_text(T), r#"{"k":[1,2]}"#);

    let out = run_cli(
        &[
            "broadcast",
            "--fifo",
            &fifo,
            "--channel",
            "news",
            "--channel",
            "other",
            "to both",
        ],
        &[],
        None,
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(sub.recv_text(T), "to both");
    assert_eq!(other.recv_text(T), "to both");

    let out = run_cli(
        &["broadcast", "--fifo", &fifo, "global raw line"],
        &[],
        None,
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(
        raw.recv_text(T),
        "global raw line",
        "raw client got no channel message, then the raw line"
    );
    assert_eq!(sub.recv_text(T), "global raw line");
    assert_eq!(other.recv_text(T), "global raw line");
}

#[test]
fn broadcast_command_reads_stdin_lines() {
    let s = Server::start(&[], &[]);
    let fifo = s.fifo().to_str().unwrap().to_string();
    let mut sub = s.channel_client();
    sub.subscribe("in");
    let out = run_cli(
        &["broadcast", "--fifo", &fifo, "--channel", "in", "-"],
        &[],
        Some(b"line one\nline two\n"),
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(sub.recv_text(T), "line one");
    assert_eq!(sub.recv_text(T), "line two");
    let out = run_cli(
        &["broadcast", "--fifo", &fifo, "-"],
        &[],
        Some(b"raw a\nraw b\n"),
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(sub.recv_text(T), "raw a");
    assert_eq!(sub.recv_text(T), "raw b");
}

#[test]
fn broadcast_command_socket_id_flag_is_accepted() {
    let s = Server::start(&[], &[]);
    let fifo = s.fifo().to_str().unwrap().to_string();
    let mut sub = s.channel_client();
    sub.subscribe("sid");
    let out = run_cli(
        &[
            "broadcast",
            "--fifo",
            &fifo,
            "--channel",
            "sid",
            "--socket-id",
            "123.456",
            "x",
        ],
        &[],
        None,
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(sub.recv_text(T), "x");
}

#[test]
fn broadcast_without_server_fails_at_once() {
    let dir = tempfile::tempdir().unwrap();
    // No file at all.
    let missing = dir.path().join("missing.fifo");
    let out = run_cli(
        &[
            "broadcast",
            "--fifo",
            missing.to_str().unwrap(),
            "--channel",
            "c",
            "x",
        ],
        &[],
        None,
    );
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("no ferrocast server is reading"),
        "{}",
        out.describe()
    );
    assert!(
        out.stderr.contains(missing.to_str().unwrap()),
        "names the path: {}",
        out.describe()
    );
    // A FIFO with no reader (server gone): must not hang.
    let stale = dir.path().join("stale.fifo");
    nix::unistd::mkfifo(&stale, nix::sys::stat::Mode::from_bits_truncate(0o660)).unwrap();
    let out = run_cli(
        &["broadcast", "--fifo", stale.to_str().unwrap(), "raw"],
        &[],
        None,
    );
    assert_eq!(out.code(), Some(1), "{}", out.describe());
    assert!(
        out.stderr.contains("no ferrocast server is reading"),
        "{}",
        out.describe()
    );
}

#[test]
fn fifo_removed_on_clean_exit() {
    let mut s = Server::start(&[], &[]);
    assert!(is_fifo(s.fifo()));
    s.signal(Signal::SIGINT);
    let st = s.wait_exit(T);
    assert_eq!(st.code(), Some(0), "exit status after SIGINT");
    assert!(!s.fifo().exists(), "FIFO removed on exit");
}

#[test]
fn deleted_fifo_is_recreated_with_no_client_connected() {
    let s = Server::start(&[], &[]);
    std::fs::remove_file(s.fifo()).unwrap();
    assert!(
        wait_until(T, || is_fifo(s.fifo())),
        "FIFO not re-created (no client connected):\n{}",
        s.logs_text()
    );
    let mut c = s.ws("/raw");
    c.raw_ping_pong();
    s.publish_line("after re-creation");
    assert_eq!(c.recv_text(T), "after re-creation");
}

#[test]
fn json_lines_that_are_not_channel_messages_go_out_verbatim() {
    // Per contract only an object with a string `channel` / array `channels` is routed; any
    // other non-empty line goes verbatim to every client. (A well-formed channel line without
    // `data`/`message` is dropped with a log by the server: the contract does not say.)
    let s = Server::start(&[], &[]);
    let mut raw = s.ws("/raw");
    raw.raw_ping_pong();
    let mut sub = s.channel_client();
    sub.subscribe("a");
    let lines = [
        r#"{"channel":5,"data":"x"}"#,
        r#"{"channels":"a","data":"x"}"#,
        r#"{"data":"no channel"}"#,
    ];
    for l in lines {
        s.publish_line(l);
    }
    for l in lines {
        assert_eq!(raw.recv_text(T), l);
        assert_eq!(sub.recv_text(T), l);
    }
}

#[test]
fn broadcast_command_takes_fifo_from_config_file_and_environment() {
    let s = Server::start(&[], &[]);
    let mut raw = s.ws("/raw");
    raw.raw_ping_pong();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write_config(
        dir.path(),
        "c.json",
        &json!({"fifo": s.fifo().to_str().unwrap()}),
    );
    let out = run_cli(
        &["broadcast", "--config", cfg.to_str().unwrap(), "via config"],
        &[],
        None,
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(raw.recv_text(T), "via config");
    let out = run_cli(
        &["broadcast", "via env"],
        &[("FERROCAST_FIFO", s.fifo().to_str().unwrap())],
        None,
    );
    assert_eq!(out.code(), Some(0), "{}", out.describe());
    assert_eq!(raw.recv_text(T), "via env");
}

#[test]
fn long_line_uses_extended_frame_lengths() {
    let s = Server::start(&[], &[]);
    let mut raw = s.ws("/raw");
    raw.raw_ping_pong();
    let mut sub = s.channel_client();
    sub.subscribe("long");
    // 60 000 bytes: under max_fifo_line_bytes (65536), a 16-bit extended length frame.
    let body: String = (0..60_000)
        .map(|i| (b'a' + (i % 26) as u8) as char)
        .collect();
    s.publish_line(&body);
    assert_eq!(raw.recv_text(T), body);
    assert_eq!(sub.recv_text(T), body);
    // Channel payload over 64 KiB (64-bit length) with a raised line limit.
    let s = Server::start(&["--set", "max_fifo_line_bytes=300000"], &[]);
    let mut sub = s.channel_client();
    sub.subscribe("long");
    let big = "Z".repeat(200_000);
    s.publish_json(&json!({"channel":"long","data":big}));
    assert_eq!(sub.recv_text(T), big);
}

#[test]
fn fan_out_to_many_subscribers() {
    const CLIENTS: usize = 100;
    let s = Server::start(&[], &[]);
    let mut clients: Vec<Client> = (0..CLIENTS)
        .map(|i| {
            let mut c = s.channel_client();
            c.subscribe(if i % 2 == 0 { "even" } else { "odd" });
            c
        })
        .collect();
    for n in 0..20 {
        s.publish_json(&json!({"channel":"even","data":format!("e{n}")}));
        s.publish_json(&json!({"channel":"odd","data":format!("o{n}")}));
    }
    for (i, c) in clients.iter_mut().enumerate() {
        let p = if i % 2 == 0 { 'e' } else { 'o' };
        for n in 0..20 {
            assert_eq!(c.recv_text(T), format!("{p}{n}"), "client {i}");
        }
    }
}
