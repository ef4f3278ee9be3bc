package PAGI::Server::Listeners;

use strict;
use warnings;

use Fcntl ();
use POSIX ();
use Socket qw(AF_INET AF_INET6 AF_UNIX sockaddr_family unpack_sockaddr_in unpack_sockaddr_in6
              unpack_sockaddr_un inet_ntop);

our $VERSION = '0.003000';

# The listening sockets of a server (single process) or of a master
# (workers => N), held by Perl so that they can be handed on: to workers by
# fork, and to a hot restart's new master by exec (PAGI_REUSE). Each is
# either adopted - a socket named by PAGI_REUSE or systemd's LISTEN_FDS
# whose address is a configured listener's - or bound now by the Rust core
# (PAGI::Server::Native::bind_only). The core then serves duplicates.
#
# $server->{_held} lines up with $server->{listeners}: one
# { fd, tcp, fh?, inherited?, key } per listener. fh is set for the
# sockets bound here, which are closed when the server is done; an
# inherited descriptor is left open, as whoever passed it may still use it.

# A TCP listener's address: HOST:PORT, [IPv6]:PORT.
sub tcp_addr {
    my ($l) = @_;
    return ($l->{host} =~ /:/ ? "[$l->{host}]" : $l->{host}) . ":$l->{port}";
}

# One key per listener address, as PAGI_REUSE writes it (without the fd).
sub key_of {
    my ($l) = @_;
    return $l->{type} eq 'unix' ? "unix:$l->{path}" : tcp_addr($l);
}

# The sockets offered by the environment, by address key:
# { fd, type, host/port or path, source, handle? }. PAGI_REUSE entries are
# `HOST:PORT:FD`, `[V6]:PORT:FD` or `unix:PATH:FD` separated by commas;
# systemd passes LISTEN_FDS descriptors from 3 on, for the process named by
# LISTEN_PID, and its variables are removed in any case (sd_listen_fds), so
# that nothing started later takes the sockets for its own.
sub collect {
    my ($log) = @_;
    my %found;
    for my $entry (split /,/, $ENV{PAGI_REUSE} // '') {
        if ($entry =~ /\Aunix:(.+):([0-9]+)\z/) {
            $found{"unix:$1"} = { fd => 0 + $2, type => 'unix', path => $1, source => 'pagi_reuse' };
        }
        elsif ($entry =~ /\A(\[[^\]]+\]|[^:\[\]]+):([0-9]+):([0-9]+)\z/) {
            my ($host, $port, $fd) = ($1, 0 + $2, 0 + $3);
            $found{"$host:$port"} = { fd => $fd, type => 'tcp', host => $host, port => $port, source => 'pagi_reuse' };
        }
        elsif (length $entry) {
            $log->(warn => "PAGI_REUSE: ignoring malformed entry '$entry' (expected HOST:PORT:FD or unix:PATH:FD)") if $log;
        }
    }
    my $n = $ENV{LISTEN_FDS};
    if (defined $n) {
        if ($n =~ /\A[0-9]+\z/ && ($ENV{LISTEN_PID} // '') eq $$) {
            for my $fd (3 .. 3 + $n - 1) {
                my $got = describe_fd($fd);
                unless (ref $got) {
                    $log->(warn => "LISTEN_FDS: fd $fd: $got; ignoring it") if $log;
                    next;
                }
                $found{ $got->{key} } //= { %$got, fd => $fd, source => 'systemd' };
            }
        }
        delete @ENV{qw(LISTEN_FDS LISTEN_PID LISTEN_FDNAMES)};
    }
    return \%found;
}

# The offered socket for listener $l: the one at its address or, in a hot
# restart's new master, for a TCP listener on port 0, the only one offered
# on its host (the port the old master was given). Not otherwise: in one
# process several servers on port 0 may have listed their sockets.
sub _match {
    my ($offered, $l) = @_;
    my $key = key_of($l);
    return $key if $offered->{$key} || $l->{type} ne 'tcp' || $l->{port} || !defined $ENV{PAGI_MASTER_PID};
    my ($host) = $key =~ /\A(.*):0\z/;
    my @same = grep { /\A\Q$host\E:[0-9]+\z/ } keys %$offered;
    return @same == 1 ? $same[0] : undef;
}

# What listening socket a descriptor holds: { key, type, host, port | path },
# or a reason it cannot be used. Looks through a duplicate, so the caller's
# descriptor is never wrapped (and so never closed) here.
sub describe_fd {
    my ($fd) = @_;
    open(my $dup, '+<&', $fd) or return "not open ($!)";
    my $addr = getsockname($dup) or return 'not a socket';
    my $type = getsockopt($dup, Socket::SOL_SOCKET(), Socket::SO_TYPE());
    return 'not a stream socket' unless $type && unpack('i', $type) == Socket::SOCK_STREAM();
    # A connection (systemd's Accept=yes) is not a listener.
    my $listening = getsockopt($dup, Socket::SOL_SOCKET(), Socket::SO_ACCEPTCONN());
    return 'not a listening socket' unless $listening && unpack('i', $listening);
    my $family = sockaddr_family($addr);
    if ($family == AF_UNIX) {
        my $path = unpack_sockaddr_un($addr);
        return { key => "unix:$path", type => 'unix', path => $path };
    }
    my ($port, $ip, $host);
    if ($family == AF_INET) {
        ($port, $ip) = unpack_sockaddr_in($addr);
        $host = inet_ntop(AF_INET, $ip);
        return { key => "$host:$port", type => 'tcp', host => $host, port => $port };
    }
    if ($family == AF_INET6) {
        ($port, $ip) = unpack_sockaddr_in6($addr);
        $host = inet_ntop(AF_INET6, $ip);
        return { key => "[$host]:$port", type => 'tcp', host => $host, port => $port };
    }
    return "address family $family is not TCP or Unix";
}

# Binds (or adopts) every listener. Returns an error message, or undef.
# $opt{reserve_tcp}: a reuseport master only reserves its TCP ports (bound,
# not listening), as each worker listens on its own socket.
# $opt{from_parent}: a worker's share of its master's _held list; it serves
# the master's sockets, and binds its own where the master only reserved.
sub bind_all {
    my ($server, %opt) = @_;
    my $log = $server->_logger;
    my $parent = $opt{from_parent};
    my $offered = $parent ? {} : collect($log);
    # One bind_only line per listener; undef: a port to reserve. The core
    # only binds here; TLS is set up when it serves (_native_config).
    my @lines;
    for my $i (0 .. $#{ $server->{listeners} }) {
        my $l = $server->{listeners}[$i];
        delete @$l{qw(_inherited _taken_over)};
        my $p = $parent && $parent->[$i];
        if ($p && !$p->{reserved}) {
            push @lines, "listen=fd:$p->{fd}";
            next;
        }
        if (my $inh = delete $offered->{ _match($offered, $l) // '' }) {
            # collect() has looked at systemd's already; PAGI_REUSE only names them.
            my $got = $inh->{source} eq 'systemd' ? $inh : describe_fd($inh->{fd});
            if (ref $got && $got->{type} eq $l->{type}) {
                $l->{_inherited} = 1;
                # A hot restart's new master takes over its predecessor's
                # socket files too; systemd's stay systemd's.
                $l->{_taken_over} = 1 if $inh->{source} eq 'pagi_reuse' && defined $ENV{PAGI_MASTER_PID};
                push @lines, "listen=fd:$inh->{fd}";
                next;
            }
            $log->(warn => "$inh->{source}: fd $inh->{fd} for " . key_of($l) . ': '
                . (ref $got ? "a $got->{type} socket" : $got) . '; binding a new socket instead');
        }
        if ($l->{type} eq 'unix') {
            push @lines, "listen=unix:$l->{path}";
        }
        elsif ($opt{reserve_tcp}) {
            push @lines, undef;
        }
        else {
            push @lines, 'listen=tcp:' . tcp_addr($l);
        }
    }
    # Left over: reported. Those this process surely got by exec (from
    # systemd, or from the master a hot restart replaces) are closed, so
    # that nobody connects to a socket that nothing serves; a PAGI_REUSE
    # entry may also be another server's in this same process.
    for my $key (sort keys %$offered) {
        my $inh = $offered->{$key};
        my $close = $inh->{source} eq 'systemd' || defined $ENV{PAGI_MASTER_PID};
        $log->(warn => "$inh->{source}: inherited socket $key (fd $inh->{fd}) matches no configured listener; "
            . ($close ? 'closing it' : 'not serving it'));
        POSIX::close($inh->{fd}) if $close && ref describe_fd($inh->{fd});
    }

    # Reserved first: if one fails, the sockets reserved so far go with
    # this scope, and nothing was bound yet.
    my %reserved;
    for my $i (grep { !defined $lines[$_] } 0 .. $#lines) {
        my $r = reserve_port($server->{listeners}[$i]);
        return $r unless ref $r;
        $reserved{$i} = $r;
    }
    my @bound;
    if (my @core = grep { defined } @lines) {
        # Sockets that get a socket_mode are created owner-only, then
        # chmod-ed, so they are never briefly reachable with looser permissions.
        my $restrict = grep { $_->{type} eq 'unix' && defined $_->{socket_mode} } @{ $server->{listeners} };
        my $old_umask = $restrict ? umask(0177) : undef;
        my $cfg = join "\n", "backlog=$server->{listener_backlog}",
            ($parent && $server->{reuseport} ? 'reuseport=1' : ()), @core, '';
        my $text = eval { PAGI::Server::Native::bind_only($cfg) };
        umask($old_umask) if defined $old_umask;
        return $@ unless defined $text;
        for my $line (split /\n/, $text) {
            my ($where, $fd) = $line =~ /\A(.*) ([0-9]+)\z/
                or return "Unexpected listener line from the core: $line\n";
            push @bound, { where => $where, fd => $fd };
        }
    }
    my @held;
    delete $server->{bound_port};
    for my $i (0 .. $#lines) {
        my $l = $server->{listeners}[$i];
        my $h = $reserved{$i};
        unless ($h) {
            my $b = shift @bound;
            my ($type, undef, $port) = split / /, $b->{where}, 3;
            $l->{port} = $port if $type eq 'tcp';
            $h = { fd => $b->{fd}, tcp => ($type eq 'tcp' ? 1 : 0), key => key_of($l) };
            if (my ($orig) = $lines[$i] =~ /fd:([0-9]+)\z/) {
                # The core adopted a duplicate, which is not needed: the
                # original is served and handed on, and stays open.
                POSIX::close($b->{fd});
                @$h{qw(fd inherited)} = ($orig, 1);
            }
            else {
                open($h->{fh}, '+<&=', $b->{fd}) or return "Cannot hold listener fd $b->{fd}: $!\n";
            }
        }
        $server->{bound_port} //= $l->{port} if $h->{tcp};
        push @held, $h;
    }
    for my $l (grep { $_->{type} eq 'unix' && defined $_->{socket_mode} && !$_->{_inherited} } @{ $server->{listeners} }) {
        chmod $l->{socket_mode}, $l->{path} unless $parent;
    }
    $server->{_held} = \@held;
    export($server) unless $parent;
    return;
}

# A reuseport master's hold on a TCP port: bound with SO_REUSEPORT but not
# listening, so it takes no connections, yet fixes the port (port 0 is
# resolved once) for the workers' own sockets.
sub reserve_port {
    my ($l) = @_;
    require IO::Socket::IP;
    my $s = IO::Socket::IP->new(
        LocalHost => $l->{host}, LocalPort => $l->{port}, Proto => 'tcp',
        ReuseAddr => 1, ReusePort => 1,
    ) or return "Cannot listen on $l->{host}:$l->{port}: $@\n";
    $l->{port} = $s->sockport;
    return { fh => $s, fd => fileno($s), tcp => 1, reserved => 1, key => key_of($l) };
}

# PAGI_REUSE names every socket held here (replacing entries for the same
# addresses), so that a process this one execs can adopt them.
sub export {
    my ($server) = @_;
    my %mine = map { $_->{key} => "$_->{key}:$_->{fd}" } grep { !$_->{reserved} } @{ $server->{_held} || [] };
    my @keep = grep { my ($k) = /\A(.*):[0-9]+\z/; !($k && $mine{$k}) } split /,/, $ENV{PAGI_REUSE} // '';
    my @all  = (@keep, map { $mine{ $_->{key} } // () } @{ $server->{_held} });
    $ENV{PAGI_REUSE} = join ',', @all;
    delete $ENV{PAGI_REUSE} unless @all;
}

# Clears close-on-exec on the held sockets, in a child about to exec.
# Returns the handles it opened, which the caller keeps until the exec
# (letting one go would close its descriptor).
sub inheritable {
    my ($server) = @_;
    my @kept;
    for my $h (grep { !$_->{reserved} } @{ $server->{_held} || [] }) {
        my $fh = $h->{fh};
        unless ($fh) {
            open($fh, '+<&=', $h->{fd}) or next;
            push @kept, $fh;
        }
        my $flags = fcntl($fh, Fcntl::F_GETFD(), 0) or next;
        fcntl($fh, Fcntl::F_SETFD(), $flags & ~Fcntl::FD_CLOEXEC());
    }
    return @kept;
}

# Done serving: closes the sockets bound here and, unless this is a worker
# (whose master owns the rest), takes them out of PAGI_REUSE and unlinks
# the Unix socket files created here or taken over in a hot restart (never
# one passed otherwise, as by systemd).
# $handed_over: a hot restart's new master serves the sockets now, so the
# files stay.
sub release {
    my ($server, $handed_over) = @_;
    my $held = delete $server->{_held} or return;
    close $_->{fh} for grep { $_->{fh} } @$held;
    return if $server->{_worker};
    my %gone = map { ("$_->{key}:$_->{fd}" => 1) } @$held;
    my @keep = grep { !$gone{$_} } split /,/, $ENV{PAGI_REUSE} // '';
    @keep ? ($ENV{PAGI_REUSE} = join ',', @keep) : delete $ENV{PAGI_REUSE};
    return if $handed_over;
    for my $l (grep { $_->{type} eq 'unix' && (!$_->{_inherited} || $_->{_taken_over}) } @{ $server->{listeners} }) {
        unlink $l->{path} if -S $l->{path};
    }
}

1;

__END__

=head1 NAME

PAGI::Server::Listeners - the listening sockets of PAGI::Server, bound or inherited

=head1 DESCRIPTION

Internal to L<PAGI::Server>. When a server starts (in one process, or as
the master of C<workers>), every configured listener gets a socket here:

=over 4

=item *

a socket named in C<PAGI_REUSE> (left there by the master this process was
started by in a hot restart) or passed by systemd (C<LISTEN_FDS> with
C<LISTEN_PID> equal to this process) whose address is the listener's. It
is adopted instead of bound, and the listener is marked C<_inherited>. A
Unix socket file adopted this way is never unlinked, except by a hot
restart's new master (C<PAGI_MASTER_PID> set), which takes over its
predecessor's sockets, files included. The C<LISTEN_*>
variables are removed from the environment either way. An offered socket
that is not open, not a socket or of the wrong kind is reported, and a new
socket is bound instead; one that matches no listener is reported and left
alone.

=item *

otherwise, a socket bound now (by the Rust core, with C<listener_backlog>
and C<socket_mode>).

=back

Afterwards C<PAGI_REUSE> lists C<ADDRESS:FD> for every listener, so that a
process this one execs (see L<PAGI::Server/SIGNALS>, C<USR2>) can adopt them;
the entries go when the server shuts down.

=cut
