use strict;
use warnings;

# PAGI::Server::TransportState on its own: the backlog and mark readers, the
# on_high_water / on_drain hysteresis cycle, the drain hook, failure handling
# and teardown.

use Test2::V0;
use Scalar::Util qw(weaken);

use PAGI::Server::TransportState;

my $CLASS = 'PAGI::Server::TransportState';

# A fake source: a backlog we set by hand and a list of parked drain hooks.
sub source {
    my (%o) = @_;
    my $s = { bytes => $o{bytes} // 0, hooks => [], armed => 0 };
    $s->{ts} = $CLASS->new(
        measure   => sub { $s->{bytes} },
        high      => $o{high} // 1000,
        low       => $o{low} // 200,
        arm_drain => sub { $s->{armed}++; push @{ $s->{hooks} }, $_[0] },
    );
    return $s;
}

# Lets the backlog fall and calls the parked hooks, as the server would.
sub drain_to {
    my ($s, $bytes) = @_;
    $s->{bytes} = $bytes;
    my @h = splice @{ $s->{hooks} };
    $_->() for @h;
}

sub warnings_of {
    my ($code) = @_;
    my @w;
    local $SIG{__WARN__} = sub { push @w, $_[0] };
    $code->();
    return \@w;
}

subtest 'buffered_amount reads the source every time' => sub {
    my $s = source(bytes => 0);
    my $t = $s->{ts};
    is($t->buffered_amount, 0, 'empty');
    $s->{bytes} = 1234;
    is($t->buffered_amount, 1234, 'follows the source');
    $s->{bytes} = 7;
    is($t->buffered_amount, 7, 'and again');
};

subtest 'buffered_amount is a non-negative integer' => sub {
    my $v;
    my $t = $CLASS->new(measure => sub { $v });
    $v = undef;  is($t->buffered_amount, 0,  'undef -> 0');
    $v = -5;     is($t->buffered_amount, 0,  'negative -> 0');
    $v = 10.75;  is($t->buffered_amount, 10, 'fraction truncated');
    $v = '42';   is($t->buffered_amount, 42, 'numeric string');
};

subtest 'a failing measure reads as 0 and warns' => sub {
    my $t = $CLASS->new(measure => sub { die "gone\n" }, high => 10);
    my $n;
    my $w = warnings_of(sub { $n = $t->buffered_amount });
    is($n, 0, 'reported as 0');
    like($w->[0], qr/measure failed: gone/, 'warned');
    my $lived;
    warnings_of(sub { $lived = eval { $t->_check_watermarks; 1 } });
    ok($lived, '_check_watermarks survives a failing measure');
};

subtest 'marks as values or code' => sub {
    my $t = $CLASS->new(high => 65536, low => 16384);
    is([$t->high_water_mark, $t->low_water_mark], [65536, 16384], 'plain values');

    my ($h, $l) = (100, 50);
    my $u = $CLASS->new(high => sub { $h }, low => sub { $l });
    is([$u->high_water_mark, $u->low_water_mark], [100, 50], 'from code');
    ($h, $l) = (300, 30);
    is([$u->high_water_mark, $u->low_water_mark], [300, 30], 'read live');

    my $bad = $CLASS->new(high => sub { die "no\n" });
    my $v = 'unset';
    my $w = warnings_of(sub { $v = $bad->high_water_mark });
    is($v, undef, 'a failing mark source reads as undef');
    like($w->[0], qr/watermark source failed/, 'and warns');
};

subtest 'nothing given, nothing known' => sub {
    my $t = $CLASS->new;
    is($t->buffered_amount, 0, 'backlog 0');
    is($t->high_water_mark, undef, 'no high mark');
    is($t->low_water_mark, undef, 'no low mark');
    my $fired = 0;
    $t->on_high_water(sub { $fired++ });
    $t->_check_watermarks;
    is($fired, 0, 'no high mark, no high-water event');
};

subtest 'constructor checks its code arguments' => sub {
    like(dies { $CLASS->new(measure => 5) }, qr/'measure' must be a code reference/, 'measure');
    like(dies { $CLASS->new(arm_drain => []) }, qr/'arm_drain' must be a code reference/, 'arm_drain');
    ok(lives { $CLASS->new(measure => undef, arm_drain => undef) }, 'undef is fine');
};

subtest 'one full cycle and a second one' => sub {
    my $s = source(bytes => 0, high => 1000, low => 200);
    my $t = $s->{ts};
    my @log;
    $t->on_high_water(sub { push @log, 'high:' . scalar @_ });
    $t->on_drain(sub { push @log, 'drain:' . scalar @_ });

    $t->_check_watermarks;
    is(\@log, [], 'below the mark: nothing');

    $s->{bytes} = 999;
    $t->_check_watermarks;
    is(\@log, [], 'one byte short: nothing');

    $s->{bytes} = 1000;
    $t->_check_watermarks;
    is(\@log, ['high:0'], 'reaching the mark exactly fires, with no arguments');
    is($s->{armed}, 1, 'the drain hook was armed once');

    $s->{bytes} = 5000;
    $t->_check_watermarks;
    is(\@log, ['high:0'], 'edge-triggered: no second high event');
    is($s->{armed}, 1, 'and no second arming');

    drain_to($s, 100);
    is(\@log, ['high:0', 'drain:0'], 'the hook fired on_drain');

    $s->{bytes} = 1500;
    $t->_check_watermarks;
    is(\@log, ['high:0', 'drain:0', 'high:0'], 'the cycle starts again');
    is($s->{armed}, 2, 'armed again');
    drain_to($s, 0);
    is(\@log, ['high:0', 'drain:0', 'high:0', 'drain:0'], 'second drain');
};

subtest 'hysteresis: between the marks nothing changes' => sub {
    my $s = source(bytes => 0, high => 1000, low => 200);
    my $t = $s->{ts};
    my @log;
    $t->on_high_water(sub { push @log, 'high' });
    $t->on_drain(sub { push @log, 'drain' });

    $s->{bytes} = 1000; $t->_check_watermarks;
    $s->{bytes} = 500;  $t->_check_watermarks;
    $s->{bytes} = 200;  $t->_check_watermarks;
    is(\@log, ['high'], 'at or above the low mark the state stays high');
    $s->{bytes} = 199;  $t->_check_watermarks;
    is(\@log, ['high', 'drain'], 'under the low mark a check notices the drain');
    $s->{bytes} = 900;  $t->_check_watermarks;
    is(\@log, ['high', 'drain'], 'back under high: no new event');

    drain_to($s, 0);
    is(\@log, ['high', 'drain'], 'the hook of the finished cycle does nothing');
};

subtest 'stale and repeated drain hooks' => sub {
    my $s = source(bytes => 0, high => 100, low => 10);
    my $t = $s->{ts};
    my ($h, $d) = (0, 0);
    $t->on_high_water(sub { $h++ });
    $t->on_drain(sub { $d++ });

    $s->{bytes} = 100; $t->_check_watermarks;
    my ($first) = @{ $s->{hooks} };
    $first->();
    $first->();
    is([$h, $d], [1, 1], 'calling a hook twice drains once');

    $s->{hooks} = [];
    $s->{bytes} = 150; $t->_check_watermarks;
    is([$h, $d], [2, 1], 'second crossing');
    $first->();
    is([$h, $d], [2, 1], 'the hook of the first cycle cannot end the second');
    $s->{hooks}[0]->();
    is([$h, $d], [2, 2], 'the current hook can');
};

subtest 'on_drain does not fire at registration or without a crossing' => sub {
    my $s = source(bytes => 0, high => 100, low => 10);
    my $t = $s->{ts};
    my $d = 0;
    $t->on_drain(sub { $d++ });
    is($d, 0, 'not at registration');
    $t->_check_watermarks;
    $t->_drained;
    is($d, 0, 'nor on a check or a drain report while never high');
};

subtest 'on_high_water registered late' => sub {
    my $s = source(bytes => 5000, high => 1000, low => 200);
    my $t = $s->{ts};
    my @log;
    $t->on_high_water(sub { push @log, 'a' });
    is(\@log, ['a'], 'over the mark but unchecked: registration notices');
    is($s->{armed}, 1, 'and arms the drain hook');

    $t->on_high_water(sub { push @log, 'b' });
    is(\@log, ['a', 'b'], 'already high: only the newcomer runs');
    is($s->{armed}, 1, 'no extra arming');

    my $quiet = source(bytes => 10, high => 1000);
    my $n = 0;
    $quiet->{ts}->on_high_water(sub { $n++ });
    is($n, 0, 'below the mark: registration does not fire');
};

subtest 'callbacks run in order' => sub {
    my $s = source(bytes => 0, high => 10, low => 5);
    my $t = $s->{ts};
    my @order;
    for my $i (1 .. 3) {
        $t->on_high_water(sub { push @order, "h$i" });
        $t->on_drain(sub { push @order, "d$i" });
    }
    $s->{bytes} = 10; $t->_check_watermarks;
    drain_to($s, 0);
    is(\@order, [qw(h1 h2 h3 d1 d2 d3)], 'registration order for both kinds');
};

subtest 'chaining' => sub {
    my $t = $CLASS->new;
    ref_is($t->on_high_water(sub { }), $t, 'on_high_water returns the object');
    ref_is($t->on_drain(sub { }), $t, 'on_drain returns the object');
    like(dies { $t->on_drain('x') }, qr/on_drain expects a code reference/, 'on_drain wants code');
    like(dies { $t->on_high_water(undef) }, qr/on_high_water expects a code reference/,
        'on_high_water wants code');
};

subtest 'failing callbacks and hooks become warnings' => sub {
    my $s = source(bytes => 0, high => 10, low => 5);
    my $t = $s->{ts};
    my ($h2, $d2) = (0, 0);
    $t->on_high_water(sub { die "high broke\n" });
    $t->on_high_water(sub { $h2++ });
    $t->on_drain(sub { die "drain broke\n" });
    $t->on_drain(sub { $d2++ });

    $s->{bytes} = 10;
    my $lived;
    my $w = warnings_of(sub { $lived = eval { $t->_check_watermarks; 1 } });
    ok($lived, '_check_watermarks did not die');
    is($h2, 1, 'the second high-water callback ran');
    like($w->[0], qr/on_high_water callback error: high broke/, 'warned');

    $w = warnings_of(sub { $lived = eval { drain_to($s, 0); 1 } });
    ok($lived, 'the drain hook did not die');
    is($d2, 1, 'the second drain callback ran');
    like($w->[0], qr/on_drain callback error: drain broke/, 'warned');

    $w = warnings_of(sub { $lived = eval { $t->on_high_water(sub { die "late\n" }); 1 } });
    ok($lived, 'registration that fires a dying callback does not die');
    is($w, [], 'nothing fired while below the mark');

    my $u = $CLASS->new(measure => sub { 50 }, high => 10, arm_drain => sub { die "no hook\n" });
    my $hit = 0;
    $w = warnings_of(sub { $lived = eval { $u->on_high_water(sub { $hit++ }); 1 } });
    ok($lived, 'a dying arm_drain does not escape');
    is($hit, 1, 'the high-water callback still ran');
    like($w->[0], qr/arm_drain failed: no hook/, 'warned about the hook');
};

subtest 'a drain hook that fires at once' => sub {
    my $bytes = 0;
    my $t = $CLASS->new(
        measure   => sub { $bytes },
        high      => 10,
        low       => 5,
        arm_drain => sub { $bytes = 0; $_[0]->() },    # already written out
    );
    my @log;
    $t->on_high_water(sub { push @log, 'high' });
    $t->on_drain(sub { push @log, 'drain' });
    $bytes = 20;
    $t->_check_watermarks;
    is(\@log, ['high', 'drain'], 'high first, then drain, once each');
    $bytes = 20;
    $t->_check_watermarks;
    is(\@log, [qw(high drain high drain)], 'and the next crossing works again');
};

subtest 'no drain hook: the server reports drains itself' => sub {
    my $bytes = 0;
    my $t = $CLASS->new(measure => sub { $bytes }, high => 10, low => 5);
    my @log;
    $t->on_high_water(sub { push @log, 'high' });
    $t->on_drain(sub { push @log, 'drain' });
    $bytes = 10;
    $t->_check_watermarks;
    $t->_drained;
    is(\@log, ['high', 'drain'], '_drained ends the cycle');
    $t->_drained;
    is(\@log, ['high', 'drain'], 'a second report does nothing');
    $t->_check_watermarks;
    is(\@log, ['high', 'drain', 'high'], 'still over the mark: a new cycle begins');
};

subtest 'callbacks added while callbacks run' => sub {
    my $s = source(bytes => 0, high => 10, low => 5);
    my $t = $s->{ts};
    my @log;
    $t->on_high_water(sub {
        push @log, 'outer';
        $t->on_high_water(sub { push @log, 'inner' });
    });
    $s->{bytes} = 10;
    $t->_check_watermarks;
    is(\@log, ['outer', 'inner'], 'the one added during the event runs once, at once');
};

subtest '_detach ends it all' => sub {
    my $s = source(bytes => 0, high => 1000, low => 200);
    my $t = $s->{ts};
    my ($hcb, $dcb) = (sub { $s->{h}++ }, sub { $s->{d}++ });
    $t->on_high_water($hcb);
    $t->on_drain($dcb);
    weaken(my $wh = $hcb);
    weaken(my $wd = $dcb);
    undef $hcb;
    undef $dcb;

    $s->{bytes} = 1000;
    $t->_check_watermarks;
    is($s->{h}, 1, 'high before detaching');
    my ($hook) = @{ $s->{hooks} };

    $t->_detach;
    ok(!$wh && !$wd, 'callbacks freed');
    is($t->buffered_amount, 0, 'backlog reads 0');
    is([$t->high_water_mark, $t->low_water_mark], [1000, 200], 'marks keep their values');

    $hook->();
    is($s->{d}, undef, 'a hook armed before detaching does nothing');
    my $late = 0;
    $t->on_high_water(sub { $late++ })->on_drain(sub { $late++ });
    $t->_check_watermarks;
    $t->_drained;
    is($late, 0, 'callbacks added afterwards never run');
    my ($lh, $ld) = (sub { $late++ }, sub { $late-- });
    $t->on_high_water($lh)->on_drain($ld);
    weaken(my $wlh = $lh);
    weaken(my $wld = $ld);
    undef $lh;
    undef $ld;
    ok(!$wlh, 'a late on_high_water callback is not even kept');
    ok(!$wld, 'nor a late on_drain callback');
    ok(lives { $t->_detach }, 'detaching twice is harmless');
};

subtest 'the hook does not keep the object alive' => sub {
    my $s = source(bytes => 0, high => 10, low => 5);
    $s->{bytes} = 10;
    $s->{ts}->_check_watermarks;
    my ($hook) = @{ $s->{hooks} };
    weaken(my $w = $s->{ts});
    delete $s->{ts};
    ok(!$w, 'freed although a hook is still parked');
    ok(lives { $hook->() }, 'calling the orphaned hook is harmless');
};

done_testing;
