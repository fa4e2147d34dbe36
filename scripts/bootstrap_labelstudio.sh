#!/usr/bin/env bash
# Label Studio's server lives in its own virtualenv: its pins clash with the app's (Django, numpy...).
# The app only talks to it over HTTP with label-studio-sdk.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=${LS_VENV:-.venv-labelstudio}
STAMP="$VENV/.bootstrap-stamp"
want=$(cat requirements/labelstudio.txt scripts/bootstrap_labelstudio.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then exit 0; fi
echo "bootstrap: creating $VENV for the Label Studio server" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --disable-pip-version-check -r requirements/labelstudio.txt
echo "$want" > "$STAMP"
