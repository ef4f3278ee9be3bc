# Shared code for the shell benches (bench/hello.sh, stream.sh, echo.sh,
# tls.sh).
# Source it, after `set -euo pipefail`, with the script's arguments:
#
#   . "$(dirname "$0")/lib.sh" "$@"
#
# It checks the REFERENCE_CHECKOUT argument and sets
#   ref   absolute path of the reference checkout
#   here  absolute path of this project
#   dur   timed run in seconds ($DURATION, default 10)
#   tmp   a temporary directory, removed on exit
#   scheme  http; set it to https before run_wrk for a TLS server
# and installs traps: on exit the running server (if any) is killed by its
# PID; INT and TERM exit with status 130, which runs the same cleanup.
# The caller sets conns (wrk connections) itself.
#
# Call start_server/run_wrk/stop_server in the script's own shell, not in a
# $(...) subshell, or the exit trap cannot see $pid.

if [ -z "${1:-}" ]; then
    echo "usage: bench/$(basename "$0") REFERENCE_CHECKOUT" >&2
    exit 1
fi
ref="$(cd "$1" && pwd)"
here="$(cd "$(dirname "$0")/.." && pwd)"
dur="${DURATION:-10}"
tmp="$(mktemp -d)"
pid=""
port=""
server=""
scheme=http

cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    wait 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# start_server NAME PERL5LIB APP: starts `perl bench/serve.pl APP` with
# PERL5LIB in front, waits up to 10 s for the port it prints, and sets $port
# and $pid. Its stdout/stderr go to $tmp/NAME.port and $tmp/NAME.err. If no
# port appears, shows the server's stderr and exits.
start_server() {
    local name="$1" lib="$2" app="$3" i
    port=""
    server="$name"
    PERL5LIB="$lib${PERL5LIB:+:$PERL5LIB}" perl "$here/bench/serve.pl" "$app" \
        >"$tmp/$name.port" 2>"$tmp/$name.err" &
    pid=$!
    for i in $(seq 1 100); do
        port="$(head -n1 "$tmp/$name.port" 2>/dev/null || true)"
        [ -n "$port" ] && break
        sleep 0.1
    done
    if [ -z "$port" ]; then
        echo "$name server did not start:" >&2
        cat "$tmp/$name.err" >&2
        exit 1
    fi
}

# stop_server: stops the server started by start_server and waits for it.
# If the server is already gone (it died during the run), shows its stderr
# and exits.
stop_server() {
    if ! kill -0 "$pid" 2>/dev/null; then
        echo "$server server died during the run:" >&2
        cat "$tmp/$server.err" >&2
        pid=""
        exit 1
    fi
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
}

# run_wrk NAME [WRK_ARGS...]: a 2 s warm-up, then the timed run of $dur
# seconds against the running server at $scheme://127.0.0.1:$port/, both
# with one thread and $conns connections (WRK_ARGS, e.g. -s script.lua, are
# added to both). The timed run's output goes to $tmp/NAME.wrk; its Non-2xx /
# Socket errors lines, if any, are copied to stderr. The number of TCP
# connections accepted during the timed run goes to $tmp/NAME.opens (see
# counting_opens).
run_wrk() {
    local name="$1"
    shift
    wrk -t1 -c"$conns" -d2s "$@" "$scheme://127.0.0.1:$port/" >/dev/null   # warm-up
    counting_opens "$name" wrk -t1 -c"$conns" -d"${dur}s" "$@" "$scheme://127.0.0.1:$port/" >"$tmp/$name.wrk"
    grep -E "Non-2xx|Socket errors" "$tmp/$name.wrk" | sed "s/^/$name: wrk: /" >&2 || true
}

# counting_opens NAME COMMAND...: runs COMMAND and writes the number of TCP
# connections accepted on this host meanwhile to $tmp/NAME.opens (nothing if
# passive_opens cannot tell).
counting_opens() {
    local name="$1" before after
    shift
    before="$(passive_opens)"
    "$@"
    after="$(passive_opens)"
    if [ -n "$before" ] && [ -n "$after" ]; then
        echo $((after - before)) >"$tmp/$name.opens"
    fi
}

# passive_opens: the kernel's count of accepted TCP connections
# (PassiveOpens in /proc/net/snmp; empty if unavailable). It counts the whole
# network namespace, so other programs' connections add to a difference.
passive_opens() {
    awk '/^Tcp:/ { if (!col) { for (i = 1; i <= NF; i++) if ($i == "PassiveOpens") col = i; next }
                   if (col) print $col }' /proc/net/snmp 2>/dev/null || true
}

# rps NAME: prints the requests/s of the timed run NAME, counting only 2xx
# and 3xx responses (wrk's Requests/sec less its Non-2xx or 3xx share).
rps() {
    awk '/requests in/ { n = $1 } /Non-2xx/ { bad = $NF } /Requests\/sec/ { r = $2 }
         END { printf "%.2f\n", (n > 0 ? r * (n - bad) / n : r) }' "$tmp/$1.wrk"
}

# requests NAME: the number of responses wrk counted in the timed run NAME.
requests() { awk '/requests in/ { print $1 }' "$tmp/$1.wrk"; }

# opens NAME: TCP connections accepted during the timed run NAME (empty if
# not known).
opens() { cat "$tmp/$1.opens" 2>/dev/null || true; }

# wrk_errors NAME: wrk's error counts of the timed run NAME on one line
# ("read 575, non-2xx 3"), nothing if there were none.
wrk_errors() {
    awk '/Socket errors/ { gsub(/,/, ""); for (i = 3; i < NF; i += 2) if ($(i + 1) > 0) out = out (out ? ", " : "") $i " " $(i + 1) }
         /Non-2xx/ { out = out (out ? ", " : "") "non-2xx " $NF }
         END { print out }' "$tmp/$1.wrk"
}

# ratio A B: prints A / B with one decimal ("n/a" if B is zero).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%.1f", a / b }'; }

# mbs RPS SIZE: megabytes per second for RPS requests of SIZE bytes each.
mbs() { awk -v r="$1" -v s="$2" 'BEGIN { printf "%.0f", r * s / 1e6 }'; }

# notes NAME TOOL ERRORS: " [NAME: TOOL ERRORS]", or nothing if ERRORS is
# empty.
notes() { if [ -n "$3" ]; then echo " [$1: $2 $3]"; fi; }

# wait_http NAME WHAT: waits up to 10 s for a server started in the
# background ($pid) to answer on http://127.0.0.1:$port/; if it does not,
# shows $tmp/NAME.err and exits. WHAT names it in the message.
wait_http() {
    local name="$1" what="$2" i
    for i in $(seq 1 100); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$name ($what) did not start:" >&2
    cat "$tmp/$name.err" >&2
    exit 1
}

# stop_tree WHAT: stop_server for a server with worker processes, then
# checks that the workers it had at the end are gone too (killing any
# left).
stop_tree() {
    local what="$1" kids i k left
    kids="$(pgrep -P "$pid" | tr '\n' ' ' || true)"
    stop_server
    for i in $(seq 1 50); do
        left=""
        for k in $kids; do kill -0 "$k" 2>/dev/null && left="$left $k"; done
        [ -z "$left" ] && return 0
        sleep 0.1
    done
    echo "$what workers outlived their master:$left; killing them" >&2
    for k in $left; do kill -9 "$k" 2>/dev/null || true; done
}
