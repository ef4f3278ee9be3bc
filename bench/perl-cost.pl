#!/usr/bin/env perl
# What the Perl side costs per request: the hello app of bench/apps.pl run
# with no server at all (the floor: the app's own cost), then served by
# bench/serve.pl under wrk, with the CPU time of the server's Perl thread
# (its main thread; the Rust core runs on threads of its own) divided by the
# requests answered. Both in microseconds, in one run.
#
#   perl bench/perl-cost.pl [--seconds 5] [--connections 50] [--runs 3]
#                           [--reference CHECKOUT]
#   perl bench/perl-cost.pl --instructions [--seconds 10]
#
# Run `make` first: this build is loaded from blib/. With --reference, the
# reference server (a checkout of PAGI-Server) is measured the same way;
# its one thread does everything, the network included.
#
# With --instructions, both are counted in instructions instead, under
# valgrind's callgrind (Debian package valgrind): the floor as the
# difference between 11,000 and 1,000 app calls, the server's Perl side as
# everything its batch dispatch runs (the app included) over a wrk run of
# 20 connections, divided by the requests answered. Counts do not depend on
# what else the machine is doing, so two builds can be compared on a busy
# machine; they leave out the kernel's part (system calls, wake-ups).
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
GetOptions(\%opt, 'seconds=i', 'connections=i', 'runs=i', 'reference=s', 'instructions', 'floor-calls=i')
    or die "usage: $0 [--seconds N] [--connections N] [--runs N] [--reference CHECKOUT] [--instructions]\n";
die "--runs must be at least 1\n" if $opt{runs} < 1;

my $here = abs_path(dirname(__FILE__) . '/..');
my $apps = do("$here/bench/apps.pl") or die "bench/apps.pl: " . ($@ || $!) . "\n";
my $app  = $apps->{hello};
my $tick = POSIX::sysconf(POSIX::_SC_CLK_TCK()) || 100;

# What the floor calls the app with: a scope as the server's for wrk's
# GET, and a $receive and $send that return done Futures.
sub floor_args {
    my $done  = Future->done;
    my $scope = {
        type => 'http', pagi => { version => '0.3', spec_version => '0.3' },
        http_version => '1.1', method => 'GET', scheme => 'http', path => '/',
        raw_path => '/', query_string => '', root_path => '',
        headers => [['host', '127.0.0.1'], ['user-agent', 'wrk']],
        client => ['127.0.0.1', 40000], server => ['127.0.0.1', 8080],
        state => {}, extensions => {},
    };
    return ($scope, sub { Future->done({ type => 'http.request', body => '', more => 0 }) }, sub { $done });
}

# The floor: CPU seconds of this process per app call, over enough calls
# to last about a second.
sub floor_us {
    my ($scope, $receive, $send) = floor_args();
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

# --- instruction counts (--instructions) ---------------------------------

if (defined $opt{'floor-calls'}) {
    # Run under callgrind by count_floor: the app, that many times.
    my @args = floor_args();
    $app->(@args) for 1 .. $opt{'floor-calls'};
    exit 0;
}

# Total instructions in the callgrind files whose names start with $out.
sub callgrind_total {
    my ($out) = @_;
    my $total = 0;
    for my $f (glob "$out*") {
        open my $fh, '<', $f or die "cannot read $f: $!\n";
        while (<$fh>) { $total += $1 if /^totals:\s*(\d+)/ }
    }
    return $total;
}

sub count_floor {
    my ($dir) = @_;
    my %n;
    for my $calls (1000, 11000) {
        my $out = "$dir/floor.$calls";
        system('valgrind', '--tool=callgrind', "--callgrind-out-file=$out", '-q', $^X, $0, '--floor-calls', $calls) == 0
            or die "valgrind failed on the floor (is Debian's valgrind installed?)\n";
        $n{$calls} = callgrind_total($out);
    }
    return ($n{11000} - $n{1000}) / 10_000;
}

# The server under callgrind, counting only its batch dispatch (which runs
# the apps); wrk's requests answered divide the count.
sub count_served {
    my ($dir) = @_;
    my $out = "$dir/served";
    local $ENV{PERL5LIB} = "$here/blib/arch:$here/blib/lib" . ($ENV{PERL5LIB} ? ":$ENV{PERL5LIB}" : '');
    my $pid = open(my $port_fh, '-|', 'valgrind', '--tool=callgrind', "--callgrind-out-file=$out", '-q',
        '--toggle-collect=XS_PAGI__Server__Native_dispatch', $^X, "$here/bench/serve.pl", 'hello')
        // die "cannot start valgrind: $!\n";
    my $n = eval {
        local $SIG{ALRM} = sub { die "the server printed no port within 120 s\n" };
        alarm 120;
        my $port = <$port_fh>;
        alarm 0;
        die "the server printed no port\n" unless defined $port && $port =~ /\A(\d+)\s*\z/;
        my $report = `wrk -t1 -c20 -d$opt{seconds}s http://127.0.0.1:$1/`;
        my ($n) = $report =~ /(\d+) requests in/ or die "wrk printed no count:\n$report";
        die "wrk saw errors:\n$report" if $report =~ /Non-2xx|Socket errors/;
        # Written now: a server under valgrind can take long to stop.
        system("callgrind_control -d $pid >/dev/null 2>&1") == 0 or die "callgrind_control failed\n";
        $n;
    };
    my $err = $@;
    kill 'KILL', $pid;
    waitpid $pid, 0;
    die $err if $err;
    return callgrind_total("$out.") / $n;
}

if ($opt{instructions}) {
    require File::Temp;
    my $dir = File::Temp::tempdir(CLEANUP => 1);
    $opt{seconds} = 10 if $opt{seconds} == 5;
    my $floor  = count_floor($dir);
    my $served = count_served($dir);
    printf "instructions per hello request: floor %.0f, through this build %.0f, difference %.0f\n",
        $floor, $served, $served - $floor;
    exit 0;
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
