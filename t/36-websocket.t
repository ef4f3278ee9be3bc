use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Future;
use Future::AsyncAwait;
use Scalar::Util qw(blessed);
use Time::HiRes qw(time);
use RawHTTP qw(start_server pump_until);
use RawWS;

# WebSocket on the wire: the handshake, frames both ways, the close
# handshake from either side, protocol violations and their close codes,
# the limits (frame size, receive queue, idle timeout, keepalive), write
# backpressure, server shutdown, denial responses and the app's errors.
# The client is RawWS (frames built and parsed by hand) on the same loop.

$SIG{PIPE} = 'IGNORE';

my $loop = IO::Async::Loop->new;

my @warnings;
$SIG{__WARN__} = sub { push @warnings, $_[0] };

my %rec;     # what each app run saw, keyed by the t= query parameter
my %hold;    # futures the test completes to let an app go on

my $FLOOD = 200;
sub flood_msg { my ($i) = @_; return pack('N', $i) . chr($i % 256) x (65536 - 4) }

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    if ($scope->{type} eq 'http') {
        await $send->({ type => 'http.response.start', status => 200,
                        headers => [['content-type', 'text/plain'], ['content-length', 2]] });
        await $send->({ type => 'http.response.body', body => 'OK' });
        return;
    }
    return unless $scope->{type} eq 'websocket';
    my ($t) = ($scope->{query_string} // '') =~ /(?:\A|&)t=(\w+)/;
    $t //= 'none';
    my $r = $rec{$t} = { scope => $scope, events => [] };
    my $path = $scope->{path};

    $r->{connect} = await $receive->();

    if ($path eq '/reject') {
        await $send->({ type => 'websocket.close' });
        $r->{finished} = 1;
        return;
    }
    if ($path eq '/deny') {
        await $send->({ type => 'websocket.http.response.start', status => 401,
                        headers => [['www-authenticate', 'Bearer']] });
        await $send->({ type => 'websocket.http.response.body', body => 'no', more => 1 });
        await $send->({ type => 'websocket.http.response.body', body => '!' });
        $r->{finished} = 1;
        return;
    }
    die "early boom\n" if $path eq '/die-early';
    if ($path eq '/deny-open' || $path eq '/deny-die') {
        # A denial the app never finishes.
        await $send->({ type => 'websocket.http.response.start', status => 401, headers => [] });
        if ($path eq '/deny-die') {
            await $send->({ type => 'websocket.http.response.body', body => 'x', more => 1 });
            die "denial boom\n";
        }
        return;
    }

    if ($path eq '/misc') {
        # A subprotocol that is not a token is refused before anything is sent.
        my $f = eval { $send->({ type => 'websocket.accept', subprotocol => 'a b' }) };
        $r->{bad_subprotocol} = $@ || ($f && $f->is_failed ? scalar $f->failure : '');
    }

    my %accept = (type => 'websocket.accept');
    if (grep { $_ eq 'chat' } @{ $scope->{subprotocols} || [] }) {
        $accept{subprotocol} = 'chat';
        $accept{headers}     = [['X-Extra', '1']];
    }
    await $send->(\%accept);
    $r->{accepted} = 1;

    return if $path eq '/return';
    die "late boom\n" if $path eq '/die-late';

    if ($path eq '/close-then-send') {
        await $send->({ type => 'websocket.close', code => 4001 });
        await $send->({ type => 'websocket.send', text => 'after close' });
    }
    if ($path eq '/server-close') {
        await $send->({ type => 'websocket.close', code => 4000, reason => 'done' });
    }
    if ($path eq '/hold') {
        await $hold{$t};
    }
    if ($path eq '/keepalive') {
        await $send->({ type => 'websocket.keepalive', interval => 0.2, timeout => 0.3 });
    }
    if ($path eq '/flood') {
        $r->{sent} = 0;
        $r->{pending} = 0;
        for my $i (1 .. $FLOOD) {
            my $f = $send->({ type => 'websocket.send', bytes => flood_msg($i) });
            $r->{pending}++ unless $f->is_ready;
            await $f;
            $r->{sent} = $i;
        }
        $r->{flood_done} = 1;
    }
    if ($path eq '/misc') {
        for ([no_payload => { type => 'websocket.send' }],
             [unknown    => { type => 'websocket.bogus' }]) {
            my ($name, $ev) = @$_;
            my $f = eval { $send->($ev) };
            $r->{$name} = $@ || ($f && $f->is_failed ? scalar $f->failure : '');
        }
    }

    while (1) {
        my $ev = await $receive->();
        push @{ $r->{events} }, $ev;
        if ($ev->{type} eq 'websocket.disconnect') {
            $r->{disconnect} = $ev;
            last;
        }
        if ($path eq '/echo') {
            await $send->({ type => 'websocket.send',
                            (exists $ev->{text} ? (text => $ev->{text}) : (bytes => $ev->{bytes})) });
        }
    }

    if ($path eq '/misc') {
        my $f = eval { $send->({ type => 'websocket.send', text => 'too late' }) };
        $r->{late_error} = $@;
        $r->{late_future} = $f;
    }
    $r->{finished} = 1;
};

sub stop {
    my ($server) = @_;
    my $f = $server->shutdown;
    pump_until($loop, 5, sub { $f->is_ready });
    ok($f->is_ready, 'server shut down') or return;
    $loop->remove($server);
}

sub ws {
    my ($server, $path, %opt) = @_;
    return RawWS->start(loop => $loop, port => $server->port, path => $path, %opt);
}

# Opens a connection and expects a 101; returns the client.
sub accepted {
    my ($server, $path, $label, %opt) = @_;
    my $c = ws($server, $path, %opt);
    my $r = $c->handshake;
    is($r && $r->{status}, 101, "$label: 101 Switching Protocols")
        or diag('error: ' . ($c->{err} // ($c->{eof} ? 'eof' : 'timeout')) . ' buf: ' . $c->{buf});
    return $c;
}

sub wait_disconnect {
    my ($t, $timeout) = @_;
    pump_until($loop, $timeout // 3, sub { $rec{$t} && $rec{$t}{disconnect} });
    return $rec{$t} && $rec{$t}{disconnect};
}


my $server = start_server($loop, app => $app);

subtest 'handshake and scope' => sub {
    %rec = ();
    my $c = ws($server, '/echo?t=hs', protocols => 'chat, superchat');
    my $resp = $c->handshake;
    ok($resp, 'handshake answered') or return;
    is($resp->{status}, 101, 'status 101');
    like($resp->{head_raw}, qr{\AHTTP/1\.1 101 Switching Protocols\r\n}, 'status line');
    is($resp->{header}{'sec-websocket-accept'}, 's3pPLMBiTxaQ9kYGzzhZRbK+xOo=', 'Sec-WebSocket-Accept');
    is($resp->{header}{'sec-websocket-protocol'}, 'chat', 'Sec-WebSocket-Protocol: chat');
    is($resp->{header}{'x-extra'}, '1', 'X-Extra: 1');
    like($resp->{header}{upgrade} // '', qr/\Awebsocket\z/i, 'Upgrade: websocket');

    my $s = $rec{hs}{scope};
    ok($s, 'app got a scope') or return;
    is($s->{type}, 'websocket', 'type websocket');
    ok(!exists $s->{method}, 'no method key');
    is($s->{scheme}, 'ws', 'scheme ws');
    is($s->{path}, '/echo', 'path');
    is($s->{query_string}, 't=hs', 'query_string');
    is($s->{subprotocols}, ['chat', 'superchat'], 'subprotocols parsed');
    ok(ref $s->{headers} eq 'ARRAY', 'headers arrayref');
    is([ grep { $_->[0] ne lc $_->[0] } @{ $s->{headers} || [] } ], [], 'header names lower-cased');
    ok((grep { $_->[0] eq 'sec-websocket-key' && $_->[1] eq $RawWS::KEY } @{ $s->{headers} || [] }),
        'sec-websocket-key header present');
    is(ref $s->{extensions}{'websocket.http.response'}, 'HASH', 'websocket.http.response extension');
    ok(blessed($s->{'pagi.transport'}), 'pagi.transport object');
    is($rec{hs}{connect}, { type => 'websocket.connect' }, 'first receive: websocket.connect');

    $c->send_close(1000, '');
    $c->wait_close(3);

    my $c2 = accepted($server, '/echo?t=noproto', 'no subprotocols');
    is($rec{noproto} && $rec{noproto}{scope}{subprotocols}, [], 'subprotocols empty when absent');
    $c2->send_close(1000, '');
    $c2->wait_close(3);
};

subtest 'echo: text, binary, fragments, ping, large; unmasked refused' => sub {
    %rec = ();
    my $c = accepted($server, '/echo?t=echo', 'echo');
    my $r = $rec{echo};

    my $chars = "h\x{e9}llo";
    my $bytes = $chars;
    utf8::encode($bytes);
    $c->send_frame(0x81, $bytes);
    my $f = $c->read_frame(3);
    my $ev = $r->{events}[0];
    is($ev && $ev->{type}, 'websocket.receive', 'websocket.receive');
    is($ev && $ev->{text}, $chars, 'text decoded');
    is(length($ev && $ev->{text} // ''), 5, 'five characters');
    ok($ev && utf8::is_utf8($ev->{text}), 'character string');
    ok(!exists $ev->{bytes}, 'no bytes key on a text message');
    is($f && $f->{first}, 0x81, 'echo is a final text frame') or diag(RawWS::describe($f));
    ok($f && !$f->{masked}, 'server frame unmasked');
    is($f && $f->{payload}, $bytes, 'payload is the UTF-8 bytes');

    $c->send_frame(0x82, "\x00\xff\x10");
    $f = $c->read_frame(3);
    $ev = $r->{events}[1];
    is($ev && $ev->{bytes}, "\x00\xff\x10", 'bytes exact');
    ok(!exists $ev->{text}, 'no text key on a binary message');
    is($f && $f->{first}, 0x82, 'echo is a final binary frame') or diag(RawWS::describe($f));
    is($f && $f->{payload}, "\x00\xff\x10", 'binary payload exact');

    $c->write(RawWS::build(0x01, 'frag1-')
            . RawWS::build(0x89, 'pp')
            . RawWS::build(0x00, 'frag2-')
            . RawWS::build(0x80, 'frag3'));
    my @got = grep { $_ } map { $c->read_frame(3) } 1 .. 2;
    my ($pong) = grep { $_->{opcode} == 0xA } @got;
    my ($msg)  = grep { $_->{opcode} == 0x1 } @got;
    ok($pong, 'ping answered with a pong') or diag(join '; ', map { RawWS::describe($_) } @got);
    is($pong && $pong->{payload}, 'pp', 'pong carries the ping payload');
    is($msg && $msg->{payload}, 'frag1-frag2-frag3', 'fragments echoed as one message');
    is(scalar @{ $r->{events} }, 3, 'app got one message for three fragments');
    is($r->{events}[2] && $r->{events}[2]{text}, 'frag1-frag2-frag3', 'joined text');

    my $big = join '', map { chr(($_ * 7) % 256) } 1 .. 60000;
    $c->send_frame(0x82, $big);
    $f = $c->read_frame(5);
    is($f && $f->{opcode}, 2, 'large message echoed as binary') or diag(RawWS::describe($f));
    ok($f && $f->{payload} eq $big, '60000 bytes round-trip byte-exact')
        or diag('got ' . length($f ? $f->{payload} : ''));

    # RFC 6455 section 5.1: a client frame that is not masked fails the
    # connection (the reference server took them).
    $c->send_frame(0x81, 'plain', mask => 0);
    $f = $c->read_frame(3);
    is($f && $f->{code}, 1002, 'an unmasked frame: close 1002') or diag(RawWS::describe($f));
    wait_disconnect('echo');
    is([ grep { ($_->{text} // '') eq 'plain' } @{ $r->{events} } ], [],
        'the unmasked message never reached the app');

    $c->send_close(1000, '');
    $c->wait_close(3);
};

subtest 'close handshake from the client' => sub {
    %rec = ();
    my $c = accepted($server, '/echo?t=cclose', 'client close');
    $c->send_close(1000, 'bye');
    my $f = $c->read_nonping(3);
    is($f && $f->{opcode}, 8, 'server answers with a close frame') or diag(RawWS::describe($f));
    is($f && $f->{code}, 1000, 'code 1000');
    is($f && $f->{reason}, 'bye', 'reason bye');
    my $d = wait_disconnect('cclose');
    is($d, { type => 'websocket.disconnect', code => 1000, reason => 'bye' }, 'app: disconnect 1000 bye');
    like($c->wait_close(3), qr/^(eof|reset)$/, 'server closes the TCP connection');
};

subtest 'close from the server' => sub {
    %rec = ();
    my $c = accepted($server, '/server-close?t=sclose', 'server close');
    my $f = $c->read_nonping(3);
    is($f && $f->{opcode}, 8, 'close frame') or diag(RawWS::describe($f));
    is($f && $f->{code}, 4000, 'code 4000');
    is($f && $f->{reason}, 'done', "reason 'done'");
    $c->send_close(4000, '');
    my $d = wait_disconnect('sclose');
    is($d && $d->{type}, 'websocket.disconnect', 'app: websocket.disconnect');
    is($d && $d->{code}, 4000, 'app: code 4000');
    like($c->wait_close(3), qr/^(eof|reset)$/, 'connection closed afterwards');
};

subtest 'protocol errors' => sub {
    %rec = ();
    my @cases = (
        [utf8      => 1007, RawWS::build(0x81, "\xff\xfe"),          'invalid UTF-8 text'],
        [opcode3   => 1002, RawWS::build(0x83, ''),                  'reserved opcode 3'],
        [rsv1      => 1002, RawWS::build(0xC1, 'x'),                 'RSV1 set'],
        [bigping   => 1002, RawWS::build(0x89, 'p' x 126),           'ping with 126 bytes'],
        [close1    => 1002, RawWS::build(0x88, 'x'),                 'close with a 1-byte payload'],
        [close1005 => 1002, RawWS::build(0x88, pack('n', 1005)),     'close code 1005 on the wire'],
        [cont      => 1002, RawWS::build(0x80, 'x'),                 'unexpected continuation'],
    );
    for my $case (@cases) {
        my ($t, $code, $wire, $label) = @$case;
        my $c = accepted($server, "/echo?t=$t", $label);
        $c->write($wire);
        my $f = $c->read_nonping(3);
        is($f && $f->{opcode}, 8, "$label: close frame") or diag(RawWS::describe($f));
        is($f && $f->{code}, $code, "$label: code $code");
        like($c->wait_close(3), qr/^(eof|reset)$/, "$label: connection closed");
        my $d = wait_disconnect($t);
        is($d && $d->{code}, $code, "$label: app sees code $code");
        is($d && $d->{reason}, 'protocol_error', "$label: app sees reason protocol_error");
    }
};

subtest 'max_ws_frame_size' => sub {
    %rec = ();
    my $small = start_server($loop, app => $app, max_ws_frame_size => 1024);

    my $c = accepted($small, '/echo?t=big', 'oversized frame');
    $c->send_frame(0x82, 'b' x 2000);
    my $f = $c->read_nonping(3);
    is($f && $f->{opcode}, 8, 'close frame') or diag(RawWS::describe($f));
    is($f && $f->{code}, 1009, 'code 1009');
    like($c->wait_close(3), qr/^(eof|reset)$/, 'connection closed');
    my $d = wait_disconnect('big');
    is($d && $d->{code}, 1009, 'app: code 1009');
    is($d && $d->{reason}, 'body_too_large', 'app: reason body_too_large');

    my $ok = accepted($small, '/echo?t=fits', 'frame under the limit');
    my $payload = 'f' x 1000;
    $ok->send_frame(0x82, $payload);
    $f = $ok->read_frame(3);
    is($f && $f->{payload}, $payload, '1000-byte frame echoed') or diag(RawWS::describe($f));
    $ok->send_close(1000, '');
    $ok->wait_close(3);

    my $huge = accepted($small, '/echo?t=huge', 'claimed 2^64-1 length');
    $huge->write("\x81\x7F" . ("\xFF" x 8));
    my $hf = $huge->read_nonping(3);
    note('on a 2^64-1 length: ' . RawWS::describe($hf));
    like($huge->wait_close(3), qr/^(eof|reset)$/, 'connection closed');
    my ($resp) = RawHTTP->request($loop, $small->port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    is($resp && $resp->{status}, 200, 'server still answers HTTP');
    is($resp && $resp->{body}, 'OK', 'body OK');

    stop($small);
};

subtest 'denials and app failures' => sub {
    %rec = ();
    @warnings = ();

    my $c = ws($server, '/reject?t=reject');
    my $r = $c->handshake;
    is($r && $r->{status}, 403, 'close before accept: 403');
    like($r && $r->{head_raw}, qr{\AHTTP/1\.1 403}, 'status line HTTP/1.1 403');
    like($c->wait_close(3), qr/^(eof|reset)$/, '403: connection closed');

    $c = ws($server, '/deny?t=deny');
    $r = $c->handshake;
    is($r && $r->{status}, 401, 'denial response: 401');
    is($r && $r->{header}{'www-authenticate'}, 'Bearer', 'www-authenticate: Bearer');
    is($r && $r->{header}{'content-length'}, 3, 'Content-Length: 3');
    is($r && $r->{body}, 'no!', "body 'no!'");
    note('after the denial: ' . $c->wait_close(3));

    $c = ws($server, '/die-early?t=early');
    $r = $c->handshake;
    is($r && $r->{status}, 500, 'app dies before accepting: 500');
    pump_until($loop, 1, sub { grep { /PAGI application error \(WebSocket\)/ } @warnings });
    ok((grep { /PAGI application error \(WebSocket\).*early boom/s } @warnings),
        'warning "PAGI application error (WebSocket)"') or diag("warnings: @warnings");

    $c = accepted($server, '/return?t=return', 'app returns after accept');
    my $f = $c->read_nonping(3);
    is($f && $f->{opcode}, 8, 'close frame') or diag(RawWS::describe($f));
    is($f && $f->{code}, 1000, 'code 1000');
    $c->send_close(1000, '');
    $c->wait_close(3);

    @warnings = ();
    $c = accepted($server, '/die-late?t=late', 'app dies after accept');
    $f = $c->read_nonping(3);
    is($f && $f->{opcode}, 8, 'close frame') or diag(RawWS::describe($f));
    is($f && $f->{code}, 1011, 'code 1011');
    $c->wait_close(3);
    pump_until($loop, 1, sub { grep { /late boom/ } @warnings });
    ok((grep { /PAGI application error \(WebSocket\).*late boom/s } @warnings),
        'warning for the app dying after accept') or diag("warnings: @warnings");
};

subtest 'unfinished denials and data after close' => sub {
    %rec = ();
    my $c = ws($server, '/deny-open?t=dopen');
    my $r = $c->handshake;
    is($r && $r->{status}, 401, 'denial started, app returned: the 401 goes out');
    is($r && $r->{body}, '', 'with an empty body');

    $c = ws($server, '/deny-die?t=ddie');
    $r = $c->handshake;
    is($r && $r->{status}, 500, 'denial started, app died: 500');

    $c = accepted($server, '/close-then-send?t=cts', 'close then send');
    my $f = $c->read_nonping(3);
    is($f && $f->{code}, 4001, 'close frame 4001') or diag(RawWS::describe($f));
    $c->send_close(4001, '');
    $c->wait_close(3);
    my @after;
    while (my $g = $c->_take_frame) { push @after, $g->{opcode} }
    is(\@after, [], 'no frame follows the close frame');
};

subtest 'client drops the connection' => sub {
    %rec = ();
    my $c = accepted($server, '/echo?t=drop', 'drop');
    $c->close;
    my $d = wait_disconnect('drop');
    is($d && $d->{code}, 1006, 'app: code 1006');
    is($d && $d->{reason}, 'client_closed', 'app: reason client_closed');
};

subtest 'max_receive_queue' => sub {
    %rec = ();
    my $qs = start_server($loop, app => $app, max_receive_queue => 3);
    $hold{queue} = Future->new;
    my $c = accepted($qs, '/hold?t=queue', 'queue');
    $c->write(join '', map { RawWS::build(0x81, "m$_") } 1 .. 5);
    my $f = $c->read_nonping(3);
    is($f && $f->{opcode}, 8, 'close frame') or diag(RawWS::describe($f));
    is($f && $f->{code}, 1008, 'code 1008');
    is($f && $f->{reason}, 'Message queue overflow', "reason 'Message queue overflow'");
    note('connection after the overflow: ' . $c->wait_close(2));

    $hold{queue}->done;
    wait_disconnect('queue');
    my @ev = @{ $rec{queue}{events} };
    is([ map { $_->{text} } grep { $_->{type} eq 'websocket.receive' } @ev ], ['m1', 'm2', 'm3'],
        'the three queued messages are delivered');
    is($ev[-1], { type => 'websocket.disconnect', code => 1008, reason => 'queue_overflow' },
        'then disconnect 1008 queue_overflow');
    is(scalar @ev, 4, 'nothing else');
    stop($qs);
};

subtest 'ws_idle_timeout' => sub {
    %rec = ();
    @warnings = ();
    my $is = start_server($loop, app => $app, ws_idle_timeout => 0.5, quiet => 0, log_level => 'warn');
    my $c = accepted($is, '/echo?t=idle', 'idle');
    my $t0 = time;
    my $how = $c->wait_close(4);
    my $took = time - $t0;
    like($how, qr/^(eof|reset)$/, 'server closed the idle connection') or diag($how);
    ok($took >= 0.3 && $took <= 3, 'after about 0.5 s') or diag(sprintf('closed after %.3f s', $took));
    note(sprintf('idle close after %.3f s', $took));
    my $d = wait_disconnect('idle');
    is($d && $d->{code}, 1006, 'app: code 1006');
    is($d && $d->{reason}, 'idle_timeout', 'app: reason idle_timeout');
    pump_until($loop, 1, sub { grep { /WebSocket idle timeout/ } @warnings });
    ok((grep { /WebSocket idle timeout/ } @warnings), 'warning logged') or diag("warnings: @warnings");
    stop($is);
};

subtest 'websocket.keepalive' => sub {
    %rec = ();
    my $c = accepted($server, '/keepalive?t=ka', 'keepalive');
    my $f = $c->read_frame(2);
    is($f && $f->{opcode}, 9, 'a ping arrives') or diag(RawWS::describe($f));
    is($f && $f->{payload}, '', 'server ping without payload');
    ok($f && !$f->{masked}, 'server ping unmasked');
    my $how = $c->wait_close(3);
    my $more = 0;
    while (my $g = $c->_take_frame) { $more++ if $g->{opcode} == 9 }
    note('further pings before the close: ' . $more);
    like($how, qr/^(eof|reset)$/, 'no pong: connection closed') or diag($how);
    my $d = wait_disconnect('ka');
    is($d && $d->{code}, 1006, 'app: code 1006');
    is($d && $d->{reason}, 'keepalive_timeout', 'app: reason keepalive_timeout');
};

subtest 'write backpressure' => sub {
    %rec = ();
    my $bs = start_server($loop, app => $app, write_high_watermark => 65536);
    my $c = accepted($bs, '/flood?t=flood', 'flood', rcvbuf => 65536);
    # The client reads nothing for about a second: once the socket buffers
    # are full, the app must be stalled in await $send. The client's receive
    # buffer is fixed small; what the kernel holds on the server's side
    # (tcp_wmem, 4 MiB here) is the rest of what gets through, ~60-95
    # messages on this machine.
    pump_until($loop, 0.6, sub { 0 });
    my $r = $rec{flood};
    my $early = $r->{sent};
    pump_until($loop, 0.6, sub { 0 });
    note("sent while the client was not reading: $early, then $r->{sent}");
    ok($r->{sent} < 150, 'the app was held back (well under 200 sent)') or diag("sent $r->{sent}");
    is($r->{sent}, $early, 'and made no progress while the client did not read');
    ok($r->{pending} > 0, '$send returned a pending Future');
    my ($n, $bad) = (0, 0);
    while ($n < $FLOOD) {
        my $f = $c->read_frame(5) or last;
        $n++;
        $bad++ unless $f->{opcode} == 2 && $f->{payload} eq flood_msg($n);
    }
    is($n, $FLOOD, "client got $FLOOD messages");
    is($bad, 0, 'all byte-exact and in order');
    ok(pump_until($loop, 3, sub { $r->{flood_done} }), 'app finished sending');
    is($r->{sent}, $FLOOD, "app sent $FLOOD");
    $c->send_close(1000, '');
    $c->wait_close(3);
    stop($bs);
};

subtest 'a slow app holds up reading' => sub {
    %rec = ();
    my $ss = start_server($loop, app => $app, max_receive_queue => 0);
    $hold{slow} = Future->new;
    my $c = accepted($ss, '/hold?t=slow', 'slow app');
    my $n = 200;
    my $wire = join '', map { RawWS::build(0x82, flood_msg($_)) } 1 .. $n;
    my ($off, $deadline) = (0, time + 1.5);
    my $queued = 0;
    while (time < $deadline && $off < length $wire) {
        my $w = syswrite($c->sock, $wire, 65536, $off);
        $off += $w if $w;
        $loop->loop_once(0.01);
        my ($obj) = values %{ $ss->{requests} };
        $queued = @{ $obj->{queue} } if $obj && @{ $obj->{queue} } > $queued;
    }
    note(sprintf('client wrote %.1f MB; at most %d messages waited in Perl', $off / 1e6, $queued));
    ok($queued < 40, 'reading paused: at most 1 MiB or so of messages waits for the app')
        or diag("queued $queued");
    $hold{slow}->done;
    $c->write(substr($wire, $off)) if $off < length $wire;
    my $received = sub { scalar grep { $_->{type} eq 'websocket.receive' } @{ $rec{slow}{events} } };
    ok(pump_until($loop, 10, sub { $received->() >= $n }), "then all $n messages arrive")
        or diag('received ' . $received->());
    my @got = grep { $_->{type} eq 'websocket.receive' } @{ $rec{slow}{events} };
    is(scalar(grep { $got[$_ - 1]{bytes} ne flood_msg($_) } 1 .. @got), 0, 'byte-exact, in order');
    stop($ss);
};

subtest 'timers run while writes are stuck' => sub {
    %rec = ();
    my $ts = start_server($loop, app => $app, ws_idle_timeout => 1);
    my $c = accepted($ts, '/flood?t=stuck', 'stuck', rcvbuf => 65536);
    my $d = wait_disconnect('stuck', 6);
    is($d && $d->{reason}, 'idle_timeout', 'the idle timeout fires although a write is pending');
    is($d && $d->{code}, 1006, 'code 1006');
    stop($ts);
};

subtest 'server shutdown with an open WebSocket' => sub {
    %rec = ();
    my $ss = start_server($loop, app => $app);
    my $c = accepted($ss, '/echo?t=sd', 'shutdown');
    my $t0 = time;
    my $sf = $ss->shutdown;
    my $f = $c->read_nonping(5);
    is($f && $f->{opcode}, 8, 'close frame') or diag(RawWS::describe($f));
    is($f && $f->{code}, 1001, 'code 1001');
    my $d = wait_disconnect('sd', 5);
    is($d && $d->{code}, 1006, 'app: code 1006');
    is($d && $d->{reason}, 'server_shutdown', 'app: reason server_shutdown');
    ok(pump_until($loop, 5, sub { $sf->is_ready }), 'shutdown completes');
    note(sprintf('shutdown took %.3f s', time - $t0));
    $c->wait_close(2);
    $loop->remove($ss);
};

subtest 'send errors and sends after the end' => sub {
    %rec = ();
    my $c = accepted($server, '/misc?t=misc', 'misc');
    my $r = $rec{misc};
    like($r->{bad_subprotocol}, qr/subprotocol/, 'subprotocol "a b" refused');
    like($r->{no_payload}, qr/\btext\b|\bbytes\b/, 'websocket.send without text or bytes dies');
    like($r->{unknown}, qr/Unrecognized event type/, 'unknown event type dies');
    $c->send_close(1000, '');
    $c->wait_close(3);
    pump_until($loop, 2, sub { $r->{finished} });
    is($r->{late_error}, '', 'send after disconnect does not die');
    ok($r->{late_future} && $r->{late_future}->is_done, 'and its Future is done');
};

subtest 'an app still running when the server leaves the loop' => sub {
    my %late;
    my $late_app = async sub {
        my ($scope, $receive, $send) = @_;
        return unless $scope->{type} eq 'websocket';
        await $receive->();
        await $send->({ type => 'websocket.accept' });
        await $loop->delay_future(after => 0.3);
        $late{sent} = eval { await $send->({ type => 'websocket.send', text => 'late' }); 1 } ? 1 : $@;
        $late{finished} = 1;
    };
    my $ls = start_server($loop, app => $late_app);
    my $c = accepted($ls, '/', 'late');
    $loop->remove($ls);    # the core is released while the app still runs
    undef $ls;
    ok(pump_until($loop, 3, sub { $late{finished} }), 'the app finishes');
    is($late{sent}, 1, 'its later send is a no-op, not an error');
};

stop($server);

note("warning: $_") for @warnings;

done_testing;
