use strict;
use warnings;

# Public methods of a running server: listen, port, listeners, is_running,
# connection_count, effective_max_connections, shutdown, run, and what is
# left behind (fds, threads) once a server leaves its loop.

use Test2::V0;
use IO::Async::Loop;
use IO::Socket::INET;
use IO::Select;
use Future::AsyncAwait;
use POSIX ();
use Time::HiRes qw(time);

use PAGI::Server;

plan skip_all => 'needs /proc' unless -d "/proc/$$/fd" && -d "/proc/$$/task";

sub entries_of {
    my ($dir) = @_;
    opendir my $d, $dir or die "$dir: $!";
    return sort { $a <=> $b } grep { !/^\./ } readdir $d;
}
sub fd_target  { readlink("/proc/$$/fd/$_[0]") // '?' }
sub fd_count     { scalar(my @e = entries_of("/proc/$$/fd")) }
sub fd_list      { join ' ', map { "$_=" . fd_target($_) } entries_of("/proc/$$/fd") }
# Sockets, eventfds and epoll fds: what a server's core would leave open.
sub io_fd_count  { scalar grep { fd_target($_) =~ /^(?:socket|anon_inode):/ } entries_of("/proc/$$/fd") }
sub thread_count { scalar(my @e = entries_of("/proc/$$/task")) }

# Taken before any server in this file has listened.
my $THREADS_AT_START = thread_count();

my $loop = IO::Async::Loop->new;
# IO::Async keeps one signal pipe per process once a signal is watched; make
# it exist now so it does not count as something a server left behind.
$loop->detach_signal(USR1 => $loop->attach_signal(USR1 => sub { }));

my %in_flight;   # path => 1 while the app is working on it

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return if $scope->{type} ne 'http';
    my $path = $scope->{path};
    $in_flight{$path} = 1;
    await $loop->delay_future(after => 0.3) if $path eq '/slow';
    my $body = "path=$path";
    $body .= ' ext=' . join(',', sort keys %{ $scope->{extensions} || {} }) if $path eq '/ext';
    await $send->({ type => 'http.response.start', status => 200,
                    headers => [ [ 'content-type', 'text/plain' ],
                                 [ 'content-length', length $body ] ] });
    await $send->({ type => 'http.response.body', body => $body });
    delete $in_flight{$path};
};

sub new_server {
    return PAGI::Server->new(app => $app, host => '127.0.0.1', port => 0,
        quiet => 1, access_log => undef, lifespan_mode => 'off', @_);
}

# Runs the loop until $cond is true or $secs pass; returns whether it became true.
sub pump_until {
    my ($secs, $cond) = @_;
    my $deadline = time + $secs;
    until ($cond->()) {
        return 0 if time > $deadline;
        $loop->loop_once(0.02);
    }
    return 1;
}

sub connect_to {
    my ($port) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
        Proto => 'tcp', Timeout => 3) or return;
    $s->autoflush(1);
    $s->blocking(0);
    return $s;
}

sub response_complete {
    my ($buf) = @_;
    my $end = index($buf, "\r\n\r\n");
    return 0 if $end < 0;
    my $head = substr($buf, 0, $end);
    my $body = substr($buf, $end + 4);
    return length($body) >= $1 if $head =~ /^content-length:\s*(\d+)/mi;
    return $body =~ /(?:^|\r\n)0\r\n\r\n\z/ if $head =~ /^transfer-encoding:\s*chunked/mi;
    return 0;
}

# Reads one response from a non-blocking socket while the loop runs.
sub read_response {
    my ($sock, $secs) = @_;
    my ($buf, $eof) = ('', 0);
    pump_until($secs // 5, sub {
        while (1) {
            my $n = sysread($sock, $buf, 65536, length $buf);
            if (defined $n && $n == 0) { $eof = 1; last }
            last unless $n;
        }
        return $eof || response_complete($buf);
    });
    return $buf;
}

sub request {
    my ($port, $path, %o) = @_;
    my $s = connect_to($port) or return '';
    my $conn = $o{keep_alive} ? 'keep-alive' : 'close';
    syswrite($s, "GET $path HTTP/1.1\r\nHost: localhost\r\nConnection: $conn\r\n\r\n");
    my $r = read_response($s, $o{timeout});
    return wantarray ? ($r, $s) : $r;
}

sub wait_future {
    my ($f, $secs) = @_;
    Future->wait_any($f->without_cancel, $loop->delay_future(after => $secs))->get;
    return $f->is_ready;
}

my $IO_FDS_BEFORE = io_fd_count();
note('fds at start: ' . fd_list());

subtest 'listen, port, listeners, is_running' => sub {
    my $server = new_server();
    is($server->port, 0, 'port before listen is the configured port (0)');
    is(new_server(port => 6543)->port, 6543, 'port before listen is the configured port (6543)');
    is($server->socket_path, undef, 'socket_path is undef for TCP');
    is($server->is_running, 0, 'not running before listen');

    $loop->add($server);
    my $f = $server->listen;
    isa_ok($f, ['Future'], 'listen returns');
    ok(wait_future($f, 5), 'listen completes');
    ok($f->is_done, 'listen succeeded') or diag($f->failure);
    my @result = $f->get;
    is(scalar @result, 1, 'listen completes with one value');
    ref_is($result[0], $server, '... the server itself');

    is($server->is_running, 1, 'running after listen');
    my $port = $server->port;
    ok($port && $port > 0, "port is the bound port ($port)");
    is($server->listeners->[0]{type}, 'tcp', 'listener type');
    is($server->listeners->[0]{host}, '127.0.0.1', 'listener host');
    is($server->listeners->[0]{port}, $port, 'listeners->[0]{port} is the bound port');
    is($server->socket_path, undef, 'still no socket_path');

    my $r = request($port, '/hello');
    like($r, qr{^HTTP/1\.1 200 }, 'serves a request');
    like($r, qr{path=/hello\z}, 'with the app\'s body');

    my $again = $server->listen;
    ok(wait_future($again, 2) && $again->is_done, 'a second listen while running succeeds at once');
    is($server->port, $port, '... and keeps the port');

    my $sf = $server->shutdown;
    ok(wait_future($sf, 10), 'shutdown completes');
    is($server->is_running, 0, 'not running after shutdown');
    is($server->port, $port, 'port still reports the last bound port after shutdown');
    $loop->remove($server);
};

subtest 'connection_count' => sub {
    my $server = new_server();
    $loop->add($server);
    $server->listen->get;
    my $port = $server->port;
    is($server->connection_count, 0, 'no connections yet');

    my ($r, $sock) = request($port, '/ka', keep_alive => 1);
    like($r, qr{^HTTP/1\.1 200 }, 'keep-alive request answered');
    ok(pump_until(3, sub { $server->connection_count == 1 }),
        'connection_count is 1 while the keep-alive connection is open')
        or diag('count: ' . $server->connection_count);

    my ($r2, $sock2) = request($port, '/ka2', keep_alive => 1);
    ok(pump_until(3, sub { $server->connection_count == 2 }), 'a second connection makes 2')
        or diag('count: ' . $server->connection_count);

    close $sock;
    ok(pump_until(3, sub { $server->connection_count == 1 }), 'back to 1 after one closes')
        or diag('count: ' . $server->connection_count);
    close $sock2;
    ok(pump_until(3, sub { $server->connection_count == 0 }), 'back to 0 after both close')
        or diag('count: ' . $server->connection_count);

    my $idle = connect_to($port) or die "connect: $!";
    ok(pump_until(3, sub { $server->connection_count == 1 }),
        'a connection that has not sent anything yet is counted too')
        or diag('count: ' . $server->connection_count);
    close $idle;
    ok(pump_until(3, sub { $server->connection_count == 0 }), 'and uncounted when it closes')
        or diag('count: ' . $server->connection_count);

    wait_future($server->shutdown, 10);
    $loop->remove($server);
};

subtest 'effective_max_connections' => sub {
    is(new_server()->effective_max_connections, 1000, 'default is 1000');
    is(new_server(max_connections => 0)->effective_max_connections, 1000, '0 means 1000');
    is(new_server(max_connections => 5)->effective_max_connections, 5, '5 is 5');
};

subtest 'graceful shutdown' => sub {
    my $server = new_server();
    $loop->add($server);
    $server->listen->get;
    my $port = $server->port;

    my $sock = connect_to($port) or die "connect: $!";
    syswrite($sock, "GET /slow HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    ok(pump_until(3, sub { $in_flight{'/slow'} }), 'the slow request reached the app');

    my $t0 = time;
    my $sf = $server->shutdown;
    isa_ok($sf, ['Future'], 'shutdown returns');
    is($server->is_running, 0, 'not running once shutdown has begun');

    # While the slow request drains, the listener must be gone.
    $loop->loop_once(0.05);
    my $late = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 2);
    ok(!$late, 'a new connection during the drain is refused');
    if ($late) {
        # If it was accepted, it must at least not be served.
        $late->blocking(0);
        syswrite($late, "GET /late HTTP/1.1\r\nHost: localhost\r\n\r\n");
        my $lr = read_response($late, 1);
        unlike($lr, qr{^HTTP/1\.1 200 }, '... and is not served');
        close $late;
    }

    my $r = read_response($sock, 5);
    like($r, qr{^HTTP/1\.1 200 }, 'the in-flight request still gets its response');
    like($r, qr{path=/slow\z}, '... with the full body');
    ok(wait_future($sf, 10), 'shutdown completes');
    ok($sf->is_done, 'shutdown succeeded') or diag($sf->failure);
    ok(!$in_flight{'/slow'}, 'the app finished the request');
    my @res = $sf->is_done ? $sf->get : ();
    ref_is($res[0], $server, 'shutdown completes with the server');
    ok(time - $t0 >= 0.2, 'shutdown waited for the slow request');
    close $sock;

    my $refused = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 2);
    ok(!$refused, 'new connections are refused after shutdown');

    my $sf2 = $server->shutdown;
    ok($sf2->is_ready && $sf2->is_done, 'a second shutdown is an immediate no-op');
    $loop->remove($server);
};

subtest 'a server leaves nothing behind' => sub {
    my $fds = fd_count();
    my $server = new_server();
    $loop->add($server);
    $server->listen->get;
    like(request($server->port, '/x'), qr{^HTTP/1\.1 200 }, 'served');
    ok(fd_count() > $fds, 'a listening server holds fds');
    note('threads while serving: ' . thread_count());
    wait_future($server->shutdown, 10);
    $loop->remove($server);
    undef $server;

    ok(pump_until(3, sub { fd_count() == $fds }), 'fd count is back to where it was before new()')
        or diag("before $fds, now " . fd_count() . ': ' . fd_list());
    is(io_fd_count(), $IO_FDS_BEFORE, 'no sockets/eventfds/epoll fds left since the start of the file')
        or diag(fd_list());
    ok(pump_until(3, sub { thread_count() == $THREADS_AT_START }),
        'thread count is back to the count before the first listen')
        or diag('before ' . $THREADS_AT_START . ', now ' . thread_count());
};

subtest 'several servers in one process' => sub {
    my $one = new_server();
    $loop->add($one);
    $one->listen->get;
    like(request($one->port, '/one'), qr{path=/one\z}, 'another server after the earlier ones works');

    my $two = new_server();
    $loop->add($two);
    $two->listen->get;
    isnt($two->port, $one->port, 'two servers, two ports');
    like(request($one->port, '/a'), qr{path=/a\z}, 'first serves while both run');
    like(request($two->port, '/b'), qr{path=/b\z}, 'second serves while both run');

    wait_future($one->shutdown, 10);
    like(request($two->port, '/c'), qr{path=/c\z}, 'second still serves after the first shut down');
    wait_future($two->shutdown, 10);
    $loop->remove($_) for $one, $two;
};

subtest 'extensions => undef behaves like the default' => sub {
    my $server = new_server(extensions => undef);
    $loop->add($server);
    $server->listen->get;
    my $r = eval { request($server->port, '/ext') };
    is($@, '', 'serving the request raised nothing out of the loop');
    like($r // '', qr{^HTTP/1\.1 200 .*path=/ext ext=\z}s, 'request served with empty extensions')
        or diag($r // '');
    wait_future($server->shutdown, 10);
    $loop->remove($server);
};

subtest 'listen before the server is in a loop' => sub {
    my $server = new_server();
    my $f;
    my $ok = eval { $f = $server->listen; $f->get; 1 };
    ok(!$ok, 'listen without a loop fails');
    like($@, qr/loop/i, 'with a message about the loop') or diag($@);
    is($server->is_running, 0, 'and the server is not running');
};

subtest 'run on a busy port' => sub {
    my $holder = IO::Socket::INET->new(LocalAddr => '127.0.0.1', LocalPort => 0,
        Listen => 5, Proto => 'tcp', ReuseAddr => 0) or die "bind: $!";
    my $busy = $holder->sockport;

    pipe(my $rd, my $wr) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        close $rd;
        alarm 10;
        my $s = PAGI::Server->new(app => $app, host => '127.0.0.1', port => $busy,
            quiet => 1, access_log => undef, lifespan_mode => 'off');
        eval { $s->run };
        print {$wr} "DIED:$@";
        close $wr;
        POSIX::_exit(0);
    }
    close $wr;
    my $out = '';
    my $deadline = time + 10;
    my $sel = IO::Select->new($rd);
    while (time < $deadline) {
        next unless $sel->can_read(0.2);
        my $n = sysread($rd, $out, 4096, length $out);
        last unless $n;
    }
    kill KILL => $pid if kill 0, $pid;
    waitpid($pid, 0);
    is($out, "DIED:Error: Port $busy is already in use\n", 'run dies with the port-in-use message');
    close $holder;
};

done_testing;
