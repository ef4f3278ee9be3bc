use strict;
use warnings;

# The lifespan protocol as driven by listen() and shutdown(): event order,
# shared state, the three lifespan_mode values, failures, timeouts and the
# log lines that go with them.

use Test2::V0;
use IO::Async::Loop;
use IO::Socket::INET;
use Future::AsyncAwait;
use Time::HiRes qw(time);

use PAGI::Server;

my $loop = IO::Async::Loop->new;

# ------------------------------------------------------------------ helpers

sub pump_until {
    my ($secs, $cond) = @_;
    my $deadline = time + $secs;
    until ($cond->()) {
        return 0 if time > $deadline;
        $loop->loop_once(0.02);
    }
    return 1;
}

# Waits (bounded) for $f; returns whether it became ready.
sub settle {
    my ($f, $secs) = @_;
    pump_until($secs // 5, sub { $f->is_ready });
    return $f->is_ready;
}

# GET $path on a fresh connection; returns the body of a 200, or undef.
sub get_body {
    my ($port, $path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
        Proto => 'tcp', Timeout => 3) or return undef;
    $s->blocking(0);
    syswrite($s, "GET $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    my ($buf, $eof) = ('', 0);
    pump_until(5, sub {
        while (1) {
            my $n = sysread($s, $buf, 65536, length $buf);
            if (defined $n && $n == 0) { $eof = 1; last }
            last unless $n;
        }
        return $eof;
    });
    return undef unless $buf =~ m{\AHTTP/1\.1 200 [^\r]*\r\n(.*?)\r\n\r\n(.*)\z}s;
    my ($head, $body) = ($1, $2);
    if ($head =~ /^transfer-encoding:\s*chunked/mi) {
        my $out = '';
        while ($body =~ s/\A([0-9a-fA-F]+)\r\n//) {
            my $len = hex $1;
            last if !$len;
            $out .= substr($body, 0, $len, '');
            $body =~ s/\A\r\n//;
        }
        $body = $out;
    }
    return $body;
}

# Answers every HTTP request with $text_of->($scope).
sub http_reply {
    my ($scope, $send, $text) = @_;
    return (async sub {
        await $send->({ type => 'http.response.start', status => 200,
                        headers => [ [ 'content-type', 'text/plain' ] ] });
        await $send->({ type => 'http.response.body', body => $text });
    })->();
}

sub new_server {
    my (%o) = @_;
    return PAGI::Server->new(host => '127.0.0.1', port => 0, quiet => 1, access_log => undef, %o);
}

# Adds, listens (bounded) and returns the listen Future.
sub start {
    my ($server) = @_;
    $loop->add($server);
    my $f = $server->listen;
    settle($f, 5);
    return $f;
}

sub stop {
    my ($server) = @_;
    if ($server->is_running) {
        my $f = $server->shutdown;
        settle($f, 10);
    }
    $loop->remove($server) if $server->loop;
}

sub capture_warnings {
    my ($code) = @_;
    my @w;
    local $SIG{__WARN__} = sub { push @w, join '', @_ };
    $code->();
    return \@w;
}

# ------------------------------------------------------------------- tests

subtest 'startup and shutdown events, in order' => sub {
    my @log;
    my $gate = $loop->new_future;
    my $lifespan_scope;
    my $app = async sub {
        my ($scope, $receive, $send) = @_;
        if ($scope->{type} eq 'lifespan') {
            $lifespan_scope = $scope;
            while (1) {
                my $ev = await $receive->();
                push @log, "recv:$ev->{type}";
                if ($ev->{type} eq 'lifespan.startup') {
                    await $gate;
                    push @log, 'send:startup.complete';
                    await $send->({ type => 'lifespan.startup.complete' });
                }
                elsif ($ev->{type} eq 'lifespan.shutdown') {
                    await $loop->delay_future(after => 0.2);
                    push @log, 'send:shutdown.complete';
                    await $send->({ type => 'lifespan.shutdown.complete' });
                    push @log, 'app:returned';
                    return;
                }
            }
        }
        push @log, 'request';
        await http_reply($scope, $send, 'ok');
    };

    my $server = new_server(app => $app);
    $loop->add($server);
    my $lf = $server->listen;
    pump_until(0.3, sub { 0 });
    ok(!$lf->is_ready, 'listen waits for lifespan.startup.complete');
    is($server->is_running, 0, '... and is not serving yet');
    is(\@log, ['recv:lifespan.startup'], 'the app got lifespan.startup first');

    $gate->done;
    ok(settle($lf, 5) && $lf->is_done, 'listen completes once startup is signalled')
        or diag($lf->is_failed ? $lf->failure : 'pending');
    is($server->is_running, 1, 'running');

    is($lifespan_scope->{type}, 'lifespan', 'scope type');
    is($lifespan_scope->{pagi}{version}, '0.3', 'pagi version');
    is($lifespan_scope->{pagi}{spec_version}, '0.3', 'pagi spec_version');
    is($lifespan_scope->{pagi}{is_worker}, 0, 'is_worker is 0 in single-process mode');
    ok(ref $lifespan_scope->{state} eq 'HASH', 'state is a hash');

    is(get_body($server->port, '/'), 'ok', 'a request is served');

    my $t0 = time;
    my $sf = $server->shutdown;
    ok(settle($sf, 5) && $sf->is_done, 'shutdown completes');
    ok(time - $t0 >= 0.15, 'shutdown waited for lifespan.shutdown.complete');
    is(\@log, [ 'recv:lifespan.startup', 'send:startup.complete', 'request',
                'recv:lifespan.shutdown', 'send:shutdown.complete', 'app:returned' ],
        'full event order');
    $loop->remove($server);
};

subtest 'state: shared from startup, shallow-copied per request' => sub {
    my $lifespan_state;
    my $app = async sub {
        my ($scope, $receive, $send) = @_;
        if ($scope->{type} eq 'lifespan') {
            $lifespan_state = $scope->{state};
            while (1) {
                my $ev = await $receive->();
                if ($ev->{type} eq 'lifespan.startup') {
                    $scope->{state}{name}   = 'original';
                    $scope->{state}{shared} = { hits => 0 };
                    await $send->({ type => 'lifespan.startup.complete' });
                }
                else {
                    await $send->({ type => 'lifespan.shutdown.complete' });
                    return;
                }
            }
        }
        my $st = $scope->{state};
        my $seen = sprintf 'name=%s hits=%d extra=%s',
            $st->{name}, ++$st->{shared}{hits}, (exists $st->{extra} ? 'yes' : 'no');
        $st->{name}  = 'changed by a request';
        $st->{extra} = 1;
        await http_reply($scope, $send, $seen);
    };
    my $server = new_server(app => $app);
    ok(start($server)->is_done, 'started');
    my $port = $server->port;
    is(get_body($port, '/1'), 'name=original hits=1 extra=no', 'first request sees the startup state');
    is(get_body($port, '/2'), 'name=original hits=2 extra=no',
        'second request: top-level changes did not persist, nested hash is shared');
    is($lifespan_state->{name}, 'original', 'the server-wide state kept its top-level value');
    ok(!exists $lifespan_state->{extra}, 'no key added by a request leaked into it');
    is($lifespan_state->{shared}{hits}, 2, 'nested data changed by requests is visible there');
    stop($server);
};

# A full-featured app whose lifespan branch is $lifespan (or a plain one).
sub app_with {
    my ($lifespan, $calls) = @_;
    return async sub {
        my ($scope, $receive, $send) = @_;
        if ($scope->{type} eq 'lifespan') {
            push @$calls, 'lifespan' if $calls;
            return await $lifespan->($scope, $receive, $send);
        }
        await http_reply($scope, $send, 'served');
    };
}

my $good_lifespan = async sub {
    my ($scope, $receive, $send) = @_;
    while (1) {
        my $ev = await $receive->();
        if ($ev->{type} eq 'lifespan.startup') {
            await $send->({ type => 'lifespan.startup.complete' });
        }
        elsif ($ev->{type} eq 'lifespan.shutdown') {
            await $send->({ type => 'lifespan.shutdown.complete' });
            return;
        }
    }
};
my $returns_at_once = async sub { return };
my $dies_at_once    = async sub { die "nope\n" };

subtest 'lifespan_mode => off' => sub {
    my @calls;
    my $server = new_server(app => app_with($good_lifespan, \@calls), lifespan_mode => 'off');
    ok(start($server)->is_done, 'listen succeeds');
    is(get_body($server->port, '/'), 'served', 'serves');
    stop($server);
    is(\@calls, [], 'the app was never called with a lifespan scope');

    my $server2 = new_server(app => app_with($dies_at_once), lifespan_mode => 'off');
    ok(start($server2)->is_done, 'an app that would die in lifespan is never asked');
    stop($server2);
};

subtest 'lifespan_mode => on' => sub {
    my @calls;
    my $ok = new_server(app => app_with($good_lifespan, \@calls), lifespan_mode => 'on');
    ok(start($ok)->is_done, 'a lifespan-aware app starts');
    is(\@calls, ['lifespan'], 'lifespan ran');
    is(get_body($ok->port, '/'), 'served', 'serves');
    stop($ok);

    my $ret = new_server(app => app_with($returns_at_once), lifespan_mode => 'on');
    my $f = start($ret);
    ok($f->is_failed, 'an app that returns without signalling startup fails listen');
    is(($f->failure)[0],
        "Lifespan startup failed: lifespan_mode is 'on' but the application returned without signalling startup\n",
        '... with the reason');
    is($ret->is_running, 0, '... and does not run');
    stop($ret);

    my $die = new_server(app => app_with($dies_at_once), lifespan_mode => 'on');
    $f = start($die);
    ok($f->is_failed, 'an app that dies fails listen');
    is(($f->failure)[0],
        "Lifespan startup failed: lifespan_mode is 'on' but the application raised: nope\n",
        '... with the exception text');
    stop($die);
};

subtest 'lifespan_mode => auto' => sub {
    my @calls;
    my $good = new_server(app => app_with($good_lifespan, \@calls));
    ok(start($good)->is_done, 'a lifespan-aware app starts (auto is the default)');
    is(\@calls, ['lifespan'], 'lifespan ran');
    stop($good);

    for my $case ([ 'returns', $returns_at_once, qr/^Lifespan not supported, continuing without it$/ ],
                  [ 'dies',    $dies_at_once,
                    qr/^Lifespan not supported, continuing without it \(application raised: nope\)$/ ]) {
        my ($what, $lifespan, $msg) = @$case;
        my @c;
        my $server = new_server(app => app_with($lifespan, \@c), quiet => 0);
        my ($f, $body);
        my $w = capture_warnings(sub {
            $f = start($server);
            $body = get_body($server->port, '/') if $f->is_done;
            stop($server);
        });
        ok($f->is_done, "app that $what before startup: listen still succeeds")
            or diag($f->is_failed ? $f->failure : 'pending');
        is($body, 'served', '... and the server serves');
        is(\@c, ['lifespan'], '... the app was asked exactly once (no lifespan.shutdown later)');
        is(scalar(grep { /$msg/ } map { s/\n\z//r } @$w), 1, '... and logs that lifespan is not supported')
            or diag(join "", @$w);
    }

    my $quiet = new_server(app => app_with($returns_at_once));
    my $w = capture_warnings(sub { start($quiet); stop($quiet) });
    is([ grep { /Lifespan not supported/ } @$w ], [], 'that info message is hidden by quiet => 1');
};

subtest 'lifespan.startup.failed' => sub {
    my $failing = sub {
        my (@msg) = @_;
        return async sub {
            my ($scope, $receive, $send) = @_;
            my $ev = await $receive->();
            await $send->({ type => 'lifespan.startup.failed', @msg });
            return;
        };
    };
    for my $mode (qw(auto on)) {
        my $server = new_server(app => app_with($failing->(message => 'db down')), lifespan_mode => $mode);
        my $f;
        my $w = capture_warnings(sub { $f = start($server) });
        ok($f->is_failed, "mode $mode: listen fails");
        is(($f->failure)[0], "Lifespan startup failed: db down\n", '... with the app\'s message');
        is($server->is_running, 0, '... and the server is not running');
        ok((grep { /^PAGI Server startup failed: db down$/ } map { s/\n\z//r } @$w),
            '... and logs it at error level even with quiet => 1')
            or diag(join "", @$w);
        stop($server);
    }

    my $server = new_server(app => app_with($failing->()));
    my $f = start($server);
    ok($f->is_failed, 'startup.failed without a message also fails');
    like(($f->failure)[0], qr/^Lifespan startup failed: /, '... with the usual prefix');
    stop($server);
};

subtest 'lifespan_startup_timeout' => sub {
    my $never = async sub {
        my ($scope, $receive, $send) = @_;
        await $receive->();
        await $loop->new_future;    # never signals startup
    };
    my $server = new_server(app => app_with($never), lifespan_startup_timeout => 0.3);
    my $t0 = time;
    my $f;
    my $w = capture_warnings(sub { $f = start($server) });
    my $took = time - $t0;
    ok($f->is_failed, 'listen fails when startup is not signalled in time');
    like(($f->failure)[0], qr/^Lifespan startup failed: .*timed out/, '... with a timeout message');
    is(($f->failure)[0], "Lifespan startup failed: Lifespan startup timed out after 0.3s\n", '... exactly');
    ok($took >= 0.25 && $took < 3, sprintf('... after about 0.3 s (%.2f)', $took));
    is($server->is_running, 0, 'not running');
    ok((grep { /Lifespan startup timed out after 0\.3s/ } @$w), 'the timeout is logged at error level')
        or diag(join "", @$w);
    stop($server);
};

subtest 'the lifespan app dies after startup' => sub {
    my $crashes = async sub {
        my ($scope, $receive, $send) = @_;
        await $receive->();
        await $send->({ type => 'lifespan.startup.complete' });
        await $loop->delay_future(after => 0.1);
        die "background task crashed\n";
    };
    # quiet => 1; a short shutdown_timeout because nobody is left to answer
    # lifespan.shutdown.
    my $server = new_server(app => app_with($crashes), shutdown_timeout => 1);
    my @w;
    local $SIG{__WARN__} = sub { push @w, join '', @_ };
    ok(start($server)->is_done, 'startup completed before the crash');
    ok(pump_until(3, sub { grep { /Lifespan app failed after startup/ } @w }),
        'the crash is logged even with quiet => 1') or diag(join "", @w);
    like(join('', @w), qr/Lifespan app failed after startup: background task crashed/,
        '... with the original error');
    is($server->is_running, 1, 'the server keeps running');
    is(get_body($server->port, '/'), 'served', '... and serving');
    my $sf = $server->shutdown;
    ok(settle($sf, 5) && $sf->is_done, 'shutdown still completes');
    $loop->remove($server);
};

subtest 'shutdown runs lifespan.shutdown' => sub {
    my ($got_shutdown, $completed) = (0, 0);
    my $slow = async sub {
        my ($scope, $receive, $send) = @_;
        while (1) {
            my $ev = await $receive->();
            if ($ev->{type} eq 'lifespan.startup') {
                await $send->({ type => 'lifespan.startup.complete' });
                next;
            }
            $got_shutdown++;
            await $loop->delay_future(after => 0.3);
            $completed++;
            await $send->({ type => 'lifespan.shutdown.complete' });
            return;
        }
    };
    my $server = new_server(app => app_with($slow));
    ok(start($server)->is_done, 'started');
    is($got_shutdown, 0, 'no lifespan.shutdown while running');
    my $sf = $server->shutdown;
    ok(pump_until(2, sub { $got_shutdown }), 'shutdown delivers lifespan.shutdown');
    ok(!$sf->is_ready, 'shutdown is still waiting for lifespan.shutdown.complete');
    ok(settle($sf, 5) && $sf->is_done, 'shutdown completes');
    is($completed, 1, '... only after the app completed its shutdown');
    is($got_shutdown, 1, 'exactly one lifespan.shutdown');
    $loop->remove($server);

    my $fails = async sub {
        my ($scope, $receive, $send) = @_;
        await $receive->();
        await $send->({ type => 'lifespan.startup.complete' });
        await $receive->();
        await $send->({ type => 'lifespan.shutdown.failed', message => 'flush failed' });
    };
    my $s2 = new_server(app => app_with($fails), quiet => 0);
    my $f;
    my $w = capture_warnings(sub {
        start($s2);
        $f = $s2->shutdown;
        settle($f, 5);
        $loop->remove($s2);
    });
    ok($f->is_done, 'a failed lifespan shutdown still lets shutdown succeed');
    ok((grep { /^PAGI Server shutdown warning: flush failed$/ } map { s/\n\z//r } @$w),
        '... and is logged as a warning') or diag(join "", @$w);

    my $stuck = async sub {
        my ($scope, $receive, $send) = @_;
        await $receive->();
        await $send->({ type => 'lifespan.startup.complete' });
        await $receive->();
        await $loop->new_future;    # never completes shutdown
    };
    my $s3 = new_server(app => app_with($stuck), shutdown_timeout => 0.3, quiet => 0);
    my $t0 = time;
    $w = capture_warnings(sub {
        start($s3);
        $t0 = time;
        $f = $s3->shutdown;
        settle($f, 5);
        $loop->remove($s3);
    });
    my $took = time - $t0;
    ok($f->is_done, 'shutdown completes when the app never finishes lifespan.shutdown');
    ok($took < 3, sprintf('... bounded by shutdown_timeout (%.2f s)', $took));
    ok((grep { /PAGI Server shutdown warning: Lifespan shutdown timed out after 0\.3s/ } @$w),
        '... and warns about the timeout') or diag(join "", @$w);
};

done_testing;
