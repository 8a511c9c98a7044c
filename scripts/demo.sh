#!/usr/bin/env bash
# `make demo`: run the example agents in native sandboxes (one without network, one
# restricted to one domain through the egress proxy), then show their audit trails; then
# the built-in agent loop offline (a scripted model) in a gVisor sandbox, its audit trail,
# and its replay.
set -euo pipefail
spawn=${1:-${CARGO_TARGET_DIR:-target}/release/spawn}
cd "$(dirname "$0")/.."
export SPAWN_HOME=${SPAWN_HOME:-$PWD/target/demo-home}

out=$(mktemp)
trap 'rm -f "$out"' EXIT

# Prints the audit events of run $1.
audit() {
  echo "== audit events of $1 ($SPAWN_HOME/audit/audit.jsonl)"
  python3 - "$SPAWN_HOME/audit/audit.jsonl" "$1" <<'PY'
import json, sys
path, run = sys.argv[1], sys.argv[2]
keys = ("command", "syscall", "exitCode", "blockedSyscalls", "killReason", "address",
        "decision", "detail", "bytesIn", "connectionsAllowed", "connectionsDenied",
        "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "language", "reason")
for line in open(path):
    e = json.loads(line)
    if e.get("traceId") != run:
        continue
    d = e.get("details", {})
    extra = {k: d[k] for k in keys if k in d}
    print(f'{e["seq"]:>5} {e["eventType"]:<24} {e["resource"]["name"]:<22} {e["action"]:<8} {e["outcome"]:<8} {json.dumps(extra)}')
PY
}

# Runs manifest $1 with --json, shows its output and audit trail; returns its exit code.
demo() {
  echo "== spawn validate -f $1"
  "$spawn" validate -f "$1"
  echo
  echo "== spawn run -f $1 --json"
  set +e
  "$spawn" run -f "$1" --json | tee "$out"
  local code=${PIPESTATUS[0]}
  set -e
  echo "(exit code $code)"
  local run_id
  run_id=$(tail -n 1 "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["runId"])')
  echo
  audit "$run_id"
  return "$code"
}

demo examples/demo/agent.yaml
echo
demo examples/demo/web-agent.yaml

echo
echo "== the built-in agent loop: spawn run -f examples/demo/loop-agent.yaml --json"
set +e
"$spawn" run -f examples/demo/loop-agent.yaml --json | tee "$out"
code=${PIPESTATUS[0]}
set -e
echo "(exit code $code)"
run_id=$(tail -n 1 "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["runId"])')
echo
audit "$run_id"
echo
echo "== spawn replay $run_id"
"$spawn" replay "$run_id"
# The loop's denials are part of the show; its own end is not: it must finish.
if ((code != 0)); then
  echo "demo: the built-in loop ended with exit code $code, not 0" >&2
  exit "$code"
fi
