#!/usr/bin/env bash
# Set up a virtual environment (once) and run the checks and the whole test suite.
# Uses DATABASE_URL / REDIS_URL when set, otherwise starts embedded PostgreSQL and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --upgrade pip
"$VENV/bin/python" -m pip install --quiet -e '.[embedded,test]'
echo "== ruff"; "$VENV/bin/ruff" check dispatcher tests benchmarks
echo "== mypy"; "$VENV/bin/mypy"
echo "== pytest"; "$VENV/bin/python" -m pytest "$@"
