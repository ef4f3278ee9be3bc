use strict;
use warnings;

# Spellings from earlier releases, checked on real processes:
# - `use PAGI::Server` alone makes IO::Async::Loop available;
# - pagi-server -h HOST (--help stays the only way to ask for help) and
#   --listener_backlog N next to --listener-backlog / -b;
# - PAGI::Runner is PAGI::Server::Runner under its old name.
# Every wait is bounded; every process is killed by PID at the end.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use POSIX qw(WIFEXITED WEXITSTATUS);
use ProcTest qw(spawn spawn_cli reap slurp listening_port http_get write_file);

my $APP = write_file('compat-app.pl', "use ProcApp; ProcApp::app();\n");
my %ENV_PROD = (PAGI_ENV => 'production');

sub exit_code {
    my ($status) = @_;
    return 'still running' unless defined $status;
    return WIFEXITED($status) ? WEXITSTATUS($status) : "status $status";
}

# Checks that a started process serves, then stops it with TERM.
sub serves_then_stops {
    my ($p, $what) = @_;
    my $port = listening_port($p->{err}, 15);
    ok($port, "$what: listening") or return diag slurp($p->{err});
    like(http_get($port, '/x'), qr{\AHTTP/1\.1 200 .*done /x}s, "$what: serves");
    kill TERM => $p->{pid};
    is(exit_code(reap($p->{pid}, 10)), 0, "$what: stops on TERM");
    return $port;
}

subtest 'use PAGI::Server loads IO::Async::Loop' => sub {
    my $script = write_file('only-server.pl', <<'PERL');
use strict;
use warnings;
use PAGI::Server;
print 'loaded: ', ($INC{'IO/Async/Loop.pm'} ? 'yes' : 'no'), "\n";
my $app = sub {
    my ($scope, $receive, $send) = @_;
    return Future->done unless $scope->{type} eq 'http';
    return $send->({ type => 'http.response.start', status => 200, headers => [] })
        ->then(sub { $send->({ type => 'http.response.body', body => "done $scope->{path}" }) });
};
my $loop   = IO::Async::Loop->new;
my $server = PAGI::Server->new(app => $app, host => '127.0.0.1', port => 0,
    access_log => undef, lifespan_mode => 'off');
$loop->add($server);
$server->listen->get;
$loop->run;
PERL
    my $p = spawn(argv => [$script]);
    serves_then_stops($p, 'script');
    is(slurp($p->{out}), "loaded: yes\n", 'IO::Async::Loop came with PAGI::Server');
};

subtest '-h HOST' => sub {
    my $p = spawn_cli(env => \%ENV_PROD, args => [ '-h', '127.0.0.1', '-p', 0, $APP ]);
    serves_then_stops($p, '-h 127.0.0.1');
    like(slurp($p->{err}), qr{listening on http://127\.0\.0\.1:}, 'bound to the -h address');

    my $help = spawn_cli(args => ['--help']);
    is(exit_code(reap($help->{pid}, 10)), 0, '--help exits 0');
    like(slurp($help->{out}), qr/^Usage:/m, '--help prints the usage');
    like(slurp($help->{out}), qr/-h, -o, --host HOST/, 'usage names -h for the host');

    my $bare = spawn_cli(args => ['-h']);
    is(exit_code(reap($bare->{pid}, 10)), 1, '-h without a host is an error');
    like(slurp($bare->{err}), qr/-h\b.*(?:requires|needs)/, '... naming -h');
};

subtest 'listener backlog spellings' => sub {
    my $ss_ok = system('ss -ltnH >/dev/null 2>&1') == 0;
    my $n = 17;
    for my $flag ('--listener_backlog', '--listener-backlog', '-b') {
        my $p = spawn_cli(env => \%ENV_PROD, args => [ $flag, $n, '-p', 0, $APP ]);
        my $port = listening_port($p->{err}, 15);
        ok($port, "$flag $n: listening") or do { diag slurp($p->{err}); next };
        if ($ss_ok) {
            # For a listening socket, ss shows the backlog as Send-Q.
            my $line = `ss -ltnH 'sport = :$port'`;
            my (undef, undef, $sendq) = split ' ', $line;
            is($sendq, $n, "$flag $n: the socket's backlog is $n");
        }
        like(http_get($port, '/x'), qr{\AHTTP/1\.1 200 }, "$flag $n: serves");
        kill TERM => $p->{pid};
        is(exit_code(reap($p->{pid}, 10)), 0, "$flag $n: stops on TERM");
        $n++;
    }

    my $bad = spawn_cli(args => [ '--listener_backlog', 'many', $APP ]);
    is(exit_code(reap($bad->{pid}, 10)), 1, 'a bad value is refused');
    like(slurp($bad->{err}), qr/--listener_backlog expects a whole number/, '... naming the flag as typed');
};

subtest 'PAGI::Runner' => sub {
    my $class = write_file('runner-class.pl',
        "use PAGI::Runner; PAGI::Runner->run(\@ARGV);\n");
    my $p = spawn(env => \%ENV_PROD, argv => [ $class, '-p', 0, $APP ]);
    serves_then_stops($p, 'PAGI::Runner->run(@ARGV)');

    my $object = write_file('runner-object.pl', <<'PERL');
use PAGI::Runner;
my $runner = PAGI::Runner->new(host => '127.0.0.1', port => 0);
print ref($runner), ' isa ', ($runner->isa('PAGI::Server::Runner') ? 'yes' : 'no'), "\n";
$runner->run(@ARGV);
PERL
    $p = spawn(env => \%ENV_PROD, argv => [ $object, $APP ]);
    serves_then_stops($p, 'PAGI::Runner->new(...)->run');
    is(slurp($p->{out}), "PAGI::Runner isa yes\n", 'a PAGI::Server::Runner');
};

done_testing;
