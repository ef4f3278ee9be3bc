# A unary gRPC service as a plain PAGI app: helloworld.Greeter/SayHello.
#
# gRPC runs over HTTP/2, so serve it with http2 enabled:
#
#   pagi-server --http2 -p 50051 examples/grpc/app.pl            # h2c
#   pagi-server --http2 --ssl-cert c.pem --ssl-key k.pem ...     # h2 over TLS
#
# The request body is one gRPC message: a 1-byte compressed flag, a 4-byte
# big-endian length, then a protobuf HelloRequest (field 1: string name).
# The reply is a HelloReply (field 1: string message = "Hello, NAME") in
# the same framing, with content-type application/grpc, followed by the
# trailers grpc-status (0 = OK) and, on errors, grpc-message. The protobuf
# wire format is encoded and decoded here by hand (varint tags and
# lengths); no protobuf module is needed.
#
# Errors are reported the gRPC way (HTTP status 200, grpc-status in the
# trailers): an unknown method gets 12 UNIMPLEMENTED, a compressed or
# malformed message 13 INTERNAL / 3 INVALID_ARGUMENT. A request that is not
# gRPC at all (not a POST with content-type application/grpc...) gets a
# plain HTTP 415 or 405.
use strict;
use warnings;
use Future::AsyncAwait;

my %STATUS = (OK => 0, INVALID_ARGUMENT => 3, UNIMPLEMENTED => 12, INTERNAL => 13);

# ---- protobuf wire format (the parts this service needs) ----

sub pb_varint {
    my ($n) = @_;
    my $out = '';
    while ($n >= 0x80) {
        $out .= chr(($n & 0x7f) | 0x80);
        $n >>= 7;
    }
    return $out . chr($n);
}

# Reads a varint at $$pos of $buf; undef when it is cut short or too long.
sub pb_read_varint {
    my ($buf, $pos) = @_;
    my ($n, $shift) = (0, 0);
    while ($$pos < length $buf) {
        my $b = ord substr($buf, $$pos++, 1);
        $n |= ($b & 0x7f) << $shift;
        return $n unless $b & 0x80;
        $shift += 7;
        return undef if $shift > 63;
    }
    return undef;
}

# The fields of a message: { number => [values] } with length-delimited
# fields as byte strings and varints as numbers; undef if malformed.
sub pb_decode {
    my ($buf) = @_;
    my (%fields, $pos);
    $pos = 0;
    while ($pos < length $buf) {
        my $key = pb_read_varint($buf, \$pos) // return undef;
        my ($num, $type) = ($key >> 3, $key & 7);
        return undef if $num == 0;
        my $value;
        if ($type == 0) {            # varint
            $value = pb_read_varint($buf, \$pos) // return undef;
        }
        elsif ($type == 1 || $type == 5) {    # 64-bit / 32-bit
            my $len = $type == 1 ? 8 : 4;
            return undef if $pos + $len > length $buf;
            $value = substr($buf, $pos, $len);
            $pos += $len;
        }
        elsif ($type == 2) {         # length-delimited
            my $len = pb_read_varint($buf, \$pos) // return undef;
            return undef if $pos + $len > length $buf;
            $value = substr($buf, $pos, $len);
            $pos += $len;
        }
        else {
            return undef;            # groups (3, 4) and unknown types
        }
        push @{ $fields{$num} }, $value;
    }
    return \%fields;
}

# Field $num as a length-delimited string.
sub pb_string_field {
    my ($num, $bytes) = @_;
    return pb_varint(($num << 3) | 2) . pb_varint(length $bytes) . $bytes;
}

# ---- gRPC framing ----

sub grpc_frame {
    my ($msg) = @_;
    return pack('CN', 0, length $msg) . $msg;
}

# grpc-message is percent-encoded: bytes outside printable ASCII, and '%'.
sub grpc_message_encode {
    my ($text) = @_;
    utf8::encode($text) if utf8::is_utf8($text);
    $text =~ s/([^\x20-\x24\x26-\x7e])/sprintf('%%%02X', ord $1)/ge;
    return $text;
}

# ---- the service ----

my %METHODS = (
    '/helloworld.Greeter/SayHello' => sub {
        my ($request) = @_;
        my $fields = pb_decode($request)
            // return (INVALID_ARGUMENT => 'HelloRequest is not a valid protobuf message');
        # Last one wins for a repeated scalar field, as protobuf says.
        my $name = $fields->{1} ? $fields->{1}[-1] : '';
        return (OK => undef, pb_string_field(1, "Hello, $name"));
    },
);

async sub read_body {
    my ($receive) = @_;
    my $body = '';
    while (1) {
        my $event = await $receive->();
        return undef if $event->{type} ne 'http.request';    # http.disconnect
        $body .= $event->{body} // '';
        return $body unless $event->{more};
    }
}

async sub plain_error {
    my ($send, $status, $text, @headers) = @_;
    await $send->({
        type    => 'http.response.start',
        status  => $status,
        headers => [ [ 'content-type', 'text/plain' ], [ 'content-length', length $text ], @headers ],
    });
    await $send->({ type => 'http.response.body', body => $text });
}

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    # Declined: the server goes on without the lifespan protocol.
    die "lifespan not used by this example\n" if $scope->{type} eq 'lifespan';
    return unless $scope->{type} eq 'http';

    my ($ctype) = map { $_->[1] } grep { lc $_->[0] eq 'content-type' } @{ $scope->{headers} };
    if (!defined $ctype || $ctype !~ m{\Aapplication/grpc(?:[+;]|\z)}i) {
        return await plain_error($send, 415, "gRPC requests need content-type application/grpc\n");
    }
    if ($scope->{method} ne 'POST') {
        return await plain_error($send, 405, "gRPC requests are POSTs\n", [ 'allow', 'POST' ]);
    }

    my $body = await read_body($receive);
    return unless defined $body;    # the client went away

    my ($code, $message, $reply);
    my $method = $METHODS{ $scope->{path} };
    if (!$method) {
        ($code, $message) = (UNIMPLEMENTED => "unknown method $scope->{path}");
    }
    elsif (length $body < 5) {
        ($code, $message) = (INTERNAL => 'the request holds no complete gRPC message');
    }
    else {
        my ($compressed, $len) = unpack 'CN', $body;
        if ($compressed) {
            ($code, $message) = (INTERNAL => 'compressed messages are not supported');
        }
        elsif (length($body) != 5 + $len) {
            ($code, $message) = (INTERNAL => 'a unary call takes exactly one message');
        }
        else {
            ($code, $message, $reply) = $method->(substr $body, 5);
        }
    }

    await $send->({
        type     => 'http.response.start',
        status   => 200,
        trailers => 1,
        headers  => [ [ 'content-type', 'application/grpc' ] ],
    });
    await $send->({ type => 'http.response.body', body => grpc_frame($reply), more => 1 })
        if defined $reply;
    await $send->({
        type    => 'http.response.trailers',
        headers => [
            [ 'grpc-status', $STATUS{$code} ],
            (defined $message ? [ 'grpc-message', grpc_message_encode($message) ] : ()),
        ],
    });
};

$app;
