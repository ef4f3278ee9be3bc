use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Net::Async::HTTP;
use Future::AsyncAwait;
use RawHTTP qw(start_server);

# Every test here captures the scope of one request and inspects it.

my $loop = IO::Async::Loop->new;

my @scopes;
my $app = async sub {
    my ($scope, $receive, $send) = @_;
    push @scopes, $scope;
    await $send->({ type => 'http.response.start', status => 200,
                    headers => [['content-type', 'text/plain'], ['content-length', 2]] });
    await $send->({ type => 'http.response.body', body => 'ok' });
};

my $server = start_server($loop, app => $app);
my $port   = $server->port;
ok($port > 0, 'server bound an ephemeral port');

my $http = Net::Async::HTTP->new(timeout => 10);
$loop->add($http);

sub raw_scope {
    my ($request) = @_;
    @scopes = ();
    my ($resp, $c) = RawHTTP->request($loop, $port, $request);
    ok($resp, 'got a response') or diag("raw request failed: " . ($c->{error} // '?'));
    is($resp && $resp->{status}, 200, 'status 200');
    is(scalar @scopes, 1, 'app called once');
    return ($scopes[0], $c);
}

subtest 'basic HTTP/1.1 scope via Net::Async::HTTP' => sub {
    @scopes = ();
    my $res = $http->do_request(uri => "http://127.0.0.1:$port/hello/world?x=1&y=%20")->get;
    is($res->code, 200, 'status');
    is(scalar @scopes, 1, 'one scope');
    my $s = $scopes[0];
    is($s->{type}, 'http', 'type');
    is($s->{pagi}, hash { field version => '0.3'; field spec_version => '0.3'; etc() }, 'pagi versions');
    is($s->{http_version}, '1.1', 'http_version 1.1');
    is($s->{method}, 'GET', 'method');
    is($s->{scheme}, 'http', 'scheme');
    is($s->{path}, '/hello/world', 'path');
    is($s->{raw_path}, '/hello/world', 'raw_path');
    is($s->{query_string}, 'x=1&y=%20', 'query_string raw (not decoded)');
    is($s->{root_path}, '', 'root_path empty');
    ref_ok($s->{headers}, 'ARRAY', 'headers arrayref');
    ref_ok($s->{state}, 'HASH', 'state hashref');
    ref_ok($s->{extensions}, 'HASH', 'extensions is a hash even when none configured');
    ok(!exists $s->{extensions}{fullflush}, 'no fullflush without the option');
    is($s->{server}, [ '127.0.0.1', $port ], 'server [ip, port]');
    ref_ok($s->{client}, 'ARRAY', 'client arrayref');
    is(scalar @{ $s->{client} }, 2, 'client has two elements');
    is($s->{client}[0], '127.0.0.1', 'client ip');
    like($s->{client}[1], qr/^\d+$/, 'client port numeric');
    ok($s->{client}[1] > 0 && $s->{client}[1] != $port, 'client port is the peer port');
    my ($host) = grep { $_->[0] eq 'host' } @{ $s->{headers} };
    ok($host, 'host header present (lower-case name)');
};

subtest 'HTTP/1.0 request line' => sub {
    my ($s) = raw_scope("GET /old HTTP/1.0\r\nHost: x\r\n\r\n");
    is($s->{http_version}, '1.0', 'http_version 1.0');
    is($s->{method}, 'GET', 'method');
    is($s->{path}, '/old', 'path');
};

subtest 'other methods' => sub {
    my ($s) = raw_scope("DELETE /thing HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    is($s->{method}, 'DELETE', 'DELETE');
    ($s) = raw_scope("PUT /thing HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc");
    is($s->{method}, 'PUT', 'PUT');
};

subtest 'client and server match the socket' => sub {
    my ($s, $c) = raw_scope("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    is($s->{client}, [ '127.0.0.1', $c->sock->sockport ], 'client is our socket address');
    is($s->{server}, [ '127.0.0.1', $port ], 'server is the listening address');
    is($s->{path}, '/', 'root path');
    is($s->{raw_path}, '/', 'root raw_path');
    is($s->{query_string}, '', 'query_string empty string when absent');
    ok(defined $s->{query_string}, 'query_string defined');
};

subtest 'percent-decoded UTF-8 path' => sub {
    my ($s) = raw_scope("GET /caf%C3%A9/x%20y?q=%C3%A9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    is($s->{path}, "/caf\x{e9}/x y", 'path decoded to characters');
    ok(utf8::is_utf8($s->{path}), 'path is a character string');
    is(length($s->{path}), 9, 'length counts characters');
    is($s->{raw_path}, '/caf%C3%A9/x%20y', 'raw_path untouched');
    is($s->{query_string}, 'q=%C3%A9', 'query_string untouched');
};

subtest 'invalid UTF-8 path stays bytes' => sub {
    my ($s) = raw_scope("GET /bad%FF HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    is($s->{path}, "/bad\xFF", 'percent-decoded bytes');
    ok(!utf8::is_utf8($s->{path}), 'not UTF-8 flagged');
    is(length($s->{path}), 5, 'five bytes');
    is($s->{raw_path}, '/bad%FF', 'raw_path');
};

subtest 'plus sign kept, ascii path untouched' => sub {
    my ($s) = raw_scope("GET /a+b/c%2Bd?x=a+b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    is($s->{path}, '/a+b/c+d', '+ is not a space in the path');
    is($s->{raw_path}, '/a+b/c%2Bd', 'raw_path');
    is($s->{query_string}, 'x=a+b', 'query keeps +');
};

subtest 'headers: lower-case names, byte values, duplicates' => sub {
    my ($s) = raw_scope(
        "GET /h HTTP/1.1\r\nHost: example.test\r\nX-Custom-Thing: Mixed Case Value\r\n"
      . "X-Dup: one\r\nX-Dup: two\r\nX-Bytes: caf\xC3\xA9\r\nConnection: close\r\n\r\n");
    my $h = $s->{headers};
    for my $pair (@$h) {
        is(scalar @$pair, 2, "header '$pair->[0]' is a [name, value] pair");
        is($pair->[0], lc $pair->[0], "name '$pair->[0]' lower-case");
    }
    my %first;
    $first{ $_->[0] } //= $_->[1] for @$h;
    is($first{'x-custom-thing'}, 'Mixed Case Value', 'value case preserved');
    is($first{host}, 'example.test', 'host');
    my @dup = map { $_->[1] } grep { $_->[0] eq 'x-dup' } @$h;
    is(\@dup, [ 'one', 'two' ], 'both X-Dup headers present, in order');
    is($first{'x-bytes'}, "caf\xC3\xA9", 'non-ASCII value is raw bytes');
    ok(!utf8::is_utf8($first{'x-bytes'}), 'header value not UTF-8 flagged');
};

subtest 'state is a hash per request' => sub {
    my ($s1) = raw_scope("GET /1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    my ($s2) = raw_scope("GET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    ref_ok($s1->{state}, 'HASH');
    ref_ok($s2->{state}, 'HASH');
};

$loop->remove($http);
$server->shutdown->get;
$loop->remove($server);

subtest 'extensions option shows up in scope' => sub {
    my $srv = start_server($loop, app => $app, extensions => { fullflush => {} });
    my $p = $srv->port;
    @scopes = ();
    my $r = RawHTTP->request($loop, $p, "GET /x HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    is($r && $r->{status}, 200, 'response');
    is(scalar @scopes, 1, 'one scope');
    ref_ok($scopes[0]{extensions}, 'HASH', 'extensions hash');
    ok(exists $scopes[0]{extensions}{fullflush}, 'fullflush advertised');
    ref_ok($scopes[0]{extensions}{fullflush}, 'HASH', 'fullflush value is a hash');
    $srv->shutdown->get;
    $loop->remove($srv);
};

done_testing;
