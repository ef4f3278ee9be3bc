#!/usr/bin/env bash
# Request-body throughput: POST of 64 KiB to an app that reads the whole body
# via $receive and echoes it back in one body event, this build against the
# reference PAGI::Server in the same run, each a single process, wrk with one
# thread, keep-alive connections and bench/post64k.lua.
#
#   bench/echo.sh REFERENCE_CHECKOUT      (e.g. a checkout of PAGI-Server)
#   DURATION=10 CONNECTIONS=10 bench/echo.sh ...
#
# Needs wrk, curl and, for the reference, HTTP::Parser::XS
# (apt-get install wrk curl libhttp-parser-xs-perl). Run `make` first.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
conns="${CONNECTIONS:-10}"
size=65536
lua="$here/bench/post64k.lua"

head -c "$size" /dev/urandom >"$tmp/body"

# measure NAME PERL5LIB: checks one echo, then runs the server under wrk with
# the POST script (run_wrk leaves the result in $tmp/NAME.wrk).
measure() {
    local name="$1" got
    start_server "$name" "$2" echo
    # One real check first: the echo must give back exactly the 64 KiB sent.
    got="$(curl -sS --max-time 10 -H 'Expect:' -H 'Content-Type: application/octet-stream' \
        --data-binary "@$tmp/body" -o "$tmp/$name.echo" -w '%{http_code} %{size_download}' \
        "http://127.0.0.1:$port/")"
    if [ "$got" != "200 $size" ] || ! cmp -s "$tmp/body" "$tmp/$name.echo"; then
        echo "$name: echo check failed: expected '200 $size' and the same bytes back, got '$got'" >&2
        cat "$tmp/$name.err" >&2
        exit 1
    fi
    run_wrk "$name" -s "$lua"
    stop_server
}

measure ours "$here/blib/arch:$here/blib/lib"
measure reference "$ref/lib"
ours="$(rps ours)"
theirs="$(rps reference)"
echo "echo 64KiB POST ($conns connections, ${dur}s): this build ${ours} req/s ($(mbs "$ours" "$size") MB/s each way), reference ${theirs} req/s ($(mbs "$theirs" "$size") MB/s each way), ratio $(ratio "$ours" "$theirs")x"
