#!/usr/bin/env bash
# Installs what building, testing, benchmarking and the demo need on a fresh Debian machine
# (run as root). Idempotent: packages already present are not reinstalled.
set -euo pipefail

need=()
have() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
# python3: the demo agent and the escape tests run it inside the sandbox (which sees only
# the host's /usr). bubblewrap: the benchmark's baseline. runc: the container runtime
# (runsc, the gvisor runtime, below).
# iproute2, nftables, util-linux (nsenter): the network policies (veth pairs and the
# sandbox-side packet filter); procps: test helpers. e2fsprogs (mkfs.ext4): each run's
# scratch filesystem (the disk quota).
# postgresql: spawn-store's tests start a throwaway cluster of their own from its binaries
# (the system's own cluster is not used). openssl, curl: spawnd's TLS test makes a
# certificate and speaks TLS 1.2 and 1.3 to it with a client nobody here wrote; its JWT
# test makes the issuers' Ed25519 keys with openssl; its mutual-TLS test presents client
# certificates with curl --cert and openssl s_client.
# python3-venv: the venv of openapi-spec-validator (below).
# rsyslog: spawn-sinks' syslog test sends to a real rsyslogd it starts with its own
# configuration (UDP and TCP on loopback; the system's own rsyslog is not used).
pkgs=(python3 python3-venv bubblewrap runc procps iproute2 nftables util-linux coreutils ca-certificates e2fsprogs postgresql openssl curl rsyslog)
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

# gVisor: Debian 12's runsc (2022-12) is too old (coreutils' ls and stat fail in it, no
# systrap platform), and spawn refuses it. Debian trixie's (0.0~20240729, statically
# linked, no dependencies) comes from a trixie apt source pinned to that one package:
# every other trixie package has priority -1 and is never installed or upgraded from it.
# Through apt (not a .deb unpacked by hand), the package stays signed, listed by dpkg and
# upgradable with the system's security updates.
runsc_ok() {
  local v
  v=$(dpkg-query -W -f='${Version}' runsc 2>/dev/null) || return 1
  [[ $v =~ ~([0-9]{8}) ]] && ((BASH_REMATCH[1] >= 20240729))
}
if ! runsc_ok; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: runsc (gVisor) 2024-07-29 or newer is missing; run as root" >&2
    exit 1
  fi
  codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
  if [[ $codename == bookworm ]]; then
    cat >/etc/apt/sources.list.d/spawn-trixie.sources <<'SRC'
# Added by spawn's scripts/install-deps.sh for the runsc (gVisor) package only; see
# /etc/apt/preferences.d/spawn-trixie.
Types: deb
URIs: http://deb.debian.org/debian
Suites: trixie
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    cat >/etc/apt/preferences.d/spawn-trixie <<'PIN'
# Nothing comes from trixie but runsc (see /etc/apt/sources.list.d/spawn-trixie.sources).
Package: *
Pin: release n=trixie
Pin-Priority: -1

Package: runsc
Pin: release n=trixie
Pin-Priority: 990
PIN
  fi
  echo "install-deps: installing runsc (gVisor) from Debian ${codename/bookworm/trixie}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends runsc >/dev/null
  runsc_ok || { echo "install-deps: the installed runsc is still older than 2024-07-29" >&2; exit 1; }
fi

# openapi-spec-validator (PyPI, pinned, in a venv of its own under /opt/spawn-tools): spawnd's
# tests check its OpenAPI document with a validator nobody here wrote
# (crates/spawn-server/tests/openapi.rs, which looks for it there).
OPENAPI_VALIDATOR_VERSION=0.9.0
tools=/opt/spawn-tools/venv
if ! "$tools/bin/openapi-spec-validator" --version 2>/dev/null | grep -qx "openapi-spec-validator $OPENAPI_VALIDATOR_VERSION"; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: openapi-spec-validator $OPENAPI_VALIDATOR_VERSION is missing from $tools; run as root" >&2
    exit 1
  fi
  echo "install-deps: installing openapi-spec-validator $OPENAPI_VALIDATOR_VERSION in $tools"
  /usr/bin/python3 -m venv "$tools"
  "$tools/bin/pip" install -q --disable-pip-version-check "openapi-spec-validator==$OPENAPI_VALIDATOR_VERSION"
fi

# The official model SDKs (PyPI, pinned, in a venv of their own under /opt/spawn-tools): the
# model gateway's tests run command agents that talk to it with `anthropic` and `openai`
# inside real sandboxes (crates/spawn-cli/tests/suite/model.rs mounts the venv's
# site-packages read-only into the sandbox). The venv is made from Debian's python3, the
# interpreter the sandbox sees.
ANTHROPIC_SDK_VERSION=2.17.0
OPENAI_SDK_VERSION=3.63.0
sdks=/opt/spawn-tools/model-sdks
if ! "$sdks/bin/python" -c "import anthropic, openai, sys; sys.exit(not (anthropic.__version__ == '$ANTHROPIC_SDK_VERSION' and openai.__version__ == '$OPENAI_SDK_VERSION'))" 2>/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: the anthropic $ANTHROPIC_SDK_VERSION and openai $OPENAI_SDK_VERSION SDKs are missing from $sdks; run as root" >&2
    exit 1
  fi
  echo "install-deps: installing anthropic $ANTHROPIC_SDK_VERSION and openai $OPENAI_SDK_VERSION in $sdks"
  /usr/bin/python3 -m venv "$sdks"
  "$sdks/bin/pip" install -q --disable-pip-version-check "anthropic==$ANTHROPIC_SDK_VERSION" "openai==$OPENAI_SDK_VERSION"
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "install-deps: cargo is not on PATH; install the Rust toolchain (rustup) first" >&2
  exit 1
fi

# The musl target of the installed toolchain (rustup, from static.rust-lang.org): `make
# build` links spawn-init statically against musl (scripts/build-init.sh says why). Without
# it the build warns and links the init against glibc instead (slower under gVisor only).
musl=x86_64-unknown-linux-musl
if [[ $(uname -m) == x86_64 ]] && command -v rustup >/dev/null 2>&1 \
  && ! rustup target list --installed 2>/dev/null | grep -qx "$musl"; then
  echo "install-deps: adding the Rust target $musl (for spawn-init)"
  rustup target add "$musl" >/dev/null \
    || echo "install-deps: WARNING: could not add the Rust target $musl; spawn-init will be linked against glibc" >&2
fi
