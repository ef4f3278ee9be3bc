#!/usr/bin/env bash
# SSE and WebSocket throughput: this build against the reference
# PAGI::Server in the same run, each a single process, driven by
# bench/loadgen (a one-thread Rust client, so the figure is the server's):
#
#   sse  events per second on one SSE stream (64-byte events, the app
#        awaiting each sse.send)
#   ws   WebSocket echo round trips per second, 50 clients each sending a
#        64-byte text message and waiting for its echo
#
# The two servers take turns, ROUNDS times (default 3), and the ratios are
# given as median (min-max) of the rounds.
#
#   bench/sse-ws.sh REFERENCE_CHECKOUT
#   DURATION=10 ROUNDS=3 CLIENTS=50 bench/sse-ws.sh ...
#
# Needs cargo (to build bench/loadgen). Run `make` first.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
rounds="${ROUNDS:-3}"
clients="${CLIENTS:-50}"
cargo build --quiet --release --locked --manifest-path "$here/bench/loadgen/Cargo.toml"
load="$here/bench/loadgen/target/release/pagi-loadgen"

# run NAME PERL5LIB APP ARGS...: one server, one load run (PORT in ARGS
# becomes the server's port); the rate goes to $tmp/NAME.rate. (Not in a
# $(...) subshell: the exit trap must see the server's pid.)
run() {
    local name="$1" lib="$2" app="$3"
    shift 3
    start_server "$name" "$lib" "$app"
    local args=("$@")
    "$load" "${args[@]/#PORT/$port}" >"$tmp/$name.out"
    stop_server
    awk '{ for (i = 1; i < NF; i++) if ($i == "rate") print $(i + 1) }' "$tmp/$name.out" >"$tmp/$name.rate"
}

# summary LABEL RATIOS...: median (min-max) of the ratios.
summary() {
    local label="$1"
    shift
    printf '%s\n' "$@" | sort -g | awk -v l="$label" '{ v[NR] = $1 } END {
        printf "%s: ratio median %.1fx (%.1f-%.1f)\n", l, v[int((NR + 1) / 2)], v[1], v[NR] }'
}

sse_ratios=()
ws_ratios=()
for r in $(seq 1 "$rounds"); do
    run ours "$here/blib/arch:$here/blib/lib" sse sse PORT / "$dur"
    run reference "$ref/lib" sse sse PORT / "$dur"
    ours="$(cat "$tmp/ours.rate")" theirs="$(cat "$tmp/reference.rate")"
    echo "round $r sse: this build $ours events/s, reference $theirs events/s"
    sse_ratios+=("$(ratio "$ours" "$theirs")")
    run ours "$here/blib/arch:$here/blib/lib" wsecho ws PORT / "$clients" "$dur" 64
    run reference "$ref/lib" wsecho ws PORT / "$clients" "$dur" 64
    ours="$(cat "$tmp/ours.rate")" theirs="$(cat "$tmp/reference.rate")"
    echo "round $r ws:  this build $ours echoes/s, reference $theirs echoes/s"
    ws_ratios+=("$(ratio "$ours" "$theirs")")
done
summary "sse events/s (one stream, ${dur}s)" "${sse_ratios[@]}"
summary "ws echo/s ($clients clients, ${dur}s)" "${ws_ratios[@]}"
