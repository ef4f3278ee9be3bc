use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use H2Py;
use H2Test;
use IO::Async::Loop;
use Future::AsyncAwait;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use Time::HiRes qw(time);
use RawHTTP qw(start_server pump_until stream_of);

# sse_idle_timeout, enforced by the core over HTTP/1.1 (raw sockets) and
# HTTP/2 (the h2 client; a raw client that does not read): a stream on
# which the app sends nothing is closed (HTTP/1.1: no terminating chunk;
# HTTP/2: RST_STREAM) and the app sees sse.disconnect with reason
# idle_timeout, also before sse.start; the server's own keepalive
# comments do not count, every event from the app does (sse.keepalive
# before sse.start and a slow decline too); a client that stops reading
# makes the stream idle. With request_timeout: it does not end a quiet
# stream, but a write that stalls that long ends it with write_timeout.

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "64-sse-idle.t: overall time limit reached\n" };
alarm 150;

my $loop = IO::Async::Loop->new;
my (%route, %seen);
my @warnings;
$SIG{__WARN__} = sub { push @warnings, $_[0] };

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    my ($name) = $scope->{path} =~ m{\A/([^/?]+)};
    await $route{$name}->($scope, $receive, $send, $name);
};

# Waits for the end, noting its reason and when it came.
async sub until_gone {
    my ($name, $receive) = @_;
    while (1) {
        my $ev = await $receive->();
        next unless $ev->{type} eq 'sse.disconnect';
        $seen{$name} = { reason => $ev->{reason}, at => time };
        return;
    }
}

sub pause { $loop->delay_future(after => $_[0]) }

$route{stall} = async sub {
    my ($scope, $receive, $send, $name) = @_;
    await $send->({ type => 'sse.start' });
    await $send->({ type => 'sse.send', data => 'open' });
    await until_gone($name, $receive);
};

$route{'stall-before'} = async sub {
    my ($scope, $receive, $send, $name) = @_;
    await until_gone($name, $receive);
};

$route{busy} = async sub {
    my ($scope, $receive, $send, $name) = @_;
    await $send->({ type => 'sse.start' });
    for my $i (1 .. 6) {
        await pause(0.35);
        await $send->({ type => 'sse.send', data => "tick $i" });
    }
    await $send->({ type => 'sse.close' });
};

$route{'keepalive-only'} = async sub {
    my ($scope, $receive, $send, $name) = @_;
    await $send->({ type => 'sse.keepalive', interval => 0.2, comment => 'ping' });
    await $send->({ type => 'sse.start' });
    await until_gone($name, $receive);
};

$route{'slow-start'} = async sub {
    my ($scope, $receive, $send, $name) = @_;
    for my $i (1 .. 4) {
        await pause(0.4);
        await $send->({ type => 'sse.keepalive', interval => 0 });
    }
    await $send->({ type => 'sse.start' });
    await $send->({ type => 'sse.send', data => 'started late' });
};

$route{'slow-decline'} = async sub {
    my ($scope, $receive, $send, $name) = @_;
    await pause(0.6);
    await $send->({ type => 'sse.http.response.start', status => 403, headers => [['content-type', 'text/plain']] });
    await pause(0.6);
    await $send->({ type => 'sse.http.response.body', body => 'slow ', more => 1 });
    await pause(0.6);
    await $send->({ type => 'sse.http.response.body', body => 'no' });
};

$route{quiet} = async sub {
    my ($scope, $receive, $send, $name) = @_;
    await $send->({ type => 'sse.start' });
    await pause(1.5);
    await $send->({ type => 'sse.send', data => 'still here' });
};

# As fast as the client takes them (the watermarks hold the app back).
$route{flood} = async sub {
    my ($scope, $receive, $send, $name) = @_;
    my $gone = until_gone($name, $receive);
    await $send->({ type => 'sse.start' });
    my $piece = 'f' x 16384;
    while (!$gone->is_ready) {
        await $send->({ type => 'sse.send', data => $piece });
    }
};

# Idle after 1 s; request_timeout longer. And the reverse.
my $idle  = start_server($loop, app => $app, http2 => 1, sse_idle_timeout => 1, request_timeout => 5,
                         quiet => 0, log_level => 'warn');
my $stall = start_server($loop, app => $app, http2 => 1, sse_idle_timeout => 3, request_timeout => 0.5,
                         quiet => 0, log_level => 'warn');
my $h2_why = H2Py::skip_reason();

# One SSE GET over HTTP/1.1; waits until the server closes or $secs pass.
sub h1_get {
    my ($srv, $path, $secs, %o) = @_;
    my $c = RawHTTP->new(loop => $loop, port => $srv->port);
    setsockopt($c->sock, SOL_SOCKET, SO_RCVBUF, 4096) if $o{no_read};
    my $t0 = time;
    $c->write("GET $path HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n");
    if ($o{no_read}) {
        pump_until($loop, $secs, sub { $seen{ substr $path, 1 } });
        return { took => time - $t0, client => $c };
    }
    my $how = $c->wait_close($secs);
    my ($status, $body, $done) = stream_of($c->{buf});
    return { how => $how, took => time - $t0, status => $status, body => $body, terminated => $done,
             raw => $c->{buf} };
}

sub h2_get {
    my ($srv, $path, $secs) = @_;
    my $c = H2Py->run($loop, [ '--port', $srv->port, '--timeout', $secs + 5, 'sse', '--path', $path,
                               '--duration', $secs ]);
    my ($sid) = $c->streams('sse');
    return { status => $c->status($sid), body => scalar $c->data($sid), ending => $c->ending($sid),
             client => $c, took => $c->{elapsed} };
}

# The app's sse.disconnect reason for $name, once it came (at most 3 s).
sub reason_of {
    my ($name) = @_;
    pump_until($loop, 3, sub { $seen{$name} });
    return $seen{$name} && $seen{$name}{reason};
}

sub both {
    my ($what, $code) = @_;
    subtest "HTTP/1.1: $what" => sub { %seen = (); @warnings = (); $code->('h1') };
    SKIP: {
        skip "HTTP/2: $h2_why", 1 if $h2_why;
        subtest "HTTP/2: $what" => sub { %seen = (); @warnings = (); $code->('h2') };
    }
}

both('a stream the app leaves quiet is closed after sse_idle_timeout' => sub {
    my ($p) = @_;
    my $t0 = time;
    if ($p eq 'h1') {
        my $r = h1_get($idle, '/stall', 5);
        is($r->{how}, 'eof', 'the server closed the connection');
        like($r->{body}, qr/\Adata: open\n\n\z/, 'after the event');
        ok(!$r->{terminated}, 'without the terminating chunk (the stream did not end properly)');
    }
    else {
        my $r = h2_get($idle, '/stall', 5);
        is($r->{body}, "data: open\n\n", 'the event');
        is($r->{ending}, 'reset 8', 'then RST_STREAM (CANCEL)') or diag($r->{client}->output);
    }
    is(reason_of('stall'), 'idle_timeout', 'the app saw sse.disconnect, reason idle_timeout');
    my $after = ($seen{stall}{at} // time) - $t0;
    ok($after > 0.9 && $after < 2.5, sprintf('after about 1 s (%.2f s)', $after));
    ok((grep { /SSE idle timeout \(1s\)/ } @warnings), 'logged') or diag("warnings: @warnings");
});

both('an app that never starts the stream is closed as idle too' => sub {
    my ($p) = @_;
    if ($p eq 'h1') {
        my $r = h1_get($idle, '/stall-before', 5);
        is($r->{how}, 'eof', 'the server closed the connection');
        is($r->{raw}, '', 'with no response');
    }
    else {
        my $r = h2_get($idle, '/stall-before', 5);
        is($r->{ending}, 'reset 8', 'RST_STREAM (CANCEL)') or diag($r->{client}->output);
    }
    is(reason_of('stall-before'), 'idle_timeout', 'reason idle_timeout');
});

both('events from the app keep it open; keepalive comments do not' => sub {
    my ($p) = @_;
    my $r = $p eq 'h1' ? h1_get($idle, '/busy', 5) : h2_get($idle, '/busy', 5);
    is($r->{body}, join('', map { "data: tick $_\n\n" } 1 .. 6), 'six events 0.35 s apart (2.1 s) all arrive');
    if ($p eq 'h1') {
        ok($r->{terminated}, 'and the stream ended properly (sse.close)');
    }
    else {
        is($r->{ending}, 'end', 'and the stream ended properly (sse.close)');
    }

    $r = $p eq 'h1' ? h1_get($idle, '/keepalive-only', 5) : h2_get($idle, '/keepalive-only', 5);
    my @pings = ($r->{body} // '') =~ /(:ping\n\n)/g;
    cmp_ok(scalar @pings, '>=', 3, 'keepalive comments were written');
    is(reason_of('keepalive-only'), 'idle_timeout', 'yet the stream was closed as idle');
    ok($r->{took} < 4, sprintf('soon (%.2f s)', $r->{took}));
});

both('events kept in Perl before sse.start count as activity' => sub {
    my ($p) = @_;
    my $r = $p eq 'h1' ? h1_get($idle, '/slow-start', 5) : h2_get($idle, '/slow-start', 5);
    is($r->{status}, 200, 'sse.keepalive every 0.4 s for 1.6 s, then the stream starts');
    is($r->{body}, "data: started late\n\n", 'and runs');
    $r = $p eq 'h1' ? h1_get($idle, '/slow-decline', 5) : h2_get($idle, '/slow-decline', 5);
    is($r->{status}, 403, 'a decline spread over 1.8 s is sent');
    like($r->{raw} // $r->{body}, qr/slow no\z/, 'whole');
});

both('a client that stops reading makes the stream idle' => sub {
    my ($p) = @_;
    if ($p eq 'h1') {
        my $r = h1_get($idle, '/flood', 8, no_read => 1);
        $r->{client}->close;
    }
    else {
        # A raw HTTP/2 client that never reads: the server has 65535 bytes
        # of window, then waits.
        my $c = H2Test::Conn->new($idle->port, rcvbuf => 4096);
        $c->request(1, GET => '/flood', end => 1, headers => [ accept => 'text/event-stream' ]);
        pump_until($loop, 8, sub { $seen{flood} });
        $c->close;
    }
    is(reason_of('flood'), 'idle_timeout', 'reason idle_timeout');
});

both('request_timeout: a quiet stream goes on; a stalled write ends it with write_timeout' => sub {
    my ($p) = @_;
    my $r = $p eq 'h1' ? h1_get($stall, '/quiet', 5) : h2_get($stall, '/quiet', 5);
    is($r->{body}, "data: still here\n\n", 'an event after 1.5 s quiet (request_timeout 0.5 s)');
    if ($p eq 'h1') {
        ok($r->{terminated}, 'the stream ended properly');
        my $f = h1_get($stall, '/flood', 6, no_read => 1);
        $f->{client}->close;
    }
    else {
        is($r->{ending}, 'end', 'the stream ended properly');
        my $c = H2Test::Conn->new($stall->port, rcvbuf => 4096);
        $c->request(1, GET => '/flood', end => 1, headers => [ accept => 'text/event-stream' ]);
        pump_until($loop, 6, sub { $seen{flood} });
        $c->close;
    }
    is(reason_of('flood'), 'write_timeout', 'a client that stops reading: reason write_timeout (0.5 s < 3 s idle)');
});

subtest 'sse_idle_timeout 0 (the default) never closes a quiet stream' => sub {
    %seen = ();
    my $off = start_server($loop, app => $app);
    my $r = h1_get($off, '/quiet', 5);
    is($r->{body}, "data: still here\n\n", 'the event after 1.5 s');
    ok($r->{terminated}, 'the stream ended properly');
    $off->shutdown->get;
    $loop->remove($off);
};

for my $s ($idle, $stall) {
    $s->shutdown->get;
    $loop->remove($s);
}
done_testing;
