package PAGI::Server::WebSocket;

use strict;
use warnings;

use Future;
use bytes ();    # bytes::length: a message's size on the wire

use PAGI::Server::EventValidator;
use PAGI::Server::Request;

our $VERSION = '0.003000';

# One WebSocket session served by the Rust core, from the handshake request
# to the close. The core parses and writes the frames; this side keeps the
# app's receive queue and turns its events into core calls. Drain records,
# access logging and the app's Future are handled as for HTTP requests.
our @ISA = ('PAGI::Server::Request');

my $DONE = Future->done;

# RFC 6455 token characters: what a subprotocol name may contain.
my $TOKEN = qr/\A[!#\$%&'*+\-.^_`|~0-9A-Za-z]+\z/;

sub start {
    my ($server, $id, $scope, $flags) = @_;
    my @subprotocols;
    for my $h (@{ $scope->{headers} }) {
        next unless $h->[0] eq 'sec-websocket-protocol';
        push @subprotocols, grep { length } map { s/\A\s+|\s+\z//gr } split /,/, $h->[1];
    }
    $scope->{subprotocols} = \@subprotocols;
    # As for HTTP: the scope's state, extensions and pagi.transport.
    my $self = PAGI::Server::Native::request_new($server, $id, $scope, $flags, __PACKAGE__);
    $scope->{extensions}{'websocket.http.response'} = {};
    $self->{queue}   = [];
    $self->{waiters} = [];
    $self->{gone}    = undef;   # the websocket.disconnect event, once known
    $self->{done}    = 0;       # the session is over on our side (ended or denied)

    my $validate = $server->{validate_events}
        ? \&PAGI::Server::EventValidator::validate_websocket_send : undef;
    my $receive = sub { $self->_receive };
    my $send = sub { $validate->($_[0]) if $validate; $self->_send($_[0]) };
    my $f = $self->_call_app($scope, $receive, $send) or return;
    $self->_app_finished($f);
    return;
}

sub _receive {
    my ($self) = @_;
    return Future->done({ type => 'websocket.connect' }) unless $self->{connect_sent}++;
    if (my $ev = shift @{ $self->{queue} }) {
        $self->_taken($ev);
        return Future->done($ev);
    }
    return Future->done({ %{ $self->{gone} } }) if $self->{gone};
    return Future->done({ type => 'websocket.disconnect', code => 1006, reason => '' })
        if $self->{done};
    # The app has answered every message it took: the core may send the
    # close frame for a client's violation that came right behind them.
    PAGI::Server::Native::ws_waiting($self->{native}, $self->{id}, $self->{taken} // 0)
        if $self->{accepted} && $self->{native};
    my $f = $self->{loop}->new_future;
    push @{ $self->{waiters} }, $f;
    return $f;
}

# WS_MESSAGE record: text arrives decoded, bytes raw. The core counts the
# messages the app has not taken yet against max_receive_queue.
sub message {
    my ($self, $data, $is_text) = @_;
    return if $self->{gone};
    my $ev = { type => 'websocket.receive', ($is_text ? 'text' : 'bytes') => $data };
    while (my $w = shift @{ $self->{waiters} }) {
        next if $w->is_ready;    # cancelled by the app
        $self->_taken($ev);
        $w->done($ev);
        return;
    }
    push @{ $self->{queue} }, $ev;
}

# The app has a message: the core may read on.
sub _taken {
    my ($self, $ev) = @_;
    $self->{taken}++;
    return if $self->{gone} || !$self->{native};
    PAGI::Server::Native::ws_ack($self->{native}, $self->{id},
        bytes::length($ev->{text} // $ev->{bytes}));
}

# DISCONNECT record, or the server going away. $code is undef when the
# connection dropped without a close handshake.
sub disconnected {
    my ($self, $reason, $code) = @_;
    return if $self->{gone};
    my $ev = $self->{gone} = {
        type   => 'websocket.disconnect',
        code   => $code // 1006,
        reason => $reason // '',
    };
    $_->done({%$ev}) for grep { !$_->is_ready } splice @{ $self->{waiters} };
    $self->_gone_for_good;
}

sub _keeps_slot {
    my ($self) = @_;
    return $self->{accepted} && !$self->{app_done};
}

sub _live {
    my ($self) = @_;
    return !$self->{done} && !$self->{gone};
}

# Messages may still go out: accepted, and no close frame sent.
sub _open {
    my ($self) = @_;
    return $self->{accepted} && !$self->{closing} && $self->_live;
}

sub _send {
    my ($self, $ev) = @_;
    die "send requires an event hash reference\n" unless ref $ev eq 'HASH';
    my $type = $ev->{type} // '';
    my ($h, $id) = @$self{qw(native id)};

    if ($type eq 'websocket.send') {
        my $rc;
        if (defined $ev->{text}) {
            return $DONE unless $self->_open;
            $rc = PAGI::Server::Native::ws_send($h, $id, 1, _utf8_bytes($ev->{text}));
        }
        elsif (defined $ev->{bytes}) {
            my $bytes = $ev->{bytes};
            utf8::downgrade($bytes, 1)
                or die "websocket.send: bytes must be a byte string, not characters\n";
            return $DONE unless $self->_open;
            $rc = PAGI::Server::Native::ws_send($h, $id, 0, $bytes);
        }
        else {
            die "websocket.send requires 'text' or 'bytes'\n";
        }
        return $self->_result($rc);
    }
    if ($type eq 'websocket.accept') {
        return $DONE if $self->{accepted} || $self->{denial} || !$self->_live;
        my @headers = _checked_headers('websocket.accept', $ev->{headers});
        my $sp = $ev->{subprotocol};
        die "websocket.accept: subprotocol '$sp' is not a valid token\n"
            if defined $sp && $sp !~ $TOKEN;
        # The core writes the handshake answer the connection's protocol
        # needs (a 101 on HTTP/1.1).
        PAGI::Server::Native::ws_accept($h, $id, $sp, \@headers);
        $self->{accepted} = 1;
        return $DONE;
    }
    if ($type eq 'websocket.close') {
        return $DONE unless $self->_live;
        unless ($self->{accepted}) {
            # Rejected before the handshake: a bare 403, as the spec asks.
            $self->_deny(403, [['content-type', 'text/plain']], 'Forbidden') unless $self->{denial};
            return $DONE;
        }
        my $code = $ev->{code} // 1000;
        die "websocket.close: code must be 1000-1003, 1007-1014 or 3000-4999, got '$code'\n"
            unless $code =~ /\A[0-9]{4}\z/
                && ($code =~ /\A100[0-3]\z/ || ($code >= 1007 && $code <= 1014)
                    || ($code >= 3000 && $code <= 4999));
        return $DONE if $self->{closing}++;
        PAGI::Server::Native::ws_close($h, $id, $code, _utf8_bytes($ev->{reason} // ''));
        return $DONE;
    }
    if ($type eq 'websocket.keepalive') {
        my ($interval, $timeout) = ($ev->{interval} // 0, $ev->{timeout} // 0);
        for ([interval => $interval], [timeout => $timeout]) {
            die "websocket.keepalive: $_->[0] must be a non-negative number of seconds\n"
                unless $_->[1] =~ /\A[0-9]+(?:\.[0-9]+)?\z/;
        }
        return $DONE unless $self->{accepted} && $self->_live;
        PAGI::Server::Native::ws_keepalive($h, $id, $interval, $timeout);
        return $DONE;
    }
    if ($type eq 'websocket.http.response.start') {
        # Only before accept; afterwards the spec says to ignore it.
        return $DONE if $self->{accepted} || $self->{denial} || !$self->_live;
        my $status = $ev->{status} // 403;
        die "websocket.http.response.start: status must be an integer between 200 and 599\n"
            unless $status =~ /\A[2-5][0-9][0-9]\z/;
        $self->{denial} = {
            status  => $status,
            headers => [_checked_headers('websocket.http.response.start', $ev->{headers})],
            body    => '',
        };
        return $DONE;
    }
    if ($type eq 'websocket.http.response.body') {
        return $DONE if $self->{accepted} || !$self->_live;
        my $d = $self->{denial}
            or die "websocket.http.response.body sent before websocket.http.response.start\n";
        my $body = $ev->{body} // '';
        utf8::downgrade($body, 1)
            or die "websocket.http.response.body: body must be a byte string, not characters\n";
        $d->{body} .= $body;
        $self->_deny(@$d{qw(status headers body)}) unless $ev->{more};
        return $DONE;
    }
    die "Unrecognized event type '$type' for websocket protocol\n";
}

# Text goes out as UTF-8: character strings are encoded; byte strings that
# already are UTF-8 pass through, others are taken as Latin-1 characters.
sub _utf8_bytes {
    my ($text) = @_;
    if (!utf8::is_utf8($text)) {
        return $text unless $text =~ /[^\x00-\x7f]/;    # ASCII: nothing to check
        my $copy = $text;
        return $text if utf8::decode($copy);
    }
    utf8::encode($text);
    return $text;
}

sub _checked_headers {
    my ($what, $headers) = @_;
    $headers //= [];
    die "$what: headers must be an array reference\n" unless ref $headers eq 'ARRAY';
    for my $pair (@$headers) {
        die "$what: each header must be a [name, value] pair\n"
            unless ref $pair eq 'ARRAY' && defined $pair->[0] && defined $pair->[1];
        die "$what: header name '$pair->[0]' is not a valid token\n" unless $pair->[0] =~ $TOKEN;
        die "$what: header '$pair->[0]' has a value with CR, LF or NUL\n" if $pair->[1] =~ /[\r\n\0]/;
    }
    return map { [@$_] } @$headers;
}

# Answers the handshake with an HTTP response instead of a 101; the
# connection closes after it.
sub _deny {
    my ($self, $status, $headers, $body) = @_;
    my @headers = grep { lc $_->[0] ne 'content-length' } @$headers;
    push @headers, ['content-length', length $body];
    $self->{denial} //= {};
    $self->{trailers} = 0;
    $self->_start_response($status, \@headers);
    $self->_send_body($body, 0);
}

sub _app_finished {
    my ($self, $f) = @_;
    delete $self->{app_future};
    $self->{app_done} = 1;
    if ($f->is_failed) {
        my ($err) = $f->failure;
        $err //= 'unknown error';
        warn "PAGI application error (WebSocket): $err" . ($err =~ /\n\z/ ? '' : "\n");
    }
    elsif (!$self->{accepted} && !$self->{denial} && $self->_live) {
        warn "PAGI application returned without accepting or rejecting the WebSocket\n";
    }
    if (!$self->_live) {
        if ($self->{gone} && $self->{accepted} && $self->{native}) {
            # The client closed first: the session's access-log line is due now.
            my (undef, $log) = PAGI::Server::Native::send_body($self->{native}, $self->{id}, '', 1);
            $self->_log_access($log) if defined $log;
        }
    }
    elsif ($self->{accepted}) {
        # A failed app's connection is closed with 1011, a finished one with 1000.
        if ($f->is_failed) {
            $self->{done} = 1;
            PAGI::Server::Native::request_end($self->{native}, $self->{id}, PAGI::Server::Native::END_ABORT);
        }
        else {
            $self->_send_body('', 0);
        }
    }
    elsif (my $d = !$f->is_failed && $self->{denial}) {
        # A denial the app left unfinished goes out with the body so far.
        $self->_deny(@$d{qw(status headers body)});
    }
    else {
        $self->_deny(500, [['content-type', 'text/plain']], 'Internal Server Error');
    }
    $self->{tstate}->_detach;
    $self->_forget;
}

1;

__END__

=head1 NAME

PAGI::Server::WebSocket - one WebSocket session inside PAGI::Server

=head1 DESCRIPTION

Internal to L<PAGI::Server>. A request that asks for a WebSocket upgrade
gets a C<websocket> scope and is served by this class: C<$receive> yields
C<websocket.connect>, then C<websocket.receive> events (C<text> decoded from
UTF-8, C<bytes> raw), then C<websocket.disconnect> with a C<code> and
C<reason>. C<$send> takes C<websocket.accept> (optional C<subprotocol>, which
must be a token, and C<headers>), C<websocket.send> (C<text> or C<bytes>),
C<websocket.close> (C<code>, C<reason>), C<websocket.keepalive>
(C<interval>, C<timeout>) and the denial-response extension
C<websocket.http.response.start> / C<websocket.http.response.body>.

The Rust core reads and writes the frames. Client messages wait in a queue
until the app receives them; over C<max_receive_queue> messages (0 = no
limit) the connection is closed with code 1008 and the app sees reason
C<queue_overflow>; reading pauses while 1 MiB of messages waits. Once the
app has sent C<websocket.close>, further C<websocket.send> events are
no-ops. A C<websocket.close> before C<websocket.accept> answers
the handshake with C<403 Forbidden>. An app that dies or returns before
answering the handshake gets a C<500>; one that dies after accepting has its
connection closed with code 1011, and one that returns without closing has
it closed with 1000.

C<text> values that are character strings are sent UTF-8 encoded; byte
strings that are already valid UTF-8 are sent as they are (as the reference
server does), and other byte strings are taken as Latin-1 characters.

=cut
