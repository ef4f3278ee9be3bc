#!/usr/bin/env perl
# Bounded memory with a slow client.
#
# Starts a PAGI::Server child process (this build by default) whose app
# streams up to 100 MB in 64 KiB http.response.body events, awaiting each
# $send. The server keeps $send pending while more than write_high_watermark
# bytes are buffered, so a client that reads slowly should hold the app back
# instead of the response piling up in the server's memory.
#
# A raw TCP client requests the stream and reads 1 byte per millisecond
# (1000 B/s) for DURATION seconds. Once a second the server's RSS (VmRSS from
# /proc/PID/status) is sampled and printed with how many bytes the app has
# handed to $send so far; at the end one summary line:
#
#   backpressure: RSS start A KiB, max B KiB, end C KiB over N s; app sent S bytes
#
# Usage (run `make` first):
#   perl bench/backpressure.pl                     # this build (blib)
#   perl bench/backpressure.pl --reference DIR     # a PAGI-Server checkout instead
#   DURATION=10 perl bench/backpressure.pl --duration 10 --rcvbuf 4096
#
#   --duration N   seconds of slow reading (default $DURATION or 10)
#   --rcvbuf N     set the client socket's SO_RCVBUF (default: kernel default,
#                  with autotuning); a small value takes kernel buffering
#                  mostly out of the picture
#
# Linux only (/proc). Uses 127.0.0.1 and an ephemeral port; every loop is
# bounded in time, and the server child is killed by PID on any exit.
use strict;
use warnings;
use Getopt::Long qw(GetOptions);
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use Socket qw(PF_INET SOCK_STREAM SOL_SOCKET SO_RCVBUF IPPROTO_TCP inet_aton
              pack_sockaddr_in unpack_sockaddr_in);
use IO::Handle;
use POSIX qw(WNOHANG);
use Time::HiRes qw(time sleep);
use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use Future::AsyncAwait;

my $LIMIT = 100 * 1024 * 1024;    # what the app would send if never held back
my $CHUNK = 65536;

if (@ARGV && $ARGV[0] eq '--serve') {
    shift @ARGV;
    serve();
    exit 0;
}

my ($reference, $rcvbuf);
my $duration = $ENV{DURATION} // 10;
GetOptions(
    'reference=s' => \$reference,
    'duration=f'  => \$duration,
    'rcvbuf=i'    => \$rcvbuf,
) or die "usage: $0 [--reference DIR] [--duration N] [--rcvbuf BYTES]\n";
die "--duration must be positive\n" unless $duration > 0;

my $here = abs_path(dirname(abs_path($0)) . '/..');
my ($label, $lib);
if (defined $reference) {
    my $dir = abs_path($reference) // die "no such directory: $reference\n";
    -f "$dir/lib/PAGI/Server.pm" or die "$dir/lib/PAGI/Server.pm not found\n";
    ($label, $lib) = ("reference ($dir)", "$dir/lib");
} else {
    -d "$here/blib/arch" or die "$here/blib not built: run `make` first\n";
    ($label, $lib) = ('this build', "$here/blib/arch:$here/blib/lib");
}

# ---- server child -----------------------------------------------------------

my $child;    # PID of the server, killed on every way out
sub stop_child {
    return unless $child;
    my $pid = $child;
    undef $child;
    kill 'TERM', $pid;
    my $until = time + 3;
    while (time < $until) {
        return if waitpid($pid, WNOHANG) != 0;
        sleep 0.05;
    }
    kill 'KILL', $pid;
    waitpid($pid, 0);
}
END { my $rc = $?; stop_child(); $? = $rc }
$SIG{INT} = $SIG{TERM} = $SIG{HUP} = sub { stop_child(); exit 130 };
$SIG{PIPE} = 'IGNORE';

pipe(my $from_child, my $to_parent) or die "pipe: $!";
$child = fork // die "fork: $!";
if (!$child) {
    close $from_child;
    open STDOUT, '>&', $to_parent or die "dup: $!";
    $SIG{PIPE} = 'DEFAULT';    # an ignored signal would stay ignored across exec
    $ENV{PERL5LIB} = $lib . (length($ENV{PERL5LIB} // '') ? ":$ENV{PERL5LIB}" : '');
    exec $^X, abs_path($0), '--serve' or die "exec: $!";
}
close $to_parent;
$from_child->blocking(0);

# Lines from the child: "port N" once, then "sent N" as the app progresses.
my ($pipe_buf, $port, $app_sent, $child_gone) = ('', undef, 0, 0);
sub poll_child {
    my ($timeout) = @_;
    my $rin = '';
    vec($rin, fileno($from_child), 1) = 1;
    return unless select(my $rout = $rin, undef, undef, $timeout) > 0;
    my $n = sysread($from_child, $pipe_buf, 65536, length $pipe_buf);
    if (defined $n && $n == 0) { $child_gone = 1; sleep $timeout; return }
    while ($pipe_buf =~ s/\A([^\n]*)\n//) {
        my $line = $1;
        if    ($line =~ /^port (\d+)$/) { $port = $1 }
        elsif ($line =~ /^sent (\d+)$/) { $app_sent = $1 }
    }
}

sub rss_kib {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return undef;
    while (<$fh>) { return $1 if /^VmRSS:\s+(\d+)\s+kB/ }
    return undef;
}

# Bytes the kernel holds for the connection: the server socket's send queue
# (written but not yet acknowledged) and the client socket's receive queue
# (arrived but not yet read), from /proc/net/tcp. What the app handed to $send
# minus what the client read minus these is what the server process itself
# still buffers. On loopback (64 KiB MTU, send buffer autotuning) the kernel
# alone can hold several MB, which is why "app sent" is not just the watermark.
sub kernel_queues {
    my ($server_port, $client_port) = @_;
    my ($txq, $rxq) = (0, 0);
    open my $fh, '<', '/proc/net/tcp' or return;
    while (<$fh>) {
        my (undef, $local, $remote, undef, $queues) = split;
        next unless defined $queues && $queues =~ /^([0-9A-F]+):([0-9A-F]+)$/i;
        my ($tx, $rx) = (hex $1, hex $2);
        my ($lport, $rport) = map { /:([0-9A-F]+)$/i ? hex $1 : -1 } $local, $remote;
        $txq = $tx if $lport == $server_port && $rport == $client_port;
        $rxq = $rx if $lport == $client_port && $rport == $server_port;
    }
    return ($txq, $rxq);
}

my $deadline = time + 20;
poll_child(0.1) while !defined $port && !$child_gone && time < $deadline;
die "server did not start (no port within 20 s)\n" unless defined $port;
my $server_pid = $child;
sleep 0.5;    # let the freshly started server settle before the baseline
my $rss_start = rss_kib($server_pid) // die "cannot read /proc/$server_pid/status\n";

# ---- slow client ------------------------------------------------------------

socket(my $sock, PF_INET, SOCK_STREAM, IPPROTO_TCP) or die "socket: $!";
setsockopt($sock, SOL_SOCKET, SO_RCVBUF, pack('i', $rcvbuf)) or die "SO_RCVBUF: $!"
    if defined $rcvbuf;
connect($sock, pack_sockaddr_in($port, inet_aton('127.0.0.1'))) or die "connect: $!";
$sock->autoflush(1);
syswrite($sock, "GET / HTTP/1.1\r\nHost: 127.0.0.1:$port\r\nConnection: close\r\n\r\n")
    or die "send request: $!";
$sock->blocking(0);
my ($client_port) = unpack_sockaddr_in(getsockname($sock));

printf "backpressure: %s, pid %d, port %d, client reads 1 byte/ms for %g s%s\n",
    $label, $server_pid, $port, $duration,
    defined $rcvbuf ? ", client SO_RCVBUF $rcvbuf" : '';
printf "  t=%3ds  RSS %7d KiB  app sent %10d  client read %6d  in kernel %8d  in server %8d bytes\n",
    0, $rss_start, $app_sent, 0, 0, 0;

my ($read, $eof, $rss_max, $rss_end) = (0, 0, $rss_start, $rss_start);
my $t0 = time;
my $next_sample = 1;
while (1) {
    my $elapsed = time - $t0;
    last if $elapsed >= $duration;

    # 1 byte per elapsed millisecond (catching up a few if a tick ran late).
    my $want = int($elapsed * 1000) - $read;
    $want = 16 if $want > 16;
    if ($want > 0 && !$eof) {
        my $n = sysread($sock, my $buf, $want);
        if    (!defined $n) { die "read: $!" unless $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR }
        elsif ($n == 0)     { $eof = 1 }
        else                { $read += $n }
    }

    if ($elapsed >= $next_sample) {
        my $rss = rss_kib($server_pid);
        if (!defined $rss) { print "  server process is gone\n"; last }
        $rss_max = $rss if $rss > $rss_max;
        $rss_end = $rss;
        my ($txq, $rxq) = kernel_queues($port, $client_port);
        printf "  t=%3ds  RSS %7d KiB  app sent %10d  client read %6d  in kernel %8d  in server %8d bytes%s\n",
            $next_sample, $rss, $app_sent, $read, $txq + $rxq, $app_sent - $read - $txq - $rxq,
            $eof ? '  (server closed)' : '';
        $next_sample++;
    }

    poll_child(0.001);    # also the 1 ms tick
}
my $secs = time - $t0;

# Final sample, with the child's counter after its last report.
poll_child(0.05) for 1 .. 4;
if (defined(my $rss = rss_kib($server_pid))) {
    $rss_max = $rss if $rss > $rss_max;
    $rss_end = $rss;
}
my ($txq, $rxq) = kernel_queues($port, $client_port);
stop_child();
close $sock;

printf "  client read %d bytes in %.1f s (%.0f B/s)%s\n",
    $read, $secs, $read / $secs, $eof ? '; server closed the connection' : '';
printf "  at the end: app sent %d = client read %d + kernel queues %d (server send %d, client receive %d)"
     . " + about %d still buffered in the server (response headers make it a little low)\n",
    $app_sent, $read, $txq + $rxq, $txq, $rxq, $app_sent - $read - $txq - $rxq;
printf "backpressure: RSS start %d KiB, max %d KiB, end %d KiB over %.0f s; app sent %d bytes\n",
    $rss_start, $rss_max, $rss_end, $secs, $app_sent;
exit 0;

# ---- the server (runs in the child, PAGI::Server found via PERL5LIB) ----------

sub serve {
    require IO::Async::Loop;
    require IO::Async::Timer::Periodic;
    require PAGI::Server;

    STDOUT->autoflush(1);
    my $sent = 0;
    my $app = async sub {
        my ($scope, $receive, $send) = @_;
        die "no lifespan\n" if $scope->{type} ne 'http';
        my $chunk = 'x' x $CHUNK;
        await $send->({
            type    => 'http.response.start',
            status  => 200,
            headers => [['content-type', 'application/octet-stream'],
                        ['content-length', $LIMIT]],
        });
        while ($sent < $LIMIT) {
            $sent += $CHUNK;    # counted when handed to $send
            await $send->({ type => 'http.response.body', body => $chunk,
                            more => ($sent < $LIMIT ? 1 : 0) });
        }
    };

    my $loop   = IO::Async::Loop->new;
    my $server = PAGI::Server->new(
        app        => $app,
        host       => '127.0.0.1',
        port       => 0,
        quiet      => 1,
        access_log => undef,
    );
    $loop->add($server);
    $server->listen->get;
    print "port ", $server->port, "\n";

    my $reported = -1;
    my $timer = IO::Async::Timer::Periodic->new(
        interval => 0.1,
        on_tick  => sub {
            return if $sent == $reported;
            $reported = $sent;
            print "sent $sent\n";
        },
    );
    $timer->start;
    $loop->add($timer);
    $loop->run;
}
