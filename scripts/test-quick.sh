#!/usr/bin/env bash
# The unit and integration tiers, without root, for quick loops (`make test-quick`): every
# library's and binary's unit tests, and every integration test file except the system tier's.
# By convention a crate's system tier lives in tests/system.rs (root, namespaces, runtimes) and
# tests/*_template.rs (mmdebstrap); descriptor_drift needs the E2B SDK's environment, which
# `make test` prepares. `make test` runs everything.
set -euo pipefail
cd "$(dirname "$0")/.."

targets=()
for f in crates/*/tests/*.rs; do
    name=$(basename "$f" .rs)
    case "$name" in
        system | *_template | descriptor_drift) continue ;;
    esac
    targets+=(--test "$name")
done
# Sorted and unique: two crates may name a test file alike (cargo runs it in both).
mapfile -t targets < <(printf '%s\n' "${targets[@]}" | paste - - | sort -u | tr '\t' '\n')
exec cargo test --workspace --lib --bins "${targets[@]}" "$@"
