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
# (default '/'), protocols (Sec-WebSocket-Protocol value), extensions
# (Sec-WebSocket-Extensions value), headers (extra [name, value] pairs),
# rcvbuf (a fixed socket receive buffer, so that a client that does not
# read holds back a bounded amount); key, version and connection replace
# the Sec-WebSocket-Key, Sec-WebSocket-Version and Connection values, and
# leave the field out when given as undef. Does not wait for the answer:
# see ->handshake.
sub start {
    my ($class, %opt) = @_;
    my $self = $class->new(loop => $opt{loop}, port => $opt{port});
    if ($opt{rcvbuf}) {
        setsockopt($self->{sock}, SOL_SOCKET, SO_RCVBUF, pack('i', $opt{rcvbuf}))
            or die "setsockopt SO_RCVBUF: $!";
    }
    my %field = (key => $KEY, version => 13, connection => 'Upgrade');
    $field{$_} = $opt{$_} for grep { exists $opt{$_} } keys %field;
    my $req = 'GET ' . ($opt{path} // '/') . " HTTP/1.1\r\n"
        . "Host: 127.0.0.1\r\n"
        . "Upgrade: websocket\r\n";
    $req .= "Connection: $field{connection}\r\n"     if defined $field{connection};
    $req .= "Sec-WebSocket-Key: $field{key}\r\n"      if defined $field{key};
    $req .= "Sec-WebSocket-Version: $field{version}\r\n" if defined $field{version};
    $req .= "Sec-WebSocket-Protocol: $opt{protocols}\r\n" if defined $opt{protocols};
    $req .= "Sec-WebSocket-Extensions: $opt{extensions}\r\n" if defined $opt{extensions};
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

# The frames of one fragmented binary message of $total bytes (byte k is
# k * 31 mod 256) in frames of $piece bytes, as wire bytes.
# A frame (from read_frame) in words, for diagnostics.
sub describe {
    my ($f) = @_;
    return 'no frame' unless $f;
    return sprintf('opcode %d fin %d rsv %d len %d code %s reason %s', $f->{opcode}, $f->{fin}, $f->{rsv} // 0,
        length $f->{payload}, $f->{code} // '-', $f->{reason} // '-');
}

sub fragmented {
    my ($total, $piece) = @_;
    my $data = message_bytes($total);
    my $wire = '';
    my $n = int(($total + $piece - 1) / $piece) || 1;
    for my $i (0 .. $n - 1) {
        my $first = ($i == $n - 1 ? 0x80 : 0) | ($i == 0 ? BINARY : CONT);
        $wire .= build($first, substr($data, $i * $piece, $piece), key => "\x11\x22\x33\x44");
    }
    return $wire;
}

sub message_bytes {
    my ($total) = @_;
    my $cycle = join '', map { chr($_ * 31 % 256) } 0 .. 255;
    return substr($cycle x (int($total / 256) + 1), 0, $total);
}

# permessage-deflate (RFC 7692) with Compress::Raw::Zlib: a compressor
# (->compress: one message's payload, without the final 00 00 ff ff) and a
# decompressor (->inflate: one message's payload back), each keeping its
# window across messages unless made with fresh => 1. %opt: bits (the
# window, default 15), fresh.
package RawWS::Deflate;

use Compress::Raw::Zlib qw(Z_OK Z_STREAM_END Z_SYNC_FLUSH Z_DEFAULT_COMPRESSION);

sub new {
    my ($class, %opt) = @_;
    my $self = bless { bits => $opt{bits} // 15, fresh => $opt{fresh} // 0 }, $class;
    $self->_reset;
    return $self;
}

sub _reset {
    my ($self) = @_;
    my $bits = $self->{bits};
    ($self->{d}, my $st) = Compress::Raw::Zlib::Deflate->new(
        -WindowBits => -$bits, -Level => Z_DEFAULT_COMPRESSION, -AppendOutput => 1);
    die "deflate init: $st\n" unless $st == Z_OK;
    ($self->{i}, $st) = Compress::Raw::Zlib::Inflate->new(
        -WindowBits => -$bits, -AppendOutput => 1, -LimitOutput => 0, -Bufsize => 65536);
    die "inflate init: $st\n" unless $st == Z_OK;
}

sub compress {
    my ($self, $data) = @_;
    my $out = '';
    $self->{d}->deflate($data, $out) == Z_OK or die "deflate failed\n";
    $self->{d}->flush($out, Z_SYNC_FLUSH) == Z_OK or die "deflate flush failed\n";
    $out =~ s/\x00\x00\xff\xff\z// or die "no sync flush tail\n";
    $self->_reset if $self->{fresh};
    return $out;
}

# Undef when the payload does not inflate (with this window).
sub inflate {
    my ($self, $payload) = @_;
    my $in = $payload . "\x00\x00\xff\xff";
    my $out = '';
    my $st = $self->{i}->inflate($in, $out);
    return undef unless $st == Z_OK || $st == Z_STREAM_END;
    return $out;
}

1;
