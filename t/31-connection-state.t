use strict;
use warnings;

# PAGI::Server::ConnectionState on its own, driven the way the server drives
# it: readers, the two terminal marks, callbacks, the lazy disconnect Future
# and how it finds an event loop.

use Test2::V0;
use Future;
use Scalar::Util qw(weaken);

use PAGI::Server::ConnectionState;

my $CLASS = 'PAGI::Server::ConnectionState';

# A stand-in event loop that counts the Futures it makes.
{
    package Local::Loop;
    sub new        { bless { made => 0 }, shift }
    sub new_future { my $s = shift; $s->{made}++; return Local::Future->new }
    package Local::Future;
    our @ISA = ('Future');
}

# Runs $code and returns the warnings it emitted.
sub warnings_of {
    my ($code) = @_;
    my @w;
    local $SIG{__WARN__} = sub { push @w, $_[0] };
    $code->();
    return \@w;
}

subtest 'a new object describes a request in flight' => sub {
    my $c = $CLASS->new;
    is($c->is_connected, 1, 'is_connected is 1');
    is($c->disconnect_reason, undef, 'no reason');
    is($c->response_started, 0, 'response not started');
};

subtest 'response_started is set by the server mark, once and for good' => sub {
    my $c = $CLASS->new;
    $c->_mark_response_started;
    is($c->response_started, 1, 'started after the mark');
    $c->_mark_response_started;
    is($c->response_started, 1, 'a second mark changes nothing');
    $c->_mark_complete;
    is($c->response_started, 1, 'still started after completion');
    is($CLASS->new->response_started, 0, 'another request has its own flag');
};

subtest 'abnormal end' => sub {
    my $c = $CLASS->new;
    my @got;
    $c->on_disconnect(sub { push @got, [first => @_] });
    $c->on_disconnect(sub { push @got, [second => @_] });
    is(\@got, [], 'nothing runs while in flight');

    $c->_mark_disconnected('write_error');
    is($c->is_connected, 0, 'no longer connected');
    is($c->disconnect_reason, 'write_error', 'reason recorded');
    is(\@got, [[first => 'write_error'], [second => 'write_error']],
        'callbacks ran once each, in order, with the reason');

    $c->_mark_disconnected('client_timeout');
    is($c->disconnect_reason, 'write_error', 'the first reason wins');
    is(scalar @got, 2, 'callbacks did not run again');
};

subtest 'undefined or empty reason becomes client_closed' => sub {
    for my $r (undef, '') {
        my $c = $CLASS->new;
        $c->_mark_disconnected($r);
        is($c->disconnect_reason, 'client_closed', 'reason ' . (defined $r ? "''" : 'undef'));
    }
};

subtest 'every standard reason comes back unchanged' => sub {
    for my $r (qw(client_closed client_timeout idle_timeout keepalive_timeout
                  write_timeout write_error read_error protocol_error
                  server_shutdown server_error body_too_large queue_overflow
                  x-rate-limited)) {
        my $c = $CLASS->new;
        my $seen;
        $c->on_disconnect(sub { $seen = shift });
        $c->_mark_disconnected($r);
        is([$c->disconnect_reason, $seen], [$r, $r], $r);
    }
};

subtest 'state is updated before the Future resolves and callbacks run' => sub {
    my $c = $CLASS->new;
    my $f = $c->disconnect_future;
    my (@at_future, @at_callback);
    $f->on_done(sub { @at_future = ($c->is_connected, $c->disconnect_reason, 'future') });
    $c->on_disconnect(sub {
        @at_callback = ($c->is_connected, $c->disconnect_reason, $f->is_ready ? 'ready' : 'pending');
    });
    $c->_mark_disconnected('read_error');
    is(\@at_future, [0, 'read_error', 'future'], 'Future sees the final state');
    is(\@at_callback, [0, 'read_error', 'ready'], 'callback sees the final state and a resolved Future');
};

subtest 'clean end' => sub {
    my $c = $CLASS->new;
    my (@done, @gone);
    $c->on_complete(sub { push @done, [a => scalar @_] });
    $c->on_complete(sub { push @done, [b => scalar @_] });
    $c->on_disconnect(sub { push @gone, @_ });
    my $f = $c->disconnect_future;

    $c->_mark_complete;
    is(\@done, [[a => 0], [b => 0]], 'on_complete callbacks ran in order without arguments');
    is(\@gone, [], 'on_disconnect did not run');
    is($c->is_connected, 0, 'not connected any more');
    is($c->disconnect_reason, undef, 'no reason after a clean end');
    ok(!$f->is_ready, 'disconnect Future still pending');

    $c->_mark_complete;
    is(scalar @done, 2, 'a second completion is ignored');
};

subtest 'exactly one terminal callback list runs' => sub {
    my $c = $CLASS->new;
    my @log;
    $c->on_complete(sub { push @log, 'complete' });
    $c->on_disconnect(sub { push @log, "disconnect:@_" });
    $c->_mark_complete;
    $c->_mark_disconnected('client_closed');
    is(\@log, ['complete'], 'completed first: a later disconnect is ignored');
    is($c->disconnect_reason, undef, '... and leaves no reason');

    my $d = $CLASS->new;
    my @log2;
    $d->on_complete(sub { push @log2, 'complete' });
    $d->on_disconnect(sub { push @log2, "disconnect:@_" });
    my $f = $d->disconnect_future;
    $d->_mark_disconnected('server_error');
    $d->_mark_complete;
    is(\@log2, ['disconnect:server_error'], 'disconnected first: a later completion is ignored');
    is($d->disconnect_reason, 'server_error', '... and keeps the reason');
    is([$f->get], ['server_error'], '... and the Future keeps its value');
};

subtest 'callbacks added after the end' => sub {
    my $gone = $CLASS->new;
    $gone->_mark_disconnected('idle_timeout');
    my @g;
    $gone->on_disconnect(sub { push @g, "late:@_" });
    is(\@g, ['late:idle_timeout'], 'late on_disconnect runs at once with the reason');
    $gone->on_complete(sub { push @g, 'complete' });
    is(\@g, ['late:idle_timeout'], 'on_complete after a disconnect never runs');

    my $done = $CLASS->new;
    $done->_mark_complete;
    my @d;
    $done->on_complete(sub { push @d, 'late:' . scalar(@_) });
    is(\@d, ['late:0'], 'late on_complete runs at once without arguments');
    $done->on_disconnect(sub { push @d, 'disconnect' });
    is(\@d, ['late:0'], 'on_disconnect after completion never runs');
};

subtest 'a callback added from inside a callback' => sub {
    my $c = $CLASS->new;
    my @log;
    $c->on_disconnect(sub {
        push @log, 'outer';
        $c->on_disconnect(sub { push @log, "inner:@_" });
    });
    $c->_mark_disconnected('client_closed');
    is(\@log, ['outer', 'inner:client_closed'], 'the nested one runs exactly once');

    my $d = $CLASS->new;
    my @l2;
    $d->on_complete(sub { push @l2, 'outer'; $d->on_complete(sub { push @l2, 'inner' }) });
    $d->_mark_complete;
    is(\@l2, ['outer', 'inner'], 'same for on_complete');
};

subtest 'dying callbacks become warnings' => sub {
    my $c = $CLASS->new;
    my $ran = 0;
    $c->on_disconnect(sub { die "first broke\n" });
    $c->on_disconnect(sub { $ran++ });
    my $lived;
    my $w = warnings_of(sub { $lived = eval { $c->_mark_disconnected('write_error'); 1 } });
    ok($lived, '_mark_disconnected did not die');
    is($ran, 1, 'the next callback still ran');
    is(scalar @$w, 1, 'one warning');
    like($w->[0], qr/on_disconnect callback error: first broke/, 'warning names the failure');

    my $d = $CLASS->new;
    my $ran2 = 0;
    $d->on_complete(sub { die { not => 'a string' } });
    $d->on_complete(sub { $ran2++ });
    my $w2 = warnings_of(sub { $lived = eval { $d->_mark_complete; 1 } });
    ok($lived, '_mark_complete did not die');
    is($ran2, 1, 'the next on_complete callback still ran');
    like($w2->[0], qr/on_complete callback error/, 'warning for the failed on_complete');

    my $w3 = warnings_of(sub { $lived = eval { $c->on_disconnect(sub { die "late\n" }); 1 } });
    ok($lived, 'a late callback that dies does not kill on_disconnect');
    like($w3->[0], qr/callback error: late/, 'late failure warned');

    my $w4 = warnings_of(sub { $lived = eval { $d->on_complete(sub { die "late2\n" }); 1 } });
    ok($lived, 'a late callback that dies does not kill on_complete');
    like($w4->[0], qr/callback error: late2/, 'late on_complete failure warned');

    my $e = $CLASS->new;
    $e->disconnect_future->on_done(sub { die "chained\n" });
    my $after = 0;
    $e->on_disconnect(sub { $after++ });
    my $w5 = warnings_of(sub { $lived = eval { $e->_mark_disconnected('client_closed'); 1 } });
    ok($lived, 'a failure chained on the disconnect Future does not escape');
    is($after, 1, 'on_disconnect callbacks still ran');
    ok(scalar(grep { /chained/ } @$w5), 'the chained failure was warned');
};

subtest 'registration wants code' => sub {
    my $c = $CLASS->new;
    like(dies { $c->on_disconnect('nope') }, qr/on_disconnect expects a code reference/, 'on_disconnect');
    like(dies { $c->on_complete(undef) }, qr/on_complete expects a code reference/, 'on_complete');
    like(dies { $c->on_complete({}) }, qr/code reference/, 'hash ref refused');
    my @r = $c->on_complete(sub { });
    is(\@r, [], 'registration returns nothing');

    {
        package Local::Callable;
        use overload '&{}' => sub { my $s = shift; sub { $s->{hits}++ } }, fallback => 1;
    }
    my $obj = bless { hits => 0 }, 'Local::Callable';
    ok(lives { $c->on_complete($obj) }, 'an object overloading &{} is accepted');
    $c->_mark_complete;
    is($obj->{hits}, 1, '... and is called');
};

subtest 'callbacks are released once the request ends' => sub {
    for my $end (qw(_mark_complete _mark_disconnected)) {
        my $c = $CLASS->new;
        my $n = 0;    # captured, so each sub is a fresh closure
        my ($gone_cb, $done_cb) = (sub { $n++ }, sub { $n-- });
        $c->on_disconnect($gone_cb);
        $c->on_complete($done_cb);
        weaken(my $wg = $gone_cb);
        weaken(my $wd = $done_cb);
        undef $gone_cb;
        undef $done_cb;
        ok($wg && $wd, "$end: callbacks kept while in flight");
        $c->$end('client_closed');
        ok(!$wg, "$end: on_disconnect callback freed");
        ok(!$wd, "$end: on_complete callback freed");
    }
};

subtest 'disconnect_future: lazy, cached and loop-made' => sub {
    my $loop = Local::Loop->new;
    my $c = $CLASS->new(loop => $loop);
    $c->_mark_response_started;
    $c->on_disconnect(sub { });
    is($loop->{made}, 0, 'no Future made until asked for');

    my $f = $c->disconnect_future;
    isa_ok($f, ['Local::Future'], 'made by the loop');
    is($loop->{made}, 1, 'one Future made');
    ref_is($c->disconnect_future, $f, 'the same Future on a second call');
    is($loop->{made}, 1, 'still one Future');
    ok(!$f->is_ready, 'pending while in flight');

    $c->_mark_disconnected('write_timeout');
    ok($f->is_done, 'done after the disconnect');
    is([$f->get], ['write_timeout'], 'with the reason as its only value');
};

subtest 'disconnect_future asked for after the end' => sub {
    my $c = $CLASS->new;
    $c->_mark_disconnected('body_too_large');
    my $f = $c->disconnect_future;
    ok($f->is_done, 'already done');
    is([$f->get], ['body_too_large'], 'with the reason');

    my $d = $CLASS->new;
    $d->_mark_complete;
    my $g = $d->disconnect_future;
    isa_ok($g, ['Future'], 'a Future even after completion');
    ok(!$g->is_ready, 'but it never resolves');
};

subtest 'a cancelled disconnect_future is replaced' => sub {
    my $c = $CLASS->new;
    my $f = $c->disconnect_future;
    my $other = Future->done('event');
    my $race = Future->wait_any($f, $other);
    ok($race->is_ready && $f->is_cancelled, 'wait_any cancelled the loser');

    my $g = $c->disconnect_future;
    ref_is_not($g, $f, 'a fresh Future is handed out');
    ok(!$g->is_ready, 'and it is pending');
    ref_is($c->disconnect_future, $g, 'the fresh one is cached in turn');

    $c->_mark_disconnected('client_closed');
    ok($g->is_done, 'the fresh one resolves');
    ok($f->is_cancelled, 'the cancelled one is left alone');
};

subtest 'finding the loop through the connection' => sub {
    my $loop = Local::Loop->new;

    my $by_key = { loop => $loop };
    isa_ok($CLASS->new(connection => $by_key)->disconnect_future, ['Local::Future'], 'connection->{loop}');

    {
        package Local::HasLoop;
        sub new  { bless { l => $_[1] }, $_[0] }
        sub loop { $_[0]{l} }
    }
    my $obj = Local::HasLoop->new($loop);
    isa_ok($CLASS->new(connection => $obj)->disconnect_future, ['Local::Future'], 'connection->loop');

    my $via_server = { server => Local::HasLoop->new($loop) };
    isa_ok($CLASS->new(connection => $via_server)->disconnect_future, ['Local::Future'],
        'connection->{server}->loop');

    my $explicit = Local::Loop->new;
    my $c = $CLASS->new(connection => $by_key, loop => $explicit);
    $c->disconnect_future;
    is($explicit->{made}, 1, 'an explicit loop wins over the connection');

    my $none = $CLASS->new(connection => {})->disconnect_future;
    is(ref $none, 'Future', 'plain Future when no loop can be found');
};

subtest 'the connection is held weakly' => sub {
    my $owner = { loop => Local::Loop->new };
    my $c = $CLASS->new(connection => $owner);
    $owner->{state} = $c;    # owner -> state, as the server keeps it
    weaken(my $w = $owner);
    undef $owner;
    ok(!$w, 'the owner was freed despite the state pointing back');
    my $f = $c->disconnect_future;
    is(ref $f, 'Future', 'with the owner gone a plain Future is used');
};

subtest 'works with a real IO::Async loop' => sub {
    my $ok = eval { require IO::Async::Loop; 1 };
    skip_all('IO::Async not installed') unless $ok;
    my $loop = IO::Async::Loop->new;
    my $c = $CLASS->new(loop => $loop);
    my $f = $c->disconnect_future;
    isa_ok($f, ['IO::Async::Future'], 'loop future');
    $loop->later(sub { $c->_mark_disconnected('server_shutdown') });
    is([$f->get], ['server_shutdown'], 'get waits on the loop for the disconnect');
};

done_testing;
