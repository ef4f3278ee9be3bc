use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Future::AsyncAwait;
use HTTP::Date qw(str2time);
use List::Util qw(max);
use RawHTTP qw(start_server pump_until);

# Request limits and framing errors, checked on the wire. Rejected requests
# get a well-formed error response, the connection is closed, and the app is
# never invoked.

my $loop = IO::Async::Loop->new;

# What the app saw, per client port (so a late call from an earlier case can
# never be counted against a later one): invocations for http scopes, the
# body it read, and the largest running body total seen while reading.
my %seen;
my @all_calls;

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    my $s = $seen{"$scope->{server}[1]:$scope->{client}[1]"} //= { calls => 0, max => 0 };
    $s->{calls}++;
    push @all_calls, "$scope->{method} $scope->{path} on $scope->{server}[1] from $scope->{client}[1]";
    my $body = '';
    while (1) {
        my $ev = await $receive->();
        last unless $ev->{type} eq 'http.request';
        $body .= $ev->{body} // '';
        $s->{max} = max($s->{max}, length $body);
        last unless $ev->{more};
    }
    $s->{body} = $body;
    my $out = 'len=' . length $body;
    await $send->({ type => 'http.response.start', status => 200,
                    headers => [['content-type', 'text/plain'], ['content-length', length $out]] });
    await $send->({ type => 'http.response.body', body => $out });
};

# Taken right after connecting (a reset socket may no longer know its peer).
sub conn_key { my ($server, $c) = @_; $c->{key} = $server->port . ':' . $c->sock->sockport }
sub seen_for { my ($c) = @_; return $seen{ $c->{key} } // { calls => 0, max => 0 } }

my %servers;
sub server_for {
    my ($name, %opt) = @_;
    return $servers{$name} //= start_server($loop, app => $app, %opt);
}

my $default  = server_for('default');
my $body100  = server_for('body100',  max_body_size => 100);
my $body0    = server_for('body0',    max_body_size => 0);
my $head1024 = server_for('head1024', max_header_size => 1024);
my $count5   = server_for('count5',   max_header_count => 5);

# Sends raw bytes, reads one response and waits for the close.
sub exchange {
    my ($server, $req) = @_;
    my $c = RawHTTP->new(loop => $loop, port => $server->port);
    conn_key($server, $c);
    eval { $c->write($req); 1 } or note("write: $@");
    my $r = $c->read_response(timeout => 5);
    my $how = $c->wait_close(2);
    return ($r, $c, $how);
}

sub values_of {
    my ($r, $name) = @_;
    return map { $_->[1] } grep { lc($_->[0]) eq $name } @{ $r->{headers} };
}

# An error response: Content-Length matching the body, a Date, nothing after.
sub well_formed {
    my ($r, $c, $label) = @_;
    my @cl = values_of($r, 'content-length');
    is(scalar @cl, 1, "$label: one Content-Length") or return;
    is($cl[0], length $r->{body}, "$label: Content-Length matches the body");
    my @date = values_of($r, 'date');
    ok(@date == 1 && defined str2time($date[0]), "$label: Date header") or diag("Date: @date");
    is($c->{buf}, '', "$label: nothing after the body");
}

# $want: a status number or a regex for it.
sub rejected {
    my ($server, $label, $req, $want) = @_;
    my ($r, $c, $how) = exchange($server, $req);
    ok($r, "$label: response") or diag('error: ' . ($c->{error} // '?') . ' buf: ' . substr($c->{buf}, 0, 200));
    if (ref $want) { like($r && $r->{status}, $want, "$label: status $want") }
    else           { is($r && $r->{status}, $want, "$label: status $want") }
    like($how, qr/^(eof|reset)$/, "$label: connection closed") or diag($how);
    pump_until($loop, 0.1, sub { 0 });
    is(seen_for($c)->{calls}, 0, "$label: app not called");
    well_formed($r, $c, $label) if $r && $r->{status} >= 400;
    return $r;
}

sub accepted {
    my ($server, $label, $req, $body) = @_;
    my ($r, $c, $how) = exchange($server, $req);
    ok($r, "$label: response") or diag('error: ' . ($c->{error} // '?'));
    is($r && $r->{status}, 200, "$label: status 200") or diag($r && $r->{body});
    like($how, qr/^(eof|reset)$/, "$label: connection closed (Connection: close / HTTP/1.0)") or diag($how);
    my $s = seen_for($c);
    is($s->{calls}, 1, "$label: app called once") or diag(join "\n", @all_calls);
    if (defined $body) {
        my $last_body = $s->{body};
        is($r && $r->{body}, 'len=' . length $body, "$label: app reports the body length");
        ok(defined $last_body && $last_body eq $body, "$label: app received the exact body")
            or diag('app got ' . (defined $last_body ? length($last_body) . ' bytes' : 'nothing'));
    }
    return $r;
}

# Rejected requests are sent keep-alive, so any close comes from the server.
sub post {
    my ($body, @h) = @_;
    return "POST / HTTP/1.1\r\nHost: x\r\n"
        . join('', map { "$_\r\n" } @h) . "\r\n" . $body;
}

subtest 'max_body_size => 100 (Content-Length)' => sub {
    rejected($body100, 'CL 101', post('x' x 101, 'Content-Length: 101'), 413);
    my $b = join '', map { chr(65 + $_ % 26) } 0 .. 99;
    accepted($body100, 'CL 100', post($b, 'Content-Length: 100', 'Connection: close'), $b);
};

subtest 'max_body_size => 100 (chunked, 3 x 50 bytes)' => sub {
    my $chunk = "32\r\n" . ('b' x 50) . "\r\n";
    my $c = RawHTTP->new(loop => $loop, port => $body100->port);
    conn_key($body100, $c);
    # Keep-alive on purpose: the server, not the client, must end this.
    eval {
        $c->write("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" . $chunk x 3 . "0\r\n\r\n");
        1;
    } or note("write: $@");
    $c->wait_for(5, sub { $_[0]{buf} =~ /\r\n\r\n/ });
    my $got413 = $c->{buf} =~ m{^HTTP/1\.1 413 };
    my $how = $c->wait_close(2);
    ok($got413 || $how =~ /^(eof|reset)$/, 'a 413 arrives or the connection is closed')
        or diag("close: $how; buf: " . substr($c->{buf}, 0, 200));
    unlike($c->{buf}, qr{^HTTP/1\.1 2\d\d}, 'no success response');
    pump_until($loop, 0.2, sub { 0 });
    my $s = seen_for($c);
    ok($s->{max} <= 100, 'app never saw more than 100 body bytes') or diag("app saw $s->{max}");
    note("413 status line: " . ($got413 ? 'yes' : 'no') . "; close: $how; app calls: $s->{calls}");
};

subtest 'max_body_size => 0 means unlimited' => sub {
    my $b = join '', map { chr(97 + $_ % 26) } 0 .. 199_999;
    accepted($body0, '200_000-byte POST', post($b, 'Content-Length: 200000', 'Connection: close'), $b);
};

subtest 'max_header_size' => sub {
    rejected($default, 'default (8192): 9000-byte header',
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " . ('x' x 9000) . "\r\n\r\n", 431);
    rejected($head1024, 'max_header_size 1024: 2000-byte header',
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: " . ('x' x 2000) . "\r\n\r\n", 431);
    accepted($head1024, 'max_header_size 1024: 500-byte header',
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-Big: " . ('x' x 500) . "\r\n\r\n", '');
};

subtest 'max_header_count => 5' => sub {
    rejected($count5, '10 extra headers',
        "GET / HTTP/1.1\r\nHost: x\r\n" . join('', map { "X-H$_: $_\r\n" } 1 .. 10) . "\r\n", 431);
    accepted($count5, '3 headers',
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nX-A: 1\r\n\r\n", '');
};

subtest 'request line too long' => sub {
    rejected($default, '9000-byte target',
        'GET /' . ('a' x 9000) . " HTTP/1.1\r\nHost: x\r\n\r\n", 414);
};

subtest 'malformed requests' => sub {
    rejected($default, 'INVALID REQUEST LINE', "INVALID REQUEST LINE\r\n\r\n", 400);
    rejected($default, 'HTTP/9.9', "GET / HTTP/9.9\r\nHost: x\r\n\r\n", qr/^[45]\d\d$/);
    rejected($default, 'header line without colon', "GET / HTTP/1.1\r\nHost: x\r\nNoColonHere\r\n\r\n", 400);
};

subtest 'Host header' => sub {
    rejected($default, 'HTTP/1.1 without Host', "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n", 400);
    accepted($default, 'HTTP/1.0 without Host', "GET / HTTP/1.0\r\n\r\n", '');
};

subtest 'Content-Length validation' => sub {
    rejected($default, 'CL -5', post('', 'Content-Length: -5'), 400);
    rejected($default, 'CL abc', post('', 'Content-Length: abc'), 400);
    rejected($default, 'CL 5 and 6', post('hello', 'Content-Length: 5', 'Content-Length: 6'), 400);
    accepted($default, 'CL 5 and 5', post('hello', 'Content-Length: 5', 'Content-Length: 5', 'Connection: close'), 'hello');
};

subtest 'Transfer-Encoding' => sub {
    my $chunked = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    rejected($default, 'CL with TE chunked',
        post($chunked, 'Content-Length: 5', 'Transfer-Encoding: chunked'), 400);
    rejected($default, 'TE gzip', post('hello', 'Transfer-Encoding: gzip'), 501);
    rejected($default, 'TE chunked, gzip', post($chunked, 'Transfer-Encoding: chunked, gzip'), 400);
    accepted($default, 'TE gzip, chunked', post($chunked, 'Transfer-Encoding: gzip, chunked', 'Connection: close'), 'hello world');
};

for my $s (values %servers) {
    $s->shutdown->get;
    $loop->remove($s);
}

done_testing;
