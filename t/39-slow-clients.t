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

# Slow clients: a request head trickled a byte at a time still has to be
# complete within `timeout`; a body trickled below min_body_rate is ended
# under request_timeout; at max_connections the connection waiting longest
# for a request head makes room for a new client instead of a 503.

my $loop = IO::Async::Loop->new;

my @warnings;
$SIG{__WARN__} = sub { push @warnings, $_[0] };

my %seen;
my $hold = $loop->new_future;    # /hold waits on this until the test ends

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    if ($scope->{path} eq '/hold') {
        await $hold;
    }
    elsif ($scope->{path} eq '/upload') {
        my $got = 0;
        while (1) {
            my $ev = await $receive->();
            if ($ev->{type} ne 'http.request') {
                $seen{upload_end} = { %$ev, got => $got };
                return;
            }
            $got += length $ev->{body};
            last unless $ev->{more};
        }
    }
    await $send->({ type => 'http.response.start', status => 200,
                    headers => [['content-type', 'text/plain'], ['content-length', 2]] });
    await $send->({ type => 'http.response.body', body => 'ok' });
};

# Sends $piece every $every seconds until the server closes the connection
# or $limit seconds pass. Returns (how it ended, seconds it took, bytes sent).
sub trickle {
    my ($c, $piece, $every, $limit) = @_;
    my $t0 = time;
    my $sent = 0;
    my $next = $t0;
    while (time - $t0 < $limit) {
        if (time >= $next) {
            last unless eval { $c->write($piece, 1); 1 };
            $sent += length $piece;
            $next += $every;
        }
        $c->wait_for(0.05, sub { 0 });
        last if $c->{eof} || $c->{err};
    }
    my $how = $c->{eof} ? 'eof' : $c->{err} ? 'closed' : 'timeout';
    return ($how, time - $t0, $sent);
}

subtest 'a head trickled a byte at a time is closed at the timeout' => sub {
    my $server = start_server($loop, app => $app, timeout => 2);
    my $c = RawHTTP->new(loop => $loop, port => $server->port);
    $c->write("GET / HTTP/1.1\r\nHost: x\r\n");
    my ($how, $took, $sent) = trickle($c, 'a', 0.1, 8);
    isnt($how, 'timeout', 'the server closed the connection') or diag("still open after ${took}s");
    ok($took < 4, 'within the 2 s head deadline (plus slack)') or diag("took ${took}s");
    ok($took > 1.5, 'not before the deadline') or diag("took ${took}s");
    ok($sent > 10, 'bytes kept coming until then') or diag("sent $sent");
    like($c->{buf}, qr{^HTTP/1\.1 408 }, 'answered 408 Request Timeout') or diag("got: $c->{buf}");
    stop_server($loop, $server);
};

subtest 'a keep-alive connection gets a fresh head deadline after each response' => sub {
    my $server = start_server($loop, app => $app, timeout => 2);
    my $c = RawHTTP->new(loop => $loop, port => $server->port);
    for my $i (1 .. 2) {
        pump_until($loop, 1.2, sub { 0 });
        $c->write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
        my $r = $c->read_response;
        is($r && $r->{status}, 200, "request $i after 1.2 s idle is served");
    }
    stop_server($loop, $server);
};

subtest 'a body trickled below min_body_rate is ended under request_timeout' => sub {
    @warnings = ();
    delete $seen{upload_end};
    my $server = start_server($loop, app => $app, request_timeout => 1, quiet => 0, log_level => 'warn');
    my $c = RawHTTP->new(loop => $loop, port => $server->port);
    $c->write("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n");
    # 10 bytes every 0.3 s: never a 1 s stall, but about 33 bytes/s.
    my ($how, $took, $sent) = trickle($c, 'b' x 10, 0.3, 8);
    isnt($how, 'timeout', 'the server closed the connection') or diag("still open after ${took}s");
    ok($took < 4, 'within request_timeout + sent/500 s (plus slack)') or diag("took ${took}s");
    ok(pump_until($loop, 2, sub { $seen{upload_end} }), 'the app saw the end');
    is($seen{upload_end}{type}, 'http.disconnect', 'as http.disconnect');
    is($seen{upload_end}{reason}, 'client_timeout', 'reason client_timeout');
    ok((grep { /Request body too slow/ } @warnings), 'warning logged') or diag("warnings: @warnings");
    stop_server($loop, $server);
};

subtest 'a body sent at a normal pace is not ended' => sub {
    delete $seen{upload_end};
    my $server = start_server($loop, app => $app, request_timeout => 1);
    my $c = RawHTTP->new(loop => $loop, port => $server->port);
    $c->write("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 4000\r\n\r\n");
    # 1000 bytes every 0.5 s: over 500 bytes/s, done after about 1.5 s.
    for (1 .. 4) {
        $c->write('c' x 1000);
        $c->wait_for(0.5, sub { 0 });
    }
    my $r = $c->read_response;
    is($r && $r->{status}, 200, 'answered');
    stop_server($loop, $server);
};

subtest 'at max_connections the longest head-waiter makes room' => sub {
    @warnings = ();
    my $server = start_server($loop, app => $app, max_connections => 5, quiet => 0, log_level => 'warn');
    my $port = $server->port;
    my @idle = map { RawHTTP->new(loop => $loop, port => $port) } 1 .. 5;
    ok(pump_until($loop, 3, sub { $server->connection_count == 5 }), 'five idle connections fill the server');
    pump_until($loop, 1.5, sub { 0 });    # past the eviction grace
    my $r = RawHTTP->request($loop, $port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    is($r && $r->{status}, 200, 'a new client is served, not refused');
    my $closed = sub { scalar grep { $_->wait_for(0, sub { 0 }); $_->{eof} || $_->{err} } @idle };
    pump_until($loop, 1, sub { $closed->() });
    pump_until($loop, 0.3, sub { 0 });
    is($closed->(), 1, 'exactly one idle connection was closed for it');
    ok((grep { /At capacity \(\d+\/5\): closed 1 connection/ } @warnings), 'logged') or diag("warnings: @warnings");
    $_->close for @idle;
    stop_server($loop, $server);
};

subtest 'connections with a request in progress are never evicted' => sub {
    my $server = start_server($loop, app => $app, max_connections => 3);
    my $port = $server->port;
    my @busy = map { RawHTTP->new(loop => $loop, port => $port) } 1 .. 3;
    $_->write("GET /hold HTTP/1.1\r\nHost: x\r\n\r\n") for @busy;
    ok(pump_until($loop, 3, sub { $server->connection_count == 3 }), 'three busy connections');
    pump_until($loop, 1.5, sub { 0 });
    my $r = RawHTTP->request($loop, $port, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    is($r && $r->{status}, 503, 'a new client is refused with 503');
    is([ map { $_->{eof} || $_->{err} ? 1 : 0 } @busy ], [0, 0, 0], 'the busy ones stay open');
    $hold->done;
    for my $c (@busy) {
        my $res = $c->read_response;
        is($res && $res->{status}, 200, 'a held request completes');
    }
    stop_server($loop, $server);
};

done_testing;
