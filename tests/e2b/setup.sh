#!/usr/bin/env bash
# Installs what the E2B conformance suite needs, idempotently:
# - tests/e2b/.venv with requirements.txt (e2b==2.63.0, pytest), recreated
#   only when requirements.txt changes;
# - tests/e2b/node_modules from package-lock.json (`npm ci`), re-run only when
#   the lockfile changes.
# Prints progress on stderr; fails on any missing prerequisite.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fail() { echo "e2b setup: $*" >&2; exit 1; }

command -v python3 >/dev/null || fail "python3 (>= 3.10) is required"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
  || fail "python3 >= 3.10 is required (found $(python3 --version 2>&1))"
command -v node >/dev/null || fail "node (>= 20.18) is required"
command -v npm >/dev/null || fail "npm is required"
node -e 'const [a,b]=process.versions.node.split(".").map(Number); process.exit(a>20||(a==20&&b>=18)?0:1)' \
  || fail "node >= 20.18 is required by the e2b npm package (found $(node --version))"

venv="$here/.venv"
req_sum="$(sha256sum "$here/requirements.txt" | cut -c1-16)"
if [[ ! -f "$venv/.hutch-req-$req_sum" ]]; then
  echo "e2b setup: creating $venv" >&2
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$here/requirements.txt" >&2 \
    || fail "pip install -r requirements.txt failed"
  touch "$venv/.hutch-req-$req_sum"
fi

lock_sum="$(sha256sum "$here/package-lock.json" | cut -c1-16)"
if [[ ! -f "$here/node_modules/.hutch-lock-$lock_sum" ]]; then
  echo "e2b setup: npm ci" >&2
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2) || fail "npm ci failed"
  touch "$here/node_modules/.hutch-lock-$lock_sum"
fi
