package PAGI::Server::AsyncFile;

use strict;
use warnings;

our $VERSION = '0.003000';

use Future::AsyncAwait;
use IO::Async::Function;
use Scalar::Util qw(blessed refaddr);

# Disk reads and writes block whatever poll() says, so each operation runs
# in a worker process of an IO::Async::Function, one pool per loop.
my %POOL;    # refaddr of the loop => [ loop, function ]

my %OPS = (
    slurp => sub {
        my ($path) = @_;
        open my $fh, '<:raw', $path or die "Cannot open $path: $!\n";
        local $/;
        my $data = <$fh>;
        return $data // '';
    },
    pread => sub {
        my ($path, $offset, $len) = @_;
        open my $fh, '<:raw', $path or die "Cannot open $path: $!\n";
        seek $fh, $offset, 0 or die "Cannot seek $path to $offset: $!\n";
        my $buf;
        my $n = read($fh, $buf, $len);
        die "Cannot read $path: $!\n" unless defined $n;
        return ($buf, $n);
    },
    write => sub {
        my ($path, $data, $mode) = @_;
        open my $fh, $mode, $path or die "Cannot open $path: $!\n";
        print {$fh} $data or die "Cannot write $path: $!\n";
        close $fh or die "Cannot write $path: $!\n";
        return length $data;
    },
    size   => sub { my ($path) = @_; my @st = stat $path; return @st ? $st[7] : undef },
    exists => sub { my ($path) = @_; return -e $path ? 1 : 0 },
);

sub _call {
    my ($class, $loop, @args) = @_;
    die "PAGI::Server::AsyncFile: an IO::Async::Loop is required\n"
        unless blessed $loop && $loop->can('add');
    my $pool = $POOL{ refaddr $loop } //= do {
        my $fn = IO::Async::Function->new(
            min_workers  => 1,
            max_workers  => 4,
            idle_timeout => 30,
            code         => sub { my $op = shift; $OPS{$op}->(@_) },
        );
        $loop->add($fn);
        [ $loop, $fn ];
    };
    return $pool->[1]->call(args => \@args);
}

sub _readable {
    my ($path) = @_;
    die "File not found: $path\n" unless -f $path;
    die "Cannot read file: $path\n" unless -r _;
}

async sub read_file {
    my ($class, $loop, $path) = @_;
    _readable($path);
    return await $class->_call($loop, slurp => $path);
}

async sub read_file_chunked {
    my ($class, $loop, $path, $callback, %opts) = @_;
    _readable($path);
    my $size  = $opts{chunk_size} // 65536;
    die "read_file_chunked: chunk_size must be a positive integer\n"
        unless $size =~ /\A[0-9]+\z/ && $size > 0;
    my $pos = $opts{offset} // 0;
    my $end = (stat $path)[7];
    $end = $pos + $opts{length} if defined $opts{length} && $pos + $opts{length} < $end;
    my $total = 0;
    while ($pos < $end) {
        my $want = $end - $pos < $size ? $end - $pos : $size;
        my ($chunk, $got) = await $class->_call($loop, pread => $path, $pos, $want);
        last unless $got;    # the file shrank
        my $r = $callback->($chunk);
        await $r if blessed $r && $r->can('get');
        $pos   += $got;
        $total += $got;
    }
    return $total;
}

async sub write_file {
    my ($class, $loop, $path, $content) = @_;
    return await $class->_call($loop, write => $path, $content // '', '>:raw');
}

async sub append_file {
    my ($class, $loop, $path, $content) = @_;
    return await $class->_call($loop, write => $path, $content // '', '>>:raw');
}

async sub file_size {
    my ($class, $loop, $path) = @_;
    return await $class->_call($loop, size => $path);
}

async sub file_exists {
    my ($class, $loop, $path) = @_;
    return await $class->_call($loop, exists => $path);
}

sub cleanup {
    my ($class, $loop) = @_;
    my @keys = $loop ? (refaddr $loop) : keys %POOL;
    for my $key (@keys) {
        my $pool = delete $POOL{$key} or next;
        my ($l, $fn) = @$pool;
        $fn->stop;    # the worker processes exit
        $l->remove($fn) if $fn->loop;
    }
    return;
}

1;

__END__

=head1 NAME

PAGI::Server::AsyncFile - file reads and writes that do not block an IO::Async loop

=head1 SYNOPSIS

    use PAGI::Server::AsyncFile;

    my $text  = await PAGI::Server::AsyncFile->read_file($loop, 'notes.txt');
    my $bytes = await PAGI::Server::AsyncFile->read_file_chunked($loop, 'big.iso',
        async sub ($chunk) { await $send->({ type => 'http.response.body', body => $chunk, more => 1 }) },
        chunk_size => 65536, offset => 0);
    await PAGI::Server::AsyncFile->write_file($loop, 'out.txt', $text);
    await PAGI::Server::AsyncFile->append_file($loop, 'app.log', "a line\n");
    my $size   = await PAGI::Server::AsyncFile->file_size($loop, 'out.txt');
    my $exists = await PAGI::Server::AsyncFile->file_exists($loop, 'out.txt');
    PAGI::Server::AsyncFile->cleanup($loop);

=head1 DESCRIPTION

A regular file is always "ready" to C<poll>, yet reading or writing it can
block for as long as the disk takes. These class methods run each file
operation in a worker process of an L<IO::Async::Function> (one pool per
loop: at least 1 and at most 4 workers, idle ones leaving after 30 s) and
return L<Future>s, so the loop keeps serving meanwhile.

PAGI::Server itself does not need this module to send files: a
C<file> or C<fh> response body is read by the server's Rust core. It is
kept for applications written against the reference server's helper.

Every method takes the L<IO::Async::Loop> first (anything else dies).

=head1 METHODS

=head2 read_file($loop, $path)

The whole file, as bytes. Dies (the Future fails) with C<File not found:
PATH> when there is no regular file, or C<Cannot read file: PATH> when it
cannot be read.

=head2 read_file_chunked($loop, $path, $callback, %opts)

Reads the file in pieces and calls C<< $callback->($chunk) >> with each,
waiting for the Future it returns, if any, before reading on. Resolves to
the number of bytes read. Options: C<chunk_size> (default 65536),
C<offset> (where to start, default 0) and C<length> (at most this many
bytes; default: to the end). A file that shrinks while it is read ends the
reading early. Fails as C<read_file> does.

=head2 write_file($loop, $path, $content)

Creates or replaces the file with C<$content>; resolves to the number of
bytes written. Fails with C<Cannot open PATH: REASON> (or C<Cannot write>).

=head2 append_file($loop, $path, $content)

Adds C<$content> at the end of the file, creating it if needed; resolves to
the number of bytes written.

=head2 file_size($loop, $path)

The size in bytes, or undef when nothing is at C<$path>.

=head2 file_exists($loop, $path)

1 when something (a file, a directory, ...) is at C<$path>, else 0.

=head2 cleanup($loop)

Stops the worker pool of C<$loop> (of every loop without an argument).
The next call starts a new one.

=cut
