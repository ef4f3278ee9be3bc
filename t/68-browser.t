use strict;
use warnings;

# A real browser as the client: headless Chromium loads
# examples/browser/app.pl's page from pagi-server, once over HTTPS with
# HTTP/2 (a certificate made here, --ignore-certificate-errors) and once over
# plain HTTP/1.1. The page's script opens a WebSocket and an EventSource to
# the same server, exchanges a message (compressed: Chromium always offers
# permessage-deflate) and three events, and writes what it
# saw into the page and posts it back to the server. Every process is stopped
# by PID and every wait is bounded.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use JSON::PP ();
use ExtProc qw(which);
use ProcTest qw(start_cmd stop_cmd finish_cmd spawn_cli listening_port slurp tmpdir wait_until);
use TestCerts;

my $chromium = which('chromium') || which('chromium-browser')
    or skip_all('chromium is not installed (Debian package chromium)');
my $APP = "$FindBin::Bin/../examples/browser/app.pl";

# Loads $url in headless Chromium and waits (30 s at most) for the page to
# post its result, which the server $p logs. Returns the result (decoded).
# No --dump-dom: headless Chromium's virtual time can run out while a
# WebSocket is still on its way.
sub browse {
    my ($p, $url) = @_;
    my $profile = tmpdir() . '/chromium.' . int(rand 1e9);
    my $c = start_cmd(name => 'chromium', pgrp => 1, argv => [
        $chromium, '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
        "--user-data-dir=$profile", '--ignore-certificate-errors', $url,
    ]);
    my $json;
    wait_until(30, sub { ($json) = slurp($p->{err}) =~ /^browser result: (.*)$/m; defined $json });
    kill TERM => -$c->{pid};    # the browser and its helper processes
    my (undef, undef, $err) = finish_cmd($c, 15);
    my $data = eval { JSON::PP->new->decode($json // '') };
    diag('chromium: ' . substr($err, -2000)) unless $data;
    return $data;
}

sub check {
    my ($what, $data, $page, $version) = @_;
    ok($data, "$what: the page's script finished and posted its result");
    is($data->{page}, $page, "$what: the page came over $page");
    like($data->{ws}{reply} // '', qr{\Aecho over HTTP/\Q$version\E: hello x{20}}, "$what: WebSocket echo over HTTP/$version");
    my $len = 2006 + length "echo over HTTP/$version: ";
    like($data->{ws}{reply} // '', qr/\($len\)\z/, "$what: the whole 2,006-byte message came back");
    like($data->{ws}{extensions} // '', qr/\Apermessage-deflate\b/, "$what: WebSocket compression negotiated");
    is($data->{ws}{close}, 1000, "$what: WebSocket closed cleanly (1000)");
    is($data->{sse}, [ map { "tick $_ over HTTP/$version#$_" } 1 .. 3 ], "$what: three SSE events, with their ids");
}

subtest 'HTTPS with HTTP/2' => sub {
    my $why = TestCerts::skip_reason();
    skip_all($why) if $why;
    my $certs = TestCerts::make(tmpdir(), 'rsa');
    my $p = spawn_cli(args => [ '--env', 'production', '-p', 0, '--http2', '--ssl-cert', $certs->{rsa_cert},
                                '--ssl-key', $certs->{rsa_key}, '--no-access-log', $APP ]);
    my $port = listening_port($p->{err}, 20);
    ok($port, 'server is listening') or return diag(slurp($p->{err}));
    check('h2', browse($p, "https://127.0.0.1:$port/"), 'h2', '2');
    like(stop_cmd($p, 15), qr/\A0\z/, 'the server stops cleanly');
};

subtest 'plain HTTP/1.1' => sub {
    my $p = spawn_cli(args => [ '--env', 'production', '-p', 0, '--no-access-log', $APP ]);
    my $port = listening_port($p->{err}, 20);
    ok($port, 'server is listening') or return diag(slurp($p->{err}));
    check('http/1.1', browse($p, "http://127.0.0.1:$port/"), 'http/1.1', '1.1');
    like(stop_cmd($p, 15), qr/\A0\z/, 'the server stops cleanly');
};

done_testing;
