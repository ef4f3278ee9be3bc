#!/usr/bin/env perl
# What an idle HTTP/1.1 keep-alive connection costs the server, and whether
# a burst of large requests gives its memory back once things are quiet.
# For this build (blib/, run `make` first) and, when a reference checkout is
# given, the reference PAGI::Server, in the same run.
#
#   perl bench/idle-memory.pl [REFERENCE_CHECKOUT]      (e.g. /tmp/up/server)
#   CONNS=10000 REF_CONNS=2000 BURST=200 BURST_BYTES=1048576 QUIET=5 \
#       ROUNDS=3 perl bench/idle-memory.pl ...
#   HTTP2=1 perl bench/idle-memory.pl ...   (servers with http2 => 1; every
#                                            connection still speaks HTTP/1.1)
#
# Each server is `bench/serve.pl echo` (one process; PERL5LIB picks the
# server: blib/ for this build, REFERENCE_CHECKOUT/lib for the reference)
# with max_connections raised to fit and a 600 s `timeout`, so no idle
# connection is closed during the run. Figures are the server process's
# VmRSS (/proc/PID/status: all its threads, nothing else):
#
#   1. base: started, one request served, 1 s later;
#   2. idle: CONNS more connections (REF_CONNS for the reference), each
#      sent one GET and read its answer, then left open and quiet, 2 s
#      later; printed as KB per connection ((idle - base) / connections);
#   3. burst: BURST more connections at once, each POSTing BURST_BYTES
#      (echoed back by the app, so the body goes both ways), answers read,
#      connections left open: RSS right after;
#   4. quiet: QUIET seconds later (the burst connections open and idle: is
#      the memory given back?);
#   5. closed: the burst connections closed, QUIET seconds later.
#   peak: VmHWM at the end.
#
# REF_CONNS defaults to CONNS when IO::Async::Loop::Epoll is installed and
# to 2,000 otherwise: the reference then runs on IO::Async's poll(2) loop,
# whose every turn costs time in proportion to the connections open, so
# 10,000 of them take minutes to open (6,449 were answered in 2 minutes
# here). Its cost per connection does not depend on their number.
#
# ROUNDS=N runs both servers N times, interleaved, and prints each figure's
# median and spread. The client is this script: non-blocking sockets and
# poll(2), at most 256 connections being opened at once. It holds up to
# CONNS + BURST + 100 sockets, so the fd soft limit must be above that (it
# is raised to the hard limit with prlimit when lower). Connections are
# closed with a reset (SO_LINGER 0), so no port sits in TIME_WAIT between
# runs. Talks to 127.0.0.1 only; every wait is bounded; each server is
# stopped by its PID (TERM, then KILL after 10 s), also on INT/TERM/die.
# Debugging aids: SMAPS=1 prints which mappings grew with the idle
# connections (the Perl thread's heap or the I/O threads' arenas); HOLD=S
# waits S seconds with them open (to look at the server with gdb, /proc).
use strict;
use warnings;
use Errno qw(EINPROGRESS EAGAIN EWOULDBLOCK EINTR);
use Fcntl qw(F_GETFL F_SETFL O_NONBLOCK);
use FindBin;
use IO::Handle;
use IO::Poll qw(POLLIN POLLOUT POLLERR POLLHUP);
use POSIX ();
use Socket qw(PF_INET SOCK_STREAM SOL_SOCKET SO_LINGER IPPROTO_TCP TCP_NODELAY
    inet_aton pack_sockaddr_in);
use Time::HiRes qw(sleep time);

$| = 1;
my $conns       = $ENV{CONNS}       // 10_000;
my $burst       = $ENV{BURST}       // 200;
my $burst_bytes = $ENV{BURST_BYTES} // 1024 * 1024;
my $quiet       = $ENV{QUIET}       // 5;
my $rounds      = $ENV{ROUNDS}      // 1;
my $here        = "$FindBin::Bin/..";
my $ref         = shift;
my $ref_conns   = $ENV{REF_CONNS}
    // (eval { require IO::Async::Loop::Epoll; 1 } ? $conns : ($conns < 2000 ? $conns : 2000));

die "usage: $0 [REFERENCE_CHECKOUT]\n" if defined $ref && !-d "$ref/lib";
die "CONNS, REF_CONNS and ROUNDS must be at least 1\n"
    unless $conns >= 1 && $ref_conns >= 1 && $rounds >= 1;

raise_fd_limit(($conns > $ref_conns ? $conns : $ref_conns) + $burst + 100);

my @children;    # PIDs of servers still running (stopped by the END block)
END { stop_server($_) for @children }
$SIG{INT} = $SIG{TERM} = sub { exit 130 };

my @servers = (['this build', "$here/blib/arch:$here/blib/lib", $conns]);
push @servers, ['reference', "$ref/lib", $ref_conns] if defined $ref;
my %runs;    # name => [figures of each round]
for my $round (1 .. $rounds) {
    print "-- round $round of $rounds\n" if $rounds > 1;
    for my $s (@servers) { push @{ $runs{ $s->[0] } }, measure(@$s) }
}

my @cols = qw(base idle burst quiet closed peak);
print "\n";
printf "%-10s  %6s  %-21s  %s\n", 'server', 'conns', 'KB/conn',
    join('  ', map { sprintf '%-19s', "$_ MB" } @cols);
for my $s (@servers) {
    my ($name, undef, $n) = @$s;
    my @r = @{ $runs{$name} };
    my $cell = sub {
        my ($fmt, @v) = @_;
        @v = sort { $a <=> $b } @v;
        my $med = @v % 2 ? $v[$#v / 2] : ($v[@v / 2 - 1] + $v[@v / 2]) / 2;
        return sprintf $fmt, $med if @v == 1;
        return sprintf "$fmt ($fmt-$fmt)", $med, $v[0], $v[-1];
    };
    printf "%-10s  %6d  %-21s  %s\n", $name, $n,
        $cell->('%.2f', map { ($_->{idle} - $_->{base}) / $n } @r),
        join('  ', map { my $c = $_; sprintf '%-19s', $cell->('%.1f', map { $_->{$c} / 1024 } @r) } @cols);
}
printf "\nKB/conn: (idle - base) / conns%s. burst: %d x %d-byte POST echoed; "
    . "quiet: %g s later; closed: burst connections closed, %g s later.%s\n",
    ($rounds > 1 ? ", median (min-max) of $rounds rounds" : ''),
    $burst, $burst_bytes, $quiet, $quiet, ($ENV{HTTP2} ? ' Servers with http2 => 1.' : '');

# Runs the phases against one server with $n idle connections; returns its
# figures (KiB).
sub measure {
    my ($name, $lib, $n) = @_;
    my ($pid, $port) = start_server($lib, $n);
    my %r;
    print "$name: server $pid on port $port\n";

    my @one = open_conns($port, 1, get_request(), 30);
    die "$name: the first request failed\n" unless @one == 1;
    sleep 1;
    $r{base} = rss_kib($pid);
    smaps_snapshot($pid, 'before') if $ENV{SMAPS};

    my $t0   = time;
    my @idle = open_conns($port, $n, get_request(), 180);
    die sprintf "%s: only %d of %d idle connections answered\n", $name, scalar @idle, $n
        unless @idle == $n;
    printf "%s: %d idle connections open in %.1f s\n", $name, $n, time - $t0;
    sleep 2;
    $r{idle} = rss_kib($pid);
    smaps_snapshot($pid, 'after') if $ENV{SMAPS};
    printf "%s: base %d KB, with %d idle connections %d KB: %.2f KB each\n",
        $name, $r{base}, $n, $r{idle}, ($r{idle} - $r{base}) / $n;
    if ($ENV{HOLD}) {
        print "$name: holding $ENV{HOLD} s (server PID $pid)\n";
        sleep $ENV{HOLD};
    }

    if ($burst > 0) {
        $t0 = time;
        my @big = open_conns($port, $burst, post_request($burst_bytes), 180, $burst);
        die sprintf "%s: only %d of %d burst requests answered\n", $name, scalar @big, $burst
            unless @big == $burst;
        $r{burst} = rss_kib($pid);
        printf "%s: burst of %d x %d bytes in %.1f s: %d KB\n",
            $name, $burst, $burst_bytes, time - $t0, $r{burst};
        sleep $quiet;
        $r{quiet} = rss_kib($pid);
        printf "%s: %g s quiet (burst connections open, idle): %d KB\n", $name, $quiet, $r{quiet};
        close_all(@big);
        sleep $quiet;
        $r{closed} = rss_kib($pid);
        printf "%s: burst connections closed, %g s later: %d KB\n", $name, $quiet, $r{closed};
    }
    else {
        $r{burst} = $r{quiet} = $r{closed} = $r{idle};
    }
    $r{peak} = hwm_kib($pid);

    my $gone = grep { closed_by_peer($_) } @idle;
    printf "%s: %d of the %d idle connections were closed by the server\n", $name, $gone, $n
        if $gone;
    close_all(@idle, @one);
    stop_server($pid);
    @children = grep { $_ != $pid } @children;
    return \%r;
}

sub get_request { "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" }

sub post_request {
    my ($n) = @_;
    return "POST / HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
        . "Content-Length: $n\r\n\r\n" . ('x' x $n);
}

# Opens $n connections, each sends $request and reads one whole response
# (Content-Length framed); at most $batch in flight at once. Returns the
# sockets that got a 200 (still open), within $limit seconds in all.
sub open_conns {
    my ($port, $n, $request, $limit, $batch) = @_;
    $batch //= 256;
    my $addr = pack_sockaddr_in($port, inet_aton('127.0.0.1'));
    my $end  = time + $limit;
    my (@done, %live);
    my $poll    = IO::Poll->new;
    my $started = 0;
    while ((@done < $n) && time < $end) {
        while ($started < $n && keys %live < $batch) {
            $started++;
            socket(my $s, PF_INET, SOCK_STREAM, 0) or die "socket: $!\n";
            nonblocking($s);
            setsockopt($s, SOL_SOCKET, SO_LINGER, pack('ii', 1, 0));
            setsockopt($s, IPPROTO_TCP, TCP_NODELAY, 1);
            if (!connect($s, $addr) && $! != EINPROGRESS) {
                die "connect: $!\n";
            }
            $live{ fileno $s } = { s => $s, out => $request, in => '', off => 0 };
            $poll->mask($s => POLLOUT);
        }
        last unless %live;
        my $ready = $poll->poll(0.5);
        next unless $ready && $ready > 0;
        for my $s ($poll->handles(POLLIN | POLLOUT | POLLERR | POLLHUP)) {
            my $c  = $live{ fileno $s } or next;
            my $ev = $poll->events($s);
            my $ok = step($c, $ev);
            if (defined $ok && $ok == 0) {    # more to do
                $poll->mask($s => $c->{mask});
                next;
            }
            $poll->remove($s);
            delete $live{ fileno $s };
            if   ($ok) { push @done, $s }
            else       { close $s }
        }
    }
    close $_->{s} for values %live;
    return @done;
}

# One poll event on a connection: writes what is left of its request, reads
# its response. Returns 0 (not finished; $c->{mask} is what to poll for
# next), 1 (a 200 read), undef (failed).
sub step {
    my ($c, $ev) = @_;
    my $s = $c->{s};
    if ($c->{off} < length $c->{out}) {
        return undef if $ev & POLLERR;
        if ($ev & POLLOUT) {
            my $w = syswrite $s, $c->{out}, 1 << 20, $c->{off};
            if (defined $w) { $c->{off} += $w }
            elsif ($! != EAGAIN && $! != EWOULDBLOCK && $! != EINTR) { return undef }
        }
        # Read as well as write: the echo answer may start before the
        # request has all gone out.
        $c->{mask} = $c->{off} < length($c->{out}) ? POLLIN | POLLOUT : POLLIN;
    }
    if ($ev & (POLLIN | POLLHUP | POLLERR)) {
        while (1) {
            my $r = sysread $s, $c->{in}, 1 << 20, length $c->{in};
            last if !defined $r && ($! == EAGAIN || $! == EWOULDBLOCK);
            return undef unless $r;    # error or EOF before a whole response
            my $end = index $c->{in}, "\r\n\r\n";
            next if $end < 0;
            my ($status) = $c->{in} =~ m{^HTTP/1\.1 (\d{3})};
            my ($len)    = substr($c->{in}, 0, $end) =~ /^content-length:\s*(\d+)/mi;
            return undef unless defined $status && defined $len;
            return $status == 200 ? 1 : undef if length($c->{in}) >= $end + 4 + $len;
        }
    }
    return 0;
}

sub nonblocking {
    my ($s) = @_;
    my $flags = fcntl($s, F_GETFL, 0) or die "fcntl: $!\n";
    fcntl($s, F_SETFL, $flags | O_NONBLOCK) or die "fcntl: $!\n";
}

sub closed_by_peer {
    my ($s) = @_;
    my $r = sysread $s, my $buf, 1;
    return defined $r ? 1 : ($! == EAGAIN || $! == EWOULDBLOCK ? 0 : 1);
}

sub close_all { close $_ for @_ }

# With SMAPS=1: the resident KiB of each mapping (keyed by its start
# address) before and after the idle connections, to tell the heap of the
# Perl thread from that of the I/O threads; the growth of each is printed.
my %smaps;
sub smaps_snapshot {
    my ($pid, $when) = @_;
    open my $fh, '<', "/proc/$pid/smaps" or return;
    my ($key, %rss);
    while (my $line = <$fh>) {
        if ($line =~ /^([0-9a-f]+)-[0-9a-f]+\s+\S+\s+\S+\s+\S+\s+\S+\s*(.*)$/) {
            $key = "$1 " . ($2 || '[anon]');
        }
        elsif ($line =~ /^Rss:\s+(\d+)/ && $key) { $rss{$key} = $1 }
    }
    $smaps{$when} = \%rss;
    return unless $when eq 'after';
    my %all = (%{ $smaps{before} // {} }, %rss);
    for my $k (sort { ($rss{$b} // 0) - ($smaps{before}{$b} // 0) <=> ($rss{$a} // 0) - ($smaps{before}{$a} // 0) } keys %all) {
        my $d = ($rss{$k} // 0) - ($smaps{before}{$k} // 0);
        printf "  smaps: %+8d KB  %s\n", $d, $k if abs($d) >= 64;
    }
}

sub rss_kib { status_kib($_[0], 'VmRSS') }
sub hwm_kib { status_kib($_[0], 'VmHWM') }

sub status_kib {
    my ($pid, $field) = @_;
    open my $fh, '<', "/proc/$pid/status" or die "no /proc/$pid/status: $!\n";
    while (my $line = <$fh>) { return $1 if $line =~ /^$field:\s+(\d+)\s+kB/ }
    die "no $field for $pid\n";
}

# Starts bench/serve.pl echo with $lib in front of PERL5LIB; returns its PID
# and port (waits at most 30 s for the port).
sub start_server {
    my ($lib, $n) = @_;
    pipe(my $rd, my $wr) or die "pipe: $!\n";
    my $pid = fork // die "fork: $!\n";
    if (!$pid) {
        close $rd;
        open STDOUT, '>&', $wr or die "dup: $!\n";
        $ENV{PERL5LIB} = $lib . (defined $ENV{PERL5LIB} ? ":$ENV{PERL5LIB}" : '');
        $ENV{PAGI_BENCH_MAX_CONNECTIONS} = $n + $burst + 100;
        $ENV{PAGI_BENCH_TIMEOUT}         = 600;
        $ENV{PAGI_BENCH_HTTP2} = 1 if $ENV{HTTP2};
        { exec $^X, "$here/bench/serve.pl", 'echo' }
        POSIX::_exit(127);
    }
    push @children, $pid;
    close $wr;
    my $port;
    my $poll = IO::Poll->new;
    $poll->mask($rd => POLLIN);
    my $end = time + 30;
    while (time < $end) {
        $poll->poll(0.5) or next;
        $port = <$rd>;
        last;
    }
    die "the server did not start\n" unless defined $port && $port =~ /^(\d+)$/;
    return ($pid, $1);
}

# Stops a server by its PID: TERM, then KILL if it has not gone within 10 s.
sub stop_server {
    my ($pid) = @_;
    kill 'TERM', $pid or return;
    my $end = time + 10;
    while (time < $end) {
        return if waitpid($pid, POSIX::WNOHANG()) == $pid;
        sleep 0.05;
    }
    kill 'KILL', $pid;
    waitpid $pid, 0;
}

# Raises the soft fd limit of this process to the hard limit (with
# prlimit(1)) when it is under $want; warns when that is not enough.
sub raise_fd_limit {
    my ($want) = @_;
    chomp(my $soft = `sh -c 'ulimit -Sn'`);
    chomp(my $hard = `sh -c 'ulimit -Hn'`);
    return if $soft eq 'unlimited' || $soft >= $want;
    system('prlimit', "--pid=$$", "--nofile=$hard:$hard") if $hard ne $soft;
    chomp($soft = `sh -c 'ulimit -Sn'`);
    warn "fd soft limit $soft is under the $want needed: raise it (ulimit -n)\n"
        if $soft ne 'unlimited' && $soft < $want;
}
