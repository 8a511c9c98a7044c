#!/usr/bin/env bash
# Runs spawn's fuzz targets (fuzz/), one at a time, each for FUZZ_SECONDS (default 300):
#
#     scripts/fuzz.sh                  # every target
#     FUZZ_SECONDS=60 scripts/fuzz.sh tls_hello request_head
#
# Uses the nightly toolchain already installed (rustup toolchain list; FUZZ_TOOLCHAIN to
# choose) and installs cargo-fuzz from crates.io if it is missing. Each target starts from
# its corpus (fuzz/corpus/<target>, kept between runs), its seeds (fuzz/seeds/<target>)
# and every input it ever failed on (fuzz/regressions/<target>, which the owning crate's
# tests also check on stable), with its dictionary if there is one (fuzz/dicts/).
# A failing input is written to fuzz/artifacts/<target>/: fix the bug, then keep the input
# in fuzz/regressions/<target>/. Prints each target's executions; fails if any target did.
set -euo pipefail

cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-300}
if ! [[ $seconds =~ ^[1-9][0-9]*$ ]]; then
    echo "fuzz: FUZZ_SECONDS must be a positive number of seconds, not '$seconds'" >&2
    exit 2
fi

toolchain=${FUZZ_TOOLCHAIN:-$(rustup toolchain list | awk '/^nightly/ { print $1; exit }')}
if [[ -z $toolchain ]]; then
    echo "fuzz: no nightly toolchain installed (rustup toolchain list); cargo-fuzz needs one" >&2
    exit 1
fi
if ! cargo "+$toolchain" fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz from crates.io"
    cargo install --locked cargo-fuzz
fi

# Builds go beside the workspace's (or under fuzz/target): never into the sources.
target_dir=${CARGO_TARGET_DIR:+$CARGO_TARGET_DIR/fuzz}
target_dir=${target_dir:-fuzz/target}

if (($# > 0)); then
    targets=("$@")
else
    mapfile -t targets < <(cargo "+$toolchain" fuzz list)
fi

cargo "+$toolchain" fuzz build --target-dir "$target_dir"

summary=()
failed=0
for t in "${targets[@]}"; do
    corpus=fuzz/corpus/$t
    artifacts=fuzz/artifacts/$t
    mkdir -p "$corpus" "$artifacts"
    inputs=("$corpus")
    for dir in "fuzz/seeds/$t" "fuzz/regressions/$t"; do
        [[ -d $dir ]] && inputs+=("$dir")
    done
    flags=(-max_total_time="$seconds" -print_final_stats=1 -timeout=10 -rss_limit_mb=2048
        -artifact_prefix="$artifacts/")
    [[ -f fuzz/dicts/$t.dict ]] && flags+=(-dict="fuzz/dicts/$t.dict")
    log=$artifacts/last-run.log
    echo "fuzz: $t for ${seconds}s"
    status=ok
    if ! cargo "+$toolchain" fuzz run --target-dir "$target_dir" "$t" "${inputs[@]}" \
        -- "${flags[@]}" >"$log" 2>&1; then
        status=FAILED
        failed=1
        grep -E -A12 'panicked at|ERROR: libFuzzer|SUMMARY' "$log" | head -40 >&2 || true
    fi
    runs=$(awk '/stat::number_of_executed_units/ { print $NF }' "$log")
    rate=$(awk '/stat::average_exec_per_sec/ { print $NF }' "$log")
    summary+=("$(printf '%-14s %-7s %12s executions  %8s/s  (%s)' \
        "$t" "$status" "${runs:-?}" "${rate:-?}" "$log")")
done

echo
printf '%s\n' "${summary[@]}"
exit "$failed"
