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

sub pct {
    my ($sorted, $p) = @_;
    return 0 unless @$sorted;
    my $i = int($p / 100 * $#$sorted + 0.5);
    return $sorted->[$i];
}

sub scenario {
    my ($name, $heads, $bodies) = @_;
    my $port = start_server($name);
    my $loop = IO::Async::Loop->new;
    my $t0 = time;
    my $attack_end = $t0 + $duration;
    my (%lives, %late, $open, $failed_connect, @lat, %fail);
    $open = 0;
    $failed_connect = 0;

    # One trickling connection; reconnects when closed until the attack ends.
    my $trickler;
    $trickler = sub {
        my ($kind) = @_;
        return if time >= $attack_end;
        $loop->connect(host => '127.0.0.1', service => $port, socktype => 'stream')->on_done(sub {
            my ($sock) = @_;
            my $born = time;
            my $sent = 0;
            my ($timer, $stream, $ended);
            my $end = sub {
                return if $ended++;
                $open--;
                my $life = time - $born;
                my $deadline = $TIMEOUT + ($kind eq 'body' ? $sent / $MIN_RATE : 0) + $SLACK;
                push @{ $lives{$kind} }, $life;
                $late{$kind}++ if $life > $deadline;
                $loop->remove($timer) if $timer && $timer->loop;
                $loop->remove($stream) if $stream->loop;
                $trickler->($kind);
            };
            $stream = IO::Async::Stream->new(
                handle    => $sock,
                on_read   => sub { ${ $_[1] } = ''; 0 },
                on_read_eof  => $end,
                on_read_error => $end,
                on_write_error => $end,
            );
            $loop->add($stream);
            $open++;
            $stream->write($kind eq 'body'
                ? "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n"
                : "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ");
            require IO::Async::Timer::Periodic;
            $timer = IO::Async::Timer::Periodic->new(
                interval => 1,
                on_tick  => sub { $stream->write('a'); $sent++ },
            );
            $timer->start;
            $loop->add($timer);
        })->on_fail(sub {
            $failed_connect++;
            $loop->delay_future(after => 0.2)->on_done(sub { $trickler->($kind) })->retain;
        })->retain;
    };
    $trickler->('head') for 1 .. $heads;
    $trickler->('body') for 1 .. $bodies;

    # Normal clients: one request per connection, 5 s limit each.
    my $normal;
    $normal = sub {
        return if time >= $attack_end;
        my $start = time;
        my $done;
        my $finish = sub {
            my ($ok, $why) = @_;
            return if $done++;
            if ($ok) { push @lat, time - $start } else { $fail{$why}++ }
            $loop->later($normal);
        };
        my $f = $loop->connect(host => '127.0.0.1', service => $port, socktype => 'stream');
        my $limit = $loop->delay_future(after => 5)->on_done(sub { $finish->(0, 'timeout') });
        $f->on_done(sub {
            my ($sock) = @_;
            my $buf = '';
            my $stream;
            $stream = IO::Async::Stream->new(
                handle => $sock,
                on_read => sub { $buf .= ${ $_[1] }; ${ $_[1] } = ''; 0 },
                on_read_eof => sub {
                    $limit->cancel;
                    $loop->remove($stream);
                    $buf =~ m{^HTTP/1\.1 (\d+)} && $1 == 200 && $buf =~ /Hello, World!\z/
                        ? $finish->(1) : $finish->(0, $buf =~ m{^HTTP/1\.1 (\d+)} ? "status $1" : 'no response');
                },
                on_read_error => sub { $limit->cancel; $loop->remove($stream); $finish->(0, 'read error') },
            );
            $loop->add($stream);
            $stream->write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        })->on_fail(sub { $limit->cancel; $finish->(0, 'connect failed') })->retain;
        $limit->retain;
    };
    $normal->() for 1 .. $NORMAL;

    # The attack, then trickling goes on (no reconnects) until the server
    # has closed every connection or the longest deadline has passed.
    $loop->loop_once(0.1) while time < $attack_end;
    # A body trickler sends a byte a second, so its deadline is barely
    # more than the timeout.
    my $drain_until = time + $TIMEOUT + 3 * $SLACK;
    $loop->loop_once(0.1) while $open > 0 && time < $drain_until;
    my $left_open = $open;
    stop_server();

    my @sorted = sort { $a <=> $b } @lat;
    my $total = @lat;
    $total += $_ for values %fail;
    my $ok_pct = $total ? 100 * @lat / $total : 0;
    my ($p50, $p99) = (pct(\@sorted, 50), pct(\@sorted, 99));
    printf "%s: %d slow heads + %d slow bodies, %d s\n", $name, $heads, $bodies, $duration;
    printf "  normal clients: %d requests, %.2f %% ok, p50 %.1f ms, p99 %.1f ms%s\n",
        $total, $ok_pct, $p50 * 1000, $p99 * 1000,
        (%fail ? ' (failures: ' . join(', ', map { "$_ x$fail{$_}" } sort keys %fail) . ')' : '');
    my $in_time = 1;
    for my $kind (qw(head body)) {
        my $l = $lives{$kind} or next;
        my @s = sort { $a <=> $b } @$l;
        printf "  slow %ss: %d connections closed, life p50 %.2f s, max %.2f s, over the deadline: %d\n",
            $kind, scalar @s, pct(\@s, 50), $s[-1], $late{$kind} // 0;
        $in_time = 0 if $late{$kind};
    }
    printf "  still open at the end: %d; failed trickler connects: %d\n", $left_open, $failed_connect;
    my $err = slurp($server_err);
    my $evicted = () = $err =~ /closed \d+ connection\(s\) waiting longest/g;
    my $refused = () = $err =~ /Connection rejected: at capacity/g;
    printf "  server log: %d eviction lines, %d 503 refusals\n", $evicted, $refused;
    my $pass = $ok_pct >= 99 && $p99 < 1 && $in_time && !$left_open;
    printf "  %s\n", $pass ? 'PASS' : 'FAIL';
    return $pass;
}

my $ok = scenario('mixed', 500, 200);
$ok = scenario('overflow', 1100, 0) && $ok;
exit($ok ? 0 : 1);
