#!/usr/bin/env bash
# Everything `make demo` / `make test` need, with the independent installs side by side: the app's
# .venv (scripts/bootstrap.sh), Label Studio's .venv-labelstudio (scripts/bootstrap_labelstudio.sh)
# and, with --system, the Debian packages (scripts/system_packages.sh). pip spends most of its time
# on one core (resolving, unpacking, compiling), so two installs at once take little more than the
# longer one. Each part is idempotent (stamps); a failed part prints its log and fails the whole.
set -uo pipefail
cd "$(dirname "$0")/.."
parts=(bootstrap bootstrap_labelstudio)
[ "${1:-}" = "--system" ] && parts+=(system_packages)
logs=$(mktemp -d)
pids=()
for part in "${parts[@]}"; do
  bash "scripts/$part.sh" >"$logs/$part.log" 2>&1 &
  pids+=($!)
done
failed=0
for i in "${!parts[@]}"; do
  if ! wait "${pids[$i]}"; then
    echo "bootstrap: scripts/${parts[$i]}.sh failed; its output:" >&2
    tail -n 40 "$logs/${parts[$i]}.log" >&2
    failed=1
  else
    grep -v "^WARNING: Location .* is ignored" "$logs/${parts[$i]}.log" >&2 || true
  fi
done
rm -rf "$logs"
[ "$failed" = 0 ] || exit 1
# a migrated template data folder, built once (minutes), so every server start takes seconds
export SPINETRACK_LS_VENV=${SPINETRACK_LS_VENV:-$PWD/.venv-labelstudio}
.venv/bin/python -c "from annotation.labelstudio.server import ensure_template; ensure_template()"
