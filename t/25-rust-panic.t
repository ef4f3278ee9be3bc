use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Net::Async::HTTP;
use Future::AsyncAwait;
use File::Temp qw(tempfile);
use RawHTTP qw(start_server pump_until);

# A panic inside the Rust connection handler must cost only that connection.

my $loop = IO::Async::Loop->new;

my @warnings;
$SIG{__WARN__} = sub { push @warnings, $_[0] };

my @paths;
my $app = async sub {
    my ($scope, $receive, $send) = @_;
    push @paths, $scope->{path};
    await $send->({ type => 'http.response.start', status => 200,
                    headers => [['content-type', 'text/plain'], ['content-length', 2]] });
    await $send->({ type => 'http.response.body', body => 'ok' });
};

my $server = start_server($loop, app => $app, _test_panic_path => '/boom');
my $port   = $server->port;

subtest 'the option is accepted and normal requests work' => sub {
    my $r = RawHTTP->request($loop, $port, "GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    is($r && $r->{status}, 200, 'status 200 before any panic');
};

my $panic_re = qr/panic/i;

# Runs $code with fd 2 sent to a file; returns what was written there
# directly (our $SIG{__WARN__} keeps Perl warnings out of it).
sub stderr_of {
    my ($code) = @_;
    my ($tmp, $tmpname) = tempfile(UNLINK => 1);
    open my $saved, '>&', \*STDERR or die "dup STDERR: $!";
    open STDERR, '>&', $tmp or die "redirect STDERR: $!";
    my $ok = eval { $code->(); 1 };
    my $err = $@;
    open STDERR, '>&', $saved or die "restore STDERR: $!";
    die $err unless $ok;
    open my $in, '<', $tmpname or die;
    local $/;
    return scalar(<$in>) // '';
}

subtest 'panic closes only that connection' => sub {
    @warnings = ();
    @paths    = ();
    my ($c, $how);
    my $raw = stderr_of(sub {
        $c = RawHTTP->new(loop => $loop, port => $port);
        $c->write("GET /boom HTTP/1.1\r\nHost: x\r\n\r\n");
        $how = $c->wait_close(5);
        pump_until($loop, 0.3, sub { 0 });
    });
    note(length $raw
        ? 'bytes written directly to stderr (not through warn): ' . length($raw)
          . ', first line: ' . ((grep { length } split /\n/, $raw)[0])
        : 'nothing written directly to stderr');
    like($how, qr/^(eof|reset)$/, 'client sees EOF or reset') or diag($how);
    is($c->{buf}, '', 'no response bytes at all');
    is(\@paths, [], 'the app never saw the request');
    ok(pump_until($loop, 2, sub { grep { /$panic_re/ } @warnings }), 'a warning mentions the panic')
        or diag("warnings: @warnings");
    note("warning: $_") for @warnings;
    like((grep { /$panic_re/ } @warnings)[0] // '', qr{/boom}, 'the warning carries the panic message');
};

subtest 'panic on a kept-alive connection after a good request' => sub {
    @warnings = ();
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("GET /ok HTTP/1.1\r\nHost: x\r\n\r\n");
    my $r = $c->read_response;
    is($r && $r->{status}, 200, 'first request fine');
    my $how;
    stderr_of(sub {
        $c->write("GET /boom HTTP/1.1\r\nHost: x\r\n\r\n");
        $how = $c->wait_close(5);
        pump_until($loop, 0.3, sub { 0 });
    });
    like($how, qr/^(eof|reset)$/, 'then closed by the panic');
    is($c->{buf}, '', 'no second response');
    ok(pump_until($loop, 2, sub { grep { /$panic_re/ } @warnings }), 'warned again');
};

subtest 'server keeps serving on new connections' => sub {
    for my $i (1 .. 3) {
        my $r = RawHTTP->request($loop, $port, "GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        is($r && $r->{status}, 200, "request $i after the panic: 200");
        is($r && $r->{body}, 'ok', "request $i body");
    }
    my $http = Net::Async::HTTP->new(timeout => 10);
    $loop->add($http);
    my $res = $http->do_request(uri => "http://127.0.0.1:$port/ok")->get;
    is($res->code, 200, 'Net::Async::HTTP request after the panic');
    $loop->remove($http);
    ok($server->is_running, 'server still running');
    ok(pump_until($loop, 2, sub { $server->connection_count <= 1 }), 'panicked connections were released')
        or diag('connection_count: ' . $server->connection_count);
};

subtest 'shutdown still works' => sub {
    my $f = $server->shutdown;
    ok(pump_until($loop, 5, sub { $f->is_ready }), 'shutdown completed');
    ok($f->is_done, 'shutdown succeeded');
    $loop->remove($server);
};

done_testing;
