use strict;
use warnings;

# The production process model, with real pagi-server processes and real
# signals:
# - HUP to a master replaces every worker one by one: each old worker runs
#   lifespan shutdown once its replacement is up, a request in flight
#   completes, and requests sent all along are all answered;
# - USR2 re-runs the command line as a new master on the same (inherited)
#   listening socket; the new master retires the old one once its workers
#   are up, rewrites the PID file, and no request fails meanwhile; when the
#   new master cannot start, the old one serves on;
# - heartbeat_timeout: a worker whose event loop is blocked is killed and
#   respawned; one awaiting slow I/O for longer than the timeout is not;
# - reuseport: each worker listens on its own socket; the master holds the
#   port without listening;
# - systemd socket activation (systemd-socket-activate): the passed TCP or
#   Unix socket is served, with one worker or several, and a passed Unix
#   socket file is not removed at exit.
# Every wait is bounded; every process is stopped by PID and checked gone.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Spec;
use File::Temp ();
use IO::Socket::INET;
use POSIX ();
use Time::HiRes qw(sleep time);
use ExtProc qw(free_port which);
use ProcTest qw(spawn spawn_cli start_cmd stop_cmd reap wait_until children_of alive slurp
                listening_port open_request read_response http_get write_file tmpdir
                log_lines how_it_ended watch start_pagi);

my $APP = write_file('app.pl', "use ProcApp; ProcApp::app();\n");

sub start_server {
    my ($log, @args) = @_;
    return start_pagi($APP, $log, '--no-access-log', @args);
}

# Requests sent one after another (a new connection each) until stop():
# returns { ok, failed, pids => { worker pid => count } }.
sub start_load {
    my ($port) = @_;
    my $out  = tmpdir() . '/load.' . int(rand 1e9);
    my $stop = "$out.stop";
    my $pid  = fork // die "fork: $!";
    if (!$pid) {
        my ($ok, $failed, %by, @why) = (0, 0);
        my $deadline = time + 60;
        while (!-e $stop && time < $deadline) {
            my $t = time;
            my $r = http_get($port, '/', 10);
            if ($r =~ m{\AHTTP/1\.1 200 .*done / ([0-9]+)}s) { $ok++; $by{$1}++ }
            else {
                $failed++;
                push @why, sprintf('after %.2fs: %s', time - $t, length $r ? substr($r, 0, 60) =~ s/\s+/ /gr : 'nothing');
            }
        }
        open my $fh, '>', $out or POSIX::_exit(1);
        print {$fh} "ok $ok\nfailed $failed\n", map({ "pid $_ $by{$_}\n" } keys %by), map { "why $_\n" } @why;
        close $fh;
        POSIX::_exit(0);
    }
    watch($pid);
    return sub {
        open my $fh, '>', $stop or die "$stop: $!";
        close $fh;
        waitpid $pid, 0;
        my $text = slurp($out);
        my %r = (ok => ($text =~ /^ok ([0-9]+)/m)[0], failed => ($text =~ /^failed ([0-9]+)/m)[0]);
        $r{pids}{$1} = $2 while $text =~ /^pid ([0-9]+) ([0-9]+)/mg;
        $r{why} = [ $text =~ /^why (.*)$/mg ];
        return \%r;
    };
}

# Waits until $pid (not our child) is gone.
sub gone { my ($pid, $secs) = @_; return wait_until($secs, sub { !alive($pid) }) }

subtest 'HUP: every worker replaced one by one, nothing dropped' => sub {
    my $log = tmpdir() . '/hup.log';
    my ($p, $port) = start_server($log, '-w', 2);
    ok($port, 'master is listening') or return diag slurp($p->{err});
    ok(wait_until(10, sub { log_lines($log, 'startup') == 2 }), 'both workers started');
    my @old = children_of($p->{pid});
    is(scalar @old, 2, 'two workers');

    my $stop = start_load($port);
    sleep 0.5;
    my $slow = open_request($port, '/slow');
    ok(wait_until(5, sub { log_lines($log, 'slow') == 1 }), 'a slow request is running');
    kill HUP => $p->{pid};
    ok(wait_until(15, sub { log_lines($log, 'startup') == 4 && log_lines($log, 'shutdown') == 2 }),
        'two new workers started and both old ones ran lifespan shutdown');
    like(read_response($slow, 10), qr{\AHTTP/1\.1 200 .*done /slow}s, 'the request in flight completed');
    sleep 0.5;
    my $load = $stop->();

    my @shut = map { (split ' ')[1] } log_lines($log, 'shutdown');
    is([ sort @shut ], [ sort @old ], 'the old workers are the ones that stopped');
    my @new = children_of($p->{pid});
    is(scalar @new, 2, 'two workers again');
    ok(!grep({ my $n = $_; grep { $_ == $n } @old } @new), 'both are new processes');
    ok($load->{ok} > 20, "requests went on during the restart ($load->{ok})");
    is($load->{failed}, 0, 'no request failed') or diag join "\n", @{ $load->{why} };
    ok((grep { $load->{pids}{$_} } @new), 'new workers answered some of them');
    like(slurp($p->{err}), qr/Received SIGHUP: replacing 2 workers one by one/, 'the master logs the restart');

    kill TERM => $p->{pid};
    is(how_it_ended(reap($p->{pid}, 15)), 'exit 0', 'TERM stops the master');
    ok(wait_until(5, sub { !grep { alive($_) } @old, @new }), 'no worker left');
};

subtest 'USR2: a new master takes over on the same socket' => sub {
    my $log = tmpdir() . '/usr2.log';
    my $pidfile = tmpdir() . '/usr2.pid';
    my ($p, $port) = start_server($log, '-w', 2, '--pid', $pidfile);
    ok($port, 'master is listening') or return diag slurp($p->{err});
    ok(wait_until(10, sub { log_lines($log, 'startup') == 2 }), 'both workers started');
    my @old = children_of($p->{pid});
    is(slurp($pidfile), "$p->{pid}\n", 'the PID file names the master');

    my $stop = start_load($port);
    sleep 0.5;
    kill USR2 => $p->{pid};
    my $status = reap($p->{pid}, 30);
    is(how_it_ended($status), 'exit 0', 'the old master stopped by itself');
    my ($new) = slurp($pidfile) =~ /\A([0-9]+)\n\z/;
    ok($new && $new != $p->{pid} && alive($new), 'the PID file names the new, live master') or diag slurp($p->{err});
    watch($new) if $new;
    sleep 0.5;
    my $load = $stop->();
    is($load->{failed}, 0, 'no request failed during the hot restart') or diag join "\n", @{ $load->{why} };
    ok($load->{ok} > 20, "requests went on ($load->{ok})");
    my @new_workers = $new ? children_of($new) : ();
    is(scalar @new_workers, 2, 'the new master has two workers');
    like(http_get($port, '/'), qr{\AHTTP/1\.1 200 .*done / (?:\Q$new_workers[0]\E|\Q$new_workers[1]\E)\r\n}s,
        'the port is served by the new workers') if @new_workers == 2;
    ok(!grep({ alive($_) } @old), 'the old workers are gone');
    is(scalar log_lines($log, 'shutdown'), 2, 'the old workers ran lifespan shutdown');
    my $err = slurp($p->{err});
    like($err, qr/Received SIGUSR2: hot restart, new master PID $new/, 'the old master logs the restart');
    like($err, qr/Hot restart: 2 workers ready; stopping the old master \(PID $p->{pid}\)/, 'the new one logs the take-over');
    unlike($err, qr/matches no configured listener/, 'the inherited socket was the one configured');

    kill TERM => $new if $new;
    ok($new && gone($new, 15), 'TERM stops the new master');
    ok(wait_until(5, sub { !grep { alive($_) } @new_workers }), 'no worker left');
    ok(!-e $pidfile, 'the PID file is removed at its exit');
};

subtest 'USR2: the old master serves on when the new one cannot start' => sub {
    my $log = tmpdir() . '/usr2-fail.log';
    my $app = write_file('changing.pl', "use ProcApp; ProcApp::app();\n");
    my $p = spawn_cli(
        pgrp => 1,
        env  => { T_LOG => $log, PAGI_ENV => 'production' },
        args => [ '-p', 0, '-w', 2, '--shutdown-timeout', 5, '--no-access-log', $app ],
    );
    my $port = listening_port($p->{err}, 15);
    ok($port, 'master is listening') or return diag slurp($p->{err});
    ok(wait_until(10, sub { log_lines($log, 'startup') == 2 }), 'both workers started');
    my @old = children_of($p->{pid});
    write_file('changing.pl', "die qq{broken deploy\\n};\n");
    kill USR2 => $p->{pid};
    ok(wait_until(15, sub { slurp($p->{err}) =~ /Hot restart failed: the new master \(PID [0-9]+\) exited \(exit status [0-9]+\)/ }),
        'the old master logs that the restart failed') or diag slurp($p->{err});
    like(slurp($p->{err}), qr/broken deploy/, "the new master's reason is in the log");
    ok(alive($p->{pid}), 'the old master is alive');
    is([ children_of($p->{pid}) ], [ sort { $a <=> $b } @old ], 'with the same workers');
    like(http_get($port, '/'), qr{\AHTTP/1\.1 200 }, 'and serves');
    write_file('changing.pl', "use ProcApp; ProcApp::app();\n");
    kill TERM => $p->{pid};
    is(how_it_ended(reap($p->{pid}, 15)), 'exit 0', 'TERM stops it');
    ok(wait_until(5, sub { !grep { alive($_) } @old }), 'no worker left');
};

subtest 'heartbeat: a blocked worker is replaced, a slow awaiting one is not' => sub {
    my $log = tmpdir() . '/heartbeat.log';
    my $p = spawn_cli(
        pgrp => 1,
        env  => { T_LOG => $log, PAGI_ENV => 'production', T_SLOW => 3 },
        args => [ '-p', 0, '-w', 2, '--heartbeat-timeout', 1, '--shutdown-timeout', 5, '--no-access-log', $APP ],
    );
    my $port = listening_port($p->{err}, 15);
    ok($port, 'master is listening') or return diag slurp($p->{err});
    ok(wait_until(10, sub { log_lines($log, 'startup') == 2 }), 'both workers started');

    my ($slow) = http_get($port, '/slow', 10) =~ m{\AHTTP/1\.1 200 .*done /slow ([0-9]+)}s;
    ok($slow, 'a request awaiting 3 s (three heartbeat timeouts) completes');
    ok($slow && alive($slow), 'the worker that awaited it was not killed');

    my $blocked = open_request($port, '/block');
    ok(wait_until(5, sub { log_lines($log, 'block') == 1 }), 'a worker is blocked');
    my ($stuck) = map { (split ' ')[1] } log_lines($log, 'block');
    ok(wait_until(10, sub { !alive($stuck) }), 'the blocked worker is killed');
    ok(wait_until(10, sub { log_lines($log, 'startup') == 3 }), 'a new worker started');
    like(slurp($p->{err}), qr/Worker [12] \(PID $stuck\) sent no heartbeat for 1s .*SIGKILL/, 'the master says why');
    my @now = children_of($p->{pid});
    is(scalar @now, 2, 'two workers again');
    like(http_get($port, '/'), qr{\AHTTP/1\.1 200 }, 'requests are served');
    close $blocked if $blocked;

    kill TERM => $p->{pid};
    is(how_it_ended(reap($p->{pid}, 15)), 'exit 0', 'TERM stops the master');
    ok(wait_until(5, sub { !children_of($p->{pid}) }), 'no worker left');
};

# Listening TCP sockets on $port, from /proc/net/tcp{,6}: their inodes.
sub listening_inodes {
    my ($port) = @_;
    my $hex = sprintf '%04X', $port;
    my @inodes;
    for my $f ('/proc/net/tcp', '/proc/net/tcp6') {
        for (split /\n/, slurp($f)) {
            my @c = split ' ';
            push @inodes, $c[9] if ($c[1] // '') =~ /:$hex\z/ && ($c[3] // '') eq '0A';
        }
    }
    return @inodes;
}

# The socket inodes among a process's open files.
sub socket_inodes {
    my ($pid) = @_;
    opendir my $dh, "/proc/$pid/fd" or return ();
    return map { (readlink("/proc/$pid/fd/$_") // '') =~ /\Asocket:\[([0-9]+)\]\z/ ? $1 : () } readdir $dh;
}

subtest 'reuseport: a socket per worker' => sub {
    skip_all('/proc/net/tcp is not readable') unless -r '/proc/net/tcp';
    for my $mode ('shared', 'reuseport') {
        my $log = tmpdir() . "/$mode.log";
        my ($p, $port) = start_server($log, '-w', 2, ($mode eq 'reuseport' ? '--reuseport' : ()));
        ok($port, "$mode: master is listening") or return diag slurp($p->{err});
        ok(wait_until(10, sub { log_lines($log, 'startup') == 2 }), "$mode: both workers started");
        my @workers = children_of($p->{pid});
        # Workers bind after their lifespan startup.
        my $want = $mode eq 'reuseport' ? 2 : 1;
        my @listening;
        wait_until(5, sub { @listening = listening_inodes($port); @listening == $want });
        my %master = map { $_ => 1 } socket_inodes($p->{pid});
        if ($mode eq 'reuseport') {
            is(scalar @listening, 2, 'reuseport: two listening sockets on the port');
            ok(!grep({ $master{$_} } @listening), 'neither is the master\'s');
            for my $w (@workers) {
                my %mine = map { $_ => 1 } socket_inodes($w);
                is(scalar(grep { $mine{$_} } @listening), 1, "worker $w holds one of them");
            }
        }
        else {
            is(scalar @listening, 1, 'shared: one listening socket');
            ok($master{ $listening[0] // '' }, 'held by the master');
        }
        my %by;
        for (1 .. 40) {
            my ($pid) = http_get($port, '/') =~ m{done / ([0-9]+)};
            $by{ $pid // 'none' }++;
        }
        is($by{none}, undef, "$mode: 40 requests answered");
        kill TERM => $p->{pid};
        is(how_it_ended(reap($p->{pid}, 15)), 'exit 0', "$mode: TERM stops the master");
        ok(wait_until(5, sub { !grep { alive($_) } @workers }), "$mode: no worker left");
    }
};

subtest 'graceful stop: a connection accepted before it still gets its answer' => sub {
    my $log = tmpdir() . '/fresh.log';
    my ($p, $port) = start_server($log);
    ok($port, 'server is listening') or return diag slurp($p->{err});
    my $fresh = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 5);
    ok($fresh, 'connected, no request sent yet');
    my $idle = open_request($port, '/');
    like(read_response($idle, 5), qr{\AHTTP/1\.1 200 }, 'another connection is served');
    sleep 0.3;    # the first connection has surely been accepted
    kill TERM => $p->{pid};
    sleep 0.3;
    syswrite $fresh, "GET /late HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    like(read_response($fresh, 5), qr{\AHTTP/1\.1 200 .*done /late}s, 'its request, sent after TERM, is answered');
    is(how_it_ended(reap($p->{pid}, 15)), 'exit 0', 'the server then stops');
};

subtest '--user: bound as root, then the app runs as the user' => sub {
    skip_all('needs root') unless $> == 0;
    my @nobody = getpwnam('nobody') or skip_all('no user nobody');
    # Only root may enter $private: the socket and the PID file can be
    # made there only before the switch. The app's log must be writable
    # by nobody.
    my $private = File::Temp::tempdir(CLEANUP => 1);
    chmod 0700, $private;
    my $open = File::Temp::tempdir(CLEANUP => 1);
    chmod 0777, $open;
    for my $workers (0, 2) {
        my $sock = "$private/u$workers.sock";
        my $log  = "$open/u$workers.log";
        my $p = spawn_cli(
            pgrp => 1,
            env  => { T_LOG => $log, PAGI_ENV => 'production' },
            args => [ '--socket', $sock, '--socket-mode', '0666', '--user', 'nobody', '--pid', "$private/u$workers.pid",
                      '-w', $workers, '--shutdown-timeout', 5, '--no-access-log', $APP ],
        );
        ok(wait_until(15, sub { log_lines($log, 'startup') == ($workers || 1) }), "workers $workers: lifespan ran")
            or diag slurp($p->{err});
        like(http_get($sock, '/'), qr{\AHTTP/1\.1 200 }, "workers $workers: the socket made in a root-only directory serves");
        is(slurp("$private/u$workers.pid"), "$p->{pid}\n", "workers $workers: the PID file was written there too");
        for my $pid ($p->{pid}, map { (split ' ')[1] } log_lines($log, 'startup')) {
            my ($uid) = slurp("/proc/$pid/status") =~ /^Uid:\s+([0-9]+)/m;
            is($uid, $nobody[2], "workers $workers: process $pid runs as nobody");
        }
        kill TERM => $p->{pid};
        is(how_it_ended(reap($p->{pid}, 15)), 'exit 0', "workers $workers: TERM stops it");
    }
};

subtest 'systemd socket activation' => sub {
    my $activate = which('systemd-socket-activate')
        or skip_all('systemd-socket-activate is not installed (Debian package systemd)');
    my @inc = map { "-I$_" } grep { !ref } @INC;
    my $cli = ProcTest::cli_path();
    for my $workers (0, 2) {
        my $port = free_port();
        my $log = tmpdir() . "/sd-$workers.log";
        my $p = start_cmd(
            name => 'sd',
            env  => { T_LOG => $log, PAGI_ENV => 'production' },
            argv => [ $activate, '-l', "127.0.0.1:$port", $^X, @inc, $cli,
                      '--host', '127.0.0.1', '--port', $port, '-w', $workers, '--no-access-log', $APP ],
        );
        ok(wait_until(10, sub { http_get($port, '/') =~ m{\AHTTP/1\.1 200 } }),
            "workers $workers: the activated socket is served") or diag slurp($p->{err});
        my $err = slurp($p->{err});
        like($err, qr{listening on http://127\.0\.0\.1:$port/}, "workers $workers: on the configured address");
        unlike($err, qr/matches no configured listener|binding a new socket/, "workers $workers: the passed socket was adopted");
        like(stop_cmd($p, 15), qr/\A0\z/, "workers $workers: TERM stops it cleanly");
        is([ children_of($p->{pid}) ], [], "workers $workers: nothing left");
    }

    my $path = tmpdir() . '/sd.sock';
    my $log = tmpdir() . '/sd-unix.log';
    my $p = start_cmd(
        name => 'sd-unix',
        env  => { T_LOG => $log, PAGI_ENV => 'production' },
        argv => [ $activate, '-l', $path, $^X, @inc, $cli, '--socket', $path, '-w', 2, '--no-access-log', $APP ],
    );
    ok(wait_until(10, sub { -S $path && http_get($path, '/') =~ m{\AHTTP/1\.1 200 } }),
        'a passed Unix socket is served') or diag slurp($p->{err});
    unlike(slurp($p->{err}), qr/matches no configured listener|binding a new socket/, 'and was adopted');
    like(stop_cmd($p, 15), qr/\A0\z/, 'TERM stops it cleanly');
    ok(-S $path, 'the passed socket file is not removed');
};

done_testing;
