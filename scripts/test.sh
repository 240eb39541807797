#!/usr/bin/env bash
# The whole suite: lint, unit + integration + system tiers (cargo test), then
# the E2B SDK conformance suite against the static guest binary. A missing
# prerequisite fails the run; nothing is skipped silently.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
    echo "test: the system tier needs root (namespaces, cgroups, OCI runtimes, mounts)" >&2
    exit 1
fi
: "${HUTCH_GUEST_STATIC_BIN:?set by make test: the static hutch-guest binary}"

echo "== lint"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings

echo "== E2B SDK environment"
tests/e2b/setup.sh
export HUTCH_E2B_SITE_PACKAGES
HUTCH_E2B_SITE_PACKAGES=$(tests/e2b/.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

echo "== cargo test (unit, integration, system)"
cargo test --workspace --no-fail-fast

echo "== E2B SDK conformance (python, node) against $HUTCH_GUEST_STATIC_BIN"
HUTCH_GUEST_BIN="$HUTCH_GUEST_STATIC_BIN" tests/e2b/run.sh
