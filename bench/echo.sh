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
ref="${1:?usage: bench/echo.sh REFERENCE_CHECKOUT}"
ref="$(cd "$ref" && pwd)"
here="$(cd "$(dirname "$0")/.." && pwd)"
dur="${DURATION:-10}"
conns="${CONNECTIONS:-10}"
size=65536
lua="$here/bench/post64k.lua"
tmp="$(mktemp -d)"
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

head -c "$size" /dev/urandom >"$tmp/body"

# measure NAME PERL5LIB: runs one server under wrk, leaves its requests/s in
# $tmp/NAME.rps. Not run in a subshell, so the EXIT trap sees $pid.
measure() {
    local name="$1" lib="$2" port="" i got
    PERL5LIB="$lib${PERL5LIB:+:$PERL5LIB}" perl "$here/bench/serve.pl" echo >"$tmp/$name.port" 2>"$tmp/$name.err" &
    pid=$!
    for i in $(seq 1 100); do
        port="$(head -n1 "$tmp/$name.port" 2>/dev/null || true)"
        [ -n "$port" ] && break
        sleep 0.1
    done
    [ -n "$port" ] || { echo "$name server did not start:" >&2; cat "$tmp/$name.err" >&2; exit 1; }
    # One real check first: the echo must give back exactly the 64 KiB sent.
    got="$(curl -sS --max-time 10 -H 'Expect:' -H 'Content-Type: application/octet-stream' \
        --data-binary "@$tmp/body" -o "$tmp/$name.echo" -w '%{http_code} %{size_download}' \
        "http://127.0.0.1:$port/")"
    if [ "$got" != "200 $size" ] || ! cmp -s "$tmp/body" "$tmp/$name.echo"; then
        echo "$name: echo check failed: expected '200 $size' and the same bytes back, got '$got'" >&2
        cat "$tmp/$name.err" >&2
        exit 1
    fi
    wrk -t1 -c"$conns" -d2s -s "$lua" "http://127.0.0.1:$port/" >/dev/null   # warm-up
    wrk -t1 -c"$conns" -d"${dur}s" -s "$lua" "http://127.0.0.1:$port/" >"$tmp/$name.wrk"
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
echo "echo 64KiB POST ($conns connections, ${dur}s): this build ${ours} req/s ($(mbs "$ours") MB/s each way), reference ${theirs} req/s ($(mbs "$theirs") MB/s each way), ratio ${ratio}x"
