#!/usr/bin/env bash
# Streaming throughput: GET of a 1 MiB body sent as 16 chunks of 64 KiB,
# each awaited (the `stream` app of bench/serve.pl; for Starman the same
# chunks through the PSGI streaming writer, bench/apps.psgi). This build,
# Starman (one worker) and the reference PAGI::Server take turns in one run,
# ROUNDS times (default 3), each a single process under wrk with one thread
# and keep-alive connections. Prints each round, then the median and the
# spread (min-max) of each server's MB/s and of the ratios within a round.
#
#   bench/stream.sh REFERENCE_CHECKOUT      (e.g. a checkout of PAGI-Server)
#   DURATION=10 CONNECTIONS=10 ROUNDS=3 bench/stream.sh ...
#   BASELINE=/path/to/other/build bench/stream.sh ...
#
# BASELINE: another built checkout of this project (its blib/ is used),
# measured in the same rounds as "baseline": a before/after comparison.
# Needs wrk, starman and, for the reference, HTTP::Parser::XS
# (apt-get install wrk starman libhttp-parser-xs-perl). Run `make` first.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
. "$(dirname "$0")/starman.sh"
conns="${CONNECTIONS:-10}"
rounds="${ROUNDS:-3}"
size=1048576
baseline="${BASELINE:+$(cd "$BASELINE" && pwd)}"

# check NAME: one GET must bring the whole body.
check() {
    local got
    got="$(curl -sS --max-time 10 -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$port/")"
    [ "$got" = "200 $size" ] || { echo "$1: expected '200 $size' from the stream app, got '$got'" >&2; cat "$tmp/$1.err" >&2; exit 1; }
}

# measure NAME PERL5LIB: one PAGI::Server under wrk; its MB/s go to
# $tmp/NAME.mbs.
measure() {
    start_server "$1" "$2" stream
    check "$1"
    run_wrk "$1"
    stop_server
    mbs "$(rps "$1")" "$size" >"$tmp/$1.mbs"
}

measure_starman() {
    start_starman starman stream
    check starman
    run_wrk starman
    stop_starman
    mbs "$(rps starman)" "$size" >"$tmp/starman.mbs"
}

# ratio2 A B: A / B with two decimals.
ratio2() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.2f", a / b }'; }

# summary LABEL VALUES...: median (min-max).
summary() {
    local label="$1"
    shift
    printf '%s\n' "$@" | sort -g | awk -v l="$label" '{ v[NR] = $1 } END {
        printf "%s median %s (%s-%s)\n", l, v[int((NR + 1) / 2)], v[1], v[NR] }'
}

names=(ours)
[ -n "$baseline" ] && names+=(baseline)
names+=(starman reference)
declare -A got
for r in $(seq 1 "$rounds"); do
    line="round $r:"
    for n in "${names[@]}"; do
        case "$n" in
            ours) measure ours "$here/blib/arch:$here/blib/lib" ;;
            baseline) measure baseline "$baseline/blib/arch:$baseline/blib/lib" ;;
            starman) measure_starman ;;
            reference) measure reference "$ref/lib" ;;
        esac
        got[$n]="${got[$n]:-} $(cat "$tmp/$n.mbs")"
        line="$line $n $(cat "$tmp/$n.mbs") MB/s,"
    done
    o="$(cat "$tmp/ours.mbs")"
    got[x_starman]="${got[x_starman]:-} $(ratio2 "$o" "$(cat "$tmp/starman.mbs")")"
    got[x_reference]="${got[x_reference]:-} $(ratio "$o" "$(cat "$tmp/reference.mbs")")"
    [ -n "$baseline" ] && got[x_baseline]="${got[x_baseline]:-} $(ratio2 "$o" "$(cat "$tmp/baseline.mbs")")"
    echo "${line%,}"
done
echo "stream 1MiB as 16 x 64 KiB ($conns connections, ${dur}s, $rounds rounds):"
for n in "${names[@]}"; do
    # shellcheck disable=SC2086
    summary "  $n MB/s" ${got[$n]}
done
# shellcheck disable=SC2086
summary "  this build / Starman" ${got[x_starman]}
# shellcheck disable=SC2086
summary "  this build / reference" ${got[x_reference]}
if [ -n "$baseline" ]; then
    # shellcheck disable=SC2086
    summary "  this build / baseline" ${got[x_baseline]}
fi
