use strict;
use warnings;

# pagi.connection and pagi.transport of a plain HTTP request are made only
# when something reads them (xs/http_fast.h, lazy_vtbl). Whatever way an
# app reaches them, it must see what it would see had they been made with
# the scope: read late, copied with the scope, kept with the scope past the
# request, taken by reference, assigned over, deleted, listed. Servers run
# in forked children (TLSTest); every wait is bounded.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Socket::INET;
use Future::AsyncAwait;
use Scalar::Util qw(refaddr);
use Hash::Util ();
use Time::HiRes qw(sleep);
use TLSTest qw(serve stop_server server_log read_until parse_response);

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "75-lazy-state.t: overall time limit reached\n" };
alarm 60;

my %kept;

sub state_of {
    my ($cs) = @_;
    return 'none' unless ref $cs;
    return sprintf '%s connected %d started %d', ref $cs, $cs->is_connected, $cs->response_started;
}

my %route = (
    # Read only after the response started.
    '/late' => async sub {
        my ($scope, $start) = @_;
        await $start->();
        return state_of($scope->{'pagi.connection'}) . ' ' . ref $scope->{'pagi.transport'};
    },
    # A copy of the scope (as middleware makes) holds the same objects.
    '/copy' => async sub {
        my ($scope) = @_;
        my %copy = %$scope;
        my $same = refaddr($copy{'pagi.connection'}) == refaddr($scope->{'pagi.connection'})
            && refaddr($copy{'pagi.transport'}) == refaddr($scope->{'pagi.transport'});
        return ($same ? 'same ' : 'different ') . ref $copy{'pagi.transport'};
    },
    # Kept, unread, past the request: read by the next one.
    '/keep' => async sub { $kept{scope} = $_[0]; return 'kept' },
    '/kept' => async sub {
        my $scope = delete $kept{scope} or return 'nothing kept';
        return state_of($scope->{'pagi.connection'}) . ' ' . ref $scope->{'pagi.transport'};
    },
    # A reference to the value itself, kept past the request.
    '/ref' => async sub { $kept{ref} = \$_[0]{'pagi.transport'}; return 'ref' },
    '/deref' => async sub {
        my $ref = delete $kept{ref} or return 'nothing kept';
        return ref $$ref;
    },
    '/arg' => async sub { return 'arg' },
    '/argread' => async sub {
        my $ref = delete $kept{arg} or return 'nothing kept';
        return state_of($$ref->{'pagi.connection'});
    },
    # A reference to the value, then the value deleted from the scope:
    # only the reference reaches it after the request.
    '/stash' => async sub {
        my ($scope) = @_;
        $kept{stash} = \$scope->{'pagi.transport'};
        delete $scope->{'pagi.transport'};
        return 'stashed';
    },
    '/unstash' => async sub {
        my ($scope) = @_;
        my $ts = ${ delete $kept{stash} };
        return ref($ts) . ' ' . ($ts->{id} == $scope->{'pagi.transport'}{id} ? 'this request' : 'its own request');
    },
    # Hash::Util::lock_hash makes the values read-only.
    '/locked' => async sub {
        my ($scope, $start, $receive) = @_;
        Hash::Util::lock_hash(%$scope);
        my $ev = eval { await $receive->() };
        $kept{locked} = $scope;
        return $ev ? $ev->{type} : "receive died: $@";
    },
    '/unlocked' => async sub {
        my $scope = delete $kept{locked} or return 'nothing kept';
        return state_of($scope->{'pagi.connection'});
    },
    # Assigned over before anything read it: the app's value stays.
    '/assign' => async sub {
        my ($scope) = @_;
        $scope->{'pagi.connection'} = 'mine';
        $scope->{'pagi.transport'}  = undef;
        return join ' ', $scope->{'pagi.connection'}, defined $scope->{'pagi.transport'} ? 'defined' : 'undef';
    },
    '/delete' => async sub {
        my ($scope) = @_;
        my $cs = delete $scope->{'pagi.connection'};
        return state_of($cs) . (exists $scope->{'pagi.connection'} ? ' still there' : ' gone');
    },
    '/keys' => async sub {
        my ($scope) = @_;
        return join ',', (grep {/^pagi\./} sort keys %$scope),
            (exists $scope->{'pagi.transport'} ? 'exists' : 'missing');
    },
    # Read only after the client went away.
    '/wait' => async sub {
        my ($scope, $start, $receive) = @_;
        # The bodyless request's http.request, then its disconnect.
        my $ev = await $receive->();
        $ev = await $receive->() if $ev->{type} eq 'http.request';
        $kept{wait} = $ev->{type} . ' ' . state_of($scope->{'pagi.connection'});
        return 'unheard';
    },
    '/waited' => async sub { return delete $kept{wait} // 'nothing yet' },
);

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    # The very reference the server called the app with, kept.
    $kept{arg} = \$_[0] if $scope->{path} eq '/arg';
    my $started;
    my $start = async sub {
        $started = 1;
        await $send->({ type => 'http.response.start', status => 200, headers => [ [ 'content-type', 'text/plain' ] ] });
    };
    my $route = $route{ $scope->{path} } or die "no route $scope->{path}\n";
    my $body  = await $route->($scope, $start, $receive);
    await $start->() unless $started;
    await $send->({ type => 'http.response.body', body => $body });
};

my $srv = serve(app => $app);
ok(!$srv->{error}, 'server is up') or do { diag($srv->{error}); done_testing; exit };

sub get {
    my ($path) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->{port}, Proto => 'tcp', Timeout => 5)
        or return "connect: $!";
    $s->syswrite("GET $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    my ($raw) = read_until($s, 5);
    close $s;
    my $r = parse_response($raw);
    return $r ? $r->{body} : 'no response';
}

is(get('/late'), 'PAGI::Server::ConnectionState connected 1 started 1 PAGI::Server::TransportState',
    'read after the response started: an open connection whose response started');
is(get('/copy'), 'same PAGI::Server::TransportState', 'a copy of the scope holds the same objects');
is(get('/keep'), 'kept', 'a request keeps its scope, unread');
is(get('/kept'), 'PAGI::Server::ConnectionState connected 0 started 1 PAGI::Server::TransportState',
    'read after its request ended: the objects as the request left them');
is(get('/ref'), 'ref', 'a request keeps a reference to its pagi.transport, unread');
is(get('/deref'), 'PAGI::Server::TransportState', 'the reference reaches the object after the request');
is(get('/arg'), 'arg', 'a request keeps the reference its app was called with');
is(get('/argread'), 'PAGI::Server::ConnectionState connected 0 started 1',
    'through it, the scope has its objects after the request');
is(get('/stash'), 'stashed', 'a request keeps a reference to a value it deleted, unread');
is(get('/unstash'), 'PAGI::Server::TransportState its own request', 'the reference reaches its own request\'s object');
is(get('/locked'), 'http.request', 'a locked scope: $receive works');
is(get('/unlocked'), 'PAGI::Server::ConnectionState connected 0 started 1', 'a locked scope kept past its request has its objects');
is(get('/assign'), 'mine undef', 'values the app assigned stay');
is(get('/delete'), 'PAGI::Server::ConnectionState connected 1 started 0 gone', 'a deleted value is the object');
is(get('/keys'), 'pagi.connection,pagi.transport,exists', 'both keys are there before anything read them');

{
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->{port}, Proto => 'tcp', Timeout => 5);
    ok($s, 'connected for /wait');
    $s->syswrite("GET /wait HTTP/1.1\r\nHost: localhost\r\n\r\n") if $s;
    sleep 0.2;
    close $s if $s;
    my $seen = 'nothing yet';
    for (1 .. 50) {
        $seen = get('/waited');
        last if $seen ne 'nothing yet';
        sleep 0.1;
    }
    is($seen, 'http.disconnect PAGI::Server::ConnectionState connected 0 started 0',
        'read after the client went away: the connection is gone');
}

is(stop_server($srv), 0, 'the server stops cleanly');
unlike(server_log($srv), qr/panic|Attempt to free|Use of freed|malformed|error/i, 'nothing went wrong on the server');

done_testing;
