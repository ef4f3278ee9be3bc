use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use H2Py;
BEGIN {
    my $why = H2Py::skip_reason();
    skip_all($why) if $why;
}

use File::Temp qw(tempdir);
use IO::Async::Loop;
use Future::AsyncAwait;
use Time::HiRes qw(time);
use RawHTTP qw(start_server pump_until);
use TestCerts;

# WebSocket over HTTP/2 (RFC 8441), seen from a real HTTP/2 client
# (t/tools/h2_client.py, on Python's h2): extended CONNECT over h2c and over
# TLS (ALPN h2), the scope, 200 instead of 101, echo, the close handshake
# from either side, denial responses, protocol violations and their close
# codes, websocket.keepalive pings, a client's RST_STREAM, several
# WebSockets and a plain GET on one connection, a graceful shutdown, and
# h2_enable_connect_protocol => 0. The expectations are those of
# t/36-websocket.t for HTTP/1.1. The server runs on this process's loop;
# the client is a child process, stopped by PID.

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "55-h2-websocket.t: overall time limit reached\n" };
alarm 90;

my $loop = IO::Async::Loop->new;

my %rec;            # what each app run saw, keyed by the t= query parameter
my $ws_scopes = 0;  # websocket scopes the app was called with
my $open      = 0;  # WebSockets accepted and not yet disconnected
my $max_open  = 0;

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    if ($scope->{type} eq 'http') {
        await $send->({ type => 'http.response.start', status => 200,
                        headers => [['content-type', 'text/plain'], ['content-length', 2]] });
        await $send->({ type => 'http.response.body', body => 'OK' });
        return;
    }
    return unless $scope->{type} eq 'websocket';
    $ws_scopes++;
    my ($t) = ($scope->{query_string} // '') =~ /(?:\A|&)t=([\w-]+)/;
    $t //= 'none';
    my $r = $rec{$t} = { scope => $scope, events => [] };
    my $path = $scope->{path};

    $r->{connect} = await $receive->();

    if ($path eq '/reject') {
        await $send->({ type => 'websocket.close' });
        return;
    }
    if ($path eq '/deny') {
        await $send->({ type => 'websocket.http.response.start', status => 401,
                        headers => [['www-authenticate', 'Bearer']] });
        await $send->({ type => 'websocket.http.response.body', body => 'no', more => 1 });
        await $send->({ type => 'websocket.http.response.body', body => '!' });
        return;
    }

    my %accept = (type => 'websocket.accept');
    if (grep { $_ eq 'chat' } @{ $scope->{subprotocols} || [] }) {
        $accept{subprotocol} = 'chat';
        $accept{headers}     = [['X-Extra', '1']];
    }
    await $send->(\%accept);
    $open++;
    $max_open = $open if $open > $max_open;

    if ($path eq '/server-close') {
        await $send->({ type => 'websocket.close', code => 4000, reason => 'done' });
    }
    if ($path eq '/keepalive') {
        await $send->({ type => 'websocket.keepalive', interval => 0.2, timeout => 0.3 });
    }
    while (1) {
        my $ev = await $receive->();
        push @{ $r->{events} }, $ev;
        if ($ev->{type} eq 'websocket.disconnect') {
            $r->{disconnect} = $ev;
            $open--;
            last;
        }
        if ($path eq '/echo') {
            await $send->({ type => 'websocket.send',
                            (exists $ev->{text} ? (text => $ev->{text}) : (bytes => $ev->{bytes})) });
        }
    }
};

# Certificates for the TLS server, made for this run.
my $tls_why = TestCerts::skip_reason();
my $certs = $tls_why ? undef : TestCerts::make(tempdir(CLEANUP => 1), 'rsa');

my %server = (h2c => start_server($loop, app => $app, http2 => 1));
$server{tls} = start_server($loop, app => $app, http2 => 1,
    ssl => { cert_file => $certs->{rsa_cert}, key_file => $certs->{rsa_key} }) if $certs;
my %is_tls = $certs ? ($server{tls}->port => 1) : ();

# The client's arguments for a server: common options, then the mode's.
sub args_for {
    my ($srv, @rest) = @_;
    return [ '--port', $srv->port, ($is_tls{ $srv->port } ? '--tls' : ()), '--timeout', 8, @rest ];
}

# Runs the ws mode: one WebSocket per path, each running @steps.
sub ws_run {
    my ($srv, %o) = @_;
    my @args = ('ws', map({ ('--path', $_) } @{ $o{paths} }), map({ ('--step', $_) } @{ $o{steps} || [] }));
    push @args, '--protocol', $o{protocol} if defined $o{protocol};
    push @args, map { ('--get', $_) } @{ $o{get} || [] };
    push @args, '--pong' if $o{pong};
    push @args, '--plain-connect' if $o{plain};
    my $c = H2Py->run($loop, args_for($srv, ($o{linger} ? ('--linger', $o{linger}) : ()), @args));
    ok($c->done, "$o{label}: the client ran to its end") or diag($c->output);
    return $c;
}

sub wait_disconnect {
    my ($t, $secs) = @_;
    pump_until($loop, $secs // 3, sub { $rec{$t} && $rec{$t}{disconnect} });
    return $rec{$t} && $rec{$t}{disconnect};
}

sub hexes { join ' ', map { unpack 'H*', $_ } @_ }

for my $kind (sort keys %server) {
    my $srv = $server{$kind};
    my $tls = $kind eq 'tls';
    my ($ws, $http) = $tls ? ('wss', 'https') : ('ws', 'http');

    subtest "$kind: handshake, scope, echo and a close from the client" => sub {
        %rec = ();
        my $t = "hs-$kind";
        my $text = "h\xc3\xa9llo";    # UTF-8 bytes of "héllo"
        my $c = ws_run($srv, label => 'echo', paths => ["/echo?t=$t"], protocol => 'chat, superchat',
            steps => [ 'frame:81:' . unpack('H*', $text), 'binary:00ff10', 'wait:2',
                       'text:plain', 'wait:3',
                       'close:4001:bye', 'wait-close', 'wait-end' ]);
        is($c->settings->{ENABLE_CONNECT_PROTOCOL}, 1, 'SETTINGS_ENABLE_CONNECT_PROTOCOL = 1');
        is(($c->lines)[0], $tls ? 'connected tls=1 alpn=h2' : 'connected tls=0 alpn=none',
            $tls ? 'TLS, ALPN chose h2' : 'cleartext (h2c, prior knowledge)');
        my ($sid) = $c->streams('ws');
        is($c->status($sid), 200, 'accepted: 200, not 101');
        my $h = $c->headers($sid);
        ok(!exists $h->{'sec-websocket-accept'}, 'no sec-websocket-accept on HTTP/2');
        ok(!exists $h->{upgrade} && !exists $h->{connection}, 'no upgrade or connection field');
        is($h->{'sec-websocket-protocol'}, 'chat', 'sec-websocket-protocol: chat');
        is($h->{'x-extra'}, '1', "the accept's extra header");

        my $s = $rec{$t} && $rec{$t}{scope};
        ok($s, 'the app got a scope') or return diag($c->output);
        is($s->{type}, 'websocket', 'scope type websocket');
        is($s->{http_version}, '2', "http_version '2'");
        is($s->{scheme}, $ws, "scheme $ws");
        is($s->{path}, '/echo', 'path');
        is($s->{query_string}, "t=$t", 'query_string');
        is($s->{subprotocols}, ['chat', 'superchat'], 'subprotocols offered');
        ok(!exists $s->{method}, 'no method key');
        ok((grep { $_->[0] eq 'sec-websocket-version' && $_->[1] eq '13' } @{ $s->{headers} || [] }),
            'sec-websocket-version header present');
        is([ grep { $_->[0] =~ /\A:/ } @{ $s->{headers} || [] } ], [], 'no pseudo-headers among the headers');
        is(exists $s->{extensions}{tls} ? 1 : 0, $tls ? 1 : 0, 'extensions.tls only over TLS');
        is($rec{$t}{connect}, { type => 'websocket.connect' }, 'first receive: websocket.connect');

        my @m = $c->messages($sid);
        is(scalar @m, 3, 'three messages echoed') or diag($c->output);
        is($m[0], [1, $text], 'text echoed as text, the same UTF-8 bytes');
        is($m[1], [2, "\x00\xff\x10"], 'binary echoed as binary, byte-exact');
        is($m[2], [1, 'plain'], 'a third message echoed');
        is([ map { $_->{fin} } $c->frames($sid) ], [ (1) x 4 ], 'every server frame is final');
        is([ $c->records('masked', $sid) ], [], 'server frames are not masked');
        my $ev = $rec{$t}{events};
        is($ev->[0] && $ev->[0]{text}, "h\x{e9}llo", 'the app got the text decoded');
        is($ev->[1] && $ev->[1]{bytes}, "\x00\xff\x10", 'the app got the bytes');

        is($c->close_of($sid), { code => 4001, reason => 'bye' }, 'the server answers the close: 4001 bye');
        is(wait_disconnect($t), { type => 'websocket.disconnect', code => 4001, reason => 'bye' },
            "app: websocket.disconnect with the client's code and reason");
        is($c->ending($sid), 'end', 'the stream ends with END_STREAM');
        ok(!grep({ /\Agoaway|\Aeof/ } $c->lines), 'the connection stays open');
    };

    subtest "$kind: large messages (flow control both ways) and max_ws_frame_size" => sub {
        %rec = ();
        my $t = "big-$kind";
        my $n = 65000;    # three of them pass both directions' 65,535-byte stream windows
        my $c = ws_run($srv, label => 'large', paths => ["/echo?t=$t"],
            steps => [ ("pattern:$n") x 3, 'wait:3', 'pattern:70000', 'wait-close', 'wait-end' ]);
        my ($sid) = $c->streams('ws');
        my $want = join '', map { chr((7 * $_ + 3) % 256) } 0 .. $n - 1;
        my @m = $c->messages($sid);
        is(scalar @m, 3, 'three large messages echoed') or diag(substr($c->output, 0, 3000));
        is(scalar(grep { $_->[0] == 2 && $_->[1] eq $want } @m), 3, "each $n bytes, byte-exact");
        is(scalar(grep { $_->{type} eq 'websocket.receive' && length($_->{bytes} // '') == $n }
            @{ $rec{$t}{events} || [] }), 3, 'the app got the three whole');
        my $cl = $c->close_of($sid);
        is($cl && $cl->{code}, 1009, 'a 70000-byte message (over max_ws_frame_size): close 1009');
        my $d = wait_disconnect($t);
        is($d && $d->{code}, 1009, 'app: code 1009');
        is($d && $d->{reason}, 'body_too_large', 'app: reason body_too_large');
        is($c->ending($sid), 'end', 'the stream ends with END_STREAM');
    };

    subtest "$kind: close from the app" => sub {
        %rec = ();
        my $t = "sc-$kind";
        my $c = ws_run($srv, label => 'server close', paths => ["/server-close?t=$t"],
            steps => [ 'wait-close', 'close:4000', 'wait-end' ]);
        my ($sid) = $c->streams('ws');
        is($c->status($sid), 200, 'accepted');
        is($c->close_of($sid), { code => 4000, reason => 'done' }, 'close frame 4000 done reaches the client');
        my $d = wait_disconnect($t);
        is($d && $d->{code}, 4000, 'app: disconnect with code 4000');
        is($c->ending($sid), 'end', 'the stream ends with END_STREAM');
    };

    subtest "$kind: denial and close before accept" => sub {
        %rec = ();
        my $before = $ws_scopes;
        my $c = ws_run($srv, label => 'denials', paths => ["/deny?t=deny-$kind", "/reject?t=rej-$kind"],
            steps => [ 'text:never' ]);
        my ($deny, $reject) = $c->streams('ws');
        is($c->status($deny), 401, 'websocket.http.response: the client gets 401');
        is($c->headers($deny)->{'www-authenticate'}, 'Bearer', 'with its header');
        is(scalar $c->data($deny), 'no!', "and its body 'no!'");
        is($c->ending($deny), 'end', 'the denial ends with END_STREAM');
        is($c->status($reject), 403, 'websocket.close before accept: 403');
        is($c->ending($reject), 'end', 'the 403 ends with END_STREAM');
        is([ $c->records('sent') ], [], 'no frame was sent on a stream that was not accepted');
        is($ws_scopes - $before, 2, 'the app saw both');
    };

    subtest "$kind: protocol violations" => sub {
        %rec = ();
        for my $case ([utf8   => 1007, 'frame:81:fffe', 'invalid UTF-8 text'],
                      [op3    => 1002, 'frame:83:',     'reserved opcode 3'],
                      [rsv1   => 1002, 'frame:c1:78',   'RSV1 set'],
                      [nomask => 1002, 'nomask:81:78',  'an unmasked frame, as on HTTP/1.1']) {
            my ($name, $code, $step, $label) = @$case;
            my $t = "$name-$kind";
            my $c = ws_run($srv, label => $label, paths => ["/echo?t=$t"], steps => [ $step, 'wait-close', 'wait-end' ]);
            my ($sid) = $c->streams('ws');
            my $cl = $c->close_of($sid);
            is($cl && $cl->{code}, $code, "$label: close frame $code") or diag($c->output);
            my $d = wait_disconnect($t);
            is($d && $d->{code}, $code, "$label: app sees code $code");
            is($d && $d->{reason}, 'protocol_error', "$label: app sees reason protocol_error");
            is($c->ending($sid), 'end', "$label: the stream ends with END_STREAM");
        }
    };

    subtest "$kind: websocket.keepalive" => sub {
        %rec = ();
        my $t = "ka-$kind";
        my $c = ws_run($srv, label => 'keepalive, no pong', paths => ["/keepalive?t=$t"],
            steps => [ 'wait:1', 'wait-end' ]);
        my ($sid) = $c->streams('ws');
        my ($first) = $c->frames($sid);
        is($first && $first->{op}, 9, 'a ping arrives') or diag($c->output);
        is($first && $first->{payload}, '', 'without payload');
        is($c->ending($sid), 'end', 'no pong: the stream is ended (END_STREAM)');
        my $d = wait_disconnect($t);
        is($d && $d->{code}, 1006, 'app: code 1006');
        is($d && $d->{reason}, 'keepalive_timeout', 'app: reason keepalive_timeout');

        %rec = ();
        $t = "kap-$kind";
        $c = ws_run($srv, label => 'keepalive with pongs', paths => ["/keepalive?t=$t"], pong => 1,
            steps => [ 'sleep:1', 'close:1000', 'wait-close', 'wait-end' ]);
        ($sid) = $c->streams('ws');
        my $pings = grep { $_->{op} == 9 } $c->frames($sid);
        cmp_ok($pings, '>=', 3, 'pings keep coming while the client answers them') or diag($c->output);
        is($c->close_of($sid) && $c->close_of($sid)->{code}, 1000, 'the session lasted until the client closed it (its close 1000 answered)');
        $d = wait_disconnect($t);
        is($d && $d->{code}, 1000, 'app: code 1000');
    };

    subtest "$kind: RST_STREAM from the client" => sub {
        %rec = ();
        my $t = "rst-$kind";
        my $c = ws_run($srv, label => 'reset', paths => ["/echo?t=$t"], linger => 0.3,
            get => ['/plain'], steps => [ 'text:x', 'wait:1', 'reset' ]);
        my ($sid) = $c->streams('ws');
        is([ map { $_->[1] } $c->messages($sid) ], ['x'], 'the WebSocket was open');
        my $d = wait_disconnect($t);
        is($d && $d->{code}, 1006, 'app: code 1006');
        is($d && $d->{reason}, 'client_closed', 'app: reason client_closed');
        my ($get) = $c->streams('get');
        is($c->status($get), 200, 'the connection goes on serving');

        %rec = ();
        $t = "eos-$kind";
        $c = ws_run($srv, label => 'END_STREAM', paths => ["/echo?t=$t"],
            steps => [ 'text:x', 'wait:1', 'end', 'wait-end' ]);
        ($sid) = $c->streams('ws');
        $d = wait_disconnect($t);
        is($d && $d->{code}, 1006, 'END_STREAM without a close frame: app code 1006');
        is($d && $d->{reason}, 'client_closed', 'app: reason client_closed');
        is($c->ending($sid), 'end', 'the server ends its side too');
    };

    subtest "$kind: several WebSockets and a GET on one connection" => sub {
        %rec = ();
        ($open, $max_open) = (0, 0);
        my @t = map { "multi$_-$kind" } 0 .. 2;
        my $c = ws_run($srv, label => 'multiplexed', paths => [ map { "/echo?t=$_" } @t ], get => ['/plain'],
            steps => [ 'text:msg {i}', 'wait:1', 'sleep:0.3', 'text:again {i}', 'wait:2',
                       'close:1000:bye {i}', 'wait-close', 'wait-end' ]);
        my @sid = $c->streams('ws');
        is(scalar @sid, 3, 'three WebSocket streams');
        for my $i (0 .. 2) {
            is($c->status($sid[$i]), 200, "WebSocket $i accepted");
            is([ map { $_->[1] } $c->messages($sid[$i]) ], [ "msg $i", "again $i" ],
                "WebSocket $i got its own echoes, in order");
            is($c->close_of($sid[$i]), { code => 1000, reason => "bye $i" }, "WebSocket $i: close answered");
            my $d = wait_disconnect($t[$i]);
            is($d && $d->{reason}, "bye $i", "WebSocket $i: the app saw its own close");
        }
        is($max_open, 3, 'the three were open at the same time');
        my %port = map { ($rec{$_}{scope}{client} || [])->[1] // 'none' => 1 } @t;
        is(scalar keys %port, 1, 'all from one client connection');
        my ($get) = $c->streams('get');
        is($c->status($get), 200, 'the GET alongside: 200');
        is(scalar $c->data($get), 'OK', "with its body");
        is($c->ending($get), 'end', 'and its END_STREAM');
    };
}

subtest 'plain CONNECT (no :protocol) is answered 501' => sub {
    %rec = ();
    my $before = $ws_scopes;
    my $c = ws_run($server{h2c}, label => 'plain CONNECT', paths => ['/'], plain => 1);
    my ($sid) = $c->streams('ws');
    is($c->status($sid), 501, '501');
    is($ws_scopes, $before, 'the app never saw it');

    $c = H2Py->run($loop, args_for($server{h2c}, 'ws', '--path', '/echo?t=other',
        '--connect-protocol', 'webtransport', '--step', 'text:never'));
    ($sid) = $c->streams('ws');
    my $st = $c->status($sid);
    ok((defined $st && $st >= 400) || $c->ending($sid) =~ /\Areset/,
        'an extended CONNECT for another protocol is refused') or diag($c->output);
    note('refused with: ' . (defined $st ? "status $st" : $c->ending($sid)));
    is($ws_scopes, $before, 'the app never saw it');
};

subtest 'server shutdown with open WebSockets' => sub {
    %rec = ();
    my $sd = start_server($loop, app => $app, http2 => 1);
    my $c = H2Py->start($loop, args_for($sd, 'ws', '--path', '/echo?t=sd0', '--path', '/echo?t=sd1',
        '--step', 'text:up', '--step', 'wait:1', '--step', 'wait-close', '--step', 'wait-end'));
    my $up = $c->wait_for(5, sub { grep({ /\Aframe \d+ 1 / } $_[0]->lines) == 2 });
    ok($up, 'both WebSockets are open') or diag($c->output);
    my $t0 = time;
    my $f = $sd->shutdown;
    ok($c->finish(8), 'the client ran to its end') or diag($c->output);
    for my $i (0, 1) {
        my $sid = ($c->streams('ws'))[$i];
        my $cl = $c->close_of($sid);
        is($cl && $cl->{code}, 1001, "WebSocket $i: close frame 1001");
        my $d = wait_disconnect("sd$i", 5);
        is($d && $d->{code}, 1006, "WebSocket $i: app code 1006");
        is($d && $d->{reason}, 'server_shutdown', "WebSocket $i: app reason server_shutdown");
    }
    ok(scalar($c->records('goaway')), 'GOAWAY sent') or diag($c->output);
    ok(pump_until($loop, 5, sub { $f->is_ready }), 'shutdown completes');
    note(sprintf('shutdown took %.3f s', time - $t0));
    $loop->remove($sd);
};

subtest 'h2_enable_connect_protocol => 0' => sub {
    %rec = ();
    my $off = start_server($loop, app => $app, http2 => 1, h2_enable_connect_protocol => 0);
    my $before = $ws_scopes;
    my $c = ws_run($off, label => 'connect protocol off', paths => ['/echo?t=off'], get => ['/plain'],
        steps => [ 'text:never' ]);
    ok(!$c->settings->{ENABLE_CONNECT_PROTOCOL}, 'SETTINGS do not enable the CONNECT protocol')
        or diag($c->output);
    my ($sid) = $c->streams('ws');
    my $st = $c->status($sid);
    ok((defined $st && $st >= 400) || $c->ending($sid) =~ /\Areset/,
        'the extended CONNECT is refused (4xx/5xx or RST_STREAM)') or diag($c->output);
    note('refused with: ' . (defined $st ? "status $st" : $c->ending($sid)));
    isnt($st, 200, 'not accepted');
    is($ws_scopes, $before, 'the app never saw it');
    ok(!exists $rec{off}, 'no websocket scope for it');
    my ($get) = $c->streams('get');
    is($c->status($get), 200, 'the connection still serves a GET');
    my $f = $off->shutdown;
    pump_until($loop, 5, sub { $f->is_ready });
    $loop->remove($off);
};

for my $kind (sort keys %server) {
    my $f = $server{$kind}->shutdown;
    ok(pump_until($loop, 5, sub { $f->is_ready }), "$kind server shut down");
    $loop->remove($server{$kind});
}

SKIP: {
    skip "TLS: $tls_why", 1 if $tls_why;
    pass('TLS server was tested');
}

done_testing;
