package ExtProc;

# Test helper for tests that drive outside programs (proxies, other
# clients) against a server: free TCP ports for programs that cannot
# listen on port 0 and report it, finding a program in PATH, waiting for a
# port to accept, and a blocking WebSocket client (Protocol::WebSocket)
# whose every read is bounded. The programs themselves are started and
# stopped by PID with ProcTest (start_cmd, stop_cmd, cmd_output).

use strict;
use warnings;

use Exporter 'import';
use File::Spec;
use IO::Select;
use IO::Socket::INET;
use ProcTest qw(alive);
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(
    free_port which wait_port
    ws_open ws_send_text ws_read ws_close
);

# A port that was free a moment ago: bound on 127.0.0.1 port 0, read and
# closed. Another program may take it before ours does; the window is
# short, and the only way for programs that cannot bind port 0 themselves.
sub free_port {
    my $s = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Proto => 'tcp', Listen => 1)
        or die "free_port: $!";
    my $port = $s->sockport;
    close $s;
    return $port;
}

# Full path of a program found in PATH, or undef.
sub which {
    my ($name) = @_;
    for my $dir (File::Spec->path) {
        my $p = File::Spec->catfile($dir, $name);
        return $p if -f $p && -x _;
    }
    return undef;
}

# Waits at most $secs until 127.0.0.1:$port accepts a connection, giving up
# early if $p (a ProcTest::start_cmd result) exits. True when it did.
sub wait_port {
    my ($port, $secs, $p) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 1);
        if ($s) { close $s; return 1 }
        return 0 if $p && !alive($p->{pid});
        sleep 0.05;
    }
    return 0;
}

# ---- a blocking WebSocket client ----

# Reads from $sock until $cond->(\$buf) holds, EOF or $secs pass.
sub _read_until {
    my ($ws, $secs, $cond) = @_;
    my $sel = IO::Select->new($ws->{sock});
    my $deadline = time + $secs;
    while (!$cond->()) {
        my $left = $deadline - time;
        return 'timeout' if $left <= 0;
        next unless $sel->can_read($left);
        my $n = sysread $ws->{sock}, $ws->{buf}, 65536, length $ws->{buf};
        return defined $n ? 'eof' : "read error: $!" unless $n;
    }
    return 'match';
}

# Connects to 127.0.0.1:$port and upgrades $path to a WebSocket (HTTP/1.1
# Upgrade, as a browser would). Returns a client hash: status (the
# response's status code, 101 when it worked), head (the response head),
# error (why it failed), sock.
sub ws_open {
    my ($port, $path, $secs) = @_;
    require Protocol::WebSocket::Handshake::Client;
    require Protocol::WebSocket::Frame;
    $secs //= 5;
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => $secs)
        or return { error => "connect 127.0.0.1:$port: $!" };
    my $ws = { sock => $sock, buf => '', frame => Protocol::WebSocket::Frame->new(max_payload_size => 0) };
    my $hs = Protocol::WebSocket::Handshake::Client->new(url => "ws://127.0.0.1:$port$path");
    local $SIG{PIPE} = 'IGNORE';
    my $req = $hs->to_string;
    syswrite($sock, $req) == length $req or return { %$ws, error => "write: $!" };
    my $end = _read_until($ws, $secs, sub { index($ws->{buf}, "\r\n\r\n") >= 0 });
    my $at = index($ws->{buf}, "\r\n\r\n");
    return { %$ws, error => "no response head ($end): $ws->{buf}" } if $at < 0;
    $ws->{head} = substr($ws->{buf}, 0, $at + 4);
    ($ws->{status}) = $ws->{head} =~ m{\AHTTP/1\.[01] ([0-9]{3})};
    $ws->{status} //= 0;
    return { %$ws, error => "status $ws->{status}: $ws->{buf}" } unless $ws->{status} == 101;
    my $copy = $ws->{buf};
    $hs->parse($copy) or return { %$ws, error => 'bad handshake: ' . ($hs->error // '?') };
    return { %$ws, error => 'handshake not complete' } unless $hs->is_done;
    substr($ws->{buf}, 0, $at + 4, '');    # frames that came with the head stay
    $ws->{frame}->append(delete $ws->{buf});
    $ws->{buf} = '';
    return $ws;
}

sub _send_frame {
    my ($ws, %args) = @_;
    local $SIG{PIPE} = 'IGNORE';
    my $bytes = Protocol::WebSocket::Frame->new(masked => 1, max_payload_size => 0, %args)->to_bytes;
    return syswrite($ws->{sock}, $bytes) == length $bytes;
}

sub ws_send_text { my ($ws, $text) = @_; return _send_frame($ws, buffer => $text, type => 'text') }

# The next message within $secs: { type => text|binary|close|ping|pong,
# data => payload } or { end => 'eof'|'timeout'|... }. Pings are answered.
sub ws_read {
    my ($ws, $secs) = @_;
    my $deadline = time + ($secs // 5);
    while (1) {
        my $data = $ws->{frame}->next_bytes;
        if (defined $data) {
            my $f = $ws->{frame};
            my $type = $f->is_text ? 'text' : $f->is_binary ? 'binary' : $f->is_close ? 'close'
                     : $f->is_ping ? 'ping' : $f->is_pong ? 'pong' : 'other';
            if ($type eq 'ping') { _send_frame($ws, buffer => $data, type => 'pong'); next }
            return { type => $type, data => $data };
        }
        my $end = _read_until($ws, $deadline - time, sub { length $ws->{buf} });
        return { end => $end } unless $end eq 'match';
        $ws->{frame}->append(delete $ws->{buf});
        $ws->{buf} = '';
    }
}

# Sends a close frame (1000) and waits for the peer's close and EOF.
# Returns the close code the peer sent (undef if none came).
sub ws_close {
    my ($ws, $secs) = @_;
    _send_frame($ws, type => 'close', buffer => pack('n', 1000));
    my $deadline = time + ($secs // 5);
    my $code;
    while ((my $left = $deadline - time) > 0) {
        my $m = ws_read($ws, $left);
        last if $m->{end};
        if ($m->{type} eq 'close') {
            $code = length $m->{data} >= 2 ? unpack('n', $m->{data}) : 1005;
            last;
        }
    }
    close $ws->{sock};
    return $code;
}

1;
