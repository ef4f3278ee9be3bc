package ProcTest;

# Test helper for tests that run servers as separate processes: start
# bin/pagi-server (or perl code) with the same modules this test loaded, or
# any other command, with its output in files; find a process's children
# through /proc, wait with a time bound, talk plain HTTP with blocking
# sockets and bounded reads, and kill by PID every process that was started
# or seen, even when the test dies.
#
# PAGI_TEST_BIN names the pagi-server script to run (default: this
# checkout's bin/pagi-server), so a test can be pointed at another build:
#   PAGI_TEST_BIN=/tmp/baseline/blib/script/pagi-server \
#     prove -I/tmp/baseline/blib/lib -I/tmp/baseline/blib/arch t/X.t

use strict;
use warnings;

use Exporter 'import';
use Cwd qw(abs_path);
use File::Basename qw(dirname);
use File::Spec;
use File::Temp qw(tempdir);
use IO::Select;
use IO::Socket::INET;
use IO::Socket::UNIX;
use POSIX qw(WNOHANG WIFEXITED WEXITSTATUS WIFSIGNALED WTERMSIG);
use Test2::API qw(context);
use Test2::Tools::Basic qw(ok);
use Test2::Tools::Compare qw(is);
use Socket qw(SOCK_STREAM);
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(
    start_cmd finish_cmd stop_cmd cmd_output
    spawn spawn_cli reap wait_until children_of alive proc_state watch
    slurp listening_port open_request read_response http_get write_file
    tmpdir pids_with_arg log_lines how_it_ended workers_busy cli_argv marked_pids start_pagi
);

my $ROOT = abs_path(dirname(__FILE__) . '/../..');
my $MAIN = $$;
my $TMP  = tempdir(CLEANUP => 1);
# Every process this test starts inherits the mark, so that even one it
# never saw (a hot restart's new master, a daemon) is found by marked_pids
# and killed at the end.
$ENV{PAGI_TEST_MARK} = $TMP;
my %SEEN;       # every pid started or observed, killed at the end
my %REAPABLE;   # our own children, still to be reaped

sub tmpdir { $TMP }

sub cli_path { $ENV{PAGI_TEST_BIN} // "$ROOT/bin/pagi-server" }

# The child perl sees exactly the modules this test loads.
sub _inc { return map { "-I$_" } grep { !ref } @INC }

sub write_file {
    my ($name, $text) = @_;
    my $path = File::Spec->catfile($TMP, $name);
    open my $fh, '>', $path or die "write $path: $!";
    print {$fh} $text;
    close $fh or die "close $path: $!";
    return $path;
}

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    return scalar <$fh>;
}

# start_cmd(argv => [...], env => {...}, pgrp => 1, name => 'caddy',
# stdout => $fh): runs a command (no shell) with stdin from /dev/null and
# stdout and stderr in files ($fh instead takes stdout: the write end of a
# pipe). With pgrp the child leads a new process group (as a shell job
# would). Returns { pid, out, err, name }; finish_cmd() waits for it,
# stop_cmd() stops it, and it is killed at the end if still there.
sub start_cmd {
    my (%o) = @_;
    my $name = $o{name} // 'cmd';
    my $base = File::Spec->catfile($TMP, "$name." . int(rand 1e9));
    my @argv = @{ $o{argv} };
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        setpgrp(0, 0) if $o{pgrp};
        %ENV = (%ENV, %{ $o{env} || {} });
        open STDIN,  '<', '/dev/null' or POSIX::_exit(127);
        ($o{stdout} ? open(STDOUT, '>&', $o{stdout}) : open(STDOUT, '>', "$base.stdout")) or POSIX::_exit(127);
        open STDERR, '>', "$base.stderr" or POSIX::_exit(127);
        { exec { $argv[0] } @argv }
        print STDERR "exec $argv[0]: $!\n";
        POSIX::_exit(127);
    }
    $SEEN{$pid} = $REAPABLE{$pid} = 1;
    return { pid => $pid, out => "$base.stdout", err => "$base.stderr", name => $name };
}

# spawn(argv => [...], ...): start_cmd() of $^X with this test's @INC and
# the given arguments.
sub spawn {
    my (%o) = @_;
    return start_cmd(name => 'proc', %o, argv => [ $^X, _inc(), @{ $o{argv} } ]);
}

sub spawn_cli {
    my (%o) = @_;
    return spawn(%o, argv => [ cli_path(), @{ $o{args} } ]);
}

# The command that runs pagi-server with @args as spawn_cli() does, for
# programs that start it themselves (systemd-socket-activate, a shim);
# the library paths are absolute, so a daemon that changes directory
# still finds them.
sub cli_argv {
    return ($^X, (map { '-I' . File::Spec->rel2abs($_) } grep { !ref } @INC), cli_path(), @_);
}

# start_pagi($app, $log, @args): pagi-server in its own process group on
# port 0 with a 5 s shutdown_timeout, serving $app (a file) in production
# mode with T_LOG=$log (see ProcApp). Returns its handle and its port.
sub start_pagi {
    my ($app, $log, @args) = @_;
    my $p = spawn_cli(
        pgrp => 1,
        env  => { T_LOG => $log, PAGI_ENV => 'production' },
        args => [ '-p', 0, '--shutdown-timeout', 5, @args, $app ],
    );
    return ($p, listening_port($p->{err}, 15));
}

# Waits at most $secs for our child $pid; returns the raw wait status or
# undef if it is still running.
sub reap {
    my ($pid, $secs) = @_;
    return undef unless $REAPABLE{$pid};
    my $deadline = time + ($secs // 0);
    while (1) {
        my $got = waitpid $pid, WNOHANG;
        if ($got == $pid) {
            delete $REAPABLE{$pid};
            return $?;
        }
        return undef if time >= $deadline;
        sleep 0.05;
    }
}

# Waits at most $secs for a command from start_cmd() to end, killing it
# (SIGKILL) if it does not. Returns (its wait status or 'timeout', its
# stdout, its stderr).
sub finish_cmd {
    my ($p, $secs) = @_;
    my $st = reap($p->{pid}, $secs);
    unless (defined $st) {
        kill KILL => $p->{pid};
        reap($p->{pid}, 5);
        $st = 'timeout';
    }
    return ($st, cmd_output($p));
}

# Stops a command from start_cmd(): SIGTERM, then SIGKILL after $secs
# (default 10). Returns its wait status, 'killed' when it had to be killed,
# or undef when it was not ours or was reaped already.
sub stop_cmd {
    my ($p, $secs) = @_;
    my $pid = $p && $p->{pid} or return undef;
    return undef unless $REAPABLE{$pid};
    kill TERM => $pid;
    my $st = reap($pid, $secs // 10);
    return $st if defined $st;
    kill KILL => $pid;
    reap($pid, 5);
    return 'killed';
}

# What a command from start_cmd() wrote: (stdout, stderr).
sub cmd_output { my ($p) = @_; return (slurp($p->{out}), slurp($p->{err})) }

sub wait_until {
    my ($secs, $cond) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        return 1 if $cond->();
        sleep 0.05;
    }
    return $cond->() ? 1 : 0;
}

# One-letter state from /proc (R, S, T, Z, ...), undef if gone.
sub proc_state {
    my ($pid) = @_;
    open my $fh, '<', "/proc/$pid/stat" or return undef;
    my $stat = <$fh> // return undef;
    my ($state) = $stat =~ /\) (\S)/;
    return $state;
}

# Alive and not a zombie.
sub alive {
    my ($pid) = @_;
    my $s = proc_state($pid);
    return defined $s && $s ne 'Z' && $s ne 'X' ? 1 : 0;
}

sub children_of {
    my ($ppid) = @_;
    my @kids;
    opendir my $dh, '/proc' or return ();
    for my $pid (grep { /\A[0-9]+\z/ } readdir $dh) {
        open my $fh, '<', "/proc/$pid/stat" or next;
        my $stat = <$fh> // next;
        my ($state, $parent) = $stat =~ /\) (\S) ([0-9]+)/ or next;
        push @kids, $pid if $parent == $ppid && $state ne 'Z';
    }
    watch(@kids);
    return sort { $a <=> $b } @kids;
}

# Live processes whose command line contains $text (e.g. a temp path).
sub pids_with_arg {
    my ($text) = @_;
    my @found;
    opendir my $dh, '/proc' or return ();
    for my $pid (grep { /\A[0-9]+\z/ } readdir $dh) {
        next if $pid == $$;
        open my $fh, '<', "/proc/$pid/cmdline" or next;
        my $cmd = do { local $/; <$fh> } // next;
        push @found, $pid if index($cmd, $text) >= 0 && alive($pid);
    }
    watch(@found);
    return @found;
}

# The lines ProcApp wrote to $log that start with $word.
sub log_lines {
    my ($log, $word) = @_;
    return grep { /^\Q$word\E / } split /\n/, slurp($log);
}

# A wait status in words: 'exit N', 'killed by signal N' or 'still running'.
sub how_it_ended {
    my ($status) = @_;
    return 'still running'                         unless defined $status;
    return 'exit ' . WEXITSTATUS($status)          if WIFEXITED($status);
    return 'killed by signal ' . WTERMSIG($status) if WIFSIGNALED($status);
    return "status $status";
}

# A master with two workers ($p, its ProcApp log, its port): checks both
# started, then starts a /slow request. Returns (\@workers, $slow socket).
sub workers_busy {
    my ($p, $log, $port) = @_;
    my $ctx = context();
    ok($port, 'master is listening') or do { $ctx->release; return };
    ok(wait_until(10, sub { log_lines($log, 'startup') == 2 }), 'both workers started');
    my @workers = children_of($p->{pid});
    is(scalar @workers, 2, 'two workers');
    my $slow = open_request($port, '/slow');
    ok(wait_until(5, sub { log_lines($log, 'slow') == 1 }), 'slow request is running');
    $ctx->release;
    return (\@workers, $slow);
}

# Remembers pids to kill at the end.
sub watch { $SEEN{$_} = 1 for @_; return @_ }

# The port from a server's "listening on http://HOST:PORT/" banner
# (https:// for a TLS server).
sub listening_port {
    my ($errfile, $secs) = @_;
    my $port;
    wait_until($secs // 10, sub {
        ($port) = slurp($errfile) =~ m{listening on https?://[^ ]*:([0-9]+)/};
        defined $port;
    });
    return $port;
}

# Connects (TCP port or Unix socket path) and sends one request.
sub open_request {
    my ($where, $path, %o) = @_;
    my $sock = $where =~ /\A[0-9]+\z/
        ? IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $where, Proto => 'tcp', Timeout => 5)
        : IO::Socket::UNIX->new(Peer => $where, Type => SOCK_STREAM);
    return undef unless $sock;
    my $req = "GET $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    syswrite($sock, $req) == length $req or return undef;
    return $sock;
}

# Reads until EOF or $secs pass; returns what arrived.
sub read_response {
    my ($sock, $secs) = @_;
    my $buf = '';
    my $sel = IO::Select->new($sock);
    my $deadline = time + $secs;
    while ((my $left = $deadline - time) > 0) {
        last unless $sel->can_read($left);
        my $n = sysread $sock, $buf, 65536, length $buf;
        last unless $n;
    }
    close $sock;
    return $buf;
}

sub http_get {
    my ($where, $path, $secs) = @_;
    my $sock = open_request($where, $path) or return '';
    return read_response($sock, $secs // 5);
}

# Live processes carrying this test's mark (see above), this one aside.
sub marked_pids {
    my @found;
    opendir my $dh, '/proc' or return ();
    for my $pid (grep { /\A[0-9]+\z/ && $_ != $$ } readdir $dh) {
        open my $fh, '<', "/proc/$pid/environ" or next;
        my $env = do { local $/; <$fh> } // next;
        push @found, $pid if index("\0$env", "\0PAGI_TEST_MARK=$TMP\0") >= 0;
    }
    return grep { alive($_) } @found;
}

sub _kill_everything {
    return unless $$ == $MAIN;
    my @left = grep { alive($_) } keys %SEEN, marked_pids();
    kill KILL => @left if @left;
    for my $pid (keys %REAPABLE) {
        waitpid $pid, 0 if kill 0, $pid;
    }
}

END {
    local ($!, $?);
    _kill_everything();
}

1;
