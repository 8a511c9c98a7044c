#!/usr/bin/env bash
# Builds spawn-init (PID 1 of the OCI sandboxes) for PROFILE (release or debug), statically
# linked and non-PIE, and puts it where spawn looks for it: next to spawn, in
# $CARGO_TARGET_DIR (or target/)/PROFILE/.
#
# Linked against musl when the x86_64-unknown-linux-musl target is installed
# (scripts/install-deps.sh adds it): under gVisor, static glibc's start-up costs ~8 ms of
# every run (its CPU-feature probing executes a few dozen `cpuid`, each emulated by the
# Sentry; see crates/spawn-init/src/main.rs). Where that target cannot be had, the same
# code against glibc, with a warning: slower under gVisor, the same init otherwise.
#
# `scripts/build-init.sh --verify PROFILE`: fails unless the init there is still this
# build (run after a later cargo build, which may have linked cargo's own there again).
set -euo pipefail
cd "$(dirname "$0")/.."
verify=false
if [[ ${1:-} == --verify ]]; then
  verify=true
  shift
fi
profile=${1:?usage: scripts/build-init.sh [--verify] release|debug}
case $profile in
  release) flag=--release ;;
  debug) flag= ;;
  *) echo "build-init: unknown profile $profile (release or debug)" >&2; exit 2 ;;
esac
cargo=${CARGO:-cargo}
target_dir=${CARGO_TARGET_DIR:-target}
musl=x86_64-unknown-linux-musl
if [[ $(uname -m) == x86_64 ]] && rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
  triple=$musl
else
  triple=$(rustc -vV | sed -n 's/^host: //p')
  $verify || echo "build-init: WARNING: the $musl Rust target is not installed" \
    "(rustup target add $musl): spawn-init is linked against glibc, ~8 ms slower per gVisor run" >&2
fi
out="$target_dir/$profile/spawn-init"
built="$target_dir/$triple/$profile/spawn-init"
if $verify; then
  if ! cmp -s "$built" "$out"; then
    echo "build-init: $out is not the static build $built (a cargo build linked its own there)" >&2
    exit 1
  fi
  exit 0
fi
# An explicit --target builds under target/TRIPLE/, apart from the workspace's own build,
# and RUSTFLAGS then apply to its crates only (not to build scripts).
RUSTFLAGS="-C target-feature=+crt-static -C relocation-model=static" \
  "$cargo" build $flag -p spawn-init --target "$triple"
# Into cargo's own file: target/PROFILE/spawn-init is a hard link to cargo's last build of
# it under deps/, which cargo links there again on every later build with the same
# features (the unit stays fresh: cargo does not look at the binary's content). Writing
# into that file, not replacing it, keeps this build through them; `--verify` after such
# a build checks that it did.
[[ -e $out ]] || { echo "build-init: $out is missing: build the workspace first" >&2; exit 1; }
cat "$built" >"$out"
echo "build-init: $out (static, $triple)"
