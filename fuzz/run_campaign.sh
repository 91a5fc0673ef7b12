#!/usr/bin/env bash
# Runs every fuzz target one after the other (one process each: this is a shared 2-core box)
# and appends a summary line per target to campaign.log. Usage:
#   RUSTC_BOOTSTRAP=1 cargo fuzz build -O       # from the repository root (stable toolchain)
#   RUSTC_BOOTSTRAP=1 cargo fuzz build -O -s none core   # the whole server: ASan costs it 10x
#   bash fuzz/run_campaign.sh [RUNS] [MAX_SECONDS_PER_TARGET] [TARGET...]
set -uo pipefail
cd "$(dirname "$0")"
RUNS=${1:-10000000}
SECS=${2:-330}
shift 2 2>/dev/null || true
TARGETS=("$@")
[ ${#TARGETS[@]} -eq 0 ] && TARGETS=(http_request fifo_lines channel_protocol pusher_protocol rest_request ws_frame worker_result http_conn core fastcgi_reply)
BIN=target/x86_64-unknown-linux-gnu/release
declare -A MAXLEN=([http_request]=4096 [fifo_lines]=4096 [channel_protocol]=2048 [pusher_protocol]=4096 [rest_request]=4096 [ws_frame]=8192 [worker_result]=4096 [http_conn]=4096 [core]=1024 [fastcgi_reply]=4096)
export FERROCAST_FUZZ_SKIP_KNOWN=${FERROCAST_FUZZ_SKIP_KNOWN-1}
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t" logs
    start=$(date +%s)
    mkdir -p "seeds/$t" "regressions/$t"
    "$BIN/$t" "corpus/$t" "seeds/$t" "regressions/$t" \
        -runs="$RUNS" -max_total_time="$SECS" -max_len="${MAXLEN[$t]}" \
        -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=256 \
        -artifact_prefix="artifacts/$t/" -print_final_stats=1 >"logs/$t.log" 2>&1
    rc=$?
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' | tail -1)
    [ -z "$execs" ] && execs=$(grep -o '^#[0-9]*' "logs/$t.log" | tail -1 | tr -d '#')
    # Only this run's findings: earlier artifacts stay in the directory.
    crashes=$(find "artifacts/$t" -type f -newermt "@$start" 2>/dev/null | grep -c -E '/(crash|timeout|oom|leak|slow-unit)-' || true)
    echo "$t rc=$rc execs=$execs artifacts=$crashes secs=$(( $(date +%s) - start ))" | tee -a campaign.log
done
