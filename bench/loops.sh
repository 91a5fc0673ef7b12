#!/usr/bin/env bash
# One loop against two in one service (issue 20), side by side in one run.
#
#   bench/loops.sh [ROUNDS]     # default 3; results in $OUT (bench/out/loops)
#
# Each round, for `--loops 1` and `--loops 2`, a fresh server per run, published through its FIFO:
#   latency-1000x50    loadgen fanout -n 1000 --rate 50 --messages 500 --size 64
#   latency-kernel-1000x50   the same, arrival times from the kernel (loadgen --kernel-rx)
#   fanout-1000x2000   loadgen fanout -n 1000 --rate 2000 --messages 10000 --size 64
#   fanout-10000x5     loadgen fanout -n 10000 --rate 5 --messages 50 --size 64
#   connect-64         loadgen connect -c 64 --duration 5
#   idle-10000         loadgen idle -n 10000 --hold 2
#   spread-10000       (two loops) 10 000 idle connections held; each loop's open sockets counted
# One loop runs on core 0; two loops may use cores 0 and 1. loadgen runs on core 1 in both, so
# with two loops it shares that core with a loop (this machine has two). The server's CPU is the
# supervisor's and every loop's (their pids are given to loadgen); its RSS is summed the same way.
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
OUT="${OUT:-bench/out/loops}"
LG=target/release/examples/loadgen
mkdir -p "$OUT"
DIR=""
cleanup() { [ -n "$DIR" ] && [ -d "$DIR" ] && bench/ferrocast.sh stop "$DIR"; DIR=""; }
trap cleanup EXIT
log() { echo "$*" | tee -a "$OUT/commands.log" >&2; }

run() { # run NAME LOOPS LOADGEN_ARGS…
    local name="$1" loops="$2"; shift 2
    local cpus=0
    [ "$loops" -gt 1 ] && cpus=0,1
    local out
    out="$(bench/ferrocast.sh start "$cpus" --loops "$loops")" || return 1
    eval "$out"
    DIR="$FC_DIR"
    sleep 1
    local pids="$FC_PID"
    local kids
    kids="$(cat "/proc/$FC_PID/task/$FC_PID/children" 2>/dev/null | tr ' ' ',' | sed 's/,$//')"
    [ -n "$kids" ] && pids="$FC_PID,$kids"
    log "# $name: bench/ferrocast.sh start $cpus --loops $loops (pids $pids)"
    local publish=()
    [ "$1" = fanout ] && publish=(--publish "fifo:$FC_FIFO")
    log "+ taskset -c 1 $LG $* ${publish[*]:+--publish fifo:FIFO} --url ws://127.0.0.1:PORT/ws --json   # -> $name.json"
    timeout 240 taskset -c 1 "$LG" "$@" "${publish[@]}" --url "ws://127.0.0.1:$FC_PORT/ws" \
        --server-pid "$pids" --json > "$OUT/$name.json" 2> "$OUT/$name.err"
    log "  rc=$?"
    cleanup
    sleep 1
}

spread() { # spread NAME: how a shared listener spreads 10 000 connections over two loops
    local name="$1" out
    out="$(bench/ferrocast.sh start 0,1 --loops 2)" || return 1
    eval "$out"
    DIR="$FC_DIR"
    sleep 1
    log "# $name: bench/ferrocast.sh start 0,1 --loops 2; loadgen idle -n 10000 --hold 6; sockets per loop after 4 s"
    timeout 60 taskset -c 1 "$LG" idle -n 10000 --hold 6 --url "ws://127.0.0.1:$FC_PORT/ws" > /dev/null 2>&1 &
    local lg=$!
    sleep 4
    local counts=()
    for pid in $(cat "/proc/$FC_PID/task/$FC_PID/children"); do
        counts+=("$(find "/proc/$pid/fd" -lname 'socket:*' 2>/dev/null | wc -l)")
    done
    # Each loop also holds a few sockets of its own (listener, bus, signals): the summary says so.
    echo "{\"sockets_per_loop\": [$(IFS=,; echo "${counts[*]}")]}" > "$OUT/$name.json"
    wait "$lg"
    cleanup
    sleep 1
}

{ nproc; uname -r; grep -m1 'model name' /proc/cpuinfo; date -u; git rev-parse --short HEAD; } > "$OUT/machine.txt" 2>&1
for round in $(seq 1 "$ROUNDS"); do
    for loops in 1 2; do
        run "latency-1000x50-l$loops-r$round" "$loops" fanout -n 1000 --rate 50 --messages 500 --size 64
        run "latency-kernel-1000x50-l$loops-r$round" "$loops" fanout -n 1000 --rate 50 --messages 500 --size 64 --kernel-rx
        run "fanout-1000x2000-l$loops-r$round" "$loops" fanout -n 1000 --rate 2000 --messages 10000 --size 64
        run "fanout-10000x5-l$loops-r$round" "$loops" fanout -n 10000 --rate 5 --messages 50 --size 64
        run "connect-64-l$loops-r$round" "$loops" connect -c 64 --duration 5
        run "idle-10000-l$loops-r$round" "$loops" idle -n 10000 --hold 2
    done
    spread "spread-10000-r$round"
done
