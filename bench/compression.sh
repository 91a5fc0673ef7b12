#!/usr/bin/env bash
# permessage-deflate on a realistic payload: ferrocast and nchan, each with and without it.
#
#   bench/compression.sh [ROUNDS]         # default 3 rounds; results in $OUT (bench/out/compression)
#   SUBS=200 MESSAGES=150 bench/compression.sh 1      # a short smoke run
#
# Every round, one fan-out each to SUBS (1000) subscribers of MESSAGES (500) SIZE-byte (2048)
# `--laravel` payloads (a Laravel-style order event, compressing about 3x on its own) at RATE (50)
# msg/s, so about 10 s of publishing, well under what one core of either server sustains:
#   ferrocast-plain     ferrocast, channel protocol, the subscribers offer no extension
#   ferrocast-deflate   ferrocast, channel protocol, the subscribers offer permessage-deflate
#   nchan-deflate       nchan with nchan_deflate_message_for_websocket on, offered permessage-deflate
#   nchan-plain         nchan as in bench/compare.sh, no offer
#   ferrocast-pusher-*  ferrocast to Pusher-protocol subscribers (what Laravel Echo gets), plain
#                       and with permessage-deflate
# Compare wire_bytes_per_delivery (what each subscriber reads per message), deliveries per server
# CPU-second, latency and deflate_agreed (connections that negotiated) in the loadgen --json files
# $OUT/<variant>-r<round>.json; commands in $OUT/commands.log, the machine in $OUT/machine.txt, a
# summary table at the end (python3). Server on core 0, generator on core 1, a fresh server per
# run, every run bounded by `timeout`, every server stopped by its pid.
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
OUT="${OUT:-bench/out/compression}"
SUBS="${SUBS:-1000}"
RATE="${RATE:-50}"
MESSAGES="${MESSAGES:-500}"
SIZE="${SIZE:-2048}"
NCHAN_PORT_WANTED="${NCHAN_PORT_WANTED:-18090}"
LG=target/release/examples/loadgen
FC=target/release/ferrocast
mkdir -p "$OUT"
FC_DIR=""
NCHAN_DIR=""
cleanup() {
    [ -n "$FC_DIR" ] && [ -d "$FC_DIR" ] && bench/ferrocast.sh stop "$FC_DIR"
    [ -n "$NCHAN_DIR" ] && [ -d "$NCHAN_DIR" ] && bench/nchan/run.sh stop "$NCHAN_DIR"
}
trap cleanup EXIT
log() { echo "$*" | tee -a "$OUT/commands.log" >&2; }

if [ ! -x "$FC" ] || [ ! -x "$LG" ]; then
    log "+ cargo build --release && cargo build --release --example loadgen"
    cargo build --release && cargo build --release --example loadgen || exit 1
fi

FANOUT=(fanout -n "$SUBS" --rate "$RATE" --messages "$MESSAGES" --size "$SIZE" --laravel)

lg() { # lg NAME LOADGEN_ARGS…
    local name="$1"; shift
    log "+ taskset -c 1 $LG $* --json   # -> $name.json"
    timeout 180 taskset -c 1 "$LG" "$@" --json > "$OUT/$name.json" 2> "$OUT/$name.err"
    log "  rc=$?"
}

run_ferrocast() { # run_ferrocast NAME [LOADGEN_ARGS…]
    local name="$1"; shift
    local out
    out="$(bench/ferrocast.sh start 0)" || return 1
    eval "$out"
    log "# $name: bench/ferrocast.sh start 0 (pid $FC_PID)"
    sleep 0.5
    lg "$name" "${FANOUT[@]}" "$@" --publish "fifo:$FC_FIFO" --url "ws://127.0.0.1:$FC_PORT/ws" --server-pid "$FC_PID"
    bench/ferrocast.sh stop "$FC_DIR"; FC_DIR=""
    sleep 1
}

run_nchan() { # run_nchan NAME DEFLATE(0|1) [LOADGEN_ARGS…]
    local name="$1" deflate="$2"; shift 2
    local out
    out="$(NCHAN_DEFLATE="$deflate" bench/nchan/run.sh start "$NCHAN_PORT_WANTED")" || return 1
    eval "$out"
    taskset -cp 0 "$NCHAN_WORKER_PID" > /dev/null
    log "# $name: NCHAN_DEFLATE=$deflate bench/nchan/run.sh start $NCHAN_PORT_WANTED (worker $NCHAN_WORKER_PID on core 0)"
    sleep 0.5
    lg "$name" "${FANOUT[@]}" "$@" --publish "http:http://127.0.0.1:$NCHAN_PORT/pub/{channel}" \
        --protocol nchan --url "ws://127.0.0.1:$NCHAN_PORT/" --server-pid "$NCHAN_WORKER_PID"
    bench/nchan/run.sh stop "$NCHAN_DIR"; NCHAN_DIR=""
    sleep 1
}

{ nproc; uname -r; grep -m1 'model name' /proc/cpuinfo; uptime; date -u; "$FC" --version; nginx -v 2>&1
  dpkg-query -W libnginx-mod-nchan 2>/dev/null; echo "SUBS=$SUBS RATE=$RATE MESSAGES=$MESSAGES SIZE=$SIZE ROUNDS=$ROUNDS"
} > "$OUT/machine.txt" 2>&1
for round in $(seq 1 "$ROUNDS"); do
    run_ferrocast "ferrocast-plain-r$round"
    run_ferrocast "ferrocast-deflate-r$round" --deflate
    # What Laravel Echo receives: the Pusher protocol's event frame around the same data.
    run_ferrocast "ferrocast-pusher-plain-r$round" --protocol pusher
    run_ferrocast "ferrocast-pusher-deflate-r$round" --protocol pusher --deflate
    if command -v nginx > /dev/null; then
        run_nchan "nchan-deflate-r$round" 1 --deflate
        run_nchan "nchan-plain-r$round" 0
    fi
done

command -v python3 > /dev/null && python3 - "$OUT" <<'EOF'
import glob, json, os, sys
print(f"{'run':24} {'agreed':>6} {'delivered':>10} {'loss':>5} {'dup':>4} {'B/delivery':>10} {'deliv/CPU-s':>11} {'p50 µs':>8} {'p99 µs':>8}")
for path in sorted(glob.glob(os.path.join(sys.argv[1], "*-r*.json"))):
    try:
        d = json.load(open(path))
    except ValueError:
        print(f"{os.path.basename(path)[:-5]:24} (no result)")
        continue
    lat = d.get("latency_p50_p90_p99_max", {})
    per_cpu = d.get("deliveries_per_server_cpu_second")
    print(f"{os.path.basename(path)[:-5]:24} {d.get('deflate_agreed', 0):>6} "
          f"{d['delivered_expected']['delivered']:>10} {d['loss']:>5} {d['duplicates_out_of_order']['duplicates']:>4} "
          f"{d.get('wire_bytes_per_delivery') or 0:>10.1f} {per_cpu or 0:>11.0f} "
          f"{lat.get('p50_ns', 0) / 1e3:>8.0f} {lat.get('p99_ns', 0) / 1e3:>8.0f}")
EOF
