#!/usr/bin/env bash
# PHP handlers side by side in one run: session validation and routed messages through php-cli
# (exec), php-fpm (fastcgi, pools of 8 and 16) and, as the floor, /bin/echo and /bin/cat.
# Routing uses a PHP script that echoes the message (what loadgen's route mode checks).
#
#   bench/php-handlers.sh [ROUNDS]        # default 2 rounds; results in $OUT (bench/out/php)
#
# The server and everything it asks (its php-cli children, the php-fpm master and workers) run on
# core 0, the generator on core 1. The validator is examples/validate.php resuming a real session
# that PHP wrote. Per run: loadgen's JSON, plus the php-fpm pool's CPU seconds in <name>.fpm-cpu.
set -uo pipefail
cd "$(dirname "$0")/.."
ROUNDS="${1:-2}"
OUT="${OUT:-bench/out/php}"
LG=target/release/examples/loadgen
FPM="${FPM:-$(command -v php-fpm8.2 || echo /usr/sbin/php-fpm)}"
PHP="${PHP:-$(command -v php)}"
mkdir -p "$OUT"
WORK="$(mktemp -d /tmp/php-bench.XXXXXX)"
FPM_PID=""
FC_DIR=""
cleanup() {
    [ -n "$FC_DIR" ] && [ -d "$FC_DIR" ] && bench/ferrocast.sh stop "$FC_DIR"
    [ -n "$FPM_PID" ] && kill "$FPM_PID" 2>/dev/null && wait "$FPM_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
log() { echo "$*" | tee -a "$OUT/commands.log" >&2; }

# A session as the web application leaves it.
mkdir -p "$WORK/sessions"
"$PHP" -d "session.save_path=$WORK/sessions" -r \
    'session_id("benchsession1"); session_start(); $_SESSION["user_id"] = "u1"; session_write_close();'
[ -f "$WORK/sessions/sess_benchsession1" ] || { echo "no session written" >&2; exit 1; }
COOKIE="Cookie: PHPSESSID=benchsession1"
VALIDATE="$PWD/examples/validate.php"
# loadgen's route mode expects each message echoed: the smallest PHP application that does it.
ROUTE="$WORK/echo.php"
cat > "$ROUTE" <<'EOF'
<?php
echo PHP_SAPI === 'cli' ? stream_get_contents(STDIN) : file_get_contents('php://input');
EOF

fpm_start() { # fpm_start CHILDREN
    cat > "$WORK/fpm.conf" <<EOF
[global]
pid = $WORK/fpm.pid
error_log = $WORK/fpm.log
daemonize = no
[bench]
user = $(id -un)
listen = $WORK/fpm.sock
pm = static
pm.max_children = $1
clear_env = yes
php_admin_value[session.save_path] = $WORK/sessions
EOF
    rm -f "$WORK/fpm.sock"
    taskset -c 0 "$FPM" -F -R -y "$WORK/fpm.conf" > /dev/null 2>&1 &
    FPM_PID=$!
    for _ in $(seq 1 100); do [ -S "$WORK/fpm.sock" ] && break; sleep 0.05; done
    log "# php-fpm pool of $1 (pid $FPM_PID) on core 0"
}
fpm_stop() { [ -n "$FPM_PID" ] && kill "$FPM_PID" && wait "$FPM_PID" 2>/dev/null; FPM_PID=""; }
# CPU seconds (user + system) of the php-fpm master and workers.
fpm_cpu() {
    local pids total=0 t
    pids="$FPM_PID $(pgrep -P "$FPM_PID" | tr '\n' ' ')"
    for p in $pids; do
        t=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null || echo 0)
        total=$((total + t))
    done
    echo "$total $(getconf CLK_TCK)" | awk '{printf "%.2f\n", $1 / $2}'
}

# run NAME CONFIG_JSON LOADGEN_ARGS…
run() {
    local name="$1" cfg="$2"; shift 2
    echo "$cfg" > "$WORK/ferrocast.json"
    local out
    out="$(bench/ferrocast.sh start 0 --config "$WORK/ferrocast.json")" || return 1
    eval "$out"
    log "# $name: $cfg"
    local before=0
    [ -n "$FPM_PID" ] && before="$(fpm_cpu)"
    log "+ taskset -c 1 $LG $* --url ws://127.0.0.1:$FC_PORT/chat --server-pid $FC_PID --json  # -> $name.json"
    timeout 120 taskset -c 1 "$LG" "$@" --url "ws://127.0.0.1:$FC_PORT/chat" --server-pid "$FC_PID" --json \
        > "$OUT/$name.json" 2> "$OUT/$name.err"
    log "  rc=$?"
    [ -n "$FPM_PID" ] && echo "$(fpm_cpu) $before" | awk '{printf "%.2f\n", $1 - $2}' > "$OUT/$name.fpm-cpu"
    bench/ferrocast.sh stop "$FC_DIR"; FC_DIR=""
    sleep 1
}

exec_validate="{\"validate\":{\"handler\":\"exec\",\"command\":[\"$PHP\",\"-d\",\"session.save_path=$WORK/sessions\",\"$VALIDATE\"]},\"max_workers\":16,\"validate_timeout_secs\":30}"
echo_validate='{"validate":{"handler":"exec","command":["/bin/echo","u1"]},"max_workers":16}'
fcgi() { # fcgi KIND SCRIPT WORKERS
    echo "{\"$1\":{\"handler\":\"fastcgi\",\"socket\":\"$WORK/fpm.sock\",\"script\":\"$2\"},\"max_workers\":$3,\"validate_timeout_secs\":30}"
}
exec_route="{\"route\":{\"handler\":\"exec\",\"command\":[\"$PHP\",\"$ROUTE\"]},\"max_workers\":16}"
cat_route='{"route":{"handler":"exec","command":["/bin/cat"]},"max_workers":16}'
CONNECT=(connect -c 32 --duration 10 --protocol raw --header "$COOKIE")
ROUTING=(route -c 16 --duration 10 --size 64 --protocol raw)

{ nproc; uname -r; grep -m1 'model name' /proc/cpuinfo; date -u; "$PHP" -v | head -1; "$FPM" -v | head -1; } > "$OUT/machine.txt" 2>&1
for round in $(seq 1 "$ROUNDS"); do
    run "validate-php-cli-r$round" "$exec_validate" "${CONNECT[@]}"
    run "validate-echo-r$round" "$echo_validate" "${CONNECT[@]}"
    for pool in 8 16; do
        fpm_start "$pool"
        run "validate-fpm$pool-r$round" "$(fcgi validate "$VALIDATE" "$pool")" "${CONNECT[@]}"
        run "route-fpm$pool-r$round" "$(fcgi route "$ROUTE" "$pool")" "${ROUTING[@]}"
        fpm_stop
    done
    run "route-php-cli-r$round" "$exec_route" "${ROUTING[@]}"
    run "route-cat-r$round" "$cat_route" "${ROUTING[@]}"
done
