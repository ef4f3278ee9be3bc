use strict;
use warnings;
use Test2::V0;

use IO::Handle;
use PAGI::Server::EventValidator;

# Unit tests: the validator functions are called directly, no server runs.

my %fn = (
    http      => \&PAGI::Server::EventValidator::validate_http_send,
    websocket => \&PAGI::Server::EventValidator::validate_websocket_send,
    sse       => \&PAGI::Server::EventValidator::validate_sse_send,
);

# good($proto, $event, $name): the event must be accepted and a true value
# returned.
sub good {
    my ($proto, $event, $name) = @_;
    my $ctx = context();
    my $ret;
    my $err = dies { $ret = $fn{$proto}->($event) };
    my $ok = !defined $err && $ret;
    $ctx->ok($ok, "accepts: $name", defined $err ? ["died: $err"] : []);
    $ctx->release;
    return $ok;
}

# bad($proto, $event, $re, $name): the event must be rejected with a message
# matching $re.
sub bad {
    my ($proto, $event, $re, $name) = @_;
    my $ctx = context();
    my $err = dies { $fn{$proto}->($event) };
    my $ok = defined $err && $err =~ $re;
    $ctx->ok($ok, "rejects: $name",
        [defined $err ? "got: $err" : 'did not die', "expected: $re"]);
    $ctx->release;
    return $ok;
}

# A stringifying object, allowed wherever a string is.
package Local::Str {
    use overload '""' => sub { ${ $_[0] } }, fallback => 1;
    sub new { my ($c, $s) = @_; bless \$s, $c }
}

# A blessed object without string overloading.
package Local::Plain { sub new { bless {}, shift } }

package main;

subtest 'public API' => sub {
    can_ok('PAGI::Server::EventValidator',
        qw(validate_http_send validate_websocket_send validate_sse_send));
    ok(!main->can('validate_http_send'), 'nothing is exported');
};

subtest 'non-hash events and unknown types' => sub {
    for my $proto (sort keys %fn) {
        bad($proto, undef,        qr/event must be a hash reference/, "$proto: undef event");
        bad($proto, [],           qr/event must be a hash reference/, "$proto: array event");
        bad($proto, 'x',          qr/event must be a hash reference/, "$proto: string event");
        good($proto, {},                         "$proto: no type at all");
        good($proto, { type => "$proto.bogus" }, "$proto: unknown type is left to the server");
    }
    good('http', { type => 'http.fullflush' }, 'http.fullflush needs nothing');
    # Types of another protocol are not this function's business.
    good('http', { type => 'sse.send' },        'sse event given to http validator');
    good('sse',  { type => 'http.response.start' }, 'http event given to sse validator');
    good('websocket', { type => 'http.response.start' }, 'http event given to ws validator');
};

subtest 'message carries the caller location and the type' => sub {
    my $line = __LINE__ + 1;
    my $err = dies { PAGI::Server::EventValidator::validate_http_send({ type => 'http.response.start' }) };
    like($err, qr/\Ahttp\.response\.start requires 'status' field at \Q${\__FILE__}\E line $line\.?\n\z/,
        'croak reports the calling line, message starts with type');
};

# ---------------------------------------------------------------------------
# HTTP
# ---------------------------------------------------------------------------

subtest 'http.response.start' => sub {
    my $t = 'http.response.start';
    bad('http', { type => $t }, qr/^\Q$t\E requires 'status'/, 'missing status');
    bad('http', { type => $t, status => undef }, qr/'status' must be an integer/, 'undef status');
    bad('http', { type => $t, status => 'ok' },  qr/'status' must be an integer/, 'word status');
    bad('http', { type => $t, status => -200 },  qr/'status' must be an integer/, 'negative status');
    bad('http', { type => $t, status => '20.5' }, qr/'status' must be an integer/, 'fractional status');
    bad('http', { type => $t, status => "200\n" }, qr/'status' must be an integer/, 'status with newline');
    bad('http', { type => $t, status => [200] }, qr/'status' must be an integer/, 'status as ref');
    bad('http', { type => $t, status => 200, headers => 'bad' },
        qr/'headers' must be an array reference/, 'headers as string');
    bad('http', { type => $t, status => 200, headers => { a => 1 } },
        qr/'headers' must be an array reference/, 'headers as hash');
    bad('http', { type => $t, status => 200, headers => ['content-type', 'text/plain'] },
        qr/'headers' entry 0 must be an array reference/, 'flat header list');
    bad('http', { type => $t, status => 200, headers => [['a', 'b'], ['c']] },
        qr/'headers' entry 1 must be an array reference of \[name, value\]/, 'one-element pair');
    bad('http', { type => $t, status => 200, headers => [['a', 'b', 'c']] },
        qr/'headers' entry 0/, 'three-element pair');
    bad('http', { type => $t, status => 200, headers => [['x-a', undef]] },
        qr/'headers' entry 0 has an undefined name or value/, 'undef header value');
    bad('http', { type => $t, status => 200, headers => [[undef, 'v']] },
        qr/undefined name or value/, 'undef header name');

    good('http', { type => $t, status => 200 }, 'status only');
    good('http', { type => $t, status => '404' }, 'status as string of digits');
    good('http', { type => $t, status => 200, headers => [] }, 'empty headers');
    good('http', { type => $t, status => 200, headers => undef }, 'undef headers');
    good('http', { type => $t, status => 301,
                   headers => [['location', Local::Str->new('/x')], ['content-length', 0]] },
        'headers with object and numeric values');
    good('http', { type => $t, status => 200, trailers => 1 }, 'trailers flag');
};

subtest 'http.response.body' => sub {
    my $t = 'http.response.body';
    my $one = qr/exactly one of body\/file\/fh/;
    bad('http', { type => $t, body => 'x', file => '/tmp/x' }, $one, 'body and file');
    bad('http', { type => $t, body => 'x', fh => \*STDOUT }, $one, 'body and fh');
    bad('http', { type => $t, file => '/tmp/x', fh => \*STDOUT }, $one, 'file and fh');
    bad('http', { type => $t, body => 'x', file => '/x', fh => \*STDOUT },
        qr/got body, file, fh/, 'all three, listed in the message');
    bad('http', { type => $t, body => 'x', offset => 'bad' }, qr/'offset' must be an integer/, 'word offset');
    bad('http', { type => $t, file => '/x', offset => -1 }, qr/'offset' must be an integer/, 'negative offset');
    bad('http', { type => $t, body => 'x', length => 'bad' }, qr/'length' must be an integer/, 'word length');
    bad('http', { type => $t, file => '/x', length => 1.5 }, qr/'length' must be an integer/, 'fractional length');
    bad('http', { type => $t, body => ['x'] }, qr/'body' must be a string/, 'body as array');
    bad('http', { type => $t, body => Local::Plain->new }, qr/'body' must be a string/, 'body as plain object');
    bad('http', { type => $t, file => { path => '/x' } }, qr/'file' must be a string/, 'file as hash');
    bad('http', { type => $t, fh => '/tmp/x' }, qr/'fh' must be a filehandle/, 'fh as path string');
    bad('http', { type => $t, fh => {} }, qr/'fh' must be a filehandle/, 'fh as hash');

    good('http', { type => $t }, 'no body key at all');
    good('http', { type => $t, body => '' }, 'empty body');
    good('http', { type => $t, body => 'hello', more => 1 }, 'body with more');
    good('http', { type => $t, body => 'x', more => !!0 }, 'more as a Perl false');
    good('http', { type => $t, body => Local::Str->new('x') }, 'stringifying body');
    good('http', { type => $t, file => '/tmp/x' }, 'file');
    good('http', { type => $t, file => '/tmp/x', offset => 10, length => 20 }, 'file range');
    good('http', { type => $t, fh => \*STDOUT }, 'glob reference');
    good('http', { type => $t, fh => *STDOUT }, 'bare glob');
    open my $fh, '<', \my $buf or die;
    good('http', { type => $t, fh => $fh, offset => 0 }, 'lexical filehandle');
    good('http', { type => $t, fh => IO::Handle->new }, 'IO::Handle object');
    good('http', { type => $t, body => undef, file => '/x' }, 'undef body next to file');
    good('http', { type => $t, body => 'x', offset => undef, length => undef }, 'undef offset/length');
};

subtest 'http.response.trailers' => sub {
    my $t = 'http.response.trailers';
    bad('http', { type => $t, headers => 'bad' }, qr/^\Q$t\E 'headers' must be an array reference/, 'string headers');
    bad('http', { type => $t, headers => [['x-checksum']] }, qr/'headers' entry 0/, 'short pair');

    good('http', { type => $t }, 'no headers');
    good('http', { type => $t, headers => [] }, 'empty headers');
    good('http', { type => $t, headers => [['x-checksum', 'abc']] }, 'one trailer');
};

# ---------------------------------------------------------------------------
# WebSocket
# ---------------------------------------------------------------------------

subtest 'websocket.accept' => sub {
    my $t = 'websocket.accept';
    bad('websocket', { type => $t, headers => 'x' }, qr/^\Q$t\E 'headers' must be an array reference/, 'string headers');
    bad('websocket', { type => $t, headers => [[1]] }, qr/'headers' entry 0/, 'short pair');
    bad('websocket', { type => $t, subprotocol => ['chat'] }, qr/'subprotocol' must be a string/, 'array subprotocol');

    good('websocket', { type => $t }, 'bare accept');
    good('websocket', { type => $t, subprotocol => 'chat', headers => [['x-a', 'b']] }, 'with subprotocol and headers');
};

subtest 'websocket.send' => sub {
    my $t = 'websocket.send';
    my $one = qr/exactly one of bytes\/text/;
    bad('websocket', { type => $t }, $one, 'neither bytes nor text');
    bad('websocket', { type => $t }, qr/got neither/, 'message says neither');
    bad('websocket', { type => $t, bytes => 'x', text => 'y' }, $one, 'both');
    bad('websocket', { type => $t, bytes => 'x', text => 'y' }, qr/got bytes, text/, 'message lists both');
    bad('websocket', { type => $t, text => undef }, $one, 'only an undef text');
    bad('websocket', { type => $t, text => { a => 1 } }, qr/'text' must be a string/, 'hash text');
    bad('websocket', { type => $t, bytes => [1] }, qr/'bytes' must be a string/, 'array bytes');

    good('websocket', { type => $t, bytes => "\x00\xff" }, 'bytes');
    good('websocket', { type => $t, text => 'hello' }, 'text');
    good('websocket', { type => $t, text => '' }, 'empty text');
    good('websocket', { type => $t, text => 'hi', bytes => undef }, 'text with undef bytes');
};

subtest 'websocket.close' => sub {
    my $t = 'websocket.close';
    bad('websocket', { type => $t, code => 'bad' }, qr/^\Q$t\E 'code' must be an integer/, 'word code');
    bad('websocket', { type => $t, code => 1000.5 }, qr/'code' must be an integer/, 'fractional code');
    bad('websocket', { type => $t, code => 4000, reason => [] }, qr/'reason' must be a string/, 'array reason');

    good('websocket', { type => $t }, 'no code');
    good('websocket', { type => $t, code => 1000 }, 'integer code');
    good('websocket', { type => $t, code => '4001', reason => 'bye' }, 'code and reason');
};

subtest 'websocket.keepalive' => sub {
    my $t = 'websocket.keepalive';
    bad('websocket', { type => $t }, qr/^\Q$t\E requires 'interval'/, 'missing interval');
    bad('websocket', { type => $t, interval => undef }, qr/'interval' must be a number/, 'undef interval');
    bad('websocket', { type => $t, interval => 'bad' }, qr/'interval' must be a number/, 'word interval');
    bad('websocket', { type => $t, interval => -5 }, qr/'interval' must be a number/, 'negative interval');
    bad('websocket', { type => $t, interval => '1.2.3' }, qr/'interval' must be a number/, 'two dots');
    bad('websocket', { type => $t, interval => '.' }, qr/'interval' must be a number/, 'lone dot');
    bad('websocket', { type => $t, interval => 30, timeout => 'soon' }, qr/'timeout' must be a number/, 'word timeout');

    good('websocket', { type => $t, interval => 30 }, 'integer interval');
    good('websocket', { type => $t, interval => 30.5 }, 'fractional interval');
    good('websocket', { type => $t, interval => '.5' }, 'leading-dot interval');
    good('websocket', { type => $t, interval => 0 }, 'zero interval turns it off');
    good('websocket', { type => $t, interval => 30, timeout => 20 }, 'with timeout');
};

subtest 'websocket.http.response.start' => sub {
    my $t = 'websocket.http.response.start';
    bad('websocket', { type => $t }, qr/^\Q$t\E requires 'status'/, 'missing status');
    bad('websocket', { type => $t, status => 'nope' }, qr/'status' must be an integer/, 'word status');
    bad('websocket', { type => $t, status => undef }, qr/'status' must be an integer/, 'undef status');
    bad('websocket', { type => $t, status => 401, headers => 'x' },
        qr/'headers' must be an array reference/, 'string headers');

    good('websocket', { type => $t, status => 401 }, 'status only');
    good('websocket', { type => $t, status => 401, headers => [['www-authenticate', 'Bearer']] }, 'with headers');
};

subtest 'websocket.http.response.body' => sub {
    my $t = 'websocket.http.response.body';
    bad('websocket', { type => $t, more => 'yes' }, qr/^\Q$t\E 'more' must be an integer/, 'word more');
    bad('websocket', { type => $t, body => {} }, qr/'body' must be a string/, 'hash body');

    good('websocket', { type => $t }, 'empty');
    good('websocket', { type => $t, body => '{"error":1}', more => 0 }, 'body with more');
};

# ---------------------------------------------------------------------------
# SSE
# ---------------------------------------------------------------------------

subtest 'sse.start' => sub {
    my $t = 'sse.start';
    bad('sse', { type => $t, status => 'ok' }, qr/^\Q$t\E 'status' must be an integer/, 'word status');
    bad('sse', { type => $t, headers => 'x' }, qr/'headers' must be an array reference/, 'string headers');
    bad('sse', { type => $t, headers => [['content-type']] }, qr/'headers' entry 0/, 'short pair');

    good('sse', { type => $t }, 'no status (server default)');
    good('sse', { type => $t, status => 200, headers => [['content-type', 'text/event-stream']] }, 'full');
};

subtest 'sse.send' => sub {
    my $t = 'sse.send';
    bad('sse', { type => $t }, qr/^\Q$t\E requires 'data'/, 'missing data');
    bad('sse', { type => $t, data => undef }, qr/'data' must be a string/, 'undef data');
    bad('sse', { type => $t, data => [] }, qr/'data' must be a string/, 'array data');
    bad('sse', { type => $t, data => Local::Plain->new }, qr/'data' must be a string/, 'plain object data');
    bad('sse', { type => $t, data => 'x', event => "a\nb" }, qr/'event' must not contain CR or LF/, 'LF in event');
    bad('sse', { type => $t, data => 'x', id => "1\r" }, qr/'id' must not contain CR or LF/, 'CR in id');
    bad('sse', { type => $t, data => 'x', id => [1] }, qr/'id' must be a string/, 'array id');
    bad('sse', { type => $t, data => 'x', retry => -1 }, qr/'retry' must be an integer/, 'negative retry');
    bad('sse', { type => $t, data => 'x', retry => 'soon' }, qr/'retry' must be an integer/, 'word retry');

    good('sse', { type => $t, data => 'hello' }, 'data only');
    good('sse', { type => $t, data => '' }, 'empty data');
    good('sse', { type => $t, data => "line 1\nline 2" }, 'multi-line data');
    good('sse', { type => $t, data => Local::Str->new('obj') }, 'stringifying data');
    good('sse', { type => $t, data => 'x', event => 'tick', id => 42, retry => 3000 }, 'all fields');
};

subtest 'sse.comment' => sub {
    my $t = 'sse.comment';
    bad('sse', { type => $t }, qr/^\Q$t\E requires 'comment'/, 'missing comment');
    bad('sse', { type => $t, comment => {} }, qr/'comment' must be a string/, 'hash comment');
    bad('sse', { type => $t, comment => undef }, qr/'comment' must be a string/, 'undef comment');

    good('sse', { type => $t, comment => 'keepalive' }, 'comment');
    good('sse', { type => $t, comment => '' }, 'empty comment');
};

subtest 'sse.keepalive' => sub {
    my $t = 'sse.keepalive';
    bad('sse', { type => $t }, qr/^\Q$t\E requires 'interval'/, 'missing interval');
    bad('sse', { type => $t, interval => 'x' }, qr/'interval' must be a number/, 'word interval');
    bad('sse', { type => $t, interval => [] }, qr/'interval' must be a number/, 'array interval');
    bad('sse', { type => $t, interval => 15, comment => [] }, qr/'comment' must be a string/, 'array comment');

    good('sse', { type => $t, interval => 15 }, 'integer interval');
    good('sse', { type => $t, interval => 0.25, comment => 'ping' }, 'fraction with comment');
    good('sse', { type => $t, interval => 0 }, 'zero turns it off');
};

subtest 'sse.close' => sub {
    my $t = 'sse.close';
    bad('sse', { type => $t, reason => { why => 1 } }, qr/^\Q$t\E 'reason' must be a string/, 'hash reason');

    good('sse', { type => $t }, 'bare close');
    good('sse', { type => $t, reason => 'job_complete' }, 'with reason');
};

subtest 'sse.http.response.start' => sub {
    my $t = 'sse.http.response.start';
    bad('sse', { type => $t }, qr/^\Q$t\E requires 'status'/, 'missing status');
    bad('sse', { type => $t, status => '2xx' }, qr/'status' must be an integer/, 'bad status');
    bad('sse', { type => $t, status => 204, headers => {} }, qr/'headers' must be an array reference/, 'hash headers');

    good('sse', { type => $t, status => 204 }, 'status only');
    good('sse', { type => $t, status => 401, headers => [['content-type', 'text/plain']] }, 'with headers');
};

subtest 'sse.http.response.body' => sub {
    my $t = 'sse.http.response.body';
    bad('sse', { type => $t, more => 'x' }, qr/^\Q$t\E 'more' must be an integer/, 'word more');
    bad('sse', { type => $t, body => [] }, qr/'body' must be a string/, 'array body');

    good('sse', { type => $t }, 'empty');
    good('sse', { type => $t, body => 'Unauthorized', more => 0 }, 'body');
};

subtest 'validators do not modify the event' => sub {
    my $ev = { type => 'http.response.start', status => 200, headers => [['a', 'b']] };
    my $copy = { %$ev, headers => [['a', 'b']] };
    PAGI::Server::EventValidator::validate_http_send($ev);
    is($ev, $copy, 'event unchanged after validation');
    ok(!exists $ev->{body}, 'no keys autovivified');
};

done_testing;
