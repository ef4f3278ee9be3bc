package PAGI::Server::Workers;

use strict;
use warnings;

use Future;
use PAGI::Server::Options ();
use IO::Async::Handle;
use IO::Async::Stream;
use POSIX ();
use Scalar::Util qw(weaken);

our $VERSION = '0.003000';

# Pre-fork mode (workers => N): the parent binds every listener, then forks
# N workers. Each worker builds its own loop and a single-process
# PAGI::Server on the inherited sockets, runs lifespan, and serves until
# SIGTERM. The parent respawns workers that die and, on shutdown, stops
# them all and removes the sockets it created.

# Options a worker's server is built with, besides app and its listeners.
my @PASSED = PAGI::Server::Options::names_with('worker');

sub start {
    my ($server) = @_;
    my $loop = $server->loop;
    my $err = $server->_bind(reserve_tcp => $server->{reuseport});
    return Future->fail($err) if $err;
    # Only this process holds the write end; each worker watches the read
    # end and sees end-of-file when the master is gone, however it died.
    pipe(my $lifeline_r, my $lifeline_w)
        or return Future->fail("Cannot create the workers' lifeline pipe: $!\n");
    $server->{_lifeline}       = [ $lifeline_r, $lifeline_w ];
    _watch_startup_reports($server) or return Future->fail("Cannot create the workers' report pipe: $!\n");
    $server->{worker_pids}     = {};
    $server->{running}         = 1;
    # Started by a hot restart (USR2): the master that started this one
    # is retired once every worker here is ready.
    my $old = delete $ENV{PAGI_MASTER_PID};
    $server->{_take_over_from} = $old if defined $old && $old =~ /\A[1-9][0-9]*\z/ && $old != $$;
    # Before any worker can answer a request: a TERM sent once one has
    # must find the handler (it reaches shutdown, which stops the workers).
    $server->_install_signals;
    _spawn($server, $_) for 1 .. $server->{workers};
    _watch_heartbeats($server);
    $server->_log(info => $server->_banner . " workers: $server->{workers}");
    return Future->done($server);
}

# Workers tell the master, one line each through a shared pipe, whether
# their lifespan startup succeeded ("ready N") or why not ("failed N
# REASON"). The first "ready" completes $server->{_workers_ready} (the
# daemon's launcher waits for it); the first reason is kept for the message
# given when every worker failed.
sub _watch_startup_reports {
    my ($server) = @_;
    pipe(my $r, my $w) or return 0;
    $r->blocking(0);    # _drain_reports reads what is there, never waits
    $server->{_reports}       = [ $r, $w ];
    $server->{_workers_ready} = $server->loop->new_future;
    weaken(my $weak = $server);
    my $stream = IO::Async::Stream->new(
        read_handle => $r,
        on_read     => sub {
            my (undef, $buf) = @_;
            while ($$buf =~ s/\A([^\n]*)\n//) {
                _on_report($weak, $1) if $weak;
            }
            return 0;
        },
    );
    $server->add_child($stream);
    $server->{_reports_stream} = $stream;
    return 1;
}

sub _on_report {
    my ($server, $line) = @_;
    if ($line =~ /\Abeat [0-9]+ ([0-9]+)\z/) {
        my $info = $server->{worker_pids}{$1};
        $info->{beat} = time if $info;
    }
    elsif ($line =~ /\Aready [0-9]+ ([0-9]+)\z/) {
        my $f = $server->{_workers_ready};
        $f->done if $f && !$f->is_ready;
        my $info = $server->{worker_pids}{$1};
        $info->{ready} = 1 if $info;
        _replaced($server, $1);
        _take_over($server);
    }
    elsif ($line =~ /\Aretire ([0-9]+) ([0-9]+)\z/) {
        _replace($server, $1, $2, 'reached max_requests');
    }
    elsif ($line =~ /\Afailed ([0-9]+) (.*)\z/) {
        $server->{_startup_failure} //= "worker $1: $2";
    }
}

# Reports already written but not yet read: a worker's exit can be seen
# before the line it wrote just before exiting.
sub _drain_reports {
    my ($server) = @_;
    my $r = $server->{_reports} && $server->{_reports}[0] or return;
    my $text = '';
    while (sysread($r, my $chunk, 65536)) { $text .= $chunk }
    _on_report($server, $1) while $text =~ s/\A([^\n]*)\n//;
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

# A worker is to be replaced (max_requests, or SIGHUP): its replacement
# starts now; the old worker serves on until the new one is ready
# (_replaced), so no request finds fewer workers than before.
sub _replace {
    my ($server, $num, $old, $why) = @_;
    my $info = $server->{worker_pids}{$old} or return;
    return if $info->{retiring} || $info->{replaced_by} || $server->{shutting_down} || !$server->{running};
    my $new = _spawn($server, $num);
    $info->{replaced_by} = $new;
    $server->{worker_pids}{$new}{replaces} = $old;
    $server->_log(info => "Worker $num (PID $old) $why; starting its replacement (PID $new)");
}

# A replacement is ready: the worker it replaces stops gracefully, and a
# rolling restart (SIGHUP) goes on to the next worker.
sub _replaced {
    my ($server, $new) = @_;
    my $fresh = $server->{worker_pids}{$new} or return;
    my $old = delete $fresh->{replaces} or return;
    if (my $info = $server->{worker_pids}{$old}) {
        $info->{retiring} = 1;
        kill TERM => $old;
    }
    _roll_on($server) if ($server->{_rolling} // 0) == $old;
}

# SIGHUP: every worker serving now is replaced, one at a time, each only
# once its replacement is ready. Workers re-run the app's lifespan; the
# code loaded in the master is not reloaded (that is USR2).
sub restart_workers {
    my ($server) = @_;
    return unless $server->{running} && !$server->{shutting_down};
    my $pids = $server->{worker_pids};
    my %queued = map { $_ => 1 } @{ $server->{_roll} || [] }, ($server->{_rolling} // ());
    my @old = sort { $pids->{$a}{num} <=> $pids->{$b}{num} }
        grep { !$pids->{$_}{retiring} && !$pids->{$_}{replaced_by} && !$pids->{$_}{replaces} && !$queued{$_} }
        keys %$pids;
    push @{ $server->{_roll} }, @old;
    $server->_log(info => 'Received SIGHUP: replacing ' . scalar(@old) . ' workers one by one');
    _roll_on($server) unless $server->{_rolling};
}

sub _roll_on {
    my ($server) = @_;
    delete $server->{_rolling};
    while (defined(my $pid = shift @{ $server->{_roll} || [] })) {
        my $info = $server->{worker_pids}{$pid} or next;    # gone meanwhile
        next if $info->{retiring} || $info->{replaced_by};
        $server->{_rolling} = $pid;
        _replace($server, $info->{num}, $pid, 'is being restarted (SIGHUP)');
        return if $info->{replaced_by};
        delete $server->{_rolling};
    }
}

# Heartbeats: each worker's loop reports every heartbeat_timeout / 5
# seconds. A worker silent for heartbeat_timeout (its loop blocked, e.g.
# by app code that never yields) is killed with SIGKILL and respawned. An
# app awaiting slow I/O leaves the loop running, so it keeps beating.
sub _watch_heartbeats {
    my ($server) = @_;
    my $limit = $server->{heartbeat_timeout} or return;
    require IO::Async::Timer::Periodic;
    weaken(my $weak = $server);
    my $timer = IO::Async::Timer::Periodic->new(
        interval => $limit / 2,
        on_tick  => sub {
            return unless $weak && !$weak->{shutting_down};
            my $now = time;
            while (my ($pid, $info) = each %{ $weak->{worker_pids} }) {
                next if $info->{killed} || $now - ($info->{beat} // $info->{started}) <= $limit;
                $weak->_log(warn => "Worker $info->{num} (PID $pid) sent no heartbeat for ${limit}s "
                    . '(its event loop is blocked); killing it with SIGKILL');
                $info->{killed} = 1;
                kill KILL => $pid;
            }
        },
    );
    $server->add_child($timer);
    $timer->start;
    $server->{_heartbeat_timer} = $timer;
}

# A worker's side of the heartbeat, on its own loop.
sub _beat {
    my ($parent, $loop, $num) = @_;
    my $limit = $parent->{heartbeat_timeout} or return;
    require IO::Async::Timer::Periodic;
    my $timer = IO::Async::Timer::Periodic->new(
        interval => $limit / 5,
        on_tick  => sub { _report($parent, "beat $num $$") },
    );
    $loop->add($timer);
    $timer->start;
}

# SIGUSR2: hot restart. A new master is started from this one's command
# line; it adopts the listening sockets (PAGI_REUSE), starts its workers and,
# once they are all ready, sends this master SIGTERM (it finds the PID in
# PAGI_MASTER_PID). Until then this master serves on; if the new one
# exits first, the restart failed and this one simply keeps serving.
sub hot_restart {
    my ($server) = @_;
    return unless $server->{running} && !$server->{shutting_down};
    if (my $pid = $server->{_successor}) {
        $server->_log(warn => "Received SIGUSR2 while a hot restart is under way (new master PID $pid); ignoring it");
        return;
    }
    my @cmd = @PAGI::Server::START_COMMAND;
    my $dir = $PAGI::Server::START_DIR;
    my $pid = fork;
    unless (defined $pid) {
        $server->_log(error => "Hot restart: cannot fork: $!; serving on");
        return;
    }
    if ($pid == 0) {
        my @keep = PAGI::Server::Listeners::inheritable($server);
        $ENV{PAGI_MASTER_PID} = getppid;
        # The new master starts with default signal handling and nothing
        # blocked, whatever this process had.
        $SIG{$_} = 'DEFAULT' for qw(TERM INT HUP USR2 TTIN TTOU CHLD PIPE);
        POSIX::sigprocmask(POSIX::SIG_SETMASK(), POSIX::SigSet->new);
        chdir $dir if defined $dir;
        { no warnings 'exec'; exec { $cmd[0] } @cmd; }
        print STDERR "PAGI Server hot restart: cannot run $cmd[0]: $!\n";
        POSIX::_exit(127);
    }
    $server->{_successor} = $pid;
    delete $server->{_succeeded};
    weaken(my $weak = $server);
    $server->loop->watch_process($pid => sub {
        my (undef, $status) = @_;
        return unless $weak;
        delete $weak->{_successor};
        # With --daemonize the process started here is the new master's
        # launcher: it exits 0 once the daemon's first worker is ready.
        if ($status == 0) {
            $weak->{_succeeded} = 1;
            return;
        }
        return unless $weak->{running};
        $weak->_log(error => "Hot restart failed: the new master (PID $pid) exited ("
            . _how_ended($status) . ') before taking over; this master serves on');
    });
    $server->_log(info => "Received SIGUSR2: hot restart, new master PID $pid; serving until it takes over");
}

# A new master (hot restart) retires the old one once all its workers are ready.
sub _take_over {
    my ($server) = @_;
    my $old = $server->{_take_over_from} or return;
    my $ready = grep { $_->{ready} } values %{ $server->{worker_pids} };
    return if $ready < $server->{workers};
    delete $server->{_take_over_from};
    if (kill 0 => $old) {
        $server->_log(info => "Hot restart: $ready workers ready; stopping the old master (PID $old)");
        kill TERM => $old;
    }
    else {
        $server->_log(warn => "Hot restart: the old master (PID $old) is gone already");
    }
}

sub _how_ended {
    my ($status) = @_;
    return 'killed by signal ' . ($status & 127) if $status & 127;
    return 'exit status ' . ($status >> 8);
}

# SIGTTIN: one more worker, numbered after the highest in use.
sub add_worker {
    my ($server) = @_;
    return unless $server->{running} && !$server->{shutting_down};
    my ($top) = sort { $b <=> $a } map { $_->{num} } values %{ $server->{worker_pids} };
    my $num = ($top // 0) + 1;
    $server->{workers}++;
    my $pid = _spawn($server, $num);
    $server->_log(info => "Received SIGTTIN: started worker $num (PID $pid); $server->{workers} workers");
}

# SIGTTOU: one worker fewer, never below one. The highest-numbered worker
# still serving is told to stop gracefully and is not respawned.
sub remove_worker {
    my ($server) = @_;
    return unless $server->{running} && !$server->{shutting_down};
    my @serving = sort { $server->{worker_pids}{$b}{num} <=> $server->{worker_pids}{$a}{num} }
        grep { !$server->{worker_pids}{$_}{retiring} } keys %{ $server->{worker_pids} };
    if (@serving <= 1) {
        $server->_log(warn => 'Received SIGTTOU with one worker left; keeping it');
        return;
    }
    my $pid = $serving[0];
    $server->{worker_pids}{$pid}{retiring} = 1;
    $server->{workers}--;
    kill TERM => $pid;
    $server->_log(info => "Received SIGTTOU: stopping worker $server->{worker_pids}{$pid}{num} (PID $pid); $server->{workers} workers");
}

sub _reap {
    my ($server, $pid, $status) = @_;
    my $info = delete $server->{worker_pids}{$pid} or return;
    return if $info->{retiring};    # removed by SIGTTOU, or replaced
    if ($server->{shutting_down} || !$server->{running}) {
        if (!%{ $server->{worker_pids} } && (my $f = $server->{_workers_gone})) {
            $f->done unless $f->is_ready;
        }
        return;
    }
    if (my $new = $info->{replaced_by}) {
        # Its replacement is already starting and takes its place.
        if ($server->{worker_pids}{$new}) {
            $server->_log(warn => "Worker $info->{num} (PID $pid) exited (" . _how_ended($status)
                . ") while its replacement (PID $new) was starting");
            return;
        }
    }
    my $code = $status >> 8;
    my $old  = $info->{replaces} && $server->{worker_pids}{ $info->{replaces} };
    delete $old->{replaced_by} if $old;    # the worker it was to replace serves on
    if ($code == 2 && !($status & 127)) {
        # Lifespan startup failed: respawning would fail the same way.
        $server->_log(warn => "Worker $info->{num} startup failed, not respawning");
        if ($old && $server->{_rolling}) {
            $server->_log(error => 'SIGHUP restart stopped: a new worker failed to start; the remaining old workers serve on');
            delete @$server{qw(_roll _rolling)};
        }
        if (!%{ $server->{worker_pids} }) {
            _drain_reports($server);
            $server->_log(error => 'All workers have exited and none were respawned; shutting down');
            $server->{_workers_failed} = 1;
            $server->shutdown->on_ready(sub { $server->loop->stop if $server && $server->loop });
        }
        return;
    }
    $server->_log(warn => "Worker $info->{num} (PID $pid) " . ($old ? 'died before it was ready' : 'exited')
        . ' (' . _how_ended($status) . '), respawning');
    if ($old) {
        _replace($server, $info->{num}, $info->{replaces}, 'still needs a replacement');
    }
    else {
        _spawn($server, $info->{num});
    }
}

# Runs in the child; the return value is the exit status.
sub _run_worker {
    my ($parent, $num) = @_;
    return 1 unless $parent;
    # The parent alone reacts to Ctrl-C; operator signals meant for the
    # master (HUP, TTIN, TTOU, USR2) must not kill or stop a worker.
    $SIG{$_} = 'IGNORE' for qw(INT HUP TTIN TTOU USR2);
    # A TERM that arrives before listen has installed the server's handler
    # is remembered, so startup still ends in a clean shutdown.
    my $term = 0;
    local $SIG{TERM} = sub { $term = 1 };
    my $loop = IO::Async::Loop->new;
    _watch_master($loop, $parent, $num);
    _beat($parent, $loop, $num);    # from before lifespan startup, which may be slow
    my %opt = map { exists $parent->{$_} ? ($_ => $parent->{$_}) : () } @PASSED;
    my $worker = PAGI::Server->new(
        %opt,
        app        => $parent->{app},
        quiet      => 1,    # workers report errors only, as in the reference
        _from_parent => $parent->{_held},
        _worker    => $num,
    );
    # The master's listeners, as bound (ports resolved): with reuseport a
    # worker binds its own sockets to them.
    $worker->{listeners} = [ map { +{%$_} } @{ $parent->{listeners} } ];
    $loop->add($worker);
    my $ok = eval { $worker->listen->get; 1 };
    unless ($ok) {
        my $err = $@;
        $err =~ s/\s+\z//;
        $worker->_log(error => "Worker $num ($$): startup failed: $err");
        _report($parent, "failed $num $err");
        return 2;
    }
    _report($parent, "ready $num $$");
    $worker->{_on_retire} = sub { _report($parent, "retire $num $$") };
    if ($term) {
        $worker->shutdown->get;
        return 0;
    }
    $loop->run;
    return 0;
}

# One line to the master; short enough to be written in one piece.
sub _report {
    my ($parent, $line) = @_;
    my $fh = $parent->{_reports}[1] or return;
    $line =~ s/[\r\n]+/ /g;
    syswrite $fh, substr($line, 0, 1000) . "\n";
    return;
}

# A worker never outlives its master: when the lifeline pipe reaches EOF
# (the master exited or was killed, even by SIGKILL) the worker shuts down
# as on SIGTERM: it stops accepting, finishes its requests within
# shutdown_timeout, runs lifespan shutdown and exits.
sub _watch_master {
    my ($loop, $parent, $num) = @_;
    my ($r, $w) = @{ $parent->{_lifeline} };
    close $w;
    my $master = getppid;
    my $watch;
    $watch = IO::Async::Handle->new(
        read_handle   => $r,
        on_read_ready => sub {
            my $n = sysread $r, my $buf, 64;
            return if !defined $n && ($!{EAGAIN} || $!{EINTR});
            $loop->remove($watch);
            undef $watch;
            warn "PAGI Server worker $num ($$): master process $master is gone, shutting down\n";
            # The same path as SIGTERM: before listen has installed the
            # server's handler, _run_worker's own handler notes it.
            kill TERM => $$;
        },
    );
    $loop->add($watch);
    return;
}

# Stops every worker (TERM, then KILL after shutdown_timeout) and releases
# the listeners. Returns a Future.
sub shutdown {
    my ($server) = @_;
    my $loop = $server->loop;
    $server->{running}       = 0;
    $server->{shutting_down} = 1;
    # Stuck workers are SIGKILLed after shutdown_timeout instead.
    if (my $t = delete $server->{_heartbeat_timer}) {
        $t->stop;
        $server->remove_child($t);
    }
    # A hot restart's new master is alive (or its daemon is): it serves
    # these sockets now (its SIGTERM is why this master stops), so the
    # socket files stay.
    $server->{_handed_over} = 1
        if $server->{_succeeded} || ($server->{_successor} && kill 0 => $server->{_successor});
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
        # Only now: a second TERM or INT while workers drain is absorbed.
        $weak->_remove_signals;
        close $_ for @{ delete $weak->{_lifeline} || [] };
        if (my $stream = delete $weak->{_reports_stream}) {
            $weak->remove_child($stream) if $stream->parent;
        }
        close $_ for @{ delete $weak->{_reports} || [] };
        delete $weak->{_workers_ready};
        PAGI::Server::Listeners::release($weak, $weak->{_handed_over});
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

Each worker ignores C<SIGINT>, C<SIGHUP>, C<SIGTTIN>, C<SIGTTOU> and
C<SIGUSR2>. It holds the read end of a pipe whose write end only the parent
holds: when that pipe reaches end-of-file - the parent is gone, whether it
exited, crashed or was killed with C<SIGKILL> - the worker logs that its
master is gone and shuts down as on C<SIGTERM>, so it never keeps the port
or serves on without a master. After its lifespan startup a worker reports
success or failure to the parent through a second pipe; the first success
is when C<pagi-server --daemonize> lets its launcher exit, and the first
failure's reason is part of the error when every worker failed.

The parent serves nothing itself. It records its workers in
C<< $server->{worker_pids} >> (PID => info) and starts a new worker when one
exits (except after a lifespan startup failure, exit status 2).

A worker is replaced without refusing any request: its replacement starts
first, and only once that one reports ready does the old worker stop
gracefully (finishing its requests, running lifespan shutdown). This is
how C<max_requests> retires a worker (at that many requests, plus up to
10% so that workers do not all go at once), and how C<SIGHUP> replaces
every worker, one at a time.

With C<heartbeat_timeout>, each worker also reports from a timer on its
loop; one that has been silent that long (its loop is blocked) is killed
with C<SIGKILL> and respawned.

C<SIGTTIN> to the master starts one more worker; C<SIGTTOU> stops the
highest-numbered one gracefully and does not replace it, but never the last
one. C<SIGUSR2> starts a new master from the same command line, which
adopts the listening sockets (C<PAGI_REUSE>, see
L<PAGI::Server::Listeners>) and sends this one C<SIGTERM> once all its
workers are ready; until then, or if it fails, this master serves on.

C<SIGTERM>/C<SIGINT> or C<< $server->shutdown >> sends C<SIGTERM> to every
worker, waits up to C<shutdown_timeout> seconds (then C<SIGKILL>), closes the
listeners and unlinks the Unix socket files it created (not when a hot
restart's new master serves them).

=cut
