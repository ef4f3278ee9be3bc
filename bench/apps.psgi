# The benchmark apps of bench/apps.pl as one PSGI app, for Starman
# (bench/compare.sh), chosen by path: /stream, /echo, anything else hello.
# Each does what its PAGI twin does, through PSGI's own means.
use strict;
use warnings;

my $hello = 'Hello, World!';
my $chunk = 'x' x 65536;

sub {
    my ($env) = @_;
    my $path = $env->{PATH_INFO} // '/';
    if ($path eq '/stream') {
        # 1 MiB as 16 writes of 64 KiB, no length: chunked.
        return sub {
            my ($respond) = @_;
            my $w = $respond->([200, ['Content-Type' => 'application/octet-stream']]);
            $w->write($chunk) for 1 .. 16;
            $w->close;
        };
    }
    if ($path eq '/echo') {
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
