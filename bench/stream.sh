#!/usr/bin/env bash
# Streaming throughput: GET of a 1 MiB body that the app sends as 16
# http.response.body events of 64 KiB (awaiting each $send), this build
# against the reference PAGI::Server in the same run, each a single process,
# wrk with one thread and keep-alive connections.
#
#   bench/stream.sh REFERENCE_CHECKOUT      (e.g. a checkout of PAGI-Server)
#   DURATION=10 CONNECTIONS=10 bench/stream.sh ...
#
# Needs wrk and, for the reference, HTTP::Parser::XS
# (apt-get install wrk libhttp-parser-xs-perl). Run `make` first.
set -euo pipefail
ref="${1:?usage: bench/stream.sh REFERENCE_CHECKOUT}"
ref="$(cd "$ref" && pwd)"
here="$(cd "$(dirname "$0")/.." && pwd)"
dur="${DURATION:-10}"
conns="${CONNECTIONS:-10}"
size=1048576
tmp="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# measure NAME PERL5LIB: runs one server under wrk, leaves its requests/s in
# $tmp/NAME.rps. Not run in a subshell, so the EXIT trap sees $pid.
measure() {
    local name="$1" lib="$2" port="" i got
    PERL5LIB="$lib${PERL5LIB:+:$PERL5LIB}" perl "$here/bench/serve.pl" stream >"$tmp/$name.port" 2>"$tmp/$name.err" &
    pid=$!
    for i in $(seq 1 100); do
        port="$(head -n1 "$tmp/$name.port" 2>/dev/null || true)"
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { echo "$name server did not start:" >&2; cat "$tmp/$name.err" >&2; exit 1; }
    got="$(curl -sS --max-time 10 -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$port/")"
    [ "$got" = "200 $size" ] || { echo "$name: expected '200 $size' from the stream app, got '$got'" >&2; cat "$tmp/$name.err" >&2; exit 1; }
    wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$port/" >/dev/null   # warm-up
    wrk -t1 -c"$conns" -d"${dur}s" "http://127.0.0.1:$port/" >"$tmp/$name.wrk"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    grep -E "Non-2xx|Socket errors" "$tmp/$name.wrk" | sed "s/^/$name: wrk: /" >&2 || true
    awk '/Requests\/sec/ {print $2}' "$tmp/$name.wrk" >"$tmp/$name.rps"
}

mbs() { awk -v r="$1" -v s="$size" 'BEGIN { printf "%.0f", r * s / 1e6 }'; }

measure ours "$here/blib/arch:$here/blib/lib"
measure reference "$ref/lib"
ours="$(cat "$tmp/ours.rps")"
theirs="$(cat "$tmp/reference.rps")"
ratio="$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.1f", a / b }')"
echo "stream 1MiB ($conns connections, ${dur}s): this build ${ours} req/s ($(mbs "$ours") MB/s), reference ${theirs} req/s ($(mbs "$theirs") MB/s), ratio ${ratio}x"
