#!/usr/bin/env bash
# Runs the official-Python-SDK tests against the ferrocast binary (FERROCAST_BIN, default
# target/debug/ferrocast). Creates tests/python/.venv and installs requirements.txt when missing.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
  rm -f .venv/.requirements-installed
fi
if [ ! -f .venv/.requirements-installed ] || [ requirements.txt -nt .venv/.requirements-installed ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -r requirements.txt
  touch .venv/.requirements-installed
fi
export FERROCAST_BIN="${FERROCAST_BIN:-$here/../../target/debug/ferrocast}"
if [ ! -x "$FERROCAST_BIN" ]; then
  echo "ferrocast binary not found at $FERROCAST_BIN (cargo build first)" >&2
  exit 2
fi
export PYTHONDONTWRITEBYTECODE=1
exec .venv/bin/python -m pytest -q -p no:cacheprovider "$@" .
