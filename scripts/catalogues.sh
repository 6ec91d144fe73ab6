#!/usr/bin/env bash
# The translators' loop: extract the messages from the templates and content.py into the template
# catalogue, merge them into every language's .po, and compile the .mo files the engine loads.
#   scripts/catalogues.sh            extract, update, compile (after a template or label changed)
#   scripts/catalogues.sh compile    compile only (after a translator edited a .po)
#   scripts/catalogues.sh init xx_YY start a new language (then translate its .po and compile)
# Commit the .po and .mo files together; tests/test_locales.py fails when they disagree.
set -euo pipefail
cd "$(dirname "$0")/.."
PYBABEL="${PYBABEL:-.venv/bin/pybabel}"
DIR=dispatcher/channels/locales
POT="$DIR/messages.pot"
case "${1:-all}" in
  init)
    "$PYBABEL" init -i "$POT" -d "$DIR" -l "$2" --no-wrap ;;
  compile)
    "$PYBABEL" compile -d "$DIR" --statistics ;;
  all)
    "$PYBABEL" extract -F babel.cfg -o "$POT" --no-wrap --sort-by-file --project=dispatcher .
    "$PYBABEL" update -i "$POT" -d "$DIR" --no-wrap --ignore-obsolete
    "$PYBABEL" compile -d "$DIR" --statistics ;;
  *)
    echo "usage: $0 [all|compile|init LOCALE]" >&2; exit 2 ;;
esac
