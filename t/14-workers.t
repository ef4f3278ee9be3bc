use strict;
use warnings;

# Multi-worker mode (workers => N): the parent binds and forks N workers that
# each run lifespan and serve the inherited sockets; it respawns a worker that
# dies, does not respawn after a lifespan startup failure, and on shutdown
# stops every worker (letting requests in flight finish) and releases the
# listeners. Every wait is bounded; every process started is stopped by PID.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp qw(tempdir);
use IO::Async::Loop;
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);
use Future::AsyncAwait;
use Time::HiRes qw(time);
use RawHTTP qw(pump_until);

use PAGI::Server;

my $MAIN = $$;
my $loop = IO::Async::Loop->new;
my $dir  = tempdir(CLEANUP => 1);

# Every worker PID this test has seen, so none outlives it.
my %ever;
sub track { my ($server) = @_; $ever{$_} = 1 for keys %{ $server->{worker_pids} || {} } }
sub kill_leftovers {
    return unless $$ == $MAIN;
    my @left = grep { kill 0, $_ } keys %ever;
    kill KILL => @left if @left;
}
END { kill_leftovers() }
$SIG{ALRM} = sub { kill_leftovers(); die "14-workers.t: overall time limit reached\n" };
alarm 60;

# ------------------------------------------------------------------ helpers

sub append_line {
    my ($file, $line) = @_;
    open(my $fh, '>>', $file) or die "open $file: $!";
    syswrite($fh, "$line\n");
    close $fh;
}

sub read_lines {
    my ($file) = @_;
    open(my $fh, '<', $file) or return ();
    chomp(my @l = <$fh>);
    return @l;
}

# %o: log => file for lifespan lines, marker => file the slow route writes,
# fail_startup => 1 to refuse lifespan startup.
sub make_app {
    my (%o) = @_;
    return async sub {
        my ($scope, $receive, $send) = @_;
        if ($scope->{type} eq 'lifespan') {
            return unless $o{log};
            my $p = $scope->{pagi} || {};
            my $num = $p->{worker_num} // 'undef';
            while (1) {
                my $ev = await $receive->();
                if ($ev->{type} eq 'lifespan.startup') {
                    append_line($o{log}, join ' ', 'start', $num, $$, $p->{is_worker} // 'undef');
                    if ($o{fail_startup}) {
                        await $send->({ type => 'lifespan.startup.failed', message => 'refusing to start' });
                        return;
                    }
                    await $send->({ type => 'lifespan.startup.complete' });
                }
                elsif ($ev->{type} eq 'lifespan.shutdown') {
                    append_line($o{log}, "stop $num $$");
                    await $send->({ type => 'lifespan.shutdown.complete' });
                    return;
                }
            }
        }
        return unless $scope->{type} eq 'http';
        while (1) {
            my $ev = await $receive->();
            last unless $ev->{more};
        }
        if ($scope->{path} eq '/slow') {
            append_line($o{marker}, $$) if $o{marker};
            # In a worker this is the worker's own loop.
            await IO::Async::Loop->new->delay_future(after => 1);
        }
        my $body = "$$";
        await $send->({ type => 'http.response.start', status => 200,
                        headers => [ [ 'content-type', 'text/plain' ],
                                     [ 'content-length', length $body ] ] });
        await $send->({ type => 'http.response.body', body => $body });
    };
}

# Blocking GET over a fresh connection (TCP port or Unix path), bounded in
# time. Returns { status, body } or { error }.
sub blocking_get {
    my (%a) = @_;
    my $secs = $a{timeout} // 5;
    my $s = defined $a{path}
        ? IO::Socket::UNIX->new(Peer => $a{path}, Type => SOCK_STREAM)
        : IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $a{port},
                                Proto => 'tcp', Timeout => $secs);
    return { error => "connect: $!" } unless $s;
    my $req = "GET " . ($a{uri} // '/') . " HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    syswrite($s, $req) == length $req or return { error => "write: $!" };
    my $sel = IO::Select->new($s);
    my $deadline = time + $secs;
    my $buf = '';
    my $eof = 0;
    while (time < $deadline) {
        next unless $sel->can_read(0.1);
        my $n = sysread($s, $buf, 65536, length $buf);
        if (!$n) { $eof = 1; last }
    }
    close $s;
    return { error => 'timeout', raw => $buf } unless $eof;
    my ($head, $body) = split /\r\n\r\n/, $buf, 2;
    my ($status) = ($head // '') =~ m{^HTTP/1\.[01] (\d{3})};
    return { error => 'no status line', raw => $buf } unless $status;
    return { status => $status, body => $body // '' };
}

# Waits (pumping the loop) at most $secs for $f; true if it became ready.
sub wait_future {
    my ($f, $secs) = @_;
    Future->wait_any($f->without_cancel, $loop->delay_future(after => $secs))->get;
    return $f->is_ready;
}

# Waits until every thread of $pid is stopped (Linux /proc); elsewhere
# gives the signal a moment.
sub wait_stopped {
    my ($pid, $secs) = @_;
    unless (-d "/proc/$pid/task") {
        Time::HiRes::sleep(0.3);
        return 1;
    }
    my $deadline = time + $secs;
    while (time < $deadline) {
        my @st;
        for my $f (glob "/proc/$pid/task/*/stat") {
            open(my $fh, '<', $f) or next;
            my $l = <$fh> // '';
            push @st, $l =~ /\)\s+(\S)/ ? $1 : '?';
        }
        return 1 if @st && !grep { $_ ne 'T' && $_ ne 't' } @st;
        Time::HiRes::sleep(0.005);
    }
    return 0;
}

sub worker_pids { sort { $a <=> $b } keys %{ $_[0]{worker_pids} || {} } }

# ------------------------------------------------------------------- tests

subtest 'TCP: two workers serve, respawn, and stop' => sub {
    my $log    = "$dir/tcp-lifespan.log";
    my $marker = "$dir/tcp-slow.marker";
    my $server = PAGI::Server->new(
        app        => make_app(log => $log, marker => $marker),
        host       => '127.0.0.1',
        port       => 0,
        workers    => 2,
        quiet      => 1,
        access_log => undef,
        shutdown_timeout => 5,
    );
    $loop->add($server);
    my $lf = $server->listen;
    ok(wait_future($lf, 5), 'listen returned within 5 s');
    ok($lf->is_done, 'listen succeeded') or do { diag($lf->failure); return };
    track($server);

    my $port = $server->port;
    ok(defined $port && $port =~ /^\d+$/ && $port > 0, "port is the bound port ($port), not 0");
    is($server->{listeners}[0]{port}, $port, 'the listener records the bound port');

    my @pids = worker_pids($server);
    is(scalar @pids, 2, 'two worker PIDs recorded') or diag(explain($server->{worker_pids}));
    ok(kill(0, $_), "worker $_ is alive") for @pids;
    ok(!(grep { $_ == $$ } @pids), 'no worker PID is the test process');
    is([ sort map { $server->{worker_pids}{$_}{num} } @pids ], [ 1, 2 ], 'workers numbered 1 and 2');

    # Lifespan ran once in each worker, with is_worker and worker_num.
    ok(pump_until($loop, 5, sub { (grep { /^start / } read_lines($log)) >= 2 }),
        'lifespan.startup reached both workers within 5 s');
    my @starts = map { [ split / / ] } grep { /^start / } read_lines($log);
    is(scalar @starts, 2, 'exactly two lifespan startups') or diag(join "\n", read_lines($log));
    is([ sort map { $_->[1] } @starts ], [ 1, 2 ], 'lifespan worker_num values are 1 and 2');
    is([ map { $_->[3] } @starts ], [ 1, 1 ], 'lifespan scope has is_worker == 1 in both');
    is([ sort { $a <=> $b } map { $_->[2] } @starts ], \@pids, 'lifespan ran in the two worker PIDs');
    for my $s (@starts) {
        is($server->{worker_pids}{ $s->[2] }{num}, $s->[1],
            "worker $s->[2]: its lifespan worker_num matches the parent's record")
            if $server->{worker_pids}{ $s->[2] };
    }

    # Requests over fresh connections are answered by a worker.
    my %by;
    for my $i (1 .. 8) {
        my $r = blocking_get(port => $port, uri => "/r$i");
        if ($r->{error}) {
            fail("request $i answered"); diag("$r->{error}: " . ($r->{raw} // ''));
            next;
        }
        is($r->{status}, 200, "request $i: 200");
        ok($server->{worker_pids}{ $r->{body} }, "request $i: answered by a worker (PID $r->{body})");
        $by{ $r->{body} }++;
    }
    note('answers per worker: ' . join(', ', map { "$_ => $by{$_}" } sort keys %by));

    # SIGKILL one worker: the parent respawns it under the same number.
    my ($victim) = grep { $server->{worker_pids}{$_}{num} == 1 } @pids;
    ok(kill(KILL => $victim), "SIGKILL sent to worker 1 (PID $victim)");
    ok(pump_until($loop, 5, sub {
        my @now = worker_pids($server);
        @now == 2 && !(grep { $_ == $victim } @now);
    }), 'the parent replaced the killed worker within 5 s');
    track($server);
    my @after = worker_pids($server);
    is(scalar @after, 2, 'two workers again');
    my ($new) = grep { my $p = $_; !grep { $_ == $p } @pids } @after;
    ok($new, 'one of them is a new PID' . ($new ? " ($new)" : ''));
    ok(!kill(0, $victim), 'the killed worker is gone (reaped)');
    if ($new) {
        ok(kill(0, $new), 'the new worker is alive');
        isnt($new, $$, 'the new worker is not the test process');
        is($server->{worker_pids}{$new}{num}, 1, 'the new worker took number 1');
        ok(pump_until($loop, 5, sub { (grep { /^start / } read_lines($log)) >= 3 }),
            'lifespan.startup ran in the new worker');
        my ($line) = grep { /^start \S+ $new / } read_lines($log);
        is($line, "start 1 $new 1", 'the new worker ran lifespan as worker 1 with is_worker');
    }
    for my $i (1 .. 4) {
        my $r = blocking_get(port => $port, uri => "/again$i");
        is($r->{status}, 200, "after respawn, request $i: 200") or diag($r->{error});
        ok($r->{body} && $server->{worker_pids}{ $r->{body} },
            "after respawn, request $i: answered by a current worker (" . ($r->{body} // 'none') . ')');
        isnt($r->{body}, $victim, "after respawn, request $i: not the killed worker");
    }
    # Accepts are not spread evenly between workers, so the respawned one is
    # checked alone: with the other worker stopped, only it can answer. Having
    # answered, it is past startup, so the TERM below finds it serving.
    if ($new) {
        my ($other) = grep { $_ != $new } @after;
        ok(kill(STOP => $other), "worker $other paused (SIGSTOP)");
        # kill() returns before every thread has stopped; until then the
        # paused worker could still take the connection.
        ok(wait_stopped($other, 3), "worker $other is stopped");
        my $r = blocking_get(port => $port, uri => '/only-new');
        ok(kill(CONT => $other), "worker $other resumed (SIGCONT)");
        is($r->{status}, 200, 'the respawned worker alone answers: 200') or diag($r->{error});
        is($r->{body}, $new, 'the respawned worker alone answers: its PID');
        ok(kill(0, $other), "worker $other still alive after the pause");
    }

    # A request in flight when shutdown starts still completes.
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("GET /slow HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    ok(pump_until($loop, 5, sub { -s $marker }), 'the slow request reached a worker');
    my ($slow_pid) = read_lines($marker);
    my @final = worker_pids($server);

    my $t0 = time;
    my $sf = $server->shutdown;
    ok(wait_future($sf, 8), 'shutdown finished within 8 s');
    ok($sf->is_done, 'shutdown succeeded') or diag($sf->is_failed ? $sf->failure : 'not ready');
    note(sprintf 'shutdown took %.2f s', time - $t0);

    my $r = $c->read_response(timeout => 3);
    ok($r, 'the in-flight request got a response') or diag($c->{error});
    if ($r) {
        is($r->{status}, 200, 'the in-flight request completed with 200');
        is($r->{body}, $slow_pid, 'answered by the worker that was handling it');
    }
    $c->close;

    ok(pump_until($loop, 5, sub { !grep { kill 0, $_ } @final }), 'every worker exited within 5 s of shutdown');
    ok(!kill(0, $_), "worker $_ is gone") for @final;
    is([ worker_pids($server) ], [], 'worker_pids is empty');
    is($server->is_running, 0, 'server no longer running');
    my @stops = grep { /^stop / } read_lines($log);
    is([ sort map { (split / /)[2] } @stops ], [ sort { $a <=> $b } @final ],
        'lifespan.shutdown ran in both workers on TERM') or diag(join "\n", read_lines($log));
    my $probe = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 2);
    ok(!$probe, "port $port refuses new connections after shutdown");
    $loop->remove($server);
};

subtest 'Unix socket: two workers serve; the file is removed on shutdown' => sub {
    my $path = "$dir/w.sock";
    my $server = PAGI::Server->new(
        app        => make_app(),
        socket     => $path,
        workers    => 2,
        quiet      => 1,
        access_log => undef,
        lifespan_mode => 'off',
        shutdown_timeout => 5,
    );
    $loop->add($server);
    my $lf = $server->listen;
    ok(wait_future($lf, 5), 'listen returned within 5 s');
    ok($lf->is_done, 'listen succeeded') or do { diag($lf->failure); return };
    track($server);
    ok(-S $path, 'socket file exists');
    my @pids = worker_pids($server);
    is(scalar @pids, 2, 'two workers');
    ok(kill(0, $_), "worker $_ is alive") for @pids;

    for my $i (1 .. 4) {
        my $r = blocking_get(path => $path, uri => "/u$i");
        is($r->{status}, 200, "unix request $i: 200") or diag($r->{error});
        ok($r->{body} && $server->{worker_pids}{ $r->{body} },
            "unix request $i: answered by a worker (" . ($r->{body} // 'none') . ')');
    }

    my $sf = $server->shutdown;
    ok(wait_future($sf, 8), 'shutdown finished within 8 s');
    ok($sf->is_done, 'shutdown succeeded');
    ok(pump_until($loop, 5, sub { !grep { kill 0, $_ } @pids }), 'every worker exited');
    is([ worker_pids($server) ], [], 'worker_pids is empty');
    ok(!-e $path, 'socket file removed after shutdown');
    ok(!IO::Socket::UNIX->new(Peer => $path, Type => SOCK_STREAM), 'nothing accepts on the path');
    $loop->remove($server);
};

subtest 'lifespan startup failure in every worker: no respawn' => sub {
    my $log = "$dir/fail-lifespan.log";
    my @warnings;
    local $SIG{__WARN__} = sub { push @warnings, $_[0] };
    my $server = PAGI::Server->new(
        app        => make_app(log => $log, fail_startup => 1),
        host       => '127.0.0.1',
        port       => 0,
        workers    => 2,
        quiet      => 0,
        access_log => undef,
        shutdown_timeout => 5,
    );
    $loop->add($server);
    my $lf = $server->listen;
    ok(wait_future($lf, 5), 'listen returned within 5 s');
    ok($lf->is_done, 'listen itself succeeded (the workers fail later)') or do { diag($lf->failure); return };
    track($server);
    my $port = $server->port;
    my @pids = worker_pids($server);
    is(scalar @pids, 2, 'two workers started');

    ok(pump_until($loop, 5, sub { !%{ $server->{worker_pids} } }), 'worker_pids emptied within 5 s')
        or diag(explain($server->{worker_pids}));
    track($server);
    # Keep the loop running a little longer: nothing may be respawned.
    pump_until($loop, 1, sub { 0 });
    track($server);
    is([ worker_pids($server) ], [], 'still no workers after another second');
    ok(!(grep { kill 0, $_ } @pids), 'no worker process is still running');
    my @starts = grep { /^start / } read_lines($log);
    is(scalar @starts, 2, 'lifespan startup ran exactly twice (no respawned worker)')
        or diag(join "\n", read_lines($log));

    my @not = grep { /not respawning/ } @warnings;
    is(scalar @not, 2, 'the parent logged "not respawning" once per worker') or diag(join '', @warnings);
    like(join('', @not), qr/Worker 1 startup failed/, 'worker 1 named');
    like(join('', @not), qr/Worker 2 startup failed/, 'worker 2 named');
    ok(!(grep { /respawning/ && !/not respawning/ } @warnings), 'no "respawning" message')
        or diag(join '', @warnings);
    ok((grep { /All workers have exited/ } @warnings), 'the parent reported that all workers exited')
        or diag(join '', @warnings);
    ok($server->{_workers_failed}, 'the server records that the workers failed');
    is($server->is_running, 0, 'the server shut itself down');
    ok(!IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 2),
        'its port is released');
    $loop->remove($server);
};

alarm 0;
done_testing;
