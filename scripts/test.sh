#!/usr/bin/env bash
# Set up a virtual environment (once) and run the checks and the whole test suite.
# Uses DATABASE_URL / REDIS_URL when set, otherwise starts embedded PostgreSQL and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv "embedded,test"
echo "== ruff"; "$VENV/bin/ruff" check dispatcher tests benchmarks
echo "== mypy"; "$VENV/bin/mypy"
echo "== pytest"; "$VENV/bin/python" -m pytest "$@"
