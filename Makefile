# Every routine command of the project. `make demo` and `make test` work on a fresh Debian
# machine as root: they install what is missing first.
SHELL := /bin/bash
CARGO ?= cargo
# Where cargo builds: `target/`, or CARGO_TARGET_DIR when it is set.
SPAWN := $(or $(CARGO_TARGET_DIR),target)/release/spawn
export CARGO_TERM_COLOR ?= never

.PHONY: all deps build demo test test-unit test-e2e lint fmt bench fuzz clean

all: build

deps:
	@scripts/install-deps.sh

# spawn-init (PID 1 of the OCI sandboxes) is rebuilt statically linked against musl,
# non-PIE (scripts/build-init.sh): under gVisor, a dynamically linked init loaded through
# the gofer costs more than all else spawn adds, and static glibc's start-up ~8 ms.
build: deps
	$(CARGO) build --release --workspace
	CARGO=$(CARGO) scripts/build-init.sh release
	$(CARGO) build --release --workspace
	scripts/build-init.sh --verify release

demo: build
	@scripts/demo.sh $(SPAWN)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	# The fuzz targets build on stable too: an API change cannot leave them broken.
	$(CARGO) check --manifest-path fuzz/Cargo.toml --bins

fmt:
	$(CARGO) fmt --all

# Unit tests, then the end-to-end suite (real sandboxes; needs root). The suite's sandboxes
# run the init `make build` ships (static, musl): built after cargo's own (dynamic) one,
# over it, before the tests run.
test: deps lint
	$(CARGO) test --workspace --no-run
	CARGO=$(CARGO) scripts/build-init.sh debug
	$(CARGO) test --workspace --no-run
	scripts/build-init.sh --verify debug
	$(CARGO) test --workspace --no-fail-fast

bench: build
	@scripts/install-deps.sh bench
	$(CARGO) run --release -p spawn-bench -- --spawn $(SPAWN)

# Every fuzz target for FUZZ_SECONDS (default 300) each, one at a time, on the installed
# nightly toolchain (cargo-fuzz is installed if missing). Crash inputs, once fixed, go in
# fuzz/regressions/<target>/, which `make test` checks on stable.
fuzz:
	@scripts/fuzz.sh

clean:
	$(CARGO) clean
