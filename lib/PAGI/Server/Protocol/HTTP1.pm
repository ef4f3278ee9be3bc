package PAGI::Server::Protocol::HTTP1;

use strict;
use warnings;

our $VERSION = '0.003000';

# The request-head parser lives in the Rust core and is reached through the
# XS module, which PAGI::Server loads. Loading PAGI::Server also defines
# $PAGI::Server::VERSION, used for the default Server header.
use PAGI::Server ();

# Reason phrases for the status line. Codes missing here get 'Unknown'.
my %REASON = (
    100 => 'Continue',
    101 => 'Switching Protocols',
    102 => 'Processing',
    103 => 'Early Hints',
    200 => 'OK',
    201 => 'Created',
    202 => 'Accepted',
    203 => 'Non-Authoritative Information',
    204 => 'No Content',
    205 => 'Reset Content',
    206 => 'Partial Content',
    207 => 'Multi-Status',
    208 => 'Already Reported',
    226 => 'IM Used',
    300 => 'Multiple Choices',
    301 => 'Moved Permanently',
    302 => 'Found',
    303 => 'See Other',
    304 => 'Not Modified',
    305 => 'Use Proxy',
    307 => 'Temporary Redirect',
    308 => 'Permanent Redirect',
    400 => 'Bad Request',
    401 => 'Unauthorized',
    402 => 'Payment Required',
    403 => 'Forbidden',
    404 => 'Not Found',
    405 => 'Method Not Allowed',
    406 => 'Not Acceptable',
    407 => 'Proxy Authentication Required',
    408 => 'Request Timeout',
    409 => 'Conflict',
    410 => 'Gone',
    411 => 'Length Required',
    412 => 'Precondition Failed',
    413 => 'Payload Too Large',
    414 => 'URI Too Long',
    415 => 'Unsupported Media Type',
    416 => 'Range Not Satisfiable',
    417 => 'Expectation Failed',
    418 => "I'm a teapot",
    421 => 'Misdirected Request',
    422 => 'Unprocessable Entity',
    423 => 'Locked',
    424 => 'Failed Dependency',
    425 => 'Too Early',
    426 => 'Upgrade Required',
    428 => 'Precondition Required',
    429 => 'Too Many Requests',
    431 => 'Request Header Fields Too Large',
    451 => 'Unavailable For Legal Reasons',
    500 => 'Internal Server Error',
    501 => 'Not Implemented',
    502 => 'Bad Gateway',
    503 => 'Service Unavailable',
    504 => 'Gateway Timeout',
    505 => 'HTTP Version Not Supported',
    506 => 'Variant Also Negotiates',
    507 => 'Insufficient Storage',
    508 => 'Loop Detected',
    510 => 'Not Extended',
    511 => 'Network Authentication Required',
);

# The longest chunk-size line (size plus extensions) waited for before the
# body is declared malformed.
use constant MAX_CHUNK_LINE => 8192;

sub new {
    my ($class, %args) = @_;
    return bless {
        max_header_size       => $args{max_header_size}       // 8192,
        max_request_line_size => $args{max_request_line_size} // 8192,
        max_header_count      => $args{max_header_count}      // 100,
        max_chunk_size        => $args{max_chunk_size}        // 10_485_760,
    }, $class;
}

# ---------------------------------------------------------------------------
# Requests
# ---------------------------------------------------------------------------

sub parse_request {
    my $self = shift;
    # Work on the caller's string through a reference: no copy of the buffer.
    my $buf = ref $_[0] ? $_[0] : \$_[0];
    return (undef, 0) unless defined $$buf && length $$buf;
    return PAGI::Server::Native::parse_head(
        $$buf,
        $self->{max_request_line_size},
        $self->{max_header_size},
        $self->{max_header_count},
    );
}

sub parse_chunked_body {
    my $self = shift;
    my $ref = ref $_[0] ? $_[0] : \$_[0];
    return ('', 0, 0) unless defined $$ref;

    my $limit = $self->{max_chunk_size};
    my $len   = length $$ref;
    my $pos   = 0;          # start of the next unread chunk
    my $data  = '';

    while ($pos < $len) {
        my $eol = index($$ref, "\r\n", $pos);
        if ($eol < 0) {
            return (_chunk_error(400, 'Invalid chunk size'), 0, 0)
                if $len - $pos > MAX_CHUNK_LINE;
            last;
        }

        # chunk-size [ ; extensions ], with optional whitespace tolerated
        # around the size; extensions are ignored.
        my $line = substr($$ref, $pos, $eol - $pos);
        $line =~ s/;.*\z//s;
        $line =~ s/\A[ \t]+//;
        $line =~ s/[ \t]+\z//;
        return (_chunk_error(400, 'Invalid chunk size'), 0, 0)
            unless $line =~ /\A[0-9A-Fa-f]+\z/;

        (my $digits = $line) =~ s/\A0+(?=.)//;
        return (_chunk_error(413, 'Chunk Too Large'), 0, 0)
            if length($digits) > 15;
        my $size = do { no warnings 'portable'; hex $digits };
        return (_chunk_error(413, 'Chunk Too Large'), 0, 0)
            if $size > $limit;

        my $start = $eol + 2;

        if ($size == 0) {
            # Last chunk: an optional trailer section, then an empty line.
            # Trailer fields are read past and dropped.
            my $end;
            if (substr($$ref, $start, 2) eq "\r\n") {
                $end = $start + 2;
            }
            else {
                my $blank = index($$ref, "\r\n\r\n", $start);
                if ($blank < 0) {
                    return (_chunk_error(400, 'Invalid chunked trailer'), 0, 0)
                        if $len - $start > MAX_CHUNK_LINE;
                    last;
                }
                $end = $blank + 4;
            }
            return ($data, $end, 1);
        }

        last if $len < $start + $size + 2;    # chunk not all here yet
        return (_chunk_error(400, 'Invalid chunk terminator'), 0, 0)
            unless substr($$ref, $start + $size, 2) eq "\r\n";

        $data .= substr($$ref, $start, $size);
        $pos = $start + $size + 2;
    }

    return ($data, $pos, 0);
}

sub _chunk_error {
    my ($status, $message) = @_;
    return { error => $status, message => $message };
}

# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------

# Header names and values go onto the wire verbatim, so anything that could
# end the line early (or be read as a terminator) is refused.
sub _check_name {
    my ($name) = @_;
    $name //= '';
    die "Invalid header name: contains CR, LF, or null byte\n"
        if $name =~ tr/\r\n\0//;
    die "Invalid header name: contains control characters\n"
        if $name =~ /[\x00-\x1f\x7f]/;
    return $name;
}

sub _check_value {
    my ($value) = @_;
    $value //= '';
    die "Invalid header value: contains CR, LF, or null byte\n"
        if $value =~ tr/\r\n\0//;
    return $value;
}

sub _header_lines {
    my ($headers, $server_seen) = @_;
    my $out = '';
    for my $pair (@{ $headers || [] }) {
        my $name  = _check_name($pair->[0]);
        my $value = _check_value($pair->[1]);
        $$server_seen = 1 if $server_seen && lc($name) eq 'server';
        $out .= "$name: $value\r\n";
    }
    return $out;
}

my $server_line;

sub serialize_response_start {
    my ($self, $status, $headers, $chunked, $http_version) = @_;
    $http_version //= '1.1';

    my $reason = $REASON{$status} // 'Unknown';
    my $has_server = 0;
    my $out = "HTTP/$http_version $status $reason\r\n"
        . _header_lines($headers, \$has_server);

    unless ($has_server) {
        $server_line //= "Server: PAGI::Server/"
            . ($PAGI::Server::VERSION // $VERSION) . "\r\n";
        $out .= $server_line;
    }
    $out .= "Transfer-Encoding: chunked\r\n"
        if $chunked && $http_version eq '1.1';

    return $out . "\r\n";
}

sub serialize_response_body {
    my ($self, $data, $more, $chunked) = @_;
    return '' unless defined $data && length $data;
    return $data unless $chunked;

    my $out = sprintf("%x\r\n", length $data) . $data . "\r\n";
    $out .= "0\r\n\r\n" unless $more;
    return $out;
}

sub serialize_chunk_end { "0\r\n\r\n" }

sub serialize_continue { "HTTP/1.1 100 Continue\r\n\r\n" }

sub serialize_trailers {
    my ($self, $headers) = @_;
    return _header_lines($headers) . "\r\n";
}

my @WDAY = qw(Sun Mon Tue Wed Thu Fri Sat);
my @MON  = qw(Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec);
my ($date_for, $date_text) = (-1, '');

sub format_date {
    my $now = time;
    if ($now != $date_for) {
        my ($s, $m, $h, $d, $mon, $y, $wd) = gmtime $now;
        $date_text = sprintf '%s, %02d %s %04d %02d:%02d:%02d GMT',
            $WDAY[$wd], $d, $MON[$mon], $y + 1900, $h, $m, $s;
        $date_for = $now;
    }
    return $date_text;
}

1;

__END__

=encoding utf8

=head1 NAME

PAGI::Server::Protocol::HTTP1 - HTTP/1.x wire format: request heads, chunked bodies, response framing

=head1 SYNOPSIS

    use PAGI::Server::Protocol::HTTP1;

    my $http = PAGI::Server::Protocol::HTTP1->new(max_header_count => 50);

    my ($req, $used) = $http->parse_request(\$buffer);
    if (!defined $req) {
        # need more bytes
    }
    elsif ($req->{error}) {
        # refuse: $req->{error} is the status, $req->{message} the reason
    }
    else {
        substr($buffer, 0, $used, '');
        # $req->{method}, $req->{path}, $req->{headers}, ...
    }

    my $wire = $http->serialize_response_start(200,
        [ [ 'Content-Type', 'text/plain' ] ], 1, $req->{http_version});
    $wire .= $http->serialize_response_body('hello', 1, 1);
    $wire .= $http->serialize_chunk_end;

=head1 DESCRIPTION

This class turns raw HTTP/1.0 and HTTP/1.1 bytes into request descriptions
and response descriptions back into bytes. It keeps no connection state: each
call looks only at its arguments, so one object can serve any number of
connections.

PAGI::Server itself does its HTTP/1.x work in its Rust core; this class is
the same request-head parser, reached through the XS module, together with
small pure-Perl response serializers. It is there for code and tests that
want to work with the wire format directly.

=head1 METHODS

=head2 new

    my $http = PAGI::Server::Protocol::HTTP1->new(%limits);

Returns a new object. All arguments are optional limits on what a client may
send:

=over 4

=item max_request_line_size

Longest request line accepted, in bytes (default 8192). A longer one is
reported as a 414 error.

=item max_header_size

Largest request head accepted, in bytes (default 8192). A larger one is
reported as a 431 error.

=item max_header_count

Most header fields accepted in one request (default 100). More are reported
as a 431 error.

=item max_chunk_size

Largest single chunk accepted by L</parse_chunked_body>, in bytes (default
10_485_760, i.e. 10 MiB). A larger one is reported as a 413 error.

=back

=head2 parse_request

    my ($req, $consumed) = $http->parse_request($buffer);
    my ($req, $consumed) = $http->parse_request(\$buffer);

Parses the request head at the start of the buffer, given either as a string
or as a reference to one (the buffer is not modified). There are three kinds
of answer:

=over 4

=item C<(undef, 0)>

The head is not complete yet; call again when more bytes have arrived.

=item C<({ error =E<gt> $status, message =E<gt> $text }, $consumed)>

The request cannot be served. C<$status> is the status code to answer with
and C<$text> a short explanation:

=over 4

=item * 400 - malformed request line or header, a C<Content-Length> that is
not a plain decimal number, C<Transfer-Encoding> combined with
C<Content-Length>, C<chunked> present but not the final transfer coding, or
an HTTP/1.1 request without C<Host>;

=item * 413 - a C<Content-Length> beyond 2_147_483_647;

=item * 414 - request line longer than C<max_request_line_size>;

=item * 431 - head larger than C<max_header_size> or with more than
C<max_header_count> fields;

=item * 501 - a transfer coding other than C<chunked> without C<chunked>
after it.

=back

=item C<(\%request, $consumed)>

The head was parsed; C<$consumed> is its length in bytes, so any body starts
at that offset. C<%request> holds:

    method          request method, e.g. 'GET'
    path            the path, percent-decoded, then UTF-8 decoded when the
                    result is valid UTF-8 (otherwise left as bytes)
    raw_path        the path exactly as sent, without the query
    query_string    what followed the first '?', or '' when there was none
    http_version    '1.0' or '1.1'
    headers         [ [ $lowercase_name, $value ], ... ]; several Cookie
                    fields become one 'cookie' field joined with '; '
    content_length  the Content-Length as a number, or undef if absent
    chunked         1 when the body uses chunked transfer coding, else 0
    expect_continue 1 when the client sent 'Expect: 100-continue', else 0

=back

=head2 parse_chunked_body

    my ($data, $consumed, $complete) = $http->parse_chunked_body($buffer);

Decodes a chunked request body from the start of the buffer (a string or a
reference to one, which is left as it is). C<$data> is the payload of every
chunk that has fully arrived, C<$consumed> the number of buffer bytes those
chunks took, and C<$complete> is 1 once the final zero-size chunk and the end
of the (ignored) trailer section have been read, else 0. When no whole chunk
is available yet the answer is C<('', 0, 0)>; drop C<$consumed> bytes from
the buffer and call again when more arrive.

Chunk extensions are ignored, and blanks around the size are tolerated. On
malformed input the answer is C<({ error =E<gt> $status, message =E<gt>
$text }, 0, 0)>: status 400 for a size that is not hexadecimal (or missing),
or for chunk data not followed by CRLF; status 413 for a chunk larger than
C<max_chunk_size>.

=head2 serialize_response_start

    my $bytes = $http->serialize_response_start($status, \@headers,
                                                 $chunked, $http_version);

Returns the status line and header block of a response, ending with the
empty line. C<$http_version> defaults to C<'1.1'>; the status line carries
the standard reason phrase for C<$status> (C<Unknown> for codes without
one). C<@headers> holds C<[ $name, $value ]> pairs, written in the order
given and with the names' case unchanged. A C<Server: PAGI::Server/VERSION>
field is added unless the headers already have a C<Server> field (in any
case). When C<$chunked> is true and the version is C<'1.1'>,
C<Transfer-Encoding: chunked> is added; HTTP/1.0 responses never get it.

Header names or values containing CR, LF or NUL make the method die with
C<"Invalid header name: contains CR, LF, or null byte\n"> or
C<"Invalid header value: contains CR, LF, or null byte\n">; a name with any
other control character dies with
C<"Invalid header name: contains control characters\n">. Tabs are allowed in
values.

=head2 serialize_response_body

    my $bytes = $http->serialize_response_body($data, $more, $chunked);

Returns the wire form of one piece of body. Without C<$chunked> that is
C<$data> itself. With it, C<$data> is framed as one chunk, and when C<$more>
is false the terminating zero-size chunk is appended as well. Empty or
undefined C<$data> gives the empty string (use L</serialize_chunk_end> to
finish a chunked body in that case).

=head2 serialize_chunk_end

    my $bytes = $http->serialize_chunk_end;

Returns C<"0\r\n\r\n">, the zero-size chunk that ends a chunked body without
trailers.

=head2 serialize_continue

    my $bytes = $http->serialize_continue;

Returns C<"HTTP/1.1 100 Continue\r\n\r\n">, the interim answer to a request
that carried C<Expect: 100-continue>.

=head2 serialize_trailers

    my $bytes = $http->serialize_trailers(\@headers);

Returns a trailer section: one line per C<[ $name, $value ]> pair followed
by the empty line that ends the chunked body. Send it after the last data
chunk's C<"0\r\n"> line. Names and values are checked as in
L</serialize_response_start> and the method dies the same way on bad ones.

=head2 format_date

    my $date = $http->format_date;

Returns the current time as an IMF-fixdate, the format of the C<Date>
header, e.g. C<Sun, 06 Nov 1994 08:49:37 GMT>. The string is computed at
most once per second and reused in between.

=head1 SEE ALSO

L<PAGI::Server>

=cut
