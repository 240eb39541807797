# Hutch: the two commands of the README are `make run` and `make test`.
SHELL := /bin/bash
.DEFAULT_GOAL := help

HOST_TARGET := $(shell rustc -vV | sed -n 's/^host: //p')
# The guest runs in any root filesystem (even bare busybox), so it is linked
# statically against glibc; the musl target is not installable here.
GUEST_BIN := target/$(HOST_TARGET)/guest/hutch-guest
DATA_DIR ?= /var/lib/hutch
LISTEN ?= 127.0.0.1:8080

.PHONY: help setup build guest run test test-quick bench fmt lint fuzz

help:
	@echo "make run    install what Hutch needs, build, start hutch serve"
	@echo "make test   install what the tests need, run every test tier"
	@echo "make bench  measure and rewrite BENCHMARKS.md"
	@echo "make test-quick  unit and integration tiers only, no root needed"

setup:
	@scripts/setup.sh

guest:
	RUSTFLAGS="-C target-feature=+crt-static" cargo build --profile guest -p hutch-guest --target $(HOST_TARGET)
	@file $(GUEST_BIN) | grep -Eq "static(-pie)? linked" || { echo "$(GUEST_BIN) is not static" >&2; exit 1; }

build: guest
	cargo build --release -p hutch

run: setup build
	HUTCH_GUEST_BIN=$(GUEST_BIN) target/release/hutch serve --listen $(LISTEN) --data-dir $(DATA_DIR)

test: setup guest
	HUTCH_GUEST_STATIC_BIN=$(abspath $(GUEST_BIN)) scripts/test.sh

# The unit and integration tiers (no root, no runtimes): for quick loops while developing.
test-quick:
	scripts/test-quick.sh

bench: setup guest
	HUTCH_GUEST_STATIC_BIN=$(abspath $(GUEST_BIN)) scripts/bench.sh

fmt:
	cargo fmt --all

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

# Coverage-guided fuzzing of the guest's request decoders (cargo-fuzz needs
# nightly features; RUSTC_BOOTSTRAP lets this machine's stable toolchain
# provide them). FUZZ_SECONDS bounds the run.
FUZZ_SECONDS ?= 60
fuzz:
	command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
	cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run envd_decoders corpus/envd_decoders -- -max_total_time=$(FUZZ_SECONDS)
