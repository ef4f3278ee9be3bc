use strict;
use warnings;

# SSE against a real pagi-server process (--http2: HTTP/1.1 and h2c on one
# port), with raw clients on blocking sockets:
# - SIGTERM ends open streams at once, the HTTP/1.1 one with its
#   terminating chunk, the HTTP/2 one with END_STREAM (then GOAWAY); each
#   app sees sse.disconnect with reason server_shutdown, and the server
#   exits 0 by itself well within shutdown_timeout;
# - a fast app and a slow reader: the app is held back by the write
#   watermarks (it gets only a little ahead of the client) and the
#   server's memory stays flat, over HTTP/1.1 and HTTP/2; the whole stream
#   then arrives once the client reads.
# Every wait is bounded; every process is killed by PID at the end.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Select;
use IO::Socket::INET;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use Time::HiRes qw(sleep time);
use H2Test qw(rss_kb);
use ProcTest qw(reap wait_until slurp write_file tmpdir log_lines how_it_ended start_pagi stop_cmd);
use RawHTTP qw(stream_of);

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "65-sse-process.t: overall time limit reached\n" };
alarm 150;

my $APP = write_file('app.pl', "use ProcApp; ProcApp::app();\n");
my $MB  = 1048576;

# An HTTP/1.1 SSE request on a blocking socket (with a small receive
# buffer when $rcvbuf is given).
sub h1_open {
    my ($port, $path, $rcvbuf) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 5)
        or return undef;
    setsockopt($s, SOL_SOCKET, SO_RCVBUF, $rcvbuf) or die "SO_RCVBUF: $!" if $rcvbuf;
    syswrite $s, "GET $path HTTP/1.1\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n";
    return $s;
}

# Reads at most $max bytes (all there is when undef) into $$buf, waiting
# at most $secs for the first; false at EOF.
sub h1_read {
    my ($s, $buf, $secs, $max) = @_;
    return 1 unless IO::Select->new($s)->can_read($secs);
    my $n = sysread $s, $$buf, $max // 262144, length $$buf;
    return $n ? 1 : 0;
}

sub h2_open {
    my ($port, $path, %o) = @_;
    my $c = H2Test::Conn->new($port, %o);
    $c->request(1, GET => $path, end => 1, headers => [ accept => 'text/event-stream' ]);
    return $c;
}

# The bytes the flood app has sent so far, from its log.
sub flooded {
    my ($log) = @_;
    my ($last) = reverse log_lines($log, 'flood');
    return $last ? (split / /, $last)[2] : 0;
}

subtest 'SIGTERM ends open SSE streams on both protocols, and the server exits by itself' => sub {
    my $log = tmpdir() . '/term.log';
    my ($p, $port) = start_pagi($APP, $log, '--http2');
    ok($port, 'pagi-server is listening') or return diag slurp($p->{err});
    ok(wait_until(10, sub { log_lines($log, 'startup') == 1 }), 'lifespan started');

    my $h1 = h1_open($port, '/sse');
    my $buf = '';
    my $t_open = time + 5;
    h1_read($h1, \$buf, 0.2) until (stream_of($buf))[1] =~ /data: open\n\n/ || time > $t_open;
    like((stream_of($buf))[1], qr/\Adata: open\n\n\z/, 'HTTP/1.1 stream open');

    my $h2 = h2_open($port, '/sse');
    $h2->read_until(5, sub { $h2->body(1) =~ /data: open\n\n/ });
    is($h2->body(1), "data: open\n\n", 'HTTP/2 stream open');

    # An app that never reads $receive (so never sees the disconnect) and
    # sends on for ever.
    my $deaf = h1_open($port, '/sse-deaf');
    my $dbuf = '';
    my $t_tick = time + 5;
    h1_read($deaf, \$dbuf, 0.2) until (stream_of($dbuf))[1] =~ /data: tick\n\n/ || time > $t_tick;
    like((stream_of($dbuf))[1], qr/data: tick\n\n/, 'a stream whose app never reads is open');

    my $t0 = time;
    kill TERM => $p->{pid};

    my $t_end = time + 5;
    1 while h1_read($h1, \$buf, 0.5) && time < $t_end;
    my (undef, $body, $done) = stream_of($buf);
    ok($done, 'HTTP/1.1: the terminating chunk came') or diag("got: $buf");
    is($body, "data: open\n\n", 'HTTP/1.1: nothing else');
    ok(time < $t_end, 'HTTP/1.1: then the connection closed');

    1 while h1_read($deaf, \$dbuf, 0.5) && time < $t_end;
    ok((stream_of($dbuf))[2], 'the one whose app never reads ended properly too') or diag("got: $dbuf");
    ok(time < $t_end, 'and its connection closed');

    my $end = $h2->read_until(5, sub { $h2->ended(1) });
    is($end, 'match', 'HTTP/2: END_STREAM came');
    is($h2->rst(1), undef, 'HTTP/2: no RST_STREAM');
    $h2->read_until(5);
    ok((grep { $_->{error_code} == 0 } $h2->goaways), 'HTTP/2: GOAWAY (NO_ERROR)');
    is($h2->eof, 'eof', 'HTTP/2: then the connection closed');

    my $status = reap($p->{pid}, 5);
    my $took = time - $t0;
    is(how_it_ended($status), 'exit 0', 'the server exited 0, not killed');
    ok($took < 3, sprintf('%.2f s after SIGTERM (shutdown_timeout 5 s)', $took));
    is([ sort map { (split / /)[2] } log_lines($log, 'sse-gone') ], [ 'server_shutdown', 'server_shutdown' ],
        'both apps saw sse.disconnect with reason server_shutdown');
    is(scalar log_lines($log, 'shutdown'), 1, 'lifespan shutdown ran');
};

# Reads the flood slowly for $secs, sampling the server's RSS; returns
# (the most it reached, bytes the app sent at the end).
sub slow_read {
    my ($p, $log, $secs, $read) = @_;
    my $max = 0;
    my $until = time + $secs;
    while (time < $until) {
        $read->();
        my $now = rss_kb($p->{pid}) // 0;
        $max = $now if $now > $max;
    }
    return ($max, flooded($log));
}

subtest 'a fast app and a slow reader: the app is held back, memory stays flat' => sub {
    my $log = tmpdir() . '/flood.log';
    local $ENV{T_FLOOD_MB} = 64;
    my ($p, $port) = start_pagi($APP, $log, '--http2');
    ok($port, 'pagi-server is listening') or return diag slurp($p->{err});
    ok(wait_until(10, sub { log_lines($log, 'startup') == 1 }), 'lifespan started');
    my $total = 64 * $MB;    # what the app sends unless held back

    # HTTP/1.1: at most 64 KB every 0.1 s through a 64 KB receive buffer.
    my $rss0 = rss_kb($p->{pid}) // 0;
    my $h1 = h1_open($port, '/sse-flood', 65536);
    my $buf = '';
    ok(wait_until(5, sub { flooded($log) > 0 }), 'HTTP/1.1: the app is sending');
    my ($max, $sent) = slow_read($p, $log, 3, sub { sleep 0.1; h1_read($h1, \$buf, 0, 65536) });
    note(sprintf 'HTTP/1.1: read %d bytes in 3 s; the app sent %d; RSS %d -> max %d kB',
        length $buf, $sent, $rss0, $max);
    ok($sent < $total / 2, "HTTP/1.1: the app was held back ($sent of $total bytes sent)");
    ok($sent - length($buf) < 8 * $MB, 'HTTP/1.1: it got only a little ahead of the client');
    ok($max - $rss0 < 30_000, sprintf('HTTP/1.1: the server grew by %d kB (< 30 MB)', $max - $rss0));
    my $t_end = time + 30;
    1 while h1_read($h1, \$buf, 1) && substr($buf, -5) ne "0\r\n\r\n" && time < $t_end;
    my (undef, $body, $done) = stream_of($buf);
    ok($done, 'HTTP/1.1: then the whole stream arrives, ended properly');
    is(length $body, 1024 * (65536 + 8), 'HTTP/1.1: every event');
    ok(wait_until(5, sub { log_lines($log, 'flood-done') == 1 }), 'HTTP/1.1: the app finished');
    close $h1;

    # HTTP/2: windows of 2 GB, 64 KB receive buffer; the client reads at
    # most 64 KB every 0.1 s.
    my $floods = log_lines($log, 'flood');
    $rss0 = rss_kb($p->{pid}) // 0;
    my $h2 = h2_open($port, '/sse-flood', settings => { 0x4 => 0x7fffffff }, rcvbuf => 65536);
    $h2->window_update(0, 0x7fffffff - 65535);
    @$h2{qw(count_only quiet_data)} = (1, 1);
    ok(wait_until(5, sub { log_lines($log, 'flood') > $floods }), 'HTTP/2: the app is sending');
    ($max, $sent) = slow_read($p, $log, 3, sub { sleep 0.1; $h2->pump(65536) });
    my $done_before = log_lines($log, 'flood-done');
    note(sprintf 'HTTP/2: read %d bytes in 3 s; the app sent %d; RSS %d -> max %d kB',
        $h2->got(1), $sent, $rss0, $max);
    ok($sent < $total / 2, "HTTP/2: the app was held back ($sent of $total bytes sent)");
    ok($sent - $h2->got(1) < 8 * $MB, 'HTTP/2: it got only a little ahead of the client');
    ok($max - $rss0 < 30_000, sprintf('HTTP/2: the server grew by %d kB (< 30 MB)', $max - $rss0));
    is($done_before, 1, 'HTTP/2: the app had not finished');
    is($h2->read_until(30, sub { $h2->ended(1) }), 'match', 'HTTP/2: then the whole stream arrives, ended');
    is($h2->got(1), 1024 * (65536 + 8), 'HTTP/2: every event');
    $h2->close;

    is(how_it_ended(stop_cmd($p, 10)), 'exit 0', 'TERM stops the server');
};

done_testing;
