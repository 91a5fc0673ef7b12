#!/usr/bin/env bash
# Runs the Pusher-compatibility tests (pusher-js, laravel-echo, official pusher SDK) against the
# ferrocast binary (FERROCAST_BIN, default target/debug/ferrocast). Installs node_modules from the
# lock file when missing. Exits non-zero on any failure.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
if [ ! -d node_modules ] || [ package-lock.json -nt node_modules ]; then
  npm ci --no-audit --no-fund --loglevel=error >/dev/null
fi
export FERROCAST_BIN="${FERROCAST_BIN:-$here/../../target/debug/ferrocast}"
if [ ! -x "$FERROCAST_BIN" ]; then
  echo "ferrocast binary not found at $FERROCAST_BIN (cargo build first)" >&2
  exit 2
fi
exec node --test --test-concurrency=1 --test-reporter=spec ./*.test.mjs
