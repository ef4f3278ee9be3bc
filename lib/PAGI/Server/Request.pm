package PAGI::Server::Request;

use strict;
use warnings;

use Future;
use Scalar::Util qw(blessed looks_like_number);

use PAGI::Server::ConnectionState;
use PAGI::Server::EventValidator;
use PAGI::Server::TransportState;

our $VERSION = '0.003000';

# One in-flight HTTP or SSE request: its receive queue, its response state
# and the $receive/$send closures handed to the app. Records from the Rust
# core reach it through PAGI::Server::_drain.

my $ERROR_BODY = 'Internal Server Error';

# The result of every $send that need not wait: one shared, already
# completed Future (awaiting a done Future only reads it).
our $DONE = Future->done;

# A new SSE request, or any request under validate_events, from a REQUEST
# record ($flags: its F_* flags), with the first piece of its body if that
# came along (the BODY record's data and more). The request object and its
# scope's state, extensions, pagi.connection and pagi.transport are made by
# Native::request_new (xs/request.h). A plain http request never comes
# here: Native::dispatch runs it (xs/http_fast.h).
sub start {
    my ($server, $id, $scope, $flags, @body) = @_;
    my $self = PAGI::Server::Native::request_new($server, $id, $scope, $flags, __PACKAGE__);
    $self->body(@body) if @body;
    my $f = $self->_call_app($scope, $self->_closures) or return;
    $self->_app_finished($f);
    return;
}

# $receive and $send in Perl: for SSE, and for validate_events (every event
# checked against the spec before it is acted on).
sub _closures {
    my ($self) = @_;
    my $receive = sub { $self->_receive };
    my $validate = $self->{server}{validate_events}
        ? ($self->{sse} ? \&PAGI::Server::EventValidator::validate_sse_send
                        : \&PAGI::Server::EventValidator::validate_http_send)
        : undef;
    return ($receive, sub {
        $validate->($_[0]);
        return $self->_send($_[0]);
    }) unless $self->{sse};
    my ($h, $id) = @$self{qw(native id)};
    return ($receive, sub {
        my ($ev) = @_;
        $validate->($ev) if $validate;
        # An event on a running stream, the one that comes by the thousand.
        if (ref $ev eq 'HASH' && ($ev->{type} // '') eq 'sse.send' && $self->{started} && !$self->{declined}
            && !$self->{sse_closed} && !$self->{done} && !defined $self->{gone}) {
            my ($rc) = PAGI::Server::Native::send_body($h, $id, _sse_frame($ev), 0);
            return PAGI::Server::Native::req_result($self, $rc);
        }
        return $self->_sse_send($ev);
    });
}

# Calls the app. Returns its Future once that is ready; while it is still
# running, returns nothing and _app_finished follows when it is.
sub _call_app {
    my ($self, $scope, $receive, $send) = @_;
    my $f = eval { $self->{server}{app}->($scope, $receive, $send) };
    return $self->_app_returned($f, $@);
}

# The app returned $f (or died with $err): as _call_app.
sub _app_returned {
    my ($self, $f, $err) = @_;
    # Async subs return plain Futures; anything else must at least act like one.
    if ($f && (ref $f eq 'Future' || (blessed($f) && $f->can('is_ready')))) {
        return $f if $f->is_ready;
        $self->{app_future} = $f;
        $f->on_ready(sub { $self->_app_finished($_[0]) });
        return;
    }
    return $f ? $DONE : Future->fail($err || "application did not return a Future\n");
}

# The app of a plain request run by Native::dispatch (xs/http_fast.h)
# returned (or died) without having finished its response.
sub _app_ran {
    my ($self, $f, $err) = @_;
    $f = $self->_app_returned($f, $err) or return;
    $self->_app_finished($f);
}

sub _disconnect_event {
    my ($self) = @_;
    # After the app's own sse.close: its reason (client_closed without one),
    # as the reference reports it.
    my $reason = $self->{gone} // ($self->{sse_closed} ? $self->{sse_closed}[0] // 'client_closed' : undef);
    return { type => ($self->{sse} ? 'sse.disconnect' : 'http.disconnect'),
             (defined $reason ? (reason => $reason) : ()) };
}

sub _receive {
    my ($self) = @_;
    if (delete $self->{empty}) {
        return Future->done({ type => ($self->{sse} ? 'sse.request' : 'http.request'), body => '', more => 0 });
    }
    my $q = $self->{queue} ||= [];
    if (@$q) {
        my $ev = shift @$q;
        $self->_ack($ev);
        return Future->done($ev);
    }
    return Future->done($self->_disconnect_event) if $self->{done} || defined $self->{gone};
    return $self->_end_at_eof if $self->{eof};
    PAGI::Server::Native::body_ack($self->{native}, $self->{id}, 0) if delete $self->{expect};
    my $f = $self->{loop}->new_future;
    push @{ $self->{waiters} }, $f;
    return $f;
}

# Lets the Rust reader go on once the app has taken a chunk.
sub _ack {
    my ($self, $ev) = @_;
    return unless $ev->{more} && $self->{native} && !defined $self->{gone};
    PAGI::Server::Native::body_ack($self->{native}, $self->{id}, length $ev->{body});
}

sub _deliver {
    my ($self, $ev) = @_;
    if (my $w = shift @{ $self->{waiters} }) {
        $self->_ack($ev);
        $w->done($ev);
    }
    else {
        push @{ $self->{queue} }, $ev;
    }
}

# BODY record.
sub body {
    my ($self, $data, $more) = @_;
    $self->_deliver({ type => ($self->{sse} ? 'sse.request' : 'http.request'), body => $data, more => $more });
}

# DISCONNECT record (or the server going away).
sub disconnected {
    my ($self, $reason) = @_;
    return if defined $self->{gone};
    $self->{gone} = $reason // 'client_closed';
    # The spec's order: connection state first, the receive event last.
    $self->{cstate}->_mark_disconnected($self->{gone}) if $self->{cstate};
    my $ev = $self->_disconnect_event;
    $_->done({%$ev}) for grep { !$_->is_ready } @{ delete $self->{waiters} || [] };
    $self->_gone_for_good;
}

# After a disconnect: a pending $send is released, the transport state
# stops reporting, and the request is forgotten once the app is done.
sub _gone_for_good {
    my ($self) = @_;
    $self->_release_senders;
    $self->{tstate}->_drained;
    $self->{tstate}->_detach;
    $self->_forget;
}

# EOF record: the client ended its side after a complete request (a
# half-close). The response still goes out; an app that waits for more
# input is told the client is gone, and the connection is closed.
sub client_eof {
    my ($self) = @_;
    $self->{eof} = 1;
    $self->_end_at_eof if $self->{waiters} && @{ $self->{waiters} };
}

sub _end_at_eof {
    my ($self) = @_;
    PAGI::Server::Native::request_end($self->{native}, $self->{id}, PAGI::Server::Native::END_ABORT)
        if $self->{native} && $self->_live;
    $self->disconnected('client_closed');
    return Future->done($self->_disconnect_event);
}

# DRAIN record: the client caught up.
sub drained {
    my ($self) = @_;
    $self->{tstate}->_drained if $self->{tstate}{high_now};
    $self->_release_senders;
}

# Completes the Futures of the sends that wait for a drain (one each, so
# an app that cancels its wait cancels nobody else's).
sub _release_senders {
    my ($self) = @_;
    my $w = delete $self->{drain_waiters} or return;
    $_->is_ready or $_->done for @$w;
}

# The server let go of the core: the request is over, and its copy of the
# core's handle must never be used again.
sub _released {
    my ($self) = @_;
    delete $self->{native};
    $self->disconnected('server_shutdown');
}

# Whether the core's record of this request outlives a disconnect (a
# WebSocket session keeps it for its access-log line).
sub _keeps_slot { 0 }

sub _forget {
    my ($self) = @_;
    my $server = $self->{server};
    delete $server->{requests}{ $self->{id} } if $server && $self->{app_done};
}

# The server disconnects every request before it releases the core, so a
# request that is neither done nor gone may still talk to it.
sub _live {
    my ($self) = @_;
    return !$self->{done} && !defined $self->{gone};
}

# What a send returns, given the core's code: $DONE, or a Future that
# waits for the client (xs/request.h's req_result, which also has the
# transport state look at the backlog).
sub _result { PAGI::Server::Native::req_result($_[0], $_[1]) }

# The backlog was at the high watermark: the app waits until the client
# catches up.
sub _wait_drain {
    my ($self) = @_;
    my $f = $self->{loop}->new_future;
    push @{ $self->{drain_waiters} }, $f;
    return $f;
}

sub _log_access {
    my ($self, $line) = @_;
    my $server = $self->{server} or return;
    $server->_write_access_log($line);
}

# The response is complete: the request is done, its access-log line (if
# any) is written, and it is forgotten once the app has returned too.
sub _finish {
    my ($self, $log) = @_;
    PAGI::Server::Native::req_after_body($self, 1, 0, $log);
}

# http.response.start; dies on a bad status or headers, leaving the
# response unstarted. Returns the core's code.
sub _start_response {
    my ($self, $status, $headers, $trailers) = @_;
    return PAGI::Server::Native::req_start($self, $status, $headers, $trailers);
}

sub _send_body {
    my ($self, $body, $more) = @_;
    return PAGI::Server::Native::req_body($self, $body, $more ? 1 : 0);
}

# A file or fh body, which ends the response (the spec ignores `more`
# here). Paths and handles with a real descriptor are read by the core;
# in-memory and tied handles are read here.
sub _send_file_body {
    my ($self, $ev) = @_;
    my ($offset, $length) = ($ev->{offset}, $ev->{length});
    die "http.response.body: offset must be a non-negative integer\n"
        if defined $offset && $offset !~ /\A[0-9]+\z/;
    die "http.response.body: length must be a non-negative integer\n"
        if defined $length && $length !~ /\A[0-9]+\z/;
    my $fin = !$self->{trailers};
    my $fh = $ev->{fh};
    my $fd = defined $fh ? _fd_of($fh) : -1;
    if (defined $ev->{file} || $fd >= 0) {
        # Perl's buffered position, not the descriptor's, is where the app
        # left a file handle (pipes and sockets have no position).
        if (!defined $offset && $fd >= 0 && -f $fh) {
            my $pos = tell($fh);
            $offset = $pos if $pos >= 0;
        }
        my ($rc, $log);
        unless (eval {
            ($rc, $log) = PAGI::Server::Native::send_file($self->{native}, $self->{id},
                $ev->{file}, $fd, $offset, $length, $fin ? 1 : 0);
            1;
        }) {
            my $err = $@;
            $self->_unstart;
            die $err;
        }
        $self->_after_body($fin, 0, $log);
        return $rc;
    }
    seek($fh, $offset, 0) or die "http.response.body: cannot seek the filehandle: $!\n"
        if $offset;
    my $left = $length;
    while (!defined $left || $left > 0) {
        my $want = defined $left && $left < 65536 ? $left : 65536;
        my $n = read($fh, my $piece, $want);
        die "http.response.body: reading the filehandle failed: $!\n" unless defined $n;
        last unless $n;
        $left -= $n if defined $left;
        $self->_send_body($piece, 1);
    }
    return $self->_send_body('', 0);
}

# A file that cannot be sent, while the head is still held back by the core
# (no body went out yet): the response counts as not started, so the app
# may answer afresh (a 404, say), and an app that does not gets a 500
# rather than a truncated 200.
sub _unstart {
    my ($self) = @_;
    return unless PAGI::Server::Native::unstart($self->{native}, $self->{id});
    $self->{started}  = 0;
    $self->{trailers} = 0;
}

# The descriptor the core can read itself, or -1 for a tied or in-memory
# handle (read in Perl). A closed handle fails at once, as the spec asks.
sub _fd_of {
    my ($fh) = @_;
    return -1 if eval { tied *$fh };
    my $fd = eval { fileno($fh) };
    die "http.response.body: fh is not an open filehandle\n" unless defined $fd;
    return $fd;
}

# The final frame finishes the request; more => 0 while trailers are due
# ends the body.
sub _after_body {
    my ($self, $fin, $more, $log) = @_;
    PAGI::Server::Native::req_after_body($self, $fin ? 1 : 0, $more ? 1 : 0, $log);
}

sub _send {
    my ($self, $ev) = @_;
    die "send requires an event hash reference\n" unless ref $ev eq 'HASH';
    my $type = $ev->{type} // '';

    if ($type eq 'http.response.body' || $type eq 'http.response.start'
        || $type eq 'http.response.trailers' || $type eq 'http.fullflush') {
        if ($type eq 'http.fullflush') {
            unless (exists $self->{server}{extensions}{fullflush}) {
                warn "PAGI: http.fullflush event rejected - extension not enabled\n";
                die "Extension not enabled: fullflush\n";
            }
            # The core writes every frame as soon as it is handed over; only a
            # head held back for the first body frame waits, so let it go.
            PAGI::Server::Native::send_body($self->{native}, $self->{id}, '', 0)
                if $self->{started} && $self->_live;
            return $DONE;
        }
        return $DONE unless $self->_live;

        if ($type eq 'http.response.body') {
            die "http.response.body sent before http.response.start\n" unless $self->{started};
            return $DONE if $self->{body_done};
            return $self->_result((defined $ev->{file} || defined $ev->{fh})
                ? $self->_send_file_body($ev) : $self->_send_body($ev->{body}, $ev->{more}));
        }
        if ($type eq 'http.response.start') {
            die "http.response.start sent twice\n" if $self->{started};
            return $self->_result($self->_start_response($ev->{status}, $ev->{headers}, $ev->{trailers}));
        }
        # http.response.trailers
        die "http.response.trailers requires http.response.start with trailers => 1\n"
            unless $self->{trailers};
        my ($rc, $log) = PAGI::Server::Native::send_trailers($self->{native}, $self->{id}, $ev->{headers} // []);
        $self->_finish($log);
        return $DONE;
    }
    die "Unrecognized event type '$type' for http protocol\n";
}

# ------------------------------------------------------------------- SSE

my %SSE_EVENT = map { $_ => 1 } qw(sse.start sse.send sse.comment sse.keepalive sse.close
    sse.http.response.start sse.http.response.body);

# $send of an sse scope. Misuse raises whether or not the client is still
# there: any event after sse.close (a repeat of it is ignored), a stream
# event after a decline began, a decline after sse.start. Otherwise a send
# after the client went is a no-op.
sub _sse_send {
    my ($self, $ev) = @_;
    die "send requires an event hash reference\n" unless ref $ev eq 'HASH';
    my $type = $ev->{type} // '';
    return $self->_send($ev) if $type eq 'http.fullflush';
    die "Unrecognized event type '$type' for sse protocol\n" unless $SSE_EVENT{$type};
    if ($self->{sse_closed}) {
        return $DONE if $type eq 'sse.close';
        die "cannot send '$type' after sse.close\n";
    }
    my $decline = $type =~ /\Asse\.http\.response\./;
    die "cannot send '$type' after sse.start\n" if $decline && $self->{started} && !$self->{declined};
    die "cannot send '$type' after sse.http.response.start\n" if !$decline && $self->{declined};
    return $DONE unless $self->_live;
    return $self->_sse_decline($type, $ev) if $decline;
    return $self->_send_sse($type, $ev);
}

sub _send_sse {
    my ($self, $type, $ev) = @_;
    if ($type eq 'sse.start') {
        die "sse.start sent twice\n" if $self->{started};
        my @h = @{ $ev->{headers} // [] };
        my %have = map { lc($_->[0]) => 1 } @h;
        push @h, ['content-type', 'text/event-stream'] unless $have{'content-type'};
        push @h, ['cache-control', 'no-cache'] unless $have{'cache-control'};
        $self->_start_response($ev->{status} // 200, \@h, 0);
        # Sends the head at once and tells the core this is a stream (for
        # the keepalive timer and the end at a graceful shutdown).
        my $ka = $self->{keepalive} // [0, ''];
        return $self->_result(PAGI::Server::Native::sse_stream($self->{native}, $self->{id}, @$ka));
    }
    if ($type eq 'sse.keepalive') {
        # Accepted before sse.start too (PAGI::Endpoint::SSE sends it first);
        # the core's timer starts with the stream. The last one wins.
        my $interval = $ev->{interval} // 0;
        die "sse.keepalive: 'interval' must be a non-negative number of seconds\n"
            unless looks_like_number($interval) && $interval >= 0 && $interval == $interval;
        $self->{keepalive} = [$interval, _comment_frame($ev->{comment} // '')];
        if ($self->{started}) {
            PAGI::Server::Native::sse_stream($self->{native}, $self->{id}, @{ $self->{keepalive} });
        }
        else {
            PAGI::Server::Native::sse_touch($self->{native}, $self->{id});
        }
        return $DONE;
    }
    die "$type sent before sse.start\n" unless $self->{started};
    my $frame;
    if ($type eq 'sse.send') {
        $frame = _sse_frame($ev);
    }
    elsif ($type eq 'sse.comment') {
        $frame = _comment_frame($ev->{comment} // '');
    }
    else {    # sse.close: the stream ends now; its reason stays here
        $self->{sse_closed} = [$ev->{reason}];
        return $self->_result($self->_send_body('', 0));
    }
    return $self->_result($self->_send_body($frame, 1));
}

# An sse.send event as bytes on the wire. A newline in event or id, or a
# retry that is not an integer, dies. Empty data is one empty data line
# (an event with data ""); an event without data (retry only, say)
# dispatches nothing.
sub _sse_frame {
    my ($ev) = @_;
    my $frame = '';
    for my $f (qw(event id)) {
        my $v = $ev->{$f} // next;
        die "sse.send: '$f' must not contain newlines\n" if $v =~ /[\r\n]/;
        $frame .= "$f: $v\n";
    }
    if (defined(my $retry = $ev->{retry})) {
        die "sse.send: 'retry' must be a non-negative integer\n" unless $retry =~ /\A\d+\z/;
        $frame .= "retry: $retry\n";
    }
    if (defined(my $data = $ev->{data})) {
        # LF, CRLF and a bare CR each end a line of data.
        $frame .= $data =~ /[\r\n]/ ? join('', map { "data: $_\n" } split(/\r\n|\r|\n/, $data, -1))
                                    : "data: $data\n";
    }
    $frame .= "\n";
    utf8::encode($frame) if utf8::is_utf8($frame);
    return $frame;
}

# sse.http.response.start / .body: a plain HTTP response instead of the
# stream. The body is gathered until more => 0 and goes out with a
# Content-Length; the connection (HTTP/1.1) is closed after it.
sub _sse_decline {
    my ($self, $type, $ev) = @_;
    PAGI::Server::Native::sse_touch($self->{native}, $self->{id});
    if ($type eq 'sse.http.response.start') {
        return $DONE if $self->{declined};    # the first one wins
        my $status = $ev->{status} // 200;
        die "sse.http.response.start: status must be an integer between 200 and 599\n"
            unless $status =~ /\A[2-5][0-9][0-9]\z/;
        $self->{declined} = { status => $status, headers => _decline_headers($ev->{headers}), body => '' };
        return $DONE;
    }
    my $d = $self->{declined}
        or die "sse.http.response.body sent before sse.http.response.start\n";
    my $body = $ev->{body} // '';
    utf8::downgrade($body, 1)
        or die "sse.http.response.body: body must be a byte string, not characters\n";
    $d->{body} .= $body;
    return $DONE if $ev->{more};
    my @h = @{ $d->{headers} };
    push @h, ['content-length', length $d->{body}] unless grep { lc($_->[0]) eq 'content-length' } @h;
    $self->_start_response($d->{status}, \@h, 0);
    return $self->_result($self->_send_body($d->{body}, 0));
}

# The decline's headers, refused here (as the core refuses a response
# head's) so that the start event is the send that fails.
sub _decline_headers {
    my ($headers) = @_;
    $headers //= [];
    my $what = 'sse.http.response.start';
    die "$what: headers must be an array reference\n" unless ref $headers eq 'ARRAY';
    for my $h (@$headers) {
        die "$what: each header must be a [name, value] pair\n"
            unless ref $h eq 'ARRAY' && defined $h->[0] && defined $h->[1];
        die "$what: invalid header name '$h->[0]'\n" if $h->[0] =~ /[\x00-\x1f\x7f]/;
        die "$what: header '$h->[0]' has a value with CR, LF or NUL\n" if $h->[1] =~ /[\r\n\0]/;
    }
    return [ map { [@$_] } @$headers ];
}

# An SSE comment as bytes: every line (CR, LF and CRLF all end one) starts
# with ':', so no comment text can become a field or end an event.
sub _comment_frame {
    my ($text) = @_;
    my @lines = length $text ? split(/\r\n|\r|\n/, $text, -1) : ('');
    my $frame = join('', map { /\A:/ ? "$_\n" : ":$_\n" } @lines) . "\n";
    utf8::encode($frame) if utf8::is_utf8($frame);
    return $frame;
}

# ------------------------------------------------------------- app done

sub _app_finished {
    my ($self, $f) = @_;
    my $answered = $self->{started};    # before any 500 backstop below
    delete $self->{app_future};
    $self->{app_done} = 1;
    if ($f->is_failed) {
        my ($err) = $f->failure;
        $self->_app_failed($err);
    }
    elsif (!$self->{started}) {
        if ($self->_live) {
            # After the client's EOF it may well be gone (a full close looks
            # like a half-close): the 500 still goes out, without the noise.
            warn "PAGI application returned without starting a response\n" unless $self->{eof};
            $self->_error_response;
        }
    }
    elsif ($self->_live) {
        # Returned mid-stream (SSE, or a body without more => 0): end it.
        $self->{trailers} = 0;
        $self->_send_body('', 0);
    }
    if (my $cs = $self->{cstate}) {
        # A 500 backstop or a failure is a server error; otherwise complete.
        ($f->is_failed || !$answered)
            ? $cs->_mark_disconnected('server_error') : $cs->_mark_complete;
    }
    $self->{tstate}->_detach;
    $self->_forget if $self->{done} || defined $self->{gone};
}

sub _app_failed {
    my ($self, $err) = @_;
    $err //= 'unknown error';
    return unless $self->_live;
    if (!$self->{started}) {
        warn "PAGI application error: $err" . ($err =~ /\n\z/ ? '' : "\n");
        $self->_error_response;
    }
    else {
        warn "PAGI application error (after response started): $err" . ($err =~ /\n\z/ ? '' : "\n");
        $self->{done} = 1;
        PAGI::Server::Native::request_end($self->{native}, $self->{id}, PAGI::Server::Native::END_ABORT);
    }
}

sub _error_response {
    my ($self) = @_;
    $self->{trailers} = 0;
    $self->_start_response(500, [
        ['content-type', 'text/plain'],
        ['content-length', length $ERROR_BODY],
        ['connection', 'close'],
    ]);
    $self->_send_body($ERROR_BODY, 0);
}

1;

__END__

=head1 NAME

PAGI::Server::Request - one in-flight request inside PAGI::Server

=head1 DESCRIPTION

Internal to L<PAGI::Server>. Holds the receive queue and response state of a
request served by the Rust core, builds the C<$receive> and C<$send>
closures the application gets, and turns an application that dies or
returns without a response into a C<500> (the connection is then closed).

=cut
