use strict;
use warnings;

# Signals sent to real pagi-server processes:
# - a second TERM, or INT reaching every process of the group (Ctrl-C),
#   while a server drains never kills it before lifespan shutdown ran, in
#   a single-process server and in a multi-worker server's workers;
# - HUP, TTIN, TTOU and USR2 sent to a worker are ignored (its master
#   acts on them); a single-process server logs that it ignores them and
#   keeps serving; TTIN/TTOU scale the workers and max_requests recycles
#   them (HUP and USR2 to a master: t/59).
# Every wait is bounded; every process is killed by PID at the end.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use Time::HiRes qw(sleep);
use ProcTest qw(spawn_cli reap wait_until children_of alive proc_state slurp
                listening_port open_request read_response http_get write_file tmpdir
                log_lines how_it_ended workers_busy start_pagi);

my $APP = write_file('app.pl', "use ProcApp; ProcApp::app();\n");

# pagi-server in its own process group: its handle and port.
sub start_server { return start_pagi($APP, @_) }

subtest 'single process: more TERM and INT while draining' => sub {
    my $log = tmpdir() . '/single.log';
    my ($p, $port) = start_server($log);
    ok($port, 'server is listening') or return diag slurp($p->{err});
    ok(wait_until(10, sub { log_lines($log, 'startup') == 1 }), 'lifespan started');

    my $slow = open_request($port, '/slow');
    ok(wait_until(5, sub { log_lines($log, 'slow') == 1 }), 'slow request is running');

    kill TERM => $p->{pid};
    sleep 0.3;
    kill TERM => $p->{pid};
    sleep 0.1;
    kill INT => -$p->{pid};    # Ctrl-C: the whole process group
    sleep 0.1;
    ok(alive($p->{pid}), 'still alive while the request drains');

    my $resp = read_response($slow, 10);
    like($resp, qr{\AHTTP/1\.1 200 .*done /slow}s, 'the request in flight completed');
    my $status = reap($p->{pid}, 10);
    is(how_it_ended($status), 'exit 0', 'server ended by itself, not by a signal');
    is(scalar log_lines($log, 'shutdown'), 1, 'lifespan shutdown ran');
};

subtest 'workers: Ctrl-C twice while draining' => sub {
    my $log = tmpdir() . '/workers-int.log';
    my ($p, $port) = start_server($log, '-w', 2);
    my ($workers, $slow) = workers_busy($p, $log, $port) or return diag slurp($p->{err});
    my @workers = @$workers;

    kill INT => -$p->{pid};
    sleep 0.3;
    kill INT => -$p->{pid};
    sleep 0.1;
    kill TERM => @workers;
    sleep 0.1;

    my $resp = read_response($slow, 10);
    like($resp, qr{\AHTTP/1\.1 200 .*done /slow}s, 'the request in flight completed');
    my $status = reap($p->{pid}, 15);
    is(how_it_ended($status), 'exit 0', 'master ended by itself, not by a signal');
    is([ sort map { (split / /)[1] } log_lines($log, 'shutdown') ], [ sort @workers ],
        'every worker ran lifespan shutdown');
    ok(wait_until(5, sub { !grep { alive($_) } @workers }), 'no worker left');
};

subtest 'workers: HUP, TTIN, TTOU and USR2 sent to a worker are ignored' => sub {
    my $log = tmpdir() . '/workers-hup.log';
    my ($p, $port) = start_server($log, '-w', 2);
    ok($port, 'master is listening') or return diag slurp($p->{err});
    ok(wait_until(10, sub { log_lines($log, 'startup') == 2 }), 'both workers started');
    my @workers = children_of($p->{pid});
    is(scalar @workers, 2, 'two workers');

    for my $sig (qw(HUP TTIN TTOU USR2)) {
        kill $sig => $workers[0];
        sleep 0.2;
        for my $pid ($p->{pid}, @workers) {
            my $state = proc_state($pid) // 'gone';
            ok($state ne 'gone' && $state ne 'Z' && $state ne 'T', "after $sig, $pid is alive and not stopped ($state)");
        }
        is([ children_of($p->{pid}) ], [ sort { $a <=> $b } @workers ], "after $sig, the same workers serve");
        like(http_get($port, '/'), qr{\AHTTP/1\.1 200 }, "after $sig, requests are served");
    }
    unlike(slurp($p->{err}), qr/SIG(?:HUP|TTIN|TTOU|USR2)/, 'the master saw none of them');

    kill TERM => $p->{pid};
    is(how_it_ended(reap($p->{pid}, 15)), 'exit 0', 'TERM still stops the master');
    ok(wait_until(5, sub { !grep { alive($_) } @workers }), 'no worker left');
};

subtest 'workers: TTIN adds a worker, TTOU removes one, never the last' => sub {
    my $log = tmpdir() . '/workers-scale.log';
    my ($p, $port) = start_server($log, '-w', 2);
    ok($port, 'master is listening') or return diag slurp($p->{err});
    ok(wait_until(10, sub { log_lines($log, 'startup') == 2 }), 'both workers started');
    my @first = children_of($p->{pid});

    kill TTIN => $p->{pid};
    ok(wait_until(10, sub { log_lines($log, 'startup') == 3 }), 'TTIN: a third worker ran lifespan startup');
    my @three = children_of($p->{pid});
    is(scalar @three, 3, 'TTIN: three workers');
    is([ grep { my $w = $_; grep { $_ == $w } @three } @first ], [ sort { $a <=> $b } @first ],
        'TTIN: the first two still serve');
    like(slurp($p->{err}), qr/SIGTTIN: started worker 3 \(PID \d+\); 3 workers/, 'TTIN: logged');

    kill TTOU => $p->{pid};
    ok(wait_until(10, sub { log_lines($log, 'shutdown') == 1 }), 'TTOU: one worker ran lifespan shutdown');
    ok(wait_until(10, sub { (() = children_of($p->{pid})) == 2 }), 'TTOU: two workers left, none respawned');
    sleep 0.5;
    is([ children_of($p->{pid}) ], [ sort { $a <=> $b } @first ], 'TTOU: the newest one went');
    like(http_get($port, '/'), qr{\AHTTP/1\.1 200 }, 'requests are served');

    kill TTOU => $p->{pid};
    ok(wait_until(10, sub { (() = children_of($p->{pid})) == 1 }), 'TTOU again: one worker left');
    kill TTOU => $p->{pid};
    ok(wait_until(5, sub { slurp($p->{err}) =~ /SIGTTOU with one worker left; keeping it/ }), 'TTOU at one worker: refused, logged');
    sleep 0.3;
    is(scalar(() = children_of($p->{pid})), 1, 'TTOU at one worker: it keeps serving');
    like(http_get($port, '/'), qr{\AHTTP/1\.1 200 }, 'requests are still served');

    my @left = children_of($p->{pid});
    kill TERM => $p->{pid};
    is(how_it_ended(reap($p->{pid}, 15)), 'exit 0', 'TERM stops the master');
    ok(wait_until(5, sub { !grep { alive($_) } @three, @left }), 'no worker left');
};

subtest 'workers: max_requests replaces a worker once its replacement is up' => sub {
    my $log = tmpdir() . '/workers-max.log';
    my ($p, $port) = start_server($log, '-w', 2, '--max-requests', 5);
    ok($port, 'master is listening') or return diag slurp($p->{err});
    ok(wait_until(10, sub { log_lines($log, 'startup') == 2 }), 'both workers started');
    # Requests one after another until two rounds of replacements have
    # served (a replacement takes a moment to start; the old worker serves
    # on meanwhile), for at most 30 s.
    my (%by, $bad, $n);
    my $deadline = time + 30;
    while (keys(%by) < 4 && time < $deadline) {
        $n++;
        my $r = http_get($port, "/r$n");
        if ($r =~ m{\AHTTP/1\.1 200 .*done /r$n ([0-9]+)}s) { $by{$1}++ }
        else { $bad++; diag("/r$n answered: " . (length $r ? substr($r, 0, 200) : 'nothing')) }
    }
    is($bad // 0, 0, "$n requests in a row: every one answered 200");
    ok(keys(%by) >= 4, sprintf('answered by %d worker processes in turn', scalar keys %by));
    like(slurp($p->{err}), qr/reached max_requests; starting its replacement/, 'the master logs each replacement');
    ok(wait_until(10, sub { (() = children_of($p->{pid})) == 2 }), 'two workers serve afterwards');
    my @left = children_of($p->{pid});
    my %serving = map { $_ => 1 } @left;
    my @gone = grep { !$serving{$_} } keys %by;
    # A worker serves on until its replacement is ready, so it may serve a
    # few more than its limit, never fewer.
    ok(@gone && !grep({ $by{$_} < 5 } @gone), 'each replaced worker had served at least max_requests')
        or diag(join ', ', map { "$_=$by{$_}" } sort keys %by);
    ok(wait_until(10, sub { log_lines($log, 'shutdown') == @gone }),
        'each replaced worker ran lifespan shutdown');
    kill TERM => $p->{pid};
    is(how_it_ended(reap($p->{pid}, 15)), 'exit 0', 'TERM stops the master');
    ok(wait_until(5, sub { !grep { alive($_) } @left, keys %by }), 'no worker left');
};

subtest 'single process: HUP, USR2, TTIN and TTOU are logged and ignored' => sub {
    my $log = tmpdir() . '/single-hup.log';
    my ($p, $port) = start_server($log);
    ok($port, 'server is listening') or return diag slurp($p->{err});
    for my $sig (qw(HUP USR2 TTIN TTOU)) {
        kill $sig => $p->{pid};
        ok(wait_until(5, sub { slurp($p->{err}) =~ /SIG$sig\b.*ignor/ }), "logs that it ignores $sig");
        ok(alive($p->{pid}), "alive after $sig");
        like(http_get($port, '/'), qr{\AHTTP/1\.1 200 }, "after $sig, requests are served");
    }
    kill TERM => $p->{pid};
    is(how_it_ended(reap($p->{pid}, 10)), 'exit 0', 'TERM still stops it');
    is(scalar log_lines($log, 'shutdown'), 1, 'lifespan shutdown ran');
};

done_testing;
