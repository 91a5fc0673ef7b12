#!/usr/bin/env bash
# Side-by-side runs of two ferrocast binaries (and nchan) in one sitting: each scenario runs for
# every server in turn, ROUNDS times, so drift on the machine hits all of them alike.
#
#   bench/compare.sh OLD_BIN NEW_BIN [ROUNDS]       # default 3 rounds
#   ONLY=idle NCHAN=0 bench/compare.sh …            # scenarios matching a regex; without nchan
#
# Results: $OUT (default bench/out/compare, not committed)/<scenario>-<server>-r<round>.json (loadgen
# --json) and commands.log; `python3 bench/summarize.py $OUT` prints them, `bench/pack.py $OUT SESSION`
# adds them to bench/results.json. Server on core 0, generator on
# core 1, every run bounded by `timeout`, every server stopped by its pid.
set -uo pipefail
cd "$(dirname "$0")/.."
OLD="${1:?usage: compare.sh OLD_BIN NEW_BIN [ROUNDS]}"
NEW="${2:?usage: compare.sh OLD_BIN NEW_BIN [ROUNDS]}"
ROUNDS="${3:-3}"
LG=target/release/examples/loadgen
OUT="${OUT:-bench/out/compare}"
NCHAN_PORT_WANTED="${NCHAN_PORT_WANTED:-18090}"
mkdir -p "$OUT"
DIRS=()
NCHAN_DIR=""
cleanup() {
    for d in "${DIRS[@]}"; do [ -d "$d" ] && bench/ferrocast.sh stop "$d"; done
    [ -n "$NCHAN_DIR" ] && [ -d "$NCHAN_DIR" ] && bench/nchan/run.sh stop "$NCHAN_DIR"
}
trap cleanup EXIT
log() { echo "$*" | tee -a "$OUT/commands.log" >&2; }

lg() {
    local name="$1"; shift
    log "+ taskset -c 1 $LG $* --json   # -> $name.json"
    timeout 400 taskset -c 1 "$LG" "$@" --json > "$OUT/$name.json" 2> "$OUT/$name.err"
    log "  rc=$?"
    sleep 1
}

# name | loadgen arguments before --url (ferrocast: /ws with the FIFO; nchan: its HTTP publisher)
SCENARIOS=(
    "idle-18000|idle -n 18000 --hold 2"
    "fanout-1000x2000|fanout -n 1000 --rate 2000 --messages 10000 --size 64"
    "fanout-10000x5|fanout -n 10000 --rate 5 --messages 50 --size 64"
    "latency-1000x50|fanout -n 1000 --rate 50 --messages 500 --size 64"
    "connect-64|connect -c 64 --duration 10"
)

run_ferrocast() { # run_ferrocast LABEL BIN SCENARIO ARGS ROUND
    local label="$1" bin="$2" name="$3" args="$4" round="$5" out
    out="$(BIN="$bin" bench/ferrocast.sh start 0)" || return 1
    eval "$out"; DIRS+=("$FC_DIR")
    log "# $label: BIN=$bin bench/ferrocast.sh start 0 (pid $FC_PID)"
    sleep 0.5
    local pub=()
    [[ "$args" == fanout* ]] && pub=(--publish "fifo:$FC_FIFO")
    # shellcheck disable=SC2086
    lg "$name-$label-r$round" $args "${pub[@]}" --url "ws://127.0.0.1:$FC_PORT/ws" --server-pid "$FC_PID"
    bench/ferrocast.sh stop "$FC_DIR"; sleep 1
}

run_nchan() { # run_nchan SCENARIO ARGS ROUND
    local name="$1" args="$2" round="$3" out
    out="$(bench/nchan/run.sh start "$NCHAN_PORT_WANTED")" || return 1
    eval "$out"
    taskset -cp 0 "$NCHAN_WORKER_PID" > /dev/null
    log "# nchan: bench/nchan/run.sh start $NCHAN_PORT_WANTED (worker $NCHAN_WORKER_PID on core 0)"
    sleep 0.5
    local pub=()
    [[ "$args" == fanout* ]] && pub=(--publish "http:http://127.0.0.1:$NCHAN_PORT/pub/{channel}")
    # nchan answers a publish only after its fan-out: fewer messages where the rate is out of reach.
    args="${args/--messages 10000/--messages 1000}"
    # shellcheck disable=SC2086
    lg "$name-nchan-r$round" $args "${pub[@]}" --protocol nchan --url "ws://127.0.0.1:$NCHAN_PORT/" --server-pid "$NCHAN_WORKER_PID"
    bench/nchan/run.sh stop "$NCHAN_DIR"; NCHAN_DIR=""; sleep 1
}

{ nproc; uname -r; grep -m1 'model name' /proc/cpuinfo; uptime; date -u; "$OLD" --version; "$NEW" --version; } > "$OUT/machine.txt" 2>&1
for round in $(seq 1 "$ROUNDS"); do
    for row in "${SCENARIOS[@]}"; do
        name="${row%%|*}"; args="${row#*|}"
        [[ "$name" =~ ${ONLY:-.} ]] || continue
        run_ferrocast before "$OLD" "$name" "$args" "$round"
        run_ferrocast after "$NEW" "$name" "$args" "$round"
        if [ "${NCHAN:-1}" = 1 ] && command -v nginx > /dev/null && [ "$round" = 1 ]; then run_nchan "$name" "$args" "$round"; fi
    done
done
