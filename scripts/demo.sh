#!/usr/bin/env bash
# Set up a virtual environment (once) and run the demo on the embedded PostgreSQL and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[embedded]'
exec "$VENV/bin/dispatcher" demo "$@"
