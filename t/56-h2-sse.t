use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use H2Py;
BEGIN {
    my $why = H2Py::skip_reason();
    skip_all($why) if $why;
}

use File::Temp qw(tempdir);
use IO::Async::Loop;
use Future::AsyncAwait;
use Time::HiRes qw(time);
use RawHTTP qw(start_server pump_until);
use TestCerts;

# SSE over HTTP/2, seen from a real HTTP/2 client (t/tools/h2_client.py,
# on Python's h2), over h2c and over TLS (ALPN h2): sse.start and sse.send
# as text/event-stream DATA, sse.keepalive comments at the app's interval
# (and interval 0 stopping them), sse.comment framing, sse.close as
# END_STREAM, the client's RST_STREAM reaching the app as sse.disconnect,
# and a graceful shutdown ending open streams cleanly (END_STREAM, then
# GOAWAY) with the app told server_shutdown, by the shutdown method and by
# SIGTERM (a forked server). The expectations are those of
# t/38-sse-streams.t for HTTP/1.1. The server runs on this process's loop;
# the client is a child process, stopped by PID.

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "56-h2-sse.t: overall time limit reached\n" };
alarm 90;

# ------------------------------------------------- SIGTERM (forked server)

# Runs first: no core runtime may exist in this process before the fork.
subtest 'h2c: SIGTERM ends an open SSE stream at once' => sub {
    my $child = RawHTTP::SSEChild->start(http2 => 1, shutdown_timeout => 20);
    my $loop = IO::Async::Loop->new;
    my $port = $child->port($loop, 10);
    ok($port, 'the forked server listens') or diag($child->heard);
    if ($port) {
        my $c = H2Py->start($loop, [ '--port', $port, '--timeout', 8, 'sse', '--path', '/events',
                                     '--duration', 6, '--linger', 2 ]);
        ok($c->wait_line(5, qr/\Adata /), 'the stream is open') or diag($c->output);
        my $t0 = time;
        kill TERM => $child->pid;
        ok($c->finish(8), 'the client ran to its end') or diag($c->output);
        my ($sid) = $c->streams('sse');
        is(scalar $c->data($sid), "data: open\n\n", 'the event sent before');
        is($c->ending($sid), 'end', 'the stream ended with END_STREAM') or diag($c->output);
        ok((grep { $_ eq 'eof' } $c->lines), 'then the connection closed');
        my $st = $child->exited($loop, 5);
        ok(defined $st, 'the server exited without waiting out shutdown_timeout (20 s)')
            and is($st >> 8, 0, 'exit status 0');
        note(sprintf 'stream ended %.2f s after SIGTERM', time - $t0);
        like($child->heard, qr/reason=server_shutdown/, 'the app saw sse.disconnect, reason server_shutdown');
    }
    $child->stop;
};

# ------------------------------------------------------ in-process servers

my $loop = IO::Async::Loop->new;
my %route;
my %seen;     # route name => the disconnect reason the app saw
my %scope;    # route name => the scope

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'sse';
    my $name = substr($scope->{path}, 1);
    $scope{$name} = $scope;
    await $route{$name}->($send, $receive);
};

# Waits for the client to go, noting why the app was told it went.
async sub until_gone {
    my ($name, $receive) = @_;
    while (1) {
        my $ev = await $receive->();
        next unless $ev->{type} eq 'sse.disconnect';
        $seen{$name} = $ev->{reason};
        return;
    }
}

$route{events} = async sub {
    my ($send, $receive) = @_;
    await $send->({ type => 'sse.keepalive', interval => 0.2, comment => 'ping' });
    await $send->({ type => 'sse.start' });
    await $send->({ type => 'sse.send', data => 'hello' });
    await $send->({ type => 'sse.send', event => 'tick', id => '7', retry => 3000, data => "two\nlines" });
    await until_gone('events', $receive);
};

$route{'ka-stop'} = async sub {
    my ($send, $receive) = @_;
    await $send->({ type => 'sse.start' });
    await $send->({ type => 'sse.keepalive', interval => 0.05, comment => "two\nlines" });
    await $loop->delay_future(after => 0.4);
    await $send->({ type => 'sse.keepalive', interval => 0 });
    await $send->({ type => 'sse.send', data => 'stopped' });
    await until_gone('ka-stop', $receive);
};

$route{comment} = async sub {
    my ($send, $receive) = @_;
    await $send->({ type => 'sse.start' });
    await $send->({ type => 'sse.comment', comment => "hi\ndata: forged\r\n\r\nevent: x\rid: 9\n" });
    await $send->({ type => 'sse.comment', comment => ':already' });
    await $send->({ type => 'sse.send', data => 'real' });
    await $send->({ type => 'sse.close' });
};

my $tls_why = TestCerts::skip_reason();
my $certs = $tls_why ? undef : TestCerts::make(tempdir(CLEANUP => 1), 'rsa');
my %ssl = $certs ? (ssl => { cert_file => $certs->{rsa_cert}, key_file => $certs->{rsa_key} }) : ();

my %server = (h2c => start_server($loop, app => $app, http2 => 1, shutdown_timeout => 20));
$server{tls} = start_server($loop, app => $app, http2 => 1, shutdown_timeout => 20, %ssl) if $certs;

sub sse_args {
    my ($srv, $tls, $path, @rest) = @_;
    return [ '--port', $srv->port, ($tls ? '--tls' : ()), '--timeout', 8, 'sse', '--path', $path, @rest ];
}

sub sse_run {
    my ($srv, $tls, $path, @rest) = @_;
    my $c = H2Py->run($loop, sse_args($srv, $tls, $path, @rest));
    ok($c->done, "$path: the client ran to its end") or diag($c->output);
    return $c;
}

for my $kind (sort keys %server) {
    my $srv = $server{$kind};
    my $tls = $kind eq 'tls';

    subtest "$kind: events, keepalive comments at the interval, RST_STREAM from the client" => sub {
        %seen = ();
        my $c = sse_run($srv, $tls, '/events', '--duration', 2, '--reset-after', 1.1, '--linger', 0.3);
        is(($c->lines)[0], $tls ? 'connected tls=1 alpn=h2' : 'connected tls=0 alpn=none',
            $tls ? 'TLS, ALPN h2' : 'h2c');
        my ($sid) = $c->streams('sse');
        is($c->status($sid), 200, 'status 200');
        like($c->headers($sid)->{'content-type'}, qr{\Atext/event-stream}, 'content-type text/event-stream');
        is($c->headers($sid)->{'cache-control'}, 'no-cache', 'cache-control no-cache');
        ok(!exists $c->headers($sid)->{'transfer-encoding'}, 'no transfer-encoding on HTTP/2');

        my $s = $scope{events};
        is($s && $s->{type}, 'sse', 'scope type sse');
        is($s && $s->{http_version}, '2', "http_version '2'");
        is($s && $s->{scheme}, $tls ? 'https' : 'http', 'scheme ' . ($tls ? 'https' : 'http'));

        my $body = $c->data($sid);
        like($body, qr/\Adata: hello\n\nevent: tick\nid: 7\nretry: 3000\ndata: two\ndata: lines\n\n/,
            'sse.send events arrive first, in the text/event-stream format') or diag($c->output);
        (my $rest = $body) =~ s/\A.*?data: lines\n\n//s;
        like($rest, qr/\A(?::ping\n\n)+\z/, 'then only keepalive comments');

        # Times the comments arrived at (the client stamps each DATA frame).
        my @at = map { $_->[0] } grep { $_->[1] eq ":ping\n\n" } $c->data($sid);
        cmp_ok(scalar @at, '>=', 3, 'keepalive comments came while the stream was open') or diag($c->output);
        my @gap = map { $at[$_] - $at[$_ - 1] } 1 .. $#at;
        my @sorted = sort { $a <=> $b } @gap;
        my $median = @sorted ? $sorted[$#sorted / 2] : 0;
        note(sprintf('comment gaps: %s', join(' ', map { sprintf '%.3f', $_ } @gap)));
        ok($median > 0.15 && $median < 0.3, 'one every 0.2 s (the interval the app set)')
            or diag(sprintf 'median gap %.3f s', $median);

        like(join("\n", $c->lines), qr/^sent $sid reset$/m, 'the client reset the stream');
        is($c->ending($sid), '', 'the server had not ended it');
        pump_until($loop, 3, sub { defined $seen{events} });
        is($seen{events}, 'client_closed', 'the app saw sse.disconnect, reason client_closed');
        ok(!grep({ /\A(goaway|eof)/ } $c->lines), 'the connection stayed open');
    };

    subtest "$kind: keepalive interval 0 stops the comments" => sub {
        my $c = sse_run($srv, $tls, '/ka-stop', '--duration', 1.0);
        my ($sid) = $c->streams('sse');
        my $body = $c->data($sid);
        my @before = $body =~ /(:two\n:lines\n\n)/g;
        cmp_ok(scalar @before, '>=', 2, 'comments came while the keepalive was on') or diag($c->output);
        like($body, qr/data: stopped\n\n\z/, 'none after interval 0');
    };

    subtest "$kind: sse.comment framing and sse.close" => sub {
        my $c = sse_run($srv, $tls, '/comment', '--duration', 3);
        my ($sid) = $c->streams('sse');
        is(scalar $c->data($sid),
            ":hi\n:data: forged\n:\n:event: x\n:id: 9\n:\n\n"
            . ":already\n\n"
            . "data: real\n\n",
            'every comment line starts with a colon') or diag($c->output);
        is($c->ending($sid), 'end', 'sse.close ends the stream with END_STREAM');
        cmp_ok($c->{elapsed}, '<', 2.5, 'the client did not wait out its duration');
    };
}

for my $kind (sort keys %server) {
    my $srv = $server{$kind};
    my $tls = $kind eq 'tls';
    subtest "$kind: shutdown ends open SSE streams cleanly" => sub {
        %seen = ();
        my $c = H2Py->start($loop, sse_args($srv, $tls, '/events', '--duration', 6, '--linger', 2));
        my $open = $c->wait_for(5, sub { grep { /\Adata / } $_[0]->lines });
        ok($open, 'the stream is open') or diag($c->output);
        my $t0 = time;
        my $f = $srv->shutdown;
        ok($c->finish(8), 'the client ran to its end') or diag($c->output);
        ok(pump_until($loop, 5, sub { $f->is_ready }),
            'shutdown finished without waiting out shutdown_timeout (20 s)');
        note(sprintf 'shutdown took %.3f s', time - $t0);
        my ($sid) = $c->streams('sse');
        is($c->ending($sid), 'end', 'the stream ended with END_STREAM, not a reset') or diag($c->output);
        like(scalar $c->data($sid), qr/\Adata: hello\n\n/, 'after the events sent before');
        my @after = grep { /\A(end|goaway|eof|reset)/ } $c->lines;
        my ($gone) = grep { /\Agoaway 0 / } @after;
        ok($gone, 'a GOAWAY (NO_ERROR) came') or diag($c->output);
        ok((grep { $_ eq 'eof' } @after), 'then the server closed the connection');
        pump_until($loop, 3, sub { defined $seen{events} });
        is($seen{events}, 'server_shutdown', 'the app saw sse.disconnect, reason server_shutdown');
        $loop->remove($srv);
    };
}

SKIP: {
    skip "TLS: $tls_why", 1 if $tls_why;
    pass('TLS server was tested');
}

done_testing;
