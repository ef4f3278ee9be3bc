use strict;
use warnings;

# Large http.response.body strings are not copied on the Perl thread: the
# core writes them from the app's own buffer, shared copy-on-write. What
# the app does with its variables after $send returned must never reach the
# wire: here it rewrites, appends to and frees the strings it sent while
# the bytes still wait in the server for a client that has not read yet
# (the high watermark is out of the way, so every $send returns at once).
# Servers run in forked children (TLSTest); every wait is bounded.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Socket::INET;
use Future::AsyncAwait;
use File::Temp qw(tempdir);
use Time::HiRes qw(sleep time);
use TLSTest qw(serve stop_server server_log read_until parse_response);

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "72-body-in-place.t: overall time limit reached\n" };
alarm 60;

my $N = 4 * 1024 * 1024;    # more than the socket buffers hold
my $dir = tempdir(CLEANUP => 1);

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    await $send->({ type => 'http.response.start', status => 200,
        headers => [ [ 'content-type', 'application/octet-stream' ] ] });
    my $buf = 'a' x $N;
    await $send->({ type => 'http.response.body', body => $buf, more => 1 });
    # In place: the same buffer, rewritten.
    substr($buf, 0, $N, 'b' x $N);
    $buf =~ tr/b/c/;
    await $send->({ type => 'http.response.body', body => $buf, more => 1 });
    # The event hash itself, changed after the send.
    my $ev = { type => 'http.response.body', body => 'd' x $N, more => 1 };
    await $send->($ev);
    $ev->{body} =~ tr/d/e/;
    substr($ev->{body}, 0, 1, 'X');
    # A string that goes out of scope at once.
    await $send->({ type => 'http.response.body', body => 'f' x $N, more => 1 });
    $buf .= 'g' x 100;
    await $send->({ type => 'http.response.body', body => "end\n" });
};

my $srv = serve(app => $app, write_high_watermark => 100 * $N, write_low_watermark => 0);
ok(!$srv->{error}, 'server is up') or do { diag($srv->{error}); done_testing; exit };

my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->{port}, Proto => 'tcp', Timeout => 5);
ok($s, 'connected') or diag("connect: $!");
if ($s) {
    $s->syswrite("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    # The app runs to its end while nothing is read.
    sleep 1;
    my ($raw, $end) = read_until($s, 20);
    close $s;
    is($end, 'eof', 'read to the close');
    my $r = parse_response($raw);
    is($r && $r->{status}, 200, 'status 200');
    my $body = $r ? $r->{body} : '';
    is(length $body, 4 * $N + 4, 'the whole body');
    my @want = ('a', 'c', 'd', 'f');
    for my $i (0 .. 3) {
        my $part = substr($body, $i * $N, $N);
        my $bad = $part =~ /([^$want[$i]])/ ? $-[1] : undef;
        ok(!defined $bad, "part $i is all '$want[$i]', as it was when sent")
            or diag(sprintf 'byte %d is %s', $bad, substr($part, $bad, 1));
    }
    is(substr($body, 4 * $N), "end\n", 'then the last piece');
}
is(stop_server($srv), 0, 'server stopped cleanly') or diag(server_log($srv));

# The core gives the scalars it held back to the Perl thread, which frees
# them at its next call into the core; a server that goes idle after a
# response must not keep them until some later request. The app keeps its
# string and, a moment after the response, looks at how many copies still
# share its buffer (Devel::Peek's COW_REFCNT: 0 when none does), with
# nothing else for the server to do meanwhile.
my $report = "$dir/cow.txt";
my $big = 'k' x $N;
my $keeper = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    await $send->({ type => 'http.response.start', status => 200, headers => [] });
    await $send->({ type => 'http.response.body', body => $big, more => 1 });
    await $send->({ type => 'http.response.body', body => $big });
    require IO::Async::Loop;
    IO::Async::Loop->new->delay_future(after => 0.5)->on_done(sub {
        require Devel::Peek;
        open my $save, '>&', \*STDERR or die "dup: $!";
        open STDERR, '>', "$report.tmp" or die "$report.tmp: $!";
        Devel::Peek::Dump($big);
        open STDERR, '>&', $save or die "restore: $!";
        rename "$report.tmp", $report or die "rename: $!";
    })->retain;
};
$srv = serve(app => $keeper);
ok(!$srv->{error}, 'second server is up') or do { diag($srv->{error}); done_testing; exit };
$s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->{port}, Proto => 'tcp', Timeout => 5);
ok($s, 'connected') or diag("connect: $!");
if ($s) {
    $s->syswrite("GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    my ($raw, $end) = read_until($s, 20);
    close $s;
    my $r = parse_response($raw);
    is(length($r ? $r->{body} : ''), 2 * $N, 'the response');
    my $t = time + 10;
    sleep 0.05 until -e $report || time > $t;
    my $dump = -e $report ? do { local (@ARGV, $/) = $report; <> } : '';
    my ($cow) = $dump =~ /COW_REFCNT = ([0-9]+)/;
    is($cow // 0, 0, 'once the response is out, no copy of the body is left')
        or diag($dump);
}
is(stop_server($srv), 0, 'second server stopped cleanly') or diag(server_log($srv));

done_testing;
