use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Future::AsyncAwait;
use Socket qw(SHUT_WR);
use RawHTTP qw(start_server pump_until);

# How the input side of a connection ends: a client that half-closes after
# its request still gets the whole response; CONNECT is refused and nothing
# after it is parsed; an HTTP/1.0 client's Expect gets no 100 Continue.

my $loop = IO::Async::Loop->new;
$SIG{PIPE} = 'IGNORE';    # writes to a connection the server closed

my @warnings;
$SIG{__WARN__} = sub { push @warnings, $_[0] };

my (@calls, %seen);
my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    push @calls, "$scope->{method} $scope->{path}";
    my $body = '';
    while (1) {
        my $ev = await $receive->();
        if ($ev->{type} ne 'http.request') {
            $seen{early_end} = $ev;
            return;
        }
        $body .= $ev->{body};
        last unless $ev->{more};
    }
    if ($scope->{path} eq '/wait-more') {
        # Waits for input after the request: only a disconnect can come.
        my $ev = await $receive->();
        $seen{wait_more} = $ev;
        return;
    }
    # Answer a little later, so the client's EOF is seen before the response.
    await $loop->delay_future(after => 0.3);
    my $out = "method=$scope->{method} body=$body " . ('x' x 100_000);
    await $send->({ type => 'http.response.start', status => 200,
                    headers => [['content-type', 'text/plain'], ['content-length', length $out]] });
    await $send->({ type => 'http.response.body', body => $out });
};

my $server = start_server($loop, app => $app);
my $port   = $server->port;

subtest 'a half-closed client still gets the whole response' => sub {
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello");
    shutdown($c->sock, SHUT_WR) or die "shutdown: $!";
    my $r = $c->read_response(timeout => 5);
    is($r && $r->{status}, 200, 'answered 200') or diag('error: ' . ($c->{error} // '?'));
    is($r && length($r->{body}), length("method=POST body=hello ") + 100_000, 'the whole body');
    like($r && $r->{body}, qr/^method=POST body=hello /, 'with the request body');
    like($r && $r->{header}{connection}, qr/close/i, 'Connection: close');
    is($c->wait_close(3), 'eof', 'then the server closes');
};

subtest 'a half-close after pipelined requests ends after the first response' => sub {
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n");
    shutdown($c->sock, SHUT_WR) or die "shutdown: $!";
    my $r = $c->read_response(timeout => 5);
    is($r && $r->{status}, 200, 'the first request is answered');
    is($c->wait_close(3), 'eof', 'then the connection is closed');
    is($c->{buf}, '', 'no second response');
};

subtest 'an app waiting for more after a half-close sees http.disconnect' => sub {
    delete $seen{wait_more};
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("GET /wait-more HTTP/1.1\r\nHost: x\r\n\r\n");
    shutdown($c->sock, SHUT_WR) or die "shutdown: $!";
    ok(pump_until($loop, 3, sub { $seen{wait_more} }), 'the app was told');
    is($seen{wait_more}{type}, 'http.disconnect', 'http.disconnect');
    is($seen{wait_more}{reason}, 'client_closed', 'reason client_closed');
    like($c->wait_close(3), qr/^(eof|reset)$/, 'the connection is closed');
};

subtest 'a client that closes mid-body has disconnected' => sub {
    delete $seen{early_end};
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\nonly-some");
    shutdown($c->sock, SHUT_WR) or die "shutdown: $!";
    ok(pump_until($loop, 3, sub { $seen{early_end} }), 'the app saw the end');
    is($seen{early_end}{type}, 'http.disconnect', 'http.disconnect');
    like($c->wait_close(3), qr/^(eof|reset)$/, 'closed') or diag($c->{buf});
    unlike($c->{buf}, qr/ 200 /, 'no response');
};

subtest 'CONNECT is refused and what follows it is never parsed' => sub {
    @calls = ();
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n"
        . "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n");
    my $r = $c->read_response(timeout => 5);
    ok($r, 'answered') or diag('error: ' . ($c->{error} // '?'));
    like($r && $r->{status}, qr/^(405|501)$/, 'refused with 405 or 501') or diag($r && $r->{head_raw});
    like($r && $r->{header}{connection}, qr/close/i, 'Connection: close');
    like($c->wait_close(3), qr/^(eof|reset)$/, 'then closed');
    is($c->{buf}, '', 'no second response');
    pump_until($loop, 0.3, sub { 0 });
    is(\@calls, [], 'the app saw neither the CONNECT nor the bytes after it');

    my $later = RawHTTP->new(loop => $loop, port => $port);
    $later->write("CONNECT example.test:443 HTTP/1.1\r\nHost: example.test:443\r\n\r\n");
    pump_until($loop, 0.2, sub { 0 });
    eval { $later->write("GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n", 1) };    # may find it closed
    my $r2 = $later->read_response(timeout => 5);
    like($r2 && $r2->{status}, qr/^(405|501)$/, 'also refused when the next bytes come later');
    like($later->wait_close(3), qr/^(eof|reset)$/, 'and closed');
    is(\@calls, [], 'still no app call');
};

subtest 'Expect: 100-continue from an HTTP/1.0 client gets no 100' => sub {
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("POST /echo HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello");
    my $r = $c->read_response(timeout => 5);
    is($r && $r->{status}, 200, 'the first thing sent is the final response')
        or diag('got: ' . substr($c->{buf} // '', 0, 80));
    is($r && $r->{version}, '1.0', 'as HTTP/1.0');
    like($r && $r->{body}, qr/^method=POST body=hello /, 'body read');

    my $c11 = RawHTTP->new(loop => $loop, port => $port);
    $c11->write("POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    my $interim = $c11->read_response(timeout => 5, head => 1);
    is($interim && $interim->{status}, 100, 'an HTTP/1.1 client still gets 100 Continue');
    $c11->write('hello');
    my $final = $c11->read_response(timeout => 5);
    is($final && $final->{status}, 200, 'then the response');
};

$server->shutdown->get;
$loop->remove($server);

done_testing;
