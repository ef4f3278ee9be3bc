package H2Test;

# Test helper for the HTTP/2 tests. Servers run in forked children through
# TLSTest::serve (pass app => ... and http2 => 1), commands through
# TLSTest::run_cmd; this module adds:
#
#   - H2Test::Conn: a raw HTTP/2 client on a plain socket, frames written
#     and read by hand (preface, SETTINGS, HEADERS with a literal HPACK
#     block, DATA, RST_STREAM, PING, WINDOW_UPDATE, GOAWAY), every read
#     bounded in time. It never decodes the server's header blocks (the
#     server's HPACK uses Huffman coding); statuses and headers are checked
#     with nghttp and curl, bodies and frames with this client.
#   - nghttp(): runs nghttp -v and parses what it printed: the server's
#     SETTINGS, each stream's header blocks (head, then trailers), its DATA
#     frames and whether it ended, GOAWAY and RST_STREAM frames.
#   - rss_kb(): a process's resident set size.

use strict;
use warnings;

use Exporter 'import';

our @EXPORT_OK = qw(frame hpack_block nghttp rss_kb tools_missing h2c_preface
    DATA HEADERS RST_STREAM SETTINGS PING GOAWAY WINDOW_UPDATE CONTINUATION
    END_STREAM END_HEADERS ACK);

use constant {
    DATA => 0x0, HEADERS => 0x1, PRIORITY => 0x2, RST_STREAM => 0x3, SETTINGS => 0x4,
    PUSH_PROMISE => 0x5, PING => 0x6, GOAWAY => 0x7, WINDOW_UPDATE => 0x8,
    CONTINUATION => 0x9,
    END_STREAM => 0x1, ACK => 0x1, END_HEADERS => 0x4,
};

sub h2c_preface { "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" }

# The commands a test needs that are not installed (empty list: all there).
sub tools_missing {
    my @missing;
    for my $cmd (@_) {
        push @missing, $cmd unless grep { -x "$_/$cmd" } split /:/, $ENV{PATH} // '';
    }
    return @missing;
}

# One frame on the wire.
sub frame {
    my ($type, $flags, $sid, $payload) = @_;
    $payload //= '';
    return substr(pack('N', length $payload), 1) . pack('CCN', $type, $flags, $sid & 0x7fffffff) . $payload;
}

# HPACK integer with an N-bit prefix (RFC 7541 5.1).
sub _hint {
    my ($v, $bits, $first) = @_;
    my $max = (1 << $bits) - 1;
    return chr($first | $v) if $v < $max;
    my $s = chr($first | $max);
    $v -= $max;
    while ($v >= 128) {
        $s .= chr(($v % 128) + 128);
        $v = int($v / 128);
    }
    return $s . chr($v);
}

sub _hstr { my ($s) = @_; return _hint(length $s, 7, 0) . $s }

# A header block of literal fields without indexing (new names, no Huffman
# coding): the server's decoder table is never touched.
sub hpack_block {
    my (@pairs) = @_;
    my $out = '';
    while (@pairs) {
        my ($n, $v) = splice @pairs, 0, 2;
        $out .= "\x00" . _hstr($n) . _hstr($v);
    }
    return $out;
}

# The resident set size of $pid in kB (undef when gone).
sub rss_kb {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/status" or return undef;
    while (<$fh>) {
        return $1 if /^VmRSS:\s+([0-9]+) kB/;
    }
    return undef;
}

# Runs nghttp -v (no body output unless asked) against $url with @args;
# returns what it printed, parsed:
#   status   wait status of nghttp (or 'timeout')
#   out/err  what it printed
#   settings { NAME => value } from the server's first SETTINGS frame
#   streams  { id => { blocks => [ [ [name, value], ... ], ... ],
#                      data => bytes in DATA frames, ended => 0|1,
#                      rst => error code name } }
#   goaway   [ { last_stream_id, error_code } ... ]
sub nghttp {
    my ($secs, @args) = @_;
    require TLSTest;    # loaded here: it needs IO::Socket::SSL, which a test checks for first
    my ($st, $out, $err) = TLSTest::run_cmd($secs, 'nghttp', '-v', @args);
    my %r = (status => $st, out => $out, err => $err, streams => {}, goaway => []);
    my (%pending, $in_settings, $settings_done, $cur);
    for my $line (split /\n/, $out) {
        # A body nghttp printed runs into the next verbose line.
        $line =~ s/\A.+?(?=\[ *[0-9]+\.[0-9]{3}\] (?:recv|send) )//;
        if ($line =~ /^\[\s*[0-9.]+\] recv \(stream_id=([0-9]+)\) ([^:]*|:[^:]+): (.*)$/) {
            push @{ $pending{$1} }, [ $2, $3 ];
            next;
        }
        if ($line =~ /^\[\s*[0-9.]+\] (recv|send) (\S+) frame <length=([0-9]+), flags=0x([0-9a-f]+), stream_id=([0-9]+)>/) {
            my ($dir, $type, $len, $flags, $sid) = ($1, $2, $3, hex $4, $5);
            $cur = $dir eq 'recv' ? $type : '';
            $in_settings = 0;
            next unless $dir eq 'recv';
            my $s = $sid ? ($r{streams}{$sid} //= { blocks => [], data => 0, ended => 0, frames => 0 }) : undef;
            if ($type eq 'HEADERS') {
                push @{ $s->{blocks} }, delete($pending{$sid}) // [];
                $s->{ended} = 1 if $flags & END_STREAM;
            }
            elsif ($type eq 'DATA') {
                $s->{data} += $len;
                $s->{frames}++;
                $s->{ended} = 1 if $flags & END_STREAM;
            }
            elsif ($type eq 'SETTINGS' && !($flags & ACK) && !$settings_done++) {
                $r{settings} = {};
                $in_settings = 1;
            }
            elsif ($type eq 'GOAWAY') {
                push @{ $r{goaway} }, {};
            }
            next;
        }
        if ($in_settings && $line =~ /^\s+\[(SETTINGS_[A-Z_]+)\(0x[0-9a-f]+\):([0-9]+)\]/) {
            $r{settings}{$1} = $2;
            next;
        }
        if (($cur // '') eq 'GOAWAY' && $line =~ /last_stream_id=([0-9]+), error_code=([A-Z_]+)/) {
            @{ $r{goaway}[-1] }{qw(last_stream_id error_code)} = ($1, $2);
        }
    }
    while ($out =~ /recv RST_STREAM frame <[^>]*stream_id=([0-9]+)>\s*\(error_code=([A-Z_]+)/g) {
        ($r{streams}{$1} //= { blocks => [], data => 0, ended => 0, frames => 0 })->{rst} = $2;
    }
    return \%r;
}

# The fields of a parsed nghttp header block as { name => [values] }.
sub fields_of {
    my ($block) = @_;
    my %f;
    push @{ $f{ $_->[0] } }, $_->[1] for @{ $block || [] };
    return \%f;
}

package H2Test::Conn;

# A raw HTTP/2 client connection (h2c, prior knowledge).
#   my $c = H2Test::Conn->new($port, settings => { 4 => 1 << 30 }, ack => 1, rcvbuf => 65536);
#   $c->send(H2Test::frame(...));
#   $c->request(1, GET => '/path', end => 1, headers => [...]);
#   $c->read_until($secs, sub { $c->ended(1) });   # 'match', 'eof', 'timeout' or an error
#   $c->body(1), $c->ended(1), $c->goaways, $c->rst(1), $c->frames
#   $c->{no_read} = 1: send() does not read while it waits to write
#   $c->{count_only} / {quiet_data}: DATA is counted (got), not kept

use strict;
use warnings;

use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use IO::Select;
use IO::Socket::INET;
use Socket qw(SOL_SOCKET SO_RCVBUF);
use Time::HiRes qw(time);

sub new {
    my ($class, $port, %o) = @_;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 5)
        or die "connect to $port: $!";
    # rcvbuf: a fixed receive buffer (no autotuning, which may grow to many
    # MB), so that what a client that does not read can hold is bounded.
    setsockopt($sock, SOL_SOCKET, SO_RCVBUF, $o{rcvbuf}) or die "SO_RCVBUF: $!" if $o{rcvbuf};
    $sock->blocking(0);
    binmode $sock;
    my $self = bless {
        sock   => $sock,
        buf    => '',
        frames => [],          # every frame read: { type, flags, sid, payload }
        body   => {},
        ended  => {},
        heads  => {},          # HEADERS frames per stream
        ack    => $o{ack} // 1,  # answer SETTINGS and PING
        eof    => 0,
        wrote  => 0,
    }, $class;
    my $settings = join '', map { pack 'nN', $_, $o{settings}{$_} } sort { $a <=> $b } keys %{ $o{settings} || {} };
    $self->send(H2Test::h2c_preface() . H2Test::frame(H2Test::SETTINGS, 0, 0, $settings)) unless $o{no_preface};
    return $self;
}

sub sock { $_[0]{sock} }

# Writes all of $bytes within $secs (default 5); returns the bytes written
# (less than all when the peer stopped reading or closed).
sub send {
    my ($self, $bytes, $secs) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $deadline = time + ($secs // 5);
    my $off = 0;
    while ($off < length $bytes) {
        my $n = syswrite $self->{sock}, $bytes, length($bytes) - $off, $off;
        if (defined $n) {
            $off += $n;
            next;
        }
        last unless $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
        my $left = $deadline - time;
        last if $left <= 0;
        IO::Select->new($self->{sock})->can_write($left > 0.2 ? 0.2 : $left);
        $self->pump unless $self->{no_read};    # so that the peer is not blocked on us
    }
    $self->{wrote} += $off;
    return $off;
}

# A request's HEADERS frame (END_HEADERS; END_STREAM with end => 1).
sub request {
    my ($self, $sid, $method, $path, %o) = @_;
    my $block = H2Test::hpack_block(
        ':method' => $method, ':scheme' => $o{scheme} // 'http', ':path' => $path,
        ':authority' => $o{authority} // 'localhost', @{ $o{headers} || [] });
    my $flags = H2Test::END_HEADERS | ($o{end} ? H2Test::END_STREAM : 0);
    return $self->send(H2Test::frame(H2Test::HEADERS, $flags, $sid, $block));
}

# DATA on a stream, cut into frames of at most 16 KB.
sub data {
    my ($self, $sid, $bytes, %o) = @_;
    my $out = '';
    my $off = 0;
    do {
        my $piece = substr($bytes, $off, 16384);
        $off += length $piece;
        $out .= H2Test::frame(H2Test::DATA, ($o{end} && $off >= length $bytes) ? H2Test::END_STREAM : 0, $sid, $piece);
    } while ($off < length $bytes);
    return $self->send($out, $o{secs});
}

sub window_update {
    my ($self, $sid, $n) = @_;
    return $self->send(H2Test::frame(H2Test::WINDOW_UPDATE, 0, $sid, pack('N', $n)));
}

# Reads what is there now (no waiting), or at most about $max bytes (a
# slow reader); returns 0 at EOF or on an error.
sub pump {
    my ($self, $max) = @_;
    return 0 if $self->{eof};
    my $got = 0;
    while (!defined $max || $got < $max) {
        my $n = sysread $self->{sock}, my $chunk, defined $max ? $max - $got : 262144;
        if (defined $n) {
            if ($n == 0) {
                $self->{eof} = 'eof';
                last;
            }
            $self->{buf} .= $chunk;
            $self->{read} += $n;
            $got += $n;
            next;
        }
        $self->{eof} = "$!" unless $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
        last;
    }
    $self->_frames;
    return $self->{eof} ? 0 : 1;
}

sub _frames {
    my ($self) = @_;
    while (length $self->{buf} >= 9) {
        my ($len) = unpack 'N', "\0" . substr($self->{buf}, 0, 3);
        last if length $self->{buf} < 9 + $len;
        my ($type, $flags, $sid) = unpack 'CCN', substr($self->{buf}, 3, 6);
        $sid &= 0x7fffffff;
        my $payload = substr($self->{buf}, 9, $len);
        substr($self->{buf}, 0, 9 + $len, '');
        my $f = { type => $type, flags => $flags, sid => $sid, payload => $payload, at => time };
        push @{ $self->{frames} }, $f unless $type == H2Test::DATA && $self->{quiet_data};
        if ($type == H2Test::DATA) {
            $self->{body}{$sid} .= $payload unless $self->{count_only};
            $self->{got}{$sid} += $len;
            $self->{ended}{$sid} = 1 if $flags & H2Test::END_STREAM;
            $self->{window_debt}{$sid} += $len;
            $self->{window_debt}{0} += $len;
            $self->_give_window if $self->{auto_window};
        }
        elsif ($type == H2Test::HEADERS) {
            push @{ $self->{heads}{$sid} }, $f;
            $self->{ended}{$sid} = 1 if $flags & H2Test::END_STREAM;
        }
        elsif ($type == H2Test::SETTINGS && !($flags & H2Test::ACK) && $self->{ack}) {
            $self->send(H2Test::frame(H2Test::SETTINGS, H2Test::ACK, 0, ''));
        }
        elsif ($type == H2Test::PING && !($flags & H2Test::ACK) && $self->{ack}) {
            $self->send(H2Test::frame(H2Test::PING, H2Test::ACK, 0, $payload));
        }
    }
    return;
}

# With auto_window on, the client gives back the window for what it read.
sub _give_window {
    my ($self) = @_;
    for my $sid (keys %{ $self->{window_debt} }) {
        my $n = delete $self->{window_debt}{$sid};
        next unless $n;
        next if $sid && $self->{ended}{$sid};
        $self->send(H2Test::frame(H2Test::WINDOW_UPDATE, 0, $sid, pack('N', $n)));
    }
}

# Reads until $cond->() holds, EOF/error or $secs pass: 'match', 'eof',
# the error, or 'timeout'.
sub read_until {
    my ($self, $secs, $cond) = @_;
    my $deadline = time + $secs;
    while (1) {
        $self->pump;
        return 'match' if $cond && $cond->();
        return $self->{eof} if $self->{eof};
        my $left = $deadline - time;
        return 'timeout' if $left <= 0;
        IO::Select->new($self->{sock})->can_read($left > 0.2 ? 0.2 : $left);
    }
}

sub frames { @{ $_[0]{frames} } }
sub body   { $_[0]{body}{ $_[1] } // '' }
sub got    { $_[0]{got}{ $_[1] } // 0 }
sub ended  { $_[0]{ended}{ $_[1] } ? 1 : 0 }
sub heads  { @{ $_[0]{heads}{ $_[1] } || [] } }
sub eof    { $_[0]{eof} }

# GOAWAY frames read: [ { last_stream_id, error_code, at } ... ]
sub goaways {
    my ($self) = @_;
    return map {
        my ($last, $code) = unpack 'NN', $_->{payload};
        { last_stream_id => $last & 0x7fffffff, error_code => $code, at => $_->{at} }
    } grep { $_->{type} == H2Test::GOAWAY } $self->frames;
}

# The error code of the RST_STREAM read for $sid (undef if none).
sub rst {
    my ($self, $sid) = @_;
    my ($f) = grep { $_->{type} == H2Test::RST_STREAM && $_->{sid} == $sid } $self->frames;
    return $f ? unpack('N', $f->{payload}) : undef;
}

# The first byte of the first HEADERS block of $sid: the static-table index
# the server used for :status (0x88 200, 0x89 204, 0x8d 404, 0x8e 500), or
# undef.
sub status_byte {
    my ($self, $sid) = @_;
    my ($h) = $self->heads($sid) or return undef;
    return ord $h->{payload};
}

sub close {
    my ($self) = @_;
    close $self->{sock} if $self->{sock};
    delete $self->{sock};
}

1;
