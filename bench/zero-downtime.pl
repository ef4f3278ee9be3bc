#!/usr/bin/env perl
# Zero-downtime proof: `pagi-server -w 2` (this build) serves a steady load
# while the master is sent HUP (rolling worker restart), then USR2 (hot
# restart: a new master takes over the socket), then TTIN and TTOU (one
# worker more, then one fewer). Every request is counted:
#
#   sent      requests started
#   answered  complete 200 responses
#   refused   connections the kernel refused (nobody listening)
#   failed    anything else: reset, cut short, timed out, not 200
#
# Each client opens a new connection per request (Connection: close), so
# a listener that disappeared for an instant shows up as "refused", and a
# worker that dropped what it had accepted shows up as "failed". Exits 0
# only when refused and failed are both 0 and answered equals sent.
#
#   perl bench/zero-downtime.pl            # 30 s, 8 clients
#   DURATION=60 CLIENTS=16 perl bench/zero-downtime.pl
#
# The server runs from this checkout (perl -Iblib/lib -Iblib/arch
# bin/pagi-server; run `make` first); the master's PID is followed through
# its --pid file, which the new master rewrites on USR2. Everything started
# is stopped by PID at the end.
use strict;
use warnings;
use File::Temp qw(tempdir);
use FindBin;
use IO::Select;
use IO::Socket::INET;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

my $dur     = $ENV{DURATION} // 30;
my $clients = $ENV{CLIENTS}  // 8;
my $root    = "$FindBin::Bin/..";
my $tmp     = tempdir(CLEANUP => 1);
my $pidfile = "$tmp/master.pid";

open my $app, '>', "$tmp/app.pl" or die "$tmp/app.pl: $!";
print {$app} <<'APP';
use strict;
use warnings;
use Future::AsyncAwait;
async sub {
    my ($scope, $receive, $send) = @_;
    die "no lifespan here\n" if $scope->{type} ne 'http';
    await $send->({ type => 'http.response.start', status => 200,
                    headers => [ [ 'content-type', 'text/plain' ], [ 'content-length', 3 ] ] });
    await $send->({ type => 'http.response.body', body => "ok\n" });
};
APP
close $app;

my $port = do {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1) or die "probe: $!";
    my $p = $s->sockport;
    close $s;
    $p;
};

my $server = fork // die "fork: $!";
if (!$server) {
    setpgrp(0, 0);
    open STDIN, '<', '/dev/null';
    open STDOUT, '>', "$tmp/server.log";
    open STDERR, '>&', \*STDOUT;
    exec $^X, "-I$root/blib/lib", "-I$root/blib/arch", "$root/bin/pagi-server",
        '--host', '127.0.0.1', '--port', $port, '-w', 2, '--pid', $pidfile,
        '--no-access-log', '--shutdown-timeout', 10, "$tmp/app.pl";
    die "exec: $!";
}
my %started = ($server => 1);

sub master { open my $fh, '<', $pidfile or return; my ($p) = <$fh> =~ /([0-9]+)/; return $p }
sub wait_for { my ($secs, $cond) = @_; my $end = time + $secs; until ($cond->()) { return 0 if time > $end; sleep 0.05 } 1 }
wait_for(20, sub { my $s = IO::Socket::INET->new(PeerAddr => "127.0.0.1:$port"); $s && close $s })
    or die "server did not start:\n" . `cat $tmp/server.log`;

# One client: requests one after another until the deadline.
sub client {
    my ($n, $deadline) = @_;
    my %c = map { $_ => 0 } qw(sent answered refused failed);
    while (time < $deadline) {
        $c{sent}++;
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 5);
        unless ($s) {
            $c{ $!{ECONNREFUSED} ? 'refused' : 'failed' }++;
            next;
        }
        syswrite $s, "GET / HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n";
        my ($buf, $sel, $end) = ('', IO::Select->new($s), time + 10);
        while ($sel->can_read($end - time > 0 ? $end - time : 0)) {
            my $r = sysread $s, $buf, 4096, length $buf;
            last unless $r;
        }
        close $s;
        $c{ $buf =~ m{\AHTTP/1\.1 200 .*\r\n\r\nok\n\z}s ? 'answered' : 'failed' }++;
    }
    open my $fh, '>', "$tmp/client.$n" or die;
    print {$fh} join(' ', map { "$_=$c{$_}" } sort keys %c), "\n";
    close $fh;
    POSIX::_exit(0);
}

my $t0 = time;
my $deadline = $t0 + $dur;
my @kids;
for my $n (1 .. $clients) {
    my $pid = fork // die "fork: $!";
    client($n, $deadline) unless $pid;
    push @kids, $pid;
}

# The signals, spread over the run: HUP at 1/6, USR2 at 2/6, TTIN at 4/6,
# TTOU at 5/6 of it.
my @events;
for ([HUP => 1], [USR2 => 2], [TTIN => 4], [TTOU => 5]) {
    my ($sig, $at) = @$_;
    sleep(($t0 + $dur * $at / 6) - time) if time < $t0 + $dur * $at / 6;
    my $m = master();
    kill $sig => $m;
    push @events, sprintf('%5.1fs %-4s to master %d', time - $t0, $sig, $m);
    if ($sig eq 'USR2') {
        wait_for(20, sub { my $n = master(); $n && $n != $m })
            or push @events, '       (the PID file still names the old master after 20 s)';
        push @events, sprintf('%5.1fs new master %d wrote the PID file', time - $t0, master());
    }
}
waitpid $_, 0 for @kids;

my %total;
for my $n (1 .. $clients) {
    open my $fh, '<', "$tmp/client.$n" or die "client $n left no counts\n";
    my $line = <$fh>;
    $total{$1} += $2 while $line =~ /(\w+)=([0-9]+)/g;
}

# Stop whichever master serves now, then the first one if it is still
# there, by PID; their workers follow their master.
my $last = master();
for my $pid (grep { $_ } $last, $server) {
    kill TERM => $pid;
    wait_for(15, sub { waitpid($pid, WNOHANG); !kill 0, $pid }) or kill KILL => $pid;
}
waitpid $server, 0;

print "zero-downtime: -w 2 for ${dur}s, $clients clients, a new connection per request\n";
print "  $_\n" for @events;
printf "  sent %d, answered %d, refused %d, failed %d\n", @total{qw(sent answered refused failed)};
my $ok = !$total{refused} && !$total{failed} && $total{answered} == $total{sent};
print $ok ? "  OK: every request answered\n" : "  FAILED\n--- server log ---\n" . `cat $tmp/server.log`;
exit($ok ? 0 : 1);
