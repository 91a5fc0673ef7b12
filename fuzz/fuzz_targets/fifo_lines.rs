//! FIFO lines: the line splitter (`Fifo::split_lines` is private, so it is driven through the
//! public `Fifo::read_lines` on a real FIFO, with a fuzzer-chosen read size so that lines are cut
//! at arbitrary places) and `message::parse_line` on every line it yields.
//!
//! Oracle: the lines delivered are exactly the `\n`-terminated pieces of the input that are at
//! most `max_line` bytes (one trailing `\r` removed); longer pieces are dropped and counted, and
//! an unterminated tail waits for its newline.
#![no_main]

use std::cell::RefCell;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;

use ferrocast::fifo::Fifo;
use ferrocast::message::{self, Line};
use libfuzzer_sys::fuzz_target;

struct Pipe {
    fifo: Fifo,
    writer: std::fs::File,
    _dir: std::path::PathBuf,
}

thread_local! {
    static PIPE: RefCell<Option<Pipe>> = const { RefCell::new(None) };
}

fn open() -> Pipe {
    let dir = std::env::temp_dir().join(format!("ferrocast-fuzz-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let path = dir.join("f.fifo");
    let _ = std::fs::remove_file(&path);
    let fifo = Fifo::open(&path, 0o600).expect("open fifo");
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc_o_nonblock())
        .open(&path)
        .expect("open writer");
    Pipe {
        fifo,
        writer,
        _dir: dir,
    }
}

const fn libc_o_nonblock() -> i32 {
    0o4000 // O_NONBLOCK on Linux
}

fn expected(input: &[u8], max: usize) -> (Vec<Vec<u8>>, usize) {
    let mut lines = Vec::new();
    let mut dropped = 0;
    let mut pieces: Vec<&[u8]> = input.split(|&b| b == b'\n').collect();
    pieces.pop(); // the unterminated tail (possibly empty)
    for p in pieces {
        if p.len() > max {
            dropped += 1;
        } else {
            lines.push(p.strip_suffix(b"\r").unwrap_or(p).to_vec());
        }
    }
    (lines, dropped)
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let scratch_len = usize::from(data[0] % 64) + 1;
    let max = usize::from(data[1]) % 48 + 1;
    let input = &data[2..];
    PIPE.with(|cell| {
        let mut slot = cell.borrow_mut();
        let pipe = slot.get_or_insert_with(open);
        pipe.writer.write_all(input).expect("write to fifo");
        let mut scratch = vec![0u8; scratch_len];
        let mut got: Vec<Vec<u8>> = Vec::new();
        let stats = pipe
            .fifo
            .read_lines(&mut scratch, max, |l| got.push(l.to_vec()))
            .expect("read_lines");
        assert_eq!(stats.bytes, input.len());
        // An unterminated tail is delivered once its newline arrives; over the limit, dropped.
        pipe.writer.write_all(b"\n").expect("write newline");
        let tail_stats = pipe
            .fifo
            .read_lines(&mut scratch, max, |l| got.push(l.to_vec()))
            .expect("read_lines");
        let mut with_nl = input.to_vec();
        with_nl.push(b'\n');
        let (want, want_dropped) = expected(&with_nl, max);
        assert_eq!(got, want, "lines (read size {scratch_len}, max {max})");
        assert_eq!(
            stats.dropped.len() + tail_stats.dropped.len(),
            want_dropped,
            "dropped count"
        );
        for line in &got {
            assert!(line.len() <= max);
            match message::parse_line(line) {
                Line::Publish(p) => {
                    assert!(!p.channels.is_empty());
                    assert!(
                        p.channels
                            .iter()
                            .all(|c| ferrocast::channels::valid_name(c))
                    );
                }
                Line::Global(g) => assert_eq!(g, &line[..]),
                Line::Invalid(_) => {}
            }
        }
    });
    // max_fifo_line_bytes-sized lines through the parser alone (the splitter above uses tiny
    // limits to hit its edge cases often).
    for line in data.split(|&b| b == b'\n') {
        let _ = message::parse_line(line);
    }
});
