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

my $loop = IO::Async::Loop->new;

my @warnings;
$SIG{__WARN__} = sub { push @warnings, $_[0] };

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    die "deliberate failure\n" if $scope->{path} eq '/fail';
    while (1) {    # drain the request body
        my $ev = await $receive->();
        last unless $ev->{type} eq 'http.request' && $ev->{more};
    }
    my $body = "hello from $scope->{path}";
    my $status = $scope->{path} eq '/missing' ? 404 : 200;
    await $send->({ type => 'http.response.start', status => $status,
                    headers => [['content-type', 'text/plain'], ['content-length', length $body]] });
    await $send->({ type => 'http.response.body', body => $body });
};

my $CLF = qr{^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "([A-Z]+) ([^"]*)" (\d{3}) \d+\.\d{3}s$};

sub lines_of { my ($buf) = @_; return grep { length } split /\n/, $buf // '' }

subtest 'default CLF line, written before the client sees the response' => sub {
    open my $fh, '>', \my $buf or die;
    my $server = start_server($loop, app => $app, access_log => $fh);
    my $port   = $server->port;
    my $http   = Net::Async::HTTP->new(timeout => 10);
    $loop->add($http);

    my $res = $http->do_request(uri => "http://127.0.0.1:$port/path?q=1")->get;
    my $snapshot = $buf // '';    # taken the moment ->get returned
    is($res->code, 200, 'status');
    my @lines = lines_of($snapshot);
    is(scalar @lines, 1, 'one line already in the buffer when the response was complete')
        or diag("buffer: '$snapshot'");
    like($lines[0] // '', qr{^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /path\?q=1" 200 \d+\.\d{3}s$},
        'exact CLF shape');
    like($snapshot, qr/\n\z/, 'line ends with a newline');

    # Timestamp is the current UTC time.
    if (my ($d, $mon, $y, $H, $M, $S) = ($lines[0] // '') =~ m{\[(\d\d)/(\w{3})/(\d{4}):(\d\d):(\d\d):(\d\d)}) {
        require Time::Local;
        my %m; @m{qw(Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec)} = 0 .. 11;
        my $t = Time::Local::timegm($S, $M, $H, $d, $m{$mon}, $y);
        ok(abs($t - time) < 60, 'timestamp is now, in UTC');
    }

    # No query -> no '?'; the raw (undecoded) path is logged; other methods and statuses.
    $http->do_request(uri => "http://127.0.0.1:$port/plain")->get;
    $http->do_request(uri => "http://127.0.0.1:$port/caf%C3%A9/x%20y")->get;
    $http->do_request(method => 'POST', uri => "http://127.0.0.1:$port/submit?a=1&b=2",
                      content => 'x' x 100, content_type => 'text/plain')->get;
    $http->do_request(uri => "http://127.0.0.1:$port/missing")->get;
    my $snap2 = $buf;
    @lines = lines_of($snap2);
    is(scalar @lines, 5, 'one line per request');
    my @parsed = map { [ $_ =~ $CLF ] } @lines;
    is(\@parsed, [
        [ 'GET',  '/path?q=1',        200 ],
        [ 'GET',  '/plain',           200 ],
        [ 'GET',  '/caf%C3%A9/x%20y', 200 ],
        [ 'POST', '/submit?a=1&b=2',  200 ],
        [ 'GET',  '/missing',         404 ],
    ], 'method, raw path/query and status of each line');

    $loop->remove($http);
    $server->shutdown->get;
    $loop->remove($server);
};

subtest '500s are logged with status 500' => sub {
    open my $fh, '>', \my $buf or die;
    my $server = start_server($loop, app => $app, access_log => $fh);
    @warnings = ();
    my $r = RawHTTP->request($loop, $server->port, "GET /fail?x=y HTTP/1.1\r\nHost: x\r\n\r\n");
    is($r && $r->{status}, 500, 'client got a 500');
    my @lines = lines_of($buf);
    is(scalar @lines, 1, 'logged once, by the time the response arrived') or diag("buffer: '" . ($buf // '') . "'");
    my ($m, $p, $s) = ($lines[0] // '') =~ $CLF;
    is([ $m, $p, $s ], [ 'GET', '/fail?x=y', 500 ], 'line records the 500');
    $server->shutdown->get;
    $loop->remove($server);
};

subtest 'access_log => undef writes nothing' => sub {
    # Anything the server printed would land on STDERR (the default handle).
    my ($tmp, $tmpname) = tempfile(UNLINK => 1);
    open my $saved, '>&', \*STDERR or die "dup STDERR: $!";
    open STDERR, '>&', $tmp or die "redirect STDERR: $!";
    my $server = start_server($loop, app => $app, access_log => undef);
    my $r1 = RawHTTP->request($loop, $server->port, "GET /quiet?z=9 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    my $r2 = RawHTTP->request($loop, $server->port, "GET /fail HTTP/1.1\r\nHost: x\r\n\r\n");
    pump_until($loop, 0.3, sub { 0 });
    $server->shutdown->get;
    $loop->remove($server);
    open STDERR, '>&', $saved or die "restore STDERR: $!";
    is($r1 && $r1->{status}, 200, 'request served');
    is($r2 && $r2->{status}, 500, 'failing request served');
    open my $in, '<', $tmpname or die;
    my $err = do { local $/; <$in> } // '';
    unlike($err, qr/"GET \/quiet/, 'no access-log line on STDERR');
    unlike($err, qr/"GET \/fail/, 'no access-log line for the 500 either');
    is([ grep { /"GET / } @warnings ], [], 'nothing through warn either');
};

subtest 'default handle is STDERR' => sub {
    my ($tmp, $tmpname) = tempfile(UNLINK => 1);
    open my $saved, '>&', \*STDERR or die "dup STDERR: $!";
    open STDERR, '>&', $tmp or die "redirect STDERR: $!";
    my $server = PAGI::Server->new(app => $app, host => '127.0.0.1', port => 0, quiet => 1, lifespan_mode => 'off');
    $loop->add($server);
    $server->listen->get;
    my $r = RawHTTP->request($loop, $server->port, "GET /stderr HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    $server->shutdown->get;
    $loop->remove($server);
    STDERR->flush;
    open STDERR, '>&', $saved or die "restore STDERR: $!";
    is($r && $r->{status}, 200, 'served');
    open my $in, '<', $tmpname or die;
    my @lines = grep { /"GET \/stderr"/ } <$in>;
    is(scalar @lines, 1, 'one line on STDERR');
};

done_testing;
