#!/usr/bin/env bash
# E2B SDK conformance suite: drives a hutch-guest on loopback with the REAL
# e2b SDKs (PyPI e2b 2.63.0 and the npm e2b package) in their debug modes,
# which skip the control plane and talk to envd at http://localhost:49983.
#
# Usage: tests/e2b/run.sh [pytest args...]
#        tests/e2b/run.sh --site-packages   (only set up the venv and print its
#        site-packages, for HUTCH_E2B_SITE_PACKAGES of the descriptor drift
#        test: crates/hutch-envd/tests/descriptor_drift.rs)
#   HUTCH_GUEST_BIN   guest binary (default: target/debug/hutch-guest); built by
#                     the caller (`cargo build -p hutch-guest`), never here.
#   HUTCH_E2B_SKIP_JS=1 / HUTCH_E2B_SKIP_PY=1  run only one half (for
#                     debugging; the default, and `make test`, runs both).
#
# 1. Check the guest binary and that port 49983 is free: any missing piece is
#    a failure, never a skip.
# 2. setup.sh: check python3 >= 3.10, node >= 20.18, npm; create .venv
#    idempotently (re-installed only when requirements.txt changes) and
#    `npm ci` idempotently (only when the lockfile changes).
# 3. pytest: the fixtures in py/conftest.py start and stop guests on
#    127.0.0.1:49983 one after another (one without a token, one with), each
#    waited for through /health with a deadline.
# 4. node --test: js/guest.mjs does the same for the npm SDK.
# Exit status: non-zero if anything failed.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
port=49983

fail() { echo "e2b conformance: $*" >&2; exit 1; }

# setup.sh installs .venv and node_modules (each only when its pin changed).
setup() {
  "$here/setup.sh" || exit 1
  venv="$here/.venv"
  site_packages="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  export HUTCH_E2B_SITE_PACKAGES="$site_packages"
}

if [[ "${1:-}" == "--site-packages" ]]; then
  setup
  echo "$site_packages"
  exit 0
fi

bin="${HUTCH_GUEST_BIN:-$repo/target/debug/hutch-guest}"
case "$bin" in /*) ;; *) bin="$repo/$bin" ;; esac
[[ -x "$bin" ]] || fail "guest binary $bin not found or not executable: run \`cargo build -p hutch-guest\` or set HUTCH_GUEST_BIN"
export HUTCH_GUEST_BIN="$bin"

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; }
if port_busy; then
  fail "127.0.0.1:$port is already in use; the SDKs' debug mode needs that exact port. Stop whatever listens there (ss -ltnp 'sport = :$port')."
fi

setup

export HUTCH_E2B_LOG_DIR="${HUTCH_E2B_LOG_DIR:-$(mktemp -d "${TMPDIR:-/tmp}/hutch-e2b-logs.XXXXXX")}"
echo "e2b conformance: guest $bin, guest logs in $HUTCH_E2B_LOG_DIR"

if [[ -n "${CI:-}" && ( "${HUTCH_E2B_SKIP_PY:-0}" == 1 || "${HUTCH_E2B_SKIP_JS:-0}" == 1 ) ]]; then
  fail "HUTCH_E2B_SKIP_PY/HUTCH_E2B_SKIP_JS are for local debugging; CI runs both halves"
fi

status=0
if [[ "${HUTCH_E2B_SKIP_PY:-0}" != 1 ]]; then
  echo "=== Python SDK (e2b $("$venv/bin/python" -c 'import importlib.metadata as m; print(m.version("e2b"))'))"
  (cd "$here/py" && PYTHONDONTWRITEBYTECODE=1 "$venv/bin/python" -m pytest -p no:cacheprovider "$@") || status=1
fi
if [[ "${HUTCH_E2B_SKIP_JS:-0}" != 1 ]]; then
  echo "=== JS SDK (e2b $(node -p 'require(process.argv[1]).version' "$here/node_modules/e2b/package.json"))"
  (cd "$here" && node --test --test-concurrency=1 --test-timeout=120000 js/*.test.mjs) || status=1
fi
if port_busy; then
  echo "e2b conformance: a guest is still listening on $port after the run" >&2
  status=1
fi
exit "$status"
