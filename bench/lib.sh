# Shared code for the shell benches (bench/hello.sh, stream.sh, echo.sh).
# Source it, after `set -euo pipefail`, with the script's arguments:
#
#   . "$(dirname "$0")/lib.sh" "$@"
#
# It checks the REFERENCE_CHECKOUT argument and sets
#   ref   absolute path of the reference checkout
#   here  absolute path of this project
#   dur   timed run in seconds ($DURATION, default 10)
#   tmp   a temporary directory, removed on exit
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
# If the server is already gone (it died during the run), kill fails and,
# under set -e, the script stops there.
stop_server() {
    kill "$pid"
    wait "$pid" 2>/dev/null || true
    pid=""
}

# run_wrk NAME [WRK_ARGS...]: a 2 s warm-up, then the timed run of $dur
# seconds against the running server, both with one thread and $conns
# connections (WRK_ARGS, e.g. -s script.lua, are added to both). The timed
# run's output goes to $tmp/NAME.wrk; its Non-2xx / Socket errors lines, if
# any, are copied to stderr.
run_wrk() {
    local name="$1"
    shift
    wrk -t1 -c"$conns" -d2s "$@" "http://127.0.0.1:$port/" >/dev/null   # warm-up
    wrk -t1 -c"$conns" -d"${dur}s" "$@" "http://127.0.0.1:$port/" >"$tmp/$name.wrk"
    grep -E "Non-2xx|Socket errors" "$tmp/$name.wrk" | sed "s/^/$name: wrk: /" >&2 || true
}

# rps NAME: prints the requests/s of the timed run NAME.
rps() { awk '/Requests\/sec/ {print $2}' "$tmp/$1.wrk"; }

# ratio A B: prints A / B with one decimal.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", a / b }'; }

# mbs RPS SIZE: megabytes per second for RPS requests of SIZE bytes each.
mbs() { awk -v r="$1" -v s="$2" 'BEGIN { printf "%.0f", r * s / 1e6 }'; }
