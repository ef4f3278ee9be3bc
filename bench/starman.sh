# Starman (Debian `starman`) for the shell benches: source it after lib.sh.
#
#   start_starman NAME APP        one master and one worker on a free port
#                                 of 127.0.0.1, serving APP of
#                                 bench/apps.psgi; sets $port and $pid
#   stop_starman                  stops them by PID and checks both are gone
#
# Starman takes no port 0, so a free port is found by binding port 0 first;
# if another program takes it meanwhile, Starman fails to start and the
# bench stops with its stderr. The worker is never replaced during a run
# (Starman's default replaces it every 1,000 requests, which would cost it
# a fork and a fresh start several times a second); Starman runs with its
# own defaults otherwise.

start_starman() {
    local name="$1" app="$2" i
    command -v starman >/dev/null || { echo "starman is not installed (apt-get install starman)" >&2; exit 1; }
    server="$name"
    port="$(perl -MIO::Socket::INET -e 'my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1", LocalPort => 0) or die "$!\n"; print $s->sockport')"
    PAGI_BENCH_APP="$app" starman --workers 1 --max-requests 1000000000 --listen "127.0.0.1:$port" \
        "$here/bench/apps.psgi" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pid=$!
    for i in $(seq 1 100); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$name (starman) did not start:" >&2
    cat "$tmp/$name.err" >&2
    exit 1
}

# The workers to check are those alive at the end.
stop_starman() {
    local kids i k
    kids="$(pgrep -P "$pid" | tr '\n' ' ' || true)"
    stop_server
    for i in $(seq 1 50); do
        local left=""
        for k in $kids; do kill -0 "$k" 2>/dev/null && left="$left $k"; done
        [ -z "$left" ] && return 0
        sleep 0.1
    done
    echo "starman workers outlived their master:$left; killing them" >&2
    for k in $left; do kill -9 "$k" 2>/dev/null || true; done
}
