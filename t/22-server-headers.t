use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Net::Async::HTTP;
use Future::AsyncAwait;
use HTTP::Date qw(str2time);
use RawHTTP qw(start_server pump_until);

my $loop = IO::Async::Loop->new;

my %route = (
    '/cl' => sub { ([['content-type', 'text/plain'], ['content-length', 11]], ['hello world']) },
    '/nocl' => sub { ([['content-type', 'text/plain']], ['hello ', 'world']) },
    '/own-server' => sub { ([['Server', 'MyApp/1.0'], ['content-length', 2]], ['ok']) },
    '/own-server-lc' => sub { ([['server', 'lower/2'], ['content-length', 2]], ['ok']) },
);

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    my $path = $scope->{path};
    if ($path =~ m{^/echo/(\w+)}) {
        my $tag = $1;
        await $loop->delay_future(after => 0.3) if $tag eq 'slow';
        my $body = "$tag:" . $scope->{client}[1];
        await $send->({ type => 'http.response.start', status => 200,
                        headers => [['content-type', 'text/plain'], ['content-length', length $body]] });
        await $send->({ type => 'http.response.body', body => $body });
        return;
    }
    my ($headers, $parts) = ($route{$path} // $route{'/cl'})->();
    await $send->({ type => 'http.response.start', status => 200, headers => $headers });
    for my $i (0 .. $#$parts) {
        await $send->({ type => 'http.response.body', body => $parts->[$i], more => ($i < $#$parts ? 1 : 0) });
    }
};

my $server = start_server($loop, app => $app);
my $port   = $server->port;
my $server_value = "PAGI::Server/$PAGI::Server::VERSION";

sub raw {
    my ($req, %opt) = @_;
    my ($r, $c) = RawHTTP->request($loop, $port, $req, %opt);
    ok($r, 'response parsed') or diag('error: ' . ($c->{error} // '?'));
    return wantarray ? ($r, $c) : $r;
}

sub values_of {
    my ($r, $name) = @_;
    return map { $_->[1] } grep { lc($_->[0]) eq $name } @{ $r->{headers} };
}

subtest 'Date header' => sub {
    my $r = raw("GET /cl HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") or return;
    my @date = values_of($r, 'date');
    is(scalar @date, 1, 'exactly one Date header');
    like($date[0], qr/^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT$/,
        'IMF-fixdate format');
    my $t = str2time($date[0]);
    ok(defined $t, 'parseable');
    ok(defined $t && abs($t - time) < 60, 'close to now');
};

subtest 'Server header added by the server' => sub {
    my $r = raw("GET /cl HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") or return;
    is([ values_of($r, 'server') ], [ $server_value ], "one Server: $server_value");
    like($r->{head_raw}, qr/\r\nServer: \Q$server_value\E\r\n/i, 'Server line on the wire');
    # Header-name case is not significant in HTTP; the reference writes
    # "Server", record what this server writes without asserting it.
    my ($line) = $r->{head_raw} =~ /\r\n(server):/i;
    note("Server header name on the wire: '$line'");
    like($PAGI::Server::VERSION, qr/^\d+\.\d+/, 'version looks like a version');
};

subtest 'app-provided Server header wins' => sub {
    my $r = raw("GET /own-server HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") or return;
    is([ values_of($r, 'server') ], [ 'MyApp/1.0' ], 'only the app value, once');
    $r = raw("GET /own-server-lc HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") or return;
    is([ values_of($r, 'server') ], [ 'lower/2' ], 'lower-case app header also suppresses the default');
};

subtest 'HTTP/1.1 framing' => sub {
    my $r = raw("GET /nocl HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") or return;
    is([ values_of($r, 'transfer-encoding') ], [ 'chunked' ], 'no Content-Length -> chunked');
    is([ values_of($r, 'content-length') ], [], 'no Content-Length added');
    ok($r->{chunked}, 'body is chunk-framed');
    is($r->{body}, 'hello world', 'de-chunked body');

    $r = raw("GET /cl HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n") or return;
    is([ values_of($r, 'transfer-encoding') ], [], 'Content-Length -> not chunked');
    is([ values_of($r, 'content-length') ], [ 11 ], 'Content-Length kept');
    is($r->{body}, 'hello world', 'body');
};

subtest 'HTTP/1.0 without keep-alive closes' => sub {
    for my $path ('/nocl', '/cl') {
        my ($r, $c) = raw("GET $path HTTP/1.0\r\nHost: x\r\n\r\n") or next;
        ok(!grep({ /chunked/i } values_of($r, 'transfer-encoding')), "$path: no chunked encoding");
        is($r->{body}, 'hello world', "$path: body");
        unlike($r->{body}, qr/^[0-9a-f]+\r\n/, "$path: no chunk-size line in body");
        my $how = $c->wait_close(3);
        like($how, qr/^(eof|reset)$/, "$path: connection closed after the response") or diag($how);
        is($c->{buf}, '', "$path: nothing after the body");
    }
};

subtest 'HTTP/1.1 keep-alive: two sequential requests' => sub {
    my $c = RawHTTP->new(loop => $loop, port => $port);
    my $me = $c->sock->sockport;
    $c->write("GET /echo/one HTTP/1.1\r\nHost: x\r\n\r\n");
    my $r1 = $c->read_response;
    is($r1 && $r1->{body}, "one:$me", 'first response');
    ok(!$c->{eof}, 'connection still open');
    $c->write("GET /echo/two HTTP/1.1\r\nHost: x\r\n\r\n");
    my $r2 = $c->read_response;
    is($r2 && $r2->{body}, "two:$me", 'second response on the same socket');
};

subtest 'pipelining: responses in request order' => sub {
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("GET /echo/slow HTTP/1.1\r\nHost: x\r\n\r\nGET /echo/fast HTTP/1.1\r\nHost: x\r\n\r\n"
            . "GET /echo/last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    my @bodies;
    for (1 .. 3) {
        my $r = $c->read_response or last;
        push @bodies, $r->{body} =~ s/:.*//r;
    }
    is(\@bodies, [qw(slow fast last)], 'all three responses, in order');
};

subtest 'HEAD has no body' => sub {
    for my $path ('/cl', '/nocl') {
        my $c = RawHTTP->new(loop => $loop, port => $port);
        $c->write("HEAD $path HTTP/1.1\r\nHost: x\r\n\r\n");
        my $r = $c->read_response(head => 1);
        ok($r, "$path: HEAD response") or next;
        is($r->{status}, 200, "$path: status");
        my @cl = values_of($r, 'content-length');
        ok(!@cl || $cl[0] == 11, "$path: Content-Length absent or that of GET")
            or diag("content-length: @cl");
        note("$path: HEAD Content-Length " . (@cl ? $cl[0] : 'omitted'));
        # Any body bytes would show up here.
        $c->wait_for(0.4, sub { 0 });
        is($c->{buf}, '', "$path: no body bytes after the header block");
        $c->write("GET /echo/next HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        my $r2 = $c->read_response;
        like($r2 && $r2->{body}, qr/^next:/, "$path: next request on the same socket works");
    }
};

subtest 'Net::Async::HTTP sees the server headers' => sub {
    my $http = Net::Async::HTTP->new(timeout => 10);
    $loop->add($http);
    my $res = $http->do_request(uri => "http://127.0.0.1:$port/cl")->get;
    is($res->header('Server'), $server_value, 'Server');
    ok(str2time($res->header('Date')), 'Date parseable');
    $loop->remove($http);
};

$server->shutdown->get;
$loop->remove($server);

done_testing;
