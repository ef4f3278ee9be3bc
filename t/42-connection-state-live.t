use strict;
use warnings;
use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Async::Loop;
use Future::AsyncAwait;
use RawHTTP qw(start_server pump_until);
use PAGI::Server;

# pagi.connection and pagi.transport on real requests.

my $loop = IO::Async::Loop->new;
my (%seen, $conn, $transport);

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    $conn      = $scope->{'pagi.connection'};
    $transport = $scope->{'pagi.transport'};
    %seen = ();
    $conn->on_complete(sub { $seen{complete}++ });
    $conn->on_disconnect(sub { $seen{disconnect} = $_[0] });
    $seen{started_before} = $conn->response_started;
    my $path = $scope->{path};
    if ($path eq '/wait') {
        1 while (await $receive->())->{type} eq 'http.request';
        $seen{connected_after} = $conn->is_connected;
        return;
    }
    die "boom\n" if $path eq '/die';
    await $send->({ type => 'http.response.start', status => 200, headers => [] });
    $seen{started_after} = $conn->response_started;
    await $send->({ type => 'http.response.body', body => 'ok', more => 0 });
};

my $server = start_server($loop, app => $app, write_high_watermark => 1000, write_low_watermark => 100);
my $port   = $server->port;

subtest 'a completed request fires on_complete only' => sub {
    my $r = RawHTTP->request($loop, $port, "GET /ok HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    is($r && $r->{status}, 200, 'answered');
    isa_ok($conn, 'PAGI::Server::ConnectionState');
    pump_until($loop, 2, sub { $seen{complete} });
    is($seen{complete}, 1, 'on_complete fired once');
    ok(!exists $seen{disconnect}, 'on_disconnect did not fire');
    is($seen{started_before}, 0, 'response_started false before start');
    is($seen{started_after}, 1, 'response_started true after start');
    is($conn->disconnect_reason, undef, 'no disconnect reason');
    isa_ok($transport, 'PAGI::Server::TransportState');
    is($transport->high_water_mark, 1000, 'high water mark from the option');
    is($transport->low_water_mark, 100, 'low water mark from the option');
    is($transport->buffered_amount, 0, 'nothing buffered after completion');
};

subtest 'a client that goes away fires on_disconnect with client_closed' => sub {
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("POST /wait HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\n12345");
    pump_until($loop, 2, sub { $conn && $conn->is_connected });
    my $df = $conn->disconnect_future;
    $c->close;
    ok(pump_until($loop, 3, sub { exists $seen{disconnect} }), 'on_disconnect fired');
    is($seen{disconnect}, 'client_closed', 'reason client_closed');
    is($conn->is_connected, 0, 'is_connected false');
    is($conn->disconnect_reason, 'client_closed', 'disconnect_reason');
    ok($df->is_ready, 'disconnect_future resolved');
    is([$df->get], ['client_closed'], 'with the reason');
    ok(!$seen{complete}, 'on_complete did not fire');
};

subtest 'an app failure is a server_error' => sub {
    local $SIG{__WARN__} = sub { };
    my $r = RawHTTP->request($loop, $port, "GET /die HTTP/1.1\r\nHost: t\r\n\r\n");
    is($r && $r->{status}, 500, '500 backstop');
    ok(pump_until($loop, 2, sub { exists $seen{disconnect} }), 'on_disconnect fired');
    is($seen{disconnect}, 'server_error', 'reason server_error');
    ok(!$seen{complete}, 'on_complete did not fire');
};

$server->shutdown->get;
$loop->remove($server);
done_testing;
