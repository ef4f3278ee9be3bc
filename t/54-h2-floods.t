use strict;
use warnings;

# HTTP/2 floods, written frame by frame on a raw socket: Rapid Reset
# (HEADERS then RST_STREAM, thousands of times at once, and paced so that
# every stream is taken before its reset: then h2_rst_rate_limit decides),
# a PING flood and a SETTINGS flood sent without reading, and CONTINUATION
# floods (a header block that never ends, in large and in empty frames).
# Each ends in GOAWAY ENHANCE_YOUR_CALM and the connection's close, with
# the server's memory flat; below the limits nothing happens; after each
# the server serves a normal request. Servers run in forked children
# (TLSTest::serve); every read and write is bounded in time.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use Future::AsyncAwait;
use Time::HiRes qw(time);
use H2Test qw(frame hpack_block rss_kb);

BEGIN {
    my @missing = H2Test::tools_missing(qw(curl));
    skip_all("not installed: @missing") if @missing;
    skip_all('IO::Socket::SSL is not installed (TLSTest needs it)') unless eval { require IO::Socket::SSL; 1 };
}
use TLSTest qw(serve stop_server server_log run_cmd wait_log);

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "54-h2-floods.t: overall time limit reached\n" };
alarm 90;

use constant { ENHANCE_YOUR_CALM => 0xb, RST_CANCEL => 0x8 };

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    if ($scope->{path} eq '/wait') {    # until the client goes away
        await $scope->{'pagi.connection'}->disconnect_future;
        return;
    }
    await $send->({ type => 'http.response.start', status => 200, headers => [ [ 'content-type', 'text/plain' ] ] });
    await $send->({ type => 'http.response.body', body => "hello $scope->{path}" });
};

sub serve_ok {
    my ($name, %opts) = @_;
    my $srv = serve(app => $app, http2 => 1, quiet => 0, log_level => 'warn', %opts);
    ok(!$srv->{error}, "$name: server is up") or diag($srv->{error});
    return $srv;
}

sub stopped_ok {
    my ($srv, $name) = @_;
    return unless $srv->{pid};
    is(stop_server($srv), 0, "$name: server stopped cleanly by SIGTERM") or diag(server_log($srv));
}

my $GET = sub { my ($path) = @_; hpack_block(':method' => 'GET', ':scheme' => 'http', ':path' => $path, ':authority' => 'localhost') };

# A connection past the server's SETTINGS.
sub connected {
    my ($port) = @_;
    my $c = H2Test::Conn->new($port);
    # The server's SETTINGS, and its ACK of ours (so that counts of ACKs
    # made later start from a settled connection).
    $c->read_until(3, sub {
        my @s = grep { $_->{type} == 0x4 } $c->frames;
        (grep { !($_->{flags} & 1) } @s) && (grep { $_->{flags} & 1 } @s);
    });
    return $c;
}

# The connection ended with GOAWAY ENHANCE_YOUR_CALM and closed.
sub calmed_ok {
    my ($c, $name) = @_;
    my $end = $c->read_until(5);
    my @ga = $c->goaways;
    is([ map { $_->{error_code} } @ga ], [ENHANCE_YOUR_CALM], "$name: one GOAWAY, ENHANCE_YOUR_CALM");
    ok($end eq 'eof' || $end =~ /reset/i, "$name: then the connection closes ($end)");
    return $ga[0];
}

sub serves_ok {
    my ($srv, $name) = @_;
    my ($st, $out, $err) = run_cmd(10, 'curl', '-sS', '--max-time', 5, '--http2-prior-knowledge',
        "http://127.0.0.1:$srv->{port}/after");
    is($out, 'hello /after', "$name: afterwards the server serves a normal request") or diag($err);
}

sub rss_ok {
    my ($srv, $before, $name) = @_;
    my $grew = (rss_kb($srv->{pid}) // 1e9) - $before;
    ok($grew < 50_000, "$name: the server's RSS grew by $grew kB (< 50 MB)");
}

subtest 'Rapid Reset' => sub {
    my $srv = serve_ok('rapid reset', h2_rst_rate_limit => { burst => 50, rate => 1 });
    return unless $srv->{port};
    my $port = $srv->{port};

    # Thousands of streams opened and reset at once.
    my $c = connected($port);
    my $rss = rss_kb($srv->{pid});
    my $flood = join '', map { my $sid = 2 * $_ + 1; frame(0x1, 0x5, $sid, $GET->('/')) . frame(0x3, 0, $sid, pack('N', RST_CANCEL)) } 0 .. 4999;
    $c->send($flood, 5);
    my $ga = calmed_ok($c, '5000 at once');
    ok($ga && $ga->{last_stream_id} < 2 * 200, "the server stopped taking streams early (last $ga->{last_stream_id})");
    $c->close;
    rss_ok($srv, $rss, '5000 at once');
    serves_ok($srv, '5000 at once');

    # Paced: ten streams are opened, taken by the server, then reset; with
    # a burst of 50 the bucket runs dry after about 50 resets.
    $c = connected($port);
    my ($sid, $resets) = (1, 0);
    for my $round (1 .. 20) {
        my @ids = map { $sid += 2; $sid - 2 } 1 .. 10;
        $c->send(join '', map { frame(0x1, 0x5, $_, $GET->('/wait')) } @ids);
        $c->read_until(0.05);
        $c->send(join '', map { frame(0x3, 0, $_, pack('N', RST_CANCEL)) } @ids);
        $resets += 10;
        $c->read_until(0.02);
        last if $c->goaways || $c->eof;
    }
    calmed_ok($c, 'paced resets');
    ok($resets > 50 && $resets <= 70, "after $resets resets (burst 50, rate 1/s)");
    ok(wait_log($srv, qr/HTTP\/2 RST_STREAM flood from 127\.0\.0\.1: GOAWAY \(ENHANCE_YOUR_CALM\)/, 3),
        'the server logs the RST_STREAM flood');
    $c->close;
    serves_ok($srv, 'paced resets');
    stopped_ok($srv, 'rapid reset');

    # The same 100 paced resets under the default limit (burst 1000) pass.
    $srv = serve_ok('default limit');
    return unless $srv->{port};
    $c = connected($srv->{port});
    $sid = 1;
    for my $round (1 .. 10) {
        my @ids = map { $sid += 2; $sid - 2 } 1 .. 10;
        $c->send(join '', map { frame(0x1, 0x5, $_, $GET->('/wait')) } @ids);
        $c->read_until(0.05);
        $c->send(join '', map { frame(0x3, 0, $_, pack('N', RST_CANCEL)) } @ids);
        $c->read_until(0.02);
    }
    $c->request($sid, GET => '/same', end => 1);
    my $end = $c->read_until(5, sub { $c->ended($sid) });
    is([ $end, scalar $c->goaways ], [ 'match', 0 ], 'default limit: 100 paced resets, no GOAWAY');
    is($c->body($sid), 'hello /same', '... and the connection still serves');
    $c->close;
    stopped_ok($srv, 'default limit');
};

subtest 'PING and SETTINGS floods' => sub {
    my $srv = serve_ok('floods');
    return unless $srv->{port};
    my $port = $srv->{port};

    for my $case ([ PING => 0x6, 'x' x 8, 900 ], [ SETTINGS => 0x4, '', 90 ]) {
        my ($name, $type, $payload, $fine) = @$case;
        # Below the burst: each one answered, nothing else.
        my $c = connected($port);
        my $acks_before = grep { $_->{type} == $type && $_->{flags} & 1 } $c->frames;
        $c->send(frame($type, 0, 0, $payload) x $fine);
        $c->read_until(5, sub { (grep { $_->{type} == $type && $_->{flags} & 1 } $c->frames) - $acks_before >= $fine });
        is((grep { $_->{type} == $type && $_->{flags} & 1 } $c->frames) - $acks_before, $fine, "$fine ${name}s: each acknowledged");
        is([ $c->goaways ], [], "$fine ${name}s: no GOAWAY");
        $c->close;

        # Thousands, written without reading a byte.
        $c = connected($port);
        $c->{ack} = 0;
        my $rss = rss_kb($srv->{pid});
        my $flood = frame($type, 0, 0, $payload) x 10_000;
        my $t0 = time;
        $c->{no_read} = 1;
        $c->send($flood, 2);
        $c->{no_read} = 0;
        calmed_ok($c, "$name flood");
        ok(time - $t0 < 5, "$name flood: ended within 5 s");
        ok(wait_log($srv, qr/HTTP\/2 $name flood from 127\.0\.0\.1: GOAWAY \(ENHANCE_YOUR_CALM\)/, 3),
            "$name flood: the server logs it");
        rss_ok($srv, $rss, "$name flood");
        $c->close;
        serves_ok($srv, "$name flood");
    }
    stopped_ok($srv, 'floods');
};

subtest 'idle h2 connections make room at max_connections' => sub {
    # Like an HTTP/1.1 connection waiting for its head, an h2 connection
    # with no stream open is closed (GOAWAY NO_ERROR) to admit a new client.
    my $srv = serve_ok('capacity', max_connections => 1);
    return unless $srv->{port};
    my $idle = connected($srv->{port});
    $idle->request(1, GET => '/first', end => 1);
    is($idle->read_until(5, sub { $idle->ended(1) }), 'match', 'the first connection is served');
    $idle->read_until(1.5);    # past the grace, no stream open
    serves_ok($srv, 'at capacity, a new client');
    my $end = $idle->read_until(5);
    is([ map { $_->{error_code} } $idle->goaways ], [0], 'the idle connection got GOAWAY (NO_ERROR)');
    ok($end eq 'eof' || $end =~ /reset/i, "... and was closed ($end)");
    ok(wait_log($srv, qr/closed 1 connection\(s\) waiting longest/, 3), 'the eviction is logged')
        or diag(server_log($srv));
    $idle->close;
    stopped_ok($srv, 'capacity');
};

subtest 'CONTINUATION floods' => sub {
    my $srv = serve_ok('continuation');
    return unless $srv->{port};
    my $port = $srv->{port};
    for my $size (16384, 0) {
        my $name = $size ? 'CONTINUATION frames of 16 KB' : 'empty CONTINUATION frames';
        my $c = connected($port);
        my $rss = rss_kb($srv->{pid});
        # HEADERS without END_HEADERS, then a header block that never ends.
        $c->send(frame(0x1, 0, 1, $GET->('/')));
        my $payload = $size ? hpack_block('x-flood' => 'f' x ($size - 16)) : '';
        my $batch = frame(0x9, 0, 1, $payload) x int(262144 / (9 + length $payload));
        my ($total, $t0) = (0, time);
        while (time - $t0 < 10 && $total < 64 * 1024 * 1024) {
            my $n = $c->send($batch, 0.5);
            $total += $n;
            last if $n < length $batch;
            $c->pump;
            last if $c->eof || $c->goaways;
        }
        my $end = $c->read_until(5);
        ok($total < 64 * 1024 * 1024, "$name: the server stopped it after $total bytes");
        my @ga = $c->goaways;
        is(scalar @ga, 1, "$name: a GOAWAY");
        is($ga[0] && $ga[0]{error_code}, ENHANCE_YOUR_CALM, "$name: ENHANCE_YOUR_CALM");
        ok($end eq 'eof' || $end =~ /reset/i, "$name: then the connection closes ($end)");
        ok(time - $t0 < 8, "$name: within 8 s");
        rss_ok($srv, $rss, $name);
        $c->close;
        serves_ok($srv, $name);
    }
    stopped_ok($srv, 'continuation');
};

done_testing;
