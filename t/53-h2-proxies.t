use strict;
use warnings;

# HTTP/2 behind real reverse proxies: our server (http2 => 1 on a plain
# listener) as the h2c upstream of Caddy (reverse_proxy h2c://...) and of
# HAProxy (server ... proto h2). Through each proxy, 1,000 requests (GETs
# and POSTs with bodies) from 20 keep-alive HTTP/1.1 clients at once must
# all come back 200 with the body for their own request, the app must see
# every one of them as HTTP/2, and the proxy must multiplex them over a few
# upstream connections (the app reports the client port it saw; distinct
# ports = distinct upstream connections). Then a WebSocket echo through
# each proxy. Caddy 2.6's h2c transport refuses an Upgrade request (it
# answers 502, logging "http2: invalid Upgrade request header") and has no
# extended CONNECT, so its WebSocket route reaches the same http2-enabled
# listener over HTTP/1.1; HAProxy carries the WebSocket over its h2
# connection as an extended CONNECT (RFC 8441), close handshake included.
#
# Caddy and HAProxy cannot listen on port 0 and report it, so their ports
# are found free just before they start. Every process is stopped by PID,
# and every wait is bounded.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Spec;
use File::Temp qw(tempdir);
use Future::AsyncAwait;
use HTTP::Tiny;
use POSIX ();
use Time::HiRes qw(sleep time);
use ExtProc qw(free_port which wait_port ws_open ws_send_text ws_read ws_close);
use ProcTest qw(start_cmd stop_cmd cmd_output alive);

my %have = map { $_ => which($_) } qw(caddy haproxy);
BEGIN {
    # TLSTest (the forked server) needs it, although nothing here is TLS.
    skip_all('IO::Socket::SSL is not installed') unless eval { require IO::Socket::SSL; 1 };
}
skip_all('neither caddy nor haproxy is installed') unless grep { $_ } values %have;
use TLSTest qw(serve stop_server server_log run_cmd);

my $HAVE_WS = eval { require Protocol::WebSocket::Frame; require Protocol::WebSocket::Handshake::Client; 1 };

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "53-h2-proxies.t: overall time limit reached\n" };
alarm 300;

my $REQUESTS    = 1000;
my $CLIENTS     = 20;
my $MAX_UPSTREAM = 10;

my $dir = tempdir(CLEANUP => 1);

# The app: HTTP answers "pong METHOD PATH BODY" with the client port and
# HTTP version the server saw in headers; a WebSocket says hello (with the
# HTTP version it came over) and echoes every message.
my $app = async sub {
    my ($scope, $receive, $send) = @_;
    my $seen = sprintf('HTTP/%s from port %s', $scope->{http_version} // '?', $scope->{client}[1] // '?');
    if ($scope->{type} eq 'websocket') {
        my $ev = await $receive->();
        return unless $ev->{type} eq 'websocket.connect';
        await $send->({ type => 'websocket.accept' });
        await $send->({ type => 'websocket.send', text => "hello $seen" });
        while (1) {
            $ev = await $receive->();
            return unless $ev->{type} eq 'websocket.receive';
            await $send->({ type => 'websocket.send',
                (exists $ev->{text} ? (text => $ev->{text}) : (bytes => $ev->{bytes})) });
        }
    }
    return unless $scope->{type} eq 'http';
    my $in = '';
    while (1) {
        my $ev = await $receive->();
        return unless $ev->{type} eq 'http.request';
        $in .= $ev->{body} // '';
        last unless $ev->{more};
    }
    my $body = "pong $scope->{method} $scope->{path} $in";
    await $send->({ type => 'http.response.start', status => 200, headers => [
        [ 'content-type', 'text/plain' ], [ 'content-length', length $body ],
        [ 'x-client-port', $scope->{client}[1] // '' ], [ 'x-http-version', $scope->{http_version} // '' ],
    ] });
    await $send->({ type => 'http.response.body', body => $body });
};

# $CLIENTS forked keep-alive clients share $REQUESTS requests to
# 127.0.0.1:$port (every third one a POST with a body). Returns a hash:
# ok (200 with the right body), bad (descriptions of the others, the first
# few), upstream (distinct x-client-port values => count), versions
# (x-http-version => count), done (results that came back at all).
sub load {
    my ($port, $tag) = @_;
    my $out = File::Spec->catfile($dir, "load-$tag");
    my @pids;
    for my $k (0 .. $CLIENTS - 1) {
        my $pid = fork // die "fork: $!";
        if (!$pid) {
            alarm 120;
            open my $fh, '>', "$out.$k" or POSIX::_exit(1);
            my $http = HTTP::Tiny->new(keep_alive => 1, timeout => 15);
            for (my $i = $k; $i < $REQUESTS; $i += $CLIENTS) {
                my $path = "/r/$i";
                my $post = $i % 3 == 0;
                my $sent = $post ? "data-$i-" . ('z' x ($i % 50)) : '';
                my $res = $post
                    ? $http->request('POST', "http://127.0.0.1:$port$path",
                        { content => $sent, headers => { 'content-type' => 'text/plain' } })
                    : $http->get("http://127.0.0.1:$port$path");
                my $want = sprintf('pong %s %s %s', $post ? 'POST' : 'GET', $path, $sent);
                my $ok = $res->{status} == 200 && $res->{content} eq $want ? 1 : 0;
                (my $got = substr($res->{content} // '', 0, 80)) =~ s/[\t\n]/ /g;
                printf {$fh} "%d\t%d\t%d\t%s\t%s\t%s\n", $i, $ok, $res->{status},
                    $res->{headers}{'x-client-port'} // '-', $res->{headers}{'x-http-version'} // '-', $got;
            }
            close $fh;
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    my $deadline = time + 150;
    my %left = map { $_ => 1 } @pids;
    while (%left && time < $deadline) {
        for my $pid (keys %left) {
            delete $left{$pid} if waitpid($pid, POSIX::WNOHANG()) == $pid;
        }
        sleep 0.05 if %left;
    }
    for my $pid (keys %left) { kill KILL => $pid; waitpid $pid, 0 }
    my %r = (ok => 0, done => 0, bad => [], upstream => {}, versions => {}, stuck => scalar keys %left);
    for my $k (0 .. $CLIENTS - 1) {
        open my $fh, '<', "$out.$k" or next;
        while (my $line = <$fh>) {
            chomp $line;
            my ($i, $ok, $status, $cport, $ver, $got) = split /\t/, $line, 6;
            $r{done}++;
            $r{ok} += $ok;
            push @{ $r{bad} }, "request $i: status $status, body '$got'" if !$ok && @{ $r{bad} } < 5;
            $r{upstream}{$cport}++ if $cport ne '-';
            $r{versions}{$ver}++;
        }
    }
    return \%r;
}

sub load_ok {
    my ($port, $tag) = @_;
    my $t0 = time;
    my $r = load($port, $tag);
    note(sprintf('%s: %d requests in %.1f s, upstream connections seen by the app: %d (%s)', $tag, $r->{done},
        time - $t0, scalar keys %{ $r->{upstream} }, join(', ', map { "$_ x$r->{upstream}{$_}" } sort keys %{ $r->{upstream} })));
    is($r->{stuck}, 0, 'every client finished in time');
    is($r->{done}, $REQUESTS, "all $REQUESTS requests were answered");
    is($r->{ok}, $REQUESTS, "all $REQUESTS got 200 with the body for their own request")
        or diag(join "\n", @{ $r->{bad} });
    is($r->{versions}, { 2 => $REQUESTS }, 'the app saw every request as HTTP/2');
    my $n = keys %{ $r->{upstream} };
    ok($n >= 1 && $n <= $MAX_UPSTREAM,
        "$CLIENTS concurrent clients were multiplexed over $n upstream connection(s) (at most $MAX_UPSTREAM)");
    return $r;
}

# A WebSocket through $port at $path: the hello names the HTTP version the
# app saw; two messages are echoed; the close handshake completes.
sub ws_echo_ok {
    my ($port, $path, $want_version) = @_;
    my $ws = ws_open($port, $path, 10);
    is($ws->{status}, 101, "WebSocket upgrade of $path answered 101") or return diag($ws->{error});
    my $hello = ws_read($ws, 10);
    like($hello->{data} // '', qr/\Ahello HTTP\/\Q$want_version\E from port [0-9]+\z/,
        "the app accepted it, reached over HTTP/$want_version") or diag(explain($hello));
    for my $msg ('first message', 'second ' . ('m' x 60_000)) {
        ok(ws_send_text($ws, $msg), 'message sent');
        my $echo = ws_read($ws, 10);
        is($echo->{type} // $echo->{end}, 'text', 'a text message came back');
        ok(($echo->{data} // '') eq $msg, sprintf('echoed intact (%d bytes)', length $msg));
    }
    is(ws_close($ws, 10), 1000, 'close handshake: the app closed with 1000');
}

# One keep-alive client, $n requests one after the other: how many took
# longer than $slow seconds. A response whose END_STREAM comes in a frame
# of its own after the last DATA frame is held back by HAProxy (it sends
# with MSG_MORE while the stream is open) until the kernel's 200 ms cork
# timer, so each such response costs 200 ms here.
sub serial_slow {
    my ($port, $n, $slow) = @_;
    my $http = HTTP::Tiny->new(keep_alive => 1, timeout => 15);
    my ($bad, @slow) = (0);
    for my $i (1 .. $n) {
        my $t0 = time;
        my $res = $http->get("http://127.0.0.1:$port/s/$i");
        my $took = time - $t0;
        $bad++ unless $res->{status} == 200 && $res->{content} eq "pong GET /s/$i ";
        push @slow, sprintf('/s/%d %.0f ms', $i, 1000 * $took) if $took > $slow;
    }
    return ($bad, @slow);
}

sub stopped_ok {
    my ($p, $what) = @_;
    my $st = stop_cmd($p, 10);
    ok(defined $st && $st ne 'killed', "$what stopped by SIGTERM within 10 s") or diag(join "\n", cmd_output($p));
    ok(!alive($p->{pid}), "$what process $p->{pid} is gone");
}

my $srv = serve(app => $app, http2 => 1);
ok(!$srv->{error}, 'our server (http2 => 1, plain listener) is up') or do {
    diag($srv->{error});
    done_testing;
    exit;
};
my $up = $srv->{port};

subtest 'Caddy, reverse_proxy h2c://' => sub {
    skip_all('caddy is not installed') unless $have{caddy};
    my $port = free_port();
    my $cdir = tempdir(DIR => $dir);
    my $conf = File::Spec->catfile($cdir, 'Caddyfile');
    open my $fh, '>', $conf or die "write $conf: $!";
    print {$fh} <<"CADDY";
{
	admin off
	auto_https off
}

:$port {
	bind 127.0.0.1
	# The h2c transport refuses Upgrade requests (502), so WebSockets
	# reach the same listener over HTTP/1.1.
	handle /ws/* {
		reverse_proxy 127.0.0.1:$up
	}
	handle {
		reverse_proxy h2c://127.0.0.1:$up
	}
}
CADDY
    close $fh or die "close $conf: $!";
    # Caddy keeps state under HOME / XDG folders: keep it in the temp dir.
    my %env = (HOME => $cdir, XDG_DATA_HOME => "$cdir/data", XDG_CONFIG_HOME => "$cdir/config");
    {
        local @ENV{ keys %env } = values %env;
        my ($st, $out, $err) = run_cmd(30, $have{caddy}, 'validate', '--config', $conf, '--adapter', 'caddyfile');
        is($st, 0, 'caddy validate accepts the Caddyfile') or diag("$out\n$err");
    }
    my $caddy = start_cmd(name => 'caddy', env => \%env,
        argv => [ $have{caddy}, 'run', '--config', $conf, '--adapter', 'caddyfile' ]);
    ok(wait_port($port, 20, $caddy), "caddy listens on 127.0.0.1:$port") or do {
        diag(join "\n", cmd_output($caddy));
        stopped_ok($caddy, 'caddy');
        return;
    };

    load_ok($port, 'caddy');
    if ($HAVE_WS) {
        subtest 'WebSocket through Caddy (HTTP/1.1 upstream on the http2 listener)' => sub {
            ws_echo_ok($port, '/ws/echo', '1.1');
        };
    }
    stopped_ok($caddy, 'caddy');
};

subtest 'HAProxy, server proto h2' => sub {
    skip_all('haproxy is not installed') unless $have{haproxy};
    my $port = free_port();
    my $conf = File::Spec->catfile($dir, 'haproxy.cfg');
    open my $fh, '>', $conf or die "write $conf: $!";
    # http-reuse always: requests from different clients may share the
    # upstream connection (the default, safe, gives each client's first
    # request a connection of its own).
    print {$fh} <<"HAPROXY";
global
    maxconn 2000

defaults
    mode http
    timeout connect 5s
    timeout client 30s
    timeout server 30s
    timeout tunnel 30s

frontend fe
    bind 127.0.0.1:$port
    default_backend be

backend be
    http-reuse always
    server s1 127.0.0.1:$up proto h2
HAPROXY
    close $fh or die "close $conf: $!";
    my ($st, $out, $err) = run_cmd(30, $have{haproxy}, '-c', '-f', $conf);
    is($st, 0, 'haproxy -c accepts the configuration') or diag("$out\n$err");
    # -db: stay in the foreground, one process, no master.
    my $hap = start_cmd(name => 'haproxy', argv => [ $have{haproxy}, '-db', '-f', $conf ]);
    ok(wait_port($port, 20, $hap), "haproxy listens on 127.0.0.1:$port") or do {
        diag(join "\n", cmd_output($hap));
        stopped_ok($hap, 'haproxy');
        return;
    };

    load_ok($port, 'haproxy');
    subtest 'one client, 200 requests in a row' => sub {
        my ($bad, @slow) = serial_slow($port, 200, 0.15);
        is($bad, 0, 'all 200 answered 200 with their body');
        # Timing is not asserted here (t/50 checks the frames that caused
        # HAProxy's 200 ms holds); slow answers are only reported.
        note(sprintf('%d of 200 took over 150 ms', scalar @slow));
    };
    if ($HAVE_WS) {
        subtest 'WebSocket through HAProxy (extended CONNECT on the h2 upstream)' => sub {
            ws_echo_ok($port, '/ws/echo', '2');
        };
    }
    stopped_ok($hap, 'haproxy');
};

note('Protocol::WebSocket is not installed: no WebSocket checks') unless $HAVE_WS;

is(stop_server($srv), 0, 'our server stopped cleanly by SIGTERM') or diag(server_log($srv));
ok(!alive($srv->{pid}), 'our server process is gone');

done_testing;
