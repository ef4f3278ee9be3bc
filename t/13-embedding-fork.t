use strict;
use warnings;

# Embedding: the server shares its IO::Async loop with ordinary clients, and
# a server object built before fork() serves from the child.

use Test2::V0;
use IO::Async::Loop;
use IO::Async::Timer::Periodic;
use IO::Socket::INET;
use IO::Select;
use Future::AsyncAwait;
use POSIX ();
use Time::HiRes qw(time);

use PAGI::Server;

my $have_nah = eval { require Net::Async::HTTP; require HTTP::Request; 1 };

my $in_flight = 0;
my $max_in_flight = 0;

# Echoes the path and query; the client says how long to think (?ms=N).
sub make_app {
    my ($loop) = @_;
    return async sub {
        my ($scope, $receive, $send) = @_;
        return if $scope->{type} ne 'http';
        $in_flight++;
        $max_in_flight = $in_flight if $in_flight > $max_in_flight;
        my ($ms) = ($scope->{query_string} // '') =~ /ms=(\d+)/;
        my $body = '';
        while (1) {
            my $ev = await $receive->();
            $body .= $ev->{body} // '';
            last unless $ev->{more};
        }
        await $loop->delay_future(after => $ms / 1000) if $ms && $loop;
        my $out = "pid=$$ $scope->{method} $scope->{path}?$scope->{query_string} body=$body";
        $in_flight--;
        await $send->({ type => 'http.response.start', status => 200,
                        headers => [ [ 'content-type', 'text/plain' ],
                                     [ 'content-length', length $out ] ] });
        await $send->({ type => 'http.response.body', body => $out });
    };
}

# Blocking GET with a deadline, for use outside any loop (e.g. against a
# forked child). Returns the raw response ('' on failure).
sub blocking_get {
    my ($port, $path, $secs) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port,
        Proto => 'tcp', Timeout => $secs) or return '';
    print {$s} "GET $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    my $sel = IO::Select->new($s);
    my $deadline = time + $secs;
    my $buf = '';
    while (time < $deadline) {
        next unless $sel->can_read(0.1);
        my $n = sysread($s, $buf, 65536, length $buf);
        last unless $n;
    }
    return $buf;
}

# Reaps $pid, waiting at most $secs; returns $? or undef if it did not exit.
sub reap {
    my ($pid, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        my $r = waitpid($pid, POSIX::WNOHANG());
        return $? if $r == $pid;
        return undef if $r < 0;
        Time::HiRes::sleep(0.05);
    }
    return undef;
}

subtest 'server and Net::Async::HTTP clients on one loop' => sub {
    skip_all 'Net::Async::HTTP not installed' unless $have_nah;
    my $loop = IO::Async::Loop->new;
    my $server = PAGI::Server->new(app => make_app($loop), host => '127.0.0.1', port => 0,
        quiet => 1, access_log => undef);
    $loop->add($server);
    $server->listen->get;
    my $port = $server->port;

    my $http = Net::Async::HTTP->new(max_connections_per_host => 0, timeout => 10);
    $loop->add($http);

    my $ticks = 0;
    my $timer = IO::Async::Timer::Periodic->new(interval => 0.02, on_tick => sub { $ticks++ });
    $loop->add($timer->start);

    ($in_flight, $max_in_flight) = (0, 0);
    my @f = map {
        my $i = $_;
        $http->GET("http://127.0.0.1:$port/item/$i?ms=" . (200 - 20 * $i))
            ->then(sub { Future->done([ $i, $_[0]->code, $_[0]->content ]) })
    } 1 .. 8;
    push @f, $http->do_request(
        request => do {
            my $r = HTTP::Request->new(POST => "http://127.0.0.1:$port/post?ms=50");
            $r->content('hello body');
            $r->header('Content-Length' => 10);
            $r;
        },
    )->then(sub { Future->done([ 'post', $_[0]->code, $_[0]->content ]) });

    my $all = Future->needs_all(@f);
    Future->wait_any($all->without_cancel, $loop->delay_future(after => 10))->get;
    ok($all->is_ready, 'all requests finished within 10 s');
    ok($all->is_done, 'none failed') or diag($all->failure);
    if ($all->is_done) {
        my @res = $all->get;
        for my $r (@res) {
            my ($i, $code, $content) = @$r;
            is($code, 200, "request $i: 200");
            if ($i eq 'post') {
                is($content, "pid=$$ POST /post?ms=50 body=hello body", 'POST body reached the app');
            }
            else {
                my $ms = 200 - 20 * $i;
                is($content, "pid=$$ GET /item/$i?ms=$ms body=", "request $i: body");
            }
        }
    }
    ok($max_in_flight > 1, "requests were handled concurrently (max in flight: $max_in_flight)");
    ok($ticks >= 3, "a timer on the same loop kept ticking ($ticks ticks)");

    $loop->remove($timer);
    $loop->remove($http);
    my $sf = $server->shutdown;
    Future->wait_any($sf->without_cancel, $loop->delay_future(after => 10))->get;
    ok($sf->is_done, 'server shut down');
    $loop->remove($server);
};

# Forks a child that adds $server to a new loop, listens on port 0 and
# serves until killed. Returns ($pid, $port-or-error-text).
sub serve_in_child {
    my ($server) = @_;
    pipe(my $rd, my $wr) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        close $rd;
        alarm 30;    # never outlive the test
        my $ok = eval {
            # A loop of its own: IO::Async::Loop->new would hand back the
            # parent's (inherited) loop object.
            my $loop = IO::Async::Loop->really_new;
            $loop->add($server);
            $server->listen->get;
            syswrite($wr, 'PORT ' . $server->port . "\n");
            close $wr;
            $loop->run;
            1;
        };
        syswrite($wr, "ERR $@\n") unless $ok;
        POSIX::_exit($ok ? 0 : 3);
    }
    close $wr;
    my $line = '';
    my $sel = IO::Select->new($rd);
    my $deadline = time + 10;
    while (time < $deadline && $line !~ /\n/) {
        next unless $sel->can_read(0.1);
        my $n = sysread($rd, $line, 1024, length $line);
        last unless $n;
    }
    close $rd;
    return ($pid, $line =~ /^PORT (\d+)$/m ? $1 : ($line || 'no answer from the child'));
}

sub check_child_serves {
    my ($server, $label) = @_;
    my ($pid, $port) = serve_in_child($server);
    ok($port =~ /^\d+$/ && $port > 0, "$label: child listens on port $port") or diag($port);
    if ($port =~ /^\d+$/) {
        my $r = blocking_get($port, '/from-parent?x=1', 5);
        like($r, qr{^HTTP/1\.1 200 }, "$label: the parent gets a 200 from the child");
        like($r, qr{pid=$pid GET /from-parent\?x=1 }, "$label: answered by the child process");
    }
    ok(kill(TERM => $pid), "$label: TERM sent to the child");
    my $status = reap($pid, 5);
    if (!defined $status) {
        kill KILL => $pid;
        $status = reap($pid, 5);
        fail("$label: child did not exit within 5 s of TERM");
    }
    else {
        is($status, 0, "$label: child shut down cleanly on TERM (exit 0)");
    }
    return $port;
}

subtest 'server built in the parent, serving in a forked child' => sub {
    my $server = PAGI::Server->new(app => make_app(undef), host => '127.0.0.1', port => 0,
        quiet => 1, access_log => undef, lifespan_mode => 'off');
    my $port = check_child_serves($server, 'fresh parent');
    is($server->is_running, 0, 'the parent\'s copy of the server never started');
    ok(!IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 2),
        'the child\'s port is closed after it exited') if $port =~ /^\d+$/;
};

subtest 'fork while the parent is serving' => sub {
    my $loop = IO::Async::Loop->new;
    my $parent_server = PAGI::Server->new(app => make_app(undef), host => '127.0.0.1', port => 0,
        quiet => 1, access_log => undef, lifespan_mode => 'off');
    $loop->add($parent_server);
    $parent_server->listen->get;

    my $for_child = PAGI::Server->new(app => make_app(undef), host => '127.0.0.1', port => 0,
        quiet => 1, access_log => undef, lifespan_mode => 'off');
    check_child_serves($for_child, 'busy parent');

    # The parent's own server must be unaffected by the child's life and death.
    my $got = '';
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        alarm 10;
        my $r = blocking_get($parent_server->port, '/parent', 5);
        POSIX::_exit($r =~ m{^HTTP/1\.1 200 .*pid=\d+ GET /parent}s ? 0 : 1);
    }
    my $status;
    my $deadline = time + 10;
    while (time < $deadline) {
        $loop->loop_once(0.05);
        my $r = waitpid($pid, POSIX::WNOHANG());
        if ($r == $pid) { $status = $?; last }
    }
    if (!defined $status) { kill KILL => $pid; waitpid($pid, 0) }
    is($status, 0, 'the parent\'s server still serves after the child came and went');

    my $sf = $parent_server->shutdown;
    Future->wait_any($sf->without_cancel, $loop->delay_future(after => 10))->get;
    ok($sf->is_done, 'parent server shut down');
    $loop->remove($parent_server);
};

done_testing;
