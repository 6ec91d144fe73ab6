# Sourced by demo.sh and test.sh: create .venv once and install the project with the given extras.
# Usage: ensure_venv EXTRAS  (e.g. "embedded,test"); sets VENV.
ensure_venv() {
  PYTHON="${PYTHON:-python3}"
  VENV="${VENV:-.venv}"
  if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  "$VENV/bin/python" -m pip install --quiet -e ".[$1]"
}
