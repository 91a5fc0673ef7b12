#!/usr/bin/env bash
# What numbering through Redis costs on the publish path (issue 16, across nodes): two nodes and
# a redis-server, channels with history and without, side by side in one run.
#
#   bench/history-cluster.sh [ROUNDS]     # default 3; results in $OUT (bench/out/history-cluster)
#
# Each round, for history off (no rules) and on (every channel, size 100, ttl 300 s), subscribers
# spread over both nodes, published through node A's FIFO:
#   latency-1000x50    loadgen fanout -n 1000 --rate 50 --messages 500 --size 64
#   fanout-1000x2000   loadgen fanout -n 1000 --rate 2000 --messages 10000 --size 64
# Both nodes and Redis on core 0, loadgen on core 1, fresh nodes and Redis per run, every run
# bounded by `timeout`. Redis's CPU time over the run is saved beside each result (.redis-cpu).
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
OUT="${OUT:-bench/out/history-cluster}"
LG=target/release/examples/loadgen
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/history-cluster-bench.XXXXXX)"
DIRS=()
REDIS_PID=""
stop_all() {
    for d in "${DIRS[@]}"; do [ -d "$d" ] && bench/ferrocast.sh stop "$d"; done
    DIRS=()
    [ -n "$REDIS_PID" ] && kill "$REDIS_PID" 2>/dev/null && wait "$REDIS_PID" 2>/dev/null
    REDIS_PID=""
}
cleanup() { stop_all; rm -rf "$WORK"; }
trap cleanup EXIT
log() { echo "$*" | tee -a "$OUT/commands.log" >&2; }

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

run() { # run NAME MODE LOADGEN_ARGS…
    local name="$1" mode="$2"; shift 2
    local port=$((20000 + RANDOM % 20000))
    taskset -c 0 redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        > "$WORK/redis.log" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 1 100); do redis-cli -p "$port" ping >/dev/null 2>&1 && break; sleep 0.05; done
    local hist='[]'
    [ "$mode" = on ] && hist='[{"prefix": "", "size": 100, "ttl_secs": 300}]'
    cat > "$WORK/$mode.json" <<EOF
{"apps": [{"id": "app-id", "key": "app-key", "secret": "app-secret", "history": $hist}],
 "scaling": {"driver": "redis", "redis_url": "redis://127.0.0.1:$port/0"}}
EOF
    local urls=() pids=() fifo=""
    for node in a b; do
        local out
        out="$(bench/ferrocast.sh start 0 --config "$WORK/$mode.json")" || return 1
        eval "$out"
        DIRS+=("$FC_DIR")
        urls+=(--url "ws://127.0.0.1:$FC_PORT/ws")
        pids+=("$FC_PID")
        [ -z "$fifo" ] && fifo="$FC_FIFO"
    done
    log "# $name: redis-server on core 0, two nodes (bench/ferrocast.sh start 0 --config $mode.json)"
    sleep 1
    local before
    before=$(cpu_ticks "$REDIS_PID")
    log "+ taskset -c 1 $LG $* --publish fifo:A ${urls[*]} --json   # -> $name.json"
    timeout 180 taskset -c 1 "$LG" "$@" --publish "fifo:$fifo" "${urls[@]}" \
        --server-pid "$(IFS=,; echo "${pids[*]}")" --json > "$OUT/$name.json" 2> "$OUT/$name.err"
    log "  rc=$?"
    echo "$(( $(cpu_ticks "$REDIS_PID") - before )) ticks of $(getconf CLK_TCK)/s" > "$OUT/$name.redis-cpu"
    stop_all
    sleep 1
}

{ nproc; uname -r; grep -m1 'model name' /proc/cpuinfo; date -u; git rev-parse --short HEAD; redis-server --version; } > "$OUT/machine.txt" 2>&1
for round in $(seq 1 "$ROUNDS"); do
    for mode in off on; do
        run "latency-1000x50-$mode-r$round" "$mode" fanout -n 1000 --rate 50 --messages 500 --size 64
        run "fanout-1000x2000-$mode-r$round" "$mode" fanout -n 1000 --rate 2000 --messages 10000 --size 64
    done
done
