use strict;
use warnings;
use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp qw(tempdir);
use IO::Async::Loop;
use IO::Socket::INET;
use IO::Socket::UNIX;
use Future::AsyncAwait;
use Socket qw(SOCK_STREAM);
use RawHTTP;
use PAGI::Server;

# Listening sockets offered through PAGI_REUSE, in one process: adopted by
# address, listed again after listen and taken out at shutdown; what is
# offered but unusable (not open, not a socket, not listening, the wrong
# kind) or unmatched is reported, never served, and a new socket is bound
# where one was needed. (Hot restart and systemd: t/59.)

my $loop = IO::Async::Loop->new;
my $dir  = tempdir(CLEANUP => 1);

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->({ type => 'http.response.start', status => 200, headers => [] });
    await $send->({ type => 'http.response.body', body => "pid $$", more => 0 });
};

my @log;
sub serve {
    my (%opt) = @_;
    @log = ();
    my $server = PAGI::Server->new(app => $app, access_log => undef, lifespan_mode => 'off', log_level => 'warn', %opt);
    no warnings 'redefine';
    local *PAGI::Server::_log = sub { my (undef, $lvl, $msg) = @_; push @log, "$lvl: $msg" };
    $loop->add($server);
    $server->listen->get;
    return $server;
}

sub get {
    my ($where) = @_;
    my $c = $where =~ /\A[0-9]+\z/ ? RawHTTP->new(loop => $loop, port => $where) : RawHTTP->new(loop => $loop, path => $where);
    $c->write("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    return $c->read_response;
}

sub done {
    my ($server) = @_;
    $server->shutdown->get;
    $loop->remove($server);
}

subtest 'an offered TCP socket is adopted, listed, and unlisted at shutdown' => sub {
    my $pre = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 8, ReuseAddr => 1) or die $!;
    my ($port, $fd) = ($pre->sockport, fileno $pre);
    local $ENV{PAGI_REUSE} = "10.9.9.9:1:77,127.0.0.1:$port:$fd";
    my $s = serve(host => '127.0.0.1', port => $port);
    ok($s->listeners->[0]{_inherited}, 'marked inherited');
    is(get($port)->{status}, 200, 'served through the offered socket');
    like(\@log, [qr/pagi_reuse: inherited socket 10\.9\.9\.9:1 \(fd 77\) matches no configured listener; not serving it/],
        'the unmatched entry is reported');
    is($ENV{PAGI_REUSE}, "10.9.9.9:1:77,127.0.0.1:$port:$fd", 'PAGI_REUSE lists it (the same fd), others kept');
    done($s);
    is($ENV{PAGI_REUSE}, '10.9.9.9:1:77', 'its entry is gone after shutdown');
    ok(defined fileno($pre) && getsockname($pre), 'the offered socket was left open for its owner');
};

subtest 'a bound socket is listed with its fd' => sub {
    local $ENV{PAGI_REUSE};
    my $s = serve(host => '127.0.0.1', port => 0);
    my $port = $s->port;
    my ($fd) = ($ENV{PAGI_REUSE} // '') =~ /\A127\.0\.0\.1:$port:([0-9]+)\z/;
    ok($fd, "PAGI_REUSE is 127.0.0.1:$port:FD") or diag $ENV{PAGI_REUSE};
    ok($fd && (stat "/proc/$$/fd/$fd")[0], 'FD is open here');
    done($s);
    ok(!exists $ENV{PAGI_REUSE}, 'and unlisted at shutdown');
    ok(!IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port), 'the socket is closed');
};

subtest 'unusable offers are reported and a new socket is bound' => sub {
    my $probe = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1) or die $!;
    my $port = $probe->sockport;
    close $probe;
    open my $file, '<', $0 or die $!;
    my $conn_l = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0, Listen => 1) or die $!;
    my $conn = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $conn_l->sockport) or die $!;
    my $unix = IO::Socket::UNIX->new(Local => "$dir/kind.sock", Type => SOCK_STREAM, Listen => 1) or die $!;
    my @cases = (
        [ 'not open',              999,            qr/not open/ ],
        [ 'not a socket',          fileno($file),  qr/not a socket/ ],
        [ 'not listening',         fileno($conn),  qr/not a listening socket/ ],
        [ 'a Unix socket for TCP', fileno($unix),  qr/a unix socket/ ],
    );
    for my $c (@cases) {
        my ($what, $fd, $why) = @$c;
        local $ENV{PAGI_REUSE} = "127.0.0.1:$port:$fd";
        my $s = serve(host => '127.0.0.1', port => $port);
        ok(!$s->listeners->[0]{_inherited}, "$what: not adopted");
        like(\@log, [qr/pagi_reuse: fd $fd for 127\.0\.0\.1:$port: $why[^;]*; binding a new socket instead/], "$what: reported");
        is(get($port)->{status}, 200, "$what: served on a new socket");
        done($s);
    }
    ok(defined(sysseek($file, 0, 0)), 'the offered file was left open');
    ok(getpeername($conn), 'and the offered connection');
};

subtest 'an offered Unix socket is adopted and its file kept' => sub {
    my $path = "$dir/kept.sock";
    my $pre = IO::Socket::UNIX->new(Local => $path, Type => SOCK_STREAM, Listen => 8) or die $!;
    local $ENV{PAGI_REUSE} = "unix:$path:" . fileno($pre);
    my $s = serve(socket => $path);
    ok($s->listeners->[0]{_inherited}, 'marked inherited');
    is(get($path)->{status}, 200, 'served');
    done($s);
    ok(-S $path, 'the socket file is still there');
};

done_testing;
