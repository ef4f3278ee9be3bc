# nginx (Debian `nginx`) for bench/compare.sh's CEILING=1: source it after
# lib.sh. nginx runs no Perl; it answers from C what the apps answer, so
# its figures are what this machine and wrk allow any server at all: a
# goal above them cannot be met here, however fast the server.
#
#   start_nginx NAME FIGURE   one worker process on a free port of
#                             127.0.0.1; sets $port and $pid. hello and
#                             close: a fixed 13-byte "Hello, World!"; stream:
#                             a 1 MiB file, by sendfile (nginx's fastest
#                             path); post: not served (nginx has no echo)
#   stop_nginx                stops it by PID and checks its worker is gone
#
# A free port is found by binding port 0 first, as for Starman.

start_nginx() {
    local name="$1" fig="$2" i dir="$tmp/nginx"
    command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] \
        || { echo "nginx is not installed (apt-get install nginx)" >&2; exit 1; }
    server="$name"
    port="$(perl -MIO::Socket::INET -e 'my $s = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1", LocalPort => 0) or die "$!\n"; print $s->sockport')"
    mkdir -p "$dir/www"
    [ -f "$dir/www/stream" ] || head -c 1048576 /dev/zero | tr '\0' x >"$dir/www/stream"
    # Its worker runs as an unprivileged user when started as root.
    chmod a+rx "$tmp" "$dir" "$dir/www"
    chmod a+r "$dir/www/stream"
    cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
master_process on;
pid $dir/nginx.pid;
error_log $dir/error.log;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $dir/body;
    proxy_temp_path $dir/proxy;
    fastcgi_temp_path $dir/fastcgi;
    uwsgi_temp_path $dir/uwsgi;
    scgi_temp_path $dir/scgi;
    keepalive_requests 1000000000;
    server {
        listen 127.0.0.1:$port;
        location = / {
            $( [ "$fig" = stream ] && echo "root $dir/www; try_files /stream =404; sendfile on; tcp_nopush on;" \
                                   || echo "default_type text/plain; return 200 'Hello, World!';" )
        }
    }
}
CONF
    "$(command -v nginx || echo /usr/sbin/nginx)" -c "$dir/nginx.conf" -p "$dir" >"$tmp/$name.out" 2>"$tmp/$name.err" &
    pid=$!
    for i in $(seq 1 100); do
        curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$port/" && return 0
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    echo "$name (nginx) did not start:" >&2
    cat "$tmp/$name.err" "$dir/error.log" >&2 2>/dev/null
    exit 1
}

stop_nginx() {
    local kids i k left
    kids="$(pgrep -P "$pid" | tr '\n' ' ' || true)"
    stop_server
    for i in $(seq 1 50); do
        left=""
        for k in $kids; do kill -0 "$k" 2>/dev/null && left="$left $k"; done
        [ -z "$left" ] && return 0
        sleep 0.1
    done
    echo "nginx workers outlived their master:$left; killing them" >&2
    for k in $left; do kill -9 "$k" 2>/dev/null || true; done
}
