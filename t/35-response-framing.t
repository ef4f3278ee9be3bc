use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Future::AsyncAwait;
use RawHTTP qw(start_server pump_until);

# Response framing on the wire: trailers, header case and safety, bodyless
# statuses, HEAD, HTTP/1.0 keep-alive, Content-Length enforcement, the
# server's own Date/Server fields and pipelining. Wherever a connection
# should survive, a second request on the same socket proves it.

my $loop = IO::Async::Loop->new;

my %route;   # path => async sub ($scope, $receive, $send)
my %seen;    # what the app observed, by path

sub start_ev {
    my ($status, @headers) = @_;
    return { type => 'http.response.start', status => $status, headers => \@headers };
}
sub body_ev { my ($b, $more) = @_; { type => 'http.response.body', body => $b, more => $more ? 1 : 0 } }

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    if (my $h = $route{ $scope->{path} }) {
        return await $h->($scope, $receive, $send);
    }
    # Default: an echo of the path, framed by Content-Length.
    my $body = "path=$scope->{path}";
    await $send->(start_ev(200, ['content-type', 'text/plain'], ['content-length', length $body]));
    await $send->(body_ev($body));
};

my @warnings;
local $SIG{__WARN__} = sub { push @warnings, $_[0] };

my $server = start_server($loop, app => $app);
my $port   = $server->port;

sub values_of {
    my ($r, $name) = @_;
    return map { $_->[1] } grep { lc($_->[0]) eq $name } @{ $r->{headers} };
}

sub conn { RawHTTP->new(loop => $loop, port => $port) }

sub req {
    my ($path, %o) = @_;
    my $method = $o{method} // 'GET';
    my $ver    = $o{version} // '1.1';
    return "$method $path HTTP/$ver\r\nHost: x\r\n" . join('', map { "$_\r\n" } @{ $o{headers} // [] }) . "\r\n"
        . ($o{body} // '');
}

# The socket carries nothing more now, is open, and answers another request.
sub still_usable {
    my ($c, $label) = @_;
    $c->wait_for(0.15, sub { 0 });
    is($c->{buf}, '', "$label: no bytes after the response")
        or diag('stray bytes: ' . substr($c->{buf}, 0, 120));
    ok(!$c->{eof} && !$c->{err}, "$label: connection still open");
    $c->{buf} = '';
    eval { $c->write(req('/next')); 1 } or note("write: $@");
    my $r = $c->read_response(timeout => 5);
    ok($r && $r->{status} == 200 && $r->{body} eq 'path=/next', "$label: next request on the socket is answered")
        or diag('next: ' . ($r ? "status $r->{status}, body '$r->{body}'" : 'none (' . ($c->{error} // '?') . ')'));
}

# ------------------------------------------------------------ trailers

$route{'/trailers'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->({ %{ start_ev(200, ['content-type', 'text/plain']) }, trailers => 1 });
    await $send->(body_ev('hello ', 1));
    await $send->(body_ev('world', 1));
    await $send->({ type => 'http.response.trailers', headers => [['x-checksum', 'abc']] });
};

subtest 'trailers on a chunked response (client sent no TE)' => sub {
    my $c = conn();
    $c->write(req('/trailers'));
    $c->wait_for(5, sub { $_[0]{buf} =~ /\r\n0\r\n(?:[^\r\n]+\r\n)*\r\n/ });
    my $raw = $c->{buf};
    my $r = $c->read_response;
    ok($r, 'response') or return;
    is([ values_of($r, 'transfer-encoding') ], [ 'chunked' ], 'chunked');
    is([ values_of($r, 'content-length') ], [], 'no Content-Length');
    is($r->{body}, 'hello world', 'body');
    is($r->{trailers}, [[ 'x-checksum', 'abc' ]], 'one trailer field, x-checksum: abc');
    like($raw, qr/\r\n\r\n(?:[0-9a-fA-F]+\r\n[^\r\n]*\r\n)+0\r\nx-checksum: abc\r\n\r\n\z/,
        'the trailer follows the 0-size chunk and ends the message');
    unlike($r->{head_raw}, qr/x-checksum/i, 'not in the header section');
    still_usable($c, 'after trailers');
};

$route{'/trailers-cl'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->({ %{ start_ev(200, ['content-length', 5]) }, trailers => 1 });
    await $send->(body_ev('hello', 1));
    my $ok = eval { await $send->({ type => 'http.response.trailers', headers => [['x-checksum', 'abc']] }); 1 };
    $seen{'/trailers-cl'} = $ok ? 'ok' : "died: $@";
};

subtest 'trailers on a Content-Length response are dropped' => sub {
    my $c = conn();
    $c->write(req('/trailers-cl'));
    my $r = $c->read_response;
    ok($r, 'response') or return;
    is([ values_of($r, 'content-length') ], [ 5 ], 'Content-Length 5');
    is([ values_of($r, 'transfer-encoding') ], [], 'not chunked');
    is($r->{body}, 'hello', 'body intact');
    unlike($r->{head_raw}, qr/x-checksum/i, 'trailer not in the head');
    note('app: ' . ($seen{'/trailers-cl'} // 'unknown'));
    still_usable($c, 'Content-Length + trailers');
};

$route{'/trailers-bad'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->({ %{ start_ev(200) }, trailers => 1 });
    await $send->(body_ev('data', 1));
    $seen{'/trailers-bad'} = eval {
        await $send->({ type => 'http.response.trailers', headers => [['x-sig', "a\r\nx-evil: 1"]] });
        1;
    } ? 'no error' : "$@";
    await $send->({ type => 'http.response.trailers', headers => [['x-sig', 'good']] });
};

subtest 'trailer value with CR LF is refused' => sub {
    my $c = conn();
    $c->write(req('/trailers-bad'));
    $c->wait_for(5, sub { $_[0]{buf} =~ /\r\n0\r\n(?:[^\r\n]+\r\n)*\r\n/ });
    my $raw = $c->{buf};
    my $r = $c->read_response;
    like($seen{'/trailers-bad'}, qr/Invalid header value/, '$send died');
    ok($r, 'response') or return;
    is($r->{body}, 'data', 'body');
    is($r->{trailers}, [[ 'x-sig', 'good' ]], 'only the valid trailer was sent');
    unlike($raw, qr/x-evil/, 'nothing of the bad value on the wire');
    still_usable($c, 'after a refused trailer');
};

# ------------------------------------------------------------ header fields

$route{'/case'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->(start_ev(200, ['X-MiXeD-Case', 'Value-Kept'], ['content-length', 2], ['x-lower', 'l']));
    await $send->(body_ev('ok'));
};

subtest 'header names keep their case' => sub {
    my $c = conn();
    $c->write(req('/case', headers => ['Connection: close']));
    my $r = $c->read_response;
    ok($r, 'response') or return;
    like($r->{head_raw}, qr/\r\nX-MiXeD-Case: Value-Kept\r\n/, 'X-MiXeD-Case written as given');
    like($r->{head_raw}, qr/\r\nx-lower: l\r\n/, 'lower-case name written as given');
    is($r->{body}, 'ok', 'body');
};

$route{'/app-te'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->(start_ev(200, ['Transfer-Encoding', 'chunked'], ['content-type', 'text/plain']));
    await $send->(body_ev('abc', 1));
    await $send->(body_ev('defgh', 0));
};
$route{'/app-te-cl'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->(start_ev(200, ['transfer-encoding', 'chunked'], ['content-length', 7]));
    await $send->(body_ev('1234567'));
};
$route{'/app-te-gzip'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->(start_ev(200, ['Transfer-Encoding', 'gzip, chunked']));
    await $send->(body_ev('plain'));
};

subtest 'app Transfer-Encoding is ignored' => sub {
    my $c = conn();
    $c->write(req('/app-te'));
    my $r = $c->read_response;
    ok($r, 'no Content-Length: response') or return;
    is([ values_of($r, 'transfer-encoding') ], [ 'chunked' ], 'exactly one Transfer-Encoding: chunked');
    is(scalar(() = $r->{head_raw} =~ /^transfer-encoding:/gim), 1, 'one Transfer-Encoding line on the wire');
    is($r->{body}, 'abcdefgh', 'body framed once');
    still_usable($c, 'app TE, chunked');

    $c = conn();
    $c->write(req('/app-te-cl'));
    $r = $c->read_response;
    ok($r, 'with Content-Length: response') or return;
    is([ values_of($r, 'transfer-encoding') ], [], 'no Transfer-Encoding next to Content-Length');
    is([ values_of($r, 'content-length') ], [ 7 ], 'Content-Length 7');
    is($r->{body}, '1234567', 'body');
    still_usable($c, 'app TE + Content-Length');

    $c = conn();
    $c->write(req('/app-te-gzip'));
    $r = $c->read_response;
    ok($r, 'TE gzip, chunked: response') or return;
    is([ values_of($r, 'transfer-encoding') ], [ 'chunked' ], 'only the server\'s chunked');
    is($r->{body}, 'plain', 'body not claimed to be gzip');
    still_usable($c, 'app TE gzip');

    $c = conn();
    $c->write(req('/app-te', version => '1.0'));
    $r = $c->read_response;
    ok($r, 'HTTP/1.0: response') or return;
    is([ values_of($r, 'transfer-encoding') ], [], 'no Transfer-Encoding to an HTTP/1.0 client');
    is($r->{body}, 'abcdefgh', 'HTTP/1.0: body');
    like($c->wait_close(3), qr/^(eof|reset)$/, 'HTTP/1.0: closed after a close-delimited body');
};

$route{'/crlf-header'} = async sub {
    my ($scope, $receive, $send) = @_;
    my @bad = (['x-bad', "a\r\nInjected: yes"], ['x-bad', "lf\nInjected: yes"], ['x-bad', "nul\0Injected"]);
    my @err;
    for my $h (@bad) {
        push @err, eval { await $send->(start_ev(200, ['content-length', 2], $h)); 'no error' } // "$@";
    }
    $seen{'/crlf-header'} = \@err;
    await $send->(start_ev(200, ['content-length', 2], ['x-good', 'yes']));
    await $send->(body_ev('ok'));
};

subtest 'CR/LF/NUL in a header value: $send dies, nothing is written' => sub {
    my $c = conn();
    $c->write(req('/crlf-header'));
    my $r = $c->read_response;
    my $err = $seen{'/crlf-header'} // [];
    is(scalar @$err, 3, 'three attempts');
    like($err->[$_], qr/Invalid header value/, "attempt $_ died") for 0 .. 2;
    ok($r, 'the later valid start is answered') or return;
    is($r->{status}, 200, 'status');
    like($r->{head_raw}, qr/\r\nx-good: yes\r\n/, 'valid header present');
    unlike($r->{head_raw}, qr/Injected|x-bad/i, 'no part of the bad header on the wire');
    is(scalar(() = $r->{head_raw} =~ m{HTTP/1\.1 }g), 1, 'one status line');
    is($r->{body}, 'ok', 'body');
    still_usable($c, 'after refused headers');
};

# ------------------------------------------------------- bodyless statuses

for my $st (204, 304) {
    $route{"/s$st"} = async sub {
        my ($scope, $receive, $send) = @_;
        await $send->(start_ev($st, ['x-status', $st]));
        await $send->(body_ev('this body must not be sent', 1));
        await $send->(body_ev('nor this', 0));
    };
    $route{"/s$st-cl"} = async sub {
        my ($scope, $receive, $send) = @_;
        await $send->(start_ev($st, ['content-length', 11]));
        await $send->(body_ev('hello world'));
    };
}

for my $st (204, 304) {
    subtest "$st carries no body" => sub {
        my $c = conn();
        $c->write(req("/s$st"));
        my $r = $c->read_response;
        ok($r, 'response') or return;
        is($r->{status}, $st, "status $st");
        is([ values_of($r, 'transfer-encoding') ], [], 'no Transfer-Encoding');
        is([ values_of($r, 'content-length') ], [], 'no Content-Length added');
        still_usable($c, "$st without Content-Length");

        $c = conn();
        $c->write(req("/s$st-cl"));
        $r = $c->read_response;
        ok($r, 'with an app Content-Length: response') or return;
        is($r->{status}, $st, "status $st");
        note("$st Content-Length on the wire: " . join(',', values_of($r, 'content-length')));
        still_usable($c, "$st with Content-Length");
    };
}

# ------------------------------------------------------------------ HEAD

$route{'/head'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->(start_ev(200, ['content-type', 'text/plain'], ['content-length', 11]));
    await $send->(body_ev('hello world'));
};

subtest 'HEAD: Content-Length kept, no body, socket reusable' => sub {
    my $c = conn();
    $c->write(req('/head', method => 'HEAD'));
    my $r = $c->read_response(head => 1);
    ok($r, 'response') or return;
    is($r->{status}, 200, 'status');
    is([ values_of($r, 'content-length') ], [ 11 ], 'Content-Length from the app');
    still_usable($c, 'HEAD');
};

# -------------------------------------------------------------- HTTP/1.0

$route{'/nocl'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->(start_ev(200, ['content-type', 'text/plain']));
    await $send->(body_ev('part1-', 1));
    await $send->(body_ev('part2', 0));
};

subtest 'HTTP/1.0, no keep-alive, no Content-Length: close-delimited' => sub {
    my $c = conn();
    $c->write(req('/nocl', version => '1.0'));
    my $r = $c->read_response;    # a close-delimited body completes at EOF
    like($c->wait_close(3), qr/^(eof|reset)$/, 'server closed the connection');
    ok($r, 'response parsed') or return;
    ok($r->{close_delim}, 'body delimited by the close');
    is([ values_of($r, 'transfer-encoding') ], [], 'no Transfer-Encoding');
    is([ values_of($r, 'content-length') ], [], 'no Content-Length');
    is($r->{body}, 'part1-part2', 'body');
    like($r->{head_raw}, qr{^HTTP/1\.[01] 200 }, 'status line');
};

subtest 'HTTP/1.0 + Connection: keep-alive, Content-Length response' => sub {
    my $c = conn();
    $c->write(req('/a', version => '1.0', headers => ['Connection: keep-alive']));
    my $r = $c->read_response;
    ok($r, 'first response') or return;
    is($r->{body}, 'path=/a', 'body');
    like(join(',', values_of($r, 'connection')), qr/^keep-alive$/i, 'Connection: keep-alive');
    $c->wait_for(0.15, sub { 0 });
    ok(!$c->{eof} && !$c->{err}, 'connection left open');
    is($c->{buf}, '', 'nothing after the body');
    $c->write(req('/b', version => '1.0', headers => ['Connection: keep-alive']));
    my $r2 = $c->read_response;
    ok($r2 && $r2->{body} eq 'path=/b', 'second request on the same socket');
    $c->write(req('/c', version => '1.0'));
    my $r3 = $c->read_response;
    ok($r3 && $r3->{body} eq 'path=/c', 'third request (no keep-alive) answered');
    like($c->wait_close(3), qr/^(eof|reset)$/, 'then closed');
};

subtest 'HTTP/1.0 + Connection: keep-alive, no Content-Length: closes' => sub {
    my $c = conn();
    $c->write(req('/nocl', version => '1.0', headers => ['Connection: keep-alive']));
    my $r = $c->read_response;
    like($c->wait_close(3), qr/^(eof|reset)$/, 'server closed the connection');
    ok($r, 'response parsed') or return;
    ok($r->{close_delim}, 'body delimited by the close');
    is($r->{body}, 'part1-part2', 'close-delimited body');
    unlike(join(',', values_of($r, 'connection')), qr/keep-alive/i, 'no keep-alive promised');
};

# ------------------------------------------------- Content-Length mismatch

$route{'/long'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->(start_ev(200, ['content-length', 5]));
    await $send->(body_ev('hel', 1));
    await $send->(body_ev('lo-EXTRA-BYTES', 1));
    await $send->(body_ev('MORE', 0));
};
$route{'/short'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->(start_ev(200, ['content-length', 10]));
    await $send->(body_ev('abc'));
};

subtest 'app sends more than its Content-Length' => sub {
    my $c = conn();
    $c->write(req('/long'));
    my $r = $c->read_response;
    ok($r, 'response') or return;
    is([ values_of($r, 'content-length') ], [ 5 ], 'Content-Length 5');
    is($r->{body}, 'hello', 'only the declared bytes');
    still_usable($c, 'over-long body');
};

subtest 'app sends less than its Content-Length: connection closed' => sub {
    my $c = conn();
    $c->write(req('/short'));
    my $how = $c->wait_close(5);
    like($how, qr/^(eof|reset)$/, 'connection closed') or diag($how);
    like($c->{buf}, qr/\r\n\r\nabc\z/, 'the 3 bytes that were sent, nothing more');
};

# ------------------------------------------------- Date and Server fields

$route{'/own-date'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->(start_ev(200, ['date', 'Tue, 01 Jan 2030 00:00:00 GMT'], ['content-length', 1]));
    await $send->(body_ev('x'));
};

subtest 'Date and Server exactly once' => sub {
    for my $case (
        [ 'Content-Length', req('/a') ],
        [ 'chunked',        req('/nocl') ],
        [ 'trailers',       req('/trailers') ],
        [ '204',            req('/s204') ],
        [ 'HEAD',           req('/head', method => 'HEAD'), 1 ],
        [ 'HTTP/1.0',       req('/a', version => '1.0') ],
    ) {
        my ($label, $request, $head) = @$case;
        my $c = conn();
        $c->write($request);
        my $r = $c->read_response(head => $head);
        ok($r, "$label: response") or next;
        is(scalar(values_of($r, 'date')), 1, "$label: one Date");
        is(scalar(values_of($r, 'server')), 1, "$label: one Server");
        $c->close;
    }
    my $c = conn();
    $c->write(req('/own-date'));
    my $r = $c->read_response;
    ok($r, 'app Date: response') or return;
    is([ values_of($r, 'date') ], [ 'Tue, 01 Jan 2030 00:00:00 GMT' ], 'app Date kept, none added');
};

# ------------------------------------------------------------ pipelining

$route{'/slow'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $loop->delay_future(after => 0.2);
    await $send->(start_ev(200, ['content-length', 4]));
    await $send->(body_ev('slow'));
};
$route{'/echo'} = async sub {
    my ($scope, $receive, $send) = @_;
    my $body = '';
    while (1) {
        my $ev = await $receive->();
        last unless $ev->{type} eq 'http.request';
        $body .= $ev->{body} // '';
        last unless $ev->{more};
    }
    await $send->(start_ev(200));
    await $send->(body_ev("echo:$body"));
};

subtest 'pipelining: two requests in one write' => sub {
    my $c = conn();
    $c->write(req('/slow') . req('/a'));
    my $r1 = $c->read_response;
    my $r2 = $c->read_response;
    is($r1 && $r1->{body}, 'slow', 'first response first');
    is($r2 && $r2->{body}, 'path=/a', 'second response second');
    still_usable($c, 'after two pipelined');
};

subtest 'pipelining: mixed framings in one write' => sub {
    my $c = conn();
    $c->write(req('/echo', method => 'POST', headers => ['Content-Length: 5'], body => 'hello')
        . req('/trailers') . req('/head', method => 'HEAD') . req('/long') . req('/z', headers => ['Connection: close']));
    my @got;
    for my $head (0, 0, 1, 0, 0) {
        my $r = $c->read_response(head => $head) or last;
        push @got, $r->{body} . (@{ $r->{trailers} } ? '+' . join(',', map { "$_->[0]=$_->[1]" } @{ $r->{trailers} }) : '');
    }
    is(\@got, [ 'echo:hello', 'hello world+x-checksum=abc', '', 'hello', 'path=/z' ], 'five responses, in order')
        or diag('left: ' . substr($c->{buf}, 0, 200));
    like($c->wait_close(3), qr/^(eof|reset)$/, 'closed after Connection: close');
};

note("warning: $_") for @warnings;

$server->shutdown->get;
$loop->remove($server);

done_testing;
