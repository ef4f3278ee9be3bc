use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Future::AsyncAwait;
use RawHTTP qw(start_server pump_until);
use RawWS;
use H2Py;

# permessage-deflate (RFC 7692) over HTTP/1.1 (RawWS frames, compressed by
# Compress::Raw::Zlib) and over HTTP/2 (t/tools/h2_client.py, Python's
# zlib): what the server agrees to for each kind of offer (and declines),
# compressed and plain client messages reaching the app as plain text or
# bytes, the app's messages going out compressed, the window limits and
# no-context-takeover honoured, the violations (RSV1 where it may not be,
# data that does not inflate), a message that would inflate past
# max_ws_message_size stopped with 1009, and ws_compression => 0.

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "67-websocket-deflate.t: overall time limit reached\n" };
alarm 120;

my $loop = IO::Async::Loop->new;
my $h2_why = H2Py::skip_reason();

my %rec;    # what each app run saw, keyed by the t= query parameter

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'websocket';
    my ($t) = ($scope->{query_string} // '') =~ /(?:\A|&)t=([\w-]+)/;
    my $r = $rec{ $t // 'none' } = { scope => $scope, events => [] };
    await $receive->();
    my @headers = $scope->{path} eq '/accept-ext'
        ? ([ 'Sec-WebSocket-Extensions', 'x-mine' ], [ 'X-Other', '1' ]) : ();
    await $send->({ type => 'websocket.accept', headers => \@headers });
    while (1) {
        my $ev = await $receive->();
        push @{ $r->{events} }, $ev;
        if ($ev->{type} eq 'websocket.disconnect') {
            $r->{disconnect} = $ev;
            last;
        }
        await $send->({ type => 'websocket.send',
                        (exists $ev->{text} ? (text => $ev->{text}) : (bytes => $ev->{bytes})) });
    }
};

my $server = start_server($loop, app => $app, http2 => 1);
my $off    = start_server($loop, app => $app, http2 => 1, ws_compression => 0);
my $small  = start_server($loop, app => $app, max_ws_message_size => 1 << 20);

my $OFFER = 'permessage-deflate; client_max_window_bits';

sub ws {
    my ($srv, $path, %opt) = @_;
    return RawWS->start(loop => $loop, port => $srv->port, path => $path, %opt);
}

sub accepted {
    my ($srv, $path, $label, %opt) = @_;
    my $c = ws($srv, $path, %opt);
    my $r = $c->handshake;
    is($r && $r->{status}, 101, "$label: 101") or diag($c->{buf});
    return ($c, $r);
}

sub wait_disconnect {
    my ($t, $secs) = @_;
    pump_until($loop, $secs // 5, sub { $rec{$t} && $rec{$t}{disconnect} });
    return $rec{$t} && $rec{$t}{disconnect};
}


subtest 'what the server agrees to' => sub {
    for my $case (
        [ $OFFER,                                   'permessage-deflate' ],
        [ 'permessage-deflate',                     'permessage-deflate' ],
        [ 'permessage-deflate; server_no_context_takeover; client_no_context_takeover',
          'permessage-deflate; server_no_context_takeover' ],
        [ 'permessage-deflate; server_max_window_bits=10; client_max_window_bits=12',
          'permessage-deflate; server_max_window_bits=10' ],
        [ 'permessage-deflate; server_max_window_bits="9"', 'permessage-deflate; server_max_window_bits=9' ],
        [ 'permessage-deflate; server_max_window_bits=8', undef ],
        [ 'permessage-deflate; server_max_window_bits=8, permessage-deflate; server_no_context_takeover',
          'permessage-deflate; server_no_context_takeover' ],
        [ 'permessage-deflate; server_max_window_bits=16', undef ],
        [ 'permessage-deflate; no_such_parameter', undef ],
        [ 'permessage-deflate; server_no_context_takeover; server_no_context_takeover', undef ],
        [ 'x-webkit-deflate-frame', undef ],
    ) {
        my ($offer, $want) = @$case;
        my ($c, $r) = accepted($server, '/echo?t=neg', $offer, extensions => $offer);
        is($r && $r->{header}{'sec-websocket-extensions'}, $want,
           "offer '$offer': " . ($want // 'declined'));
        $c->send_close(1000);
        $c->wait_close(3);
    }
    my ($c, $r) = accepted($server, '/accept-ext?t=appext', 'app sends its own field');
    ok(!exists $r->{header}{'sec-websocket-extensions'}, "the app's Sec-WebSocket-Extensions is dropped");
    is($r && $r->{header}{'x-other'}, '1', 'its other fields go out');
    ($c, $r) = accepted($server, '/accept-ext?t=appext2', 'app field and an offer', extensions => $OFFER);
    is($r && $r->{header}{'sec-websocket-extensions'}, 'permessage-deflate', "the server's agreement, not the app's");
    ($c, $r) = accepted($off, '/echo?t=off', 'ws_compression => 0', extensions => $OFFER);
    ok(!exists $r->{header}{'sec-websocket-extensions'}, 'ws_compression => 0: the offer is declined');
};

subtest 'compressed and plain messages both ways' => sub {
    %rec = ();
    my ($c) = accepted($server, '/echo?t=msgs', 'messages', extensions => $OFFER);
    my $out = RawWS::Deflate->new;    # the client's compressor
    my $in  = RawWS::Deflate->new;    # its decompressor, for the server's messages
    my $text = "h\x{e9}llo, compressed " x 20;
    utf8::encode(my $bytes = $text);
    my @sent;
    for my $i (1 .. 3) {
        $c->send_frame(0xC1, $out->compress($bytes));    # RSV1: compressed
        push @sent, $bytes;
    }
    $c->send_frame(0x81, 'plain text');
    push @sent, 'plain text';
    # One compressed message in three frames (RSV1 on the first only).
    my $big = 'fragmented and compressed ' x 100;
    my $z = $out->compress($big);
    my $third = int(length($z) / 3);
    $c->write(RawWS::build(0x41, substr($z, 0, $third)) . RawWS::build(0x00, substr($z, $third, $third))
        . RawWS::build(0x80, substr($z, 2 * $third)));
    push @sent, $big;
    my $bin = join '', map { chr($_ % 7) } 1 .. 5000;
    $c->send_frame(0xC2, $out->compress($bin));
    for my $i (0 .. $#sent) {
        my $f = $c->read_frame(5);
        is($f && $f->{rsv}, 4, "echo $i is compressed (RSV1)") or diag(RawWS::describe($f));
        is($f && $in->inflate($f->{payload}), $sent[$i], "echo $i inflates to what was sent");
        ok($f && length($f->{payload}) < length($sent[$i]), "echo $i is smaller than the message")
            if length($sent[$i]) > 100;
    }
    my $f = $c->read_frame(5);
    is($f && $f->{opcode}, 2, 'the binary echo is binary') or diag(RawWS::describe($f));
    is($f && $in->inflate($f->{payload}), $bin, 'and inflates to the bytes');
    my @ev = @{ $rec{msgs}{events} };
    is([ map { $_->{text} } @ev[0 .. 4] ], [ ($text) x 3, 'plain text', $big ],
       'the app got every text message as plain text, decoded');
    is($ev[5] && $ev[5]{bytes}, $bin, 'and the binary one as plain bytes');
    $c->send_close(1000);
    $c->wait_close(3);
};

subtest 'server_no_context_takeover and server_max_window_bits' => sub {
    %rec = ();
    my ($c) = accepted($server, '/echo?t=fresh', 'no context takeover',
        extensions => 'permessage-deflate; server_no_context_takeover');
    my $msg = 'the same words once more, ' x 10;
    $c->send_text($msg) for 1 .. 2;
    my @f = map { $c->read_frame(5) } 1 .. 2;
    is($f[0] && $f[0]{rsv}, 4, 'compressed');
    ok($f[0] && $f[1] && $f[0]{payload} eq $f[1]{payload},
       'the same message compresses the same each time (an empty window each time)');
    is($f[1] && RawWS::Deflate->new->inflate($f[1]{payload}), $msg, 'the second inflates on its own');
    $c->send_close(1000);
    $c->wait_close(3);

    ($c) = accepted($server, '/echo?t=bits', 'window bits 9',
        extensions => 'permessage-deflate; server_max_window_bits=9');
    # Repeats 1000 bytes apart: a 32 KiB window would match them, which a
    # 512-byte window inflater refuses ("distance too far back").
    my $block = join '', map { chr(33 + ($_ * 7919) % 90) } 1 .. 1000;
    my $data = $block x 3;
    $c->send_text($data);
    my $f = $c->read_frame(5);
    is($f && $f->{rsv}, 4, 'compressed');
    is($f && RawWS::Deflate->new(bits => 9)->inflate($f->{payload}), $data,
       'it inflates with a 512-byte window');
    $c->send_close(1000);
    $c->wait_close(3);
};

subtest 'violations' => sub {
    %rec = ();
    my $z = RawWS::Deflate->new->compress('abc');
    for my $case (
        [ rsvcont => $server, RawWS::build(0x41, $z) . RawWS::build(0xC0, ''), 1002,
          'RSV1 on a continuation frame' ],
        [ rsvping => $server, RawWS::build(0xC9, ''), 1002, 'RSV1 on a ping' ],
        [ garbage => $server, RawWS::build(0xC1, "\xff" x 8), 1002, 'data that does not inflate' ],
        [ badtext => $server, RawWS::build(0xC1, RawWS::Deflate->new->compress("\xff\xfe")), 1007,
          'compressed text that is not UTF-8' ],
        [ offrsv  => $off, RawWS::build(0xC1, $z), 1002, 'RSV1 when nothing was agreed' ],
    ) {
        my ($t, $srv, $wire, $code, $label) = @$case;
        my ($c) = accepted($srv, "/echo?t=$t", $label, extensions => $OFFER);
        $c->write($wire);
        my $f = $c->read_nonping(3);
        is($f && $f->{code}, $code, "$label: close $code") or diag(RawWS::describe($f));
        my $d = wait_disconnect($t);
        is($d && $d->{code}, $code, "$label: app sees $code");
    }
};

subtest 'inflating stops at max_ws_message_size' => sub {
    %rec = ();
    my ($c) = accepted($small, '/echo?t=bomb', 'bomb', extensions => $OFFER);
    my $z = RawWS::Deflate->new->compress("\0" x (8 << 20));
    note(sprintf '8 MiB of zeros compress to %d bytes', length $z);
    ok(length($z) < 65536, 'one frame within max_ws_frame_size');
    $c->send_frame(0xC2, $z);
    my $f = $c->read_nonping(5);
    is($f && $f->{code}, 1009, 'a message that would inflate to 8 MiB (limit 1 MiB): close 1009')
        or diag(RawWS::describe($f));
    my $d = wait_disconnect('bomb');
    is($d && $d->{reason}, 'body_too_large', 'app: reason body_too_large');
    is([ grep { $_->{type} eq 'websocket.receive' } @{ $rec{bomb}{events} } ], [], 'nothing was delivered');

    ($c) = accepted($small, '/echo?t=fits', 'at the limit', extensions => $OFFER);
    $c->send_frame(0xC2, RawWS::Deflate->new->compress("\0" x (1 << 20)));
    $f = $c->read_frame(5);
    is($f && length(RawWS::Deflate->new->inflate($f->{payload}) // ''), 1 << 20,
       'exactly 1 MiB inflated is echoed') or diag(RawWS::describe($f));
    $c->send_close(1000);
    $c->wait_close(3);
};

subtest 'HTTP/2' => sub {
    skip_all($h2_why) if $h2_why;
    %rec = ();
    my @args = ('--timeout', 10, 'ws', '--header', "sec-websocket-extensions: $OFFER");
    my $c = H2Py->run($loop, [ '--port', $server->port, @args, '--path', '/echo?t=h2',
        '--step', 'deflate:h2 compressed', '--step', 'deflate:h2 compressed',
        '--step', 'text:h2 plain', '--step', 'wait:3', '--step', 'close:1000',
        '--step', 'wait-close', '--step', 'wait-end' ], 20);
    ok($c->done, 'the client ran to its end') or diag($c->output);
    my ($sid) = $c->streams('ws');
    is($c->status($sid), 200, 'accepted');
    is($c->headers($sid)->{'sec-websocket-extensions'}, 'permessage-deflate', 'sec-websocket-extensions: permessage-deflate');
    is([ map { $_->[1] } $c->messages($sid) ], [ 'h2 compressed', 'h2 compressed', 'h2 plain' ],
       'three echoes, inflated by the client') or diag($c->output);
    is(scalar(grep { $_->[1] == 4 } $c->records('rsv', $sid)), 3, 'each one compressed (RSV1)');
    pump_until($loop, 3, sub { $rec{h2} && $rec{h2}{disconnect} });
    is([ map { $_->{text} } grep { $_->{type} eq 'websocket.receive' } @{ $rec{h2}{events} } ],
       [ 'h2 compressed', 'h2 compressed', 'h2 plain' ], 'the app got plain text');

    $c = H2Py->run($loop, [ '--port', $off->port, @args, '--path', '/echo?t=h2off',
        '--step', 'deflate:x', '--step', 'wait-close', '--step', 'wait-end' ], 20);
    ($sid) = $c->streams('ws');
    ok(!exists $c->headers($sid)->{'sec-websocket-extensions'}, 'ws_compression => 0: declined');
    is($c->close_of($sid) && $c->close_of($sid)->{code}, 1002, 'and RSV1 is a violation') or diag($c->output);
};

for my $s ($server, $off, $small) {
    my $f = $s->shutdown;
    ok(pump_until($loop, 5, sub { $f->is_ready }), 'server shut down');
    $loop->remove($s);
}

done_testing;
