use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Future::AsyncAwait;
use Time::HiRes qw(time);
use RawHTTP qw(start_server pump_until stream_of);

# SSE streams on the wire: sse.keepalive (before and after sse.start, the
# comment timer, interval 0), sse.comment framing, and the end of open
# streams at a graceful shutdown (the shutdown method and SIGTERM).

my $REQ = "GET /%s HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";

sub body_of { (stream_of($_[0]{buf}))[1] }

# ------------------------------------------------- SIGTERM (forked server)

# Runs first: no core runtime may exist in this process before the fork.
subtest 'SIGTERM ends an open SSE stream at once' => sub {
    my $child = RawHTTP::SSEChild->start(shutdown_timeout => 20);
    my $loop = IO::Async::Loop->new;
    my $port = $child->port($loop, 10);
    ok($port, 'the forked server listens') or diag($child->heard);
    if ($port) {
        my $c = RawHTTP->new(loop => $loop, port => $port);
        $c->write(sprintf $REQ, 'events');
        ok($c->wait_for(5, sub { body_of($_[0]) =~ /data: open\n\n/ }), 'the stream is open');
        my $t0 = time;
        kill TERM => $child->pid;
        $c->wait_close(5);
        my ($status, $body, $done) = stream_of($c->{buf});
        ok($done, 'the client got the terminating chunk') or diag("got: $c->{buf}");
        ok($c->{eof}, 'then the connection closed');
        my $st = $child->exited($loop, 5);
        ok(defined $st, 'the server exited without waiting out shutdown_timeout (20 s)')
            and is($st >> 8, 0, 'exit status 0');
        note(sprintf 'stream ended %.2f s after SIGTERM', time - $t0);
        like($child->heard, qr/reason=server_shutdown/, 'the app saw sse.disconnect, reason server_shutdown');
    }
    $child->stop;
};

# ------------------------------------------------------ in-process server

my $loop = IO::Async::Loop->new;
my %route;
my %seen;

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'sse';
    my $name = substr($scope->{path}, 1);
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

$route{'ka-before'} = async sub {
    my ($send, $receive) = @_;
    await $send->({ type => 'sse.keepalive', interval => 0.1, comment => 'ping' });
    await $send->({ type => 'sse.start' });
    await $send->({ type => 'sse.send', data => 'hello' });
    await until_gone('ka-before', $receive);
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

$route{'ka-bad'} = async sub {
    my ($send, $receive) = @_;
    $seen{'ka-bad'} = eval { await $send->({ type => 'sse.keepalive', interval => 'soon' }); 1 } ? 'accepted' : $@;
    await $send->({ type => 'sse.start' });
    await $send->({ type => 'sse.close' });
};

$route{'comment'} = async sub {
    my ($send, $receive) = @_;
    await $send->({ type => 'sse.start' });
    await $send->({ type => 'sse.comment', comment => "hi\ndata: forged\r\n\r\nevent: x\rid: 9\n" });
    await $send->({ type => 'sse.comment', comment => ':already' });
    await $send->({ type => 'sse.comment', comment => '' });
    await $send->({ type => 'sse.send', data => 'real' });
    await $send->({ type => 'sse.close' });
};

my $server = start_server($loop, app => $app, shutdown_timeout => 20);
my $port   = $server->port;

sub open_stream {
    my ($name) = @_;
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write(sprintf $REQ, $name);
    return $c;
}

subtest 'sse.keepalive before sse.start' => sub {
    my $c = open_stream('ka-before');
    my $ok = $c->wait_for(5, sub { my $b = body_of($_[0]); $b =~ /data: hello\n\n/ && $b =~ /(?::ping\n\n.*){2}/s });
    my ($status, $body) = stream_of($c->{buf});
    is($status, 200, 'the stream started (not a 500)');
    like($c->{buf}, qr{content-type: text/event-stream}i, 'as an event stream');
    ok($ok, 'the keepalive comment comes every interval') or diag("body: $body");
    unlike($body, qr/^(?!:|data: hello$)./m, 'nothing but the event and the comments');
    $c->close;
    pump_until($loop, 3, sub { defined $seen{'ka-before'} && !$server->connection_count });
    is($seen{'ka-before'}, 'client_closed', 'the app saw the client go');
    is($server->connection_count, 0, 'the connection is gone, its timer with it');
};

subtest 'sse.keepalive after sse.start, multi-line comment, interval 0 stops it' => sub {
    my $c = open_stream('ka-stop');
    ok($c->wait_for(5, sub { body_of($_[0]) =~ /data: stopped\n\n/ }), 'the app went on');
    my $body = body_of($c);
    my @before = $body =~ /(:two\n:lines\n\n)/g;
    cmp_ok(scalar @before, '>=', 2, 'comments came while the keepalive was on');
    $c->wait_for(0.4, sub { 0 });
    my ($after) = body_of($c) =~ /data: stopped\n\n(.*)\z/s;
    is($after, '', 'none after interval 0');
    $c->close;
};

subtest 'a bad interval makes the send die' => sub {
    my $c = open_stream('ka-bad');
    $c->wait_for(5, sub { (stream_of($_[0]{buf}))[2] });
    like($seen{'ka-bad'}, qr/sse\.keepalive: 'interval' must be a non-negative number/, 'the error names the field');
    my (undef, undef, $done) = stream_of($c->{buf});
    ok($done, 'the stream then ran and ended properly');
};

subtest 'sse.comment cannot forge an event' => sub {
    my $c = open_stream('comment');
    $c->wait_for(5, sub { (stream_of($_[0]{buf}))[2] });
    my ($status, $body, $done) = stream_of($c->{buf});
    ok($done, 'the stream ended');
    is($body,
        ":hi\n:data: forged\n:\n:event: x\n:id: 9\n:\n\n"
        . ":already\n\n"
        . ":\n\n"
        . "data: real\n\n",
        'every comment line starts with a colon; CR, LF and CRLF all end a line');
};

subtest 'shutdown ends open SSE streams at once' => sub {
    my @c = map { open_stream('ka-before') } 1 .. 2;
    ok($_->wait_for(5, sub { body_of($_[0]) =~ /data: hello/ }), 'stream open') for @c;
    %seen = ();
    my $f = $server->shutdown;
    pump_until($loop, 5, sub { $f->is_ready });
    ok($f->is_ready, 'shutdown finished without waiting out shutdown_timeout (20 s)');
    for my $c (@c) {
        $c->wait_close(3);
        my (undef, $body, $done) = stream_of($c->{buf});
        ok($done, 'the client got the terminating chunk') or diag("got: $c->{buf}");
        ok($c->{eof}, 'and the connection closed');
    }
    is($seen{'ka-before'}, 'server_shutdown', 'the app saw sse.disconnect, reason server_shutdown');
    unless ($f->is_ready) {
        $loop->remove($server);    # force-closes what is left
        pump_until($loop, 5, sub { $f->is_ready });
    }
};

# ------------------------------------------------ PAGI-Tools' endpoint

SKIP: {
    my $tools = $ENV{PAGI_TOOLS_LIB} // '/tmp/up/tools/lib';
    skip "PAGI-Tools not found at $tools (set PAGI_TOOLS_LIB to run PAGI::Endpoint::SSE)", 1
        unless -f "$tools/PAGI/Endpoint/SSE.pm";
    unshift @INC, $tools;
    require PAGI::Endpoint::SSE;
    my $connected;
    {
        package T38::Ticker;
        our @ISA = ('PAGI::Endpoint::SSE');
        sub keepalive_interval { 0.1 }
        sub on_connect {
            my ($self, $ctx) = @_;
            $connected = 1;
            return $ctx->sse->send_event(data => 'welcome');
        }
    }
    my $s2 = start_server($loop, app => T38::Ticker->to_app);
    subtest 'PAGI::Endpoint::SSE with a keepalive interval' => sub {
        my $c = RawHTTP->new(loop => $loop, port => $s2->port);
        $c->write(sprintf $REQ, 'ticker');
        my $ok = $c->wait_for(5, sub { my $b = body_of($_[0]); $b =~ /data: welcome\n\n/ && $b =~ /(?::\n\n.*){2}/s });
        my ($status, $body) = stream_of($c->{buf});
        is($status, 200, 'the endpoint streams (not a 500)');
        ok($connected, 'on_connect ran');
        ok($ok, 'its keepalive comments arrive') or diag("got: $c->{buf}");
        $c->close;
        pump_until($loop, 3, sub { !$s2->connection_count });
    };
    $s2->shutdown->get;
    $loop->remove($s2);
}

$loop->remove($server);
done_testing;
