use strict;
use warnings;
use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use IO::Async::Loop;
use Future::AsyncAwait;
use RawHTTP qw(start_server);
use PAGI::Server;

# Access-log formats: presets, atoms, header atoms and construction errors.

my $loop = IO::Async::Loop->new;

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    my $body = 'x' x 5;
    await $send->({ type => 'http.response.start', status => 201,
                    headers => [['content-length', length $body]] });
    await $send->({ type => 'http.response.body', body => $body, more => 0 });
};

sub one_line {
    my ($format, $request) = @_;
    open my $fh, '>', \my $buf or die $!;
    my $server = start_server($loop, app => $app, access_log => $fh, access_log_format => $format);
    my $r = RawHTTP->request($loop, $server->port, $request);
    $server->shutdown->get;
    $loop->remove($server);
    is($r && $r->{status}, 201, "request answered ($format)");
    return $buf;
}

my $req = "GET /a%20b?q=1 HTTP/1.1\r\nHost: t\r\nUser-Agent: probe/1.0\r\n"
        . "Referer: http://r/\r\nConnection: close\r\n\r\n";

like(one_line('combined', $req),
    qr{^127\.0\.0\.1 - - \[\d\d/\w{3}/\d{4}:\d\d:\d\d:\d\d \+0000\] "GET /a%20b\?q=1 HTTP/1\.1" 201 5 "http://r/" "probe/1\.0"\n\z},
    'combined preset');
like(one_line('common', $req),
    qr{^127\.0\.0\.1 - - \[[^\]]+\] "GET /a%20b\?q=1 HTTP/1\.1" 201 5\n\z}, 'common preset');
like(one_line('tiny', $req), qr{^GET /a%20b\?q=1 201 \d+ms\n\z}, 'tiny preset');
is(one_line('%m|%U|%q|%H|%s|%b|%B|%{X-Missing}i|%{user-agent}i|%%|%l%u', $req),
    "GET|/a%20b|?q=1|HTTP/1.1|201|5|5|-|probe/1.0|%|--\n", 'atoms render as documented');
like(one_line('%d %D %T', $req), qr{^\d+\.\d{3} \d+ \d+\n\z}, 'duration atoms');

like(dies { PAGI::Server->new(app => $app, access_log_format => '%h %Q') },
    qr/Unknown access log format atom '%Q'/, 'unknown atom dies naming it');
like(dies { PAGI::Server->new(app => $app, access_log_format => '%{Referer') },
    qr/Unterminated/, 'unterminated header atom dies');
like(dies { PAGI::Server->new(app => $app, access_log_format => '%{Referer}x') },
    qr/Expected 'i'/, 'header atom must end in i');

my $f = PAGI::Server->_compile_access_log_format('%h "%r" %s %b %{Host}i');
is($f->({ client_ip => '10.0.0.1', method => 'POST', path => '/p', query => '',
          http_version => '1.0', status => 404, size => 0,
          request_headers => [['HOST', 'h1'], ['host', 'h2']] }),
   '10.0.0.1 "POST /p HTTP/1.0" 404 - h1', 'format helper renders an info hash');

done_testing;
