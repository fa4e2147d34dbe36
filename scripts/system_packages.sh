#!/usr/bin/env bash
# Debian packages the test suite needs beside the Python stack: a PostgreSQL server (the store's
# PostgreSQL tests start their own with initdb/pg_ctl), headless Chromium (screenshots of what
# annotators and reviewers see) and docker-compose 1.29 (validates docker-compose.yml without an engine).
# Idempotent: installs only what is missing; skips with a note where apt-get is unavailable or not root.
set -uo pipefail
need=()
command -v initdb >/dev/null 2>&1 || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
[ ${#need[@]} -eq 0 ] && exit 0
if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "system_packages: cannot install ${need[*]} (no apt-get or not root); tests needing them will skip" >&2
  exit 0
fi
echo "system_packages: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq >/dev/null 2>&1 || true
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null 2>&1 \
  || echo "system_packages: apt-get install ${need[*]} failed; tests needing them will skip" >&2
exit 0
