# The PSGI twins of bench/apps.pl's hello, stream and echo, for Starman
# (bench/starman.sh): PAGI_BENCH_APP names the one to serve (hello by
# default). Each does what its PAGI twin does, through PSGI's own means.
use strict;
use warnings;

my $hello = 'Hello, World!';
my $chunk = 'x' x 65536;

my $name = $ENV{PAGI_BENCH_APP} // 'hello';
die "bench/apps.psgi: no app '$name' (hello, stream, echo)\n" unless $name =~ /\A(?:hello|stream|echo)\z/;

sub {
    my ($env) = @_;
    if ($name eq 'stream') {
        # 1 MiB as 16 writes of 64 KiB, no length: chunked.
        return sub {
            my ($respond) = @_;
            my $w = $respond->([200, ['Content-Type' => 'application/octet-stream']]);
            $w->write($chunk) for 1 .. 16;
            $w->close;
        };
    }
    if ($name eq 'echo') {
        my $body = '';
        my $in   = $env->{'psgi.input'};
        while (1) {
            my $n = $in->read(my $buf, 65536);
            die "reading the request body failed: $!\n" unless defined $n;
            last unless $n;
            $body .= $buf;
        }
        return [200, ['Content-Type' => 'application/octet-stream', 'Content-Length' => length $body], [$body]];
    }
    return [200, ['Content-Type' => 'text/plain', 'Content-Length' => length $hello], [$hello]];
};
