# A minimal PAGI application: answers every HTTP request with a greeting
# and opts out of the lifespan protocol by declining it.
use strict;
use warnings;
use Future::AsyncAwait;

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    die "lifespan not used by this example\n" if $scope->{type} eq 'lifespan';

    my $body = "Hello from PAGI on $scope->{path}\n";
    await $send->({
        type    => 'http.response.start',
        status  => 200,
        headers => [
            ['content-type',   'text/plain'],
            ['content-length', length $body],
        ],
    });
    await $send->({ type => 'http.response.body', body => $body, more => 0 });
};

$app;
