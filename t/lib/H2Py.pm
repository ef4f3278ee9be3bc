package H2Py;

# Test helper: runs t/tools/h2_client.py (an HTTP/2 client on Python's h2
# package) against a server on this process's IO::Async loop, reading its
# line-based report while the loop is pumped, every wait bounded in time.
# The client is stopped by PID if it outlives its wait, and at the end
# (ProcTest::start_cmd starts it).
#
#   my $why = H2Py::skip_reason();            # '' when the client can run
#   my $c = H2Py->run($loop, [ '--port', $port, 'ws', '--path', '/x', ... ]);
#   $c->status(1), $c->texts(1), $c->close_of(1), $c->settings, ...
#
# PAGI_TEST_PYTHON names the python to use; otherwise the first of
# python3 and /usr/bin/python3 that can import h2.

use strict;
use warnings;

use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use File::Basename qw(dirname);
use File::Spec;
use ProcTest qw(start_cmd reap slurp);
use Time::HiRes qw(time);

my $TOOL = File::Spec->catfile(dirname(__FILE__), '..', 'tools', 'h2_client.py');
my $MAIN = $$;
my $PYTHON;

sub tool { $TOOL }

# The python that can import h2, or undef.
sub python {
    return $PYTHON if defined $PYTHON;
    for my $py (grep { defined && length } $ENV{PAGI_TEST_PYTHON}, 'python3', '/usr/bin/python3') {
        my $got = `$py -c 'import h2; print(h2.__version__)' 2>/dev/null`;
        if ($? == 0 && $got =~ /\A\d/) {
            return $PYTHON = $py;
        }
    }
    return undef;
}

sub skip_reason {
    return '' if python();
    return 'the Python module h2 (hyper-h2) is not installed: `import h2` fails '
        . '(pip install h2, or the python3-h2 package; PAGI_TEST_PYTHON names another python)';
}

# Starts the client with @$args; returns the handle at once.
sub start {
    my ($class, $loop, $args) = @_;
    my $py = python() // die "no python with h2\n";
    pipe(my $rd, my $wr) or die "pipe: $!";
    my $p = start_cmd(argv => [ $py, $TOOL, @$args ], stdout => $wr, name => 'client');
    close $wr;
    $rd->blocking(0);
    return bless {
        loop  => $loop, pid => $p->{pid}, fh => $rd, err => $p->{err}, args => $args,
        buf   => '', lines => [], status => undef, t0 => time,
    }, $class;
}

# Starts the client and waits (at most $secs, default 15) until it is done.
sub run {
    my ($class, $loop, $args, $secs) = @_;
    my $c = $class->start($loop, $args);
    $c->finish($secs // 15);
    return $c;
}

# Reads what the client wrote so far.
sub _read {
    my ($self) = @_;
    return unless $self->{fh};
    while (1) {
        my $n = sysread($self->{fh}, my $chunk, 65536);
        if (!defined $n) {
            next if $! == EINTR;
            last if $! == EAGAIN || $! == EWOULDBLOCK;
            last;
        }
        if ($n == 0) {
            close $self->{fh};
            $self->{fh} = undef;
            last;
        }
        $self->{buf} .= $chunk;
    }
    while ((my $i = index($self->{buf}, "\n")) >= 0) {
        push @{ $self->{lines} }, substr($self->{buf}, 0, $i);
        substr($self->{buf}, 0, $i + 1, '');
    }
}

# True once the client has exited (its wait status in {status}).
sub _reap {
    my ($self) = @_;
    return 1 if defined $self->{status};
    $self->{status} = reap($self->{pid});
    return defined $self->{status} ? 1 : 0;
}

# Pumps the loop and reads until $cond->($self) or $secs pass; true if met.
sub wait_for {
    my ($self, $secs, $cond) = @_;
    my $deadline = time + $secs;
    while (1) {
        $self->_read;
        return 1 if $cond->($self);
        return 0 if time >= $deadline || (!$self->{fh} && $self->_reap);
        $self->{loop}->loop_once(0.01);
    }
}

# Waits until a line matches $re; returns the first such line (or undef).
sub wait_line {
    my ($self, $secs, $re) = @_;
    my $line;
    $self->wait_for($secs, sub { ($line) = grep { $_ =~ $re } @{ $_[0]{lines} }; defined $line });
    return $line;
}

# Waits (at most $secs) for the client to say 'done' and exit; kills it
# by PID if it does not. True when it finished by itself.
sub finish {
    my ($self, $secs) = @_;
    my $ok = $self->wait_for($secs, sub { !$_[0]{fh} && $_[0]->_reap });
    unless ($ok) {
        kill KILL => $self->{pid};
        my $deadline = time + 5;
        $self->{loop}->loop_once(0.01) until $self->_reap || time > $deadline;
        $self->_read;
        push @{ $self->{lines} }, 'killed';
    }
    $self->{elapsed} = time - $self->{t0};
    return $ok && grep { $_ eq 'done' } @{ $self->{lines} };
}

sub lines  { @{ $_[0]{lines} } }
sub output { join("\n", @{ $_[0]{lines} }) . "\nstderr: " . slurp($_[0]{err}) }
sub done   { scalar grep { $_ eq 'done' } @{ $_[0]{lines} } }
sub exit_status { $_[0]{status} }

# Fields of the lines that start with $word (and, given, stream $sid).
sub records {
    my ($self, $word, $sid) = @_;
    my @r;
    for my $l (@{ $self->{lines} }) {
        my @f = split / /, $l, -1;
        next unless $f[0] eq $word;
        next if defined $sid && ($f[1] // '') ne $sid;
        push @r, [ @f[1 .. $#f] ];
    }
    return @r;
}

# The server's SETTINGS as { NAME => value }.
sub settings {
    my ($self) = @_;
    return { map { $_->[0] => $_->[1] } $self->records('setting') };
}

# Stream ids opened, in order, for a kind (ws, get, sse).
sub streams {
    my ($self, $kind) = @_;
    return map { $_->[0] } grep { $_->[1] eq $kind } $self->records('open');
}

sub status {
    my ($self, $sid) = @_;
    my ($r) = $self->records('status', $sid);
    return $r ? $r->[1] : undef;
}

# Response headers of a stream: { name => value } (repeated names joined by ', ').
sub headers {
    my ($self, $sid) = @_;
    my %h;
    for my $l (@{ $self->{lines} }) {
        my ($name, $value) = $l =~ /\Aheader \Q$sid\E (\S+) ?(.*)\z/ or next;
        $h{$name} = exists $h{$name} ? "$h{$name}, $value" : $value;
    }
    return \%h;
}

# WebSocket frames from the server: [{ op, fin, payload }].
sub frames {
    my ($self, $sid) = @_;
    return map { { op => $_->[1], fin => $_->[2], payload => pack('H*', $_->[3] // '') } }
        $self->records('frame', $sid);
}

# Payloads of the data frames (text and binary) of a stream, in order.
sub messages {
    my ($self, $sid) = @_;
    return map { [ $_->{op}, $_->{payload} ] } grep { $_->{op} == 1 || $_->{op} == 2 } $self->frames($sid);
}

# The server's close frame: { code, reason } (code 'none' when empty), or undef.
sub close_of {
    my ($self, $sid) = @_;
    my ($r) = $self->records('close', $sid);
    return $r ? { code => $r->[1], reason => pack('H*', $r->[2] // '') } : undef;
}

# DATA of a non-WebSocket stream: the bytes, or [[time, bytes], ...] in list form.
sub data {
    my ($self, $sid) = @_;
    my @d = map { [ $_->[1], pack('H*', $_->[2] // '') ] } $self->records('data', $sid);
    return wantarray ? @d : join('', map { $_->[1] } @d);
}

# 'end' (END_STREAM), 'reset N' (RST_STREAM from the server), or ''.
sub ending {
    my ($self, $sid) = @_;
    for my $l (@{ $self->{lines} }) {
        return 'end' if $l eq "end $sid";
        return "reset $1" if $l =~ /\Areset \Q$sid\E (\d+)\z/;
    }
    return '';
}

# A client still running when its handle goes is killed (ProcTest kills
# any left at the end).
sub DESTROY {
    my ($self) = @_;
    return unless $$ == $MAIN && !defined $self->{status};
    local ($!, $?);
    kill KILL => $self->{pid};
    reap($self->{pid}, 5);
}

1;
