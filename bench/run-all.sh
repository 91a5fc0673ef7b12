#!/usr/bin/env bash
# Runs the scenarios of BENCHMARKS.md and keeps one JSON result per run.
#
#   bench/run-all.sh [SECTION…]    # sections: fc-idle fc-fanout fc-connect fc-pusher fc-exec redis
#                                  #           nchan perf repeat   (default: all, in that order)
#
# Results: $OUT (default bench/out/run-all, not committed)/<name>.json (loadgen --json), <name>.err
# (progress lines), commands.log (every command exactly as run); `bench/pack.py $OUT SESSION` adds
# them to bench/results.json. Server on core 0, generator on core 1. Every loadgen
# run is bounded by `timeout`; every server started here is stopped by its pid (trap on exit).
set -uo pipefail
cd "$(dirname "$0")/.."
LG=target/release/examples/loadgen
OUT="${OUT:-bench/out/run-all}"
REDIS_PORT="${REDIS_PORT:-16479}"
NCHAN_PORT_WANTED="${NCHAN_PORT_WANTED:-18090}"
mkdir -p "$OUT"

FC_DIRS=()
NCHAN_DIR=""
REDIS_PID=""
cleanup() {
    for d in "${FC_DIRS[@]}"; do [ -d "$d" ] && bench/ferrocast.sh stop "$d"; done
    [ -n "$NCHAN_DIR" ] && [ -d "$NCHAN_DIR" ] && bench/nchan/run.sh stop "$NCHAN_DIR"
    if [ -n "$REDIS_PID" ] && kill -0 "$REDIS_PID" 2>/dev/null; then kill "$REDIS_PID"; fi
}
trap cleanup EXIT

log() { echo "$*" | tee -a "$OUT/commands.log" >&2; }

# lg NAME ARGS… : one bounded loadgen run on core 1, JSON to $OUT/NAME.json
lg() {
    local name="$1"; shift
    log "+ taskset -c 1 $LG $* --json   # -> $name.json"
    timeout 400 taskset -c 1 "$LG" "$@" --json > "$OUT/$name.json" 2> "$OUT/$name.err"
    local rc=$?
    log "  rc=$rc"
    sleep 1
}

fc_start() { # fc_start [server args…] → FC_DIR FC_PORT FC_PID FC_FIFO
    local out
    out="$(bench/ferrocast.sh start 0 "$@")" || return 1
    eval "$out"
    FC_DIRS+=("$FC_DIR")
    log "# ferrocast started: bench/ferrocast.sh start 0 $* (pid $FC_PID port $FC_PORT)"
    sleep 0.5
}
fc_stop() { bench/ferrocast.sh stop "$FC_DIR"; sleep 1; }

sec_fc_idle() {
    for N in 1000 10000 18000; do
        fc_start
        lg "fc-idle-$N" idle -n "$N" --hold 2 --url "ws://127.0.0.1:$FC_PORT/ws" --server-pid "$FC_PID"
        fc_stop
    done
    fc_start
    lg "fc-pusher-idle-10000" idle -n 10000 --hold 2 --protocol pusher --url "ws://127.0.0.1:$FC_PORT/" --server-pid "$FC_PID"
    fc_stop
}

# name  subscribers rate messages size
FANOUTS=(
    "f1000-r2000-64     1000  2000 10000 64"
    "f1000-r2000-1k     1000  2000 2000  1024"
    "f10000-r5-64       10000 5    50    64"
    "f10000-r5-1k       10000 5    50    1024"
    "f18000-r5-64       18000 5    50    64"
    "f18000-r20-1k      18000 20   60    1024"
    "lat1000-r50-64     1000  50   500   64"
    "lat1000-r50-1k     1000  50   500   1024"
)

sec_fc_fanout() {
    local row name n rate m size
    for row in "${FANOUTS[@]}"; do
        read -r name n rate m size <<< "$row"
        fc_start
        lg "fc-$name" fanout -n "$n" --rate "$rate" --messages "$m" --size "$size" \
            --publish "fifo:$FC_FIFO" --url "ws://127.0.0.1:$FC_PORT/ws" --server-pid "$FC_PID"
        fc_stop
    done
}

sec_fc_connect() {
    fc_start
    lg fc-connect-64 connect -c 64 --duration 10 --url "ws://127.0.0.1:$FC_PORT/ws" --server-pid "$FC_PID"
    fc_stop
}

sec_fc_pusher() {
    fc_start
    lg fc-pusher-f1000-r2000-64 fanout -n 1000 --rate 2000 --messages 10000 --size 64 \
        --publish "fifo:$FC_FIFO" --protocol pusher --url "ws://127.0.0.1:$FC_PORT/" --server-pid "$FC_PID"
    fc_stop
    fc_start
    lg fc-pusher-connect-64 connect -c 64 --duration 10 --protocol pusher --url "ws://127.0.0.1:$FC_PORT/" --server-pid "$FC_PID"
    fc_stop
}

sec_fc_exec() {
    local cfg="$OUT/validate-echo.json"
    echo '{"validate":{"handler":"exec","command":["/bin/echo","u"]}}' > "$cfg"
    fc_start -c "$cfg"
    lg fc-validate-echo-c32 connect -c 32 --duration 10 --url "ws://127.0.0.1:$FC_PORT/ws" --server-pid "$FC_PID"
    fc_stop
    cfg="$OUT/route-cat.json"
    echo '{"route":{"handler":"exec","command":["/bin/cat"]}}' > "$cfg"
    fc_start -c "$cfg"
    lg fc-route-cat-c1 route -c 1 --duration 5 --size 64 --protocol raw --url "ws://127.0.0.1:$FC_PORT/raw" --server-pid "$FC_PID"
    lg fc-route-cat-c16 route -c 16 --duration 10 --size 64 --protocol raw --url "ws://127.0.0.1:$FC_PORT/raw" --server-pid "$FC_PID"
    fc_stop
}

sec_redis() {
    local rdir
    rdir="$(mktemp -d /tmp/fcb-redis.XXXXXX)"
    log "# setsid taskset -c 0 redis-server --port $REDIS_PORT --bind 127.0.0.1 --save '' --appendonly no --dir $rdir"
    setsid taskset -c 0 redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$rdir" \
        < /dev/null > "$rdir/redis.log" 2>&1 &
    REDIS_PID=$!
    sleep 0.5
    local R=(--set scaling.driver=redis --set "scaling.redis_url=redis://127.0.0.1:$REDIS_PORT/0")
    local name n rate m
    for row in "lat1000-r50-64 1000 50 500" "f1000-r2000-64 1000 2000 10000"; do
        read -r name n rate m <<< "$row"
        fc_start "${R[@]}"; local A_DIR=$FC_DIR A_PID=$FC_PID A_FIFO=$FC_FIFO
        fc_start "${R[@]}"; local B_DIR=$FC_DIR B_PID=$FC_PID B_PORT=$FC_PORT
        fc_start "${R[@]}"; local C_DIR=$FC_DIR C_PID=$FC_PID C_PORT=$FC_PORT
        sleep 1
        lg "redis3-$name" fanout -n "$n" --rate "$rate" --messages "$m" --size 64 --publish "fifo:$A_FIFO" \
            --url "ws://127.0.0.1:$B_PORT/ws" --url "ws://127.0.0.1:$C_PORT/ws" \
            --server-pid "$A_PID,$B_PID,$C_PID,$REDIS_PID"
        for d in "$A_DIR" "$B_DIR" "$C_DIR"; do bench/ferrocast.sh stop "$d"; done
        sleep 1
    done
    kill "$REDIS_PID"; REDIS_PID=""
    rm -rf "$rdir"
}

nchan_start() {
    local out
    out="$(bench/nchan/run.sh start "$NCHAN_PORT_WANTED")" || return 1
    eval "$out"
    taskset -cp 0 "$NCHAN_WORKER_PID" > /dev/null
    log "# nchan started: bench/nchan/run.sh start $NCHAN_PORT_WANTED; taskset -cp 0 $NCHAN_WORKER_PID"
    sleep 0.5
}
nchan_stop() { bench/nchan/run.sh stop "$NCHAN_DIR"; NCHAN_DIR=""; sleep 1; }

# nchan answers a publish only after its fan-out: fewer messages where the offered rate is out of reach.
NCHAN_FANOUTS=(
    "f1000-r2000-64     1000  2000 1000 64"
    "f1000-r2000-1k     1000  2000 500  1024"
    "f10000-r5-64       10000 5    50   64"
    "f10000-r5-1k       10000 5    50   1024"
    "f18000-r5-64       18000 5    50   64"
    "f18000-r20-1k      18000 20   60   1024"
    "lat1000-r50-64     1000  50   500  64"
    "lat1000-r50-1k     1000  50   500  1024"
)

sec_nchan() {
    local N="--protocol nchan"
    for n in 1000 10000 18000; do
        nchan_start
        lg "nchan-idle-$n" idle -n "$n" --hold 2 $N --url "ws://127.0.0.1:$NCHAN_PORT/" --server-pid "$NCHAN_WORKER_PID"
        nchan_stop
    done
    local row name n rate m size
    for row in "${NCHAN_FANOUTS[@]}"; do
        read -r name n rate m size <<< "$row"
        nchan_start
        lg "nchan-$name" fanout -n "$n" --rate "$rate" --messages "$m" --size "$size" \
            --publish "http:http://127.0.0.1:$NCHAN_PORT/pub/{channel}" $N \
            --url "ws://127.0.0.1:$NCHAN_PORT/" --server-pid "$NCHAN_WORKER_PID"
        nchan_stop
    done
    nchan_start
    lg nchan-connect-64 connect -c 64 --duration 10 $N --url "ws://127.0.0.1:$NCHAN_PORT/" --server-pid "$NCHAN_WORKER_PID"
    nchan_stop
}

# perf_one NAME SECONDS LOADGEN-ARGS… : cpu-clock samples of the server (all of it, kernel included)
# while a loadgen run goes on; perf itself runs on core 1. `$FC_FIFO` in the arguments is replaced.
perf_one() {
    local name="$1" secs="$2"; shift 2
    fc_start
    log "+ taskset -c 1 perf record -e cpu-clock -F 2000 -g -p $FC_PID -o $OUT/$name.data -- sleep $secs &"
    taskset -c 1 perf record -e cpu-clock -F 2000 -g -p "$FC_PID" -o "$OUT/$name.data" -- sleep "$secs" \
        > "$OUT/$name.perf.log" 2>&1 &
    local perf_pid=$!
    sleep 0.5
    local args=() a
    for a in "$@"; do args+=("${a//\$FC_FIFO/$FC_FIFO}"); done
    lg "$name" "${args[@]}" --url "ws://127.0.0.1:$FC_PORT/ws" --server-pid "$FC_PID"
    wait "$perf_pid"
    fc_stop
    log "+ perf report -i $OUT/$name.data --no-children --sort symbol --stdio > $OUT/$name.flat.txt"
    perf report -i "$OUT/$name.data" --no-children --sort symbol --stdio -g none > "$OUT/$name.flat.txt" 2>/dev/null
    log "+ perf report -i $OUT/$name.data --children --sort symbol --stdio -g none > $OUT/$name.children.txt"
    perf report -i "$OUT/$name.data" --children --sort symbol --stdio -g none > "$OUT/$name.children.txt" 2>/dev/null
}

sec_perf() {
    perf_one perf-f1000-r2000-64 9 fanout -n 1000 --rate 2000 --messages 10000 --size 64 --publish "fifo:\$FC_FIFO"
    perf_one perf-f10000-r5-64 14 fanout -n 10000 --rate 5 --messages 50 --size 64 --publish "fifo:\$FC_FIFO"
    perf_one perf-connect-64 6 connect -c 64 --duration 5
}

# Repetitions of the close comparisons, ferrocast and nchan alternating (names end in -rep2, -rep3).
sec_repeat() {
    local i row name n rate m size
    for i in 2 3; do
        for row in "f10000-r5-64 10000 5 50 64" "f10000-r5-1k 10000 5 50 1024" "lat1000-r50-64 1000 50 500 64"; do
            read -r name n rate m size <<< "$row"
            fc_start
            lg "fc-$name-rep$i" fanout -n "$n" --rate "$rate" --messages "$m" --size "$size" \
                --publish "fifo:$FC_FIFO" --url "ws://127.0.0.1:$FC_PORT/ws" --server-pid "$FC_PID"
            fc_stop
            nchan_start
            lg "nchan-$name-rep$i" fanout -n "$n" --rate "$rate" --messages "$m" --size "$size" \
                --publish "http:http://127.0.0.1:$NCHAN_PORT/pub/{channel}" --protocol nchan \
                --url "ws://127.0.0.1:$NCHAN_PORT/" --server-pid "$NCHAN_WORKER_PID"
            nchan_stop
        done
        fc_start
        lg "fc-f1000-r2000-64-rep$i" fanout -n 1000 --rate 2000 --messages 10000 --size 64 \
            --publish "fifo:$FC_FIFO" --url "ws://127.0.0.1:$FC_PORT/ws" --server-pid "$FC_PID"
        fc_stop
    done
}

sections=("$@")
[ ${#sections[@]} -eq 0 ] && sections=(fc-idle fc-fanout fc-connect fc-pusher fc-exec redis nchan perf repeat)
log "# $(date -u +%FT%TZ) bench/run-all.sh ${sections[*]}"
for s in "${sections[@]}"; do
    log "## section $s ($(date -u +%T))"
    "sec_${s//-/_}"
done
log "# done $(date -u +%FT%TZ)"
