use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Future::AsyncAwait;
use Encode qw(decode encode);
use File::Temp qw(tempdir);
use RawHTTP qw(start_server pump_until);

# File bodies whose path is not plain ASCII, and file bodies that cannot be
# sent. The core holds the response head back until the first body frame,
# so a file that cannot be opened is known before anything went out: the
# app's $send dies, the response counts as not started, and the client gets
# the app's fresh answer or a 500, never a 200 cut short.

my $loop = IO::Async::Loop->new;
my $dir  = tempdir(CLEANUP => 1);

my @warnings;
$SIG{__WARN__} = sub { push @warnings, $_[0] };

sub write_file {
    my ($bytes_name, $data) = @_;
    my $path = "$dir/$bytes_name";
    open my $fh, '>:raw', $path or die "$path: $!";
    print {$fh} $data;
    close $fh or die "$path: $!";
}

# Three files: a UTF-8 name, a Latin-1 byte name, and a plain one.
my $utf8_name   = "caf\xc3\xa9.txt";    # the bytes of "café.txt" in UTF-8
my $latin1_name = "lat\xe9.txt";        # one byte 0xE9
write_file($utf8_name,   'utf8-named body');
write_file($latin1_name, 'latin1-named body');
write_file('plain.txt',  '0123456789');
mkdir "$dir/adir" or die "mkdir: $!";

# Path strings in every form an app may hold, and what Perl's own open()
# does with each: the server must open exactly the same file.
my $decoded = decode('UTF-8', "$dir/$utf8_name");    # character string
my $upgraded_latin1 = "$dir/$latin1_name";
utf8::upgrade($upgraded_latin1);                      # same characters, UTF-8 inside
my %form = (
    'decoded (UTF-8 flagged) café.txt' => $decoded,
    'UTF-8 byte string café.txt'        => encode('UTF-8', $decoded),
    'Latin-1 byte string'               => "$dir/$latin1_name",
    'upgraded Latin-1 string'           => $upgraded_latin1,
);
ok(utf8::is_utf8($decoded), 'fixture: the decoded path is a character string');

# Perl's answer for a path: the bytes its open() reads, or undef.
sub perl_reads {
    my ($path) = @_;
    open(my $fh, '<:raw', $path) or return undef;
    local $/;
    return scalar <$fh>;
}

# ---------------------------------------------------------------- the app

my %handler;
my %note;
my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    if (my $h = $handler{ $scope->{path} }) {
        return await $h->($scope, $receive, $send);
    }
    await $send->({ type => 'http.response.start', status => 200, headers => [['content-length', 4]] });
    await $send->({ type => 'http.response.body', body => 'pong' });
};

my $server = start_server($loop, app => $app);
my $port   = $server->port;

sub fetch {
    my ($path) = @_;
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("GET $path HTTP/1.1\r\nHost: x\r\n\r\n");
    my $r = $c->read_response(timeout => 5);
    return ($r, $c);
}

# The connection still frames a second response.
sub still_usable {
    my ($c, $label) = @_;
    $c->write("GET /ping HTTP/1.1\r\nHost: x\r\n\r\n");
    my $r = $c->read_response(timeout => 5);
    is($r && $r->{body}, 'pong', "$label: the connection serves the next request");
}

my $n = 0;
sub file_route {
    my (%o) = @_;
    my $p = '/f/' . ++$n;
    $handler{$p} = async sub {
        my ($scope, $receive, $send) = @_;
        await $send->({ type => 'http.response.start', status => 200,
                        headers => [['content-type', 'text/plain'], @{ $o{headers} // [] }] });
        await $send->({ type => 'http.response.body', %{ $o{body} } });
        $note{$p} = 'sent';
    };
    return $p;
}

# --------------------------------------------------- non-ASCII file names

for my $label (sort keys %form) {
    my $path = $form{$label};
    my $want = perl_reads($path);
    subtest "file => $label" => sub {
        my ($r, $c) = fetch(file_route(body => { file => $path }));
        ok($r, 'a complete response') or diag('error: ' . ($c->{error} // '?')) , return;
        if (defined $want) {
            is($r->{status}, 200, "Perl's open() finds it: status 200");
            is($r->{body}, $want, 'the bytes Perl reads from that path');
            still_usable($c, $label);
        }
        else {
            is($r->{status}, 500, "Perl's open() does not find it: status 500");
        }
    };
}
ok(defined perl_reads($form{$_}), "fixture: Perl's open() finds the $_ path")
    for grep { !/upgraded/ } keys %form;

# ------------------------------------------- files that cannot be sent

# The app does not catch the failure: a 500, and a warning naming the path.
sub expect_500 {
    my ($label, %body) = @_;
    @warnings = ();
    my $p = file_route(body => \%body);
    subtest $label => sub {
        my ($r, $c) = fetch($p);
        ok($r, 'a complete response') or diag('error: ' . ($c->{error} // '?') . "; got: $c->{buf}"), return;
        is($r->{status}, 500, 'status 500, not a truncated 200');
        ok(!exists $note{$p}, "the app's send died");
        # The message is bytes, as Perl's own open() errors print.
        my $named = defined $body{file} ? encode('UTF-8', $body{file}) : 'the filehandle';
        pump_until($loop, 1, sub { grep { index($_, $named) >= 0 } @warnings });
        ok((grep { /PAGI application error/ && index($_, $named) >= 0 } @warnings),
            'the logged error names the file') or diag("warnings: @warnings");
        like($c->wait_close(3), qr/^(eof|reset)$/, 'the connection is closed after the 500');
    };
}

expect_500('missing file', file => "$dir/no-such-file.txt");
expect_500('missing file with a UTF-8 name', file => decode('UTF-8', "$dir/n\xc3\xa9ant.txt"));
expect_500('a directory as file', file => "$dir/adir");
{
    open(my $dh, '<', "$dir/adir") or die "open dir: $!";
    expect_500('a directory handle as fh', fh => $dh);
}

SKIP: {
    skip 'running as root: permissions do not stop reads', 1 if $> == 0;
    write_file('secret.txt', 'x');
    chmod 0, "$dir/secret.txt" or die;
    expect_500('unreadable file', file => "$dir/secret.txt");
}

# With a Content-Length the app declared, too.
{
    my $p = file_route(headers => [['content-length', 10]], body => { file => "$dir/gone.txt" });
    subtest 'missing file, Content-Length declared' => sub {
        my ($r, $c) = fetch($p);
        is($r && $r->{status}, 500, 'status 500') or diag("got: $c->{buf}");
    };
}

# The app catches the failure and answers afresh.
{
    my $p = '/catch';
    my $err;
    $handler{$p} = async sub {
        my ($scope, $receive, $send) = @_;
        await $send->({ type => 'http.response.start', status => 200, headers => [['content-length', 10]] });
        $err = eval { await $send->({ type => 'http.response.body', file => "$dir/no-such.txt" }); 1 } ? undef : $@;
        await $send->({ type => 'http.response.start', status => 404, headers => [['content-length', 9]] });
        await $send->({ type => 'http.response.body', body => 'not found' });
    };
    subtest 'the app catches the failure and sends a 404' => sub {
        my ($r, $c) = fetch($p);
        like($err, qr{cannot open \Q$dir\E/no-such\.txt}, 'the error names the path');
        is($r && $r->{status}, 404, 'the fresh head is the one sent');
        is($r && $r->{body}, 'not found', 'with its body');
        still_usable($c, 'after the 404');
    };
}

# ----------------------------------------- offset / length past the end

# The spec: an offset past the end sends zero bytes; a length past the end
# sends what there is.
{
    my $p1 = file_route(body => { file => "$dir/plain.txt", offset => 50 });
    my $p2 = file_route(body => { file => "$dir/plain.txt", offset => 4, length => 100 });
    subtest 'offset past the end: an empty body' => sub {
        my ($r, $c) = fetch($p1);
        is($r && $r->{status}, 200, 'status 200');
        is($r && $r->{body}, '', 'no bytes');
        still_usable($c, 'offset past the end');
    };
    subtest 'length past the end: the rest of the file' => sub {
        my ($r, $c) = fetch($p2);
        is($r && $r->{status}, 200, 'status 200');
        is($r && $r->{body}, '456789', 'the bytes up to the end');
        still_usable($c, 'length past the end');
    };
}

# An offset too large for 64 bits is refused by name (never cut down to a
# value that points into the file); a length that large means the rest.
{
    my $huge = '99999999999999999999';
    @warnings = ();
    my $p1 = file_route(body => { file => "$dir/plain.txt", offset => $huge });
    open(my $fh, '<', "$dir/plain.txt") or die "open: $!";
    my $p2 = file_route(body => { fh => $fh, offset => $huge });
    my $p3 = file_route(body => { file => "$dir/plain.txt", offset => 4, length => $huge });
    for ([$p1, 'file'], [$p2, 'filehandle']) {
        my ($p, $what) = @$_;
        subtest "offset beyond 64 bits on a $what: a 500 naming it" => sub {
            my ($r, $c) = fetch($p);
            is($r && $r->{status}, 500, 'status 500, not the file') or diag("got: $c->{buf}");
            ok(!exists $note{$p}, "the app's send died");
        };
    }
    pump_until($loop, 1, sub { 2 <= grep { /offset \Q$huge\E is out of range/ } @warnings });
    is(scalar(grep { /PAGI application error.*offset \Q$huge\E is out of range/ } @warnings), 2,
        'each logged error names the offset') or diag("warnings: @warnings");
    subtest 'length beyond 64 bits: the rest of the file' => sub {
        my ($r, $c) = fetch($p3);
        is($r && $r->{status}, 200, 'status 200');
        is($r && $r->{body}, '456789', 'the bytes up to the end');
        still_usable($c, 'length beyond 64 bits');
    };
}

# ------------------------------------------------ PAGI-Tools' App::File

SKIP: {
    my $tools = $ENV{PAGI_TOOLS_LIB} // '/tmp/up/tools/lib';
    skip "PAGI-Tools not found at $tools (set PAGI_TOOLS_LIB)", 1 unless -f "$tools/PAGI/App/File.pm";
    unshift @INC, $tools;
    require PAGI::App::File;
    my $files = PAGI::App::File->new(root => $dir)->to_app;
    $handler{"/caf\x{e9}.txt"} = $files;    # the decoded path of the request
    subtest 'PAGI::App::File serves café.txt' => sub {
        my ($r, $c) = fetch('/caf%C3%A9.txt');
        is($r && $r->{status}, 200, 'status 200') or diag("got: $c->{buf}");
        is($r && $r->{body}, 'utf8-named body', 'the file');
    };
}

$server->shutdown->get;
$loop->remove($server);
done_testing;
