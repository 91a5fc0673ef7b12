#!/usr/bin/env bash
# Start/stop a private ferrocast server for benchmarks (loopback, port chosen by the OS, pinned to a core).
#
#   eval "$(bench/ferrocast.sh start [CPU] [extra server args…])"   # → FC_DIR FC_PORT FC_PID FC_FIFO
#   bench/ferrocast.sh stop "$FC_DIR"
#
# BIN overrides the server binary (default target/release/ferrocast next to this script's repo).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
bin="${BIN:-$here/target/release/ferrocast}"
die() { echo "ferrocast.sh: $*" >&2; exit 1; }

start() {
    local cpu="${1:-0}"; shift || true
    [ -x "$bin" ] || die "$bin not built: cargo build --release"
    local dir
    dir="$(mktemp -d /tmp/ferrocast-bench.XXXXXX)"
    ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
    setsid taskset -c "$cpu" "$bin" websocket --port 0 --fifo "$dir/b.fifo" "$@" < /dev/null > "$dir/server.log" 2>&1 &
    local pid=$! port=""
    for _ in $(seq 1 200); do
        port="$(grep -oP 'listening on wss?://[^\s/]+:\K\d+' "$dir/server.log" 2>/dev/null | head -n1 || true)"
        [ -n "$port" ] && break
        kill -0 "$pid" 2>/dev/null || { cat "$dir/server.log" >&2; rm -rf "$dir"; die "server exited"; }
        sleep 0.05
    done
    [ -n "$port" ] || { kill "$pid"; rm -rf "$dir"; die "no 'listening on' line"; }
    echo "$pid" > "$dir/server.pid"
    echo "FC_DIR=$dir"
    echo "FC_PORT=$port"
    echo "FC_PID=$pid"
    echo "FC_FIFO=$dir/b.fifo"
}

stop() {
    local dir="${1:?usage: ferrocast.sh stop DIR}"
    case "$dir" in /tmp/ferrocast-bench.*) ;; *) die "refusing $dir (not a ferrocast.sh directory)";; esac
    local pid
    pid="$(cat "$dir/server.pid")"
    if kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid"
        for _ in $(seq 1 200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.05; done
        if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid"; fi
    fi
    rm -rf "$dir"
}

case "${1:-}" in
    start) shift; start "$@";;
    stop) shift; stop "$@";;
    *) echo "usage: $0 start [CPU] [server args…] | stop DIR" >&2; exit 2;;
esac
