use strict;
use warnings;

# gRPC over HTTP/2, with a real gRPC client: examples/grpc/app.pl (a unary
# helloworld.Greeter/SayHello written as a plain PAGI app, response
# trailers carrying grpc-status) served with http2 => 1, called by Python's
# grpcio (t/tools/grpc_unary.py, no generated stubs) over h2c and over TLS
# (h2 chosen by ALPN; grpcio refuses a server that does not offer it).
# grpcio checks what a gRPC server must get right on the wire: HTTP/2
# framing and flow control, content-type, the length-prefixed message, and
# grpc-status arriving in trailers (a HEADERS frame ending the stream).

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use Cwd qw(abs_path);
use File::Temp qw(tempdir);
use ExtProc qw(which);
use ProcTest qw(start_cmd finish_cmd alive);

my $ROOT   = abs_path("$FindBin::Bin/..");
my $CLIENT = "$ROOT/t/tools/grpc_unary.py";

BEGIN {
    skip_all('python3 is not installed') unless which('python3');
    # grpcio imports in well under a second; 30 s covers a cold disk.
    my ($st) = finish_cmd(start_cmd(argv => [ 'python3', '-c', 'import grpc' ]), 30);
    skip_all('python3 cannot import grpc (pip install grpcio)') if $st;
}
use TestCerts;
BEGIN {
    my $why = TestCerts::skip_reason();
    skip_all($why) if $why;
}
use TLSTest qw(serve stop_server server_log run_cmd);

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "52-grpc.t: overall time limit reached\n" };
alarm 180;

my $app = do "$ROOT/examples/grpc/app.pl";
die "examples/grpc/app.pl: " . ($@ || $! || 'did not return a coderef') . "\n" unless ref $app eq 'CODE';

# Runs the client; returns { exit, status, reply, code, details, out, err }.
sub grpc_call {
    my (@args) = @_;
    my ($st, $out, $err) = run_cmd(60, 'python3', $CLIENT, @args);
    my %r = (exit => ($st eq 'timeout' ? 'timeout' : $st >> 8), out => $out, err => $err);
    for my $line (split /\n/, $out) {
        my ($k, $v) = $line =~ /\A(\w+)=(.*)\z/ or next;
        $r{$k} = $v;
    }
    return \%r;
}

sub call_ok {
    my ($name, $port, @extra) = @_;
    my $shown = length $name > 20 ? sprintf('%s... (%d bytes)', substr($name, 0, 3), length $name) : "'$name'";
    my $r = grpc_call($port, $name, @extra);
    is($r->{exit}, 0, "SayHello($shown) succeeds")
        or diag('out: ' . substr($r->{out}, 0, 300) . "\nerr: " . substr($r->{err}, 0, 2000));
    is($r->{status}, 'OK', 'status OK');
    ok(defined $r->{reply} && $r->{reply} eq "Hello, $name", "the reply is 'Hello, ' and the name")
        or diag('reply: ' . substr($r->{reply} // '(none)', 0, 100));
    return $r;
}

sub unknown_ok {
    my ($port, @extra) = @_;
    my $r = grpc_call($port, 'nobody', '--method', '/helloworld.Greeter/SayGoodbye', @extra);
    is($r->{exit}, 3, 'an unknown method is an RPC error') or diag("out: $r->{out}\nerr: $r->{err}");
    is($r->{status}, 'UNIMPLEMENTED', 'status UNIMPLEMENTED');
    is($r->{code}, 12, 'grpc-status 12');
    is($r->{details}, 'unknown method /helloworld.Greeter/SayGoodbye', 'grpc-message from the trailers');
}

subtest 'h2c (HTTP/2 with prior knowledge)' => sub {
    my $srv = serve(app => $app, http2 => 1);
    ok(!$srv->{error}, 'server with http2 => 1 is up') or return diag($srv->{error});

    call_ok('PAGI', $srv->{port});
    call_ok('', $srv->{port});                 # an empty name: a zero-length field
    call_ok('x' x 300, $srv->{port});          # a two-byte varint length
    call_ok('y' x 70_000, $srv->{port});       # larger than one 16 KiB DATA frame and the 64 KiB window
    unknown_ok($srv->{port});

    is(stop_server($srv), 0, 'server stopped cleanly by SIGTERM') or diag(server_log($srv));
    ok(!alive($srv->{pid}), 'server process is gone');
};

subtest 'h2 over TLS (ALPN)' => sub {
    my $dir   = tempdir(CLEANUP => 1);
    my $certs = TestCerts::make($dir, qw(rsa));
    my $srv = serve(app => $app, http2 => 1,
        ssl => { cert_file => $certs->{rsa_cert}, key_file => $certs->{rsa_key} });
    ok(!$srv->{error}, 'TLS server with http2 => 1 is up') or return diag($srv->{error});
    my @tls = ('--ca', $certs->{ca_cert}, '--server-name', 'localhost');

    call_ok('TLS', $srv->{port}, @tls);
    unknown_ok($srv->{port}, @tls);

    is(stop_server($srv), 0, 'server stopped cleanly by SIGTERM') or diag(server_log($srv));
    ok(!alive($srv->{pid}), 'server process is gone');
};

done_testing;
