# The app conformance/h2spec serves: every request is read to its end
# (h2spec sends bodies in DATA frames and checks flow control on them),
# then answered 200 with a short fixed body. WebSocket and lifespan scopes
# are declined politely.
use strict;
use warnings;
use Future::AsyncAwait;

my $BODY = "h2spec conformance app: ok\n";

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    # Declined: the server goes on without the lifespan protocol.
    die "lifespan not used by this conformance app\n" if $scope->{type} eq 'lifespan';
    if ($scope->{type} eq 'websocket') {
        await $receive->();    # websocket.connect
        await $send->({ type => 'websocket.close' });
        return;
    }
    return unless $scope->{type} eq 'http';

    while (1) {
        my $event = await $receive->();
        return if $event->{type} ne 'http.request';    # http.disconnect
        last unless $event->{more};
    }
    await $send->({
        type    => 'http.response.start',
        status  => 200,
        headers => [ [ 'content-type', 'text/plain' ], [ 'content-length', length $BODY ] ],
    });
    await $send->({ type => 'http.response.body', body => $BODY });
};

$app;
