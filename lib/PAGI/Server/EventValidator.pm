package PAGI::Server::EventValidator;

use strict;
use warnings;

use Carp qw(croak);
use Scalar::Util qw(blessed);
use overload ();

our $VERSION = '0.003000';

# Checks the shape of the events an application hands to $send. Each public
# function looks only at the event types of its own protocol; unknown types
# are left for the server to deal with. A failed check dies via croak with
# a message that starts with the event type and names the offending key.

# ---------------------------------------------------------------------------
# Small predicates
# ---------------------------------------------------------------------------

my $UINT_RE = qr/\A[0-9]+\z/;
my $UNUM_RE = qr/\A(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\z/;

# A plain scalar, or an object that knows how to turn itself into a string.
sub _stringish {
    my ($v) = @_;
    return 0 unless defined $v;
    return 1 unless ref $v;
    return blessed($v) && overload::Method($v, '""') ? 1 : 0;
}

sub _fail {
    my ($type, $what) = @_;
    croak "$type $what";
}

sub _has { exists $_[0]{ $_[1] } && defined $_[0]{ $_[1] } }

# ---------------------------------------------------------------------------
# Field checks shared by several event types
# ---------------------------------------------------------------------------

sub _need {
    my ($ev, $type, $key) = @_;
    _fail($type, "requires '$key' field") unless exists $ev->{$key};
}

sub _uint {
    my ($ev, $type, $key) = @_;
    my $v = $ev->{$key};
    _fail($type, "'$key' must be an integer")
        unless defined $v && !ref $v && $v =~ $UINT_RE;
}

sub _opt_uint {
    my ($ev, $type, $key) = @_;
    _uint($ev, $type, $key) if _has($ev, $key);
}

sub _unum {
    my ($ev, $type, $key) = @_;
    my $v = $ev->{$key};
    _fail($type, "'$key' must be a number")
        unless defined $v && !ref $v && $v =~ $UNUM_RE;
}

sub _opt_unum {
    my ($ev, $type, $key) = @_;
    _unum($ev, $type, $key) if _has($ev, $key);
}

sub _string {
    my ($ev, $type, $key) = @_;
    _fail($type, "'$key' must be a string") unless _stringish($ev->{$key});
}

sub _opt_string {
    my ($ev, $type, $key) = @_;
    _string($ev, $type, $key) if _has($ev, $key);
}

sub _single_line {
    my ($ev, $type, $key) = @_;
    return unless _has($ev, $key);
    _string($ev, $type, $key);
    _fail($type, "'$key' must not contain CR or LF")
        if "$ev->{$key}" =~ /[\r\n]/;
}

sub _headers {
    my ($ev, $type, $key) = @_;
    $key //= 'headers';
    return unless _has($ev, $key);
    my $list = $ev->{$key};
    _fail($type, "'$key' must be an array reference")
        unless ref $list eq 'ARRAY';
    for my $i (0 .. $#$list) {
        my $pair = $list->[$i];
        _fail($type, "'$key' entry $i must be an array reference of [name, value]")
            unless ref $pair eq 'ARRAY' && @$pair == 2;
        _fail($type, "'$key' entry $i has an undefined name or value")
            unless defined $pair->[0] && defined $pair->[1];
    }
}

sub _body_bytes {
    my ($ev, $type) = @_;
    _opt_string($ev, $type, 'body');
}

# ---------------------------------------------------------------------------
# Per-event rules
# ---------------------------------------------------------------------------

sub _response_start {
    my ($ev, $type) = @_;
    _need($ev, $type, 'status');
    _uint($ev, $type, 'status');
    _headers($ev, $type);
}

my %HTTP = (
    'http.response.start' => \&_response_start,

    'http.response.body' => sub {
        my ($ev, $type) = @_;
        my @given = grep { _has($ev, $_) } qw(body file fh);
        _fail($type, 'takes exactly one of body/file/fh (or none, for an empty body); got '
            . join(', ', @given))
            if @given > 1;
        _body_bytes($ev, $type);
        _opt_string($ev, $type, 'file');
        if (_has($ev, 'fh')) {
            my $fh = $ev->{fh};
            _fail($type, "'fh' must be a filehandle")
                unless ref $fh eq 'GLOB' || blessed($fh) || ref \$fh eq 'GLOB';
        }
        _opt_uint($ev, $type, 'offset');
        _opt_uint($ev, $type, 'length');
    },

    'http.response.trailers' => sub {
        my ($ev, $type) = @_;
        _headers($ev, $type);
    },
);

sub _denial_body {
    my ($ev, $type) = @_;
    _body_bytes($ev, $type);
    _opt_uint($ev, $type, 'more');
}

my %WEBSOCKET = (
    'websocket.accept' => sub {
        my ($ev, $type) = @_;
        _opt_string($ev, $type, 'subprotocol');
        _headers($ev, $type);
    },

    'websocket.send' => sub {
        my ($ev, $type) = @_;
        my @given = grep { _has($ev, $_) } qw(bytes text);
        _fail($type, 'needs exactly one of bytes/text, got '
            . (@given ? join(', ', @given) : 'neither'))
            unless @given == 1;
        _string($ev, $type, $given[0]);
    },

    'websocket.close' => sub {
        my ($ev, $type) = @_;
        _opt_uint($ev, $type, 'code');
        _opt_string($ev, $type, 'reason');
    },

    'websocket.keepalive' => sub {
        my ($ev, $type) = @_;
        _need($ev, $type, 'interval');
        _unum($ev, $type, 'interval');
        _opt_unum($ev, $type, 'timeout');
    },

    'websocket.http.response.start' => \&_response_start,
    'websocket.http.response.body'  => \&_denial_body,
);

my %SSE = (
    'sse.start' => sub {
        my ($ev, $type) = @_;
        _opt_uint($ev, $type, 'status');
        _headers($ev, $type);
    },

    'sse.send' => sub {
        my ($ev, $type) = @_;
        _need($ev, $type, 'data');
        _string($ev, $type, 'data');
        _single_line($ev, $type, 'event');
        _single_line($ev, $type, 'id');
        _opt_uint($ev, $type, 'retry');
    },

    'sse.comment' => sub {
        my ($ev, $type) = @_;
        _need($ev, $type, 'comment');
        _string($ev, $type, 'comment');
    },

    'sse.keepalive' => sub {
        my ($ev, $type) = @_;
        _need($ev, $type, 'interval');
        _unum($ev, $type, 'interval');
        _opt_string($ev, $type, 'comment');
    },

    'sse.close' => sub {
        my ($ev, $type) = @_;
        _opt_string($ev, $type, 'reason');
    },

    'sse.http.response.start' => \&_response_start,
    'sse.http.response.body'  => \&_denial_body,
);

sub _run {
    my ($rules, $ev, $caller) = @_;
    croak "$caller: event must be a hash reference" unless ref $ev eq 'HASH';
    my $type = $ev->{type};
    return 1 unless defined $type && !ref $type;
    my $check = $rules->{$type} or return 1;
    $check->($ev, $type);
    return 1;
}

# ---------------------------------------------------------------------------
# Public API
# ---------------------------------------------------------------------------

sub validate_http_send      { _run(\%HTTP,      $_[0], 'validate_http_send') }
sub validate_websocket_send { _run(\%WEBSOCKET, $_[0], 'validate_websocket_send') }
sub validate_sse_send       { _run(\%SSE,       $_[0], 'validate_sse_send') }

1;

__END__

=head1 NAME

PAGI::Server::EventValidator - check the events a PAGI application sends

=head1 SYNOPSIS

    use PAGI::Server::EventValidator;

    # Each call returns true for a well-formed event and dies otherwise.
    PAGI::Server::EventValidator::validate_http_send(
        { type => 'http.response.start', status => 200, headers => [] });

    PAGI::Server::EventValidator::validate_websocket_send(
        { type => 'websocket.send', text => 'hi' });

    PAGI::Server::EventValidator::validate_sse_send(
        { type => 'sse.send', data => 'tick' });

    # Normally you do not call these yourself: the server calls them on
    # every $send when validation is switched on.
    my $server = PAGI::Server->new(app => $app, validate_events => 1);

=head1 DESCRIPTION

A PAGI server must raise an error when an application sends an event that
lacks a required key or carries a key of the wrong type. This module holds
those checks. L<PAGI::Server> runs them on each outgoing event when its
C<validate_events> option is on (which it is by default when C<PAGI_ENV> is
C<development>); with the option off the checks cost nothing.

Every function takes one event (a hash reference). It returns a true value
when the event is acceptable and otherwise dies through L<Carp/croak>. The
message begins with the event's C<type> followed by what is wrong, for
example C<http.response.start requires 'status' field> or
C<sse.send 'data' must be a string>.

Only the event types that belong to the function's protocol are inspected.
An event with no C<type>, or with a type the function does not know about
(C<http.fullflush>, a type from another protocol, a typo), passes untouched:
deciding what to do with such events is the server's job, not the
validator's. Passing something that is not a hash reference is always an
error.

Conventions used below: an I<integer> is a run of ASCII digits (no sign); a
I<number> is a non-negative decimal such as C<30> or C<0.5>; a I<string> is
a defined non-reference scalar or an object with string overloading. An
optional key that is absent or C<undef> is not checked.

=head1 FUNCTIONS

None of the functions is exported; call them by their full name.

=head2 validate_http_send($event)

Checks the events of an C<http> scope.

=over 4

=item C<http.response.start>

C<status> must be present and an integer. C<headers>, when given, must be
an array reference whose entries are two-element array references
C<[name, value]> with both parts defined.

=item C<http.response.body>

At most one of C<body>, C<file> and C<fh> may be defined; none at all means
an empty body. C<body> and C<file> must be strings, C<fh> must be a
filehandle (a glob, a glob reference or an object such as an
L<IO::Handle>). C<offset> and C<length> must be
integers. C<more> is not checked, so ordinary Perl booleans are fine.

=item C<http.response.trailers>

C<headers>, when given, must be a list of pairs as for
C<http.response.start>.

=back

=head2 validate_websocket_send($event)

Checks the events of a C<websocket> scope.

=over 4

=item C<websocket.accept>

C<subprotocol> must be a string and C<headers> a list of pairs, when given.

=item C<websocket.send>

Exactly one of C<bytes> and C<text> must be defined, and it must be a
string.

=item C<websocket.close>

C<code> must be an integer and C<reason> a string, when given.

=item C<websocket.keepalive>

C<interval> is required and must be a number (C<0> turns keepalive off).
C<timeout>, when given, must be a number too.

=item C<websocket.http.response.start>

The denial-response head: same rules as C<http.response.start>.

=item C<websocket.http.response.body>

The denial-response body: C<body> must be a string and C<more> an integer,
when given.

=back

=head2 validate_sse_send($event)

Checks the events of an C<sse> scope.

=over 4

=item C<sse.start>

C<status> (optional here, the server defaults it) must be an integer and
C<headers> a list of pairs, when given.

=item C<sse.send>

C<data> is required and must be a string. C<event> and C<id> must be
strings without carriage returns or line feeds, and C<retry> an integer,
when given.

=item C<sse.comment>

C<comment> is required and must be a string.

=item C<sse.keepalive>

C<interval> is required and must be a number; C<comment> must be a string
when given.

=item C<sse.close>

C<reason>, when given, must be a string.

=item C<sse.http.response.start>

The decline-response head: same rules as C<http.response.start>.

=item C<sse.http.response.body>

The decline-response body: C<body> must be a string and C<more> an
integer, when given.

=back

=head1 SEE ALSO

L<PAGI::Server> (the C<validate_events> option), and the PAGI
specification's description of the C<http>, C<websocket> and C<sse> event
formats.

=cut
