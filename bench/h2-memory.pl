#!/usr/bin/env perl
# Server memory under HTTP/2 load that costs the client nothing: this
# build's resident set (VmRSS of the server process, all threads) when
#   1. idle:     started, one h2c request served;
#   2. +1,000 idle h2c connections (preface and SETTINGS sent, SETTINGS
#      answered, nothing else);
#   3. +1 connection with 100 streams open at once (each request held by
#      the app for PAGI_BENCH_HOLD seconds before it answers).
# Prints each figure and the growth per connection and per stream. The
# bounds this project documents (README.pod, "HTTP/2 memory"): 1,000 idle
# h2 connections add under 64 MiB (64 KiB each), and 100 open streams on one
# connection add under 16 MiB. Exits non-zero if a bound is broken.
#
#   perl bench/h2-memory.pl            (run `make` first)
#   IDLE=1000 STREAMS=100 perl bench/h2-memory.pl
use strict;
use warnings;
use FindBin;
use IO::Socket::INET;
use IO::Select;
use POSIX ();
use Time::HiRes qw(sleep time);

my $idle    = $ENV{IDLE}    // 1000;
my $streams = $ENV{STREAMS} // 100;
my $here    = "$FindBin::Bin/..";
my $preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

sub frame {
    my ($type, $flags, $stream, $payload) = @_;
    return substr(pack('N', length $payload), 1) . pack('CCN', $type, $flags, $stream) . $payload;
}

sub rss_kib {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or die "no /proc/$pid/status: $!\n";
    while (<$fh>) { return $1 if /^VmRSS:\s+(\d+)\s+kB/ }
    die "no VmRSS for $pid\n";
}

# Reads from a socket until a frame of $type arrives (or $limit seconds).
sub wait_frame {
    my ($sock, $type, $limit) = @_;
    my ($buf, $end) = ('', time + $limit);
    while (time < $end) {
        while (length $buf >= 9) {
            my ($len) = unpack 'N', "\0" . substr($buf, 0, 3);
            my $t = ord substr($buf, 3, 1);
            last if length $buf < 9 + $len;
            substr($buf, 0, 9 + $len, '');
            return 1 if $t == $type;
        }
        next unless IO::Select->new($sock)->can_read(0.5);
        sysread($sock, $buf, 65536, length $buf) or return 0;
    }
    return 0;
}

sub open_h2 {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp')
        or die "connect: $!\n";
    syswrite $s, $preface . frame(4, 0, 0, '');
    return $s;
}

pipe(my $rd, my $wr) or die "pipe: $!\n";
my $pid = fork // die "fork: $!\n";
if (!$pid) {
    close $rd;
    open STDOUT, '>&', $wr or die;
    $ENV{PAGI_BENCH_HTTP2} = 1;
    $ENV{PAGI_BENCH_HOLD} //= 30;
    $ENV{PAGI_BENCH_MAX_CONNECTIONS} = $idle + 10;
    exec $^X, "-I$here/blib/arch", "-I$here/blib/lib", "$here/bench/serve.pl", 'hold';
    die "exec: $!\n";
}
close $wr;
my $port = <$rd>;
die "server did not start\n" unless $port;
chomp $port;
my $ok = eval {
    # One request first, so the app and the core are warm.
    my $warm = open_h2($port);
    wait_frame($warm, 4, 5) or die "no SETTINGS from the server\n";
    close $warm;
    sleep 1;
    my $base = rss_kib($pid);
    printf "idle server: %.1f MiB\n", $base / 1024;

    my @conns;
    for (1 .. $idle) {
        push @conns, open_h2($port);
    }
    my $answered = grep { wait_frame($_, 4, 5) } @conns;
    die "only $answered of $idle connections got SETTINGS\n" if $answered < $idle;
    sleep 1;
    my $with_idle = rss_kib($pid);
    my $idle_mib  = ($with_idle - $base) / 1024;
    printf "+%d idle h2c connections: %.1f MiB (+%.1f MiB, %.1f KiB each)\n",
        $idle, $with_idle / 1024, $idle_mib, ($with_idle - $base) / $idle;

    # :method GET, :scheme http, :path / (static table), :authority literal.
    my $block = "\x82\x86\x84\x41\x09127.0.0.1";
    my $busy  = open_h2($port);
    wait_frame($busy, 4, 5) or die "no SETTINGS on the stream connection\n";
    syswrite $busy, join '', map { frame(1, 0x5, 2 * $_ - 1, $block) } 1 .. $streams;
    sleep 2;
    my $with_streams = rss_kib($pid);
    my $streams_mib  = ($with_streams - $with_idle) / 1024;
    printf "+1 connection with %d open streams: %.1f MiB (+%.1f MiB, %.1f KiB each)\n",
        $streams, $with_streams / 1024, $streams_mib, ($with_streams - $with_idle) / $streams;

    my @broken;
    push @broken, sprintf('idle connections added %.1f MiB (bound 64)', $idle_mib) if $idle_mib > 64 * $idle / 1000;
    push @broken, sprintf('open streams added %.1f MiB (bound 16)', $streams_mib) if $streams_mib > 16 * $streams / 100;
    die join('; ', @broken) . "\n" if @broken;
    close $_ for @conns, $busy;
    1;
};
my $err = $@;
kill 'TERM', $pid;
waitpid $pid, 0;
die $err unless $ok;
print "within bounds\n";
