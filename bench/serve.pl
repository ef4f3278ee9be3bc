#!/usr/bin/env perl
# Starts one PAGI::Server process with a benchmark app. Which PAGI::Server is
# loaded is decided by @INC (PERL5LIB / -I), so the same script serves this
# project's build and the reference. Prints the bound port on STDOUT, then
# serves until TERM.
#
#   perl bench/serve.pl [APP]
#   PAGI_BENCH_CERT=cert.pem PAGI_BENCH_KEY=key.pem perl bench/serve.pl [APP]
#   PAGI_BENCH_HTTP2=1 perl bench/serve.pl [APP]
#
# With PAGI_BENCH_CERT and PAGI_BENCH_KEY set (PEM files) the server is given
# ssl => { cert_file, key_file } and serves HTTPS; both servers take the same
# option. With PAGI_BENCH_HTTP2=1 the server is given http2 => 1,
# PAGI_BENCH_MAX_CONNECTIONS=N sets max_connections, PAGI_BENCH_WORKERS=N
# sets workers and PAGI_BENCH_TIMEOUT=S sets timeout (the wait for a
# request head), for this build and the reference alike.
#
# APP is one of the apps of bench/apps.pl (hello by default).
use strict;
use warnings;
use IO::Async::Loop;
use File::Basename qw(dirname);
use File::Spec;
use PAGI::Server;

my $name = shift // 'hello';

my $apps = do(File::Spec->rel2abs(dirname(__FILE__)) . '/apps.pl') or die "bench/apps.pl: " . ($@ || $!) . "\n";

my $app = $apps->{$name}
    or die "usage: $0 [" . join('|', sort keys %$apps) . "]\n";

my %tls;
if ($ENV{PAGI_BENCH_CERT} || $ENV{PAGI_BENCH_KEY}) {
    die "PAGI_BENCH_CERT and PAGI_BENCH_KEY go together\n"
        unless $ENV{PAGI_BENCH_CERT} && $ENV{PAGI_BENCH_KEY};
    %tls = (ssl => { cert_file => $ENV{PAGI_BENCH_CERT}, key_file => $ENV{PAGI_BENCH_KEY} });
}

my $loop   = IO::Async::Loop->new;
my $server = PAGI::Server->new(
    app        => $app,
    host       => '127.0.0.1',
    port       => 0,
    quiet      => 1,
    access_log => undef,
    %tls,
    ($ENV{PAGI_BENCH_HTTP2} ? (http2 => 1) : ()),
    ($ENV{PAGI_BENCH_MAX_CONNECTIONS} ? (max_connections => $ENV{PAGI_BENCH_MAX_CONNECTIONS}) : ()),
    ($ENV{PAGI_BENCH_WORKERS} ? (workers => $ENV{PAGI_BENCH_WORKERS}) : ()),
    ($ENV{PAGI_BENCH_TIMEOUT} ? (timeout => $ENV{PAGI_BENCH_TIMEOUT}) : ()),
);
$loop->add($server);
$server->listen->get;
$| = 1;
print $server->port, "\n";
$loop->run;
