use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Time::HiRes qw(time);
use ProcTest qw(start_pagi stop_cmd reap write_file tmpdir slurp wait_until);
use RawWS;
use H2Py;

# SIGTERM to a real pagi-server with WebSockets open, over HTTP/1.1 and
# over HTTP/2 (RFC 8441) on one server, in a single process and with
# workers: every WebSocket gets close code 1001 at once, every app sees its
# websocket.disconnect (code 1006, reason server_shutdown), and the server
# exits by itself (status 0) long before shutdown_timeout (20 s), without
# being killed.

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "69-websocket-shutdown.t: overall time limit reached\n" };
alarm 120;

my $h2_why = H2Py::skip_reason();
my $loop = IO::Async::Loop->new;

# The app notes each WebSocket's accept and disconnect in T_LOG.
my $app = write_file('ws-shutdown-app.pl', <<'APP');
use strict;
use warnings;
use Future::AsyncAwait;
use ProcApp;

async sub {
    my ($scope, $receive, $send) = @_;
    die "no lifespan here\n" if $scope->{type} eq 'lifespan';
    return unless $scope->{type} eq 'websocket';
    my ($name) = ($scope->{query_string} // '') =~ /n=(\w+)/;
    await $receive->();
    await $send->({ type => 'websocket.accept' });
    ProcApp::note_line("accepted $name $$");
    while (1) {
        my $ev = await $receive->();
        if ($ev->{type} eq 'websocket.disconnect') {
            ProcApp::note_line("disconnect $name $ev->{code} $ev->{reason}");
            last;
        }
        await $send->({ type => 'websocket.send', text => $ev->{text} // '' });
    }
};
APP

sub dump_frame {
    my ($f) = @_;
    return 'no frame' unless $f;
    return sprintf('opcode %d len %d code %s', $f->{opcode}, length $f->{payload}, $f->{code} // '-');
}

for my $mode ([ 'single process' ], [ 'two workers', '-w', 2 ]) {
    my ($label, @extra) = @$mode;
    subtest "SIGTERM with open WebSockets ($label)" => sub {
        my $log = tmpdir() . "/ws-shutdown-$$-" . time . '.log';
        my ($p, $port) = start_pagi($app, $log, '--no-access-log', '--http2',
            '--shutdown-timeout', 20, @extra);
        ok($port, 'the server listens') or return diag(slurp($p->{err}));

        my @h1 = map {
            my $c = RawWS->start(loop => $loop, port => $port, path => "/ws?n=h1_$_");
            my $r = $c->handshake;
            is($r && $r->{status}, 101, "HTTP/1.1 WebSocket $_ accepted") or diag($c->{buf});
            $c->send_text("up $_");
            my $f = $c->read_frame(5);
            is($f && $f->{payload}, "up $_", "HTTP/1.1 WebSocket $_ echoes") or diag(dump_frame($f));
            $c;
        } 0, 1;
        my $h2;
        unless ($h2_why) {
            $h2 = H2Py->start($loop, [ '--port', $port, '--timeout', 15, '--linger', 1, 'ws',
                '--path', '/ws?n=h2_0', '--step', 'text:up', '--step', 'wait:1',
                '--step', 'wait-close', '--step', 'wait-end' ]);
            ok($h2->wait_for(5, sub { grep { /\Aframe \d+ 1 / } $_[0]->lines }), 'the HTTP/2 WebSocket echoes')
                or diag($h2->output);
        }
        my @names = ('h1_0', 'h1_1', ($h2 ? 'h2_0' : ()));
        ok(wait_until(5, sub { my $l = slurp($log); !grep { $l !~ /^accepted $_ /m } @names }),
           'the app accepted every WebSocket');

        my $t0 = time;
        kill TERM => $p->{pid};
        for my $i (0, 1) {
            my $f = $h1[$i]->read_nonping(5);
            my $took = time - $t0;
            is($f && $f->{opcode}, RawWS::CLOSE, "HTTP/1.1 WebSocket $i: a close frame") or diag(dump_frame($f));
            is($f && $f->{code}, 1001, "HTTP/1.1 WebSocket $i: code 1001 (going away)");
            ok($took < 3, "HTTP/1.1 WebSocket $i: promptly") or diag("after $took s");
            like($h1[$i]->wait_close(5), qr/^(eof|reset)$/, "HTTP/1.1 WebSocket $i: then the connection closes");
        }
        if ($h2) {
            ok($h2->finish(10), 'the HTTP/2 client ran to its end') or diag($h2->output);
            my ($sid) = $h2->streams('ws');
            is($h2->close_of($sid) && $h2->close_of($sid)->{code}, 1001, 'HTTP/2 WebSocket: close 1001')
                or diag($h2->output);
            is($h2->ending($sid), 'end', 'HTTP/2 WebSocket: the stream ends (END_STREAM)');
        }
        my $st = reap($p->{pid}, 10);
        my $took = time - $t0;
        ok(defined $st, 'the server exited by itself') or do { diag(slurp($p->{err})); stop_cmd($p, 5) };
        is($st, 0, 'exit status 0') if defined $st;
        ok($took < 10, 'well within shutdown_timeout (20 s)') or diag("exited after $took s");
        note(sprintf 'server gone %.2f s after SIGTERM', $took);
        my $l = slurp($log);
        for my $n (@names) {
            like($l, qr/^disconnect $n 1006 server_shutdown$/m, "app of $n: websocket.disconnect 1006 server_shutdown");
        }
    };
}

done_testing;
