use strict;
use warnings;

# PAGI::Server::AsyncFile: whole and chunked reads (offset, length, async
# callbacks), writes and appends, sizes and existence, the errors for
# missing and unwritable files, and that the loop keeps running while a
# worker process does the file work. Workers are stopped by cleanup and
# checked gone.

use Test2::V0;
use File::Temp qw(tempdir);
use File::Spec;
use Future::AsyncAwait;
use IO::Async::Loop;
use Time::HiRes qw(time);
use PAGI::Server::AsyncFile;

my $loop = IO::Async::Loop->new;
my $dir  = tempdir(CLEANUP => 1);
my $AF   = 'PAGI::Server::AsyncFile';

sub path { File::Spec->catfile($dir, @_) }

sub put {
    my ($name, $bytes) = @_;
    open my $fh, '>:raw', path($name) or die $!;
    print {$fh} $bytes;
    close $fh or die $!;
    return path($name);
}

sub run_f {    # the Future's result, within 20 s
    my ($f) = @_;
    return $loop->await(Future->wait_any($f, $loop->timeout_future(after => 20)))->get;
}

my $binary = join '', map { chr } 0 .. 255;

subtest 'read_file' => sub {
    is(run_f($AF->read_file($loop, put('bin', $binary x 400))), $binary x 400, 'binary bytes, 100 KB, intact');
    is(run_f($AF->read_file($loop, put('empty', ''))), '', 'an empty file');
    like(dies { run_f($AF->read_file($loop, path('missing'))) }, qr/^File not found: .*missing/, 'a missing file');
    like(dies { run_f($AF->read_file($loop, $dir)) }, qr/^File not found/, 'a directory is no file');
    like(dies { $AF->read_file('not a loop', path('bin'))->get }, qr/IO::Async::Loop is required/, 'a loop is required');
};

subtest 'read_file_chunked' => sub {
    my $file = put('digits', join '', map { $_ % 10 } 0 .. 999);
    my @chunks;
    my $n = run_f($AF->read_file_chunked($loop, $file, sub { push @chunks, $_[0]; return }, chunk_size => 300));
    is($n, 1000, 'resolves to the bytes read');
    is([ map { length } @chunks ], [ 300, 300, 300, 100 ], 'pieces of chunk_size, the last shorter');
    is(join('', @chunks), join('', map { $_ % 10 } 0 .. 999), 'in order');

    @chunks = ();
    $n = run_f($AF->read_file_chunked($loop, $file, sub { push @chunks, $_[0]; return }, offset => 995));
    is([ $n, join '', @chunks ], [ 5, '56789' ], 'offset: from there to the end');

    @chunks = ();
    $n = run_f($AF->read_file_chunked($loop, $file, sub { push @chunks, $_[0]; return },
        offset => 10, length => 25, chunk_size => 10));
    is([ $n, [ @chunks ] ], [ 25, [ '0123456789', '0123456789', '01234' ] ], 'offset and length');

    # An async callback is awaited before the next piece is read.
    my ($busy, $overlap, @order) = (0, 0);
    $n = run_f($AF->read_file_chunked($loop, $file, async sub {
        my ($c) = @_;
        $overlap++ if $busy++;
        await $loop->delay_future(after => 0.02);
        push @order, length $c;
        $busy--;
    }, chunk_size => 400));
    is([ $n, $overlap, [ @order ] ], [ 1000, 0, [ 400, 400, 200 ] ], 'an async callback is awaited, one piece at a time');
    like(dies { run_f($AF->read_file_chunked($loop, path('nope'), sub { })) }, qr/^File not found/, 'a missing file');
    like(dies { run_f($AF->read_file_chunked($loop, $file, sub { }, chunk_size => 0)) }, qr/chunk_size/, 'chunk_size 0 is refused');
};

subtest 'write_file and append_file' => sub {
    my $f = path('out');
    is(run_f($AF->write_file($loop, $f, $binary)), 256, 'write_file: the bytes written');
    is(run_f($AF->read_file($loop, $f)), $binary, '... and they are the file');
    is(run_f($AF->write_file($loop, $f, 'short')), 5, 'write_file replaces');
    is(run_f($AF->read_file($loop, $f)), 'short', '... the whole content');
    is(run_f($AF->append_file($loop, $f, "+1")), 2, 'append_file: the bytes written');
    run_f($AF->append_file($loop, $f, "+2"));
    is(run_f($AF->read_file($loop, $f)), 'short+1+2', '... at the end, in order');
    is(run_f($AF->append_file($loop, path('new.log'), "first\n")), 6, 'append_file creates a file');
    like(dies { run_f($AF->write_file($loop, path('no', 'such', 'dir'), 'x')) }, qr/^Cannot open .*dir: /,
        'a path that cannot be opened fails, saying why');
};

subtest 'file_size and file_exists' => sub {
    is(run_f($AF->file_size($loop, put('sized', 'x' x 1234))), 1234, 'file_size');
    is(run_f($AF->file_size($loop, put('zero', ''))), 0, 'file_size of an empty file is 0');
    is(run_f($AF->file_size($loop, path('absent'))), undef, 'file_size of nothing is undef');
    is(run_f($AF->file_exists($loop, path('sized'))), 1, 'file_exists: yes');
    is(run_f($AF->file_exists($loop, path('absent'))), 0, 'file_exists: no');
};

subtest 'the loop runs while the workers work' => sub {
    my $file = put('mb', 'y' x (8 * 1024 * 1024));
    my $ticks = 0;
    require IO::Async::Timer::Periodic;
    my $timer = IO::Async::Timer::Periodic->new(interval => 0.005, on_tick => sub { $ticks++ });
    $loop->add($timer->start);
    my @f = map { $AF->read_file($loop, $file) } 1 .. 4;
    my @got = run_f(Future->needs_all(map { $_->then(sub { Future->done(length $_[0]) }) } @f));
    $loop->remove($timer);
    is(\@got, [ (8 * 1024 * 1024) x 4 ], 'four concurrent 8 MB reads complete');
    ok($ticks > 0, "the loop ticked meanwhile ($ticks ticks)");
};

subtest 'cleanup stops the workers' => sub {
    my @kids_before = kids();
    ok(scalar @kids_before, 'worker processes are running') or diag("no children of $$");
    PAGI::Server::AsyncFile->cleanup($loop);
    my $deadline = time + 10;
    $loop->loop_once(0.1) while kids() > 0 && time < $deadline;
    is([ kids() ], [], 'none is left after cleanup') or diag(`ps -o pid,ppid,args --ppid $$`);
    is(run_f($AF->file_exists($loop, path('sized'))), 1, 'a call after cleanup starts a new pool');
    PAGI::Server::AsyncFile->cleanup;
    $deadline = time + 10;
    $loop->loop_once(0.1) while kids() > 0 && time < $deadline;
    is([ kids() ], [], 'cleanup without a loop stops every pool');
};

# This process's children, from /proc.
sub kids {
    opendir my $dh, '/proc' or return ();
    my @kids;
    for my $pid (grep { /^[0-9]+$/ } readdir $dh) {
        open my $fh, '<', "/proc/$pid/stat" or next;
        my ($ppid) = (<$fh> // '') =~ /\) \S+ (\d+)/;
        push @kids, $pid if ($ppid // 0) == $$;
    }
    return wantarray ? sort(@kids) : scalar @kids;
}

done_testing;
