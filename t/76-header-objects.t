use strict;
use warnings;

# Response header values that are objects with string overloading (a URI
# object, say) run Perl code when the server reads them. The server packs
# a head's fields in one pass over plain values only; with such an object
# it must read each field once (so an overload that would change the list
# under a second read never does), and keep a head packed inside another's intact. Servers run in
# forked children (TLSTest); every wait is bounded.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Socket::INET;
use Future;
use Time::HiRes qw(sleep);
use Future::AsyncAwait;
use TLSTest qw(serve stop_server server_log read_until parse_response);

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "76-header-objects.t: overall time limit reached\n" };
alarm 60;

my %kept;

# Answers with one more character each time it is read.
package Growing {
    use overload '""' => sub { ${ $_[0] }++; 'v' x ${ $_[0] } }, fallback => 1;
}

# Takes the last field off its own list when read a second time.
package Shrinking {
    use overload '""' => sub { my $s = $_[0]; pop @{ $s->{list} } if ++$s->{reads} == 2; 'x' }, fallback => 1;
}

# Answers the held request (a head larger than any before) when read a
# second time.
sub answer_held {
    my $send = delete $kept{send} or return;
    $send->({ type => 'http.response.start', status => 200,
              headers => [ [ 'x-big', 'y' x 100_000 ], [ 'content-length', 4 ] ] });
    $send->({ type => 'http.response.body', body => 'held' });
}

package Answering {
    use overload '""' => sub { main::answer_held() if ++$_[0]{reads} == 2; 'z' x 20 }, fallback => 1;
}

package main;

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    my $path = $scope->{path};
    if ($path eq '/hold') {
        $kept{send} = $send;
        await($kept{held} = Future->new);
        return;
    }
    my @headers = ([ 'content-type', 'text/plain' ]);
    if ($path eq '/growing') {
        my $n = 0;
        push @headers, [ 'x-grow', bless \$n, 'Growing' ];
    }
    elsif ($path eq '/shrinking') {
        push @headers, [ 'x-shrink', undef ], [ 'x-last', 'gone?' ];
        $headers[1][1] = bless { list => \@headers, reads => 0 }, 'Shrinking';
    }
    elsif ($path eq '/answering') {
        push @headers, (map { [ "x-a$_", 'w' x 10 ] } 1 .. 20), [ 'x-answer', bless { reads => 0 }, 'Answering' ],
            map { [ "x-b$_", 'q' x 10 ] } 1 .. 20;
    }
    await $send->({ type => 'http.response.start', status => 200, headers => \@headers });
    await $send->({ type => 'http.response.body', body => 'ok' });
    if ($path eq '/answering') {
        # Unless reading its head already did.
        answer_held();
        $kept{held}->done if $kept{held};
    }
};

my $srv = serve(app => $app);
ok(!$srv->{error}, 'server is up') or do { diag($srv->{error}); done_testing; exit };

sub connect_to {
    return IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $srv->{port}, Proto => 'tcp', Timeout => 5);
}

sub get {
    my ($path) = @_;
    my $s = connect_to() or return undef;
    $s->syswrite("GET $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    my ($raw) = read_until($s, 5);
    close $s;
    return $raw;
}

my $raw = get('/growing') // '';
like($raw, qr/\r\nx-grow: v\r\n/i, 'an overloaded value is read once');

$raw = get('/shrinking') // '';
like($raw, qr/\r\nx-last: gone\?\r\n/i, 'a value that would change its list on a second read is read once');
is(parse_response($raw) && parse_response($raw)->{body}, 'ok', 'and its response is whole');

my $held = connect_to();
ok($held, 'connected for /hold');
$held->syswrite("GET /hold HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n") if $held;
sleep 0.5;    # the server (another process) takes the held request first
$raw = get('/answering') // '';
my ($held_raw) = $held ? read_until($held, 5) : ('');
my $r = parse_response($raw);
my $head = $r ? $r->{head} : '';
like($head, qr/^x-answer: z{20}\r?$/mi, 'a head packed while another is packed keeps its own fields');
unlike($head, qr/^x-big:/mi, 'and none of the other');
like($head, qr/^x-b20: q{10}\r?$/mi, 'down to its last field');
my $h = parse_response($held_raw // '');
my ($big) = ($h ? $h->{head} : '') =~ /^x-big: (y*)\r?$/mi;
is(length($big // ''), 100_000, 'the head packed inside it is whole');
is($h && $h->{body}, 'held', 'and its response is answered');

is(stop_server($srv), 0, 'the server stops cleanly');
unlike(server_log($srv), qr/panic|Attempt to free|Use of freed|malformed/i, 'nothing went wrong on the server');

done_testing;
