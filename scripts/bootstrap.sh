#!/usr/bin/env bash
# Create .venv with the pinned stack, in the one order that works on CPU (docs/stack.md):
# torch first (CPU build), then mmengine/mmcv-lite, mmpose without its requirements, xtcocotools
# built from source against the installed numpy, then the project itself with every other pin.
# Idempotent: a stamp holds a hash of the inputs, so a second run returns at once.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
VENV=${VENV:-.venv}
STAMP="$VENV/.bootstrap-stamp"
want=$(cat pyproject.toml requirements/*.txt scripts/bootstrap.sh | sha256sum | cut -c1-16)
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then exit 0; fi

echo "bootstrap: creating $VENV (a few minutes on a fresh machine)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip install -q --disable-pip-version-check -c requirements/lock.txt)
"${PIP[@]}" "setuptools<81" wheel "numpy==2.2.6" "torch==2.13.0"
"${PIP[@]}" -r requirements/mm.txt
"${PIP[@]}" --no-deps -r requirements/nodeps.txt
"${PIP[@]}" --no-deps --no-build-isolation --no-binary xtcocotools xtcocotools==1.14.3
# mediapipe and mmpose are in without some of their own requirements (above): pip's conflict report
# for this install would list those as an ERROR; `pip check` below reports anything beyond them
"${PIP[@]}" --no-warn-conflicts -e ".[dev,postgres]"
# mmengine/mmcv-lite pull opencv-python, which shares the cv2 package with the headless build the
# project pins: keep one cv2 (headless), reinstalled whole since the uninstall removes shared files.
"$VENV/bin/python" -m pip uninstall -y -q opencv-python || true
"${PIP[@]}" --no-deps --force-reinstall opencv-python-headless==4.12.0.88
"$VENV/bin/python" -c "import cv2, mmpose; assert cv2.__version__.startswith('4.12'), cv2.__version__"
unexpected=$("$VENV/bin/python" -m pip check 2>&1 \
  | grep -v -x -F -e "No broken requirements found." -f <(grep -v -e '^#' -e '^$' scripts/unmet_requirements.txt) || true)
if [ -n "$unexpected" ]; then
  echo "bootstrap: dependency conflicts beyond the intended ones (scripts/unmet_requirements.txt):" >&2
  echo "$unexpected" >&2
fi
echo "$want" > "$STAMP"
echo "bootstrap: $VENV ready" >&2
