use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Future::AsyncAwait;
use Time::HiRes qw(time);
use RawHTTP qw(start_server pump_until);

# Expect: 100-continue. The interim "100 Continue" is sent only once the app
# asks for the body (its first $receive), never up front, and never when the
# app answers without reading.

my $loop = IO::Async::Loop->new;

my %seen;

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    if ($scope->{path} eq '/echo') {
        await $loop->delay_future(after => 0.5);
        $seen{receive_at} = time;
        my $body = '';
        while (1) {
            my $ev = await $receive->();
            last unless $ev->{type} eq 'http.request';
            $body .= $ev->{body} // '';
            last unless $ev->{more};
        }
        $seen{body} = $body;
        await $send->({ type => 'http.response.start', status => 200,
                        headers => [['content-type', 'text/plain'], ['content-length', length $body]] });
        await $send->({ type => 'http.response.body', body => $body });
        return;
    }
    # /noread: answer without ever calling $receive.
    $seen{noread}++;
    await $send->({ type => 'http.response.start', status => 200,
                    headers => [['content-type', 'text/plain'], ['content-length', 7]] });
    await $send->({ type => 'http.response.body', body => 'no-read' });
};

my $server = start_server($loop, app => $app);
my $port   = $server->port;

subtest '100 Continue only after the app starts reading' => sub {
    %seen = ();
    my $c = RawHTTP->new(loop => $loop, port => $port);
    my $t0 = time;
    $c->write("POST /echo HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");

    $c->wait_for(0.3, sub { length $_[0]{buf} });
    is($c->{buf}, '', 'nothing at all sent within the first 0.3 s');

    my $interim = $c->read_response(timeout => 3);
    my $t_continue = time;
    ok($interim, 'an interim response arrives') or diag('error: ' . ($c->{error} // '?'));
    is($interim && $interim->{status}, 100, 'it is 100 Continue');
    like($interim && $interim->{head_raw}, qr{^HTTP/1\.1 100 Continue\r\n}, 'status line "HTTP/1.1 100 Continue"');
    ok(defined $seen{receive_at}, 'app has started its first receive');
    ok(defined $seen{receive_at} && $t_continue >= $seen{receive_at},
        '100 Continue arrived after the app called $receive')
        or diag(sprintf('continue at +%.3f, receive at +%s', $t_continue - $t0,
            defined $seen{receive_at} ? sprintf('%.3f', $seen{receive_at} - $t0) : 'never'));
    ok($t_continue - $t0 >= 0.3, 'not within the first 0.3 s')
        or diag(sprintf('arrived after %.3f s', $t_continue - $t0));

    $c->write('hello');
    my $r = $c->read_response(timeout => 5);
    ok($r, 'final response') or diag('error: ' . ($c->{error} // '?'));
    is($r && $r->{status}, 200, 'status 200');
    is($r && $r->{body}, 'hello', 'body echoes the 5 bytes sent after 100 Continue');
    is($seen{body}, 'hello', 'app received the body');
};

subtest 'no 100 Continue when the app never reads the body' => sub {
    %seen = ();
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("POST /noread HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n");
    my $r = $c->read_response(timeout => 5);
    ok($r, 'a response arrives without sending the body') or diag('error: ' . ($c->{error} // '?'));
    is($r && $r->{status}, 200, 'first response is the 200, no 100 Continue before it')
        or diag($r && $r->{head_raw});
    is($r && $r->{body}, 'no-read', 'body');
    is($seen{noread}, 1, 'app ran once');
    # Whatever the server does next (close, or keep the connection), it must
    # not send a late 100 Continue.
    my $how = $c->wait_close(0.5);
    unlike($c->{buf}, qr/100 Continue/, 'no 100 Continue afterwards either');
    note("after the response: $how");
};

$server->shutdown->get;
$loop->remove($server);

done_testing;
