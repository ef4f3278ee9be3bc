#!/usr/bin/env bash
# The hostile-input property tests (src/props/) at full strength: each
# property in turn with a million cases, printing its count and time.
# `cargo test` runs the same properties with a small count.
#
#   bench/fuzz.sh                        (1,000,000 cases each)
#   PAGI_FUZZ_CASES=10000 bench/fuzz.sh  (a quicker run)
#   bench/fuzz.sh ws                     (only properties matching "ws")
#
# A failure prints proptest's smallest failing input and ends with status 1.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
cases="${PAGI_FUZZ_CASES:-1000000}"
filter="${1:-}"
cd "$here"

cargo test --release --locked --no-run --quiet 2>/dev/null ||
    cargo test --release --locked --no-run
mapfile -t props < <(cargo test --release --locked --quiet props:: -- --list 2>/dev/null |
    sed -n 's/: test$//p' | grep -v '^props::alloc::' | grep -F -- "$filter" || true)
if [ "${#props[@]}" -eq 0 ]; then
    echo "bench/fuzz.sh: no property matches '$filter'" >&2
    exit 1
fi

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
# seconds_since START_NS: elapsed seconds, one decimal.
seconds_since() {
    local ms=$((($(date +%s%N) - $1) / 1000000))
    printf '%d.%d' $((ms / 1000)) $((ms % 1000 / 100))
}

passed=0
failed=0
total_start=$(date +%s%N)
for p in "${props[@]}"; do
    start=$(date +%s%N)
    if PAGI_FUZZ_CASES="$cases" cargo test --release --locked --quiet "$p" -- --exact \
        --test-threads=1 >"$log" 2>&1; then
        status=ok
        passed=$((passed + 1))
    else
        status=FAILED
        failed=$((failed + 1))
        cat "$log"
    fi
    printf '%-58s %8d cases %8s s  %s\n' "$p" "$cases" "$(seconds_since "$start")" "$status"
done
echo "total $(seconds_since "$total_start") s"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
