# The app conformance/autobahn serves: every WebSocket is accepted and each
# message is sent back as it came (text as text, bytes as bytes) until the
# client closes. Plain HTTP gets a short fixed answer; lifespan is declined.
use strict;
use warnings;
use Future::AsyncAwait;

my $BODY = "Autobahn echo app: connect with a WebSocket\n";

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    # Declined: the server goes on without the lifespan protocol.
    die "lifespan not used by this conformance app\n" if $scope->{type} eq 'lifespan';
    if ($scope->{type} eq 'http') {
        await $send->({
            type    => 'http.response.start',
            status  => 200,
            headers => [ [ 'content-type', 'text/plain' ], [ 'content-length', length $BODY ] ],
        });
        await $send->({ type => 'http.response.body', body => $BODY });
        return;
    }
    return unless $scope->{type} eq 'websocket';

    await $receive->();    # websocket.connect
    await $send->({ type => 'websocket.accept' });
    while (1) {
        my $event = await $receive->();
        last if $event->{type} ne 'websocket.receive';    # websocket.disconnect
        await $send->({
            type => 'websocket.send',
            exists $event->{text} ? (text => $event->{text}) : (bytes => $event->{bytes}),
        });
    }
};

$app;
