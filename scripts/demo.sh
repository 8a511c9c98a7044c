#!/usr/bin/env bash
# `make demo`: run the example agent in a native sandbox, then show its audit trail.
set -euo pipefail
spawn=${1:-target/release/spawn}
cd "$(dirname "$0")/.."
export SPAWN_HOME=${SPAWN_HOME:-$PWD/target/demo-home}
manifest=examples/demo/agent.yaml

echo "== spawn validate -f $manifest"
"$spawn" validate -f "$manifest"
echo
echo "== spawn run -f $manifest --json"
out=$(mktemp)
trap 'rm -f "$out"' EXIT
set +e
"$spawn" run -f "$manifest" --json | tee "$out"
code=${PIPESTATUS[0]}
set -e
echo "(exit code $code)"
run_id=$(tail -n 1 "$out" | python3 -c 'import json,sys; print(json.load(sys.stdin)["runId"])')
echo
echo "== audit events of $run_id ($SPAWN_HOME/audit/audit.jsonl)"
python3 - "$SPAWN_HOME/audit/audit.jsonl" "$run_id" <<'PY'
import json, sys
path, run = sys.argv[1], sys.argv[2]
for line in open(path):
    e = json.loads(line)
    if e.get("traceId") != run:
        continue
    d = e.get("details", {})
    extra = {k: d[k] for k in ("command", "syscall", "exitCode", "blockedSyscalls", "killReason") if k in d}
    print(f'{e["seq"]:>5} {e["eventType"]:<26} {e["resource"]["name"]:<10} {e["outcome"]:<8} {json.dumps(extra)}')
PY
exit "$code"
