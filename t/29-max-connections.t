use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Future::AsyncAwait;
use RawHTTP qw(start_server pump_until);

# max_connections: a connection over the limit gets a canned 503 and is
# closed; the limit frees up again when connections go away.

my $loop = IO::Async::Loop->new;

my @warnings;
$SIG{__WARN__} = sub { push @warnings, $_[0] };

my $calls = 0;
my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    $calls++;
    await $send->({ type => 'http.response.start', status => 200,
                    headers => [['content-type', 'text/plain'], ['content-length', 2]] });
    await $send->({ type => 'http.response.body', body => 'ok' });
};

my $server = start_server($loop, app => $app, max_connections => 2, quiet => 0, log_level => 'warn');
my $port   = $server->port;

is($server->connection_count, 0, 'no connections yet');

# Two idle connections fill the server.
my @held = map { RawHTTP->new(loop => $loop, port => $port) } 1 .. 2;
ok(pump_until($loop, 3, sub { $server->connection_count == 2 }), 'connection_count is 2 while both are held')
    or diag('connection_count: ' . $server->connection_count);

subtest 'a third connection gets 503 and is closed' => sub {
    @warnings = ();
    my $c = RawHTTP->new(loop => $loop, port => $port);
    my $r = $c->read_response(timeout => 5);
    ok($r, 'a response without sending anything') or diag('error: ' . ($c->{error} // '?') . " buf: $c->{buf}");
    like($r && $r->{head_raw}, qr{^HTTP/1\.1 503 Service Unavailable\r\n}, 'status line "HTTP/1.1 503 Service Unavailable"');
    like($r && $r->{head_raw}, qr{\r\nRetry-After: 5\r\n}i, 'Retry-After: 5');
    like($r && $r->{head_raw}, qr{\r\nConnection: close\r\n}i, 'Connection: close');
    is($r && $r->{body}, "503 Service Unavailable - Server at capacity\r\n", 'body');
    my $how = $c->wait_close(3);
    like($how, qr/^(eof|reset)$/, 'then closed') or diag($how);
    is($c->{buf}, '', 'nothing after the body');
    pump_until($loop, 1, sub { grep { /at capacity \(2\/2\)/ } @warnings });
    ok((grep { /at capacity \(2\/2\)/ } @warnings), 'warning "at capacity (2/2)"') or diag("warnings: @warnings");
    is($calls, 0, 'app not called');
    ok(pump_until($loop, 2, sub { $server->connection_count == 2 }), 'still 2 connections counted')
        or diag('connection_count: ' . $server->connection_count);
};

subtest 'held connections are still served' => sub {
    $held[0]->write("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    my $r = $held[0]->read_response(timeout => 5);
    is($r && $r->{status}, 200, 'request on a held connection answered');
};

subtest 'capacity frees up after the held connections close' => sub {
    $_->close for @held;
    ok(pump_until($loop, 3, sub { $server->connection_count == 0 }), 'connection_count drops to 0')
        or diag('connection_count: ' . $server->connection_count);
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    my $r = $c->read_response(timeout => 5);
    is($r && $r->{status}, 200, 'a new connection is served') or diag('error: ' . ($c->{error} // '?') . " buf: $c->{buf}");
    is($r && $r->{body}, 'ok', 'body');
};

$server->shutdown->get;
$loop->remove($server);

done_testing;
