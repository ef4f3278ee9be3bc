package ProcApp;

# The app that the process tests run (through pagi-server, as a file that
# returns ProcApp::app()). It writes "startup PID" and "shutdown PID" to the
# file in T_LOG during lifespan and "slow PID" when a request for /slow
# begins; /slow answers after T_SLOW seconds (default 1.5), anything else
# at once; /block blocks the worker's event loop (sleep) for T_BLOCK
# seconds (default 60), as stuck app code would. T_FAIL_STARTUP=1 refuses
# lifespan startup; T_STARTUP_DELAY=N completes it only after N seconds.
# An SSE request for /sse gets the event "open" and writes
# "sse-gone PID REASON" when its sse.disconnect comes; /sse-flood sends
# events of 64 KiB as fast as $send lets it, writing "flood PID BYTES"
# after each MiB, until T_FLOOD_MB MiB (default 16) went (then
# "flood-done PID BYTES" and sse.close) or the client went; /sse-deaf
# sends "tick" every 0.2 s for ever and never reads $receive.

use strict;
use warnings;

use Future::AsyncAwait;
use IO::Async::Loop;

sub note_line {
    my ($line) = @_;
    my $log = $ENV{T_LOG} or return;
    open my $fh, '>>', $log or die "open $log: $!";
    syswrite $fh, "$line\n";
    close $fh;
}

sub app {
    return async sub {
        my ($scope, $receive, $send) = @_;
        if ($scope->{type} eq 'lifespan') {
            while (1) {
                my $ev = await $receive->();
                if ($ev->{type} eq 'lifespan.startup') {
                    if ($ENV{T_FAIL_STARTUP}) {
                        await $send->({ type => 'lifespan.startup.failed', message => 'startup refused by the test app' });
                        return;
                    }
                    await IO::Async::Loop->new->delay_future(after => $ENV{T_STARTUP_DELAY})
                        if $ENV{T_STARTUP_DELAY};
                    note_line("startup $$");
                    await $send->({ type => 'lifespan.startup.complete' });
                }
                elsif ($ev->{type} eq 'lifespan.shutdown') {
                    note_line("shutdown $$");
                    await $send->({ type => 'lifespan.shutdown.complete' });
                    return;
                }
            }
        }
        return await sse($scope, $receive, $send) if $scope->{type} eq 'sse';
        if ($scope->{path} eq '/block') {
            note_line("block $$");
            sleep($ENV{T_BLOCK} // 60);
        }
        if ($scope->{path} eq '/slow') {
            note_line("slow $$");
            await IO::Async::Loop->new->delay_future(after => $ENV{T_SLOW} // 1.5);
        }
        await $send->({ type => 'http.response.start', status => 200,
            headers => [ [ 'content-type', 'text/plain' ] ] });
        await $send->({ type => 'http.response.body', body => "done $scope->{path} $$" });
    };
}

async sub sse {
    my ($scope, $receive, $send) = @_;
    if ($scope->{path} eq '/sse-deaf') {
        await $send->({ type => 'sse.start' });
        while (1) {
            await IO::Async::Loop->new->delay_future(after => 0.2);
            await $send->({ type => 'sse.send', data => 'tick' });
        }
    }
    my $gone = (async sub {
        while (1) {
            my $ev = await $receive->();
            return $ev->{reason} // '' if $ev->{type} eq 'sse.disconnect';
        }
    })->();
    $gone->on_done(sub { note_line("sse-gone $$ $_[0]") });
    await $send->({ type => 'sse.start' });
    if ($scope->{path} eq '/sse-flood') {
        my ($piece, $sent, $max) = ('x' x 65536, 0, ($ENV{T_FLOOD_MB} // 16) * 1048576);
        while (!$gone->is_ready && $sent < $max) {
            await $send->({ type => 'sse.send', data => $piece });
            $sent += length $piece;
            note_line("flood $$ $sent") unless $sent % 1048576;
        }
        note_line("flood-done $$ $sent");
        await $send->({ type => 'sse.close' }) unless $gone->is_ready;
        return;
    }
    await $send->({ type => 'sse.send', data => 'open' });
    await $gone;
}

1;
