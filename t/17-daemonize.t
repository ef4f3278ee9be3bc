use strict;
use warnings;

# pagi-server -D: the command returns only once the daemon serves (exit 0)
# or could not start (the reason on the terminal, exit 1): a busy port and
# a failed lifespan startup reach the user; the PID file and access log
# options work as without -D.
# Every wait is bounded; every process is killed by PID at the end.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Socket::INET;
use POSIX qw(WIFEXITED WEXITSTATUS);
use ProcTest qw(spawn_cli reap wait_until alive slurp watch pids_with_arg
                http_get write_file tmpdir);

my $APP = write_file('daemon-app.pl', "use ProcApp; ProcApp::app();\n");
my $TMP = tmpdir();

sub run_launcher {
    my ($env, @args) = @_;
    my $p = spawn_cli(env => { PAGI_ENV => 'production', %$env }, args => [ '-D', @args, $APP ]);
    my $status = reap($p->{pid}, 20);
    my $code = !defined $status ? 'still running'
             : WIFEXITED($status) ? WEXITSTATUS($status) : "status $status";
    return ($code, slurp($p->{err}));
}

sub no_daemon_left {
    return wait_until(5, sub { !pids_with_arg($APP) });
}

subtest 'busy port: reported, non-zero exit' => sub {
    my $holder = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
        Listen => 5, Proto => 'tcp') or die "listen: $!";
    my $port = $holder->sockport;
    my $pidfile = "$TMP/busy.pid";
    my ($code, $err) = run_launcher({}, '-p', $port, '--pid', $pidfile);
    is($code, 1, 'launcher exits 1');
    like($err, qr/Port $port is already in use/, 'the reason is on the terminal');
    ok(no_daemon_left(), 'no daemon left running');
    ok(wait_until(5, sub { !-e $pidfile }), 'no PID file left');
};

for my $workers (0, 2) {
    subtest "lifespan startup failure (workers: $workers): reported, non-zero exit" => sub {
        my $pidfile = "$TMP/fail$workers.pid";
        my ($code, $err) = run_launcher({ T_FAIL_STARTUP => 1 },
            '--socket', "$TMP/fail$workers.sock", '--pid', $pidfile,
            ($workers ? ('-w', $workers) : ()));
        is($code, 1, 'launcher exits 1');
        like($err, qr/startup refused by the test app/, "the app's message is on the terminal");
        ok(no_daemon_left(), 'no daemon left running');
        ok(wait_until(5, sub { !-e $pidfile }), 'no PID file left');
    };
}

for my $workers (0, 2) {
    subtest "started (workers: $workers): exit 0, serves, PID file and access log" => sub {
        my $log     = "$TMP/ok$workers.log";
        my $pidfile = "$TMP/ok$workers.pid";
        my $sock    = "$TMP/ok$workers.sock";
        my $access  = "$TMP/ok$workers.access";
        my ($code, $err) = run_launcher({ T_LOG => $log },
            '--socket', $sock, '--pid', $pidfile, '--access-log', $access,
            ($workers ? ('-w', $workers) : ()));
        is($code, 0, 'launcher exits 0') or diag $err;
        my ($pid) = slurp($pidfile) =~ /\A([0-9]+)\n\z/;
        ok($pid, 'PID file names the daemon') or return;
        watch($pid);
        like($err, qr/background as PID $pid\b/, 'launcher names the daemon');
        ok(alive($pid), 'daemon is running');
        ok(-S $sock, 'socket exists as soon as the launcher returned');
        like(http_get($sock, '/hello'), qr{\AHTTP/1\.1 200 .*done /hello}s, 'daemon serves');
        ok(wait_until(5, sub { slurp($access) =~ m{GET /hello} }), 'access log written');
        my $started = sub { scalar(() = slurp($log) =~ /^startup /mg) };
        ok(wait_until(10, sub { $started->() == ($workers || 1) }), 'lifespan started')
            or diag 'startup lines: ' . $started->();

        kill TERM => $pid;
        ok(wait_until(10, sub { !alive($pid) }), 'daemon stops on TERM');
        ok(no_daemon_left(), 'no process left');
        ok(!-e $pidfile, 'PID file removed');
        is(scalar(() = slurp($log) =~ /^shutdown /mg), $workers || 1, 'lifespan shutdown ran');
    };
}

subtest 'a launcher killed before the daemon is ready leaves it serving' => sub {
    my $log     = "$TMP/orphan.log";
    my $pidfile = "$TMP/orphan.pid";
    my $sock    = "$TMP/orphan.sock";
    my $p = spawn_cli(env => { PAGI_ENV => 'production', T_LOG => $log, T_STARTUP_DELAY => 1 },
        args => [ '-D', '--socket', $sock, '--pid', $pidfile, $APP ]);
    my $pid;
    ok(wait_until(10, sub { ($pid) = slurp($pidfile) =~ /\A([0-9]+)\n\z/; $pid }),
        'the daemon wrote its PID file') or return;
    watch($pid);
    ok(!-e $log || slurp($log) !~ /^startup /m, 'its lifespan startup is still running');
    kill KILL => $p->{pid};    # the terminal went away, say
    reap($p->{pid}, 5);
    ok(wait_until(10, sub { slurp($log) =~ /^startup /m }), 'lifespan startup completed');
    like(http_get($sock, '/hello'), qr{\AHTTP/1\.1 200 .*done /hello}s,
        'the daemon serves after telling no one it is ready');
    ok(alive($pid), 'and is still running');
    kill TERM => $pid;
    ok(wait_until(10, sub { !alive($pid) }), 'daemon stops on TERM');
    ok(wait_until(5, sub { !-e $pidfile }), 'PID file removed');
};

done_testing;
