use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Future::AsyncAwait;
use Time::HiRes qw(time);
use RawHTTP qw(start_server pump_until);
use RawWS;
use H2Py;

# RFC 6455 to the letter, over HTTP/1.1 (RawWS frames, and Protocol::WebSocket
# as an independent client) and over HTTP/2 (RFC 8441, t/tools/h2_client.py):
# the handshake's checks (400 for a bad key, 426 for another version,
# Firefox's "Connection: keep-alive, Upgrade"), unmasked client frames and
# 64-bit lengths with the top bit set as protocol errors, message limits on
# sizes rather than frame counts (max_ws_message_size), UTF-8 refused where
# it breaks, and the order of things when a violation follows valid
# messages: the app gets them, and its answers reach the client before the
# close frame.

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "66-websocket-rfc.t: overall time limit reached\n" };
alarm 150;

my $loop = IO::Async::Loop->new;
my $h2_why = H2Py::skip_reason();
my $have_pws = eval { require Protocol::WebSocket::Handshake::Client; require Protocol::WebSocket::Frame; 1 };

my %rec;           # what each app run saw, keyed by the t= query parameter
my $ws_scopes = 0;

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
    my $r = $rec{ $t // 'none' } = { scope => $scope, events => [] };
    my $path = $scope->{path};
    await $receive->();
    await $send->({ type => 'websocket.accept' });
    # /hold never asks for a message after the handshake.
    await $loop->delay_future(after => 30) if $path eq '/hold';
    while (1) {
        my $ev = await $receive->();
        push @{ $r->{events} }, $ev;
        if ($ev->{type} eq 'websocket.disconnect') {
            $r->{disconnect} = $ev;
            last;
        }
        # /slow-echo answers each message a moment later.
        await $loop->delay_future(after => 0.3) if $path eq '/slow-echo';
        await $send->({ type => 'websocket.send',
                        (exists $ev->{text} ? (text => $ev->{text}) : (bytes => $ev->{bytes})) });
    }
};

my $server = start_server($loop, app => $app, http2 => 1);
my $FOUR = 4 * 1024 * 1024;
my $limited = start_server($loop, app => $app, http2 => 1, max_ws_message_size => $FOUR);

sub ws {
    my ($srv, $path, %opt) = @_;
    return RawWS->start(loop => $loop, port => $srv->port, path => $path, %opt);
}

sub accepted {
    my ($srv, $path, $label, %opt) = @_;
    my $c = ws($srv, $path, %opt);
    my $r = $c->handshake;
    is($r && $r->{status}, 101, "$label: 101") or diag($c->{buf});
    return $c;
}

sub wait_disconnect {
    my ($t, $secs) = @_;
    pump_until($loop, $secs // 5, sub { $rec{$t} && $rec{$t}{disconnect} });
    return $rec{$t} && $rec{$t}{disconnect};
}


# The frames the client gets until (and with) a close frame.
sub frames_to_close {
    my ($c, $secs) = @_;
    my @f;
    while (my $f = $c->read_frame($secs // 5)) {
        push @f, $f;
        last if $f->{opcode} == RawWS::CLOSE;
    }
    return @f;
}

# Runs the HTTP/2 client's ws mode against $srv.
sub h2_ws {
    my ($srv, $label, %o) = @_;
    my @args = ('--port', $srv->port, '--timeout', 20, 'ws', '--path', $o{path},
                map({ ('--step', $_) } @{ $o{steps} || [] }), @{ $o{args} || [] });
    my $c = H2Py->run($loop, \@args, 30);
    ok($c->done, "$label: the h2 client ran to its end") or diag(substr($c->output, 0, 3000));
    return $c;
}

# ---------------------------------------------------------------- handshake

subtest 'HTTP/1.1 handshake: key, version, Connection tokens' => sub {
    %rec = ();
    my $before = $ws_scopes;
    for my $case (
        [ 'no key',                      key => undef ],
        [ 'a key that is not base64',    key => 'not base64 at all!!!!!==' ],
        [ 'a key of 15 bytes',           key => 'AAAAAAAAAAAAAAAAAAAA' ],
        [ 'a key of 17 bytes',           key => 'AAAAAAAAAAAAAAAAAAAAAAA=' ],
    ) {
        my ($label, %opt) = @$case;
        my $c = ws($server, '/echo?t=badkey', %opt);
        my $r = $c->handshake;
        is($r && $r->{status}, 400, "$label: 400") or diag($c->{buf});
        like($c->wait_close(3), qr/^(eof|reset)$/, "$label: connection closed");
    }
    for my $case ([ 'version 8', version => 8 ], [ 'no version', version => undef ],
                  [ 'version 14', version => 14 ]) {
        my ($label, %opt) = @$case;
        my $c = ws($server, '/echo?t=badversion', %opt);
        my $r = $c->handshake;
        is($r && $r->{status}, 426, "$label: 426 Upgrade Required") or diag($c->{buf});
        is($r && $r->{header}{'sec-websocket-version'}, '13', "$label: Sec-WebSocket-Version: 13");
    }
    is($ws_scopes, $before, 'the app saw none of the refused handshakes');

    for my $conn ('keep-alive, Upgrade', 'KEEP-ALIVE,UPGRADE', 'upgrade') {
        my $c = accepted($server, '/echo?t=conn', "Connection: $conn", connection => $conn);
        $c->send_text('hi');
        my $f = $c->read_frame(3);
        is($f && $f->{payload}, 'hi', "Connection: $conn: echo") or diag(RawWS::describe($f));
        $c->send_close(1000);
        $c->wait_close(3);
    }
    my $c = ws($server, '/echo?t=noconn', connection => 'keep-alive');
    my $r = $c->handshake;
    is($r && $r->{status}, 200, 'no upgrade token in Connection: a plain HTTP request');
};

subtest 'HTTP/1.1 handshake with Protocol::WebSocket' => sub {
    skip_all('Protocol::WebSocket is not installed') unless $have_pws;
    %rec = ();
    my $hs = Protocol::WebSocket::Handshake::Client->new(url => 'ws://127.0.0.1:' . $server->port . '/echo?t=pws');
    my $c = RawHTTP->new(loop => $loop, port => $server->port);
    $c->write($hs->to_string);
    $c->wait_for(5, sub {
        my $chunk = $_[0]{buf};
        $_[0]{buf} = '';
        $hs->parse($chunk);
        $hs->is_done || $hs->error;
    });
    ok($hs->is_done, 'Protocol::WebSocket accepts the answer (its Sec-WebSocket-Accept)')
        or diag($hs->error // $c->{buf});
    my $msg = "h\x{e9}llo from Protocol::WebSocket";
    utf8::encode(my $bytes = $msg);
    $c->write($hs->build_frame(buffer => $bytes, type => 'text')->to_bytes);
    my $in = Protocol::WebSocket::Frame->new(max_payload_size => 0);
    my $got;
    $c->wait_for(5, sub { $in->append($_[0]{buf}); $_[0]{buf} = ''; defined($got = $in->next_bytes) });
    is($got, $bytes, 'the echo parses as a text frame with the same bytes');
    ok($in->is_text, 'a text frame');
    is($rec{pws} && $rec{pws}{events}[0]{text}, $msg, 'the app got the text');
};

subtest 'HTTP/2 handshake: version' => sub {
    skip_all($h2_why) if $h2_why;
    %rec = ();
    my $before = $ws_scopes;
    for my $case ([ 'version 8', '8' ], [ 'no version', '' ]) {
        my ($label, $v) = @$case;
        my $c = h2_ws($server, $label, path => '/echo?t=h2v', args => [ '--ws-version', $v ]);
        my ($sid) = $c->streams('ws');
        is($c->status($sid), 426, "$label: 426") or diag($c->output);
        is($c->headers($sid)->{'sec-websocket-version'}, '13', "$label: sec-websocket-version: 13");
    }
    is($ws_scopes, $before, 'the app saw neither');
};

# ------------------------------------------------------------------- frames

subtest 'HTTP/1.1: unmasked frames and 64-bit lengths with the top bit set' => sub {
    %rec = ();
    my $c = accepted($server, '/echo?t=nomask', 'unmasked');
    $c->send_frame(0x81, 'plain', mask => 0);
    my $f = $c->read_nonping(3);
    is($f && $f->{code}, 1002, 'an unmasked text frame: close 1002') or diag(RawWS::describe($f));
    my $d = wait_disconnect('nomask');
    is($d && $d->{code}, 1002, 'app: code 1002');
    is($d && $d->{reason}, 'protocol_error', 'app: reason protocol_error');
    is($rec{nomask}{events}, [ $d ], 'the unmasked message never reached the app');

    $c = accepted($server, '/echo?t=topbit', 'top bit');
    $c->write("\x82\xFF" . pack('NN', 0x80000000, 0) . "\x01\x02\x03\x04");
    $f = $c->read_nonping(3);
    is($f && $f->{code}, 1002, 'a 64-bit length with its top bit set: 1002, not 1009') or diag(RawWS::describe($f));
    $d = wait_disconnect('topbit');
    is($d && $d->{code}, 1002, 'app: code 1002');
};

subtest 'HTTP/1.1: message limits are on sizes, not frame counts' => sub {
    %rec = ();
    for my $piece (64, 65536) {
        my $c = accepted($limited, "/echo?t=frag$piece", "$piece-byte fragments");
        $c->write(RawWS::fragmented($FOUR, $piece), 30);
        my $f = $c->read_frame(20);
        is($f && length($f->{payload}), $FOUR, "a 4 MiB message in $piece-byte fragments is echoed whole")
            or diag(RawWS::describe($f));
        ok($f && $f->{payload} eq RawWS::message_bytes($FOUR), 'byte-exact');
        $c->send_close(1000);
        $c->wait_close(3);

        $c = accepted($limited, "/echo?t=over$piece", "4 MiB + 1 in $piece-byte fragments");
        my $wire = RawWS::fragmented($FOUR + 1, $piece);
        # The close comes once the limit is crossed; the rest may not be read.
        eval { $c->write($wire, 10) };
        $f = $c->read_nonping(10);
        is($f && $f->{code}, 1009, "4 MiB + 1 byte in $piece-byte fragments: close 1009") or diag(RawWS::describe($f));
        my $d = wait_disconnect("over$piece");
        is($d && $d->{reason}, 'body_too_large', 'app: reason body_too_large');
    }
    # The default limit (16 MiB) takes a 1 MiB message in 16384 fragments.
    my $c = accepted($server, '/echo?t=default', 'default limits');
    $c->write(RawWS::fragmented(1 << 20, 64), 30);
    my $f = $c->read_frame(20);
    is($f && length($f->{payload}), 1 << 20, 'default limits: 1 MiB in 64-byte fragments echoed')
        or diag(RawWS::describe($f));
    $c->send_close(1000);
    $c->wait_close(3);
};

subtest 'HTTP/1.1: text that is not UTF-8 is refused where it breaks' => sub {
    %rec = ();
    my $c = accepted($server, '/echo?t=utf8', 'utf8');
    # A 200-byte text frame of which only the first 20 bytes are sent: they
    # already hold a sequence that can never be UTF-8 (U+110000).
    my $payload = "fine so far \xf4\x90\x80\x80" . ('x' x 184);
    my $frame = RawWS::build(0x81, $payload, key => "\0\0\0\0");
    $c->write(substr($frame, 0, 4 + 4 + 20));
    my $t0 = time;
    my $f = $c->read_nonping(3);
    is($f && $f->{code}, 1007, 'close 1007 before the frame is complete') or diag(RawWS::describe($f));
    note(sprintf 'closed %.3f s after the bad bytes', time - $t0);
    my $d = wait_disconnect('utf8');
    is($d && $d->{code}, 1007, 'app: code 1007');
};

subtest 'HTTP/2: unmasked frames, top bit, sizes' => sub {
    skip_all($h2_why) if $h2_why;
    %rec = ();
    my $c = h2_ws($server, 'unmasked', path => '/echo?t=h2nomask',
        steps => [ 'nomask:81:' . unpack('H*', 'plain'), 'wait-close', 'wait-end' ]);
    my ($sid) = $c->streams('ws');
    is($c->close_of($sid) && $c->close_of($sid)->{code}, 1002, 'unmasked: close 1002') or diag($c->output);
    is([ $c->messages($sid) ], [], 'nothing echoed');
    my $d = wait_disconnect('h2nomask');
    is($d && $d->{code}, 1002, 'app: code 1002');

    $c = h2_ws($server, 'top bit', path => '/echo?t=h2top',
        steps => [ 'raw:82ff800000000000000001020304', 'wait-close', 'wait-end' ]);
    ($sid) = $c->streams('ws');
    is($c->close_of($sid) && $c->close_of($sid)->{code}, 1002, 'top bit: close 1002') or diag($c->output);

    for my $piece (64, 65536) {
        $c = h2_ws($limited, "$piece-byte fragments", path => "/echo?t=h2frag$piece",
            steps => [ "fragments:$FOUR:$piece", 'wait:1', 'close:1000', 'wait-close', 'wait-end' ]);
        ($sid) = $c->streams('ws');
        my @m = $c->messages($sid);
        is(scalar @m, 1, "a 4 MiB message in $piece-byte fragments: one echo") or diag(substr($c->output, 0, 2000));
        ok(@m && $m[0][1] eq RawWS::message_bytes($FOUR), 'whole and byte-exact');

        $c = h2_ws($limited, "4 MiB + 1 in $piece-byte fragments", path => "/echo?t=h2over$piece",
            steps => [ 'fragments:' . ($FOUR + 1) . ":$piece", 'wait-close', 'wait-end' ]);
        ($sid) = $c->streams('ws');
        is($c->close_of($sid) && $c->close_of($sid)->{code}, 1009, "4 MiB + 1 in $piece-byte fragments: close 1009")
            or diag(substr($c->output, 0, 2000));
    }
};

# ------------------------------------------------------------ fail-fast order

subtest 'HTTP/1.1: a violation right behind valid messages' => sub {
    %rec = ();
    for my $path ('/echo', '/slow-echo') {
        my $t = $path eq '/echo' ? 'order' : 'slow';
        my $c = accepted($server, "$path?t=$t", $path);
        $c->write(RawWS::build(0x81, 'one') . RawWS::build(0x81, 'two') . RawWS::build(0xA1, 'bad'));
        my @f = frames_to_close($c, 5);
        is([ map { $_->{opcode} == RawWS::CLOSE ? "close $_->{code}" : $_->{payload} } @f ],
           [ 'one', 'two', 'close 1002' ],
           "$path: both echoes reach the client, then the close frame") or diag(join '; ', map { RawWS::describe($_) } @f);
        my $d = wait_disconnect($t);
        is([ map { $_->{text} // "$_->{type} $_->{code}" } @{ $rec{$t}{events} } ],
           [ 'one', 'two', 'websocket.disconnect 1002' ], "$path: the app got both messages, then the disconnect");
    }
    # An app that never asks for its messages does not hold the close back
    # for long.
    my $c = accepted($server, '/hold?t=hold', 'hold');
    $c->write(RawWS::build(0x81, 'one') . RawWS::build(0xA1, 'bad'));
    my $t0 = time;
    my $f = $c->read_nonping(5);
    my $took = time - $t0;
    is($f && $f->{code}, 1002, 'an app that does not read: close 1002 all the same') or diag(RawWS::describe($f));
    ok($took < 4, 'within the grace of about 2 s') or diag("took $took s");
    note(sprintf 'close after %.2f s', $took);
};

subtest 'HTTP/2: a violation right behind valid messages' => sub {
    skip_all($h2_why) if $h2_why;
    %rec = ();
    my $wire = join '', map { unpack 'H*', $_ }
        RawWS::build(0x81, 'one'), RawWS::build(0x81, 'two'), RawWS::build(0xA1, 'bad');
    for my $path ('/echo', '/slow-echo') {
        my $t = $path eq '/echo' ? 'h2order' : 'h2slow';
        my $c = h2_ws($server, $path, path => "$path?t=$t", steps => [ "raw:$wire", 'wait-close', 'wait-end' ]);
        my ($sid) = $c->streams('ws');
        is([ map { $_->{op} == 8 ? 'close ' . unpack('n', $_->{payload}) : $_->{payload} } $c->frames($sid) ],
           [ 'one', 'two', 'close 1002' ], "$path: both echoes, then the close frame") or diag($c->output);
        wait_disconnect($t);
        is([ map { $_->{text} // "$_->{type} $_->{code}" } @{ $rec{$t}{events} } ],
           [ 'one', 'two', 'websocket.disconnect 1002' ], "$path: the app got both, then the disconnect");
    }
};

for my $s ($server, $limited) {
    my $f = $s->shutdown;
    ok(pump_until($loop, 5, sub { $f->is_ready }), 'server shut down');
    $loop->remove($s);
}

done_testing;
