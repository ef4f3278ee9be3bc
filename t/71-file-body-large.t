use strict;
use warnings;

# Large file bodies (`file` and `fh`), byte for byte, over plain TCP (where
# the core hands a regular file to sendfile(2), in pieces of 1 MiB) and
# over TLS (where it reads the file and encrypts it): whole files and
# offset/length ranges that cross the piece boundaries, chunked, with a
# Content-Length, cut short by a Content-Length (the next request on the
# connection must still be answered), HTTP/1.0 ended by the close, and a
# graceful shutdown while a file larger than the socket buffers is sent.
# Servers run in forked children (TLSTest); every wait is bounded.

use Test2::V0;
use Test2::API qw(context);
use FindBin;
use lib "$FindBin::Bin/lib";
use Digest::MD5 qw(md5);
use File::Temp qw(tempdir);
use IO::Socket::INET;
use Future::AsyncAwait;
use Time::HiRes qw(sleep);
use TestCerts;
use TLSTest qw(serve stop_server server_log tls_connect read_until parse_response);

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "71-file-body-large.t: overall time limit reached\n" };
alarm 90;

my $dir = tempdir(CLEANUP => 1);

# 3 MiB and a bit of bytes that do not repeat with a short period.
my $data = '';
{
    my $i = 0;
    $data .= md5('pagi:' . $i++) while length $data < 3 * 1024 * 1024 + 12_345;
}
my $path = "$dir/large.bin";
open my $out, '>:raw', $path or die "$path: $!";
print {$out} $data;
close $out or die "$path: $!";
my $size = length $data;
# Larger than the socket buffers hold: the send waits for the client.
my $big = "$dir/big.bin";
open $out, '>:raw', $big or die "$big: $!";
print {$out} $data for 1 .. 10;
close $out or die "$big: $!";

# /?off=N&len=N&cl=N&fh=1: the file from `off` for `len` bytes (as the
# event's offset/length), with Content-Length `cl` when given; fh=1 sends
# an open handle instead of the path.
my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    my %q = map { split /=/, $_, 2 } grep { length } split /&/, $scope->{query_string} // '';
    await $send->({ type => 'http.response.start', status => 200,
        headers => [ [ 'content-type', 'application/octet-stream' ],
                     (defined $q{cl} ? [ 'content-length', $q{cl} ] : ()) ] });
    my %range = map { defined $q{$_} ? (($_ eq 'off' ? 'offset' : 'length') => $q{$_}) : () } qw(off len);
    my $file = $q{big} ? $big : $path;
    if ($q{fh}) {
        open my $fh, '<:raw', $file or die "$file: $!";
        await $send->({ type => 'http.response.body', fh => $fh, %range });
        close $fh;
    }
    else {
        await $send->({ type => 'http.response.body', file => $file, %range });
    }
};

sub expected {
    my (%q) = @_;
    my $off = $q{off} // 0;
    return '' if $off >= $size;
    my $want = substr($data, $off, $q{len} // $size);
    $want = substr($want, 0, $q{cl}) if defined $q{cl};
    return $want;
}

sub connect_to {
    my ($srv, $tls) = @_;
    return tls_connect($srv->{port}, SSL_verify_mode => 0) if $tls;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->{port},
                                  Proto => 'tcp', Timeout => 5);
    return $s ? $s : (undef, "connect: $!");
}

sub query { my (%q) = @_; return join '&', map { "$_=$q{$_}" } sort keys %q }

# Compares bodies without dumping megabytes into the output.
sub same_bytes {
    my ($got, $want, $name) = @_;
    my $ok = defined $got && $got eq $want;
    my $ctx = context();
    $ctx->ok($ok, $name);
    unless ($ok) {
        $got //= '';
        my $i = 0;
        $i++ while $i < length $got && $i < length $want && substr($got, $i, 1) eq substr($want, $i, 1);
        $ctx->diag(sprintf 'got %d bytes, want %d; first difference at byte %d', length $got, length $want, $i);
    }
    $ctx->release;
    return $ok;
}

# One request on a new connection, read to the close.
sub case {
    my ($srv, $tls, $label, %q) = @_;
    my $proto = delete $q{http10} ? 'HTTP/1.0' : 'HTTP/1.1';
    subtest $label => sub {
        my ($s, $err) = connect_to($srv, $tls);
        ok($s, 'connected') or return diag($err);
        $s->syswrite("GET /?" . query(%q) . " $proto\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        my ($raw, $end) = read_until($s, 20);
        close $s;
        is($end, 'eof', 'read to the close');
        my $r = parse_response($raw);
        is($r && $r->{status}, 200, 'status 200') or return;
        my $chunked = $r->{head} =~ /^transfer-encoding:\s*chunked\s*$/mi ? 1 : 0;
        if (defined $q{cl}) {
            like($r->{head}, qr/^content-length:\s*$q{cl}\s*$/mi, "Content-Length $q{cl}");
            is($chunked, 0, 'not chunked');
        }
        elsif ($proto eq 'HTTP/1.0') {
            is($chunked, 0, 'HTTP/1.0: not chunked, ended by the close');
        }
        else {
            is($chunked, 1, 'chunked');
            like($raw, qr/\r\n0\r\n\r\n\z/, 'ends with the last chunk');
        }
        same_bytes($r->{body}, expected(%q), 'the body, byte for byte');
    };
}

# A Content-Length shorter than the file: exactly that many bytes, and the
# connection still serves the next request.
sub cut_then_next {
    my ($srv, $tls, $label) = @_;
    subtest $label => sub {
        my ($s, $err) = connect_to($srv, $tls);
        ok($s, 'connected') or return diag($err);
        my %first = (cl => 100_000, off => 5);
        my %second = (off => 2_000_000, len => 500_000, cl => 500_000);
        for my $q (\%first, \%second) {
            $s->syswrite("GET /?" . query(%$q) . " HTTP/1.1\r\nHost: localhost\r\n\r\n");
            my ($raw, $end) = read_until($s, 20, sub {
                $_[0] =~ /\r\n\r\n/ && length($_[0]) - $+[0] >= $q->{cl} });
            is($end, 'match', "response to " . query(%$q)) or return diag("ended: $end");
            my $r = parse_response($raw);
            is($r && $r->{status}, 200, 'status 200') or return;
            same_bytes($r->{body}, expected(%$q), 'the body, exactly the Content-Length');
        }
        # Nothing after the second response: its bytes were exact too.
        my ($rest, $end) = read_until($s, 0.3);
        is(length $rest, 0, 'no stray bytes') or diag("read " . length($rest) . " more bytes ($end)");
        close $s;
    };
}

my @transports = ([plain => 0]);
my $skip_tls = TestCerts::skip_reason();
push @transports, [TLS => 1] unless $skip_tls;

for my $t (@transports) {
    my ($name, $tls) = @$t;
    my %ssl;
    if ($tls) {
        my $certs = TestCerts::make($dir, 'rsa');
        %ssl = (ssl => { cert_file => $certs->{rsa_cert}, key_file => $certs->{rsa_key} });
    }
    my $srv = serve(app => $app, %ssl);
    ok(!$srv->{error}, "$name: server is up") or do { diag($srv->{error}); next };

    case($srv, $tls, "$name: whole file, chunked");
    case($srv, $tls, "$name: whole file, Content-Length", cl => $size);
    case($srv, $tls, "$name: offset + length, chunked", off => 70_001, len => 2_100_000);
    case($srv, $tls, "$name: offset + length across pieces, Content-Length",
        off => 1024 * 1024 - 1, len => 1024 * 1024 + 3, cl => 1024 * 1024 + 3);
    case($srv, $tls, "$name: length past the end, chunked", off => $size - 100, len => 1000);
    case($srv, $tls, "$name: offset past the end, chunked", off => $size + 5);
    case($srv, $tls, "$name: fh with offset + length, chunked", fh => 1, off => 123_457, len => 3_000_000);
    case($srv, $tls, "$name: HTTP/1.0, whole file", http10 => 1);
    cut_then_next($srv, $tls, "$name: cut short by Content-Length, then the next request");

    is(stop_server($srv), 0, "$name: server stopped cleanly") or diag(server_log($srv));

    # A graceful shutdown while a file body is under way: the response
    # still goes out whole, then the server exits.
    subtest "$name: graceful shutdown during a file body" => sub {
        my $srv = serve(app => $app, %ssl);
        ok(!$srv->{error}, 'server is up') or return diag($srv->{error});
        my ($s, $err) = connect_to($srv, $tls);
        ok($s, 'connected') or return diag($err);
        $s->syswrite("GET /?big=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        my ($first) = read_until($s, 10, sub { length $_[0] >= 100_000 });
        sleep 0.2;    # the server waits for the client now
        kill TERM => $srv->{pid};
        my ($rest, $end) = read_until($s, 30);
        close $s;
        is($end, 'eof', 'read to the close');
        my $r = parse_response($first . $rest);
        same_bytes($r && $r->{body}, $data x 10, 'the whole body, byte for byte');
        is(stop_server($srv), 0, 'the server exited cleanly') or diag(server_log($srv));
    };
}
note("TLS cases skipped: $skip_tls") if $skip_tls;

done_testing;
