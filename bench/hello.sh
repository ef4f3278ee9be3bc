#!/usr/bin/env bash
# Hello-world throughput: this build against the reference PAGI::Server, in
# the same run, each a single process, wrk with 50 keep-alive connections.
#
#   bench/hello.sh REFERENCE_CHECKOUT      (e.g. a checkout of PAGI-Server)
#   DURATION=10 CONNECTIONS=50 bench/hello.sh ...
#
# Needs wrk and, for the reference, HTTP::Parser::XS
# (apt-get install wrk libhttp-parser-xs-perl). Run `make` first.
set -euo pipefail
ref="${1:?usage: bench/hello.sh REFERENCE_CHECKOUT}"
ref="$(cd "$ref" && pwd)"
here="$(cd "$(dirname "$0")/.." && pwd)"
dur="${DURATION:-10}"
conns="${CONNECTIONS:-50}"
tmp="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT

# measure NAME PERL5LIB: prints requests/s of one server under wrk.
measure() {
    local name="$1" lib="$2" port="" i
    PERL5LIB="$lib${PERL5LIB:+:$PERL5LIB}" perl "$here/bench/serve.pl" >"$tmp/$name.port" 2>"$tmp/$name.err" &
    pid=$!
    for i in $(seq 1 100); do
        port="$(head -n1 "$tmp/$name.port" 2>/dev/null || true)"
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { echo "$name server did not start:" >&2; cat "$tmp/$name.err" >&2; exit 1; }
    wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$port/" >/dev/null   # warm-up
    wrk -t1 -c"$conns" -d"${dur}s" "http://127.0.0.1:$port/" >"$tmp/$name.wrk"
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    awk '/Requests\/sec/ {print $2}' "$tmp/$name.wrk"
}

ours="$(measure ours "$here/blib/arch:$here/blib/lib")"
theirs="$(measure reference "$ref/lib")"
ratio="$(awk -v a="$ours" -v b="$theirs" 'BEGIN { printf "%.1f", a / b }')"
echo "hello ($conns connections, ${dur}s): this build ${ours} req/s, reference ${theirs} req/s, ratio ${ratio}x"
