use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Future;
use Future::AsyncAwait;
use RawHTTP qw(start_server pump_until);

my $loop = IO::Async::Loop->new;

my @warnings;
$SIG{__WARN__} = sub { push @warnings, $_[0] };

my %seen;
my %route;
$route{'/die-early'} = async sub { die "kaboom-early-4711\n" };
$route{'/die-noline'} = async sub { die "kaboom without newline" };
$route{'/failed-future'} = sub { Future->fail("failed-future-reason\n") };
$route{'/no-response'} = async sub { return };
$route{'/die-late'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->({ type => 'http.response.start', status => 200, headers => [['content-type', 'text/plain']] });
    await $send->({ type => 'http.response.body', body => 'partial-', more => 1 });
    await $loop->delay_future(after => 0.1);
    die "kaboom-late-0815\n";
};
$route{'/slow-no-response'} = async sub {
    await $loop->delay_future(after => 1);
    $seen{slow_done} = 1;
    return;
};
$route{'/inject'} = async sub {
    my ($scope, $receive, $send) = @_;
    my $value = $scope->{query_string} eq 'lf' ? "a\nX-Injected: yes" : "a\r\nX-Injected: yes";
    my $ok = eval {
        await $send->({ type => 'http.response.start', status => 200,
                        headers => [['content-type', 'text/plain'], ['x-evil', $value], ['content-length', 4]] });
        1;
    };
    $seen{inject} = $ok ? 'accepted' : "died: $@";
    unless ($ok) {
        await $send->({ type => 'http.response.start', status => 200,
                        headers => [['content-type', 'text/plain'], ['content-length', 4]] });
    }
    await $send->({ type => 'http.response.body', body => 'safe' });
};
$route{'/ok'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->({ type => 'http.response.start', status => 200, headers => [['content-length', 2]] });
    await $send->({ type => 'http.response.body', body => 'ok' });
};

my $app = sub {
    my ($scope, @rest) = @_;
    return $route{ $scope->{path} }->($scope, @rest);
};

my $server = start_server($loop, app => $app);
my $port   = $server->port;

# Sends a keep-alive request (the server, not the client, decides to close).
sub exchange {
    my ($path) = @_;
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("GET $path HTTP/1.1\r\nHost: x\r\n\r\n");
    my $r = $c->read_response;
    return ($r, $c);
}

sub expect_500 {
    my ($path, $warn_re, $label) = @_;
    @warnings = ();
    my ($r, $c) = exchange($path);
    ok($r, "$label: response") or return;
    is($r->{status}, 500, "$label: status 500");
    pump_until($loop, 1, sub { grep { /$warn_re/ } @warnings });
    ok((grep { /$warn_re/ } @warnings), "$label: warning matches $warn_re")
        or diag("warnings: @warnings");
    my $how = $c->wait_close(3);
    like($how, qr/^(eof|reset)$/, "$label: connection closed after the 500") or diag($how);
    return $r;
}

subtest 'app dies before response.start' => sub {
    my $r = expect_500('/die-early', qr/kaboom-early-4711/, 'die');
    ok((grep { /PAGI application error/ && /kaboom-early-4711/ } @warnings), 'warning names the app error');
    is([ map { $_->[1] } grep { lc $_->[0] eq 'content-type' } @{ $r->{headers} } ], ['text/plain'],
        '500 is text/plain') if $r;
    expect_500('/die-noline', qr/kaboom without newline/, 'die without newline');
};

subtest 'app returns a failed Future' => sub {
    expect_500('/failed-future', qr/failed-future-reason/, 'failed future');
};

subtest 'app returns without a response (quiet => 1)' => sub {
    expect_500('/no-response', qr/without starting a response/, 'no response');
};

subtest 'app dies after the response started' => sub {
    @warnings = ();
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("GET /die-late HTTP/1.1\r\nHost: x\r\n\r\n");
    my $how = $c->wait_close(5);
    like($how, qr/^(eof|reset)$/, 'connection closed') or diag($how);
    like($c->{buf}, qr{^HTTP/1\.1 200 }, 'the 200 head had been sent');
    like($c->{buf}, qr/partial-/, 'partial body arrived');
    unlike($c->{buf}, qr/\r\n0\r\n\r\n\z/, 'chunked body not terminated (truncated response)');
    unlike($c->{buf}, qr/ 500 /, 'no 500 after the response started');
    pump_until($loop, 1, sub { grep { /after response started/ } @warnings });
    ok((grep { /after response started/ && /kaboom-late-0815/ } @warnings),
        'warning mentions "after response started" and the error') or diag("warnings: @warnings");
};

subtest 'client gone before app returns without response' => sub {
    @warnings = ();
    delete $seen{slow_done};
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("GET /slow-no-response HTTP/1.1\r\nHost: x\r\n\r\n");
    pump_until($loop, 0.2, sub { 0 });
    $c->close;
    ok(pump_until($loop, 4, sub { $seen{slow_done} }), 'app ran to completion');
    pump_until($loop, 0.5, sub { 0 });
    is([ grep { /without starting a response|PAGI application error/ } @warnings ], [],
        'no 500 warning for a vanished client');
};

subtest 'CR/LF in a response header value never reaches the wire' => sub {
    for my $variant ('crlf', 'lf') {
        @warnings = ();
        delete $seen{inject};
        my $c = RawHTTP->new(loop => $loop, port => $port);
        $c->write("GET /inject?$variant HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        $c->wait_close(5);
        my $wire = $c->{buf};
        like($wire, qr{^HTTP/1\.1 \d{3} }, "$variant: got a response");
        unlike($wire, qr/(^|[\r\n])X-Injected:/i, "$variant: no injected header line");
        my $head = (split /\r\n\r\n/, $wire, 2)[0] // '';
        for my $line (split /\r\n/, $head) {
            unlike($line, qr/[\r\n]/, "$variant: header line has no bare CR/LF");
        }
        note("$variant: send of the bad header " . ($seen{inject} // 'not reached'));
        note("$variant: warnings: " . join('', @warnings)) if @warnings;
    }
};

subtest 'CR/LF in a header value fails the send (spec: MUST reject by failing the send)' => sub {
    for my $variant ('crlf', 'lf') {
        delete $seen{inject};
        my $c = RawHTTP->new(loop => $loop, port => $port);
        $c->write("GET /inject?$variant HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        $c->wait_close(5);
        like($seen{inject} // '', qr/^died: .*header/i, "$variant: send of http.response.start raised")
            or diag('send result: ' . ($seen{inject} // 'not reached'));
    }
};

subtest 'server keeps serving after all that' => sub {
    my ($r) = exchange('/ok');
    is($r && $r->{status}, 200, 'status 200');
    is($r && $r->{body}, 'ok', 'body');
};

$server->shutdown->get;
$loop->remove($server);

done_testing;
