#!/usr/bin/env bash
# HTTP/2 throughput, in one run: this build's h2c and h2 (over TLS) hello
# figures with h2load, beside this build's own HTTP/1.1 keep-alive figure
# and the reference's HTTPS/1.1 keep-alive figure (the reference serves h2
# only through Net::HTTP2::nghttp2, which Debian does not package).
#
#   h2c             h2load, $H2_CLIENTS connections x $H2_STREAMS streams
#                   each (-c10 -m10), cleartext prior knowledge
#   http/1.1        wrk, one thread, $CONNECTIONS keep-alive connections
#                   (the figure bench/hello.sh gives), and h2load --h1 with
#                   $H2_CLIENTS connections (the same client as for h2c)
#   h2 over TLS     h2load as for h2c, ALPN h2
#   reference TLS   wrk over HTTPS/1.1 as for http/1.1
#
# Printed: each rate, h2c / http/1.1 (the goal: at least 1) and
# h2 TLS / reference HTTPS (the goal: at least 5).
#
#   bench/h2.sh REFERENCE_CHECKOUT     (e.g. a checkout of PAGI-Server)
#   DURATION=10 CONNECTIONS=50 H2_CLIENTS=10 H2_STREAMS=10 bench/h2.sh ...
#
# Needs h2load (nghttp2-client), wrk, curl, openssl and, for the reference,
# HTTP::Parser::XS and IO::Async::SSL. Run `make` first.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
conns="${CONNECTIONS:-50}"
h2c="${H2_CLIENTS:-10}"
h2m="${H2_STREAMS:-10}"
command -v h2load >/dev/null || { echo "h2load not found (apt-get install nghttp2-client)" >&2; exit 1; }

if ! openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>"$tmp/openssl.err"; then
    cat "$tmp/openssl.err" >&2
    exit 1
fi

# run_h2load NAME [H2LOAD_ARGS...]: a 2 s warm-up, then $dur seconds of
# h2load ($H2_CLIENTS connections, $H2_STREAMS streams each unless the
# arguments say otherwise) against the running server; output in
# $tmp/NAME.h2load.
run_h2load() {
    local name="$1" url="$scheme://127.0.0.1:$port/"
    shift
    h2load -c "$h2c" -m "$h2m" "$@" -D 2 "$url" >/dev/null 2>&1 || true
    h2load -c "$h2c" -m "$h2m" "$@" -D "$dur" "$url" >"$tmp/$name.h2load" 2>&1 || {
        echo "$name: h2load failed:" >&2
        cat "$tmp/$name.h2load" >&2
        exit 1
    }
    if ! grep -q "^requests:.* 0 failed, 0 errored" "$tmp/$name.h2load"; then
        grep "^requests:\|^status codes:" "$tmp/$name.h2load" | sed "s/^/$name: h2load: /" >&2
    fi
}

# h2_rps NAME: 2xx responses per second of the h2load run NAME.
h2_rps() {
    awk '/^finished in/ { for (i = 1; i <= NF; i++) if ($i ~ /^[0-9.]+ms,$/ || $i ~ /^[0-9.]+s,$/) { t = $i; ms = (t ~ /ms,$/); sub(/m?s,$/, "", t); secs = ms ? t / 1000 : t } }
         /^status codes:/ { ok = $3 }
         END { printf "%.2f\n", (secs > 0 ? ok / secs : 0) }' "$tmp/$1.h2load"
}

# The h2c and HTTP/1.1 figures of this build, then h2 over TLS.
PAGI_BENCH_HTTP2=1 start_server ours-h2c "$here/blib/arch:$here/blib/lib" hello
if [ "$(curl -sS --http2-prior-knowledge --max-time 10 -o /dev/null -w '%{http_version}' "http://127.0.0.1:$port/")" != 2 ]; then
    echo "this build did not answer h2c" >&2
    exit 1
fi
run_h2load ours-h2c
run_wrk ours-h1
run_h2load ours-h1-h2load --h1 -m 1
stop_server

export PAGI_BENCH_CERT="$tmp/cert.pem" PAGI_BENCH_KEY="$tmp/key.pem"
scheme=https
PAGI_BENCH_HTTP2=1 start_server ours-h2 "$here/blib/arch:$here/blib/lib" hello
run_h2load ours-h2
stop_server

start_server reference "$ref/lib" hello
run_wrk reference-https
stop_server

h2c_rate="$(h2_rps ours-h2c)"
h1_rate="$(rps ours-h1)"
h1_same="$(h2_rps ours-h1-h2load)"
h2_rate="$(h2_rps ours-h2)"
ref_rate="$(rps reference-https)"
echo "h2c hello (h2load -c$h2c -m$h2m, ${dur}s): ${h2c_rate} req/s; this build's HTTP/1.1 keep-alive (wrk, $conns connections): ${h1_rate} req/s; ratio $(ratio "$h2c_rate" "$h1_rate")x$(notes ours-h1 wrk "$(wrk_errors ours-h1)")"
echo "  same client: HTTP/1.1 keep-alive (h2load --h1 -c$h2c): ${h1_same} req/s; h2c / that $(ratio "$h2c_rate" "$h1_same")x"
echo "h2 over TLS hello (h2load -c$h2c -m$h2m, ${dur}s): ${h2_rate} req/s; reference HTTPS/1.1 keep-alive (wrk, $conns connections): ${ref_rate} req/s; ratio $(ratio "$h2_rate" "$ref_rate")x$(notes reference wrk "$(wrk_errors reference-https)")"
