use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Future;
use Future::AsyncAwait;
use Time::HiRes qw(time);
use RawHTTP qw(start_server stop_server pump_until);

# timeout (idle keep-alive connections) and request_timeout (a request whose
# connection sees no I/O for that long is closed).

my $loop = IO::Async::Loop->new;

my @warnings;
$SIG{__WARN__} = sub { push @warnings, $_[0] };

my %seen;
my $hold;    # the /hang app waits on this; only the test ever completes it

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    my $path = $scope->{path};
    if ($path eq '/hang') {
        $seen{hang_started} = 1;
        await $hold;
        my @types;
        for my $i (1 .. 3) {
            my $ev = await $receive->();
            push @types, $ev->{type};
            last if $ev->{type} ne 'http.request';
        }
        $seen{after_hang} = \@types;
        return;
    }
    if ($path eq '/stream') {
        await $send->({ type => 'http.response.start', status => 200,
                        headers => [['content-type', 'text/plain']] });
        for my $i (1 .. 5) {
            await $loop->delay_future(after => 0.4);
            await $send->({ type => 'http.response.body', body => "chunk$i;", more => 1 });
        }
        await $send->({ type => 'http.response.body', body => '', more => 0 });
        $seen{stream_done} = 1;
        return;
    }
    await $send->({ type => 'http.response.start', status => 200,
                    headers => [['content-type', 'text/plain'], ['content-length', 2]] });
    await $send->({ type => 'http.response.body', body => 'ok' });
};

# One keep-alive request; returns the client once the response is in.
sub keepalive_request {
    my ($server, $label) = @_;
    my $c = RawHTTP->new(loop => $loop, port => $server->port);
    $c->write("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n");
    my $r = $c->read_response(timeout => 5);
    is($r && $r->{status}, 200, "$label: first request answered") or diag('error: ' . ($c->{error} // '?'));
    return $c;
}

subtest 'timeout => 1 closes an idle keep-alive connection' => sub {
    my $server = start_server($loop, app => $app, timeout => 1);
    my $c  = keepalive_request($server, 'timeout 1');
    my $t0 = time;
    my $how = $c->wait_close(4);
    my $took = time - $t0;
    like($how, qr/^(eof|reset)$/, 'server closed the idle connection within 4 s') or diag($how);
    ok($took >= 0.7, 'not before 0.7 s') or diag(sprintf('closed after %.3f s', $took));
    note(sprintf('idle close after %.3f s', $took));
    is($c->{buf}, '', 'no bytes sent on the idle close');
    stop_server($loop, $server);
};

subtest 'timeout => 0 keeps an idle connection open' => sub {
    my $server = start_server($loop, app => $app, timeout => 0);
    my $c = keepalive_request($server, 'timeout 0');
    is($c->wait_close(2), 'timeout', 'still open after 2 s idle');
    $c->write("GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    my $r = $c->read_response(timeout => 5);
    is($r && $r->{body}, 'ok', 'connection still usable');
    stop_server($loop, $server);
};

my $rserver = start_server($loop, app => $app, request_timeout => 1, quiet => 0, log_level => 'warn');

subtest 'request_timeout => 1 closes a stalled request' => sub {
    @warnings = ();
    %seen = ();
    $hold = Future->new;
    my $c = RawHTTP->new(loop => $loop, port => $rserver->port);
    my $t0 = time;
    $c->write("GET /hang HTTP/1.1\r\nHost: x\r\n\r\n");
    my $how = $c->wait_close(3.5);
    my $took = time - $t0;
    like($how, qr/^(eof|reset)$/, 'server closed the connection within 3.5 s') or diag($how);
    ok($took >= 0.7, 'not before the timeout') or diag(sprintf('closed after %.3f s', $took));
    note(sprintf('stall close after %.3f s', $took));
    ok($seen{hang_started}, 'app was running');
    unlike($c->{buf}, qr{^HTTP/1\.1 2}, 'no success response');
    note('bytes before the close: ' . length $c->{buf});
    pump_until($loop, 1, sub { grep { /Request stall timeout \(1s\)/ } @warnings });
    ok((grep { /Request stall timeout \(1s\)/ } @warnings), 'warning "Request stall timeout (1s)"')
        or diag("warnings: @warnings");
    $hold->done;
    ok(pump_until($loop, 2, sub { defined $seen{after_hang} }), 'app went on to call $receive');
    my @types = @{ $seen{after_hang} || [] };
    ok((grep { $_ eq 'http.disconnect' } @types), '$receive yields http.disconnect')
        or diag("events: @types");
    # Events that arrived before the close are still delivered first: a
    # body the client sent is never lost.
    is($types[-1], 'http.disconnect', 'the last event is http.disconnect')
        or diag("events: @types");
};

subtest 'request_timeout => 1 leaves a steadily streaming response alone' => sub {
    @warnings = ();
    %seen = ();
    my $c = RawHTTP->new(loop => $loop, port => $rserver->port);
    $c->write("GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    my $r = $c->read_response(timeout => 6);
    ok($r, 'response complete') or diag('error: ' . ($c->{error} // '?') . ' buf: ' . $c->{buf});
    is($r && $r->{status}, 200, 'status 200');
    is($r && $r->{body}, join('', map { "chunk$_;" } 1 .. 5), 'all five chunks');
    ok($seen{stream_done}, 'app finished');
    is([ grep { /Request stall timeout/ } @warnings ], [], 'no stall warning');
};

stop_server($loop, $rserver);

done_testing;
