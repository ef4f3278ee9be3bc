#!/usr/bin/env bash
# HTTPS throughput: this build against the reference PAGI::Server in the
# same run, each a single process serving the hello app with
# ssl => { cert_file, key_file } (a throwaway self-signed RSA 2048 cert made
# here with openssl). Three figures, each with both rates and their ratio:
#
#   keep-alive      wrk, one thread, $CONNECTIONS keep-alive connections:
#                   requests/s once the handshakes are done.
#   new connection  wrk, one thread, $NEW_CONNECTIONS connections, sending
#                   Connection: close, so every request is a new TCP
#                   connection and TLS handshake. wrk keeps each
#                   connection's TLS session and offers it when it
#                   reconnects, so these are resumed handshakes (TLS 1.3
#                   PSK with a fresh key exchange, no certificate
#                   signature) as far as the server's session store lets
#                   them be.
#   full handshake  ab, $FULL_CONNECTIONS concurrent HTTP/1.0 requests
#                   without keep-alive: ab never offers a session, so every
#                   connection is a full handshake with an RSA signature.
#                   Skipped when ab is not installed.
#
# For the two connection figures the kernel's count of accepted TCP
# connections during the run is printed beside the client's request count,
# to show that connections were not reused. The clients' errors (wrk socket
# errors and non-2xx responses, ab failed and non-2xx requests) are printed
# with each figure and left out of the rates. A server that closes the
# connection after Connection: close without saying so in its reply leaves
# wrk to find the close on its next read, which wrk counts as a read error
# before it reconnects; the script notes it when a server's reply lacks the
# header.
#
#   bench/tls.sh REFERENCE_CHECKOUT      (e.g. a checkout of PAGI-Server)
#   DURATION=10 CONNECTIONS=50 NEW_CONNECTIONS=50 FULL_CONNECTIONS=50 bench/tls.sh ...
#
# NEW_CONNECTIONS and FULL_CONNECTIONS default to CONNECTIONS (default 50).
# Needs wrk, curl, openssl, ab and, for the reference, HTTP::Parser::XS and
# IO::Async::SSL (apt-get install wrk curl openssl apache2-utils
# libhttp-parser-xs-perl libio-async-ssl-perl). Run `make` first.
set -euo pipefail
. "$(dirname "$0")/lib.sh" "$@"
ka_conns="${CONNECTIONS:-50}"
new_conns="${NEW_CONNECTIONS:-$ka_conns}"
full_conns="${FULL_CONNECTIONS:-$ka_conns}"
scheme=https
have_ab=""
if command -v ab >/dev/null; then have_ab=1; fi

if ! openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=127.0.0.1 \
    -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>"$tmp/openssl.err"; then
    cat "$tmp/openssl.err" >&2
    exit 1
fi
export PAGI_BENCH_CERT="$tmp/cert.pem" PAGI_BENCH_KEY="$tmp/key.pem"

# run_ab NAME: a 2 s warm-up, then the timed run of $dur seconds with ab,
# $full_conns concurrent requests (-r: a receive error does not stop ab).
# Output in $tmp/NAME.ab, accepted connections in $tmp/NAME.opens.
run_ab() {
    local name="$1" url="$scheme://127.0.0.1:$port/"
    ab -q -r -c "$full_conns" -t 2 -n 1000000 "$url" >/dev/null 2>&1 || true   # warm-up
    counting_opens "$name" ab -q -r -c "$full_conns" -t "$dur" -n $((dur * 50000)) "$url" \
        >"$tmp/$name.ab" 2>"$tmp/$name.ab.err" || {
        echo "$name: ab failed:" >&2
        cat "$tmp/$name.ab.err" >&2
        exit 1
    }
}

# ab_rps NAME: requests/s of the ab run NAME less its failed and non-2xx
# share. ab_requests NAME: its completed requests. ab_errors NAME: its
# failed and non-2xx counts on one line, nothing if none.
ab_rps() {
    awk '/^Complete requests:/ { n = $3 } /^Failed requests:/ { f = $3 } /^Non-2xx responses:/ { x = $3 }
         /^Requests per second:/ { r = $4 }
         END { good = n - f - x; if (good < 0) good = 0; printf "%.2f\n", (n > 0 ? r * good / n : 0) }' "$tmp/$1.ab"
}
ab_requests() { awk '/^Complete requests:/ { print $3 }' "$tmp/$1.ab"; }
ab_errors() {
    awk '/^Failed requests:/ && $3 > 0 { out = "failed " $3 }
         /^ *\(Connect:/ && out { sub(/^ */, ""); out = out " " $0 }
         /^Non-2xx responses:/ { out = out (out ? ", " : "") "non-2xx " $3 }
         /^Write errors:/ && $3 > 0 { out = out (out ? ", " : "") "write errors " $3 }
         END { print out }' "$tmp/$1.ab"
}

# measure NAME PERL5LIB: checks one HTTPS GET, notes whether the server
# answers Connection: close with that header ($tmp/NAME.says_close), then
# runs the three figures: $tmp/NAME-ka.wrk, NAME-new.wrk, NAME-full.ab.
measure() {
    local name="$1" got
    start_server "$name" "$2" hello
    got="$(curl -sS -k --max-time 10 -o /dev/null -w '%{http_code} %{size_download} %{scheme}' \
        "https://127.0.0.1:$port/")" || true
    if [ "${got,,}" != "200 13 https" ]; then
        echo "$name: expected '200 13 https' from the hello app over TLS, got '$got'" >&2
        cat "$tmp/$name.err" >&2
        exit 1
    fi
    curl -sS -k --max-time 10 -o /dev/null -D "$tmp/$name.head" -H 'Connection: close' \
        "https://127.0.0.1:$port/" || true
    if grep -qi '^connection:.*close' "$tmp/$name.head"; then
        echo yes >"$tmp/$name.says_close"
    else
        echo no >"$tmp/$name.says_close"
    fi
    conns="$ka_conns"
    run_wrk "$name-ka"
    conns="$new_conns"
    run_wrk "$name-new" -H 'Connection: close'
    if [ -n "$have_ab" ]; then run_ab "$name-full"; fi
    stop_server
}

# conns_for NAME RUN REQUESTS: "N connections for M requests" for NAME-RUN;
# warns on stderr if fewer connections than requests were accepted, i.e.
# connections were reused.
conns_for() {
    local o n="${3:-0}"
    o="$(opens "$1-$2")"
    if [ -z "$o" ]; then
        echo "$1: ? connections (no /proc/net/snmp) for $n requests"
        return
    fi
    if [ "$o" -lt "$n" ]; then
        echo "$1: WARNING: only $o TCP connections accepted for $n requests: connections were reused" >&2
    fi
    echo "$1: $o connections for $n requests"
}

measure ours "$here/blib/arch:$here/blib/lib"
measure reference "$ref/lib"

ours="$(rps ours-ka)"
theirs="$(rps reference-ka)"
echo "https keep-alive hello (wrk, $ka_conns connections, ${dur}s): this build ${ours} req/s, reference ${theirs} req/s, ratio $(ratio "$ours" "$theirs")x$(notes ours wrk "$(wrk_errors ours-ka)")$(notes reference wrk "$(wrk_errors reference-ka)")"

ours="$(rps ours-new)"
theirs="$(rps reference-new)"
echo "https new connection per request, resumed sessions (wrk Connection: close, $new_conns connections, ${dur}s): this build ${ours} conn/s, reference ${theirs} conn/s, ratio $(ratio "$ours" "$theirs")x$(notes ours wrk "$(wrk_errors ours-new)")$(notes reference wrk "$(wrk_errors reference-new)") ($(conns_for ours new "$(requests ours-new)"); $(conns_for reference new "$(requests reference-new)"))"
for name in ours reference; do
    if [ "$(cat "$tmp/$name.says_close")" = no ]; then
        echo "  note: $name closes after a Connection: close request without sending Connection: close; wrk counts each such close as a read error and reconnects"
    fi
done

if [ -n "$have_ab" ]; then
    ours="$(ab_rps ours-full)"
    theirs="$(ab_rps reference-full)"
    echo "https full handshake per request (ab, $full_conns concurrent, ${dur}s): this build ${ours} conn/s, reference ${theirs} conn/s, ratio $(ratio "$ours" "$theirs")x$(notes ours ab "$(ab_errors ours-full)")$(notes reference ab "$(ab_errors reference-full)") ($(conns_for ours full "$(ab_requests ours-full)"); $(conns_for reference full "$(ab_requests reference-full)"))"
else
    echo "https full handshake per request: skipped (no ab; apt-get install apache2-utils)"
fi
