use strict;
use warnings;

# PAGI::Server::Protocol::HTTP1 on its own: request heads through the Rust
# parser (XS parse_head), chunked request bodies, and the response
# serializers, including the refusals of every kind of bad input.

# A clock the test can stop, and a count of gmtime calls, for format_date.
# Installed before the module is compiled so its calls see them; with
# $FAKE_TIME unset the clock is the real one.
our ($FAKE_TIME, $GMTIME_CALLS);
BEGIN {
    *CORE::GLOBAL::time   = sub () { defined $FAKE_TIME ? $FAKE_TIME : CORE::time() };
    *CORE::GLOBAL::gmtime = sub (;$) { $GMTIME_CALLS++; @_ ? CORE::gmtime($_[0]) : CORE::gmtime() };
}

use Test2::V0;

use PAGI::Server::Protocol::HTTP1;

my $CLASS = 'PAGI::Server::Protocol::HTTP1';
my $http  = $CLASS->new;

# Header value for $name in a parsed request (first match), or undef.
sub hdr {
    my ($req, $name) = @_;
    my @v = map { $_->[1] } grep { $_->[0] eq $name } @{ $req->{headers} };
    return wantarray ? @v : $v[0];
}

# Parses $raw with $p (default object) and returns ($req, $consumed).
sub parse {
    my ($raw, $p) = @_;
    return ($p || $http)->parse_request(\$raw);
}

# Checks that $raw is refused with $status (and $message when given).
sub refused {
    my ($raw, $status, $message, $name, $p) = @_;
    my ($req, $used) = parse($raw, $p);
    my $ctx = context();
    my $ok = ref($req) eq 'HASH' && ($req->{error} // 0) == $status
        && (!defined $message || ($req->{message} // '') eq $message)
        && defined $used && $used =~ /\A\d+\z/;
    $ctx->ok($ok, $name, [ $ok ? () : ('got: ' . (ref $req eq 'HASH'
        ? join(', ', map { "$_=" . ($req->{$_} // 'undef') } sort keys %$req)
        : defined $req ? $req : 'undef') . ' consumed=' . ($used // 'undef')) ]);
    $ctx->release;
    return $req;
}

subtest 'module basics' => sub {
    is($PAGI::Server::Protocol::HTTP1::VERSION, '0.003000', 'VERSION');
    isa_ok($http, $CLASS);
    can_ok($CLASS, qw(new parse_request parse_chunked_body serialize_response_start
                      serialize_response_body serialize_chunk_end serialize_continue
                      serialize_trailers format_date));
    ok(defined &PAGI::Server::Native::parse_head, 'the XS parser is loaded');
    like($http, hash {
        field max_header_size       => 8192;
        field max_request_line_size => 8192;
        field max_header_count      => 100;
        field max_chunk_size        => 10_485_760;
        end;
    }, 'defaults');
    like($CLASS->new(max_header_size => 1, max_request_line_size => 2,
                     max_header_count => 3, max_chunk_size => 4),
         { max_header_size => 1, max_request_line_size => 2,
           max_header_count => 3, max_chunk_size => 4 }, 'limits from arguments');
};

# ---------------------------------------------------------------------------
# parse_request: good requests
# ---------------------------------------------------------------------------

subtest 'parse_request: a plain GET' => sub {
    my $raw = "GET /test/path?query=value&x=1 HTTP/1.1\r\nHost: localhost\r\n"
            . "User-Agent: t/33\r\nX-Mixed-Case: Some Value\r\n\r\n";
    my ($req, $used) = parse($raw);
    is($req, {
        method          => 'GET',
        path            => '/test/path',
        raw_path        => '/test/path',
        query_string    => 'query=value&x=1',
        http_version    => '1.1',
        headers         => bag {
            item ['host', 'localhost'];
            item ['user-agent', 't/33'];
            item ['x-mixed-case', 'Some Value'];
            end;
        },
        content_length  => undef,
        chunked         => 0,
        expect_continue => 0,
    }, 'request description');
    is($used, length $raw, 'consumed the whole head');

    my ($by_value, $used2) = $http->parse_request($raw);
    is($by_value, $req, 'same answer for a plain string as for a reference');
    is($used2, $used, 'same length consumed');
};

subtest 'parse_request: body bytes after the head are left alone' => sub {
    my $head = "POST /upload HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\n";
    my $raw = $head . "helloGET / HTTP/1.1\r\n";
    my ($req, $used) = parse($raw);
    is($used, length $head, 'consumed the head only');
    is($req->{content_length}, 5, 'content_length is a number');
    is(hdr($req, 'content-length'), '5', 'Content-Length also listed as a header');
    is($req->{method}, 'POST', 'method');
    is($raw, $head . "helloGET / HTTP/1.1\r\n", 'buffer unchanged');
};

subtest 'parse_request: incomplete heads' => sub {
    for my $raw ('', 'G', "GET / HTTP/1.1\r\n", "GET / HTTP/1.1\r\nHost: a\r\n",
                 "GET / HTTP/1.1\r\nHost: a\r\n\r") {
        my ($req, $used) = parse($raw);
        is([$req, $used], [undef, 0], 'incomplete: ' . ($raw =~ s/\r/\\r/gr =~ s/\n/\\n/gr));
    }
    my ($req, $used) = $http->parse_request(undef);
    is([$req, $used], [undef, 0], 'undef buffer is incomplete');
};

subtest 'parse_request: versions and Host' => sub {
    my ($req) = parse("GET / HTTP/1.0\r\n\r\n");
    is($req->{http_version}, '1.0', 'HTTP/1.0');
    ok(!$req->{error}, 'HTTP/1.0 needs no Host');

    ($req) = parse("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    is($req->{http_version}, '1.1', 'HTTP/1.1');

    refused("GET / HTTP/1.1\r\nAccept: */*\r\n\r\n", 400, 'Bad Request',
        'HTTP/1.1 without Host is refused');
};

subtest 'parse_request: Cookie fields become one' => sub {
    my ($req) = parse("GET / HTTP/1.1\r\nHost: x\r\nCookie: a=1\r\n"
                    . "X-Other: y\r\ncookie: b=2; c=3\r\nCOOKIE: d=4\r\n\r\n");
    my @cookies = hdr($req, 'cookie');
    is(\@cookies, ['a=1; b=2; c=3; d=4'], 'one cookie header, joined with "; " in order');
    is(hdr($req, 'x-other'), 'y', 'other headers kept');

    ($req) = parse("GET / HTTP/1.1\r\nHost: x\r\nCookie: only=1\r\n\r\n");
    is([hdr($req, 'cookie')], ['only=1'], 'a single cookie header is unchanged');
};

subtest 'parse_request: repeated non-cookie headers stay separate' => sub {
    my ($req) = parse("GET / HTTP/1.1\r\nHost: x\r\nAccept: a\r\nAccept: b\r\n\r\n");
    is([hdr($req, 'accept')], ['a', 'b'], 'both Accept fields');
};

subtest 'parse_request: path decoding' => sub {
    my ($req) = parse("GET /a%20b/c+d?q=%20 HTTP/1.1\r\nHost: x\r\n\r\n");
    is($req->{path}, '/a b/c+d', 'percent-escapes decoded, + left alone');
    is($req->{raw_path}, '/a%20b/c+d', 'raw_path as sent');
    is($req->{query_string}, 'q=%20', 'query string not decoded');

    ($req) = parse("GET /caf%C3%A9/%E2%9C%93 HTTP/1.1\r\nHost: x\r\n\r\n");
    is($req->{path}, "/caf\x{e9}/\x{2713}", 'valid UTF-8 becomes characters');
    ok(utf8::is_utf8($req->{path}), 'decoded path is a character string');
    is($req->{raw_path}, '/caf%C3%A9/%E2%9C%93', 'raw_path keeps the escapes');

    ($req) = parse("GET /bad%FF%FEx HTTP/1.1\r\nHost: x\r\n\r\n");
    is($req->{path}, "/bad\xff\xfex", 'invalid UTF-8 stays as bytes');
    ok(!utf8::is_utf8($req->{path}), 'byte path is not flagged as characters');

    ($req) = parse("GET /plain HTTP/1.1\r\nHost: x\r\n\r\n");
    is($req->{query_string}, '', 'no query: empty string');

    ($req) = parse("GET /p?a=1?b=2 HTTP/1.1\r\nHost: x\r\n\r\n");
    is([@$req{qw(path query_string)}], ['/p', 'a=1?b=2'], 'split at the first "?"');

    ($req) = parse("GET /p? HTTP/1.1\r\nHost: x\r\n\r\n");
    is([@$req{qw(path query_string)}], ['/p', ''], 'empty query');
};

subtest 'parse_request: Expect: 100-continue' => sub {
    my ($req) = parse("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n"
                    . "Expect: 100-continue\r\n\r\n");
    is($req->{expect_continue}, 1, 'flag set');
    ($req) = parse("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n"
                 . "Expect: 100-Continue\r\n\r\n");
    is($req->{expect_continue}, 1, 'case-insensitive');
    ($req) = parse("POST / HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\n\r\n");
    is($req->{expect_continue}, 0, 'absent: 0');
};

subtest 'parse_request: Content-Length values' => sub {
    my ($req) = parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
    is($req->{content_length}, 0, 'zero');
    ($req) = parse("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2147483647\r\n\r\n");
    is($req->{content_length}, 2147483647, 'largest accepted value');

    my $cl = sub { "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: $_[0]\r\n\r\n" };
    refused($cl->('-1'),   400, 'Bad Request', 'negative');
    refused($cl->('abc'),  400, 'Bad Request', 'not a number');
    refused($cl->('5 '),   400, 'Bad Request', 'trailing blank');
    refused($cl->('+5'),   400, 'Bad Request', 'sign');
    refused($cl->('1,1'),  400, 'Bad Request', 'list');
    refused($cl->('0x10'), 400, 'Bad Request', 'hex');
    refused($cl->('2147483648'),           413, 'Payload Too Large', 'just over 2^31-1');
    refused($cl->('99999999999999999999'), 413, 'Payload Too Large', 'far too large');
};

subtest 'parse_request: Transfer-Encoding' => sub {
    my $te = sub { "POST /test HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: $_[0]\r\n\r\n" };

    my ($req) = parse($te->('chunked'));
    ok($req && !$req->{error}, 'chunked accepted');
    is($req->{chunked}, 1, 'chunked flag');
    is($req->{content_length}, undef, 'no content_length');

    ($req) = parse($te->('gzip, chunked'));
    ok($req && !$req->{error}, '"gzip, chunked" accepted');
    is($req->{chunked}, 1, 'chunked flag');

    ($req) = parse($te->('Chunked'));
    is($req->{chunked}, 1, 'coding names are case-insensitive');

    refused($te->('chunked, gzip'), 400, 'chunked must be the final Transfer-Encoding',
        'chunked not final');
    refused($te->('gzip'), 501, 'Unsupported Transfer-Encoding', 'gzip alone');
    refused($te->('identity'), 501, 'Unsupported Transfer-Encoding', 'identity');

    my $both = "POST /test HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n"
             . "Content-Length: 10\r\n\r\n";
    refused($both, 400, 'Transfer-Encoding and Content-Length are mutually exclusive',
        'Transfer-Encoding with Content-Length');

    ($req) = parse("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    is($req->{chunked}, 0, 'no Transfer-Encoding: chunked is 0');
};

subtest 'parse_request: malformed heads' => sub {
    refused("INVALID REQUEST LINE\r\n\r\n", 400, 'Bad Request', 'garbage request line');
    refused("GET / HTTP/1.1\r\nNo colon here\r\n\r\n", 400, 'Bad Request', 'header without colon');
    refused("GET / HTTP/1.1\r\nBad Name: x\r\nHost: x\r\n\r\n", 400, 'Bad Request',
        'space in a header name');
    refused("GET / FOO/1.1\r\nHost: x\r\n\r\n", 400, 'Bad Request', 'not HTTP');
};

subtest 'parse_request: size limits' => sub {
    my $small = $CLASS->new(max_request_line_size => 100);
    my ($req) = parse("GET /short HTTP/1.1\r\nHost: localhost\r\n\r\n", $small);
    ok($req && !$req->{error}, 'short request line accepted');
    is($req->{method}, 'GET', 'method');

    my $long = "GET /very" . ('x' x 200) . "/long/uri HTTP/1.1\r\nHost: localhost\r\n\r\n";
    refused($long, 414, 'URI Too Long', 'request line over max_request_line_size', $small);

    my $over_default = "GET /" . ('x' x 9000) . " HTTP/1.1\r\nHost: localhost\r\n\r\n";
    refused($over_default, 414, 'URI Too Long', 'request line over the 8192 default');

    my $hs = $CLASS->new(max_header_size => 100);
    my $big = "GET / HTTP/1.1\r\nHost: localhost\r\nX-Large-Header: " . ('x' x 200) . "\r\n\r\n";
    refused($big, 431, 'Request Header Fields Too Large', 'head over max_header_size', $hs);
    ($req) = parse("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n", $hs);
    ok($req && !$req->{error}, 'a head under max_header_size is fine');

    my $huge = "GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: " . ('y' x 9000) . "\r\n\r\n";
    refused($huge, 431, 'Request Header Fields Too Large', 'head over the 8192 default');
};

subtest 'parse_request: header count limit' => sub {
    my $p = $CLASS->new(max_header_count => 3);
    my $head = sub { "GET / HTTP/1.1\r\nHost: x\r\n" . join('', map { "X-$_: $_\r\n" } 1 .. $_[0]) . "\r\n" };

    my ($req) = parse($head->(2), $p);
    ok($req && !$req->{error}, 'at the limit (3 fields) is fine');
    refused($head->(3), 431, 'Request Header Fields Too Large', 'one field too many', $p);

    my $many = "GET / HTTP/1.1\r\nHost: x\r\n" . join('', map { "X-$_: v\r\n" } 1 .. 100) . "\r\n";
    refused($many, 431, 'Request Header Fields Too Large', 'over the default of 100');
};

# ---------------------------------------------------------------------------
# parse_chunked_body
# ---------------------------------------------------------------------------

sub chunked { $http->parse_chunked_body(@_) }

subtest 'parse_chunked_body: complete bodies' => sub {
    is([chunked("5\r\nhello\r\n0\r\n\r\n")], ['hello', 15, 1], 'one chunk');
    is([chunked("5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")], ['hello world', 26, 1], 'two chunks');
    is([chunked("A\r\n0123456789\r\n0\r\n\r\n")], ['0123456789', 20, 1], 'upper-case hex');
    is([chunked("a\r\nabcdefghij\r\n0\r\n\r\n")], ['abcdefghij', 20, 1], 'lower-case hex');
    is([chunked("5;ext=foo;x\r\nhello\r\n0;last\r\n\r\n")], ['hello', 30, 1], 'extensions ignored');
    is([chunked("0005\r\nhello\r\n000\r\n\r\n")], ['hello', 20, 1], 'leading zeros');
    is([chunked("0\r\n\r\n")], ['', 5, 1], 'empty body');

    my $raw = "5\r\nhello\r\n0\r\n\r\n";
    is([$http->parse_chunked_body(\$raw)], ['hello', 15, 1], 'buffer by reference');

    is([chunked("3\r\na\r\n\r\n0\r\n\r\n")], ["a\r\n", 13, 1], 'CRLF inside chunk data is data');

    my $bin = join '', map { chr } 0 .. 255;
    is([chunked("100\r\n$bin\r\n0\r\n\r\n")], [$bin, 268, 1], 'binary data, 0x100 bytes');
};

subtest 'parse_chunked_body: trailers and what follows' => sub {
    my $body = "5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-More: 1\r\n\r\n";
    is([chunked($body)], ['hello', length $body, 1], 'trailer section read past');
    is([chunked("5\r\nhello\r\n0\r\nX-Checksum: abc\r\n")], ['hello', 10, 0],
        'trailer section not finished: wait');
    is([chunked("0\r\n\r\nGET / HTTP/1.1\r\n")], ['', 5, 1], 'next request not consumed');
};

subtest 'parse_chunked_body: incomplete input' => sub {
    is([chunked('')], ['', 0, 0], 'nothing yet');
    is([chunked('5')], ['', 0, 0], 'size line not finished');
    is([chunked("5\r\nhel")], ['', 0, 0], 'data not all here');
    is([chunked("5\r\nhello")], ['', 0, 0], 'data without its CRLF');
    is([chunked("5\r\nhello\r")], ['', 0, 0], 'half the CRLF');
    is([chunked("5\r\nhello\r\n")], ['hello', 10, 0], 'one chunk done, more to come');
    is([chunked("5\r\nhello\r\n3\r\nab")], ['hello', 10, 0], 'second chunk partial');
    is([chunked("5\r\nhello\r\n0\r\n")], ['hello', 10, 0], 'last chunk without the final CRLF');
    is([chunked("5\r\nhello\r\n0\r\n\r")], ['hello', 10, 0], 'last chunk, half the final CRLF');
    is([$http->parse_chunked_body(undef)], ['', 0, 0], 'undef buffer');
};

subtest 'parse_chunked_body: bad chunk sizes' => sub {
    for my $case (["garbage\r\n\r\n", 'garbage'], ["\r\n\r\n", 'empty size'],
                  ["-5\r\nhello\r\n0\r\n\r\n", 'negative'],
                  ["xyz5\r\nhello\r\n0\r\n\r\n", 'leading garbage'],
                  ["0x5\r\nhello\r\n0\r\n\r\n", '0x prefix'],
                  ["5 5\r\nhello\r\n0\r\n\r\n", 'two numbers'],
                  ["5\r\nhello\r\nzz\r\n\r\n", 'bad size after a good chunk'],
                  [';ext' . "\r\nhello\r\n0\r\n\r\n", 'extension without size']) {
        is([chunked($case->[0])], [{ error => 400, message => 'Invalid chunk size' }, 0, 0],
            "$case->[1] refused");
    }
    is([chunked("5\r\nhelloXX0\r\n\r\n")],
        [{ error => 400, message => 'Invalid chunk terminator' }, 0, 0],
        'chunk data not followed by CRLF');
    is([chunked('f' x 9000)], [{ error => 400, message => 'Invalid chunk size' }, 0, 0],
        'endless size line');
};

subtest 'parse_chunked_body: blanks around the size are tolerated' => sub {
    is([chunked(" 5\r\nhello\r\n0\r\n\r\n")], ['hello', 16, 1], 'leading space');
    is([chunked("5 \r\nhello\r\n0\r\n\r\n")], ['hello', 16, 1], 'trailing space');
    is([chunked("5\t;ext\r\nhello\r\n0\r\n\r\n")], ['hello', 20, 1], 'tab before an extension');
};

subtest 'parse_chunked_body: chunk size limit' => sub {
    my $too_big = { error => 413, message => 'Chunk Too Large' };
    is([chunked("FFFFFFFFFFFFFFFF\r\ndata\r\n0\r\n\r\n")], [$too_big, 0, 0], '16 hex digits');
    is([chunked(('F' x 40) . "\r\ndata\r\n0\r\n\r\n")], [$too_big, 0, 0], '40 hex digits');
    is([chunked("A00001\r\ndata\r\n0\r\n\r\n")], [$too_big, 0, 0], 'one byte over 10 MiB');
    is([chunked("A00000\r\ndata\r\n0\r\n\r\n")], ['', 0, 0], 'exactly 10 MiB: waits for the data');
    is([chunked("0000000000000000005\r\nhello\r\n0\r\n\r\n")], ['hello', 33, 1],
        'many leading zeros are not a large size');

    my $p = $CLASS->new(max_chunk_size => 100);
    is([$p->parse_chunked_body("65\r\n" . ('x' x 101) . "\r\n0\r\n\r\n")], [$too_big, 0, 0],
        'custom limit: 101 bytes refused');
    is([$p->parse_chunked_body("64\r\n" . ('x' x 100) . "\r\n0\r\n\r\n")],
        ['x' x 100, 111, 1], 'custom limit: 100 bytes accepted');
};

# ---------------------------------------------------------------------------
# Responses
# ---------------------------------------------------------------------------

my $SERVER = "Server: PAGI::Server/$PAGI::Server::VERSION\r\n";

subtest 'serialize_response_start' => sub {
    is($http->serialize_response_start(200, [['content-type', 'text/plain'], ['X-Custom', 'value']], 0),
       "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\nX-Custom: value\r\n$SERVER\r\n",
       'status line, headers in order with their case, Server, blank line');
    is($http->serialize_response_start(404, []),
       "HTTP/1.1 404 Not Found\r\n$SERVER\r\n", 'defaults: not chunked, HTTP/1.1');
    is($http->serialize_response_start(200, [], 1),
       "HTTP/1.1 200 OK\r\n${SERVER}Transfer-Encoding: chunked\r\n\r\n", 'chunked');
    is($http->serialize_response_start(200, [['content-type', 'text/plain']], 0, '1.0'),
       "HTTP/1.0 200 OK\r\ncontent-type: text/plain\r\n$SERVER\r\n", 'HTTP/1.0');
    is($http->serialize_response_start(200, [], 1, '1.0'),
       "HTTP/1.0 200 OK\r\n$SERVER\r\n", 'HTTP/1.0 is never chunked');
    is($http->serialize_response_start(200, undef),
       "HTTP/1.1 200 OK\r\n$SERVER\r\n", 'undef header list');

    my $with = $http->serialize_response_start(200, [['content-type', 'text/plain'],
                                                     ['Server', 'MyCustomServer/1.0']]);
    like($with, qr/\r\nServer: MyCustomServer\/1\.0\r\n/, 'app Server header kept');
    unlike($with, qr/PAGI::Server/, 'no default Server header then');
    unlike($http->serialize_response_start(200, [['SERVER', 'x']]), qr/PAGI::Server/,
        'Server header spotted in any case');

    my %phrase = (100 => 'Continue', 101 => 'Switching Protocols', 201 => 'Created',
                  204 => 'No Content', 206 => 'Partial Content', 301 => 'Moved Permanently',
                  302 => 'Found', 304 => 'Not Modified', 400 => 'Bad Request',
                  401 => 'Unauthorized', 403 => 'Forbidden', 405 => 'Method Not Allowed',
                  413 => 'Payload Too Large', 414 => 'URI Too Long',
                  429 => 'Too Many Requests', 431 => 'Request Header Fields Too Large',
                  500 => 'Internal Server Error', 501 => 'Not Implemented',
                  502 => 'Bad Gateway', 503 => 'Service Unavailable');
    for my $code (sort keys %phrase) {
        like($http->serialize_response_start($code, []), qr{\AHTTP/1\.1 $code \Q$phrase{$code}\E\r\n},
            "$code $phrase{$code}");
    }
    like($http->serialize_response_start(599, []), qr{\AHTTP/1\.1 599 Unknown\r\n},
        'unlisted code: generic phrase');

    my @headers = (['a', 'b']);
    $http->serialize_response_start(200, \@headers, 1);
    is(\@headers, [['a', 'b']], 'header list not modified');
};

subtest 'serialize_response_start: injection attempts die' => sub {
    my $bad_value = "Invalid header value: contains CR, LF, or null byte\n";
    my $bad_name  = "Invalid header name: contains CR, LF, or null byte\n";
    my $ctl_name  = "Invalid header name: contains control characters\n";
    my $start = sub { $http->serialize_response_start(200, [@_]) };

    for my $v ("innocent\r\nSet-Cookie: evil=hacked", "foo\rbar", "foo\nbar", "foo\n\rbar",
               "a\r\nb\r\nc", "foo\0bar") {
        is(dies { $start->(['X-Test', $v]) }, $bad_value, 'value ' . ($v =~ s/([\0-\x1f])/sprintf '\\x%02x', ord $1/ger));
    }
    for my $n ("X-Custom\r\nEvil-Header", "X\rY", "X\nY", "X\0Y") {
        is(dies { $start->([$n, 'v']) }, $bad_name, 'name ' . ($n =~ s/([\0-\x1f])/sprintf '\\x%02x', ord $1/ger));
    }
    for my $n ("X\tY", "X\x01Y", "X\x1bY", "X\x7fY") {
        is(dies { $start->([$n, 'v']) }, $ctl_name, sprintf('name with control character 0x%02x', ord substr($n, 1, 1)));
    }
    is(dies { $start->(['ok', 'fine'], ['X-Test', "a\nb"]) }, $bad_value,
        'a bad header after good ones still dies');

    like($start->(['X-Test', "foo\tbar"]), qr/X-Test: foo\tbar\r\n/, 'tab allowed in a value');
    like($start->(['X-Test', "caf\xe9 \x01"]), qr/X-Test: caf\xe9 \x01\r\n/,
        'other bytes in a value are passed through');
};

subtest 'serialize_response_body' => sub {
    is($http->serialize_response_body('Hello', 0, 0), 'Hello', 'not chunked: data as is');
    is($http->serialize_response_body('Hello', 1), 'Hello', 'not chunked by default');
    is($http->serialize_response_body('Hello', 1, 1), "5\r\nHello\r\n", 'chunk, more to come');
    is($http->serialize_response_body('Hello', 0, 1), "5\r\nHello\r\n0\r\n\r\n", 'last chunk ends the body');
    is($http->serialize_response_body('x' x 255, 1, 1), "ff\r\n" . ('x' x 255) . "\r\n",
        'size in lower-case hex');
    is($http->serialize_response_body('0', 1, 1), "1\r\n0\r\n", '"0" is data');
    for my $empty ('', undef) {
        for my $args ([0, 0], [0, 1], [1, 1]) {
            is($http->serialize_response_body($empty, @$args), '',
                sprintf('%s data (more=%d chunked=%d) gives nothing', defined $empty ? 'empty' : 'undef', @$args));
        }
    }

    my $wire = $http->serialize_response_body('abc', 1, 1) . $http->serialize_response_body('de', 0, 1);
    is([chunked($wire)], ['abcde', length $wire, 1], 'round trip through parse_chunked_body');
};

subtest 'serialize_chunk_end and serialize_continue' => sub {
    is($http->serialize_chunk_end, "0\r\n\r\n", 'chunk end');
    is($http->serialize_continue, "HTTP/1.1 100 Continue\r\n\r\n", '100 Continue');
};

subtest 'serialize_trailers' => sub {
    is($http->serialize_trailers([['X-Checksum', 'abc'], ['x-other', "a\tb"]]),
       "X-Checksum: abc\r\nx-other: a\tb\r\n\r\n", 'trailer lines and the final blank line');
    is($http->serialize_trailers([]), "\r\n", 'no trailers: just the blank line');

    like(dies { $http->serialize_trailers([['X-Checksum', "checksum\r\nSet-Cookie: evil=trailer"]]) },
        qr/\AInvalid header value: contains CR, LF, or null byte\n\z/, 'CRLF in a value');
    like(dies { $http->serialize_trailers([["bad\r\nname", 'value']]) },
        qr/\AInvalid header name: contains CR, LF, or null byte\n\z/, 'CRLF in a name');
    like(dies { $http->serialize_trailers([['good-name', "has\0null"]]) },
        qr/\AInvalid header value/, 'NUL in a value');
    like(dies { $http->serialize_trailers([["a\x02b", 'v']]) },
        qr/\AInvalid header name: contains control characters\n\z/, 'control character in a name');

    my $wire = "3\r\nabc\r\n0\r\n" . $http->serialize_trailers([['X-Sum', '1']]);
    is([chunked($wire)], ['abc', length $wire, 1], 'parse_chunked_body reads past them');
};

subtest 'format_date' => sub {
    local $FAKE_TIME = 784111777;
    is($http->format_date, 'Sun, 06 Nov 1994 08:49:37 GMT', 'IMF-fixdate');
    is($CLASS->format_date, 'Sun, 06 Nov 1994 08:49:37 GMT', 'callable on the class too');
    $FAKE_TIME = 951782400;
    is($http->format_date, 'Tue, 29 Feb 2000 00:00:00 GMT', 'a new second, a new date');
    $FAKE_TIME = 0;
    is($http->format_date, 'Thu, 01 Jan 1970 00:00:00 GMT', 'the epoch');

    $FAKE_TIME = 1700000000;
    $GMTIME_CALLS = 0;
    my @same = map { $http->format_date } 1 .. 3;
    is(\@same, [('Tue, 14 Nov 2023 22:13:20 GMT') x 3], 'same second, same string');
    is($GMTIME_CALLS, 1, 'computed once for the second');
    $FAKE_TIME++;
    is($http->format_date, 'Tue, 14 Nov 2023 22:13:21 GMT', 'next second');
    is($GMTIME_CALLS, 2, 'computed again');

    undef $FAKE_TIME;
    my $before = CORE::time();
    my $date = $http->format_date;
    my $after = CORE::time();
    like($date, qr/\A(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun), \d\d (?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) \d{4} \d\d:\d\d:\d\d GMT\z/,
        'real clock: format');
    my @t = gmtime $before;
    my @u = gmtime $after;
    ok($date eq _imf(@t) || $date eq _imf(@u), 'real clock: current time');
};

sub _imf {
    my @g = @_;
    my @d = qw(Sun Mon Tue Wed Thu Fri Sat);
    my @m = qw(Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec);
    return sprintf '%s, %02d %s %04d %02d:%02d:%02d GMT', $d[$g[6]], $g[3], $m[$g[4]], $g[5] + 1900, @g[2, 1, 0];
}

done_testing;
