use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Async::Loop;
use Future::AsyncAwait;
use Digest::MD5 qw(md5);
use File::Temp qw(tempdir);
use Symbol qw(gensym);
use RawHTTP qw(start_server pump_until);

# File and filehandle response bodies (http.response.body with `file` or
# `fh`), checked byte for byte on the wire. After each response a second
# request goes over the same socket, so a body that is one byte too long or
# too short shows up as a broken follow-up response.

# A read-only tied handle: READ, EOF, CLOSE, BINMODE and FILENO, nothing else
# (no SEEK, no READLINE, no GETC). FILENO returns what it was given.
package TiedReader {
    sub TIEHANDLE {
        my ($class, $data, $fileno) = @_;
        return bless { data => $data, pos => 0, fileno => $fileno, reads => 0, closed => 0 }, $class;
    }
    sub READ {
        my $self = shift;
        my $bufref = \$_[0];
        my (undef, $len, $off) = @_;
        $off //= 0;
        $self->{reads}++;
        my $left = length($self->{data}) - $self->{pos};
        $len = $left if $len > $left;
        my $chunk = $len > 0 ? substr($self->{data}, $self->{pos}, $len) : '';
        $self->{pos} += length $chunk;
        $$bufref = '' unless defined $$bufref;
        $$bufref .= "\0" x ($off - length $$bufref) if length($$bufref) < $off;
        substr($$bufref, $off) = $chunk;
        return length $chunk;
    }
    sub EOF     { $_[0]{pos} >= length $_[0]{data} }
    sub CLOSE   { $_[0]{closed} = 1; 1 }
    sub BINMODE { 1 }
    sub FILENO  { $_[0]{fileno} }
}

package main;

my $loop = IO::Async::Loop->new;
my $dir  = tempdir(CLEANUP => 1);

# Deterministic bytes that do not repeat with a short period.
sub noise {
    my ($n, $seed) = @_;
    my $out = '';
    my $i = 0;
    $out .= md5("$seed:" . $i++) while length $out < $n;
    return substr($out, 0, $n);
}

sub write_file {
    my ($name, $data) = @_;
    my $path = "$dir/$name";
    open my $fh, '>:raw', $path or die "$path: $!";
    print {$fh} $data;
    close $fh or die "$path: $!";
    return $path;
}

my %content = (
    small => join('', map { chr(ord('a') + $_ % 26) . ($_ % 10) } 0 .. 49),   # 100 bytes
    empty => '',
    k64   => noise(65536, 'k64'),
    k64p1 => noise(65537, 'k64p1'),
    mib   => join('', map { chr } 0 .. 255) . noise(1024 * 1024 - 256, 'mib'),
);
my %path = map { $_ => write_file($_, $content{$_}) } keys %content;

is(length $content{small}, 100, 'fixture: small file is 100 bytes');
is(-s $path{mib}, 1024 * 1024, 'fixture: 1 MiB file on disk');
is(scalar(() = do { my %b; @b{ split //, $content{mib} } = (); keys %b }), 256,
    'fixture: 1 MiB file holds all 256 byte values');

# Byte-exact comparison that reports where two strings first differ.
sub same_bytes {
    my ($got, $want, $label) = @_;
    if (defined $got && $got eq $want) {
        pass($label);
        return 1;
    }
    fail($label);
    if (!defined $got) {
        diag('got undef, want ' . length($want) . ' bytes');
        return 0;
    }
    my $i = 0;
    my $max = length($got) < length($want) ? length($got) : length($want);
    $i++ while $i < $max && substr($got, $i, 1) eq substr($want, $i, 1);
    diag(sprintf 'got %d bytes, want %d; first difference at byte %d (got %s, want %s)',
        length $got, length $want, $i,
        map { $i < length $_ ? sprintf('0x%02x', ord substr($_, $i, 1)) : 'end' } $got, $want);
    return 0;
}

# ---------------------------------------------------------------- the app

my %handler;   # path => async sub ($scope, $receive, $send)
my %note;      # what the app observed, by path

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    return unless $scope->{type} eq 'http';
    my $h = $handler{ $scope->{path} };
    if (!$h) {
        my $body = $scope->{path} eq '/ping' ? 'pong' : 'no route';
        await $send->({ type => 'http.response.start', status => $scope->{path} eq '/ping' ? 200 : 404,
                        headers => [['content-length', length $body]] });
        await $send->({ type => 'http.response.body', body => $body });
        return;
    }
    await $h->($scope, $receive, $send);
};

my $server = start_server($loop, app => $app);
my $port   = $server->port;

sub start_ev {
    my (%o) = @_;
    return { type => 'http.response.start', status => $o{status} // 200,
             headers => [['content-type', 'application/octet-stream'],
                         (defined $o{cl} ? (['content-length', $o{cl}]) : ())] };
}

sub values_of {
    my ($r, $name) = @_;
    return map { $_->[1] } grep { lc($_->[0]) eq $name } @{ $r->{headers} };
}

# Sends one keep-alive request, reads the response, then checks that the
# socket still frames a second response correctly.
sub fetch {
    my ($path, %o) = @_;
    my $method = $o{method} // 'GET';
    my $c = RawHTTP->new(loop => $loop, port => $port);
    $c->write("$method $path HTTP/1.1\r\nHost: x\r\n\r\n");
    my $r = $c->read_response(timeout => 10, head => $method eq 'HEAD');
    ok($r, "$path: response") or diag('error: ' . ($c->{error} // '?') . '; got ' . length($c->{buf}) . ' bytes');
    return ($r, $c);
}

sub follow_up {
    my ($c, $label) = @_;
    $c->wait_for(0.1, sub { 0 });   # any stray body bytes would arrive now
    is(length $c->{buf}, 0, "$label: no bytes after the response")
        or diag('stray: ' . substr($c->{buf}, 0, 80));
    ok(!$c->{eof} && !$c->{err}, "$label: connection kept open");
    eval { $c->write("GET /ping HTTP/1.1\r\nHost: x\r\n\r\n"); 1 } or note("write: $@");
    my $r2 = $c->read_response(timeout => 5);
    ok($r2 && $r2->{status} == 200 && $r2->{body} eq 'pong', "$label: next request on the socket works")
        or diag('second response: ' . ($r2 ? "status $r2->{status} body '$r2->{body}'" : 'none: ' . ($c->{error} // '?')));
    $c->close;
}

# Checks framing and bytes. $want_cl: the Content-Length expected, or undef
# for a chunked response.
sub check_body {
    my ($r, $want, $want_cl, $label) = @_;
    return unless $r;
    is($r->{status}, 200, "$label: status");
    if (defined $want_cl) {
        is([ values_of($r, 'content-length') ], [ $want_cl ], "$label: Content-Length $want_cl");
        ok(!$r->{chunked}, "$label: not chunked");
    }
    else {
        is([ values_of($r, 'transfer-encoding') ], [ 'chunked' ], "$label: Transfer-Encoding: chunked");
        is([ values_of($r, 'content-length') ], [], "$label: no Content-Length");
    }
    same_bytes($r->{body}, $want, "$label: body bytes");
}

my $case = 0;

# A `file` body; %o: cl (Content-Length header value), offset, length.
sub file_case {
    my ($label, $name, %o) = @_;
    my $p = '/file/' . ++$case;
    my $file = $path{$name};
    $handler{$p} = async sub {
        my ($scope, $receive, $send) = @_;
        await $send->(start_ev(cl => $o{cl}));
        await $send->({ type => 'http.response.body', file => $file,
                        (map { defined $o{$_} ? ($_ => $o{$_}) : () } qw(offset length)) });
    };
    my $data = $content{$name};
    my $off  = $o{offset} // 0;
    my $want = $off >= length $data ? '' : substr($data, $off, $o{length} // length $data);
    subtest $label => sub {
        my ($r, $c) = fetch($p);
        check_body($r, $want, $o{cl}, $label);
        follow_up($c, $label);
    };
    return $p;
}

# ------------------------------------------------------------ file paths

my %logged;    # path => body bytes, for the access-log check
$logged{ file_case('file, with Content-Length', 'small', cl => 100) } = 100;
$logged{ file_case('file, no Content-Length (chunked)', 'small') } = 100;
file_case('file, offset + length, Content-Length', 'small', offset => 10, length => 25, cl => 25);
$logged{ file_case('file, offset + length, chunked', 'small', offset => 37, length => 41) } = 41;
file_case('file, offset only (to EOF), chunked', 'small', offset => 95);
file_case('file, length only', 'small', length => 7, cl => 7);
file_case('file, length past EOF, chunked', 'small', offset => 90, length => 50);
$logged{ file_case('file, offset at EOF, chunked (empty body)', 'small', offset => 100) } = 0;
file_case('file, offset at EOF, Content-Length 0', 'small', offset => 100, cl => 0);
file_case('file, offset beyond EOF, chunked (empty body)', 'small', offset => 5000);
file_case('file, zero-length, chunked', 'empty');
file_case('file, zero-length, Content-Length 0', 'empty', cl => 0);
file_case('file, 65536 bytes, Content-Length', 'k64', cl => 65536);
file_case('file, 65536 bytes, chunked', 'k64');
file_case('file, 65537 bytes, Content-Length', 'k64p1', cl => 65537);
file_case('file, 65537 bytes, chunked', 'k64p1');
$logged{ file_case('file, 1 MiB binary, Content-Length', 'mib', cl => 1024 * 1024) } = 1024 * 1024;
file_case('file, 1 MiB binary, chunked', 'mib');
$logged{ file_case('file, 1 MiB, offset 65535 + length 300000', 'mib', offset => 65535, length => 300_000, cl => 300_000) } = 300_000;
$logged{ file_case('file, 1 MiB, length past EOF, chunked', 'mib', offset => 1024 * 1024 - 10, length => 100) } = 10;

# --------------------------------------------------------- real handles

# The app closes its handle as soon as $send returns; the server must have
# its own reference to the data by then.
sub fh_case {
    my ($label, $name, %o) = @_;
    my $p = '/fh/' . ++$case;
    $handler{$p} = async sub {
        my ($scope, $receive, $send) = @_;
        open my $fh, '<:raw', $path{$name} or die "$path{$name}: $!";
        await $send->(start_ev(cl => $o{cl}));
        await $send->({ type => 'http.response.body', fh => $fh,
                        (map { defined $o{$_} ? ($_ => $o{$_}) : () } qw(offset length)) });
        close $fh;
        $note{$p} = 'closed';
    };
    my $data = $content{$name};
    my $off  = $o{offset} // 0;
    my $want = $off >= length $data ? '' : substr($data, $off, $o{length} // length $data);
    subtest $label => sub {
        my ($r, $c) = fetch($p);
        is($note{$p}, 'closed', "$label: app closed its handle after \$send");
        check_body($r, $want, $o{cl}, $label);
        follow_up($c, $label);
    };
    return $p;
}

$logged{ fh_case('fh from open(), Content-Length', 'small', cl => 100) } = 100;
fh_case('fh from open(), chunked', 'small');
$logged{ fh_case('fh from open(), offset + length', 'small', offset => 3, length => 60, cl => 60) } = 60;
fh_case('fh from open(), offset only, chunked', 'small', offset => 64);
fh_case('fh from open(), 1 MiB, chunked, closed at once', 'mib');
fh_case('fh from open(), 1 MiB, offset + length, Content-Length', 'mib',
    offset => 1000, length => 700_001, cl => 700_001);
fh_case('fh from open(), 65537 bytes, Content-Length', 'k64p1', cl => 65537);

# -------------------------------------------------- in-memory and tied

my $mem = noise(150_000, 'mem');
for my $spec (
    [ 'in-memory fh, chunked',                  {} ],
    [ 'in-memory fh, Content-Length',           { cl => 150_000 } ],
    [ 'in-memory fh, offset + length',          { offset => 70_000, length => 66_000, cl => 66_000 } ],
    [ 'in-memory fh, offset only, chunked',     { offset => 149_990 } ],
) {
    my ($label, $o) = @$spec;
    my $p = '/mem/' . ++$case;
    $handler{$p} = async sub {
        my ($scope, $receive, $send) = @_;
        open my $fh, '<', \$mem or die $!;
        await $send->(start_ev(cl => $o->{cl}));
        await $send->({ type => 'http.response.body', fh => $fh,
                        (map { defined $o->{$_} ? ($_ => $o->{$_}) : () } qw(offset length)) });
        close $fh;
    };
    my $off = $o->{offset} // 0;
    $logged{$p} = length substr($mem, $off, $o->{length} // length $mem);
    subtest $label => sub {
        my ($r, $c) = fetch($p);
        check_body($r, substr($mem, $off, $o->{length} // length $mem), $o->{cl}, $label);
        follow_up($c, $label);
    };
}

for my $fileno (undef, -1) {
    my $label = 'tied handle, FILENO ' . ($fileno // 'undef');
    my $p = '/tied/' . ++$case;
    my $data = noise(150_001, "tied$case");
    my $obj;
    $handler{$p} = async sub {
        my ($scope, $receive, $send) = @_;
        my $fh = gensym;
        $obj = tie *$fh, 'TiedReader', $data, $fileno;
        await $send->(start_ev());
        await $send->({ type => 'http.response.body', fh => $fh });
        close $fh;
    };
    $logged{$p} = length $data;
    subtest $label => sub {
        my ($r, $c) = fetch($p);
        ok($obj && $obj->{reads} > 0, "$label: READ was used") or diag('reads: ' . ($obj ? $obj->{reads} : 'no object'));
        ok($obj && $obj->{closed}, "$label: the app's close reached CLOSE");
        check_body($r, $data, undef, $label);
        follow_up($c, $label);
    };
}

# ---------------------------------------------------------------- pipes

{
    my $label = 'pipe() fh, writer wrote and closed, read to EOF';
    my $p = '/pipe/' . ++$case;
    my $data = noise(40_000, 'pipe');    # fits in a pipe buffer
    $handler{$p} = async sub {
        my ($scope, $receive, $send) = @_;
        pipe(my $rd, my $wr) or die "pipe: $!";
        binmode $_ for $rd, $wr;
        my $off = 0;
        while ($off < length $data) {
            my $n = syswrite($wr, $data, length($data) - $off, $off);
            die "syswrite: $!" unless defined $n;
            $off += $n;
        }
        close $wr;
        await $send->(start_ev());
        await $send->({ type => 'http.response.body', fh => $rd });
        close $rd;
    };
    subtest $label => sub {
        my ($r, $c) = fetch($p);
        check_body($r, $data, undef, $label);
        follow_up($c, $label);
    };
}

{
    my $label = 'pipe from a child process, read to EOF';
    my $p = '/pipe/' . ++$case;
    my $n = 50_000;    # fits in a pipe buffer, so the child never blocks
    my $want = join '', map { chr($_ % 251) } 0 .. $n - 1;
    my $child_status;
    $handler{$p} = async sub {
        my ($scope, $receive, $send) = @_;
        open(my $fh, '-|', $^X, '-e', "binmode STDOUT; print map { chr(\$_ % 251) } 0 .. $n - 1")
            or die "fork: $!";
        binmode $fh;
        await $send->(start_ev());
        await $send->({ type => 'http.response.body', fh => $fh });
        close $fh;
        $child_status = $?;
    };
    subtest $label => sub {
        my ($r, $c) = fetch($p);
        is($child_status, 0, "$label: child exited cleanly");
        check_body($r, $want, undef, $label);
        follow_up($c, $label);
    };
}

# ---------------------------------------------------------------- errors

{
    my $p = '/missing';
    my ($err, $after);
    $handler{$p} = async sub {
        my ($scope, $receive, $send) = @_;
        await $send->(start_ev());
        $err = eval { await $send->({ type => 'http.response.body', file => "$dir/does-not-exist" }); 1 }
            ? 'no error' : "$@";
        # No byte went out yet: the app may answer afresh.
        await $send->({ type => 'http.response.start', status => 404,
                        headers => [['content-length', 4]] });
        await $send->({ type => 'http.response.body', body => 'gone' });
        $after = 'finished';
    };
    subtest 'nonexistent file: $send dies, the app can answer afresh' => sub {
        my ($r, $c) = fetch($p);
        like($err, qr/cannot open/i, 'the error names the failure') or diag("error: " . ($err // 'undef'));
        is($after, 'finished', 'the app went on after the failed send');
        is($r && $r->{status}, 404, 'the new head is the one sent');
        is($r && $r->{body}, 'gone', 'with its body');
        follow_up($c, 'nonexistent file');
        my ($r2) = fetch('/ping');
        is($r2 && $r2->{body}, 'pong', 'server still answers new connections');
    };
}

{
    my $p = '/closed-fh';
    my $err;
    $handler{$p} = async sub {
        my ($scope, $receive, $send) = @_;
        open my $fh, '<:raw', $path{small} or die $!;
        close $fh;
        await $send->(start_ev());
        $err = eval { await $send->({ type => 'http.response.body', fh => $fh }); 1 } ? 'no error' : "$@";
        await $send->({ type => 'http.response.body', body => 'after', more => 0 });
    };
    subtest 'closed fh: $send fails' => sub {
        my @warn;
        local $SIG{__WARN__} = sub { push @warn, $_[0] };
        my ($r, $c) = fetch($p);
        ok(!@warn, 'no Perl warning for a closed handle') or diag("warnings: @warn");
        ok(defined $err && $err =~ /not an open filehandle/, '$send died for a closed handle') or diag("error: " . ($err // 'undef'));
        note("closed fh error: " . ($err // 'undef'));
        check_body($r, 'after', undef, 'closed fh');
        follow_up($c, 'closed fh');
    };
}

# ------------------------------------------------------- mixing pieces

{
    # The app read part of the handle through Perl's buffer first: the body
    # starts where Perl's position is, not where the descriptor is.
    my $p = '/fh-after-read';
    $handler{$p} = async sub {
        my ($scope, $receive, $send) = @_;
        open(my $fh, '<:raw', $path{small}) or die "open: $!";
        read($fh, my $skip, 7) == 7 or die "read: $!";
        await $send->(start_ev());
        await $send->({ type => 'http.response.body', fh => $fh });
        close $fh;
    };
    subtest 'fh partly read in Perl continues from its position' => sub {
        my ($r, $c) = fetch($p);
        check_body($r, substr($content{small}, 7), undef, 'fh after a Perl read');
        follow_up($c, 'fh after a Perl read');
    };
}

{
    # PAGI spec: `more` is ignored for file and fh bodies, which end the
    # response; later body events are no-ops.
    my $p = '/mixed';
    $handler{$p} = async sub {
        my ($scope, $receive, $send) = @_;
        await $send->(start_ev());
        await $send->({ type => 'http.response.body', body => '<head>', more => 1 });
        await $send->({ type => 'http.response.body', file => $path{small}, offset => 10, length => 20, more => 1 });
        await $send->({ type => 'http.response.body', body => '<ignored>', more => 0 });
    };
    $logged{$p} = 6 + 20;
    subtest 'a file body ends the response even with more => 1' => sub {
        my ($r, $c) = fetch($p);
        check_body($r, '<head>' . substr($content{small}, 10, 20), undef, 'file ends the response');
        follow_up($c, 'file ends the response');
    };
}

{
    my $p = '/body-then-file';
    $handler{$p} = async sub {
        my ($scope, $receive, $send) = @_;
        await $send->(start_ev());
        await $send->({ type => 'http.response.body', body => 'prefix:', more => 1 });
        await $send->({ type => 'http.response.body', file => $path{small} });
    };
    subtest 'body piece, then a file that ends the response' => sub {
        my ($r, $c) = fetch($p);
        check_body($r, 'prefix:' . $content{small}, undef, 'body then file');
        follow_up($c, 'body then file');
    };
}

# ------------------------------------------------------------------ HEAD

for my $spec ([ 'Content-Length', 1024 * 1024 ], [ 'no Content-Length', undef ]) {
    my ($what, $cl) = @$spec;
    my $p = '/head/' . ++$case;
    $handler{$p} = async sub {
        my ($scope, $receive, $send) = @_;
        await $send->(start_ev(cl => $cl));
        await $send->({ type => 'http.response.body', file => $path{mib} });
    };
    subtest "HEAD with a file body ($what)" => sub {
        my ($r, $c) = fetch($p, method => 'HEAD');
        return unless $r;
        is($r->{status}, 200, 'status');
        is([ values_of($r, 'content-length') ], [ $cl ], 'Content-Length as the app set it')
            if defined $cl;
        follow_up($c, "HEAD ($what)");
    };
}

# ------------------------------------------------------------ access log

subtest 'access log %b counts file bytes' => sub {
    open my $log, '>', \my $logbuf or die $!;
    my $ls = start_server($loop, app => $app, access_log => $log, access_log_format => '%s %b');
    my $count = sub { scalar(() = ($logbuf // '') =~ /\n/g) };
    for my $p (sort keys %logged) {
        my $bytes = $logged{$p};
        my $before = $count->();
        my ($r) = RawHTTP->request($loop, $ls->port, "GET $p HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            timeout => 10);
        ok($r && $r->{status} == 200, "$p: response") or next;
        is(length $r->{body}, $bytes, "$p: $bytes body bytes on the wire");
        pump_until($loop, 2, sub { $count->() > $before });
        my $line = (split /\n/, $logbuf // '')[$before] // '(no line)';
        if ($bytes) { is($line, "200 $bytes", "$p: log line counts $bytes bytes") }
        else        { like($line, qr/^200 (-|0)\z/, "$p: log line for an empty body ('$line')") }
    }
    $ls->shutdown->get;
    $loop->remove($ls);
};

$server->shutdown->get;
$loop->remove($server);

done_testing;
