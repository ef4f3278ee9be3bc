use strict;
use warnings;

# TLS served by the core (the ssl option), seen from real clients: the
# scope's scheme and extensions.tls for RSA and ECDSA certificates, TLS 1.3
# and 1.2; a certificate chain; client certificates (verify_client);
# min_version; cipher_list; keep-alive and large bodies; WebSocket over
# TLS; a Unix socket next to a TLS TCP listener. Certificates are made for this run with openssl. Servers
# run in forked children (TLSTest), the clients are IO::Socket::SSL, curl
# and plain sockets, and every wait is bounded.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::UNIX;
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(time);
use TestCerts;

BEGIN {
    my $why = TestCerts::skip_reason();
    skip_all($why) if $why;
}
use IO::Socket::SSL;
use TLSTest qw(serve stop_server server_log wait_log tls_connect tls_get read_until read_all
               parse_response facts_of run_cmd iana_of);

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "45-tls.t: overall time limit reached\n" };
alarm 60;

my $dir   = tempdir(CLEANUP => 1);
my $certs = TestCerts::make($dir, qw(rsa ecdsa chain client stranger client_v1 stranger_v1));
my %trust = (SSL_ca_file => $certs->{ca_cert});
my @TLS_KEYS = sort qw(server_cert client_cert_chain client_cert_name client_cert_error tls_version cipher_suite);

sub leaf_of { (TestCerts::pem_blocks($_[0]))[0] }

sub serve_ok {
    my ($name, %opts) = @_;
    my $srv = serve(%opts);
    ok(!$srv->{error}, "$name: server is up") or diag($srv->{error});
    return $srv;
}

sub stopped_ok {
    my ($srv, $name) = @_;
    return unless $srv->{pid};
    is(stop_server($srv), 0, "$name: server stopped cleanly by SIGTERM")
        or diag(server_log($srv));
}

# Checks a 200 from the facts app over TLS without a client certificate.
sub tls_facts_ok {
    my ($r, %want) = @_;
    ok(!$r->{error}, 'TLS connection made') or diag($r->{error});
    is($r->{response} && $r->{response}{status}, 200, 'status 200')
        or diag("end: " . ($r->{end} // '') . " raw: " . ($r->{raw} // ''));
    my $f = $r->{facts} or return;
    is($f->{scheme}, 'https', 'scope scheme is https');
    is($f->{has_tls}, 1, 'extensions.tls is there');
    my $tls = $f->{tls} || {};
    is([ sort keys %$tls ], \@TLS_KEYS, 'extensions.tls has exactly the six keys');
    is($tls->{tls_version}, $want{version}, sprintf('tls_version 0x%04x', $want{version}));
    is($tls->{tls_version}, $r->{sock_version}, '... as the client negotiated');
    like($r->{response}{body}, qr/"cipher_suite":[0-9]+,.*"tls_version":[0-9]+\}/,
        'tls_version and cipher_suite are numbers, not strings');
    my $suite = iana_of($r->{cipher});
    ok(defined $suite, "the client's cipher $r->{cipher} is known to the test");
    is($tls->{cipher_suite}, $suite, sprintf('cipher_suite is the IANA number of %s (0x%04x)', $r->{cipher}, $suite // 0));
    is(TestCerts::squash($tls->{server_cert}), TestCerts::squash(leaf_of($want{cert})),
        'server_cert is the leaf certificate from cert_file');
    is($tls->{client_cert_chain}, [], 'client_cert_chain is empty without a client certificate');
    is($tls->{client_cert_name}, undef, 'client_cert_name is undef');
    is($tls->{client_cert_error}, undef, 'client_cert_error is undef');
    return $f;
}

# curl's view: status code, body and the "SSL connection using V / CIPHER" line.
sub curl_get {
    my ($port, @args) = @_;
    my ($st, $out, $err) = run_cmd(20, 'curl', '-sS', '-v', '--max-time', 10,
        '--cacert', $certs->{ca_cert}, '--resolve', "localhost:$port:127.0.0.1",
        @args, "https://localhost:$port/curl");
    my ($ver, $cipher) = $err =~ m{SSL connection using (\S+) / (\S+)};
    return { status => $st, body => $out, err => $err, version => $ver, cipher => $cipher };
}

for my $kind (qw(rsa ecdsa)) {
    subtest "$kind server certificate" => sub {
        my $cert = $certs->{"${kind}_cert"};
        my $srv = serve_ok($kind, ssl => { cert_file => $cert, key_file => $certs->{"${kind}_key"} });
        return unless $srv->{port};

        subtest 'IO::Socket::SSL, TLS 1.3 by default' => sub {
            my $r = tls_get($srv->{port}, '/', %trust);
            tls_facts_ok($r, version => 0x0304, cert => $cert);
        };
        subtest 'IO::Socket::SSL capped at TLS 1.2' => sub {
            my $r = tls_get($srv->{port}, '/', %trust, SSL_version => 'TLSv1_2');
            tls_facts_ok($r, version => 0x0303, cert => $cert);
            my $want = $kind eq 'rsa' ? qr/^ECDHE-RSA-/ : qr/^ECDHE-ECDSA-/;
            like($r->{cipher}, $want, "a TLS 1.2 suite for the $kind key");
        };
        subtest 'ALPN: a client offering h2 and http/1.1 gets http/1.1' => sub {
            my ($s, $err) = tls_connect($srv->{port}, %trust, SSL_alpn_protocols => [ 'h2', 'http/1.1' ]);
            ok($s, 'TLS connection made') or return diag($err);
            is($s->alpn_selected, 'http/1.1', 'http/1.1 is selected');
            $s->close(SSL_fast_shutdown => 1);
        };
        for my $max (undef, '1.2') {
            subtest 'curl' . ($max ? " --tls-max $max" : '') => sub {
                my $c = curl_get($srv->{port}, $max ? ('--tls-max', $max) : ());
                is($c->{status}, 0, 'curl succeeds (certificate verified against the CA)') or diag($c->{err});
                my $f = eval { JSON::PP->new->decode($c->{body}) } || {};
                is($f->{scheme}, 'https', 'scheme https');
                is([ sort keys %{ $f->{tls} || {} } ], \@TLS_KEYS, 'the six extensions.tls keys');
                my $v = $max ? 0x0303 : 0x0304;
                is($c->{version}, $max ? 'TLSv1.2' : 'TLSv1.3', 'curl reports the version') or diag($c->{err});
                is($f->{tls}{tls_version}, $v, sprintf('tls_version 0x%04x', $v));
                is($f->{tls}{cipher_suite}, iana_of($c->{cipher}), "cipher_suite matches curl's $c->{cipher}");
            };
        }
        stopped_ok($srv, $kind);
    };
}

subtest 'keep-alive and large bodies over TLS' => sub {
    my $srv = serve_ok('bodies', ssl => { cert_file => $certs->{rsa_cert}, key_file => $certs->{rsa_key} });
    return unless $srv->{port};
    my ($s, $err) = tls_connect($srv->{port}, %trust);
    ok($s, 'TLS connection made') or return diag($err);
    my %versions;
    for my $i (1 .. 3) {
        $s->syswrite("GET /ka$i HTTP/1.1\r\nHost: localhost\r\n\r\n");
        my ($buf, $end) = read_until($s, 5, sub {
            my ($b) = @_;
            my ($len) = $b =~ /\r\ncontent-length: *([0-9]+)\r\n/i or return 0;
            my $at = index($b, "\r\n\r\n");
            return $at >= 0 && length($b) >= $at + 4 + $len;
        });
        my $f = facts_of(parse_response($buf));
        is($f && $f->{scheme}, 'https', "request $i on the same connection answered") or diag("end $end: $buf");
        $versions{ $f ? $f->{tls}{tls_version} : 'none' }++;
    }
    is(\%versions, { 0x0304 => 3 }, 'each with the same TLS facts');

    # 3 MiB up, 6 MiB down, written and read at once (both directions of
    # the TLS session busy together).
    my $body = join '', map { chr(65 + $_ % 26) } 0 .. 3 * 1024 * 1024 - 1;
    my $req = "POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: " . length($body)
        . "\r\nConnection: close\r\n\r\n$body";
    $s->blocking(0);
    my ($off, $got, $eof) = (0, '', 0);
    my $deadline = time + 20;
    my $sel = IO::Select->new($s);
    while (!$eof && time < $deadline) {
        my $moved = 0;
        if ($off < length $req) {
            my $n = $s->syswrite($req, 65536, $off);
            $off += $n, $moved = 1 if $n;
        }
        my $n = $s->sysread(my $chunk, 65536);
        if (defined $n) { $n ? ($got .= $chunk) : ($eof = 1); next }
        IO::Select::select($sel, $off < length $req ? $sel : undef, undef, 0.05) unless $moved;
    }
    is($off, length $req, 'the whole request was written');
    ok($eof, 'the response ended with the connection');
    my $r = parse_response($got);
    is($r && $r->{status}, 200, 'echo answered 200');
    is(length($r ? $r->{body} : ''), 2 * length $body, 'the body came back twice over: 6 MiB');
    ok($r && $r->{body} eq $body x 2, '... byte for byte');
    $s->close(SSL_fast_shutdown => 1);
    stopped_ok($srv, 'bodies');
};

subtest 'a plaintext server has no extensions.tls' => sub {
    my $srv = serve_ok('plain');
    return unless $srv->{port};
    my $sock = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->{port}, Timeout => 5);
    ok($sock, 'connected') or return;
    print {$sock} "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    my ($raw) = read_all($sock, 5);
    my $f = facts_of(parse_response($raw));
    ok($f, 'a 200 with facts') or diag($raw);
    is($f && $f->{scheme}, 'http', 'scheme http');
    is($f && $f->{has_tls}, 0, 'no extensions.tls');
    stopped_ok($srv, 'plain');
};

subtest 'certificate chain: the intermediate is sent' => sub {
    my $srv = serve_ok('chain', ssl => { cert_file => $certs->{chain_cert}, key_file => $certs->{chain_key} });
    return unless $srv->{port};
    my $r = tls_get($srv->{port}, '/', %trust);
    ok(!$r->{error}, 'a client trusting only the root CA verifies the server') or diag($r->{error});
    tls_facts_ok($r, version => 0x0304, cert => $certs->{chain_leaf});
    stopped_ok($srv, 'chain');

    # The control: with the leaf alone the same client cannot build the chain.
    my $leaf = serve_ok('leaf only', ssl => { cert_file => $certs->{chain_leaf}, key_file => $certs->{chain_key} });
    return unless $leaf->{port};
    my $bad = tls_get($leaf->{port}, '/', %trust);
    like($bad->{error} // 'connected', qr/certificate verify failed|verify/i,
        'without the intermediate the root-only client fails');
    stopped_ok($leaf, 'leaf only');
};

subtest 'verify_client' => sub {
    my $srv = serve_ok('verify_client', quiet => 0, log_level => 'debug',
        ssl => { cert_file => $certs->{rsa_cert}, key_file => $certs->{rsa_key},
                 ca_file => $certs->{ca_cert}, verify_client => 1 });
    return unless $srv->{port};
    my $port = $srv->{port};
    my $failed = () = server_log($srv) =~ /SSL handshake failed/g;
    is($failed, 0, 'no handshake failure logged yet');

    my %refused = (
        'no client certificate' => {},
        'a client certificate from another CA' =>
            { SSL_cert_file => $certs->{stranger_cert}, SSL_key_file => $certs->{stranger_key} },
    );
    for my $case (sort keys %refused) {
        for my $cap (undef, 'TLSv1_2') {
            my $r = tls_get($port, '/', %trust, %{ $refused{$case} }, $cap ? (SSL_version => $cap) : ());
            my $name = $case . ($cap ? ' (TLS 1.2)' : ' (TLS 1.3)');
            ok(!$r->{response}, "$name: no HTTP response")
                or diag($r->{raw});
            # In TLS 1.2 the server's refusal ends the handshake itself; in
            # 1.3 the client is done first and reads the alert afterwards.
            ok($r->{error}, "$name: the client's handshake fails") if $cap;
            $failed++;
            ok(wait_log($srv, sub { (() = $_[0] =~ /SSL handshake failed/g) >= $failed }, 3),
                "$name: the server logs the handshake failure at debug level")
                or diag(server_log($srv));
        }
    }

    my $r = tls_get($port, '/', %trust,
        SSL_cert_file => $certs->{client_cert}, SSL_key_file => $certs->{client_key});
    is($r->{response} && $r->{response}{status}, 200, 'a client certificate signed by the CA: 200')
        or diag($r->{error} // $r->{raw});
    my $tls = $r->{facts} ? $r->{facts}{tls} : {};
    is([ sort keys %$tls ], \@TLS_KEYS, 'the six extensions.tls keys');
    is(ref $tls->{client_cert_chain}, 'ARRAY', 'client_cert_chain is an array');
    ok(@{ $tls->{client_cert_chain} || [] } >= 1, 'client_cert_chain is not empty');
    is(TestCerts::squash(($tls->{client_cert_chain} || [])->[0]), TestCerts::squash(leaf_of($certs->{client_cert})),
        'its first entry is the client certificate (PEM)');
    is($tls->{client_cert_name}, 'CN=Test Client,O=PAGI Test,C=US', 'client_cert_name (RFC 4514)');
    is($tls->{client_cert_error}, undef, 'client_cert_error is undef');

    my $c = curl_get($port, '--cert', $certs->{client_cert}, '--key', $certs->{client_key});
    is($c->{status}, 0, 'curl with the client certificate succeeds') or diag($c->{err});
    like($c->{body}, qr/"client_cert_name":"CN=Test Client,O=PAGI Test,C=US"/, '... and the app sees its name');

    # Version 1 certificates have no extensions; OpenSSL takes them as client
    # certificates, and so does this server (rustls alone would not).
    for my $cap (undef, 'TLSv1_2') {
        my $name = 'an X.509 v1 client certificate' . ($cap ? ' (TLS 1.2)' : ' (TLS 1.3)');
        my $r = tls_get($port, '/', %trust, $cap ? (SSL_version => $cap) : (),
            SSL_cert_file => $certs->{client_v1_cert}, SSL_key_file => $certs->{client_v1_key});
        is($r->{response} && $r->{response}{status}, 200, "$name signed by the CA: 200")
            or diag($r->{error} // $r->{raw});
        is($r->{facts} && $r->{facts}{tls}{client_cert_name}, 'CN=Version One,O=PAGI Test,C=US',
            "$name: its name");
        $r = tls_get($port, '/', %trust, $cap ? (SSL_version => $cap) : (),
            SSL_cert_file => $certs->{stranger_v1_cert}, SSL_key_file => $certs->{stranger_v1_key});
        ok(!$r->{response}, "$name from another CA: no HTTP response") or diag($r->{raw});
    }
    stopped_ok($srv, 'verify_client');
};

subtest 'min_version' => sub {
    my $srv = serve_ok('TLSv1_3', ssl => { cert_file => $certs->{rsa_cert}, key_file => $certs->{rsa_key},
        min_version => 'TLSv1_3' });
    return unless $srv->{port};
    my $r = tls_get($srv->{port}, '/', %trust, SSL_version => 'TLSv1_2');
    ok($r->{error}, 'TLSv1_3: a client capped at TLS 1.2 fails the handshake')
        or diag("got version $r->{sock_version}");
    ok(!$r->{response}, '... and gets no response');
    my $ok = tls_get($srv->{port}, '/', %trust);
    is($ok->{facts} && $ok->{facts}{tls}{tls_version}, 0x0304, 'TLSv1_3: a TLS 1.3 client is served');
    my $c = curl_get($srv->{port}, '--tls-max', '1.2');
    isnt($c->{status}, 0, 'TLSv1_3: curl --tls-max 1.2 fails');
    stopped_ok($srv, 'TLSv1_3');
    # The default (TLSv1_2) accepting 1.2 is checked with the RSA and ECDSA servers above.
};

subtest 'cipher_list' => sub {
    my %key = (cert_file => $certs->{rsa_cert}, key_file => $certs->{rsa_key});
    # The client lists first the suite the server should not pick, so only
    # the server's cipher_list can explain the choice: without one, the
    # client's first choice wins.
    my $plain = serve_ok('no cipher_list', ssl => { %key });
    if ($plain->{port}) {
        my $r = tls_get($plain->{port}, '/', %trust, SSL_version => 'TLSv1_2',
            SSL_cipher_list => 'ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256');
        is($r->{cipher}, 'ECDHE-RSA-CHACHA20-POLY1305', "no cipher_list: the client's first choice");
        stopped_ok($plain, 'no cipher_list');
    }
    my $gcm = serve_ok('ECDHE+AESGCM', ssl => { %key, cipher_list => 'ECDHE+AESGCM' });
    if ($gcm->{port}) {
        my $r = tls_get($gcm->{port}, '/', %trust, SSL_version => 'TLSv1_2',
            SSL_cipher_list => 'ECDHE-RSA-CHACHA20-POLY1305:ECDHE-RSA-AES128-GCM-SHA256');
        is($r->{cipher}, 'ECDHE-RSA-AES128-GCM-SHA256', 'ECDHE+AESGCM: an AES-GCM suite is negotiated');
        is($r->{facts} && $r->{facts}{tls}{cipher_suite}, 0xc02f, '... and reported as 0xc02f');
        my $none = tls_get($gcm->{port}, '/', %trust, SSL_version => 'TLSv1_2',
            SSL_cipher_list => 'ECDHE-RSA-CHACHA20-POLY1305');
        ok($none->{error}, 'ECDHE+AESGCM: a TLS 1.2 client offering only CHACHA20 fails');
        my $v13 = tls_get($gcm->{port}, '/', %trust);
        is($v13->{facts} && $v13->{facts}{tls}{tls_version}, 0x0304, 'ECDHE+AESGCM: TLS 1.3 is still served');
        stopped_ok($gcm, 'ECDHE+AESGCM');
    }
    my $cc = serve_ok('ECDHE+CHACHA20', ssl => { %key, cipher_list => 'ECDHE+CHACHA20' });
    if ($cc->{port}) {
        my $r = tls_get($cc->{port}, '/', %trust, SSL_version => 'TLSv1_2',
            SSL_cipher_list => 'ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-CHACHA20-POLY1305');
        is($r->{cipher}, 'ECDHE-RSA-CHACHA20-POLY1305', 'ECDHE+CHACHA20: the CHACHA20 suite is negotiated');
        is($r->{facts} && $r->{facts}{tls}{cipher_suite}, 0xcca8, '... and reported as 0xcca8');
        stopped_ok($cc, 'ECDHE+CHACHA20');
    }
};

subtest 'WebSocket over TLS' => sub {
    my $srv = serve_ok('ws', ssl => { cert_file => $certs->{ecdsa_cert}, key_file => $certs->{ecdsa_key} });
    return unless $srv->{port};
    my ($s, $err) = tls_connect($srv->{port}, %trust);
    ok($s, 'TLS connection made') or return diag($err);
    $s->syswrite("GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        . "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n");
    # The 101 head, then one unmasked text frame of under 64 KiB.
    my $frame = sub {
        my ($buf) = @_;
        my $end = index($buf, "\r\n\r\n");
        return undef if $end < 0;
        my $rest = substr($buf, $end + 4);
        return undef if length $rest < 2;
        my ($b0, $b1) = unpack 'CC', $rest;
        my ($len, $at) = ($b1 & 0x7f, 2);
        ($len, $at) = (unpack('n', substr($rest, 2, 2)), 4) if $len == 126 && length $rest >= 4;
        return undef if length $rest < $at + $len;
        return [ $b0, substr($rest, $at, $len) ];
    };
    my ($buf, $end) = read_until($s, 5, $frame);
    like($buf, qr{\AHTTP/1\.1 101 }, '101 Switching Protocols over TLS');
    like($buf, qr{\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK\+xOo=\r\n}i, 'the accept key');
    my $f = $frame->($buf);
    is($f && $f->[0], 0x81, 'a text frame') or return diag("end: $end");
    my $facts = eval { JSON::PP->new->decode($f->[1]) } || {};
    is($facts->{type}, 'websocket', 'the app saw a websocket scope');
    is($facts->{scheme}, 'wss', 'scope scheme is wss');
    is([ sort keys %{ $facts->{tls} || {} } ], \@TLS_KEYS, 'extensions.tls is there with its six keys');
    $s->syswrite(pack('CCa4', 0x88, 0x80, 'abcd'));    # masked, empty close
    $s->close(SSL_fast_shutdown => 1);
    stopped_ok($srv, 'ws');
};

subtest 'a Unix socket next to a TLS TCP listener stays plaintext' => sub {
    my $path = "$dir/plain.sock";
    my $srv = serve_ok('unix+tcp', listen => [ { host => '127.0.0.1', port => 0 }, { socket => $path } ],
        ssl => { cert_file => $certs->{rsa_cert}, key_file => $certs->{rsa_key} });
    return unless $srv->{port};
    my $u = IO::Socket::UNIX->new(Peer => $path, Type => SOCK_STREAM);
    ok($u, 'connected to the Unix socket') or return;
    print {$u} "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    my ($raw) = read_all($u, 5);
    my $f = facts_of(parse_response($raw));
    ok($f, 'plain HTTP over the Unix socket: 200') or diag($raw);
    is($f && $f->{scheme}, 'http', 'scheme http');
    is($f && $f->{has_tls}, 0, 'no extensions.tls');
    my $r = tls_get($srv->{port}, '/', %trust);
    is($r->{facts} && $r->{facts}{scheme}, 'https', 'the TCP listener serves TLS');
    stopped_ok($srv, 'unix+tcp');
};

done_testing;
