# The PSGI twin of bench/serve.pl's `stream` app, for Starman: a 1 MiB body
# written as 16 chunks of 64 KiB through the streaming writer (no
# Content-Length, so HTTP/1.1 clients get it chunked).
use strict;
use warnings;

my $chunk = 'x' x 65536;

sub {
    my ($env) = @_;
    return sub {
        my ($respond) = @_;
        my $w = $respond->([200, ['Content-Type' => 'application/octet-stream']]);
        $w->write($chunk) for 1 .. 16;
        $w->close;
    };
};
