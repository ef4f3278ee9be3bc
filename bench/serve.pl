#!/usr/bin/env perl
# Starts one PAGI::Server process with a benchmark app. Which PAGI::Server is
# loaded is decided by @INC (PERL5LIB / -I), so the same script serves this
# project's build and the reference. Prints the bound port on STDOUT, then
# serves until TERM.
#
#   perl bench/serve.pl [APP]
#   PAGI_BENCH_CERT=cert.pem PAGI_BENCH_KEY=key.pem perl bench/serve.pl [APP]
#   PAGI_BENCH_HTTP2=1 perl bench/serve.pl [APP]
#
# With PAGI_BENCH_CERT and PAGI_BENCH_KEY set (PEM files) the server is given
# ssl => { cert_file, key_file } and serves HTTPS; both servers take the same
# option. With PAGI_BENCH_HTTP2=1 the server is given http2 => 1,
# PAGI_BENCH_MAX_CONNECTIONS=N sets max_connections, and
# PAGI_BENCH_TIMEOUT=S sets timeout (the wait for a request head).
#
# APP is one of:
#   hello   (default) 13-byte "Hello, World!" with content-length
#   hold    answers after PAGI_BENCH_HOLD seconds (default 30): streams
#           that stay open, for bench/h2-memory.pl
#   stream  1 MiB body as 16 http.response.body events of 64 KiB each
#           (no content-length, so chunked), awaiting every $send
#   echo    reads the whole request body (looping on $receive until more is
#           false) and sends it back in one body event
#   sse     an SSE stream: sse.start, then 64-byte events (event, data, id)
#           as fast as each sse.send completes, until the client goes
#   wsecho  a WebSocket that sends every message straight back
use strict;
use warnings;
use IO::Async::Loop;
use Future::AsyncAwait;
use PAGI::Server;

my $name = shift // 'hello';

my $hello_body = "Hello, World!";
my $chunk      = 'x' x 65536;

my %apps = (
    hello => async sub {
        my ($scope, $receive, $send) = @_;
        die "no lifespan\n" if $scope->{type} ne 'http';
        await $send->({
            type    => 'http.response.start',
            status  => 200,
            headers => [['content-type', 'text/plain'], ['content-length', length $hello_body]],
        });
        await $send->({ type => 'http.response.body', body => $hello_body, more => 0 });
    },

    # Holds the response open for PAGI_BENCH_HOLD seconds (default 30)
    # before answering: open streams for the memory bench.
    hold => async sub {
        my ($scope, $receive, $send) = @_;
        die "no lifespan\n" if $scope->{type} ne 'http';
        await IO::Async::Loop->new->delay_future(after => $ENV{PAGI_BENCH_HOLD} // 30);
        await $send->({ type => 'http.response.start', status => 200, headers => [] });
        await $send->({ type => 'http.response.body', body => 'done', more => 0 });
    },

    stream => async sub {
        my ($scope, $receive, $send) = @_;
        die "no lifespan\n" if $scope->{type} ne 'http';
        await $send->({
            type    => 'http.response.start',
            status  => 200,
            headers => [['content-type', 'application/octet-stream']],
        });
        for my $i (1 .. 16) {
            await $send->({ type => 'http.response.body', body => $chunk, more => ($i < 16 ? 1 : 0) });
        }
    },

    echo => async sub {
        my ($scope, $receive, $send) = @_;
        die "no lifespan\n" if $scope->{type} ne 'http';
        my $body = '';
        while (1) {
            my $event = await $receive->();
            last if $event->{type} ne 'http.request';   # http.disconnect
            $body .= $event->{body} // '';
            last unless $event->{more};
        }
        await $send->({
            type    => 'http.response.start',
            status  => 200,
            headers => [['content-type', 'application/octet-stream'], ['content-length', length $body]],
        });
        await $send->({ type => 'http.response.body', body => $body, more => 0 });
    },
);

$apps{sse} = async sub {
    my ($scope, $receive, $send) = @_;
    die "no lifespan\n" if $scope->{type} eq 'lifespan';
    die "sse only\n" if $scope->{type} ne 'sse';
    # The disconnect, whenever it comes (a request body event may come first).
    my $gone = (async sub {
        while (1) { return if (await $receive->())->{type} =~ /disconnect/ }
    })->();
    await $send->({ type => 'sse.start', status => 200 });
    my $data = 'x' x 64;
    my $n = 0;
    until ($gone->is_ready) {
        # A client that has gone makes sse.send fail: that ends the loop.
        last unless eval { await $send->({ type => 'sse.send', event => 'tick', data => $data, id => ++$n }); 1 };
    }
};

$apps{wsecho} = async sub {
    my ($scope, $receive, $send) = @_;
    die "no lifespan\n" if $scope->{type} eq 'lifespan';
    my $ev = await $receive->();
    return unless $ev->{type} eq 'websocket.connect';
    await $send->({ type => 'websocket.accept' });
    while (1) {
        $ev = await $receive->();
        last if $ev->{type} ne 'websocket.receive';
        await $send->({ type => 'websocket.send',
                        (defined $ev->{text} ? (text => $ev->{text}) : (bytes => $ev->{bytes})) });
    }
};

my $app = $apps{$name}
    or die "usage: $0 [" . join('|', sort keys %apps) . "]\n";

my %tls;
if ($ENV{PAGI_BENCH_CERT} || $ENV{PAGI_BENCH_KEY}) {
    die "PAGI_BENCH_CERT and PAGI_BENCH_KEY go together\n"
        unless $ENV{PAGI_BENCH_CERT} && $ENV{PAGI_BENCH_KEY};
    %tls = (ssl => { cert_file => $ENV{PAGI_BENCH_CERT}, key_file => $ENV{PAGI_BENCH_KEY} });
}

my $loop   = IO::Async::Loop->new;
my $server = PAGI::Server->new(
    app        => $app,
    host       => '127.0.0.1',
    port       => 0,
    quiet      => 1,
    access_log => undef,
    %tls,
    ($ENV{PAGI_BENCH_HTTP2} ? (http2 => 1) : ()),
    ($ENV{PAGI_BENCH_MAX_CONNECTIONS} ? (max_connections => $ENV{PAGI_BENCH_MAX_CONNECTIONS}) : ()),
    ($ENV{PAGI_BENCH_TIMEOUT} ? (timeout => $ENV{PAGI_BENCH_TIMEOUT}) : ()),
);
$loop->add($server);
$server->listen->get;
$| = 1;
print $server->port, "\n";
$loop->run;
