use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use Errno qw(EAGAIN EWOULDBLOCK);
use IO::Select;
use IO::Socket::INET;
use Time::HiRes qw(sleep time);
use ProcTest qw(spawn stop_cmd slurp wait_until write_file alive);

# What an idle keep-alive connection costs the server, and whether memory
# comes back after a burst of large requests. The server runs in a process
# of its own, and its resident set (VmRSS) is read from /proc:
#   - connections that were answered once and stay open hold no buffers
#     and little task state: a few hundred of them must add under
#     IDLE_MAX KiB each (a build that keeps its buffers costs about 20);
#   - after a burst of 1 MiB echoes (held by the app until all have come)
#     the server must be back near its size
#     before the burst within a few seconds of quiet (glibc keeps freed
#     memory in its heaps unless asked to give it back).
# Both count anonymous memory only (RssAnon): pages of code the server runs
# for the first time are not what is measured.
# (bench/idle-memory.pl measures the same with 10,000 connections.)

plan skip_all => 'needs /proc' unless -r "/proc/$$/status";

use constant {
    IDLE     => 400,    # idle connections measured
    IDLE_MAX => 8,      # KiB each, at most (about 2.5 here)
    BURST    => 16,     # connections in the burst
    BODY     => 1 << 20,
};

my $app = write_file('idle-app.pl', <<'APP');
use strict;
use warnings;
use IO::Async::Loop;
use Future::AsyncAwait;
use PAGI::Server;

# Echoes the request body. The bodies of /burst are all held until the
# 16th (the test's BURST) has arrived, so that the burst is in the server
# at once however quickly it serves.
my ($held, $all) = (0);
my $app = async sub {
    my ($scope, $receive, $send) = @_;
    die "no lifespan\n" if $scope->{type} ne 'http';
    my $body = '';
    while (1) {
        my $event = await $receive->();
        last if $event->{type} ne 'http.request';
        $body .= $event->{body} // '';
        last unless $event->{more};
    }
    if ($scope->{path} eq '/burst') {
        $all //= IO::Async::Loop->new->new_future;
        $all->done if ++$held == 16;
        await $all;
    }
    await $send->({ type => 'http.response.start', status => 200,
                    headers => [['content-length', length $body]] });
    await $send->({ type => 'http.response.body', body => $body, more => 0 });
};
my $loop   = IO::Async::Loop->new;
my $server = PAGI::Server->new(app => $app, host => '127.0.0.1', port => 0, quiet => 1,
                               access_log => undef, max_connections => 2000);
$loop->add($server);
$server->listen->get;
$| = 1;
print $server->port, "\n";
$loop->run;
APP

my $srv = spawn(name => 'idle-server', argv => [$app]);
my $port;
wait_until(15, sub { ($port) = slurp($srv->{out}) =~ /^([0-9]+)$/m; defined $port });
ok($port, 'server started') or do { diag(slurp($srv->{err})); done_testing; exit };
my $pid = $srv->{pid};

# The server's resident anonymous memory (RssAnon: its heaps and stacks,
# not the pages of code it runs for the first time), or all of its resident
# set where the kernel does not tell them apart.
sub rss_kib {
    open my $fh, '<', "/proc/$pid/status" or return undef;
    my %kib;
    while (my $line = <$fh>) { $kib{$1} = $2 if $line =~ /^(RssAnon|VmRSS):\s+(\d+)\s+kB/ }
    return $kib{RssAnon} // $kib{VmRSS};
}

# Connects and sends one request; the socket is blocking, with bounded
# reads in read_answer.
sub request {
    my ($req) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 5)
        or return undef;
    my $off = 0;
    while ($off < length $req) {
        my $n = syswrite $s, $req, 1 << 20, $off;
        return undef unless $n;
        $off += $n;
    }
    return $s;
}

# Reads one Content-Length framed answer within $secs; returns its status
# and body length, or () when it did not come.
sub read_answer {
    my ($s, $secs) = @_;
    my ($buf, $end, $sel) = ('', time + $secs, IO::Select->new($s));
    while ((my $left = $end - time) > 0) {
        if ((my $h = index $buf, "\r\n\r\n") >= 0) {
            my ($status) = $buf =~ m{^HTTP/1\.1 (\d+)};
            my ($len) = substr($buf, 0, $h) =~ /^content-length:\s*(\d+)/mi;
            return ($status, $len) if defined $len && length($buf) >= $h + 4 + $len;
        }
        $sel->can_read($left) or last;
        sysread($s, $buf, 1 << 20, length $buf) or last;
    }
    return ();
}

my $get = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";

# Opens $n connections, each answered once and left open.
sub idle_conns {
    my ($n) = @_;
    my @open;
    for (1 .. $n) {
        my $s = request($get) or last;
        my ($status) = read_answer($s, 5);
        last unless ($status // 0) == 200;
        push @open, $s;
    }
    return @open;
}

# Warm-up: the first connections grow the allocator's heaps and the
# runtime's tables in steps that are not per connection. (Only a few: what
# they free is reused by the connections measured.)
my @warm = idle_conns(20);
is(scalar @warm, 20, 'warm-up connections answered');
close $_ for @warm;
@warm = ();
sleep 1;

my $base = rss_kib();
my @idle = idle_conns(IDLE);
is(scalar @idle, IDLE, IDLE . ' idle connections answered');
sleep 0.5;
my $with = rss_kib();
my $each = ($with - $base) / IDLE;
ok($each < IDLE_MAX, sprintf('an idle connection costs under %d KiB', IDLE_MAX))
    or diag(sprintf 'RSS %d KiB before, %d KiB with %d idle connections: %.2f KiB each',
            $base, $with, IDLE, $each);
note(sprintf 'idle connection: %.2f KiB (RSS %d -> %d KiB)', $each, $base, $with);

subtest 'memory comes back after a burst' => sub {
    my $post = "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: " . BODY . "\r\n\r\n" . ('x' x BODY);
    # One first, so that the burst is measured against a server that has
    # done it before.
    my $one = request($post);
    (my $burst_post = $post) =~ s{^POST / }{POST /burst };
    is((read_answer($one, 10))[1], BODY, 'a first POST answered');
    close $one;
    sleep 0.5;
    $with = rss_kib();
    # All the bodies go in before any answer is read, so they are in the
    # server at once.
    my @big = map { request($burst_post) } 1 .. BURST;
    # The app holds every body until the last has come.
    my $burst = 0;
    wait_until(5, sub { $burst = rss_kib() // 0; $burst - $with > 8 * 1024 });
    my $ok = grep {
        my ($status, $len) = defined $_ ? read_answer($_, 10) : ();
        ($status // 0) == 200 && ($len // 0) == BODY;
    } @big;
    is($ok, BURST, 'burst answered');
    # The burst must have grown the server, or nothing is tested.
    ok($burst - $with > 8 * 1024, 'the burst grew the server by more than 8 MiB')
        or diag("RSS $with KiB before the burst, at most $burst KiB during it");
    my $back;
    wait_until(6, sub { $back = rss_kib(); $back < $with + 4 * 1024 });
    ok($back < $with + 4 * 1024, 'within 6 s of quiet, back to within 4 MiB of the size before')
        or diag("RSS $with KiB before the burst, at most $burst KiB during it, $back KiB later");
    note("RSS before the burst $with KiB, at most $burst KiB during it, then $back KiB");
    close $_ for grep { defined } @big;
};

my $gone = grep {
    my $r = sysread $_, my $b, 1;
    defined $r || ($! != EAGAIN && $! != EWOULDBLOCK);
} map { $_->blocking(0); $_ } @idle;
is($gone, 0, 'the idle connections are still open');
close $_ for @idle;

ok(alive($pid), 'server still running');
stop_cmd($srv, 10);
ok(!alive($pid), 'server stopped');

done_testing;
