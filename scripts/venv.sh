# Sourced by demo.sh and test.sh: create .venv once and install the project with the given extras.
# Usage: ensure_venv EXTRAS  (e.g. "embedded,test"); sets VENV. pip's output goes to $VENV/pip.log
# and is shown only if the install fails.
ensure_venv() {
  PYTHON="${PYTHON:-python3}"
  VENV="${VENV:-.venv}"
  if [ ! -x "$VENV/bin/python" ]; then
    echo "creating $VENV"
    "$PYTHON" -m venv "$VENV"
  fi
  echo "installing dispatcher[$1] into $VENV"
  if ! { "$VENV/bin/python" -m pip install --quiet --upgrade pip \
         && "$VENV/bin/python" -m pip install --quiet -e ".[$1]"; } >"$VENV/pip.log" 2>&1; then
    cat "$VENV/pip.log"
    echo "installing dispatcher[$1] failed (log above, also in $VENV/pip.log)" >&2
    return 1
  fi
}
