package PAGI::Server::ConnectionState;

use strict;
use warnings;

use Scalar::Util qw(weaken blessed reftype);
use overload ();

our $VERSION = '0.003000';

# The object behind $scope->{'pagi.connection'} for one HTTP request.
#
# Life cycle: every object starts OPEN and moves exactly once to one of two
# terminal states, DONE (the server finished the request cleanly) or GONE
# (the request ended abnormally, with a reason). Nothing ever leaves a
# terminal state, so at most one of the two callback lists is ever run.

use constant {
    OPEN => 0,
    DONE => 1,
    GONE => 2,
};

sub new {
    my ($class, %arg) = @_;
    my $self = bless {
        state   => OPEN,
        reason  => undef,
        started => 0,
        future  => undef,
        on_gone => [],
        on_done => [],
        owner   => $arg{connection},
        loop    => $arg{loop},
    }, $class;
    # The owner (connection or request object) usually holds us; never keep
    # it alive from here.
    weaken($self->{owner}) if ref $self->{owner};
    return $self;
}

# The server's constructor, run once per request: only the state and the
# loop are set; the reason, the Future and the callback lists appear when
# something needs them (most requests end with none of them).
sub _for_request {
    return bless { state => OPEN, loop => $_[1] }, $_[0];
}

# ------------------------------------------------------------- readers

sub is_connected { return $_[0]{state} == OPEN ? 1 : 0 }

sub disconnect_reason {
    my ($self) = @_;
    return $self->{state} == GONE ? $self->{reason} : undef;
}

sub response_started { return $_[0]{started} ? 1 : 0 }

sub disconnect_future {
    my ($self) = @_;
    my $f = $self->{future};
    # Reuse the Future we handed out before, unless someone cancelled it
    # (Future->wait_any cancels the losers): a cancelled Future can never
    # report the disconnect, so a fresh one takes its place.
    return $f if $f && !$f->is_cancelled;

    $f = $self->{future} = $self->_new_future;
    $self->_settle_future if $self->{state} == GONE;
    return $f;
}

# ----------------------------------------------------- registration

sub on_disconnect {
    my ($self, $cb) = @_;
    _check_code($cb, 'on_disconnect');
    if ($self->{state} == OPEN) {
        push @{ $self->{on_gone} }, $cb;
    }
    elsif ($self->{state} == GONE) {
        # Too late to wait: the disconnect already happened.
        _run('on_disconnect', $cb, $self->{reason});
    }
    # DONE: the request ended cleanly, so this never fires.
    return;
}

sub on_complete {
    my ($self, $cb) = @_;
    _check_code($cb, 'on_complete');
    if ($self->{state} == OPEN) {
        push @{ $self->{on_done} }, $cb;
    }
    elsif ($self->{state} == DONE) {
        _run('on_complete', $cb);
    }
    # GONE: the request did not complete, so this never fires.
    return;
}

# ------------------------------------------------ server-side marking

# http.response.start went out for this request (from the app or from the
# server itself). One-way and idempotent.
sub _mark_response_started {
    $_[0]{started} = 1;
    return;
}

# The request ended abnormally. Only the first terminal mark counts.
sub _mark_disconnected {
    my ($self, $reason) = @_;
    return unless $self->{state} == OPEN;

    # The order is fixed by the spec: state, reason, Future, callbacks.
    $self->{state}  = GONE;
    $self->{reason} = defined $reason && length $reason ? "$reason" : 'client_closed';
    $self->_settle_future if $self->{future};

    my @cbs = @{ $self->{on_gone} || [] };
    delete @$self{qw(on_gone on_done)};
    _run('on_disconnect', $_, $self->{reason}) for @cbs;
    return;
}

# The request ended cleanly. Only the first terminal mark counts.
sub _mark_complete {
    my ($self) = @_;
    return unless $self->{state} == OPEN;

    # No reason, and the disconnect Future stays pending for good.
    $self->{state} = DONE;

    my @cbs = @{ $self->{on_done} || [] };
    delete @$self{qw(on_gone on_done)};
    _run('on_complete', $_) for @cbs;
    return;
}

# ------------------------------------------------------------ helpers

sub _new_future {
    my ($self) = @_;
    my $loop = $self->{loop};
    unless ($loop) {
        my $o = $self->{owner};
        if (blessed $o && $o->can('loop')) {
            $loop = eval { $o->loop };
        }
        elsif (ref $o && reftype $o eq 'HASH') {
            $loop = $o->{loop};
            if (!$loop && blessed $o->{server} && $o->{server}->can('loop')) {
                $loop = eval { $o->{server}->loop };
            }
        }
    }
    return $loop->new_future if blessed $loop && $loop->can('new_future');
    require Future;
    return Future->new;
}

sub _settle_future {
    my ($self) = @_;
    my $f = $self->{future};
    return if !$f || $f->is_ready;
    # Resolving runs whatever the app chained on the Future; a die there must
    # not escape into the server's disconnect handling.
    my $reason = $self->{reason};
    eval { $f->done($reason); 1 }
        or warn "PAGI::Server::ConnectionState: disconnect_future callback error: $@";
    return;
}

sub _check_code {
    my ($cb, $what) = @_;
    return if ref $cb && reftype $cb eq 'CODE';
    return if blessed $cb && overload::Method($cb, '&{}');
    require Carp;
    Carp::croak("$what expects a code reference");
}

# Runs one app callback; whatever it throws becomes a warning.
sub _run {
    my ($what, $cb, @args) = @_;
    local $@;
    eval { $cb->(@args); 1 } or do {
        my $err = $@;
        $err = 'unknown error' unless defined $err && length $err;
        $err .= "\n" unless $err =~ /\n\z/;
        warn "PAGI::Server::ConnectionState: $what callback error: $err";
    };
    return;
}

1;

__END__

=encoding utf8

=head1 NAME

PAGI::Server::ConnectionState - per-request connection status for pagi.connection

=head1 SYNOPSIS

    # inside an HTTP application
    my $conn = $scope->{'pagi.connection'};

    # cheap, synchronous, leaves the receive queue alone
    return unless $conn->is_connected;

    # exactly one of these two runs for this request
    $conn->on_complete(sub { $txn->commit });
    $conn->on_disconnect(sub {
        my ($reason) = @_;        # e.g. 'client_closed', 'write_error'
        $txn->rollback;
    });

    # stop waiting when the client goes away
    my $gone = $conn->disconnect_future;
    await Future->wait_any($gone, $long_poll);
    return unless $conn->is_connected;

    # has anything (app, middleware, the server's own 500) begun the response?
    my $started = $conn->response_started;

=head1 DESCRIPTION

PAGI::Server places one of these objects in the C<pagi.connection> key of
every C<http> scope. It answers "is my client still there?" without the
application having to call C<$receive> (which would take the next body chunk
off the queue), and it tells the application how the request ended.

Although the key is called I<connection>, the object belongs to one request:
the next request on a keep-alive connection gets a new object that starts out
connected and with no response started.

For a plain HTTP request the object is made the first time anything reads
the key (a read, a copy of the scope, a method call), as it stands at that
moment; a request whose application never looks costs nothing for it. Its
behaviour is the same either way.

A request ends in one of two ways, and the object reports each one separately:

=over 4

=item completed

The server finished the request cleanly. C<on_complete> callbacks run,
C<disconnect_reason> stays C<undef>, and C<disconnect_future> never resolves.

=item disconnected

The request ended abnormally: the client went away, a timeout fired, the
server hit an error or is shutting down. C<disconnect_reason> reports why,
C<disconnect_future> resolves with that reason and the C<on_disconnect>
callbacks run with it.

=back

Once a request has ended it stays ended: C<is_connected> never becomes true
again, and a later attempt to end it the other way is ignored. This is what
makes "exactly one of C<on_complete> and C<on_disconnect>" hold.

The object is specified in the "Connection State" section of
L<PAGI::Spec::Www>. WebSocket and SSE scopes do not get one; they have their
own disconnect events.

=head1 METHODS FOR APPLICATIONS

=head2 is_connected

Returns C<1> while the request is in flight, C<0> once it has ended either
way. It is a plain read: it never blocks and takes nothing off the receive
queue.

=head2 disconnect_reason

Returns the reason string of an abnormal end, or C<undef> while the request
is in flight and after a clean completion. The reasons the server uses are the
standard ones of the spec:

    client_closed      client_timeout     idle_timeout
    keepalive_timeout  write_timeout      write_error
    read_error         protocol_error     server_shutdown
    server_error       body_too_large     queue_overflow

plus, possibly, server-specific reasons beginning with C<x->.

=head2 disconnect_future

Returns a L<Future> that is done, with the reason string as its only value,
when the request ends abnormally. A clean completion leaves it pending.

The Future is made on the first call (so requests that never ask pay nothing)
and the same Future is returned on later calls. If the request has already
been disconnected when it is first asked for, it comes back already done.
If the application cancels it (which C<< Future->wait_any >> does to the
futures that lose the race), the next call hands out a fresh one, so the
method can be raced again in a loop.

When the server provided an event loop the Future comes from that loop's
C<new_future>, so C<< ->get >> on it runs the loop.

=head2 on_disconnect

    $conn->on_disconnect(sub { my ($reason) = @_; ... });

Adds a callback for an abnormal end. It is called with the reason string.
Callbacks run in the order they were added, after C<is_connected>,
C<disconnect_reason> and C<disconnect_future> already show the disconnect.

Added after the request was disconnected, the callback runs at once, with the
reason. Added after a clean completion, it never runs.

=head2 on_complete

    $conn->on_complete(sub { ... });

Adds a callback for a clean end; it gets no arguments. Callbacks run in the
order they were added. Added after a clean completion, the callback runs at
once; added after a disconnect, it never runs.

For both registration methods: the argument must be a code reference (the
method croaks otherwise), the return value is empty, and a callback that
dies does not stop the others. Its error is turned into a warning whose
text contains C<callback error> and the server carries on.

=head2 response_started

Returns C<1> once the response of this request has begun (an
C<http.response.start> went out, whoever produced it, including an error
response the server generated itself), C<0> before. The application cannot
change it.

=head1 METHODS FOR THE SERVER

These are called by PAGI::Server. Applications must not call them.

=head2 new

    my $conn = PAGI::Server::ConnectionState->new(
        connection => $owner,   # optional, held weakly
        loop       => $loop,    # optional
    );

Both arguments are optional. C<loop> is the L<IO::Async::Loop> used to make
C<disconnect_future>. Without it, the loop is looked up lazily on
C<connection>: its C<loop> method if it has one, otherwise its C<loop> hash
entry, otherwise the C<loop> method of its C<server> entry. When no loop can be
found a plain C<< Future->new >> is used.

=head2 _mark_response_started

Records that the response has begun. Can be called more than once.

=head2 _mark_complete

Ends the request cleanly and runs the C<on_complete> callbacks. Does nothing
if the request already ended.

=head2 _mark_disconnected

    $conn->_mark_disconnected($reason);

Ends the request abnormally. In this order it makes C<is_connected> false,
sets C<disconnect_reason> (C<client_closed> when C<$reason> is undefined or
empty), resolves C<disconnect_future> if one was handed out, and runs the
C<on_disconnect> callbacks. Does nothing if the request already ended, so the
first reason wins. The server sends C<http.disconnect> to the receive queue
after this call.

Neither marking method lets an exception from application code escape: a
failing callback, or a failing callback chained on the disconnect Future,
becomes a warning. Both drop every registered callback once they have run,
so the closures do not outlive the request.

=head1 SEE ALSO

L<PAGI::Server>, L<PAGI::Server::TransportState>, L<PAGI::Spec::Www>

=cut
