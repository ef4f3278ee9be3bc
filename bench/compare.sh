#!/usr/bin/env bash
# The HTTP/1.1 figures side by side, in one run: this build, the reference
# PAGI::Server and Starman (one worker), each a single serving process,
# under wrk with one thread:
#
#   hello        13-byte response, 50 keep-alive connections
#   close        the same with `Connection: close` (a connection per request)
#   stream       1 MiB as 16 sends of 64 KiB (chunked), 10 connections
#   post         64 KiB POST echoed back, 10 connections
#
# The servers take turns for each figure, ROUNDS times (default 3); the
# summary gives each server's median (min-max) and the ratios of the
# medians. The apps are bench/apps.pl's (PAGI) and bench/apps.psgi's
# (Starman, through bench/starman.sh).
#
#   bench/compare.sh REFERENCE_CHECKOUT
#   DURATION=10 ROUNDS=3 FIGURES="hello close" bench/compare.sh ...
#   CEILING=1 bench/compare.sh ...
#
# It also prints wrk's own CPU time per request against this build: with
# one wrk thread, a million microseconds divided by it is the most any
# server can be asked for.
#
# With CEILING=1, nginx (one worker) takes its turn too, answering hello,
# close and stream from C with no app (bench/nginx.sh): the most that this
# machine and wrk allow any server, measured in the same rounds.
#
# Needs wrk, curl and starman (apt-get install wrk curl starman), nginx for
# CEILING=1, and, for the reference, HTTP::Parser::XS. Run `make` first.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
rounds="${ROUNDS:-3}"
figures="${FIGURES:-hello close stream post}"
. "$(dirname "$0")/starman.sh"
. "$(dirname "$0")/nginx.sh"
servers="ours reference starman"
[ "${CEILING:-0}" = 1 ] && servers="$servers nginx"

head -c 65536 /dev/urandom >"$tmp/body"

# check NAME FIGURE: one real request before the load: the response must
# be what the figure measures.
check() {
    local name="$1" url="http://127.0.0.1:$port/" got
    case "$2" in
    stream) got="$(curl -sS --max-time 10 -o /dev/null -w '%{http_code} %{size_download}' "$url")"
            [ "$got" = "200 1048576" ] ;;
    post)   got="$(curl -sS --max-time 10 -H 'Expect:' --data-binary "@$tmp/body" -o "$tmp/$name.echo" \
                   -w '%{http_code} %{size_download}' "$url")"
            [ "$got" = "200 65536" ] && cmp -s "$tmp/body" "$tmp/$name.echo" ;;
    *)      got="$(curl -sS --max-time 10 -w ' %{http_code}' "$url")"
            [ "$got" = "Hello, World! 200" ] ;;
    esac || { echo "$name: unexpected answer for $2: '$got'" >&2; cat "$tmp/$name.err" >&2; exit 1; }
}

# measure NAME FIGURE: starts NAME's server, checks it, runs wrk (2 s
# warm-up, then $dur s) and leaves the requests/s in $tmp/NAME.FIGURE.r.
measure() {
    local name="$1" fig="$2" app conns=10 args=()
    case "$fig" in
    hello)  app=hello; conns=50 ;;
    close)  app=hello; conns=50; args=(-H 'Connection: close') ;;
    stream) app=stream ;;
    post)   app=echo; args=(-s "$here/bench/post64k.lua") ;;
    *) echo "unknown figure '$fig'" >&2; exit 1 ;;
    esac
    case "$name" in
    ours)      start_server ours "$here/blib/arch:$here/blib/lib" "$app" ;;
    reference) start_server reference "$ref/lib" "$app" ;;
    starman)   start_starman starman "$app" ;;
    nginx)     start_nginx nginx "$fig" ;;
    esac
    check "$name" "$fig"
    wrk -t1 -c"$conns" -d2s "${args[@]}" "http://127.0.0.1:$port/" >/dev/null
    # wrk's own CPU time too (bash's time keyword, user and system).
    { TIMEFORMAT='%U %S'; time wrk -t1 -c"$conns" -d"${dur}s" "${args[@]}" "http://127.0.0.1:$port/" \
        >"$tmp/$name.wrk" 2>"$tmp/$name.wrkerr"; } 2>"$tmp/$name.time"
    grep -E "Non-2xx|Socket errors" "$tmp/$name.wrk" | sed "s/^/$name $fig: wrk: /" >&2 || true
    case "$name" in
    starman) stop_starman ;;
    nginx)   stop_nginx ;;
    *)       stop_server ;;
    esac
    rps "$name" >>"$tmp/$name.$fig.r"
    awk -v t="$(tail -n1 "$tmp/$name.time")" '/requests in/ { split(t, c, " "); if ($1 > 0) printf "%.1f\n", (c[1] + c[2]) * 1e6 / $1 }' \
        "$tmp/$name.wrk" >>"$tmp/$name.$fig.w"
}

# stats FILE: "median min max" of the numbers in FILE.
stats() { sort -g "$1" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)], v[1], v[NR] }'; }

for r in $(seq 1 "$rounds"); do
    for fig in $figures; do
        line="round $r $fig:"
        for name in $servers; do
            # nginx has no echo app.
            [ "$name" = nginx ] && [ "$fig" = post ] && continue
            measure "$name" "$fig"
            line="$line $name $(tail -n1 "$tmp/$name.$fig.r")"
        done
        echo "$line req/s"
    done
done

echo "median (min-max) req/s over $rounds rounds of ${dur}s:"
for fig in $figures; do
    read -r om omin omax <<<"$(stats "$tmp/ours.$fig.r")"
    read -r rm rmin rmax <<<"$(stats "$tmp/reference.$fig.r")"
    read -r sm smin smax <<<"$(stats "$tmp/starman.$fig.r")"
    unit=""
    case "$fig" in
    stream) unit=" = $(mbs "$om" 1048576) / $(mbs "$rm" 1048576) / $(mbs "$sm" 1048576) MB/s" ;;
    post)   unit=" = $(mbs "$om" 65536) / $(mbs "$rm" 65536) / $(mbs "$sm" 65536) MB/s each way" ;;
    esac
    printf '  %-7s this build %s (%s-%s), reference %s (%s-%s), starman %s (%s-%s)%s; %sx reference, %sx starman\n' \
        "$fig" "$om" "$omin" "$omax" "$rm" "$rmin" "$rmax" "$sm" "$smin" "$smax" "$unit" \
        "$(ratio "$om" "$rm")" "$(ratio "$om" "$sm")"
    read -r ow _ _ <<<"$(stats "$tmp/ours.$fig.w")"
    printf '          wrk CPU per request against this build %s us (one wrk thread then answers at most %s req/s)\n' \
        "$ow" "$(awk -v w="$ow" 'BEGIN { printf "%.0f", (w > 0 ? 1e6 / w : 0) }')"
    if [ -s "$tmp/nginx.$fig.r" ]; then
        read -r nm nmin nmax <<<"$(stats "$tmp/nginx.$fig.r")"
        size=""
        [ "$fig" = stream ] && size=" = $(mbs "$nm" 1048576) MB/s"
        printf '          ceiling (nginx, no app) %s (%s-%s)%s = %sx reference, %sx starman; this build is %sx of it\n' \
            "$nm" "$nmin" "$nmax" "$size" "$(ratio "$nm" "$rm")" "$(ratio "$nm" "$sm")" "$(ratio "$om" "$nm")"
    fi
done
