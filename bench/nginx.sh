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
    local name="$1" fig="$2" dir="$tmp/nginx"
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
error_log stderr;
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
    wait_http "$name" nginx
}

stop_nginx() { stop_tree nginx; }
