use strict;
use warnings;

# A TLS listener and clients that do not complete a handshake: one that
# sends nothing (closed after `timeout`), one that sends garbage, one that
# speaks plain HTTP; failures are logged at debug level and the server
# serves on. At max_connections the 503 goes out over TLS, never in
# plaintext. Servers run in forked children (TLSTest); waits are bounded.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp qw(tempdir);
use IO::Socket::INET;
use TestCerts;

BEGIN {
    my $why = TestCerts::skip_reason();
    skip_all($why) if $why;
}
use IO::Socket::SSL;
use TLSTest qw(serve stop_server server_log wait_log tls_connect tls_get read_until read_all
               parse_response raw_exchange);

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "47-tls-handshake.t: overall time limit reached\n" };
alarm 60;

my $dir   = tempdir(CLEANUP => 1);
my $certs = TestCerts::make($dir, qw(rsa));
my %trust = (SSL_ca_file => $certs->{ca_cert});
my %ssl   = (cert_file => $certs->{rsa_cert}, key_file => $certs->{rsa_key});

sub log_count {
    my ($srv, $re) = @_;
    return scalar(() = server_log($srv) =~ /$re/g);
}

sub serves_ok {
    my ($srv, $name) = @_;
    my $r = tls_get($srv->{port}, '/', %trust);
    is($r->{response} && $r->{response}{status}, 200, $name)
        or diag($r->{error} // $r->{raw});
}

subtest 'clients that never complete a handshake' => sub {
    my $srv = serve(ssl => { %ssl }, timeout => 1, quiet => 0, log_level => 'debug');
    ok(!$srv->{error}, 'server is up') or return diag($srv->{error});
    my $port = $srv->{port};

    subtest 'silent client: closed after the 1 s timeout' => sub {
        my ($buf, $end, $took) = raw_exchange($port, '', 6);
        is($end, 'eof', 'the server closes the connection')
            or diag("end: $end");
        ok($took >= 0.8 && $took <= 3.5, sprintf('after about a second (%.2f s)', $took));
        is($buf, '', 'nothing is sent');
        ok(wait_log($srv, qr/SSL handshake timed out after 1\.0s/, 3), 'the timeout is logged at debug level')
            or diag(server_log($srv));
    };

    subtest 'garbage instead of a ClientHello' => sub {
        my $before = log_count($srv, qr/SSL handshake failed/);
        my ($buf, $end, $took) = raw_exchange($port, "\x00\x01garbage garbage garbage\r\n\r\n" x 4, 4);
        like($end, qr/^(eof|.*reset.*)$/i, 'the connection is closed') or diag("end: $end");
        ok($took < 3, sprintf('promptly (%.2f s)', $took));
        unlike($buf, qr{HTTP/1\.[01] 200}, 'no HTTP 200');
        ok(wait_log($srv, sub { (() = $_[0] =~ /SSL handshake failed: /g) > $before }, 3),
            'the failure is logged as "SSL handshake failed: ..."')
            or diag(server_log($srv));
        serves_ok($srv, 'the server serves TLS clients afterwards');
    };

    subtest 'plain HTTP to the TLS port' => sub {
        my $before = log_count($srv, qr/Plain HTTP on a TLS listener/);
        my ($buf, $end, $took) = raw_exchange($port, "GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", 4);
        ok(defined $buf, 'connected');
        unlike($buf // '', qr{HTTP/1\.[01] 200}, 'no HTTP 200');
        like($buf // '', qr{\AHTTP/1\.1 400 .*\r\n\r\n400 Bad Request - plain HTTP was sent to an HTTPS port\r\n\z}s,
            'a plaintext 400 that names the mistake, as nginx answers');
        like($end // '', qr/^(eof|.*reset.*)$/i, 'the connection is closed') or diag("end: $end");
        ok(wait_log($srv, sub { (() = $_[0] =~ /Plain HTTP on a TLS listener/g) > $before }, 3),
            'logged at debug level')
            or diag(server_log($srv));
        serves_ok($srv, 'the server still serves TLS clients');
    };

    is(stop_server($srv), 0, 'server stopped cleanly by SIGTERM');
};

subtest 'at max_connections the 503 goes out over TLS' => sub {
    my $srv = serve(ssl => { %ssl }, max_connections => 1, quiet => 0, log_level => 'warn');
    ok(!$srv->{error}, 'server is up') or return diag($srv->{error});
    my $port = $srv->{port};

    # The one connection allowed, busy in the app for two seconds.
    my ($held, $err) = tls_connect($port, %trust);
    ok($held, 'first TLS connection made') or return diag($err);
    $held->syswrite("GET /slow?s=2 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");

    my ($second, $err2) = tls_connect($port, %trust);
    ok($second, 'a second client completes its handshake') or diag($err2);
    if ($second) {
        my ($buf, $end) = read_all($second, 6);
        my $r = parse_response($buf);
        is($r && $r->{status}, 503, 'and reads a 503 over TLS') or diag("end: $end, got: $buf");
        like($r && $r->{head}, qr/^Retry-After: 5$/mi, 'with Retry-After');
        like($r && $r->{body}, qr/Server at capacity/, 'and the capacity body');
        $second->close(SSL_fast_shutdown => 1);
    }
    ok(wait_log($srv, qr{Connection rejected: at capacity \(1/1\)}, 3), 'the refusal is logged')
        or diag(server_log($srv));

    my ($raw, $end) = raw_exchange($port, '', 1.5);
    ok(defined $raw, 'a raw TCP client connects');
    unlike($raw // '', qr{HTTP/1\.[01] 503}, 'a raw client is never sent a plaintext 503');
    is($raw, '', '... nor anything else before a ClientHello');

    my ($buf) = read_all($held, 6);
    my $r = parse_response($buf);
    is($r && $r->{status}, 200, 'the held connection is answered') or diag($buf);
    $held->close(SSL_fast_shutdown => 1);
    my $ok;
    for (1 .. 20) {    # the slot frees up once the server saw the close
        my $next = tls_get($port, '/', %trust);
        last if $ok = $next->{response} && $next->{response}{status} == 200;
        select undef, undef, undef, 0.1;
    }
    ok($ok, 'a new client is served once the slot is free');
    is(stop_server($srv), 0, 'server stopped cleanly by SIGTERM');
};

subtest 'at max_connections, a stalled handshake or an idle TLS connection makes room' => sub {
    my $srv = serve(ssl => { %ssl }, max_connections => 1, timeout => 10, quiet => 0, log_level => 'warn');
    ok(!$srv->{error}, 'server is up') or return diag($srv->{error});
    my $port = $srv->{port};

    my $stalled = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Timeout => 5);
    ok($stalled, 'a TCP client that never sends a ClientHello takes the one slot') or return;
    select undef, undef, undef, 0.6;    # past the grace for a stalled head
    serves_ok($srv, 'a TLS client is still served');
    my (undef, $end) = read_all($stalled, 3);
    like($end, qr/^(eof|.*reset.*)$/i, 'the stalled connection was closed to make room');

    # The slot frees once the server saw the previous client close; until
    # then a new connection is refused (a 503 over TLS, then the end).
    my ($idle, $err);
    for (1 .. 20) {
        ($idle, $err) = tls_connect($port, %trust);
        last unless $idle;
        my ($early, $how) = read_all($idle, 0.3);
        last if $early eq '' && $how eq 'timeout';
        $idle->close(SSL_fast_shutdown => 1);
        undef $idle;
        select undef, undef, undef, 0.1;
    }
    ok($idle, 'an idle TLS connection takes the slot') or return diag($err);
    select undef, undef, undef, 1.5;    # past the grace for an idle connection
    serves_ok($srv, 'a new TLS client is served');
    (undef, $end) = read_all($idle, 3);
    is($end, 'eof', 'the idle TLS connection was closed to make room');
    ok(wait_log($srv, sub { (() = $_[0] =~ /closed 1 connection\(s\) waiting longest/g) == 2 }, 3),
        'both evictions are logged') or diag(server_log($srv));
    is(stop_server($srv), 0, 'server stopped cleanly by SIGTERM');
};

done_testing;
