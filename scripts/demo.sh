#!/usr/bin/env bash
# Set up a virtual environment (once) and run the demo on the embedded PostgreSQL and Redis.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
ensure_venv "embedded"
exec "$VENV/bin/dispatcher" demo "$@"
