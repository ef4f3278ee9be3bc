package RawWS;

# Test helper: a wire-level WebSocket client built on RawHTTP (same loop,
# non-blocking socket, every wait pumps the loop and is bounded in time).
# Frames are built and parsed here with pack/unpack: client frames are
# masked unless asked otherwise, server frames are expected unmasked.

use strict;
use warnings;

use RawHTTP ();
use Socket qw(SOL_SOCKET SO_RCVBUF);
our @ISA = ('RawHTTP');

our $KEY = 'dGhlIHNhbXBsZSBub25jZQ==';

# Opcodes.
use constant {
    CONT   => 0x0,
    TEXT   => 0x1,
    BINARY => 0x2,
    CLOSE  => 0x8,
    PING   => 0x9,
    PONG   => 0xA,
};

# Connects and writes the upgrade request. %opt: loop, port, path
# (default '/'), protocols (Sec-WebSocket-Protocol value), headers (extra
# [name, value] pairs), rcvbuf (a fixed socket receive buffer, so that a
# client that does not read holds back a bounded amount). Does not wait for
# the answer: see ->handshake.
sub start {
    my ($class, %opt) = @_;
    my $self = $class->new(loop => $opt{loop}, port => $opt{port});
    if ($opt{rcvbuf}) {
        setsockopt($self->{sock}, SOL_SOCKET, SO_RCVBUF, pack('i', $opt{rcvbuf}))
            or die "setsockopt SO_RCVBUF: $!";
    }
    my $req = 'GET ' . ($opt{path} // '/') . " HTTP/1.1\r\n"
        . "Host: 127.0.0.1\r\n"
        . "Upgrade: websocket\r\n"
        . "Connection: Upgrade\r\n"
        . "Sec-WebSocket-Key: $KEY\r\n"
        . "Sec-WebSocket-Version: 13\r\n";
    $req .= "Sec-WebSocket-Protocol: $opt{protocols}\r\n" if defined $opt{protocols};
    $req .= "$_->[0]: $_->[1]\r\n" for @{ $opt{headers} || [] };
    $self->write("$req\r\n");
    return $self;
}

# Reads the handshake answer: a 101 (only its head; frames that follow stay
# buffered) or any other response with its body.
sub handshake {
    my ($self, $timeout) = @_;
    $timeout //= 5;
    my $resp;
    $self->wait_for($timeout, sub {
        my $s = shift;
        $resp = RawHTTP::_parse($s->{buf}, 0, $s->{eof} || $s->{err});
        return $resp ? 1 : 0;
    });
    return undef unless $resp;
    substr($self->{buf}, 0, $resp->{consumed}, '');
    return $resp;
}

# Builds one frame. $first is the whole first byte (FIN, RSV, opcode).
# %opt: mask => 0 sends it unmasked; key => a 4-byte mask key.
sub build {
    my ($first, $payload, %opt) = @_;
    $payload //= '';
    my $masked = $opt{mask} // 1;
    my $m = $masked ? 0x80 : 0;
    my $len = length $payload;
    my $out = pack 'C', $first;
    if    ($len < 126)   { $out .= pack 'C', $m | $len }
    elsif ($len < 65536) { $out .= pack 'Cn', $m | 126, $len }
    else                 { $out .= pack 'CNN', $m | 127, int($len / 2**32), $len % 2**32 }
    if ($masked) {
        my $key = $opt{key} // pack 'N', int rand 2**32;
        my $rep = $key x (int($len / 4) + 1);
        $out .= $key . ($payload ^ substr($rep, 0, $len));
    }
    else {
        $out .= $payload;
    }
    return $out;
}

sub send_frame {
    my ($self, $first, $payload, %opt) = @_;
    $self->write(build($first, $payload, %opt));
}

sub send_text {
    my ($self, $text) = @_;
    utf8::encode($text) if utf8::is_utf8($text);
    $self->send_frame(0x80 | TEXT, $text);
}

sub send_binary { $_[0]->send_frame(0x80 | BINARY, $_[1]) }

sub send_close {
    my ($self, $code, $reason) = @_;
    my $p = defined $code ? pack('n', $code) . ($reason // '') : '';
    $self->send_frame(0x80 | CLOSE, $p);
}

# One server frame from the buffer, or undef while incomplete.
sub _take_frame {
    my ($self) = @_;
    my $buf = \$self->{buf};
    return undef if length $$buf < 2;
    my ($b0, $b1) = unpack 'CC', $$buf;
    my $pos = 2;
    my $len = $b1 & 0x7F;
    if ($len == 126) {
        return undef if length $$buf < 4;
        $len = unpack 'n', substr($$buf, 2, 2);
        $pos = 4;
    }
    elsif ($len == 127) {
        return undef if length $$buf < 10;
        my ($hi, $lo) = unpack 'NN', substr($$buf, 2, 8);
        $len = $hi * 2**32 + $lo;
        $pos = 10;
    }
    my $key;
    if ($b1 & 0x80) {
        return undef if length $$buf < $pos + 4;
        $key = substr($$buf, $pos, 4);
        $pos += 4;
    }
    return undef if length $$buf < $pos + $len;
    my $payload = substr($$buf, $pos, $len);
    substr($$buf, 0, $pos + $len, '');
    if (defined $key) {
        my $rep = $key x (int($len / 4) + 1);
        $payload ^= substr($rep, 0, $len);
    }
    my $f = {
        first   => $b0,
        fin     => ($b0 & 0x80) ? 1 : 0,
        rsv     => ($b0 >> 4) & 7,
        opcode  => $b0 & 0x0F,
        masked  => ($b1 & 0x80) ? 1 : 0,
        payload => $payload,
    };
    if ($f->{opcode} == CLOSE && length $payload >= 2) {
        $f->{code}   = unpack 'n', $payload;
        $f->{reason} = substr($payload, 2);
    }
    return $f;
}

# The next server frame, waiting up to $timeout seconds; undef if none came
# (the connection closed or the time ran out).
sub read_frame {
    my ($self, $timeout) = @_;
    my $f;
    $self->wait_for($timeout // 5, sub { $f = $_[0]->_take_frame; $f ? 1 : 0 });
    $f //= $self->_take_frame;
    return $f;
}

# The next frame that is not a ping (pings are counted in ->{pings}).
sub read_nonping {
    my ($self, $timeout) = @_;
    while (my $f = $self->read_frame($timeout)) {
        if ($f->{opcode} == PING) { $self->{pings}++; next }
        return $f;
    }
    return undef;
}

1;
