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
. "$(dirname "$0")/lib.sh" "$@"
conns="${CONNECTIONS:-50}"

# measure NAME PERL5LIB: runs one server under wrk (run_wrk leaves the result
# in $tmp/NAME.wrk).
measure() {
    start_server "$1" "$2" hello
    run_wrk "$1"
    stop_server
}

measure ours "$here/blib/arch:$here/blib/lib"
measure reference "$ref/lib"
ours="$(rps ours)"
theirs="$(rps reference)"
echo "hello ($conns connections, ${dur}s): this build ${ours} req/s, reference ${theirs} req/s, ratio $(ratio "$ours" "$theirs")x"
