use strict;
use warnings;

# A plain HTTP request runs without a Perl request object until something
# needs one (xs/http_fast.h). These are the ways out of that fast path that
# an ordinary app does not take: closures kept after the app returned and
# used later, a batch of records drained while an app runs (a nested event
# loop), and an app that answers and only then finishes. Each must behave
# as the object would: a late send is ignored, late receives report the
# request and then the disconnect, a body that arrives meanwhile reaches
# its app, and the server goes on serving. Servers run in forked children
# (TLSTest); every wait is bounded.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Socket::INET;
use Future::AsyncAwait;
use Time::HiRes qw(sleep time);
use TLSTest qw(serve stop_server server_log read_until parse_response);

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "73-fast-path.t: overall time limit reached\n" };
alarm 60;

my %kept;

my $answer = async sub {
    my ($send, $body) = @_;
    await $send->({ type => 'http.response.start', status => 200,
        headers => [ [ 'content-type', 'text/plain' ], [ 'content-length', length $body ] ] });
    await $send->({ type => 'http.response.body', body => $body });
};

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    my $path = $scope->{path};
    if ($path eq '/keep') {
        # The closures outlive the request: a later request uses them.
        @kept{qw(receive send)} = ($receive, $send);
        return await $answer->($send, 'kept');
    }
    if ($path eq '/late') {
        my $f = $kept{send}->({ type => 'http.response.body', body => 'late', more => 0 });
        my $sent = $f->is_done ? 'done' : $f->state;
        # The bodyless request's one http.request, then the disconnect.
        my @types;
        for my $i (1 .. 2) {
            push @types, (await $kept{receive}->())->{type};
        }
        %kept = ();
        return await $answer->($send, "send $sent, receive @types");
    }
    if ($path eq '/nested') {
        # A nested event loop: the rest of this body and other requests are
        # drained while this app runs.
        IO::Async::Loop->new->delay_future(after => 0.6)->get;
        my $body = '';
        while (1) {
            my $ev = await $receive->();
            last unless $ev->{type} eq 'http.request';
            $body .= $ev->{body};
            last unless $ev->{more};
        }
        return await $answer->($send, "got $body");
    }
    if ($path eq '/after') {
        # Answers at once, finishes later.
        await $answer->($send, 'answered');
        await IO::Async::Loop->new->delay_future(after => 0.2);
        return;
    }
    return await $answer->($send, "plain $path");
};

my $srv = serve(app => $app);
ok(!$srv->{error}, 'server is up') or do { diag($srv->{error}); done_testing; exit };

sub connect_ok {
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->{port}, Proto => 'tcp', Timeout => 5);
    ok($s, 'connected') or diag("connect: $!");
    return $s;
}

# One response read from a keep-alive connection (content-length bodies).
sub response_on {
    my ($s) = @_;
    my ($raw) = read_until($s, 5, sub {
        $_[0] =~ /\r\n\r\n/ && $_[0] =~ /content-length: *([0-9]+)/i
            && length($_[0]) >= index($_[0], "\r\n\r\n") + 4 + $1;
    });
    return parse_response($raw);
}

sub get {
    my ($path) = @_;
    my $s = connect_ok() or return undef;
    $s->syswrite("GET $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    my ($raw) = read_until($s, 5);
    close $s;
    return parse_response($raw);
}

subtest 'closures kept after the app returned' => sub {
    my $r = get('/keep');
    is($r && $r->{body}, 'kept', 'the request that kept them is answered');
    $r = get('/late');
    is($r && $r->{body}, 'send done, receive http.request http.disconnect',
        'a late send is ignored (a done Future); late receives give the request, then the disconnect');
    is(get('/plain') && get('/plain')->{body}, 'plain /plain', 'the server goes on serving');
};

subtest 'records drained while an app runs' => sub {
    my $s = connect_ok() or return;
    # The head and the first half of the body now; the rest while the app
    # runs its nested loop.
    $s->syswrite("POST /nested HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\nConnection: close\r\n\r\nhello");
    sleep 0.2;
    # Another request, served by the nested loop.
    my $t0 = time;
    my $other = get('/other');
    is($other && $other->{body}, 'plain /other', 'another request is answered meanwhile');
    $s->syswrite('world');
    my ($raw) = read_until($s, 5);
    close $s;
    my $r = parse_response($raw);
    is($r && $r->{body}, 'got helloworld', 'the whole body reached the app that was running');
};

subtest 'an app that answers, then finishes' => sub {
    my $s = connect_ok() or return;
    $s->syswrite("GET /after HTTP/1.1\r\nHost: localhost\r\n\r\n");
    my $r = response_on($s);
    is($r && $r->{body}, 'answered', 'answered before the app finished');
    $s->syswrite("GET /next HTTP/1.1\r\nHost: localhost\r\n\r\n");
    $r = response_on($s);
    is($r && $r->{body}, 'plain /next', 'the connection serves its next request');
    close $s;
};

is(stop_server($srv), 0, 'the server stops cleanly');
unlike(server_log($srv), qr/panic|Attempt to free|Use of freed|malformed/i, 'nothing went wrong on the server');

done_testing;
