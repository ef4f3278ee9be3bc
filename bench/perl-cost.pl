#!/usr/bin/env perl
# What the Perl side costs per request: the hello app of bench/apps.pl run
# with no server at all (the floor: the app's own cost), then served by
# bench/serve.pl under wrk, with the CPU time of the server's Perl thread
# (its main thread; the Rust core runs on threads of its own) divided by the
# requests answered. Both in microseconds, in one run.
#
#   perl bench/perl-cost.pl [--seconds 5] [--connections 50] [--runs 3]
#                           [--reference CHECKOUT]
#
# Run `make` first: this build is loaded from blib/. With --reference, the
# reference server (a checkout of PAGI-Server) is measured the same way;
# its one thread does everything, the network included.
#
# The floor calls the app with a scope like the server's and a $send and
# $receive that return done Futures, so it counts the app's own work: its
# async sub, its two event hashes, its awaits. The difference is what the
# server's Perl side adds per request (its scope, state objects, closures,
# Futures, the records from the core, the event loop's wake-ups).
use strict;
use warnings;
use File::Basename qw(dirname);
use Cwd qw(abs_path);
use Getopt::Long;
use POSIX ();
use Time::HiRes qw(time);
use Future;

my %opt = (seconds => 5, connections => 50, runs => 3);
GetOptions(\%opt, 'seconds=i', 'connections=i', 'runs=i', 'reference=s')
    or die "usage: $0 [--seconds N] [--connections N] [--runs N] [--reference CHECKOUT]\n";
die "--runs must be at least 1\n" if $opt{runs} < 1;

my $here = abs_path(dirname(__FILE__) . '/..');
my $apps = do("$here/bench/apps.pl") or die "bench/apps.pl: " . ($@ || $!) . "\n";
my $app  = $apps->{hello};
my $tick = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;

# The floor: CPU seconds of this process per app call, over enough calls
# to last about a second.
sub floor_us {
    my $done    = Future->done;
    my $send    = sub { $done };
    my $receive = sub { Future->done({ type => 'http.request', body => '', more => 0 }) };
    my $scope   = {
        type => 'http', pagi => { version => '0.3', spec_version => '0.3' },
        http_version => '1.1', method => 'GET', scheme => 'http', path => '/',
        raw_path => '/', query_string => '', root_path => '',
        headers => [['host', '127.0.0.1'], ['user-agent', 'wrk']],
        client => ['127.0.0.1', 40000], server => ['127.0.0.1', 8080],
        state => {}, extensions => {},
    };
    my $n = 200_000;
    $app->($scope, $receive, $send) for 1 .. 1000;    # warm up
    my @t0 = times;
    for (1 .. $n) {
        my $f = $app->($scope, $receive, $send);
        die "the app did not finish at once\n" unless $f->is_done;
    }
    my @t1 = times;
    return ($t1[0] + $t1[1] - $t0[0] - $t0[1]) / $n * 1e6;
}

# CPU ticks (user + system) of one thread of a process.
sub thread_ticks {
    my ($pid, $tid) = @_;
    open my $fh, '<', "/proc/$pid/task/$tid/stat" or die "cannot read /proc/$pid/task/$tid/stat: $!\n";
    my $stat = <$fh>;
    # The command name may hold spaces: fields count from after its ')'.
    my @f = split ' ', substr($stat, rindex($stat, ')') + 2);
    return $f[11] + $f[12];
}

sub process_ticks {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or die "cannot read /proc/$pid/stat: $!\n";
    my $stat = <$fh>;
    my @f = split ' ', substr($stat, rindex($stat, ')') + 2);
    return $f[11] + $f[12];
}

# Serves hello with the PAGI::Server found in $lib; returns the Perl
# thread's µs per request, the whole process's, and the requests per second.
sub served_us {
    my ($lib) = @_;
    local $ENV{PERL5LIB} = $lib . ($ENV{PERL5LIB} ? ":$ENV{PERL5LIB}" : '');
    my $pid = open(my $out, '-|', $^X, "$here/bench/serve.pl", 'hello') // die "cannot start bench/serve.pl: $!\n";
    my $ok = eval {
        my $port;
        local $SIG{ALRM} = sub { die "the server printed no port within 10 s\n" };
        alarm 10;
        $port = <$out>;
        alarm 0;
        die "the server printed no port\n" unless defined $port && $port =~ /\A(\d+)\s*\z/;
        $port = $1;
        my $url = "http://127.0.0.1:$port/";
        `wrk -t1 -c$opt{connections} -d1s $url`;    # warm-up
        die "wrk failed\n" if $?;
        my ($t0, $p0) = (thread_ticks($pid, $pid), process_ticks($pid));
        my $report = `wrk -t1 -c$opt{connections} -d$opt{seconds}s $url`;
        my ($t1, $p1) = (thread_ticks($pid, $pid), process_ticks($pid));
        my ($n) = $report =~ /(\d+) requests in/ or die "wrk printed no count:\n$report";
        die "wrk saw errors:\n$report" if $report =~ /Non-2xx|Socket errors/;
        [ ($t1 - $t0) / $tick / $n * 1e6, ($p1 - $p0) / $tick / $n * 1e6, $n / $opt{seconds} ];
    };
    my $err = $@;
    kill 'TERM', $pid;
    waitpid $pid, 0;
    die $err unless $ok;
    return @$ok;
}

sub median { my @s = sort { $a <=> $b } @_; return $s[$#s / 2] }

sub summary {
    my ($label, @v) = @_;
    my @s = sort { $a <=> $b } @v;
    return sprintf '%s %.1f (%.1f-%.1f)', $label, median(@v), $s[0], $s[-1];
}

my (@floor, @ours, @ours_all, @ours_rps, @ref, @ref_rps);
for my $run (1 .. $opt{runs}) {
    push @floor, floor_us();
    my ($thread, $all, $rps) = served_us("$here/blib/arch:$here/blib/lib");
    my @r = $opt{reference} ? served_us(abs_path($opt{reference}) . '/lib') : ();
    push @ours, $thread;
    push @ours_all, $all;
    push @ours_rps, $rps;
    if (@r) { push @ref, $r[0]; push @ref_rps, $r[2] }
    printf "run %d: floor %.1f us, through this build %.1f us (Perl thread; %.1f us all threads, %.0f req/s), difference %.1f us%s\n",
        $run, $floor[-1], $thread, $all, $rps, $thread - $floor[-1],
        (@r ? sprintf(', reference %.1f us (%.0f req/s)', $r[0], $r[2]) : '');
}
print "median (min-max) over $opt{runs} run(s), us per hello request:\n";
print '  ', summary('floor (the app alone)', @floor), "\n";
print '  ', summary('through this build, Perl thread', @ours), "\n";
print '  ', summary('difference', map { $ours[$_] - $floor[$_] } 0 .. $#ours), "\n";
print '  ', summary('through this build, all threads', @ours_all), "\n";
print '  ', summary('reference, one thread', @ref), "\n" if @ref;
