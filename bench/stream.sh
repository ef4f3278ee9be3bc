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
. "$(dirname "$0")/lib.sh" "$@"
conns="${CONNECTIONS:-10}"
size=1048576

# measure NAME PERL5LIB: checks one GET, then runs the server under wrk
# (run_wrk leaves the result in $tmp/NAME.wrk).
measure() {
    local name="$1" got
    start_server "$name" "$2" stream
    got="$(curl -sS --max-time 10 -o /dev/null -w '%{http_code} %{size_download}' "http://127.0.0.1:$port/")"
    [ "$got" = "200 $size" ] || { echo "$name: expected '200 $size' from the stream app, got '$got'" >&2; cat "$tmp/$name.err" >&2; exit 1; }
    run_wrk "$name"
    stop_server
}

measure ours "$here/blib/arch:$here/blib/lib"
measure reference "$ref/lib"
ours="$(rps ours)"
theirs="$(rps reference)"
echo "stream 1MiB ($conns connections, ${dur}s): this build ${ours} req/s ($(mbs "$ours" "$size") MB/s), reference ${theirs} req/s ($(mbs "$theirs" "$size") MB/s), ratio $(ratio "$ours" "$theirs")x"
