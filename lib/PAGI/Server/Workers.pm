package PAGI::Server::Workers;

use strict;
use warnings;

use Future;
use POSIX ();
use Scalar::Util qw(weaken);

our $VERSION = '0.003000';

# Pre-fork mode (workers => N): the parent binds every listener, then forks
# N workers. Each worker builds its own loop and a single-process
# PAGI::Server on the inherited sockets, runs lifespan, and serves until
# SIGTERM. The parent respawns workers that die and, on shutdown, stops
# them all and removes the sockets it created.

# Options a worker's server is built with, besides app and its listeners.
my @PASSED = qw(
    extensions access_log access_log_format log_level timeout max_header_size
    max_header_count max_body_size max_requests shutdown_timeout request_timeout
    min_body_rate
    ws_idle_timeout sse_idle_timeout sync_file_threshold max_receive_queue
    max_ws_frame_size write_high_watermark write_low_watermark max_connections
    lifespan_mode lifespan_startup_timeout validate_events listener_backlog
);

sub start {
    my ($server) = @_;
    my $loop = $server->loop;
    my $text = eval { PAGI::Server::Native::bind_only($server->_native_config) };
    return Future->fail($@) unless defined $text;

    my (@inherited, @bound);
    for my $line (split /\n/, $text) {
        my ($where, $fd) = $line =~ /\A(.*) (\d+)\z/
            or return Future->fail("Unexpected listener line from the core: $line\n");
        # Held open here so the descriptor lives as long as the parent.
        open(my $fh, '+<&=', $fd) or return Future->fail("Cannot hold listener fd $fd: $!\n");
        push @inherited, $fh;
        push @bound, $where;
    }
    $server->_note_bound(@bound);
    $server->{_worker_sockets} = \@inherited;
    $server->{worker_pids}     = {};
    $server->{running}         = 1;
    _spawn($server, $_) for 1 .. $server->{workers};
    $server->_install_signals;    # TERM/INT reach shutdown, which stops the workers
    $server->_log(info => $server->_banner . " workers: $server->{workers}");
    return Future->done($server);
}

sub _spawn {
    my ($server, $num) = @_;
    weaken(my $weak = $server);
    my $pid = $server->loop->fork(
        code    => sub { _run_worker($weak, $num) },
        on_exit => sub {
            my ($pid, $status) = @_;
            _reap($weak, $pid, $status) if $weak;
        },
    );
    $server->{worker_pids}{$pid} = { num => $num, started => time };
    return $pid;
}

sub _reap {
    my ($server, $pid, $status) = @_;
    my $info = delete $server->{worker_pids}{$pid} or return;
    if ($server->{shutting_down} || !$server->{running}) {
        if (!%{ $server->{worker_pids} } && (my $f = $server->{_workers_gone})) {
            $f->done unless $f->is_ready;
        }
        return;
    }
    my $code = $status >> 8;
    if ($code == 2) {
        # Lifespan startup failed: respawning would fail the same way.
        $server->_log(warn => "Worker $info->{num} startup failed, not respawning");
        if (!%{ $server->{worker_pids} }) {
            $server->_log(error => 'All workers have exited and none were respawned; shutting down');
            $server->{_workers_failed} = 1;
            $server->shutdown->on_ready(sub { $server->loop->stop if $server && $server->loop });
        }
        return;
    }
    $server->_log(warn => "Worker $info->{num} (PID $pid) exited with status $code, respawning");
    _spawn($server, $info->{num});
}

# Runs in the child; the return value is the exit status.
sub _run_worker {
    my ($parent, $num) = @_;
    return 1 unless $parent;
    $SIG{INT} = 'IGNORE';    # the parent alone reacts to Ctrl-C
    # A TERM that arrives before listen has installed the server's handler
    # is remembered, so startup still ends in a clean shutdown.
    my $term = 0;
    local $SIG{TERM} = sub { $term = 1 };
    my $loop = IO::Async::Loop->new;
    my %opt = map { exists $parent->{$_} ? ($_ => $parent->{$_}) : () } @PASSED;
    my $worker = PAGI::Server->new(
        %opt,
        app        => $parent->{app},
        quiet      => 1,    # workers report errors only, as in the reference
        _inherited => [ map { fileno $_ } @{ $parent->{_worker_sockets} } ],
        _worker    => $num,
    );
    # The parent's handles stay open in this process only as inherited fds.
    $loop->add($worker);
    my $ok = eval { $worker->listen->get; 1 };
    unless ($ok) {
        my $err = $@;
        $err =~ s/\s+\z//;
        $worker->_log(error => "Worker $num ($$): startup failed: $err");
        return 2;
    }
    if ($term) {
        $worker->shutdown->get;
        return 0;
    }
    $loop->run;
    return 0;
}

# Stops every worker (TERM, then KILL after shutdown_timeout) and releases
# the listeners. Returns a Future.
sub shutdown {
    my ($server) = @_;
    my $loop = $server->loop;
    $server->{running}       = 0;
    $server->{shutting_down} = 1;
    $server->_remove_signals;
    my @pids = keys %{ $server->{worker_pids} };
    kill TERM => @pids if @pids;
    my $gone = $server->{_workers_gone} = $loop->new_future;
    $gone->done unless @pids;
    my $timeout = $server->{shutdown_timeout} || 30;
    weaken(my $weak = $server);
    return Future->wait_any(
        $gone,
        $loop->delay_future(after => $timeout)->then(sub {
            my @left = $weak ? keys %{ $weak->{worker_pids} } : ();
            kill KILL => @left if @left;
            return Future->done;
        }),
    )->then(sub {
        return Future->done unless $weak;
        close $_ for @{ delete $weak->{_worker_sockets} || [] };
        for my $l (grep { $_->{type} eq 'unix' } @{ $weak->{listeners} }) {
            unlink $l->{path} if -S $l->{path};
        }
        return Future->done($weak);
    });
}

1;

__END__

=head1 NAME

PAGI::Server::Workers - pre-forked worker processes for PAGI::Server

=head1 DESCRIPTION

Internal to L<PAGI::Server>; used when it is built with C<< workers => N >>
(N > 0). C<listen> then binds every listener in the calling process and
forks N workers. Each worker creates its own L<IO::Async::Loop> and a
single-process PAGI::Server on the inherited sockets (so lifespan runs once
per worker, with C<is_worker> and C<worker_num> in the lifespan scope's
C<pagi> hash), and serves until it receives C<SIGTERM>, finishing the
requests in progress first.

The parent serves nothing itself. It records its workers in
C<< $server->{worker_pids} >> (PID => info), starts a new worker when one
exits (except after a lifespan startup failure, exit status 2), and on
C<SIGTERM>/C<SIGINT> or C<< $server->shutdown >> sends C<SIGTERM> to every
worker, waits up to C<shutdown_timeout> seconds (then C<SIGKILL>), closes the
listeners and unlinks the Unix socket files it created.

=cut
