use strict;
use warnings;
use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Async::Loop;
use Future::AsyncAwait;
use RawHTTP qw(start_server);
use PAGI::Server;

# validate_events makes a malformed $send die with the validator's message.

my $loop = IO::Async::Loop->new;
my $error;
my $app = async sub {
    my ($scope, $receive, $send) = @_;
    $error = undef;
    eval { await $send->({ type => 'http.response.start', status => 'abc', headers => [] }); 1 }
        or $error = $@;
    await $send->({ type => 'http.response.start', status => 200, headers => [] });
    await $send->({ type => 'http.response.body', body => 'ok', more => 0 });
};

for my $case ([1, 'on'], [0, 'off']) {
    my ($on, $name) = @$case;
    my $server = start_server($loop, app => $app, validate_events => $on);
    my $r = RawHTTP->request($loop, $server->port, "GET / HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    is($r && $r->{status}, 200, "validation $name: valid events still served");
    if ($on) {
        like($error, qr/http.response.start 'status' must be an integer/, 'a bad status is refused by the validator');
    }
    else {
        like($error, qr/status must be an integer/, 'without validation the server still refuses it');
    }
    $server->shutdown->get;
    $loop->remove($server);
}

{
    local $ENV{PAGI_ENV} = 'development';
    is(PAGI::Server->new(app => $app)->{validate_events}, 1, 'on by default when PAGI_ENV=development');
}
{
    local $ENV{PAGI_ENV} = 'production';
    is(PAGI::Server->new(app => $app)->{validate_events}, 0, 'off by default otherwise');
}

done_testing;
