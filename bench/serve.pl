#!/usr/bin/env perl
# Starts one PAGI::Server process with a hello-world app for benchmarking.
# Which PAGI::Server is loaded is decided by @INC (PERL5LIB / -I), so the
# same script serves this project's build and the reference. Prints the
# bound port on STDOUT, then serves until TERM.
use strict;
use warnings;
use IO::Async::Loop;
use Future::AsyncAwait;
use PAGI::Server;

my $body = "Hello, World!";
my $app = async sub {
    my ($scope, $receive, $send) = @_;
    die "no lifespan\n" if $scope->{type} ne 'http';
    await $send->({
        type    => 'http.response.start',
        status  => 200,
        headers => [['content-type', 'text/plain'], ['content-length', length $body]],
    });
    await $send->({ type => 'http.response.body', body => $body, more => 0 });
};

my $loop   = IO::Async::Loop->new;
my $server = PAGI::Server->new(
    app        => $app,
    host       => '127.0.0.1',
    port       => 0,
    quiet      => 1,
    access_log => undef,
);
$loop->add($server);
$server->listen->get;
$| = 1;
print $server->port, "\n";
$loop->run;
