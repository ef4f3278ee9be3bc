use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Net::Async::HTTP;
use Future::AsyncAwait;
use Time::HiRes qw(time);
use RawHTTP qw(start_server pump_until);

my $loop = IO::Async::Loop->new;

# Receive with an upper bound so a broken server cannot hang the test.
async sub receive_within {
    my ($receive, $secs) = @_;
    return await Future->wait_any(
        $receive->(),
        $loop->delay_future(after => $secs)->then(sub { Future->done({ type => 'TIMEOUT' }) }),
    );
}

async sub reply {
    my ($send, $body) = @_;
    await $send->({ type => 'http.response.start', status => 200,
                    headers => [['content-type', 'text/plain'], ['content-length', length $body]] });
    await $send->({ type => 'http.response.body', body => $body });
}

# Per-path behaviour; %seen records what the app observed.
my %seen;
my %route;

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    my $h = $route{ $scope->{path} } or return await reply($send, 'no route');
    await $h->($scope, $receive, $send);
};

my @warnings;
local $SIG{__WARN__} = sub { push @warnings, $_[0] };

my $server = start_server($loop, app => $app);
my $port   = $server->port;
my $http   = Net::Async::HTTP->new(timeout => 15, max_connections_per_host => 2);
$loop->add($http);

# ---------------------------------------------------------------- receive

$route{'/collect'} = async sub {
    my ($scope, $receive, $send) = @_;
    my @ev;
    while (1) {
        my $ev = await receive_within($receive, 10);
        push @ev, $ev;
        last unless $ev->{type} eq 'http.request' && $ev->{more};
    }
    $seen{collect} = \@ev;
    await reply($send, 'got ' . join('', map { $_->{body} // '' } @ev) =~ tr/\0-\xff//);
};

sub check_events {
    my ($events, $expect, $label) = @_;
    ok(scalar @$events >= 1, "$label: at least one event");
    my @types = map { $_->{type} } @$events;
    is([ grep { $_ ne 'http.request' } @types ], [], "$label: all events are http.request");
    my $last = $events->[-1];
    ok(defined $last->{more} && !$last->{more}, "$label: last event has more=0");
    ok(!grep({ !$_->{more} } @{$events}[0 .. $#$events - 1]), "$label: earlier events have more=1");
    my $got = join '', map { $_->{body} // '' } @$events;
    is(length $got, length $expect, "$label: byte count");
    ok($got eq $expect, "$label: bytes identical");
    ok(!utf8::is_utf8($got), "$label: body is bytes");
}

for my $case ([ '0 B', '' ], [ '1 KiB', join('', map { chr($_ % 256) } 0 .. 1023) ],
              [ '3 MiB', pack('N*', 0 .. (3 * 1024 * 1024 / 4 - 1)) ]) {
    my ($label, $data) = @$case;
    subtest "POST body $label" => sub {
        delete $seen{collect};
        my $res = $http->do_request(method => 'POST', uri => "http://127.0.0.1:$port/collect",
            content => $data, content_type => 'application/octet-stream')->get;
        is($res->code, 200, 'status');
        is($res->content, 'got ' . length($data), 'app saw the right length');
        ok($seen{collect}, 'app recorded events') or return;
        check_events($seen{collect}, $data, $label);
        note(scalar(@{ $seen{collect} }) . " http.request event(s) for $label");
    };
}

subtest 'chunked request body is de-chunked' => sub {
    delete $seen{collect};
    my $req = "POST /collect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
            . "Content-Type: text/plain\r\nConnection: close\r\n\r\n"
            . "5\r\nhello\r\n1;ext=1\r\n,\r\n6\r\n world\r\n0\r\n\r\n";
    my ($r, $c) = RawHTTP->request($loop, $port, $req);
    ok($r, 'response received') or return;
    is($r->{status}, 200, 'status');
    is($r->{body}, 'got 12', 'length of de-chunked body');
    ok($seen{collect}, 'events recorded') or return;
    check_events($seen{collect}, 'hello, world', 'chunked');
};

subtest 'chunked body in separate writes' => sub {
    delete $seen{collect};
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("POST /collect HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n");
    for my $piece ("3\r\nabc\r\n", "4\r\ndefg\r\n", "0\r\n\r\n") {
        pump_until($loop, 0.1, sub { 0 });
        $c->write($piece);
    }
    my $r = $c->read_response;
    is($r && $r->{body}, 'got 7', 'all chunks delivered');
    check_events($seen{collect} // [], 'abcdefg', 'split chunked');
};

$route{'/get-then-disconnect'} = async sub {
    my ($scope, $receive, $send) = @_;
    my $first = await receive_within($receive, 5);
    await reply($send, 'done');
    my $after = await receive_within($receive, 2);
    $seen{gtd} = [ $first, $after ];
};

subtest 'GET: one empty http.request, then http.disconnect after the response' => sub {
    delete $seen{gtd};
    my $res = $http->do_request(uri => "http://127.0.0.1:$port/get-then-disconnect")->get;
    is($res->content, 'done', 'response');
    ok(pump_until($loop, 4, sub { $seen{gtd} }), 'app finished') or return;
    my ($first, $after) = @{ $seen{gtd} };
    is($first, { type => 'http.request', body => '', more => 0 }, 'exactly one empty http.request (more 0)');
    is($after->{type}, 'http.disconnect', 'receive after the response completes gives http.disconnect');
};

# Client closes while the app waits on its second receive.
my %closed_at;
$route{'/wait-disconnect'} = async sub {
    my ($scope, $receive, $send) = @_;
    my $first  = await receive_within($receive, 5);
    my $second = await receive_within($receive, 6);
    $seen{wd} = { first => $first, second => $second, at => time };
};

subtest 'client closes while app waits on receive (no body)' => sub {
    delete $seen{wd};
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("GET /wait-disconnect HTTP/1.1\r\nHost: x\r\n\r\n");
    pump_until($loop, 0.5, sub { 0 });   # let the app reach its second receive
    ok(!$seen{wd}, 'app still waiting before close');
    my $t0 = time;
    $c->close;
    ok(pump_until($loop, 8, sub { $seen{wd} }), 'app finished') or return;
    is($seen{wd}{first}{type}, 'http.request', 'first event is the request');
    is($seen{wd}{second}{type}, 'http.disconnect', 'second event is http.disconnect');
    my $delay = $seen{wd}{at} - $t0;
    ok($delay < 2, 'disconnect delivered within 2 s of close') or diag("took ${delay}s");
};

subtest 'client closes mid-body while app waits on receive' => sub {
    delete $seen{wd};
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("POST /wait-disconnect HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n0123456789");
    pump_until($loop, 0.5, sub { 0 });
    my $t0 = time;
    $c->close;
    ok(pump_until($loop, 8, sub { $seen{wd} }), 'app finished') or return;
    is($seen{wd}{first}{type}, 'http.request', 'first event carries the partial body');
    is($seen{wd}{first}{body}, '0123456789', 'partial body bytes');
    ok($seen{wd}{first}{more}, 'first event more=1');
    is($seen{wd}{second}{type}, 'http.disconnect', 'then http.disconnect');
    ok($seen{wd}{at} - $t0 < 2, 'within 2 s of close');
};

# ------------------------------------------------------------------- send

$route{'/stream'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->({ type => 'http.response.start', status => 200, headers => [['content-type', 'text/plain']] });
    for my $part (qw(alpha beta gamma)) {
        await $send->({ type => 'http.response.body', body => $part, more => 1 });
    }
    await $send->({ type => 'http.response.body', body => '', more => 0 });
};

subtest 'response.start + body with more' => sub {
    my $res = $http->do_request(uri => "http://127.0.0.1:$port/stream")->get;
    is($res->code, 200, 'status');
    is($res->content, 'alphabetagamma', 'streamed body joined');
};

$route{'/after-final'} = async sub {
    my ($scope, $receive, $send) = @_;
    await reply($send, 'final');
    my ($f, $err);
    eval { $f = $send->({ type => 'http.response.body', body => 'EXTRA', more => 0 }); 1 } or $err = $@;
    my $awaited = eval { await $f; 1 } if $f;
    $seen{af} = { f => $f, err => $err, awaited => $awaited, err2 => $@ };
};

subtest 'send after the final body is a silent no-op' => sub {
    delete $seen{af};
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("GET /after-final HTTP/1.1\r\nHost: x\r\n\r\n");
    my $r = $c->read_response;
    is($r && $r->{body}, 'final', 'body is the final one');
    ok(pump_until($loop, 3, sub { $seen{af} }), 'app finished') or return;
    is($seen{af}{err}, undef, 'no exception from send');
    ok($seen{af}{f} && $seen{af}{f}->can('is_done'), 'send returned a Future');
    ok($seen{af}{f} && $seen{af}{f}->is_done, 'the Future is done');
    ok($seen{af}{awaited}, 'awaiting it does not throw');
    pump_until($loop, 0.3, sub { 0 });
    $c->wait_for(0.1, sub { 0 });
    is($c->{buf}, '', 'nothing extra reached the wire');
    # The connection is still usable.
    $c->write("GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    my $r2 = $c->read_response;
    is($r2 && $r2->{body}, 'alphabetagamma', 'next request on the same connection');
};

$route{'/unknown'} = async sub {
    my ($scope, $receive, $send) = @_;
    my $ok = eval { await $send->({ type => 'http.response.bogus', body => 'x' }); 1 };
    $seen{unknown} = $ok ? 'no error' : $@;
    await reply($send, 'after');
};

subtest 'unknown event type dies' => sub {
    delete $seen{unknown};
    my $res = $http->do_request(uri => "http://127.0.0.1:$port/unknown")->get;
    is($res->content, 'after', 'app recovered and answered');
    like($seen{unknown}, qr/Unrecognized event type/, 'error message');
    like($seen{unknown}, qr/http\.response\.bogus/, 'names the type');
};

$route{'/fullflush'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->({ type => 'http.response.start', status => 200, headers => [['content-type', 'text/plain']] });
    my $ok = eval { await $send->({ type => 'http.fullflush' }); 1 };
    $seen{ff} = $ok ? 'ok' : $@;
    await $send->({ type => 'http.response.body', body => 'flushed', more => 0 });
};

subtest 'http.fullflush without the extension dies' => sub {
    delete $seen{ff};
    @warnings = ();
    my $res = eval { $http->do_request(uri => "http://127.0.0.1:$port/fullflush")->get };
    pump_until($loop, 2, sub { defined $seen{ff} });
    like($seen{ff}, qr/fullflush/, 'send died mentioning fullflush');
    isnt($seen{ff}, 'ok', 'did not succeed');
};

$loop->remove($http);
$server->shutdown->get;
$loop->remove($server);

subtest 'http.fullflush with the extension works' => sub {
    my $srv = start_server($loop, app => $app, extensions => { fullflush => {} });
    delete $seen{ff};
    my ($r) = RawHTTP->request($loop, $srv->port, "GET /fullflush HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    is($seen{ff}, 'ok', 'fullflush accepted');
    is($r && $r->{status}, 200, 'status');
    is($r && $r->{body}, 'flushed', 'body after the flush');
    $srv->shutdown->get;
    $loop->remove($srv);
};

$route{'/trailers'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->({ type => 'http.response.start', status => 200, trailers => 1,
                    headers => [['content-type', 'text/plain']] });
    await $send->({ type => 'http.response.body', body => 'hello ', more => 1 });
    await $send->({ type => 'http.response.body', body => 'world', more => 0 });
    my $ok = eval { await $send->({ type => 'http.response.trailers', headers => [['x-checksum', 'abc123']] }); 1 };
    $seen{tr} = $ok ? 'ok' : $@;
};

subtest 'trailers' => sub {
    my $srv = start_server($loop, app => $app);
    delete $seen{tr};
    my $c = RawHTTP->new(loop => $loop, port => $srv->port);
    $c->write("GET /trailers HTTP/1.1\r\nHost: x\r\nTE: trailers\r\n\r\n");
    my $r = $c->read_response;
    ok($r, 'complete response (framing ended)') or diag("error: " . ($c->{error} // '?'));
    is($r && $r->{status}, 200, 'status');
    is($r && $r->{body}, 'hello world', 'body arrived');
    ok($r && $r->{chunked}, 'chunked framing');
    ok(pump_until($loop, 2, sub { $seen{tr} }), 'app finished');
    is($seen{tr}, 'ok', 'trailers send did not fail');
    my @tr = $r ? @{ $r->{trailers} } : ();
    note(@tr ? 'trailers on the wire: ' . join(', ', map { "$_->[0]: $_->[1]" } @tr)
             : 'no trailer fields on the wire');
    # The response really ended: the connection serves another request.
    $c->write("GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    my $r2 = $c->read_response;
    is($r2 && $r2->{body}, 'alphabetagamma', 'next request after the trailers response');
    $srv->shutdown->get;
    $loop->remove($srv);
};

done_testing;
