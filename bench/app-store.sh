#!/usr/bin/env bash
# Apps from a database (issue 19's benchmark), side by side in one run:
#
#   bench/app-store.sh [ROUNDS]     # default 3; results in $OUT (bench/out/app-store)
#
# A private PostgreSQL (loopback port, its own data directory) holds the apps table
# (migrations/postgres/001_ferrocast_apps.sql) with 500 apps. Each round:
#   handshakes-file-rN    loadgen connect -c 64 --duration 5 --protocol pusher, the app in --config
#   handshakes-store-rN   the same, the app read from the table (warm: read before the run)
#   cold-store-rN.txt     200 connects, each to an app INSERTed just before (the server has not read
#                         it: the handshake waits for a lookup), time from connect to the 101
# Server on core 0, loadgen and PostgreSQL on core 1, a fresh server per run, every run bounded.
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-3}"
OUT="${OUT:-bench/out/app-store}"
LG=target/release/examples/loadgen
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/app-store-bench.XXXXXX)"
FC_DIR=""
PG_PID=""
PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
PG_PORT=$((20000 + RANDOM % 20000))
AS=(); [ "$(id -u)" = 0 ] && AS=(runuser -u postgres --)
cleanup() {
    [ -n "$FC_DIR" ] && [ -d "$FC_DIR" ] && bench/ferrocast.sh stop "$FC_DIR"
    [ -n "$PG_PID" ] && kill "$PG_PID" 2>/dev/null && wait "$PG_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "$*" | tee -a "$OUT/commands.log" >&2; }
psql_() { PGPASSWORD=bench psql -h 127.0.0.1 -p "$PG_PORT" -U bench -d postgres -qAt -v ON_ERROR_STOP=1 "$@"; }

[ "$(id -u)" = 0 ] && chown postgres "$WORK"
echo bench > "$WORK/pw" && [ "$(id -u)" = 0 ] && chown postgres "$WORK/pw"
"${AS[@]}" "$PG_BIN/initdb" -D "$WORK/pg" -U bench --auth-local=trust --auth-host=scram-sha-256 \
    --pwfile "$WORK/pw" > "$WORK/initdb.log" 2>&1 || { cat "$WORK/initdb.log"; exit 1; }
"${AS[@]}" taskset -c 1 "$PG_BIN/postgres" -D "$WORK/pg" -k "$WORK" -h 127.0.0.1 -p "$PG_PORT" \
    -c fsync=off > "$WORK/pg.log" 2>&1 &
PG_PID=$!
for _ in $(seq 1 100); do psql_ -c 'SELECT 1' >/dev/null 2>&1 && break; sleep 0.1; done
psql_ -f migrations/postgres/001_ferrocast_apps.sql
psql_ -c "INSERT INTO ferrocast_apps (id, app_key, secret)
          SELECT 'app-' || g, 'key-' || g, 'secret-' || g FROM generate_series(1, 500) g"
psql_ -c "INSERT INTO ferrocast_apps (id, app_key, secret) VALUES ('bench', 'bench-key', 'bench-secret')"
echo '{"apps": [{"id": "bench", "key": "bench-key", "secret": "bench-secret"}]}' > "$WORK/file.json"
cat > "$WORK/store.json" <<EOF
{"app_store": {"driver": "postgres", "url": "postgres://bench:bench@127.0.0.1:$PG_PORT/postgres",
               "cache_ttl_secs": 3600}}
EOF

start() { # start CONFIG → FC_* ; waits until the app is served
    local out
    out="$(bench/ferrocast.sh start 0 --config "$WORK/$1.json")" || return 1
    eval "$out"
    for _ in $(seq 1 100); do
        curl -s "http://127.0.0.1:$FC_PORT/metrics" | grep -q '^ferrocast_app_store_reads_total [1-9]' && break
        [ "$1" = file ] && break
        sleep 0.1
    done
}

handshakes() { # handshakes NAME CONFIG
    start "$2" || return 1
    log "+ taskset -c 1 $LG connect -c 64 --duration 5 --protocol pusher --app-key bench-key ($2) --json  # -> $1.json"
    timeout 60 taskset -c 1 "$LG" connect -c 64 --duration 5 --protocol pusher --app-key bench-key \
        --url "ws://127.0.0.1:$FC_PORT/ws" --server-pid "$FC_PID" --json > "$OUT/$1.json" 2> "$OUT/$1.err"
    log "  rc=$?"
    bench/ferrocast.sh stop "$FC_DIR"; FC_DIR=""
    sleep 1
}

cold() { # cold NAME ROUND: connects to apps the server has not read, then to the same again
    start store || return 1
    local keys=()
    for i in $(seq 1 200); do keys+=("cold-$2-$i"); done
    for k in "${keys[@]}"; do
        psql_ -c "INSERT INTO ferrocast_apps (id, app_key, secret) VALUES ('$k', '$k', 's')"
        upgrade_time "$FC_PORT" "$k" >> "$OUT/$1.txt"
    done
    for k in "${keys[@]}"; do upgrade_time "$FC_PORT" "$k" >> "$OUT/$1.warm.txt"; done
    log "# $1: 200 connects to apps just inserted (cold), then the same 200 again (warm: $1.warm.txt)"
    bench/ferrocast.sh stop "$FC_DIR"; FC_DIR=""
}

upgrade_time() { # upgrade_time PORT KEY: seconds from connect to the end of the 101's head
    python3 - "$1" "$2" <<'PY'
import socket, sys, time
port, key = int(sys.argv[1]), sys.argv[2]
t = time.monotonic()
s = socket.create_connection(("127.0.0.1", port), timeout=10)
s.sendall((f"GET /app/{key}?protocol=7 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
           "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
got = b""
while b"\r\n\r\n" not in got:
    chunk = s.recv(4096)
    if not chunk:
        break
    got += chunk
print(f"{time.monotonic() - t:.6f}" if got.startswith(b"HTTP/1.1 101") else "failed")
s.close()
PY
}

{ nproc; uname -r; grep -m1 'model name' /proc/cpuinfo; date -u; git rev-parse --short HEAD; "$PG_BIN/postgres" --version; } > "$OUT/machine.txt" 2>&1
for round in $(seq 1 "$ROUNDS"); do
    handshakes "handshakes-file-r$round" file
    handshakes "handshakes-store-r$round" store
    cold "cold-store-r$round" "$round"
done
