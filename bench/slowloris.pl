#!/usr/bin/env perl
# Slow clients against one pagi-server process: trickling connections must
# all be closed within their deadline while normal clients keep being served.
#
#   bench/slowloris.sh [--blib DIR] [--duration SEC]
#
# Starts bin/pagi-server (from DIR, default this project's blib) on a free
# loopback port with --timeout 5 --request-timeout 5, then runs two scenarios
# of DURATION seconds (default 15) each:
#   mixed     500 slow heads (a header byte every second) and 200 slow bodies
#             (a body byte every second) under --max-connections default
#   overflow  1,100 slow heads against the default max_connections (1000)
# Trickling connections reconnect when closed, to keep the pressure on. Four
# normal clients meanwhile each loop: connect, GET with Connection: close,
# read the whole response. Reported: normal success % and p50/p99 latency,
# and the longest life of a trickling connection against its deadline
# (timeout for a head; request_timeout + bytes/500 for a body), plus 1 s of
# slack. Pass: success >= 99 %, p99 < 1 s, every trickler closed in time.
# Loopback only; the server is stopped by its PID.
use strict;
use warnings;
use FindBin;
use Getopt::Long;
use IO::Async::Loop;
use IO::Async::Stream;
use IO::Poll qw(POLLIN POLLHUP POLLERR);
use IO::Socket::INET;
use File::Temp qw(tempdir);
use POSIX qw(WNOHANG);
use Time::HiRes qw(time);

my $here = "$FindBin::Bin/..";
my $blib = "$here/blib";
my $duration = 15;
GetOptions('blib=s' => \$blib, 'duration=i' => \$duration) or die "bad options\n";
-d "$blib/lib" or die "no $blib/lib: run make first (or pass --blib)\n";

my $TIMEOUT  = 5;    # --timeout and --request-timeout
my $MIN_RATE = 500;  # the default min_body_rate
my $SLACK    = 1;
my $NORMAL   = 4;    # concurrent normal clients

my $tmp = tempdir(CLEANUP => 1);
my $app = "$tmp/app.pl";
open my $fh, '>', $app or die "$app: $!";
print $fh <<'APP';
use strict; use warnings; use Future::AsyncAwait;
my $body = 'Hello, World!';
async sub {
    my ($scope, $receive, $send) = @_;
    die "unsupported\n" if $scope->{type} ne 'http';
    while (1) {
        my $ev = await $receive->();
        return if $ev->{type} ne 'http.request';
        last unless $ev->{more};
    }
    await $send->({ type => 'http.response.start', status => 200,
        headers => [['content-type', 'text/plain'], ['content-length', length $body]] });
    await $send->({ type => 'http.response.body', body => $body });
};
APP
close $fh;

sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1)
        or die "probe socket: $!";
    return $s->sockport;
}

my ($server_pid, $server_err);
sub start_server {
    my ($name) = @_;
    my $port = free_port();
    $server_err = "$tmp/$name.err";
    $server_pid = fork // die "fork: $!";
    if (!$server_pid) {
        open STDOUT, '>', '/dev/null';
        open STDERR, '>', $server_err;
        exec $^X, "-I$blib/lib", "-I$blib/arch", "$blib/script/pagi-server",
            '--host', '127.0.0.1', '--port', $port, '-E', 'production', '--no-access-log',
            '--timeout', $TIMEOUT, '--request-timeout', $TIMEOUT, $app;
        die "exec: $!";
    }
    my $until = time + 15;
    while (time < $until) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port);
        return $port if $s;
        die "server exited early:\n" . slurp($server_err) if waitpid($server_pid, WNOHANG) > 0;
        select undef, undef, undef, 0.1;
    }
    stop_server();
    die "server did not start:\n" . slurp($server_err);
}

sub stop_server {
    return unless $server_pid;
    kill 'TERM', $server_pid;
    my $until = time + 10;
    while (time < $until) {
        if (waitpid($server_pid, WNOHANG) > 0) { undef $server_pid; return }
        select undef, undef, undef, 0.1;
    }
    kill 'KILL', $server_pid;
    waitpid($server_pid, 0);
    undef $server_pid;
}
END { stop_server() }
$SIG{INT} = $SIG{TERM} = sub { stop_server(); exit 130 };
$SIG{PIPE} = 'IGNORE';

sub slurp { my ($f) = @_; open my $h, '<', $f or return ''; local $/; <$h> }

# A literal address, so that no resolver is involved in connecting.
sub addr {
    my ($port) = @_;
    return { family => 'inet', socktype => 'stream', ip => '127.0.0.1', port => $port };
}

sub pct {
    my ($sorted, $p) = @_;
    return 0 unless @$sorted;
    my $i = int($p / 100 * $#$sorted + 0.5);
    return $sorted->[$i];
}

# The trickling connections, run in a child process (so that their load
# does not distort the normal clients' timings) with a plain poll loop,
# light enough that a close is seen within milliseconds. A connection's
# life runs from just before its connect (a slow head: the server's clock
# starts at accept) or from its head having been written (a slow body: the
# clock starts when the head is parsed) to the server's close. Each closed
# connection is written to $out as "KIND LIFE LATE"; the last line is
# "open N CONNFAIL".
sub attack {
    my ($port, $heads, $bodies, $out) = @_;
    my $attack_end = time + $duration;
    my $poll = IO::Poll->new;
    my (%conn, @todo, $failed_connect);
    $failed_connect = 0;
    open my $res, '>', $out or die "$out: $!";
    $res->autoflush(1);
    push @todo, map { [ 'head', 0 ] } 1 .. $heads;
    push @todo, map { [ 'body', 0 ] } 1 .. $bodies;
    my $closed = sub {
        my ($sock) = @_;
        my $c = delete $conn{ fileno $sock } or return;
        $poll->remove($sock);
        close $sock;
        my $life = time - $c->{born};
        my $deadline = $TIMEOUT + ($c->{kind} eq 'body' ? $c->{sent} / $MIN_RATE : 0) + $SLACK;
        printf $res "%s %.3f %d\n", $c->{kind}, $life, $life > $deadline ? 1 : 0;
        # Reconnect a little later, as a client retrying would.
        push @todo, [ $c->{kind}, time + 0.2 ] if time < $attack_end;
    };
    my $next_tick = time + 1;
    while (1) {
        my $now = time;
        last if $now >= $attack_end + $TIMEOUT + 3 * $SLACK;
        last if $now >= $attack_end && !%conn;
        # Connect what is due, a bounded number per turn.
        my ($due, @later) = (0);
        for my $t (@todo) {
            if ($t->[1] <= $now && $due < 200 && $now < $attack_end) {
                $due++;
                my $born = time;
                my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 2);
                if (!$sock) { $failed_connect++; push @later, [ $t->[0], $now + 0.2 ]; next }
                $sock->blocking(0);
                my $head = $t->[0] eq 'body'
                    ? "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
                    : "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ";
                syswrite($sock, $head);
                $born = time if $t->[0] eq 'body';
                $conn{ fileno $sock } = { sock => $sock, kind => $t->[0], born => $born, sent => 0 };
                $poll->mask($sock => POLLIN);
            }
            elsif ($now < $attack_end) {
                push @later, $t;
            }
        }
        @todo = @later;
        $poll->poll(0.02);
        for my $sock ($poll->handles(POLLIN | POLLHUP | POLLERR)) {
            my $n = sysread($sock, my $buf, 4096);
            $closed->($sock) if !defined $n ? !$!{EAGAIN} : $n == 0;
        }
        if (time >= $next_tick) {
            $next_tick += 1;
            for my $c (values %conn) {
                my $n = syswrite($c->{sock}, 'a');
                if (defined $n) { $c->{sent}++ }
                elsif (!$!{EAGAIN}) { $closed->($c->{sock}) }
            }
        }
    }
    printf $res "open %d %d\n", scalar keys %conn, $failed_connect;
    close $res;
}

# Normal clients for the attack's duration: one request per connection,
# 5 s limit each. Returns (latencies, {failure => count}).
sub normal_clients {
    my ($port) = @_;
    my $loop = IO::Async::Loop->new;
    my $stop = time + $duration;
    my (@lat, %fail);
    my $normal;
    $normal = sub {
        return if time >= $stop;
        my $start = time;
        my $done;
        my $limit;
        my $finish = sub {
            my ($ok, $why) = @_;
            return if $done++;
            $limit->cancel;
            if ($ok) { push @lat, time - $start } else { $fail{$why}++ }
            $loop->later($normal);
        };
        $limit = $loop->delay_future(after => 5)->on_done(sub { $finish->(0, 'timeout') });
        $loop->connect(addr => addr($port))->on_done(sub {
            my ($sock) = @_;
            my $buf = '';
            my $stream;
            $stream = IO::Async::Stream->new(
                handle      => $sock,
                on_read     => sub { $buf .= ${ $_[1] }; ${ $_[1] } = ''; 0 },
                on_read_eof => sub {
                    $loop->remove($stream);
                    my ($st) = $buf =~ m{^HTTP/1\.1 (\d+)};
                    ($st // 0) == 200 && $buf =~ /Hello, World!\z/
                        ? $finish->(1) : $finish->(0, defined $st ? "status $st" : 'no response');
                },
                on_read_error => sub { $loop->remove($stream); $finish->(0, 'read error') },
            );
            $loop->add($stream);
            $stream->write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        })->on_fail(sub { $finish->(0, 'connect failed') })->retain;
        $limit->retain;
    };
    # Let the attack get going first: the first second is the same as the rest.
    $loop->delay_future(after => 0.5)->get;
    $normal->() for 1 .. $NORMAL;
    $loop->loop_once(0.1) while time < $stop;
    $loop->loop_once(0.1) while time < $stop + 5 && (@lat + sum0(values %fail)) < 1;
    return (\@lat, \%fail);
}

sub sum0 { my $n = 0; $n += $_ for @_; $n }

sub scenario {
    my ($name, $heads, $bodies) = @_;
    my $port = start_server($name);
    my $out = "$tmp/$name.attack";
    my $child = fork // die "fork: $!";
    if (!$child) {
        $SIG{INT} = $SIG{TERM} = 'DEFAULT';
        undef $server_pid;    # the parent stops the server
        attack($port, $heads, $bodies, $out);
        POSIX::_exit(0);
    }
    my ($lat, $fail) = normal_clients($port);
    my $until = time + $TIMEOUT + 10;
    while (waitpid($child, WNOHANG) == 0) {
        if (time > $until) { kill 'KILL', $child; waitpid($child, 0); last }
        select undef, undef, undef, 0.1;
    }
    stop_server();

    my (%lives, %late, $left_open, $failed_connect);
    for (split /\n/, slurp($out)) {
        my @f = split ' ';
        if ($f[0] eq 'open') { ($left_open, $failed_connect) = @f[1, 2]; next }
        push @{ $lives{ $f[0] } }, $f[1];
        $late{ $f[0] } += $f[2];
    }
    $left_open //= -1;    # the attacker did not finish
    my @sorted = sort { $a <=> $b } @$lat;
    my $total = @$lat + sum0(values %$fail);
    my $ok_pct = $total ? 100 * @$lat / $total : 0;
    my ($p50, $p99) = (pct(\@sorted, 50), pct(\@sorted, 99));
    printf "%s: %d slow heads + %d slow bodies, %d s\n", $name, $heads, $bodies, $duration;
    printf "  normal clients: %d requests, %.2f %% ok, p50 %.1f ms, p99 %.1f ms%s\n",
        $total, $ok_pct, $p50 * 1000, $p99 * 1000,
        (%$fail ? ' (failures: ' . join(', ', map { "$_ x$fail->{$_}" } sort keys %$fail) . ')' : '');
    my $in_time = 1;
    for my $kind (qw(head body)) {
        my $l = $lives{$kind} or next;
        my @s = sort { $a <=> $b } @$l;
        printf "  slow %s connections: %d closed by the server, life p50 %.2f s, max %.2f s, past the deadline: %d\n",
            $kind, scalar @s, pct(\@s, 50), $s[-1], $late{$kind} // 0;
        $in_time = 0 if $late{$kind};
    }
    printf "  still open at the end: %d; failed trickler connects: %d\n", $left_open, $failed_connect // 0;
    my $err = slurp($server_err);
    my $evicted = () = $err =~ /closed \d+ connection\(s\) waiting longest/g;
    my $refused = () = $err =~ /Connection rejected: at capacity/g;
    printf "  server log: %d eviction lines, %d 503 refusals\n", $evicted, $refused;
    my $pass = $ok_pct >= 99 && $p99 < 1 && $in_time && $left_open == 0;
    printf "  %s\n", $pass ? 'PASS' : 'FAIL';
    return $pass;
}

my $ok = scenario('mixed', 500, 200);
$ok = scenario('overflow', 1100, 0) && $ok;
exit($ok ? 0 : 1);
