use strict;
use warnings;
use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp qw(tempdir);
use IO::Async::Loop;
use Future::AsyncAwait;
use RawHTTP qw(pump_until);
use PAGI::Server;

# Unix-domain listeners: permissions, scope shape, stale files, cleanup.

my $loop = IO::Async::Loop->new;
my $dir  = tempdir(CLEANUP => 1);

my $seen;
my $app = async sub {
    my ($scope, $receive, $send) = @_;
    $seen = $scope;
    await $send->({ type => 'http.response.start', status => 200,
                    headers => [['content-type', 'text/plain']] });
    await $send->({ type => 'http.response.body', body => 'unix ok', more => 0 });
};

sub serve_on {
    my (%opt) = @_;
    my $server = PAGI::Server->new(app => $app, quiet => 1, access_log => undef,
        lifespan_mode => 'off', %opt);
    $loop->add($server);
    $server->listen->get;
    return $server;
}

sub get_over {
    my ($path) = @_;
    my $c = RawHTTP->new(loop => $loop, path => $path);
    $c->write("GET /u?x=1 HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    return $c->read_response;
}

subtest 'serves over a Unix socket with the requested mode' => sub {
    my $path   = "$dir/a.sock";
    my $server = serve_on(socket => $path, socket_mode => 0660);
    ok(-S $path, 'socket file created');
    is(sprintf('%04o', (stat $path)[2] & 07777), '0660', 'socket_mode applied');
    is($server->socket_path, $path, 'socket_path reports it');
    is($server->port, undef, 'no TCP port');

    my $r = get_over($path);
    ok($r, 'got a response') or return;
    is($r->{status}, 200, 'status 200');
    is($r->{body}, 'unix ok', 'body');
    ok(!exists $seen->{client}, 'scope has no client for a Unix socket');
    is($seen->{server}, [$path, undef], 'scope server is [path, undef]');
    is($seen->{query_string}, 'x=1', 'query string');

    $server->shutdown->get;
    ok(!-e $path, 'socket file removed on shutdown');
    $loop->remove($server);
};

subtest 'a stale file at the path is replaced' => sub {
    my $path = "$dir/stale.sock";
    open my $fh, '>', $path or die $!;
    print {$fh} "left over\n";
    close $fh;
    my $server = serve_on(socket => $path);
    ok(-S $path, 'a socket replaced the stale file');
    my $r = get_over($path);
    is($r && $r->{status}, 200, 'served');
    $server->shutdown->get;
    $loop->remove($server);
};

subtest 'TCP and Unix listeners at once' => sub {
    my $path   = "$dir/multi.sock";
    my $server = serve_on(listen => [{ host => '127.0.0.1', port => 0 }, { socket => $path }]);
    my $port   = $server->port;
    ok($port > 0, 'TCP port bound');
    is($server->listeners->[0]{port}, $port, 'listeners report the bound port');
    my $tcp = RawHTTP->request($loop, $port,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    is($tcp && $tcp->{status}, 200, 'TCP listener serves');
    is($seen->{client}[0], '127.0.0.1', 'TCP scope has the client address');
    my $unix = get_over($path);
    is($unix && $unix->{status}, 200, 'Unix listener serves');
    $server->shutdown->get;
    ok(!-e $path, 'socket file removed on shutdown');
    $loop->remove($server);
};

subtest 'an unusable socket path makes listen fail clearly' => sub {
    my $server = PAGI::Server->new(app => $app, quiet => 1, access_log => undef,
        lifespan_mode => 'off', socket => "$dir/no/such/dir/s.sock");
    $loop->add($server);
    like(dies { $server->listen->get }, qr{Cannot listen on .*no/such/dir}, 'error names the path');
    ok(!$server->is_running, 'not running');
    $loop->remove($server);
};

done_testing;
