use strict;
use warnings;

# A worker never outlives its master. When the master of a multi-worker
# server dies by SIGKILL, its workers stop accepting, finish the request in
# flight within shutdown_timeout, run lifespan shutdown and exit, and the
# port can be bound again. Checked for a master started by pagi-server and
# for one embedded in a script ($loop->add, listen, $loop->run).
# Every wait is bounded; every process is killed by PID at the end.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use ProcTest qw(spawn spawn_cli reap wait_until alive slurp listening_port
                read_response write_file tmpdir log_lines workers_busy);

my $SHUTDOWN_TIMEOUT = 2;
my $APP = write_file('app.pl', "use ProcApp; ProcApp::app();\n");
my $EMBEDDED = write_file('embedded.pl', <<'PERL');
use strict;
use warnings;
use IO::Async::Loop;
use PAGI::Server;
use ProcApp;
my $loop   = IO::Async::Loop->new;
my $server = PAGI::Server->new(app => ProcApp::app(), host => '127.0.0.1', port => 0,
    workers => 2, shutdown_timeout => $ENV{T_SHUTDOWN}, access_log => undef);
$loop->add($server);
$server->listen->get;
warn "PAGI Server listening on http://127.0.0.1:" . $server->port . "/\n";
$loop->run;
PERL

sub check_master_death {
    my ($p, $log) = @_;
    my $port = listening_port($p->{err}, 15);
    my ($workers, $slow) = workers_busy($p, $log, $port) or return diag slurp($p->{err});
    my @workers = @$workers;

    kill KILL => $p->{pid};
    ok(defined reap($p->{pid}, 5), 'master is gone');
    my $killed = time;

    my $resp = read_response($slow, 10);
    like($resp, qr{\AHTTP/1\.1 200 .*done /slow}s, 'the request in flight completed');

    # Drain (at most shutdown_timeout) and lifespan shutdown; a little slack
    # for process start-up on a loaded machine.
    ok(wait_until($SHUTDOWN_TIMEOUT + 3, sub { !grep { alive($_) } @workers }),
        'every worker exited after the master died')
        or diag 'still running: ' . join ' ', grep { alive($_) } @workers;
    is([ sort map { (split / /)[1] } log_lines($log, 'shutdown') ], [ sort @workers ],
        'every worker ran lifespan shutdown');
    like(slurp($p->{err}), qr/master process $p->{pid} is gone/, 'workers say why they stop');

    my $again = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => $port,
        Listen => 5, ReuseAddr => 1, Proto => 'tcp');
    ok($again, "port $port can be bound again") or diag "bind: $!";
    close $again if $again;
}

subtest 'master started by pagi-server' => sub {
    my $log = tmpdir() . '/cli.log';
    my $p = spawn_cli(
        env  => { T_LOG => $log, T_SLOW => 1, PAGI_ENV => 'production' },
        args => [ '-p', 0, '-w', 2, '--shutdown-timeout', $SHUTDOWN_TIMEOUT, $APP ],
    );
    check_master_death($p, $log);
};

subtest 'master embedded in a script' => sub {
    my $log = tmpdir() . '/embedded.log';
    my $p = spawn(
        env  => { T_LOG => $log, T_SLOW => 1, T_SHUTDOWN => $SHUTDOWN_TIMEOUT },
        argv => [ $EMBEDDED ],
    );
    check_master_death($p, $log);
};

done_testing;
