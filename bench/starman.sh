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
    local name="$1" app="$2"
    command -v starman >/dev/null || { echo "starman is not installed (apt-get install starman)" >&2; exit 1; }
    server="$name"
    port="$(perl -MIO::Socket::INET -e 'my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1", LocalPort => 0) or die "$!\n"; print $s->sockport')"
    PAGI_BENCH_APP="$app" starman --workers 1 --max-requests 1000000000 --listen "127.0.0.1:$port" \
        "$here/bench/apps.psgi" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pid=$!
    wait_http "$name" starman
}

stop_starman() { stop_tree starman; }
