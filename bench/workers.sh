#!/usr/bin/env bash
# Hello-world throughput of this build with `workers => 1` and `workers => 2`
# (wrk, one thread, 50 keep-alive connections), with the CPU the server's
# processes used (master and workers, all threads) and the CPU wrk used, in
# cores. The two settings take turns, ROUNDS times (default 3).
#
#   bench/workers.sh REFERENCE_CHECKOUT    (as the other benches; unused here)
#   DURATION=10 ROUNDS=3 bench/workers.sh ...
#
# On a 2-core machine the load client needs most of a core, so two workers
# can only show that nothing they share stops them from using the rest.
# Needs wrk. Run `make` first.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
rounds="${ROUNDS:-3}"
conns=50
tick="$(getconf CLK_TCK)"

# cpu_ticks PID...: user + system ticks of these processes (their threads
# included; a process that is gone counts 0).
cpu_ticks() {
    local p total=0 t
    for p in "$@"; do
        t="$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)"
        total=$((total + t))
    done
    echo "$total"
}

# measure WORKERS: one server with that many workers under wrk; writes
# "req/s server-cores wrk-cores" to $tmp/result. (Not in a $(...)
# subshell: the exit trap must see the server's pid.)
measure() {
    local w="$1" procs before after wbefore wafter n
    PAGI_BENCH_WORKERS="$w" start_server "w$w" "$here/blib/arch:$here/blib/lib" hello
    wrk -t1 -c"$conns" -d2s "http://127.0.0.1:$port/" >/dev/null
    procs=("$pid" $(pgrep -P "$pid" || true))
    [ "${#procs[@]}" -eq $((w + 1)) ] || { echo "expected $w workers under $pid, found ${#procs[@]} processes" >&2; exit 1; }
    before="$(cpu_ticks "${procs[@]}")"
    wrk -t1 -c"$conns" -d"${dur}s" "http://127.0.0.1:$port/" >"$tmp/w$w.wrk" &
    local wrk_pid=$!
    sleep 0.2
    wbefore="$(cpu_ticks "$wrk_pid")"
    sleep "$((dur - 1))"
    wafter="$(cpu_ticks "$wrk_pid")"
    wait "$wrk_pid"
    after="$(cpu_ticks "${procs[@]}")"
    stop_server
    n="$(rps "w$w")"
    awk -v n="$n" -v s=$((after - before)) -v c=$((wafter - wbefore)) -v t="$tick" -v d="$dur" \
        'BEGIN { printf "%s %.2f %.2f\n", n, s / t / d, c / t / (d - 1.2) }' >"$tmp/result"
}

for r in $(seq 1 "$rounds"); do
    for w in 1 2; do
        measure "$w"
        read -r n s c <"$tmp/result"
        echo "$n" >>"$tmp/w$w.rps"
        echo "$s" >>"$tmp/w$w.cpu"
        echo "round $r, $w worker(s): $n req/s, server $s cores, wrk $c cores"
    done
done
stats() { sort -g "$1" | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)], v[1], v[NR] }'; }
for w in 1 2; do
    read -r m lo hi <<<"$(stats "$tmp/w$w.rps")"
    read -r cm clo chi <<<"$(stats "$tmp/w$w.cpu")"
    echo "$w worker(s): median $m req/s ($lo-$hi), server CPU $cm cores ($clo-$chi)"
done
