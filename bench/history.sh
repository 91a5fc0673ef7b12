#!/usr/bin/env bash
# Channel history on and off, side by side in one run (issue 16's benchmark):
#
#   bench/history.sh [ROUNDS]     # default 3; results in $OUT (bench/out/history)
#
# Each round, for history off (no rules) and on (every channel, size 100, ttl 300 s):
#   fanout-1000x2000  loadgen fanout -n 1000 --rate 2000 --messages 10000 --size 64
#   idle-18000        loadgen idle -n 18000 --hold 2   (RSS per idle subscribed connection)
#   fanout-2k         loadgen fanout -n 1000 --rate 50 --messages 500 --size 2048 --laravel
# After each fan-out, the server's /metrics (history_messages, history_bytes) is saved beside the
# result as <name>.metrics, for the memory per retained message. Server on core 0, loadgen on
# core 1, a fresh server per run, every run bounded by `timeout`.
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
OUT="${OUT:-bench/out/history}"
LG=target/release/examples/loadgen
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/history-bench.XXXXXX)"
FC_DIR=""
cleanup() {
    [ -n "$FC_DIR" ] && [ -d "$FC_DIR" ] && bench/ferrocast.sh stop "$FC_DIR"
    rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "$*" | tee -a "$OUT/commands.log" >&2; }

echo '{"apps": [{"id": "app-id", "key": "app-key", "secret": "app-secret"}]}' > "$WORK/off.json"
echo '{"apps": [{"id": "app-id", "key": "app-key", "secret": "app-secret",
                 "history": [{"prefix": "", "size": 100, "ttl_secs": 300}]}]}' > "$WORK/on.json"

run() { # run NAME CONFIG LOADGEN_ARGS…
    local name="$1" cfg="$2"; shift 2
    local out
    out="$(bench/ferrocast.sh start 0 --config "$WORK/$cfg.json")" || return 1
    eval "$out"
    log "# $name: bench/ferrocast.sh start 0 --config $cfg.json (pid $FC_PID)"
    sleep 0.5
    local pub=()
    [ "$1" = fanout ] && pub=(--publish "fifo:$FC_FIFO")
    log "+ taskset -c 1 $LG $* ${pub[*]} --url ws://127.0.0.1:$FC_PORT/ws --json   # -> $name.json"
    timeout 180 taskset -c 1 "$LG" "$@" "${pub[@]}" --url "ws://127.0.0.1:$FC_PORT/ws" \
        --server-pid "$FC_PID" --json > "$OUT/$name.json" 2> "$OUT/$name.err"
    log "  rc=$?"
    curl -s "http://127.0.0.1:$FC_PORT/metrics" | grep -E '^ferrocast_history_' > "$OUT/$name.metrics"
    bench/ferrocast.sh stop "$FC_DIR"; FC_DIR=""
    sleep 1
}

{ nproc; uname -r; grep -m1 'model name' /proc/cpuinfo; date -u; git rev-parse --short HEAD; } > "$OUT/machine.txt" 2>&1
for round in $(seq 1 "$ROUNDS"); do
    for mode in off on; do
        run "fanout-1000x2000-$mode-r$round" "$mode" fanout -n 1000 --rate 2000 --messages 10000 --size 64
        run "idle-18000-$mode-r$round" "$mode" idle -n 18000 --hold 2
        run "fanout-2k-$mode-r$round" "$mode" fanout -n 1000 --rate 50 --messages 500 --size 2048 --laravel
    done
done
