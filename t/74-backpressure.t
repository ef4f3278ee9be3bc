use strict;
use warnings;
use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Async::Loop;
use IO::Select;
use Future::AsyncAwait;
use RawHTTP qw(start_server stop_server pump_until);

# When $send waits for the client, over HTTP/1.1 with a client that does
# not read. As the reference decides: a body event is accepted at once
# unless the backlog it joins has already reached write_high_watermark;
# that one is pending until the backlog falls to write_low_watermark. The
# transport state looks at the backlog after every accepted write, so
# on_high_water fires when a write crosses the mark, not a send later.

# One chunk is over the high mark on its own, and two are more than the
# kernel's socket buffers can hold while the client reads nothing.
my $HIGH  = 65536;
my $CHUNK = 'x' x (2 * wmem_max() + 1_000_000);
my $loop  = IO::Async::Loop->new;
my %rec;

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    my $ts = $scope->{'pagi.transport'};
    my $r  = $rec{ substr $scope->{path}, 1 } = { log => [] };
    my $sent = 0;
    if ($scope->{path} eq '/watched') {
        $ts->on_high_water(sub { push @{ $r->{log} }, "high after $sent" });
        $ts->on_drain(sub { push @{ $r->{log} }, "drain after $sent" });
    }
    await $send->({ type => 'http.response.start', status => 200, headers => [] });
    if ($scope->{path} eq '/paused') {
        # The pattern of TransportState's synopsis: a source paused at the
        # high mark and resumed by on_drain, with no send waiting.
        my $resume = $loop->new_future;
        $ts->on_high_water(sub { push @{ $r->{log} }, 'high' });
        $ts->on_drain(sub { push @{ $r->{log} }, 'drain'; $resume->done });
        my $f = $send->({ type => 'http.response.body', body => $CHUNK, more => 1 });
        $r->{first_ready} = $f->is_ready;
        $r->{paused} = 1;
        await $resume;
        await $send->({ type => 'http.response.body', body => 'end', more => 0 });
        $r->{finished} = 1;
        return;
    }
    my $first = $send->({ type => 'http.response.body', body => $CHUNK, more => 1 });
    $sent++;
    $r->{first_ready} = $first->is_ready;
    await $first;
    my $second = $send->({ type => 'http.response.body', body => $CHUNK, more => 1 });
    $sent++;
    $r->{second_ready} = $second->is_ready;
    # Registered while the backlog is high and nothing has looked at it:
    # the drain to come must still fire it.
    $ts->on_drain(sub { push @{ $r->{log} }, 'late drain' }) if $scope->{path} eq '/late';
    await $second;
    $r->{second_done} = [ @{ $r->{log} } ];
    await $send->({ type => 'http.response.body', body => 'end', more => 0 });
    $r->{finished} = 1;
};

# The most the kernel lets a TCP send buffer grow to (tcp_wmem's third
# number; 4 MiB if it cannot be read).
sub wmem_max {
    open my $fh, '<', '/proc/sys/net/ipv4/tcp_wmem' or return 4 << 20;
    my @n = split ' ', scalar(<$fh>) // '';
    return $n[2] && $n[2] =~ /\A\d+\z/ ? $n[2] : 4 << 20;
}

my $server = start_server($loop, app => $app,
    write_high_watermark => $HIGH, write_low_watermark => 16384);

# A client with a receive buffer of its own size (the kernel may grow it
# to megabytes otherwise) that reads nothing until told.
sub slow_client {
    my ($path) = @_;
    my $c = RawHTTP->new(loop => $loop, port => $server->port);
    setsockopt($c->sock, Socket::SOL_SOCKET(), Socket::SO_RCVBUF(), 262144);
    $c->write("GET $path HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    return $c;
}

# Reads the whole response (at most 20 s) and returns its body
# de-chunked, or undef. It reads as fast as it can, turning the loop
# between reads so that the app can go on.
sub read_all {
    my ($c) = @_;
    my ($buf, $deadline) = ('', time + 20);
    my $sel = IO::Select->new($c->sock);
    while (time < $deadline && substr($buf, -5) ne "0\r\n\r\n") {
        if ($sel->can_read(0.01)) {
            my $n = sysread($c->sock, $buf, 1 << 20, length $buf);
            last if defined $n && $n == 0;
        }
        $loop->loop_once(0);
    }
    my (undef, $body, $complete) = RawHTTP::stream_of($buf);
    return $complete ? $body : undef;
}

subtest 'a send joining a backlog under the mark goes on at once' => sub {
    my $c = slow_client('/watched');
    ok(pump_until($loop, 5, sub { defined $rec{watched}{second_ready} }), 'the app made its second send')
        or return;
    my $r = $rec{watched};
    ok($r->{first_ready}, 'the first send, larger than the mark, was accepted at once: the backlog was empty');
    ok(!$r->{second_ready}, 'the second, joining a backlog at the mark, waits for the client');
    is($r->{log}, ['high after 0'], 'on_high_water fired as the first write crossed the mark');
    # The client does not read: the app stays held.
    pump_until($loop, 0.5, sub { 0 });
    ok(!$r->{second_done}, 'still waiting while the client reads nothing');
    ok(read_all($c) eq $CHUNK x 2 . 'end', 'the client gets every byte, in order');
    ok(pump_until($loop, 5, sub { $r->{finished} }), 'the app finished');
    is($r->{second_done}, ['high after 0', 'drain after 2'],
        'on_drain fired before the waiting send went on');
};

subtest 'on_drain registered while the backlog is high' => sub {
    my $c = slow_client('/late');
    ok(pump_until($loop, 5, sub { defined $rec{late}{second_ready} }), 'the app made its second send')
        or return;
    ok(!$rec{late}{second_ready}, 'the second send waits');
    ok(read_all($c) eq $CHUNK x 2 . 'end', 'the client gets every byte');
    ok(pump_until($loop, 5, sub { $rec{late}{finished} }), 'the app finished');
    is($rec{late}{second_done}, ['late drain'], 'it fired at the drain');
};

subtest 'on_drain after a send that only crossed the mark' => sub {
    my $c = slow_client('/paused');
    ok(pump_until($loop, 5, sub { $rec{paused}{paused} }), 'the app sent its chunk and paused') or return;
    ok($rec{paused}{first_ready}, 'the send went on at once');
    is($rec{paused}{log}, ['high'], 'on_high_water fired');
    ok(read_all($c) eq $CHUNK . 'end', 'the client gets every byte');
    ok($rec{paused}{finished}, 'on_drain resumed the app, which finished');
    is($rec{paused}{log}, ['high', 'drain'], 'on_drain fired once');
};

stop_server($loop, $server);
done_testing;
