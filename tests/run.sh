#!/usr/bin/env bash
# The one test command: installs what the test suites need (when missing), runs every suite,
# prints each suite's summary lines and a total, exits non-zero on any failure.
#
# Usage: bash tests/run.sh            (from anywhere)
# Suites are functions named suite_*; add one per tool (npm clients, redis-server, apache2, ...)
# with a matching need_* function that installs its prerequisites.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
LOGDIR="$(mktemp -d "${TMPDIR:-/tmp}/ferrocast-tests.XXXXXX")"
TOTAL_PASSED=0
TOTAL_FAILED=0
TOTAL_SKIPPED=0
FAILED_SUITES=()

log() { printf '==> %s\n' "$*" >&2; }

# --- prerequisites --------------------------------------------------------------------------

need_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        [ -x "$HOME/.cargo/bin/cargo" ] && export PATH="$HOME/.cargo/bin:$PATH"
    fi
    command -v cargo >/dev/null 2>&1 || { log "cargo not found: install a Rust toolchain"; exit 1; }
}

# apt_install PKG... : installs Debian packages that are missing (runs apt-get update once).
APT_UPDATED=0
apt_install() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$APT_UPDATED" -eq 0 ]; then apt-get update -qq && APT_UPDATED=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
}

# --- suites ---------------------------------------------------------------------------------

# Rust unit + integration tests (tests/*.rs drive the real binary).
suite_rust() {
    need_cargo
    # Real components the Rust tests drive: redis-server + redis-cli (scaling, tests/hostile.rs),
    # apache2 (the proxy in front, tests/deploy_apache.rs), systemd (systemd-analyze verify of the
    # units), util-linux + mount (`unshare --mount` and `mount --bind`: tests/hostile.rs gives the
    # server a private /etc/resolv.conf and /etc/hosts; needs root, as apt-get does), php-fpm
    # (tests/fastcgi_fpm.rs starts a private pool), postgresql and mariadb-server (tests/app_store.rs
    # starts private servers on loopback ports), iproute2 (`ss`: which loop serves a client, tests/loops.rs).
    apt_install redis-server redis-tools apache2 systemd php-cli php-fpm util-linux mount postgresql mariadb-server mariadb-client iproute2 || { log "cannot install the test packages"; return 1; }
    local out="$LOGDIR/rust-$FERROCAST_TEST_LOOPS.log"
    log "building tests"
    # Build first so compile time is not counted against test deadlines.
    if ! cargo test --all-targets --no-run 2>&1 | tee "$out.build"; then
        log "build failed"
        SUMMARIES+=("rust: build failed (see the compiler errors above)")
        return 1
    fi
    log "running cargo test (2 threads per test binary)"
    timeout --kill-after=30 1800 cargo test --all-targets --no-fail-fast -- --test-threads=2 2>&1 | tee "$out"
    local rc=${PIPESTATUS[0]}
    count_cargo "$out"
    return "$rc"
}

# Adds up cargo's `test result:` lines into the totals and prints them again at the end.
count_cargo() {
    local f="$1" p fl ig
    while read -r line; do
        p=$(sed -nE 's/.* ([0-9]+) passed.*/\1/p' <<<"$line")
        fl=$(sed -nE 's/.* ([0-9]+) failed.*/\1/p' <<<"$line")
        ig=$(sed -nE 's/.* ([0-9]+) ignored.*/\1/p' <<<"$line")
        TOTAL_PASSED=$((TOTAL_PASSED + ${p:-0}))
        TOTAL_FAILED=$((TOTAL_FAILED + ${fl:-0}))
        TOTAL_SKIPPED=$((TOTAL_SKIPPED + ${ig:-0}))
    done < <(grep -E '^test result:' "$f")
    SUMMARIES+=("rust (loops $FERROCAST_TEST_LOOPS):" "$(grep -E '^(test result:|     Running )' "$f")")
}

# The real pusher-js, laravel-echo and pusher (npm) packages against the debug binary.
suite_js() {
    command -v node >/dev/null 2>&1 || apt_install nodejs npm
    # The debug console's end-to-end tests drive Debian's Chromium (playwright-core) and
    # Firefox ESR (puppeteer-core over WebDriver BiDi); tests/js/app-store.test.mjs starts a
    # private PostgreSQL.
    apt_install chromium firefox-esr postgresql || { log "cannot install chromium, firefox-esr and postgresql"; return 1; }
    local out="$LOGDIR/js-$FERROCAST_TEST_LOOPS.log"
    FERROCAST_BIN="$ROOT/target/debug/ferrocast" bash tests/js/run.sh 2>&1 | tee "$out"
    local rc=${PIPESTATUS[0]}
    count_node "$out" "js (loops $FERROCAST_TEST_LOOPS)"
    return "$rc"
}

# The official pusher PyPI SDK.
suite_python() {
    command -v python3 >/dev/null 2>&1 || apt_install python3 python3-venv
    local out="$LOGDIR/python-$FERROCAST_TEST_LOOPS.log"
    FERROCAST_BIN="$ROOT/target/debug/ferrocast" bash tests/python/run.sh 2>&1 | tee "$out"
    local rc=${PIPESTATUS[0]}
    local p f
    p=$(grep -oE '[0-9]+ passed' "$out" | tail -1 | grep -oE '[0-9]+')
    f=$(grep -oE '[0-9]+ failed' "$out" | tail -1 | grep -oE '[0-9]+')
    TOTAL_PASSED=$((TOTAL_PASSED + ${p:-0}))
    TOTAL_FAILED=$((TOTAL_FAILED + ${f:-0}))
    SUMMARIES+=("python (loops $FERROCAST_TEST_LOOPS): $(grep -E '(passed|failed|error)' "$out" | tail -1)")
    return "$rc"
}

# Adds up node --test's closing counters ("ℹ pass N", "ℹ fail N").
count_node() {
    local f="$1" name="$2" p fl
    p=$(grep -E '^ℹ pass [0-9]+' "$f" | tail -1 | grep -oE '[0-9]+')
    fl=$(grep -E '^ℹ fail [0-9]+' "$f" | tail -1 | grep -oE '[0-9]+')
    TOTAL_PASSED=$((TOTAL_PASSED + ${p:-0}))
    TOTAL_FAILED=$((TOTAL_FAILED + ${fl:-0}))
    SUMMARIES+=("$name: ${p:-0} passed, ${fl:-0} failed")
}

SUITES=(rust js python)
SUMMARIES=()

# Every suite runs once with one loop and once with two (`loops`): the black-box suites start
# their servers with FERROCAST_TEST_LOOPS loops, so no feature quietly works on one loop only.
for loops in ${TEST_LOOPS:-1 2}; do
    export FERROCAST_TEST_LOOPS="$loops"
    for s in "${SUITES[@]}"; do
        log "suite $s (loops $loops)"
        if ! "suite_$s"; then
            FAILED_SUITES+=("$s (loops $loops)")
        fi
    done
done

echo
echo "================ summary ================"
for s in "${SUMMARIES[@]}"; do printf '%s\n' "$s"; done
echo "-----------------------------------------"
if [ ${#FAILED_SUITES[@]} -gt 0 ]; then
    echo "failed suites: ${FAILED_SUITES[*]}"
fi
echo "total: ${TOTAL_PASSED} passed, ${TOTAL_FAILED} failed, ${TOTAL_SKIPPED} skipped"
rm -rf "$LOGDIR"
if [ ${#FAILED_SUITES[@]} -gt 0 ] || [ "$TOTAL_FAILED" -gt 0 ] || [ "$TOTAL_PASSED" -eq 0 ]; then
    exit 1
fi
exit 0
