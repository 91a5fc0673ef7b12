#!/bin/bash
# Checks systemd/ferrocast.{socket,service} with `systemd-analyze verify`.
# Usage: tests/systemd/verify-units.sh [PATH_TO_FERROCAST_BINARY]
# Needs the Debian package "systemd" (for systemd-analyze); does not need
# systemd running as PID 1, nor the ferrocast user.
# `verify` fails when ExecStart's binary does not exist, so the units are
# copied to a temp dir with ExecStart pointed at the built binary (default
# target/release/ferrocast, else target/debug/ferrocast). It exits 0 even on
# unknown keys or bad values, only printing warnings, so any output fails.
set -euo pipefail
cd "$(dirname "$0")/../.."
bin=${1:-}
if [ -z "$bin" ]; then
    for b in target/release/ferrocast target/debug/ferrocast; do
        [ -x "$b" ] && bin=$b && break
    done
fi
[ -n "$bin" ] && [ -x "$bin" ] || { echo "verify-units: no ferrocast binary (build first)" >&2; exit 1; }
bin=$(realpath "$bin")
command -v systemd-analyze >/dev/null || { echo "verify-units: systemd-analyze missing (apt-get install -y systemd)" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp systemd/ferrocast.socket systemd/ferrocast.service "$tmp/"
sed -i "s#^ExecStart=/usr/local/bin/ferrocast #ExecStart=$bin #" "$tmp/ferrocast.service"
grep -q "^ExecStart=$bin " "$tmp/ferrocast.service" || { echo "verify-units: ExecStart not rewritten" >&2; exit 1; }
out=$(cd "$tmp" && systemd-analyze verify --man=no ./ferrocast.socket ./ferrocast.service 2>&1) || { echo "$out" >&2; exit 1; }
if [ -n "$out" ]; then echo "$out" >&2; echo "verify-units: FAILED" >&2; exit 1; fi
echo "verify-units: systemd units OK"
