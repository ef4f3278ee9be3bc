package RawHTTP;

# Test helper: a plain TCP client for wire-level checks against a PAGI::Server
# running on the same IO::Async loop in this process. Every wait pumps the
# loop (so the app can run) and is bounded in time; nothing here blocks.

use strict;
use warnings;

use Exporter 'import';
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);
use Errno qw(EAGAIN EWOULDBLOCK EINTR ECONNRESET EPIPE);
use Time::HiRes qw(time);

our @EXPORT_OK = qw(start_server stop_server pump_until stream_of);

# Starts a server on an ephemeral port; returns it (listening).
sub start_server {
    my ($loop, %opt) = @_;
    require PAGI::Server;
    my $server = PAGI::Server->new(
        host          => '127.0.0.1',
        port          => 0,
        quiet         => 1,
        access_log    => undef,
        lifespan_mode => 'off',
        %opt,
    );
    $loop->add($server);
    $server->listen->get;
    return $server;
}

# Shuts a server from start_server down and takes it off the loop.
sub stop_server {
    my ($loop, $server) = @_;
    $server->shutdown->get;
    $loop->remove($server);
}

# Runs the loop in short slices until $cond returns true or $timeout passes.
sub pump_until {
    my ($loop, $timeout, $cond) = @_;
    my $deadline = time + $timeout;
    while (time < $deadline) {
        return 1 if $cond->();
        $loop->loop_once(0.02);
    }
    return $cond->() ? 1 : 0;
}

# A streamed (chunked) response read so far, as an SSE client sees it:
# (status, the de-chunked body so far, whether the 0-size chunk came).
sub stream_of {
    my ($buf) = @_;
    my $end = index($buf, "\r\n\r\n");
    return (undef, '', 0) if $end < 0;
    my ($status) = $buf =~ m{\AHTTP/1\.[01] (\d{3})};
    my $pos  = $end + 4;
    my $body = '';
    while (1) {
        my $le = index($buf, "\r\n", $pos);
        last if $le < 0;
        my $size = hex substr($buf, $pos, $le - $pos);
        return ($status, $body, 1) if $size == 0 && substr($buf, $le + 2, 2) eq "\r\n";
        last if $size == 0 || length($buf) < $le + 2 + $size + 2;
        $body .= substr($buf, $le + 2, $size);
        $pos = $le + 2 + $size + 2;
    }
    return ($status, $body, 0);
}

sub new {
    my ($class, %opt) = @_;
    # path => a Unix socket; otherwise host/port over TCP.
    my $sock = defined $opt{path}
        ? IO::Socket::UNIX->new(Peer => $opt{path}, Type => SOCK_STREAM)
        : IO::Socket::INET->new(
            PeerAddr => $opt{host} // '127.0.0.1',
            PeerPort => $opt{port},
            Proto    => 'tcp',
            Timeout  => 5,
        );
    $sock or die 'connect to ' . ($opt{path} // "port $opt{port}") . ": $!";
    $sock->blocking(0);
    binmode $sock;
    return bless {
        loop => $opt{loop},
        sock => $sock,
        buf  => '',
        eof  => 0,
        err  => undef,   # 'reset' or another read error
    }, $class;
}

sub sock { $_[0]{sock} }

# Reads whatever is available now, without waiting.
sub _slurp {
    my ($self) = @_;
    return if $self->{eof} || $self->{err};
    my $sel = IO::Select->new($self->{sock});
    while ($sel->can_read(0)) {
        my $n = sysread($self->{sock}, my $chunk, 65536);
        if (!defined $n) {
            next if $! == EINTR;
            last if $! == EAGAIN || $! == EWOULDBLOCK;
            $self->{err} = $! == ECONNRESET ? 'reset' : "read error: $!";
            return;
        }
        if ($n == 0) {
            $self->{eof} = 1;
            return;
        }
        $self->{buf} .= $chunk;
    }
}

# Pumps the loop and reads until $cond->($self) or the time is up.
sub wait_for {
    my ($self, $timeout, $cond) = @_;
    my $deadline = time + $timeout;
    while (1) {
        $self->_slurp;
        return 1 if $cond->($self);
        return 0 if $self->{eof} || $self->{err} || time >= $deadline;
        $self->{loop}->loop_once(0.02);
    }
}

# Writes all bytes, pumping the loop while the socket is full.
sub write {
    my ($self, $data, $timeout) = @_;
    $timeout //= 10;
    my $deadline = time + $timeout;
    my $off = 0;
    while ($off < length $data) {
        die "write timed out after $off bytes\n" if time >= $deadline;
        my $n = syswrite($self->{sock}, $data, 65536, $off);
        if (!defined $n) {
            die "write failed: $!\n" unless $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR;
            $self->{loop}->loop_once(0.01);
            $self->_slurp;
            next;
        }
        $off += $n;
    }
    return $off;
}

# Waits until the peer closes (EOF or reset). Returns 'eof', 'reset',
# another error string, or 'timeout'. Data that arrives meanwhile is kept.
sub wait_close {
    my ($self, $timeout) = @_;
    $self->wait_for($timeout // 3, sub { $_[0]{eof} || $_[0]{err} });
    return $self->{err} // ($self->{eof} ? 'eof' : 'timeout');
}

# Reads one complete response. %opt: head => 1 (no body expected),
# timeout => seconds. Returns a hashref, or undef (see ->{error}).
sub read_response {
    my ($self, %opt) = @_;
    my $timeout = $opt{timeout} // 5;
    my $resp;
    $self->wait_for($timeout, sub {
        my $s = shift;
        $resp = _parse($s->{buf}, $opt{head}, $s->{eof} || $s->{err});
        return $resp ? 1 : 0;
    });
    unless ($resp) {
        $self->{error} = $self->{err} // ($self->{eof} ? 'eof' : 'timeout');
        return undef;
    }
    substr($self->{buf}, 0, $resp->{consumed}, '');
    return $resp;
}

sub close { my $s = shift; CORE::close($s->{sock}) }

# Returns undef while incomplete. A close-delimited body needs $closed.
sub _parse {
    my ($buf, $head_req, $closed) = @_;
    my $end = index($buf, "\r\n\r\n");
    return undef if $end < 0;
    my $head = substr($buf, 0, $end);
    my ($status_line, @lines) = split /\r\n/, $head;
    my ($version, $status, $reason) = $status_line =~ m{^HTTP/(\d\.\d) (\d{3})(?: (.*))?$}
        or return { bad => 1, raw => $buf, consumed => length $buf };
    my @headers;
    for my $l (@lines) {
        my ($n, $v) = $l =~ /^([^:]+):[ \t]*(.*?)[ \t]*$/ or next;
        push @headers, [$n, $v];
    }
    my %h;
    for (@headers) {
        my $k = lc $_->[0];
        $h{$k} = exists $h{$k} ? "$h{$k}, $_->[1]" : $_->[1];
    }
    my $pos = $end + 4;
    my $r = {
        version     => $version,
        status      => $status,
        reason      => $reason // '',
        headers     => \@headers,
        header      => \%h,
        head_raw    => substr($buf, 0, $pos),
        chunked     => 0,
        trailers    => [],
        close_delim => 0,
    };
    if ($head_req || $status =~ /^1/ || $status == 204 || $status == 304) {
        $r->{body} = '';
    }
    elsif (($h{'transfer-encoding'} // '') =~ /chunked/i) {
        $r->{chunked} = 1;
        my $body = '';
        while (1) {
            my $le = index($buf, "\r\n", $pos);
            return undef if $le < 0;
            my ($size) = substr($buf, $pos, $le - $pos) =~ /^([0-9a-fA-F]+)/
                or return { bad => 1, raw => $buf, consumed => length $buf };
            $size = hex $size;
            $pos = $le + 2;
            if ($size == 0) {
                # Trailer section, ended by an empty line.
                while (1) {
                    my $te = index($buf, "\r\n", $pos);
                    return undef if $te < 0;
                    my $line = substr($buf, $pos, $te - $pos);
                    $pos = $te + 2;
                    last if $line eq '';
                    push @{ $r->{trailers} }, [split /:\s*/, $line, 2];
                }
                last;
            }
            return undef if length($buf) < $pos + $size + 2;
            $body .= substr($buf, $pos, $size);
            $pos += $size + 2;
        }
        $r->{body} = $body;
    }
    elsif (defined $h{'content-length'}) {
        my $len = $h{'content-length'};
        return undef if length($buf) < $pos + $len;
        $r->{body} = substr($buf, $pos, $len);
        $pos += $len;
    }
    else {
        return undef unless $closed;
        $r->{close_delim} = 1;
        $r->{body} = substr($buf, $pos);
        $pos = length $buf;
    }
    $r->{consumed} = $pos;
    return $r;
}

# One-shot: connect, write $request, read one response.
sub request {
    my ($class, $loop, $port, $request, %opt) = @_;
    my $c = $class->new(loop => $loop, port => $port);
    $c->write($request);
    my $r = $c->read_response(%opt);
    return wantarray ? ($r, $c) : $r;
}

# ---- a server in a forked child, for the SIGTERM tests of SSE ----
#
# RawHTTP::SSEChild->start(%opt) runs start_server(%opt) on a loop of its
# own in a forked child (no core runtime may exist in this process before
# the fork) until SIGTERM ends it. Its app answers an SSE request with the
# event 'open', then tells the parent "reason=R" when it gets its
# sse.disconnect. t/38 (HTTP/1.1) and t/56 (HTTP/2) run it.
#
#   my $child = RawHTTP::SSEChild->start(shutdown_timeout => 20);
#   my $port  = $child->port($loop, 10);     # undef if it never listened
#   kill TERM => $child->pid;
#   my $st = $child->exited($loop, 5);       # wait status, undef if running
#   like($child->heard, qr/reason=server_shutdown/);
#   $child->stop;                            # SIGKILL if still there

package RawHTTP::SSEChild;

use Future::AsyncAwait;
use POSIX ();

sub start {
    my ($class, %opt) = @_;
    pipe(my $rd, my $wr) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        close $rd;
        my $ok = eval {
            require IO::Async::Loop;
            my $loop = IO::Async::Loop->new;
            my $server = RawHTTP::start_server($loop, %opt,
                app => async sub {
                    my ($scope, $receive, $send) = @_;
                    return unless $scope->{type} eq 'sse';
                    await $send->({ type => 'sse.start' });
                    await $send->({ type => 'sse.send', data => 'open' });
                    while (1) {
                        my $ev = await $receive->();
                        next unless $ev->{type} eq 'sse.disconnect';
                        syswrite $wr, "reason=" . ($ev->{reason} // '') . "\n";
                        last;
                    }
                });
            syswrite $wr, "port=" . $server->port . "\n";
            $loop->run;    # SIGTERM shuts the server down and stops the loop
            1;
        };
        syswrite $wr, "error=$@\n" unless $ok;
        POSIX::_exit($ok ? 0 : 1);
    }
    close $wr;
    $rd->blocking(0);
    return bless { pid => $pid, rd => $rd, heard => '', main => $$ }, $class;
}

sub pid { $_[0]{pid} }

# All the child has written so far.
sub heard {
    my ($self) = @_;
    my $n = sysread($self->{rd}, my $b, 4096);
    $self->{heard} .= $b if $n;
    return $self->{heard};
}

# Pumps $loop (at most $secs) until the child reports its port or fails.
sub port {
    my ($self, $loop, $secs) = @_;
    RawHTTP::pump_until($loop, $secs, sub { $self->heard =~ /port=(\d+)\n|error=/ });
    my ($port) = $self->{heard} =~ /port=(\d+)/;
    return $port;
}

# Pumps $loop (at most $secs) until the child exits; its wait status, or
# undef if it is still running.
sub exited {
    my ($self, $loop, $secs) = @_;
    return $self->{status} if defined $self->{status};
    RawHTTP::pump_until($loop, $secs, sub {
        return 0 unless waitpid($self->{pid}, POSIX::WNOHANG()) == $self->{pid};
        $self->{status} = $?;
        return 1;
    });
    return $self->{status};
}

# Kills the child (SIGKILL) unless it has exited, and reaps it.
sub stop {
    my ($self) = @_;
    return if defined $self->{status} || $$ != $self->{main};
    if (waitpid($self->{pid}, POSIX::WNOHANG()) == 0) {
        kill KILL => $self->{pid};
        waitpid($self->{pid}, 0);
    }
    $self->{status} = $?;
}

sub DESTROY { local ($!, $?); $_[0]->stop }

1;
