use strict;
use warnings;

# HTTP/2 flow control and stream lifetimes, with real clients (curl,
# nghttp, a raw socket client): a large request body arrives whole across
# window updates; max_body_size answers 413 whether the length is announced
# or not; an app that does not read its body holds back its own stream and
# no other on the connection; a client that reads slowly holds back the
# app's sends (the app gets only so far, the server's memory stays flat)
# and then gets the whole response; a graceful shutdown sends GOAWAY, lets
# the stream in flight finish, refuses a new one and closes; a connection
# going away whose client never answers is closed all the same. Servers
# run in forked children (TLSTest::serve); every wait is bounded.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use Digest::MD5 qw(md5_hex);
use File::Spec;
use File::Temp qw(tempdir);
use Future::AsyncAwait;
use Time::HiRes qw(time sleep);
use H2Test qw(nghttp rss_kb);

BEGIN {
    my @missing = H2Test::tools_missing(qw(curl nghttp));
    skip_all("not installed: @missing") if @missing;
    skip_all('IO::Socket::SSL is not installed (TLSTest needs it)') unless eval { require IO::Socket::SSL; 1 };
}
use TLSTest qw(serve_ok stopped_ok stop_server server_log run_cmd);
use ProcTest qw(start_cmd finish_cmd wait_until slurp write_file);

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "51-h2-flow.t: overall time limit reached\n" };
alarm 90;

my $dir  = tempdir(CLEANUP => 1);
my $rec  = File::Spec->catfile($dir, 'record');      # what the apps did, a line each
my $prog = File::Spec->catfile($dir, 'progress');    # bytes /big has sent so far

sub note_line {
    open my $fh, '>>', $rec or die "open $rec: $!";
    syswrite $fh, "@_\n";
    close $fh;
}

sub records { return split /\n/, slurp($rec) }

my $PIECE = 'p' x 65536;
my $BIG   = 320;    # /big sends 320 pieces of 64 KB: 20 MB

my $release;    # in the server child: the future /hold waits on
my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    my $path = $scope->{path};
    my $reply = async sub {
        my ($body) = @_;
        await $send->({ type => 'http.response.start', status => 200,
            headers => [ [ 'content-type', 'text/plain' ], [ 'content-length', length $body ] ] });
        await $send->({ type => 'http.response.body', body => $body });
    };
    if ($path eq '/release') {
        $release->done if $release && !$release->is_ready;
        await $reply->('released');
        return;
    }
    if ($path eq '/big') {    # progress in a file of its own (/big?N)
        my $prog = "$prog." . ($scope->{query_string} // 0);
        await $send->({ type => 'http.response.start', status => 200,
            headers => [ [ 'content-type', 'application/octet-stream' ] ] });
        my $sent = 0;
        for my $i (1 .. $BIG) {
            await $send->({ type => 'http.response.body', body => $PIECE, more => 1 });
            $sent += length $PIECE;
            open my $fh, '>', "$prog.tmp" or die;
            print {$fh} $sent;
            close $fh;
            rename "$prog.tmp", $prog or die;
        }
        await $send->({ type => 'http.response.body', body => '' });
        return;
    }
    if ($path eq '/slow') {    # answers in three pieces over 1.5 s
        note_line('slow started');
        await $send->({ type => 'http.response.start', status => 200, headers => [ [ 'content-type', 'text/plain' ] ] });
        for my $i (1 .. 3) {
            await IO::Async::Loop->new->delay_future(after => 0.5);
            await $send->({ type => 'http.response.body', body => "slow $i;", more => $i < 3 ? 1 : 0 });
        }
        note_line('slow done');
        return;
    }
    if ($path eq '/hold') {    # reads nothing until /release
        note_line('hold waiting');
        $release = IO::Async::Loop->new->new_future;
        await $release;
        note_line('hold released');
    }
    my $in = '';
    my $events = 0;
    while (1) {
        my $ev = await $receive->();
        $events++;
        $in .= $ev->{body} // '';
        last unless $ev->{type} eq 'http.request' && $ev->{more};
    }
    note_line("$path got " . length $in);
    await $reply->(length($in) . ' ' . md5_hex($in) . " $events");
};

my $MB = join '', map { chr($_ % 251) } 1 .. 1_048_576;    # 1 MB, not one byte repeated

subtest 'a 1 MB request body arrives whole' => sub {
    my $srv = serve_ok('body', app => $app, http2 => 1);
    return unless $srv->{port};
    my $file = write_file('mb', $MB);
    my $want = length($MB) . ' ' . md5_hex($MB);
    my ($st, $out, $err) = run_cmd(20, 'curl', '-sS', '--max-time', 15, '--http2-prior-knowledge',
        '--data-binary', "\@$file", "http://127.0.0.1:$srv->{port}/upload");
    is($st, 0, 'curl succeeds') or diag($err);
    like($out, qr/^\Q$want\E [0-9]+$/, 'curl: length and MD5 of the body the app read');
    my ($events) = $out =~ / ([0-9]+)$/;
    ok(($events // 0) > 16, "in many receive events ($events), across window updates");
    ($st, $out, $err) = run_cmd(20, 'nghttp', '-t', 15, '-d', $file, "http://127.0.0.1:$srv->{port}/upload");
    is($st, 0, 'nghttp succeeds') or diag($err);
    like($out, qr/^\Q$want\E [0-9]+$/, 'nghttp: the same');
    SKIP: {
        skip 'h2load is not installed', 3 if H2Test::tools_missing('h2load');
        # 200 uploads of 200 KB, 20 at a time on each of two connections.
        my $up = write_file('200k', substr($MB, 0, 200_000));
        ($st, $out, $err) = run_cmd(30, 'h2load', '-n', 200, '-c', 2, '-m', 20, '-N', 10, '-d', $up,
            "http://127.0.0.1:$srv->{port}/upload");
        like($out, qr/^requests: 200 total, 200 started, 200 done, 200 succeeded, 0 failed, 0 errored, 0 timeout$/m,
            'h2load: 200 concurrent uploads of 200 KB all succeed') or diag($out . $err);
        like($out, qr/^status codes: 200 2xx/m, 'h2load: 200 2xx');
        my $line = '200000 ' . md5_hex(substr($MB, 0, 200_000));
        my ($resp) = $out =~ /^traffic: .* \(([0-9]+)\) data$/m;
        ok(($resp // 0) >= 200 * (length($line) + 2), 'h2load: ' . ($resp // 0) . " bytes of answers (each '$line N')");
    }
    stopped_ok($srv, 'body');
};

subtest 'max_body_size: 413 with or without a content-length' => sub {
    unlink $rec;
    my $srv = serve_ok('max body', app => $app, http2 => 1, max_body_size => 10_000);
    return unless $srv->{port};
    my $port = $srv->{port};
    my $file = write_file('20k', 'z' x 20_000);
    my $n = nghttp(15, '-n', '-d', $file, "http://127.0.0.1:$port/cl");
    my ($s) = values %{ $n->{streams} };
    is($s && H2Test::fields_of($s->{blocks}[0])->{':status'}, ['413'], 'content-length 20000 over 10000: 413')
        or diag($n->{out});

    my ($st, $out, $err) = run_cmd(20, 'curl', '-sS', '--max-time', 10, '--http2-prior-knowledge', '-w', '\n%{http_code} %{http_version}',
        '--data-binary', "\@$file", '-H', 'Content-Length:', "http://127.0.0.1:$port/nocl");
    like($out, qr/\n413 2\z/, 'no content-length, 20000 bytes streamed: 413') or diag($err);

    # The raw client: no content-length, the body in DATA frames; then a
    # second stream on the same connection.
    my $c = H2Test::Conn->new($port);
    $c->request(1, POST => '/raw');
    $c->data(1, 'r' x 4000);
    $c->data(1, 'r' x 8000, end => 1);
    my $end = $c->read_until(5, sub { $c->ended(1) || defined $c->rst(1) });
    is($end, 'match', 'raw client: the stream ends');
    like($c->body(1), qr/Payload Too Large/, 'raw client: the 413 body');
    $c->request(3, POST => '/small');
    $c->data(3, 'x' x 9000, end => 1);
    $end = $c->read_until(5, sub { $c->ended(3) });
    like($c->body(3), qr/^9000 /, 'a body within the limit on the same connection is served');
    $c->close;
    ok(wait_until(2, sub { grep { /^\/small got 9000$/ } records() }), 'the app read that one');
    is([ grep { m{^/(cl|nocl|raw) got} && !/got [0-9]{1,4}$/ && !/got 10000$/ } records() ], [],
        'no app ever got more than max_body_size');
    stopped_ok($srv, 'max body');
};

for my $window (undef, 1_048_576) {
    my $name = 'a stream whose app does not read blocks no other stream'
        . ($window ? " (h2_initial_window_size $window)" : '');
    subtest $name => sub {
        unlink $rec;
        my $srv = serve_ok('hold', app => $app, http2 => 1, ($window ? (h2_initial_window_size => $window) : ()));
        return unless $srv->{port};
        my $port = $srv->{port};
        my $size = ($window // 65535) + 500_000;    # more than one stream window
        my $file = write_file('hold', 'h' x $size);
        # One connection, two streams uploading the same body: /hold reads
        # nothing until released, /fast reads all of it.
        my $job = start_cmd(argv => [ 'nghttp', '-t', 15, '-d', $file,
            "http://127.0.0.1:$port/hold", "http://127.0.0.1:$port/fast" ]);
        my $fast = wait_until(8, sub { grep { $_ eq "/fast got $size" } records() });
        ok($fast, "/fast read its $size bytes while /hold was waiting") or diag(join ' | ', records());
        is([ grep { /^hold released/ } records() ], [], '/hold had not been released then');
        my ($st, $out) = run_cmd(10, 'curl', '-sS', "http://127.0.0.1:$port/release");
        is($out, 'released', 'released /hold');
        my ($nst, $nout, $nerr) = finish_cmd($job, 15);
        is($nst, 0, 'nghttp completes both streams') or diag($nerr . $nout);
        is([ grep { m{got} } records() ], [ "/fast got $size", "/hold got $size" ],
            'both apps got the whole body, /fast first');
        stopped_ok($srv, 'hold');
    };
}

subtest 'a slow reader holds back the app' => sub {
    my $srv = serve_ok('backpressure', app => $app, http2 => 1);
    return unless $srv->{port};
    my $port = $srv->{port};
    my $big = 0;
    my $sent = sub { slurp("$prog.$big") || 0 };

    # The client gives no window beyond the first 65535 bytes.
    $big++;
    my $c = H2Test::Conn->new($port);
    $c->request(1, GET => "/big?$big", end => 1);
    $c->read_until(1.5);
    ok($sent->() > 0, 'the app started sending');
    ok($sent->() <= 4 * 65536, 'with no window update it got no further than a few pieces (' . $sent->() . ' bytes)');
    is($c->got(1), 65535, 'the client got exactly its window');
    $c->close;

    # A window of 2 GB, but the client reads nothing: the socket fills
    # (its receive buffer is fixed at 64 KB; the server's send buffer may
    # grow to a few MB).
    $big++;
    my $rss0 = rss_kb($srv->{pid});
    $c = H2Test::Conn->new($port, settings => { 0x4 => 0x7fffffff }, rcvbuf => 65536);
    $c->window_update(0, 0x7fffffff - 65535);
    $c->request(1, GET => "/big?$big", end => 1);
    my $last = -1;
    wait_until(4, sub { my $now = $sent->(); my $same = $now == $last && $now > 0; $last = $now; sleep 0.2; $same });
    my $stalled = $sent->();
    my $total = $BIG * length $PIECE;
    ok($stalled > 0, "the app started sending");
    ok($stalled < $total / 2, "with the client not reading, the app stopped at $stalled of $total bytes");
    my $grew = (rss_kb($srv->{pid}) // 0) - ($rss0 // 0);
    ok($grew < 30_000, "the server's RSS grew by $grew kB (< 30 MB)");
    # Now the client reads: the whole response arrives.
    $c->{count_only} = 1;
    $c->{quiet_data} = 1;
    my $end = $c->read_until(20, sub { $c->ended(1) });
    is($end, 'match', 'the response ends once the client reads');
    is($c->got(1), $total, 'all 20 MB arrive');
    is($sent->(), $total, 'and the app sent them all');
    $c->close;
    stopped_ok($srv, 'backpressure');
};

subtest 'graceful shutdown: GOAWAY, the stream in flight finishes, a new one is refused' => sub {
    unlink $rec;
    my $srv = serve_ok('shutdown', app => $app, http2 => 1);
    return unless $srv->{port};
    my $c = H2Test::Conn->new($srv->{port});
    $c->request(1, GET => '/slow', end => 1);
    ok(wait_until(3, sub { grep { $_ eq 'slow started' } records() }), 'the slow stream is running');
    kill TERM => $srv->{pid};
    my $t0 = time;
    my $end = $c->read_until(3, sub { grep { $_->{last_stream_id} < 0x7fffffff } $c->goaways });
    my @ga = $c->goaways;
    is($end, 'match', 'the client gets a GOAWAY naming the last stream');
    is([ map { $_->{error_code} } @ga ], [ map { 0 } @ga ], 'NO_ERROR');
    is($ga[-1]{last_stream_id}, 1, 'last stream 1 (the one in flight)');
    ok(!$c->ended(1), 'it came before the response ended');
    $c->request(3, GET => '/after', end => 1);
    $end = $c->read_until(5);
    is($end, 'eof', 'then the connection closes');
    ok(time - $t0 < 4, 'within 4 s of SIGTERM');
    is($c->body(1), 'slow 1;slow 2;slow 3;', 'the stream in flight was answered in full');
    ok($c->ended(1), '... and ended');
    is([ $c->heads(3) ], [], 'the stream opened after GOAWAY got no response');
    is([ grep { /after/ } records() ], [], 'and never reached the app');
    $c->close;
    my $st = TLSTest::_reap($srv->{pid}, 5);
    is($st, 0, 'the server exits 0') or diag(server_log($srv));
    stop_server($srv) unless defined $st;
};

subtest 'a connection going away is closed even if the client never answers' => sub {
    my $srv = serve_ok('no answer', app => $app, http2 => 1, timeout => 1);
    return unless $srv->{port};
    my %end;
    for my $ack (1, 0) {
        my $c = H2Test::Conn->new($srv->{port}, ack => $ack);
        my $t0 = time;
        my $end = $c->read_until(6);
        $end{$ack} = [ $end, time - $t0, scalar $c->goaways ];
        $c->close;
    }
    is($end{1}[0], 'eof', 'idle past timeout, a client answering PING: closed');
    ok($end{1}[1] < 3, sprintf('... after %.1f s', $end{1}[1]));
    is($end{0}[0], 'eof', 'a client that answers nothing (no SETTINGS ACK, no PING ACK): closed too');
    ok($end{0}[1] < 4, sprintf('... after %.1f s', $end{0}[1]));
    ok($end{0}[2] >= 1, '... after a GOAWAY');

    # Shutting down with such a client connected takes no longer either.
    my $c = H2Test::Conn->new($srv->{port}, ack => 0);
    $c->read_until(0.3);
    stopped_ok($srv, 'no answer');
    $c->close;
};

done_testing;
