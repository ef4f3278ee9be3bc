use strict;
use warnings;

# HTTP/2 seen from real clients: h2 by ALPN over TLS and h2c by prior
# knowledge (curl, nghttp, h2load, IO::Socket::SSL, a raw socket), the
# same port serving HTTP/1.1 next to h2c, and nothing of HTTP/2 without
# the http2 option; the scope of each stream (version, method, path, query,
# scheme, host from :authority, joined cookies, lower-case names),
# pagi.connection and the access log per stream; responses (date and server
# headers, trailers, the 500 backstop, connection-specific fields dropped,
# HEAD, 204, a streamed body); the h2_* settings in the server's SETTINGS
# frame and their effect, and bad values refused at construction. Servers
# run in forked children (TLSTest::serve); every wait is bounded.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Spec;
use File::Temp qw(tempdir);
use Future::AsyncAwait;
use JSON::PP ();
use Time::HiRes qw(time);
use TestCerts;
use H2Test qw(frame nghttp h2c_preface);

BEGIN {
    my $why = TestCerts::skip_reason();
    skip_all($why) if $why;
    my @missing = H2Test::tools_missing(qw(curl nghttp h2load));
    skip_all("not installed: @missing") if @missing;
}
use IO::Socket::SSL;
use TLSTest qw(serve_ok stopped_ok tls_connect run_cmd raw_exchange);
use ProcTest qw(slurp);

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "50-h2-basics.t: overall time limit reached\n" };
alarm 90;

my $dir   = tempdir(CLEANUP => 1);
my $certs = TestCerts::make($dir, qw(ecdsa));
my %ssl   = (cert_file => $certs->{ecdsa_cert}, key_file => $certs->{ecdsa_key});
my $JSON  = JSON::PP->new->canonical->ascii;

# A file body the server reads itself.
my $FILE = File::Spec->catfile($dir, 'file.bin');
{
    open my $fh, '>', $FILE or die "write $FILE: $!";
    print {$fh} join '', map { sprintf '%07d;', $_ } 0 .. 25_599;
    close $fh or die;
}

# What the app saw, per stream, kept in the server child and read back
# through /report.
my (%complete, %disconnect, %conns);

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    my $path = $scope->{path};
    my $conn = $scope->{'pagi.connection'};
    my ($id) = ($scope->{query_string} // '') =~ /id=(\w+)/;
    if (defined $id && $conn) {
        $conns{ $id } = "$conn";
        $conn->on_complete(sub { $complete{$id}++ });
        $conn->on_disconnect(sub { $disconnect{$id} = $_[0] });
    }
    my $in = '';
    while (1) {
        my $ev = await $receive->();
        $in .= $ev->{body} // '';
        last unless $ev->{type} eq 'http.request' && $ev->{more};
    }
    my $text = sub {
        my ($status, $body, @h) = @_;
        return (async sub {
            await $send->({ type => 'http.response.start', status => $status,
                headers => [ [ 'content-type', 'text/plain' ], @h ] });
            await $send->({ type => 'http.response.body', body => $body });
        })->();
    };
    if ($path =~ m{\A/scope}) {
        my %s = map { $_ => $scope->{$_} } qw(type http_version method path raw_path query_string scheme);
        $s{headers} = $scope->{headers};
        $s{body}    = $in;
        $s{conn}    = ref $conn;
        my $body = $JSON->encode(\%s);
        await $send->({ type => 'http.response.start', status => 200,
            headers => [ [ 'content-type', 'application/json' ], [ 'content-length', length $body ] ] });
        await $send->({ type => 'http.response.body', body => $body });
        return;
    }
    if ($path eq '/report') {
        await $text->(200, $JSON->encode({ complete => \%complete, disconnect => \%disconnect, conns => \%conns }));
        return;
    }
    die "deliberate failure\n" if $path eq '/die';
    if ($path eq '/hop') {    # fields that belong to an HTTP/1.1 connection
        await $text->(200, 'hop', [ 'connection', 'keep-alive' ], [ 'keep-alive', 'timeout=5' ],
            [ 'transfer-encoding', 'chunked' ], [ 'upgrade', 'h2c' ], [ 'x-kept', 'yes' ]);
        return;
    }
    if ($path eq '/trailers') {
        await $send->({ type => 'http.response.start', status => 200, trailers => 1,
            headers => [ [ 'content-type', 'text/plain' ], [ 'trailer', 'x-checksum' ] ] });
        await $send->({ type => 'http.response.body', body => 'body before trailers', more => 1 });
        await $send->({ type => 'http.response.trailers', headers => [ [ 'x-checksum', 'abc123' ] ] });
        return;
    }
    if ($path eq '/nocontent') {    # a body the server must not send
        await $send->({ type => 'http.response.start', status => 204, headers => [] });
        await $send->({ type => 'http.response.body', body => 'must not be sent' });
        return;
    }
    if ($path eq '/stream') {    # five body events, a pause between them
        await $send->({ type => 'http.response.start', status => 200, headers => [ [ 'content-type', 'text/plain' ] ] });
        for my $i (1 .. 5) {
            await $send->({ type => 'http.response.body', body => "piece $i;" . ('.' x 20000), more => 1 });
            await IO::Async::Loop->new->delay_future(after => 0.05);
        }
        await $send->({ type => 'http.response.body', body => 'end' });
        return;
    }
    if ($path eq '/file') {    # 200 KB from a file (a file body is the last)
        await $send->({ type => 'http.response.start', status => 200, headers => [] });
        await $send->({ type => 'http.response.body', file => $FILE });
        return;
    }
    if ($path eq '/slice') {
        await $send->({ type => 'http.response.start', status => 200, headers => [] });
        await $send->({ type => 'http.response.body', file => $FILE, offset => 10, length => 5 });
        return;
    }
    if ($path eq '/wait') {    # until the client goes away
        await $conn->disconnect_future if $conn;
        return;
    }
    if ($path eq '/slow') {
        await IO::Async::Loop->new->delay_future(after => 1.5);
    }
    await $text->(200, "hello $path");
};

# curl against the server: { status, body, err, version, code }.
sub curl {
    my (@args) = @_;
    my ($st, $out, $err) = run_cmd(20, 'curl', '-sS', '--max-time', 10, '-w', '\n%{http_version} %{http_code}', @args);
    my ($body, $ver, $code) = $out =~ /\A(.*)\n(\S+) ([0-9]+)\z/s;
    return { status => $st, body => $body, version => $ver, code => $code, err => $err, out => $out };
}

sub json_of { my ($t) = @_; return eval { $JSON->decode($t // '') } }

sub h2load_ok {
    my ($name, $url) = @_;
    my ($st, $out, $err) = run_cmd(30, 'h2load', '-n', 1000, '-c', 4, '-m', 10, $url);
    is($st, 0, "$name: h2load exits 0") or diag($err);
    like($out, qr/^requests: 1000 total, 1000 started, 1000 done, 1000 succeeded, 0 failed, 0 errored, 0 timeout$/m,
        "$name: 1000 requests, all succeeded") or diag($out);
    like($out, qr/^status codes: 1000 2xx, 0 3xx, 0 4xx, 0 5xx$/m, "$name: 1000 2xx") or diag($out);
    like($out, qr/^Application protocol: h2c?$/m, "$name: spoken as HTTP/2");
}

subtest 'h2 over TLS: ALPN, curl, nghttp, h2load' => sub {
    my $srv = serve_ok('tls', app => $app, ssl => \%ssl, http2 => 1);
    return unless $srv->{port};
    my $port = $srv->{port};
    my @tls = ('--cacert', $certs->{ca_cert}, '--resolve', "localhost:$port:127.0.0.1");

    my ($s, $err) = tls_connect($port, SSL_ca_file => $certs->{ca_cert}, SSL_alpn_protocols => [ 'h2', 'http/1.1' ]);
    ok($s, 'TLS connection made') or diag($err);
    is($s && $s->alpn_selected, 'h2', 'ALPN selects h2 when the client offers it first');
    $s->close(SSL_fast_shutdown => 1) if $s;
    ($s, $err) = tls_connect($port, SSL_ca_file => $certs->{ca_cert}, SSL_alpn_protocols => ['http/1.1']);
    is($s && $s->alpn_selected, 'http/1.1', 'a client offering only http/1.1 gets it');
    $s->close(SSL_fast_shutdown => 1) if $s;

    my $c = curl('--http2', @tls, "https://localhost:$port/scope?a=1");
    is($c->{status}, 0, 'curl --http2 succeeds') or diag($c->{err});
    is($c->{version}, '2', 'curl -w %{http_version} says 2');
    my $f = json_of($c->{body}) || {};
    is($f->{http_version}, '2', 'scope http_version is 2');
    is($f->{scheme}, 'https', 'scope scheme is https');
    is($f->{query_string}, 'a=1', 'query string');

    $c = curl('--http1.1', @tls, "https://localhost:$port/scope");
    is([ $c->{version}, (json_of($c->{body}) || {})->{http_version} ], [ '1.1', '1.1' ],
        'curl --http1.1 on the same TLS port gets HTTP/1.1');

    my $n = nghttp(15, '-n', "https://127.0.0.1:$port/a", "https://127.0.0.1:$port/b");
    is($n->{status}, 0, 'nghttp over TLS succeeds') or diag($n->{out} . $n->{err});
    my @st = map { H2Test::fields_of($n->{streams}{$_}{blocks}[0])->{':status'}[0] } sort keys %{ $n->{streams} };
    is(\@st, [ 200, 200 ], 'two streams, each 200');

    h2load_ok('TLS', "https://127.0.0.1:$port/load");
    stopped_ok($srv, 'tls');
};

subtest 'without http2: TLS stays HTTP/1.1 and the h2c preface is not HTTP/2' => sub {
    my $srv = serve_ok('tls off', app => $app, ssl => \%ssl);
    my $plain = serve_ok('plain off', app => $app);
    return unless $srv->{port} && $plain->{port};
    my ($s, $err) = tls_connect($srv->{port}, SSL_ca_file => $certs->{ca_cert}, SSL_alpn_protocols => [ 'h2', 'http/1.1' ]);
    is($s && $s->alpn_selected, 'http/1.1', 'ALPN selects http/1.1 although h2 was offered first');
    $s->close(SSL_fast_shutdown => 1) if $s;
    my $c = curl('--http2', '--cacert', $certs->{ca_cert}, '--resolve', "localhost:$srv->{port}:127.0.0.1",
        "https://localhost:$srv->{port}/scope");
    is($c->{status}, 0, 'curl --http2 succeeds') or diag($c->{err});
    is($c->{version}, '1.1', '... over HTTP/1.1');

    my ($buf) = raw_exchange($plain->{port}, h2c_preface() . frame(0x4, 0, 0, ''), 3);
    ok(length($buf // ''), 'the preface gets an answer');
    like($buf // '', qr{\AHTTP/1\.1 [45][0-9][0-9] }, 'an HTTP/1.1 error status, not a SETTINGS frame');
    $c = curl('--http2-prior-knowledge', "http://127.0.0.1:$plain->{port}/scope");
    isnt($c->{code}, '200', 'curl --http2-prior-knowledge gets no 200');
    stopped_ok($srv, 'tls off');
    stopped_ok($plain, 'plain off');
};

subtest 'h2c by prior knowledge next to HTTP/1.1 on one port' => sub {
    my $srv = serve_ok('h2c', app => $app, http2 => 1);
    return unless $srv->{port};
    my $port = $srv->{port};
    my $c = curl('--http2-prior-knowledge', "http://127.0.0.1:$port/scope?x=y");
    is($c->{status}, 0, 'curl --http2-prior-knowledge succeeds') or diag($c->{err});
    is($c->{version}, '2', '... over HTTP/2');
    my $f = json_of($c->{body}) || {};
    is([ @$f{qw(http_version scheme query_string)} ], [ '2', 'http', 'x=y' ], 'scope: version 2, scheme http');

    $c = curl('--http1.1', "http://127.0.0.1:$port/scope");
    is([ $c->{version}, (json_of($c->{body}) || {})->{http_version} ], [ '1.1', '1.1' ], 'HTTP/1.1 on the same port');
    $c = curl('--http1.0', "http://127.0.0.1:$port/scope");
    is((json_of($c->{body}) || {})->{http_version}, '1.0', 'and HTTP/1.0');

    my $n = nghttp(15, '-n', "http://127.0.0.1:$port/x", "http://127.0.0.1:$port/y?z=1");
    is($n->{status}, 0, 'nghttp h2c succeeds') or diag($n->{out} . $n->{err});
    is(scalar keys %{ $n->{streams} }, 2, 'two streams answered');
    h2load_ok('h2c', "http://127.0.0.1:$port/load");
    stopped_ok($srv, 'h2c');
};

subtest 'the scope of a stream' => sub {
    my $srv = serve_ok('scope', app => $app, http2 => 1);
    return unless $srv->{port};
    my $port = $srv->{port};
    # nghttp sends the cookie fields apart, as HTTP/2 allows.
    my ($st, $json, $err) = run_cmd(15, 'nghttp', "http://127.0.0.1:$port/scope/caf%C3%A9?q=a%20b&r=1",
        '-H', 'Cookie: a=1', '-H', 'cookie: b=2', '-H', 'X-Mixed-Case: Yes');
    is($st, 0, 'nghttp succeeds') or diag($err);
    my $f = json_of($json) || {};
    is($f->{http_version}, '2', 'http_version 2');
    is($f->{method}, 'GET', 'method');
    is($f->{path}, "/scope/caf\x{e9}", 'path percent-decoded');
    is($f->{raw_path}, '/scope/caf%C3%A9', 'raw_path as sent');
    is($f->{query_string}, 'q=a%20b&r=1', 'query_string as sent');
    is($f->{scheme}, 'http', 'scheme http');
    is($f->{conn}, 'PAGI::Server::ConnectionState', 'pagi.connection is there');
    my @h = @{ $f->{headers} || [] };
    my @host = map { $_->[1] } grep { $_->[0] eq 'host' } @h;
    is(\@host, ["127.0.0.1:$port"], 'one host header, from :authority');
    is([ map { $_->[1] } grep { $_->[0] eq 'cookie' } @h ], ['a=1; b=2'], "cookie fields joined with '; '");
    is([ grep { /[A-Z]/ || /^:/ } map { $_->[0] } @h ], [], 'header names are lower case, no pseudo-headers');
    is([ map { $_->[1] } grep { $_->[0] eq 'x-mixed-case' } @h ], ['Yes'], 'values keep their case');

    # A raw client sends a host header as well as :authority.
    my $c = H2Test::Conn->new($port);
    $c->request(1, POST => '/scope?p=1', authority => 'auth.example:8080',
        headers => [ host => 'other.example', 'content-type' => 'text/plain' ]);
    $c->data(1, 'posted body', end => 1);
    my $end = $c->read_until(5, sub { $c->ended(1) });
    is($end, 'match', 'the raw client gets its answer');
    $f = json_of($c->body(1)) || {};
    is($f->{method}, 'POST', 'POST');
    is($f->{body}, 'posted body', 'with its body');
    @host = map { $_->[1] } grep { $_->[0] eq 'host' } @{ $f->{headers} || [] };
    is(\@host, ['auth.example:8080'], 'host appears once, from :authority, when a host field came too');
    $c->close;
    stopped_ok($srv, 'scope');
};

subtest 'a whole response ends its stream on its last DATA frame' => sub {
    # An END_STREAM in an empty DATA frame of its own is legal, but HAProxy
    # (proto h2) then holds the response back ~200 ms: a body sent at once
    # must end the stream with its data.
    my $srv = serve_ok('end-stream', app => $app, http2 => 1);
    return unless $srv->{port};
    my $c = H2Test::Conn->new($srv->{port});
    my @trailing;
    for my $n (1 .. 20) {
        my $sid = 2 * $n - 1;
        $c->request($sid, GET => "/one/$n", end => 1);
        is($c->read_until(5, sub { $c->ended($sid) }), 'match', "stream $sid answered") or last;
        my ($last) = grep { $_->{sid} == $sid && $_->{type} == 0x0 && $_->{flags} & 0x1 } $c->frames;
        push @trailing, $sid unless $last && length $last->{payload};
    }
    is(\@trailing, [], 'no stream ended with an empty DATA frame after its body');
    $c->close;
    stopped_ok($srv, 'end-stream');
};

subtest 'pagi.connection and the access log per stream' => sub {
    my $log = File::Spec->catfile($dir, 'access.log');
    open my $fh, '>>', $log or die "open $log: $!";
    $fh->autoflush(1);
    my $srv = serve_ok('access log', app => $app, http2 => 1,
        access_log => $fh, access_log_format => '%m %U%q %H %s %b');
    close $fh;
    return unless $srv->{port};
    my $port = $srv->{port};
    my $n = nghttp(15, '-n', map { "http://127.0.0.1:$port/c$_?id=s$_" } 1 .. 3);
    is($n->{status}, 0, 'three streams on one nghttp connection') or diag($n->{err});
    # A stream the client resets while the app waits.
    my $c = H2Test::Conn->new($port);
    $c->request(1, GET => '/wait?id=reset', end => 1);
    $c->read_until(0.5);
    $c->send(frame(0x3, 0, 1, pack('N', 0x8)));    # RST_STREAM CANCEL
    $c->read_until(0.5);
    $c->close;
    my $r;
    my $deadline = time + 5;
    while (time < $deadline) {
        $r = json_of(curl("http://127.0.0.1:$port/report")->{body}) || {};
        last if exists $r->{disconnect}{reset};
        select undef, undef, undef, 0.1;
    }
    is($r->{complete}, { s1 => 1, s2 => 1, s3 => 1 }, 'on_complete fired once for each stream');
    is(scalar(keys %{ { map { $_ => 1 } grep { defined } @{ $r->{conns} }{qw(s1 s2 s3)} } }), 3,
        'each stream has its own pagi.connection');
    is($r->{disconnect}, { reset => 'client_closed' }, 'a reset stream fires on_disconnect with client_closed');
    ok(!exists $r->{complete}{reset}, '... and not on_complete');

    my @lines = grep { /HTTP\/2/ } split /\n/, slurp($log);
    is([ sort @lines ], [ map { "GET /c$_?id=s$_ HTTP/2 200 " . length("hello /c$_") } 1 .. 3 ],
        'one access log line per stream, protocol HTTP/2');
    stopped_ok($srv, 'access log');
};

subtest 'responses' => sub {
    my $srv = serve_ok('responses', app => $app, http2 => 1);
    return unless $srv->{port};
    my $base = "http://127.0.0.1:$srv->{port}";
    my $n = nghttp(15, "$base/hello");
    my ($st) = values %{ $n->{streams} };
    my $h = H2Test::fields_of($st->{blocks}[0]);
    like($h->{date}[0] // '', qr/^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), [0-9]{2} [A-Z][a-z]{2} [0-9]{4} [0-9:]{8} GMT$/, 'a date header');
    like($h->{server}[0] // '', qr{^PAGI::Server/}, 'a server header');

    $n = nghttp(15, "$base/trailers");
    ($st) = values %{ $n->{streams} };
    is(scalar @{ $st->{blocks} }, 2, 'trailers: a second header block after the body');
    is(H2Test::fields_of($st->{blocks}[1]), { 'x-checksum' => ['abc123'] }, 'the trailer field');
    is($st->{data}, length 'body before trailers', 'the body before them');
    ok($st->{ended}, 'the stream ended');
    my $c = curl('--http2-prior-knowledge', '-v', "$base/trailers");
    like($c->{err}, qr/^< x-checksum: abc123\r?$/m, 'curl sees the trailer too');

    local $SIG{__WARN__} = sub { };
    $n = nghttp(15, "$base/die");
    ($st) = values %{ $n->{streams} };
    is(H2Test::fields_of($st->{blocks}[0])->{':status'}, ['500'], 'an app that dies: 500');

    $n = nghttp(15, "$base/hop");
    is($n->{status}, 0, 'connection-specific fields: nghttp accepts the stream') or diag($n->{err});
    ($st) = values %{ $n->{streams} };
    $h = H2Test::fields_of($st->{blocks}[0]);
    is($h->{':status'}, ['200'], '200');
    is([ grep { exists $h->{$_} } qw(connection keep-alive transfer-encoding upgrade) ], [],
        'connection, keep-alive, transfer-encoding and upgrade are not sent');
    is($h->{'x-kept'}, ['yes'], 'other fields are');
    is($st->{data}, 3, 'the body arrives');

    $n = nghttp(15, '-H', ':method: HEAD', "$base/hello");
    ($st) = values %{ $n->{streams} };
    is([ H2Test::fields_of($st->{blocks}[0])->{':status'}, $st->{data}, $st->{ended} ], [ ['200'], 0, 1 ],
        'HEAD: 200, no body bytes, ended');

    $n = nghttp(15, "$base/nocontent");
    ($st) = values %{ $n->{streams} };
    $h = H2Test::fields_of($st->{blocks}[0]);
    is([ $h->{':status'}, $st->{data}, $st->{ended} ], [ ['204'], 0, 1 ], '204: no body bytes although the app sent some');
    ok(!exists $h->{'content-length'}, '204: no content-length');

    $c = curl('--http2-prior-knowledge', "$base/file");
    my $file = join '', map { sprintf '%07d;', $_ } 0 .. 25_599;
    ok($c->{version} eq '2' && $c->{body} eq $file, 'a file body arrives whole over HTTP/2')
        or diag('got ' . length($c->{body} // '') . ' bytes, version ' . ($c->{version} // '?'));
    $c = curl('--http2-prior-knowledge', "$base/slice");
    is($c->{body}, substr($file, 10, 5), 'a slice of a file (offset, length)');

    $c = curl('--http2-prior-knowledge', "$base/stream");
    my $want = join('', map { "piece $_;" . ('.' x 20000) } 1 .. 5) . 'end';
    is($c->{code}, '200', 'streamed response: 200');
    ok($c->{body} eq $want, 'streamed response: five body events arrive whole and in order')
        or diag('got ' . length($c->{body} // '') . ' bytes of ' . length $want);
    stopped_ok($srv, 'responses');
};

subtest 'settings from the h2_* options' => sub {
    my $srv = serve_ok('defaults', app => $app, http2 => 1);
    my $n = nghttp(15, '-n', "http://127.0.0.1:$srv->{port}/");
    is($n->{settings}, {
        SETTINGS_MAX_CONCURRENT_STREAMS => 100, SETTINGS_INITIAL_WINDOW_SIZE => 65535,
        SETTINGS_MAX_FRAME_SIZE => 16384, SETTINGS_MAX_HEADER_LIST_SIZE => 65536,
        SETTINGS_ENABLE_CONNECT_PROTOCOL => 1,
    }, 'the defaults in the server SETTINGS frame');
    stopped_ok($srv, 'defaults');

    $srv = serve_ok('options', app => $app, http2 => 1,
        h2_max_concurrent_streams => 2, h2_initial_window_size => 131072,
        h2_max_frame_size => 32768, h2_max_header_list_size => 8192, h2_enable_connect_protocol => 0);
    return unless $srv->{port};
    my $port = $srv->{port};
    $n = nghttp(15, '-n', "http://127.0.0.1:$port/");
    is($n->{settings}, {
        SETTINGS_MAX_CONCURRENT_STREAMS => 2, SETTINGS_INITIAL_WINDOW_SIZE => 131072,
        SETTINGS_MAX_FRAME_SIZE => 32768, SETTINGS_MAX_HEADER_LIST_SIZE => 8192,
    }, 'each option in the SETTINGS frame; no ENABLE_CONNECT_PROTOCOL with h2_enable_connect_protocol 0');

    # Two streams may be open; a third is refused.
    my $c = H2Test::Conn->new($port);
    $c->read_until(2, sub { grep { $_->{type} == 0x4 && !($_->{flags} & 1) } $c->frames });
    $c->request($_, GET => '/slow', end => 1) for 1, 3;
    $c->request(5, GET => '/hello', end => 1);
    my $end = $c->read_until(5, sub { $c->ended(1) && $c->ended(3) && (defined $c->rst(5) || $c->ended(5)) });
    is($end, 'match', 'all three streams ended or were reset');
    is($c->rst(5), 0x7, 'the third stream: RST_STREAM REFUSED_STREAM');
    is([ $c->body(1), $c->body(3) ], [ 'hello /slow', 'hello /slow' ], 'the two others are answered');

    # A frame up to h2_max_frame_size is taken; one past it ends the connection.
    $c->request(7, POST => '/scope');
    $c->send(frame(0x0, 0x1, 7, 'x' x 32768));
    $end = $c->read_until(5, sub { $c->ended(7) });
    is([ $end, length((json_of($c->body(7)) || {})->{body} // '') ], [ 'match', 32768 ], 'a 32768-byte DATA frame is taken');
    $c->request(9, POST => '/scope');
    $c->send(frame(0x0, 0x1, 9, 'x' x 32769));
    $end = $c->read_until(5, sub { $c->goaways });
    my ($ga) = $c->goaways;
    is($ga && $ga->{error_code}, 0x6, 'a 32769-byte frame: GOAWAY FRAME_SIZE_ERROR');
    $c->close;

    # A header list over h2_max_header_list_size is not served.
    $n = nghttp(15, '-H', 'x-big: ' . ('b' x 10000), "http://127.0.0.1:$port/hello");
    my ($st) = values %{ $n->{streams} };
    is($st && H2Test::fields_of($st->{blocks}[0])->{':status'}, ['431'],
        'a 10 KB header field over an 8 KB list limit: 431');
    $n = nghttp(15, '-H', 'x-big: ' . ('b' x 4000), "http://127.0.0.1:$port/hello");
    ($st) = values %{ $n->{streams} };
    is($st && H2Test::fields_of($st->{blocks}[0])->{':status'}, ['200'], 'a 4 KB one is served');
    stopped_ok($srv, 'options');
};

subtest 'bad h2_* values die at construction, naming the option' => sub {
    require PAGI::Server;
    my $new = sub { PAGI::Server->new(app => sub { }, host => '127.0.0.1', port => 0, quiet => 1, http2 => 1, @_) };
    for my $case (
        [ h2_max_frame_size         => 100,                        qr/h2_max_frame_size/ ],
        [ h2_max_frame_size         => 16777216,                   qr/h2_max_frame_size/ ],
        [ h2_rst_rate_limit         => 5,                          qr/h2_rst_rate_limit/ ],
        [ h2_rst_rate_limit         => { burst => 0, rate => 1 },  qr/h2_rst_rate_limit.*burst/ ],
        [ h2_rst_rate_limit         => { burst => 10 },            qr/h2_rst_rate_limit.*rate/ ],
        [ h2_initial_window_size    => 2**31,                      qr/h2_initial_window_size/ ],
        [ h2_max_concurrent_streams => 0,                          qr/h2_max_concurrent_streams/ ],
    ) {
        my ($k, $v, $re) = @$case;
        my $shown = ref $v ? '{' . join(',', map { "$_=>$v->{$_}" } sort keys %$v) . '}' : $v;
        like(dies { $new->($k => $v) }, $re, "$k => $shown dies naming it");
    }
    ok(lives { $new->(h2_max_frame_size => 16777215, h2_rst_rate_limit => { burst => 1, rate => 1 }) },
        'the limits themselves are taken');
};

done_testing;
