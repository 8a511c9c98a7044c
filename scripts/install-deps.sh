#!/usr/bin/env bash
# Installs what building, testing, benchmarking and the demo need on a fresh Debian machine
# (run as root). Idempotent: packages already present are not reinstalled.
set -euo pipefail

need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
# python3: the demo agent and the escape tests run it inside the sandbox (which sees only
# the host's /usr). bubblewrap: the benchmark's baseline. runc, runsc: the container and
# gvisor runtimes.
# iproute2, nftables, util-linux (nsenter): the network policies (veth pairs and the
# sandbox-side packet filter); procps: test helpers.
pkgs=(python3 bubblewrap runc runsc procps iproute2 nftables util-linux coreutils ca-certificates)
# `install-deps.sh bench`: also the egress proxy benchmark's load generator and baselines
# (wrk, Debian's squid, curl).
if [[ ${1:-} == bench ]]; then
  pkgs+=(wrk squid curl)
fi
for pkg in "${pkgs[@]}"; do
  have "$pkg" || need+=("$pkg")
done
if ((${#need[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing packages ${need[*]}; run as root or install them" >&2
    exit 1
  fi
  echo "install-deps: installing ${need[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo is not on PATH; install the Rust toolchain (rustup) first" >&2
  exit 1
fi
