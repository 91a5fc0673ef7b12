#!/usr/bin/env bash
# Private nginx + nchan instance for the comparison benchmark (loopback only, worker_processes 1).
#
#   bench/nchan/run.sh start [PORT]   # prints shell assignments: NCHAN_DIR NCHAN_PORT NCHAN_MASTER_PID NCHAN_WORKER_PID
#   bench/nchan/run.sh stop DIR       # stops the instance started in DIR (by its pid) and removes DIR
#   bench/nchan/run.sh check          # start, publish one message to a websocket-less channel, stop
#
# NCHAN_DEFLATE=1 (start, check) turns on `nchan_deflate_message_for_websocket`: subscribers that
# offer permessage-deflate get each message compressed (once per message, by the publisher side).
#
# Usage in a benchmark:
#   eval "$(bench/nchan/run.sh start 18090)"
#   taskset -cp 0 "$NCHAN_WORKER_PID"            # pin the worker like the ferrocast server
#   taskset -c 1 target/release/examples/loadgen fanout --protocol nchan --url ws://127.0.0.1:$NCHAN_PORT/ \
#       --publish http:http://127.0.0.1:$NCHAN_PORT/pub/{channel} --server-pid "$NCHAN_WORKER_PID" ...
#   bench/nchan/run.sh stop "$NCHAN_DIR"
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
nginx_bin="${NGINX:-/usr/sbin/nginx}"
module=/usr/lib/nginx/modules/ngx_nchan_module.so

die() { echo "run.sh: $*" >&2; exit 1; }

start() {
    local port="${1:-18090}"
    [ -x "$nginx_bin" ] || die "$nginx_bin not found: apt-get install nginx libnginx-mod-nchan"
    [ -f "$module" ] || die "$module not found: apt-get install libnginx-mod-nchan"
    local dir
    dir="$(mktemp -d /tmp/nchan-bench.XXXXXX)"
    chmod 755 "$dir"
    local nofile
    nofile="$(ulimit -Hn)"
    [ "$nofile" = unlimited ] && nofile=1048576
    local user_line=""
    if [ "$(id -u)" = 0 ]; then user_line="user root;"; fi
    local deflate_line=""
    if [ "${NCHAN_DEFLATE:-0}" = 1 ]; then deflate_line="nchan_deflate_message_for_websocket on;"; fi
    sed -e "s|@DIR@|$dir|g" -e "s|@PORT@|$port|g" -e "s|@USER_LINE@|$user_line|g" \
        -e "s|@NOFILE@|$nofile|g" -e "s|@WORKER_CONNECTIONS@|$((nofile - 100))|g" \
        -e "s|@DEFLATE@|$deflate_line|g" \
        "$here/nginx.conf.in" > "$dir/nginx.conf"
    "$nginx_bin" -t -q -p "$dir" -c "$dir/nginx.conf" 2> "$dir/test.log" || { cat "$dir/test.log" >&2; rm -rf "$dir"; die "nginx -t failed"; }
    ulimit -n "$nofile" 2>/dev/null || true
    setsid "$nginx_bin" -p "$dir" -c "$dir/nginx.conf" < /dev/null > "$dir/stdout.log" 2>&1 &
    local master=$!
    local i worker=""
    for i in $(seq 1 100); do
        if [ -s "$dir/nginx.pid" ] && worker="$(pgrep -P "$master" | head -n1)" && [ -n "$worker" ] \
            && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            break
        fi
        kill -0 "$master" 2>/dev/null || { cat "$dir/error.log" "$dir/stdout.log" >&2 2>/dev/null; rm -rf "$dir"; die "nginx exited"; }
        sleep 0.05
    done
    [ -n "$worker" ] || { kill "$master"; rm -rf "$dir"; die "nginx did not come up on port $port"; }
    echo "$master" > "$dir/master.pid"
    echo "NCHAN_DIR=$dir"
    echo "NCHAN_PORT=$port"
    echo "NCHAN_MASTER_PID=$master"
    echo "NCHAN_WORKER_PID=$worker"
}

stop() {
    local dir="${1:?usage: run.sh stop DIR}"
    case "$dir" in /tmp/nchan-bench.*) ;; *) die "refusing to stop/remove $dir (not a run.sh directory)";; esac
    [ -f "$dir/master.pid" ] || die "$dir/master.pid missing"
    local master
    master="$(cat "$dir/master.pid")"
    if kill -0 "$master" 2>/dev/null; then
        kill -QUIT "$master"
        for _ in $(seq 1 100); do kill -0 "$master" 2>/dev/null || break; sleep 0.05; done
        if kill -0 "$master" 2>/dev/null; then kill -KILL "$master"; fi
    fi
    rm -rf "$dir"
}

check() {
    local out
    out="$(start "${1:-18090}")"
    eval "$out"
    echo "$out"
    local code
    code="$(curl -s -o /dev/null -w '%{http_code}' -X POST --data-binary 'hello' "http://127.0.0.1:$NCHAN_PORT/pub/check")"
    echo "publish -> HTTP $code"
    stop "$NCHAN_DIR"
    case "$code" in 2*) echo "nchan OK";; *) die "unexpected publish status $code";; esac
}

case "${1:-}" in
    start) shift; start "$@";;
    stop) shift; stop "$@";;
    check) shift; check "$@";;
    *) echo "usage: $0 start [PORT] | stop DIR | check [PORT]" >&2; exit 2;;
esac
