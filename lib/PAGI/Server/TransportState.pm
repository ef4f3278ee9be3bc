package PAGI::Server::TransportState;

use strict;
use warnings;

use Scalar::Util qw(weaken blessed reftype);
use overload ();

our $VERSION = '0.003000';

# The object behind $scope->{'pagi.transport'}: a read-only view of how many
# response bytes are waiting to be written, plus edge-triggered callbacks for
# crossing the high-water mark and falling back under the low-water mark.
#
# The object never looks at a socket itself. The server hands it "sources":
# a coderef that measures the backlog, the two marks (plain numbers or
# coderefs) and a hook that lets it ask to be told when the backlog drains.

# The server's own per-request objects are made in C, with `native` and
# `id` in place of `measure` (see PAGI::Server::Native::request_new). Other
# fields appear when first needed: on_high/on_drain (callback lists),
# high_now (crossed the high mark, not yet drained), cycle (counts high
# crossings; stale drain hooks compare it), detached.
sub new {
    my ($class, %arg) = @_;
    for my $k (qw(measure arm_drain)) {
        next unless defined $arg{$k};
        next if _is_code($arg{$k});
        require Carp;
        Carp::croak("PAGI::Server::TransportState: '$k' must be a code reference");
    }
    my $self = bless { measure => $arg{measure}, high => $arg{high}, low => $arg{low} }, $class;
    $self->{arm} = $arg{arm_drain} if $arg{arm_drain};
    return $self;
}

# ------------------------------------------------------------- readers

sub buffered_amount {
    my ($self) = @_;
    # The server's own (xs/request.h): the core's count for its request,
    # until the request is over.
    if (my $h = $self->{native}) {
        my $n = PAGI::Server::Native::buffered($h, $self->{id});
        return $n > 0 ? int $n : 0;
    }
    my $m = $self->{measure} or return 0;
    my $n;
    {
        local $@;
        unless (eval { $n = $m->(); 1 }) {
            my $err = $@;
            warn "PAGI::Server::TransportState: measure failed: $err";
            return 0;
        }
    }
    return 0 unless defined $n && $n > 0;
    return int $n;
}

sub high_water_mark { return _value($_[0]{high}) }

sub low_water_mark { return _value($_[0]{low}) }

# ----------------------------------------------------- registration

sub on_high_water {
    my ($self, $cb) = @_;
    _want_code($cb, 'on_high_water');
    return $self if $self->{detached};
    push @{ $self->{on_high} }, $cb;
    if ($self->{high_now}) {
        # Backpressure is already on: tell the newcomer straight away.
        _fire('on_high_water', [$cb]);
    }
    else {
        # The backlog may have crossed the mark since the server last looked.
        $self->_check_watermarks;
    }
    return $self;
}

sub on_drain {
    my ($self, $cb) = @_;
    _want_code($cb, 'on_drain');
    # Only a real high -> low transition fires it, never registration.
    return $self if $self->{detached};
    push @{ $self->{on_drain} }, $cb;
    # The server looks at the marks for callbacks only: the backlog may be
    # high already, and the drain to come must then fire this one.
    $self->_check_watermarks unless $self->{high_now};
    return $self;
}

# ------------------------------------------------ server-side updates

# The server calls this after every write it accepted for the app (and may
# call it at any other time). It compares the current backlog with the marks:
# crossing up fires on_high_water and arms drain detection; being back under
# the low mark while armed fires on_drain.
sub _check_watermarks {
    my ($self) = @_;
    return if $self->{detached};

    if ($self->{high_now}) {
        my $low = $self->low_water_mark;
        $self->_drained if defined $low && $self->buffered_amount < $low;
        return;
    }

    my $high = $self->high_water_mark;
    return unless defined $high;
    return unless $self->buffered_amount >= $high;

    $self->{high_now} = 1;
    my $cycle = ++$self->{cycle};
    _fire('on_high_water', $self->{on_high} || []);

    # Ask the source to call us back once the backlog is under the low mark.
    # The hook may be late or called twice; only the first call for the
    # current cycle counts.
    my $arm = $self->{arm} or return;
    return unless $self->{high_now} && $self->{cycle} == $cycle;
    weaken(my $weak = $self);
    my $fire = sub {
        return unless $weak && $weak->{high_now} && $weak->{cycle} == $cycle;
        $weak->_drained;
    };
    local $@;
    eval { $arm->($fire); 1 }
        or warn "PAGI::Server::TransportState: arm_drain failed: $@";
    return;
}

# The backlog fell under the low mark (or the request went away and nothing
# more will be written). Fires on_drain once per high crossing.
sub _drained {
    my ($self) = @_;
    return unless $self->{high_now};
    $self->{high_now} = 0;
    _fire('on_drain', $self->{on_drain} || []);
    return;
}

# The request is over. Callbacks and sources are dropped (this also breaks
# any reference cycle running through them); from now on buffered_amount is
# 0, the marks keep their last values and new callbacks are ignored.
sub _detach {
    my ($self) = @_;
    return if $self->{detached};
    # Freeze computed marks; plain numbers (the server's case) stay as they are.
    $self->{high} = $self->high_water_mark if ref $self->{high};
    $self->{low}  = $self->low_water_mark  if ref $self->{low};
    $self->{detached} = 1;
    delete @$self{qw(measure native arm high_now on_high on_drain)};
    return;
}

# ------------------------------------------------------------ helpers

sub _value {
    my ($v) = @_;
    return $v unless _is_code($v);
    my $r;
    local $@;
    eval { $r = $v->(); 1 } or do {
        warn "PAGI::Server::TransportState: watermark source failed: $@";
        return undef;
    };
    return $r;
}

sub _is_code {
    my ($v) = @_;
    return 0 unless ref $v;
    return 1 if reftype $v eq 'CODE' && !blessed $v;
    return 1 if blessed $v && (reftype $v eq 'CODE' || overload::Method($v, '&{}'));
    return 0;
}

sub _want_code {
    my ($cb, $what) = @_;
    return if _is_code($cb);
    require Carp;
    Carp::croak("$what expects a code reference");
}

# Runs a snapshot of the list, so callbacks may register more callbacks;
# an exception from one becomes a warning and the rest still run.
sub _fire {
    my ($what, $list) = @_;
    for my $cb (@$list[0 .. $#$list]) {
        local $@;
        eval { $cb->(); 1 } or do {
            my $err = $@;
            $err = 'unknown error' unless defined $err && length $err;
            $err .= "\n" unless $err =~ /\n\z/;
            warn "PAGI::Server::TransportState: $what callback error: $err";
        };
    }
    return;
}

1;

__END__

=encoding utf8

=head1 NAME

PAGI::Server::TransportState - outbound backlog and backpressure for pagi.transport

=head1 SYNOPSIS

    # inside an application
    my $transport = $scope->{'pagi.transport'};

    if ($transport) {
        # skip a frame when the client lags by more than half the ceiling
        my $ceiling = $transport->high_water_mark // 65536;
        next if $transport->buffered_amount > $ceiling / 2;

        # or let the server tell a push-driven source when to stop and go
        $transport->on_high_water(sub { $feed->pause })
                  ->on_drain(sub { $feed->resume });
    }

=head1 DESCRIPTION

PAGI::Server puts one of these objects in the C<pagi.transport> key of its
C<http> and C<sse> scopes. It lets the application see how many bytes of its
response are still queued inside the server (handed over by C<$send> but not
yet written to the client) and where the server's backpressure band lies, so
it can decide for itself to drop, merge or delay data for a slow client. It is
the server-side counterpart of C<bufferedAmount> in the browser's WebSocket
API. The contract is the "Transport Flow Control" section of
L<PAGI::Spec::Www>.

As with C<pagi.connection>, a plain HTTP request's object is made the first
time anything reads the key.

The object holds no socket. The server gives it small pieces of code that
measure the backlog and report the marks, so every read is current and the
same object works whatever carries the bytes.

=head2 Backpressure cycle

The two callbacks follow a hysteresis loop. When the backlog reaches the high
mark, the C<on_high_water> callbacks run once. Nothing more happens while it
stays high. When it later falls under the low mark, the C<on_drain> callbacks
run once and the loop starts over. The gap between the two marks keeps a
backlog that hovers around one value from firing over and over.

=head1 METHODS FOR APPLICATIONS

=head2 buffered_amount

The number of bytes queued for the client and not yet written, as a
non-negative integer. C<0> when everything has been written, when the server
cannot measure and after the request has ended. The call does not block,
send or receive.

=head2 high_water_mark

The backlog, in bytes, at or above which the server applies backpressure (a
C<$send> that finds the backlog at or past it waits until the client catches
up).
C<undef> if the server has no such mark.

=head2 low_water_mark

The backlog, in bytes, that the server waits for before it releases
backpressure. C<undef> if not applicable.

=head2 on_high_water

    $transport->on_high_water(sub { ... });

Adds a callback that runs when the backlog reaches the high mark. If the
backlog is already at or over the mark when the callback is added, it runs at
once. Returns the object, so calls can be chained.

=head2 on_drain

    $transport->on_drain(sub { ... });

Adds a callback that runs when the backlog falls back under the low mark
after having reached the high mark. Adding it while the backlog is low does
not run it; adding it while the backlog is high runs it at the drain to come.
Returns the object.

Callbacks of both kinds get no arguments (call C<buffered_amount> for the
current figure) and run in the order they were added. A callback that dies
does not stop the rest: its error becomes a warning containing
C<callback error> and the server carries on. Both methods croak when not
given a code reference. Callbacks added after the request ended are ignored.

=head1 METHODS FOR THE SERVER

These are called by PAGI::Server. Applications must not call them.

=head2 new

    my $transport = PAGI::Server::TransportState->new(
        measure   => sub { ... },                  # bytes queued now
        high      => 65536,                        # or sub { ... }
        low       => 16384,                        # or sub { ... }
        arm_drain => sub { my ($fire) = @_; ... },
    );

All arguments are optional.

=over 4

=item measure

Code returning the current backlog in bytes. Without it, or when it returns
C<undef>, the backlog is C<0>. If it dies, the backlog is reported as C<0>
and a warning is given.

=item high, low

The marks, each either a number or code returning one (or C<undef>).

=item arm_drain

Code called right after the backlog crossed the high mark. It receives a
callback, C<$fire>, and must arrange for it to be called once the backlog is
under the low mark. A late or repeated C<$fire> is harmless: it only counts
for the crossing it was armed for.

=back

=head2 _check_watermarks

To be called after each write the server accepts from the application (this
server calls it only while callbacks are registered: nothing else can tell
that it ran). Fires C<on_high_water> and arms the drain hook when the backlog
has reached the high mark. While it is high, a call that finds the backlog under the low mark
fires C<on_drain> itself, so drains are noticed even if the hook never fires.

=head2 _drained

The server's way to report a drain directly (for instance when its core
reports the backlog fell to the low mark, or when the request is being torn
down and nothing more will be written). Fires C<on_drain> if the high mark
had been crossed; otherwise it does nothing.

=head2 _detach

To be called when the request is over. Drops the callbacks and the sources,
which also frees anything they captured. Afterwards C<buffered_amount> is
C<0>, the marks keep the values they had and new callbacks are ignored.

=head1 SEE ALSO

L<PAGI::Server>, L<PAGI::Server::ConnectionState>, L<PAGI::Spec::Www>

=cut
