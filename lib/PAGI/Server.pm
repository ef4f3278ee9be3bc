package PAGI::Server;

use strict;
use warnings;

# PAGI_FUTURE_XS=1 asks for the XS implementation of Future; it must be
# loaded before anything creates a Future.
BEGIN {
    if ($ENV{PAGI_FUTURE_XS}) {
        eval { require Future::XS; 1 }
            or die "PAGI_FUTURE_XS=1 is set but Future::XS cannot be loaded: $@";
    }
}

use parent 'IO::Async::Notifier';

use Carp ();
use Future;
use IO::Async::Handle;
# Loaded here as the reference does: code that says only `use PAGI::Server`
# may call IO::Async::Loop->new.
use IO::Async::Loop;
use Scalar::Util qw(weaken blessed);

our $VERSION;
# The XS part loads at compile time: it defines the core's record kinds and
# flags as constant subs (PAGI::Server::Native::REC_BODY, ...), which the
# code below and the modules required next then inline.
BEGIN {
    $VERSION = '0.003000';
    require XSLoader;
    XSLoader::load('PAGI::Server', $VERSION);
}

require PAGI::Server::Lifespan;
require PAGI::Server::Listeners;
require PAGI::Server::TLS;
require PAGI::Server::Request;
require PAGI::Server::WebSocket;

# Every option, its default, and where it goes: see PAGI::Server::Options.
use PAGI::Server::Options ();

# A hot restart (SIGUSR2, PAGI::Server::Workers) runs this process's own
# command line again, from the directory it started in. It is read while
# loading, before anything sets $0 (which overwrites the kernel's copy);
# pagi-server sets both earlier still.
our (@START_COMMAND, $START_DIR);

BEGIN {
    @START_COMMAND = PAGI::Server::Options::command_line() unless @START_COMMAND;
    unless (defined $START_DIR) {
        require Cwd;
        $START_DIR = Cwd::getcwd();
    }
}

# TLS and HTTP/2 are served by the Rust core.
sub has_tls   { 1 }
sub has_http2 { 1 }

# Severity of each log level; the table lists them least severe first.
my %LOG_LEVELS = do {
    my $n = 0;
    map { $_ => ++$n } @{ PAGI::Server::Options::get('log_level')->{values} };
};

my $LOOP_TYPE_RE = qr/\A[A-Za-z][A-Za-z0-9_]*(?:::[A-Za-z][A-Za-z0-9_]*)*\z/;

sub _init {
    my ($self, $params) = @_;

    $self->{app} = delete $params->{app} or die "app is required";

    # An option given as undef means its default, as in the reference.
    for my $o (PAGI::Server::Options::all()) {
        next if $o->{own_init} || $o->{cli_only};
        $self->{ $o->{name} } = delete $params->{ $o->{name} }
            // PAGI::Server::Options::default_of($o->{name});
    }
    # Here undef is no default but "no access log".
    $self->{access_log} = exists $params->{access_log} ? delete $params->{access_log}
                        : PAGI::Server::Options::default_of('access_log');

    $self->_normalise_listeners($params);

    for my $k (PAGI::Server::Options::names_with('values')) {
        my $err = PAGI::Server::Options::invalid($k, $self->{$k});
        die $err if $err;
    }
    if ($self->{loop_type} && $self->{loop_type} !~ $LOOP_TYPE_RE) {
        die "Invalid loop_type '$self->{loop_type}': must contain only letters, digits, and ::\n";
    }
    # Checked (a bad atom dies here) and kept as a renderer, as the reference does.
    $self->{_access_log_formatter} = $self->_compile_access_log_format($self->{access_log_format});

    # Set by PAGI::Server::Workers in a worker: the master's listening
    # sockets (its _held list, see PAGI::Server::Listeners) and this
    # worker's number.
    $self->{_from_parent} = delete $params->{_from_parent};
    $self->{_worker}      = delete $params->{_worker};
    $self->{is_worker}    = $self->{_worker} ? 1 : 0;
    # A worker with max_requests asks its master for a replacement after
    # that many requests, plus up to 10% so workers do not all go at once.
    $self->{_retire_after} = $self->{max_requests} + int(rand($self->{max_requests} / 10 + 1))
        if $self->{_worker} && $self->{max_requests};
    $self->_check_tls;
    $self->_check_http2;

    # Test hook: a request for this exact path panics inside the Rust core.
    $self->{_test_panic_path} = delete $params->{_test_panic_path};

    $self->{state}     = {};
    $self->{running}   = 0;
    $self->{requests}  = {};
    $self->SUPER::_init($params);
}

# Compiled by the Rust core, which formats the lines; a bad format dies here
# with the reference's message (naming the atom).
sub _check_access_log_format {
    my ($self, $fmt) = @_;
    return unless defined $fmt;
    die "access_log_format must not contain newlines\n" if $fmt =~ /[\r\n]/;
    my $err = PAGI::Server::Native::check_log_format($fmt);
    die $err if defined $err;
}

# The reference's format-compiler helper, kept for code and tests that call
# it: returns a sub that renders one line from an info hash (client_ip,
# timestamp, method, path, query, http_version, status, size, duration,
# request_headers). Rendering is done by the Rust core's formatter.
sub _compile_access_log_format {
    my ($class, $format) = @_;
    $class->_check_access_log_format($format);
    my @keys = qw(client_ip timestamp method path query http_version status size duration);
    return sub {
        my ($info) = @_;
        my @fields = map { defined $info->{$_} ? [$_, $info->{$_}] : () } @keys;
        push @fields, map { ['header:' . lc $_->[0], $_->[1]] } @{ $info->{request_headers} || [] };
        return PAGI::Server::Native::format_log($format, \@fields);
    };
}

# The ssl option is checked at construction: the settings first (messages
# name the key), then the files, by building the core's TLS configuration
# once (messages name the file).
# The h2_* values HTTP/2 bounds, checked at construction with the option
# named (the core checks them again); and the reference's flags saying how
# HTTP/2 is offered (h2c: on cleartext listeners, by the client preface).
sub _check_http2 {
    my ($self) = @_;
    $self->{http2_enabled} = $self->{http2} ? 1 : 0;
    $self->{h2c_enabled}   = $self->{http2} && !$self->_tls ? 1 : 0;
    my $fs = $self->{h2_max_frame_size};
    die "h2_max_frame_size must be between 16384 and 16777215 (got $fs)\n"
        unless $fs =~ /\A[0-9]+\z/ && $fs >= 16384 && $fs <= 16777215;
    my $w = $self->{h2_initial_window_size};
    die "h2_initial_window_size must be between 0 and 2147483647 (got $w)\n"
        unless $w =~ /\A[0-9]+\z/ && $w <= 2147483647;
    for my $k (qw(h2_max_concurrent_streams h2_max_header_list_size)) {
        my $v = $self->{$k};
        die "$k must be a positive integer (got $v)\n"
            unless $v =~ /\A[0-9]+\z/ && $v >= 1 && $v <= 4294967295;
    }
    my $rl = $self->{h2_rst_rate_limit};
    die "h2_rst_rate_limit must be a hash reference { burst => N, rate => N }\n"
        unless ref $rl eq 'HASH';
    for my $k (sort keys %$rl) {
        die "h2_rst_rate_limit: unknown key '$k' (expected burst and rate)\n"
            unless $k eq 'burst' || $k eq 'rate';
    }
    for my $k (qw(burst rate)) {
        my $v = $rl->{$k} // die "h2_rst_rate_limit: $k is required\n";
        die "h2_rst_rate_limit: $k must be a positive integer (got $v)\n"
            unless $v =~ /\A[0-9]+\z/ && $v >= 1 && $v <= 4294967295;
    }
    return;
}

sub _check_tls {
    my ($self) = @_;
    my $ssl = $self->{ssl} or return;
    if ($self->{disable_tls}) {
        warn "PAGI::Server: TLS disabled via disable_tls option, ssl config ignored\n";
        return;
    }
    PAGI::Server::TLS::check($ssl);
    my $h = PAGI::Server::Native::new($self->_native_config);
    PAGI::Server::Native::free($h);
    return;
}

# TLS settings in effect (none when disable_tls is set).
sub _tls { $_[0]{disable_tls} ? undef : $_[0]{ssl} }

# The ssl option as IO::Socket::SSL parameters, as the reference server
# builds them, with an OpenSSL context made from them in $self->{_ssl_ctx}
# when IO::Socket::SSL is installed (it reads cipher_list strings). The
# core serves TLS itself; this is the OpenSSL view of the same settings.
sub _build_ssl_config {
    my ($self) = @_;
    my $ssl = $self->_tls or return;
    my $params = PAGI::Server::TLS::openssl_params($ssl);
    my ($ctx, $why) = PAGI::Server::TLS::openssl_context($params);
    $self->_log(debug => "No OpenSSL view of the ssl settings: $why") unless $ctx;
    if ($ctx) {
        $self->{_ssl_ctx} = $ctx;
        $params->{SSL_reuse_ctx} = $ctx;
    }
    $params->{SSL_alpn_protocols} = ['h2', 'http/1.1'] if $self->{http2};
    $self->{tls_enabled} = 1;
    $self->{extensions}{tls} //= {};
    return $params;
}

sub _normalise_listeners {
    my ($self, $p) = @_;
    my ($listen, $host, $port, $socket, $mode) = map { delete $p->{$_} } qw(listen host port socket);
    $mode = $self->{socket_mode};
    my @specs;
    if ($listen) {
        die "Cannot specify both 'listen' and 'host' options\n"        if defined $host;
        die "Cannot specify both 'listen' and 'port' options\n"        if defined $port;
        die "Cannot specify both 'listen' and 'socket' options\n"      if defined $socket;
        die "Cannot specify both 'listen' and 'socket_mode' options\n" if defined $mode;
        die "'listen' must be a non-empty arrayref\n"
            unless ref $listen eq 'ARRAY' && @$listen;
        for my $spec (@$listen) {
            die "Each listen spec must be a hashref\n" unless ref $spec eq 'HASH';
            if ($spec->{socket}) {
                die "Cannot specify both 'socket' and 'host' in a listen spec\n" if $spec->{host};
                die "Cannot specify both 'socket' and 'port' in a listen spec\n" if $spec->{port};
                push @specs, { type => 'unix', path => $spec->{socket}, socket_mode => $spec->{socket_mode} };
            }
            else {
                die "TCP listen spec requires both 'host' and 'port'\n"
                    unless defined $spec->{host} && defined $spec->{port};
                push @specs, { type => 'tcp', host => $spec->{host}, port => $spec->{port} };
            }
        }
    }
    elsif (defined $socket) {
        die "Cannot specify both 'socket' and 'host' options\n" if defined $host;
        die "Cannot specify both 'socket' and 'port' options\n" if defined $port;
        push @specs, { type => 'unix', path => $socket, socket_mode => $mode };
    }
    else {
        $host //= PAGI::Server::Options::default_of('host');
        $port //= PAGI::Server::Options::default_of('port');
        $self->{host} = $host;
        $self->{port} = $port;
        push @specs, { type => 'tcp', host => $host, port => $port };
    }
    $_->{ssl} = $self->{ssl} for grep { $_->{type} eq 'tcp' && $self->{ssl} } @specs;
    $self->{listeners} = \@specs;
}

sub configure {
    my ($self, %params) = @_;
    my $tls_changed;
    for my $k (keys %params) {
        my $o = PAGI::Server::Options::get($k) or next;    # IO::Async::Notifier's
        my $when = $o->{reconfigure} or next;    # construction only: refused below
        my $v = delete $params{$k};
        next if $when eq 'ignored';    # listener layout is fixed at construction
        my $err = PAGI::Server::Options::invalid($k, $v);
        die $err if $err;
        $self->{_access_log_formatter} = $self->_compile_access_log_format($v)
            if $k eq 'access_log_format';
        $self->{$k} = $v;
        $tls_changed ||= $k eq 'ssl';
    }
    $self->_check_tls if $tls_changed;
    $self->_check_http2;
    $self->SUPER::configure(%params);
}

# ---------------------------------------------------------------- logging

sub _log {
    my ($self, $level, $msg) = @_;
    my $n = $LOG_LEVELS{$level} // 2;
    return if $n < $LOG_LEVELS{ $self->{log_level} // 'info' };
    return if $self->{quiet} && $level ne 'error';
    warn "$msg\n";
}

sub _write_access_log {
    my ($self, $line) = @_;
    my $fh = $self->{access_log} or return;
    print {$fh} $line, "\n";
}

# ------------------------------------------------------------- accessors

sub port {
    my ($self) = @_;
    return $self->{bound_port} // $self->{port};
}

sub socket_path {
    my ($self) = @_;
    my ($u) = grep { $_->{type} eq 'unix' } @{ $self->{listeners} || [] };
    return $u ? $u->{path} : undef;
}

sub listeners        { $_[0]{listeners} // [] }
sub is_running       { $_[0]{running} ? 1 : 0 }
sub effective_max_connections { $_[0]{max_connections} > 0 ? $_[0]{max_connections} : 1000 }

sub connection_count {
    my ($self) = @_;
    return PAGI::Server::Native::connections($self->{native}) if $self->{native};
    # Not serving: whatever connection table the object carries (none here).
    return scalar keys %{ $self->{connections} || {} };
}

# Accept errors are handled by the core (it logs them and pauses 100 ms on
# descriptor exhaustion); these are the same steps for Perl callers.
sub _on_accept_error {
    my ($self, $error) = @_;
    if ("$error" =~ /Too many open files|EMFILE|ENFILE/i) {
        $self->_log(warn => "Accept error (FD exhaustion): $error - pausing accept for 100ms");
        $self->_pause_accepting(0.1);
    }
    else {
        $self->_log(error => "Accept error: $error");
    }
    return;
}

sub _pause_accepting {
    my ($self, $seconds) = @_;
    return unless $self->{native};
    PAGI::Server::Native::pause_accept($self->{native}, int(1000 * ($seconds // 0.1)));
    return;
}

# --------------------------------------------------------------- serving

sub _native_config {
    my ($self) = @_;
    my @lines = ("server_header=PAGI::Server/$VERSION", PAGI::Server::Options::core_lines($self));
    # The core serves the sockets held in Perl (PAGI::Server::Listeners).
    # TLS applies to every TCP listener (`tls+`); Unix sockets stay plaintext.
    my $tls = $self->_tls ? 'tls+' : '';
    push @lines, PAGI::Server::TLS::core_lines($self->{ssl}) if $tls;
    if (my $held = $self->{_held}) {
        push @lines, map { 'listen=' . ($_->{tcp} ? $tls : '') . "fd:$_->{fd}" } @$held;
    }
    else {    # before binding: what will be bound (checked at construction)
        push @lines, map {
            $_->{type} eq 'unix' ? "listen=unix:$_->{path}" : "listen=${tls}tcp:" . PAGI::Server::Listeners::tcp_addr($_)
        } @{ $self->{listeners} };
    }
    push @lines, "panic_path=$self->{_test_panic_path}" if defined $self->{_test_panic_path};
    for (@lines) {
        die "PAGI::Server: option values must not contain newlines\n" if /\n/;
    }
    my $cfg = join("\n", @lines) . "\n";
    utf8::encode($cfg);    # the core reads UTF-8
    return $cfg;
}

sub listen {
    my ($self) = @_;
    return Future->done if $self->{running};
    my $loop = $self->loop
        or Carp::croak("PAGI::Server must be added to an IO::Async::Loop before listen()");
    if ($self->{workers} && $self->{workers} > 0) {
        require PAGI::Server::Workers;
        return PAGI::Server::Workers::start($self);
    }
    $self->_build_ssl_config;
    # Bound first, so that --user can drop privileges before app code runs.
    my $err = $self->_bind(from_parent => $self->{_from_parent});
    return Future->fail($err) if $err;
    $self->{lifespan} = PAGI::Server::Lifespan->new(
        app     => $self->{app},
        loop    => $loop,
        state   => $self->{state},
        mode    => $self->{lifespan_mode},
        timeout => $self->{lifespan_startup_timeout},
        log     => $self->_logger,
        worker  => $self->{_worker},
    );
    return $self->{lifespan}->startup->then(sub {
        my ($result) = @_;
        unless ($result->{ok}) {
            my $msg = $result->{message} // 'Lifespan startup failed';
            $self->_log(error => "PAGI Server startup failed: $msg");
            PAGI::Server::Listeners::release($self);
            return Future->fail("Lifespan startup failed: $msg\n");
        }
        my $err = $self->_start_native;
        return Future->fail($err) if $err;
        return Future->done($self);
    });
}

sub _logger {
    my ($self) = @_;
    weaken(my $weak = $self);
    return sub { $weak->_log(@_) if $weak };
}

# Binds (or adopts) the listeners, then runs run()'s _on_bound hook
# (pagi-server: the PID file, then dropping privileges) before any app
# code or worker runs. Returns an error message, or undef.
sub _bind {
    my ($self, %how) = @_;
    my $err = PAGI::Server::Listeners::bind_all($self, %how);
    return $err if $err;
    my $hook = delete $self->{_on_bound} or return;
    return if eval { $hook->($self); 1 };
    $err = $@;
    PAGI::Server::Listeners::release($self);
    return $err;
}

sub _start_native {
    my ($self) = @_;
    my $h = PAGI::Server::Native::new($self->_native_config);
    my ($ok, $text) = PAGI::Server::Native::listen($h);
    unless ($ok) {
        PAGI::Server::Native::free($h);
        PAGI::Server::Listeners::release($self);
        return "$text\n";
    }
    $self->{native}     = $h;
    $self->{loop_cache} = $self->loop;    # read once per request

    # Watch a duplicate of the eventfd so closing our handle never closes
    # the fd the Rust side writes to.
    open(my $wake, '<&', PAGI::Server::Native::fd($h))
        or return "Cannot watch the server's wake-up fd: $!\n";
    weaken(my $weak = $self);
    $self->{wake_handle} = IO::Async::Handle->new(
        read_handle   => $wake,
        on_read_ready => sub { $weak->_drain if $weak },
    );
    $self->add_child($self->{wake_handle});
    $self->{running} = 1;
    $self->_install_signals;
    $self->_log(info => $self->_banner);
    return;
}

sub _banner {
    my ($self) = @_;
    my $scheme = $self->_tls ? 'https' : 'http';
    my @where = map {
        $_->{type} eq 'unix' ? "unix:$_->{path}"
          : sprintf('%s://%s:%s/', $scheme, ($_->{host} =~ /:/ ? "[$_->{host}]" : $_->{host}), $_->{port})
    } @{ $self->{listeners} };
    my $loop_name = ref($self->loop) =~ s/^IO::Async::Loop:://r;
    return sprintf('PAGI Server listening on %s (loop: %s, max_conn: %d, http2: %s, tls: %s, core: rust)',
        join(', ', @where), $loop_name, $self->effective_max_connections,
        (!$self->{http2} ? 'available' : $self->_tls ? 'on' : 'on (h2c)'),
        ($self->_tls ? 'on' : $self->{ssl} ? 'disabled' : 'off'));
}

# What an operator's signal does when this build does not act on it: the
# server logs that it ignores it and keeps serving (it must never die or
# stop). Workers ignore all of these silently (see PAGI::Server::Workers).
my %IGNORED_SIGNAL = (
    single => {
        HUP  => 'graceful restart needs multi-worker mode (workers => N)',
        USR2 => 'hot restart needs multi-worker mode (workers => N)',
        # Their default action would stop the process until SIGCONT.
        TTIN => 'adding workers needs multi-worker mode (workers => N)',
        TTOU => 'removing workers needs multi-worker mode (workers => N)',
    },
);

# Watched through the loop, so a handler never runs inside the Rust core's
# threads and never blocks the loop. The TERM/INT handlers stay attached
# until shutdown has finished (see shutdown): a second TERM, or the INT that
# Ctrl-C sends to every process of the group, then finds a handler instead
# of the default action and cannot kill the process before lifespan
# shutdown ran. A worker watches TERM only; its master coordinates INT.
sub _install_signals {
    my ($self) = @_;
    return if $^O eq 'MSWin32';
    my $loop = $self->loop;
    weaken(my $weak = $self);
    my $stop = sub {
        my ($sig) = @_;
        return unless $weak;
        unless ($weak->{running}) {
            $weak->_log(info => "Received SIG$sig while shutting down; still finishing the shutdown");
            return;
        }
        my $l = $weak->loop;
        # Keep the chain alive until it stops the loop.
        $weak->{signal_shutdown} = $weak->shutdown->on_ready(sub {
            my $f = shift;
            $weak->_log(error => 'Shutdown error: ' . $f->failure) if $weak && $f->is_failed;
            $l->stop if $l;
        });
    };
    my $role = $self->{_worker} ? 'worker' : $self->{worker_pids} ? 'master' : 'single';
    my %handler = (TERM => $stop, ($role eq 'worker' ? () : (INT => $stop)));
    if ($role eq 'master') {    # worker scaling (PAGI::Server::Workers)
        $handler{TTIN} = sub { PAGI::Server::Workers::add_worker($weak) if $weak };
        $handler{TTOU} = sub { PAGI::Server::Workers::remove_worker($weak) if $weak };
        $handler{HUP}  = sub { PAGI::Server::Workers::restart_workers($weak) if $weak };
        $handler{USR2} = sub { PAGI::Server::Workers::hot_restart($weak) if $weak };
    }
    for my $sig (keys %{ $IGNORED_SIGNAL{$role} || {} }) {
        my $why = $IGNORED_SIGNAL{$role}{$sig};
        $handler{$sig} = sub {
            $weak->_log(warn => "Received SIG$sig: $why; ignoring it and serving on") if $weak;
        };
    }
    $self->{signal_loop} = $loop;
    $self->{signal_ids}  = [
        map { my $sig = $_; [$sig, $loop->attach_signal($sig => sub { $handler{$sig}->($sig) })] }
            sort keys %handler
    ];
}

sub _remove_signals {
    my ($self) = @_;
    my $loop = delete $self->{signal_loop} or return;
    $loop->detach_signal(@$_) for @{ delete $self->{signal_ids} || [] };
}

# max_requests: once, at the limit, the worker asks to be replaced; it
# serves on until its master stops it (when the replacement is up).
sub _on_request_complete {
    my ($self) = @_;
    return unless $self->{is_worker} && $self->{max_requests};
    return if ++$self->{_request_count} < ($self->{_retire_after} // $self->{max_requests});
    return if $self->{_max_requests_shutdown_triggered}++;
    $self->_log(info => "Worker $self->{_worker} ($$) served $self->{_request_count} requests (max_requests); asking to be replaced");
    $self->{_on_retire}->() if $self->{_on_retire};
}

# Works through every record the Rust side queued since the last wake-up:
# plain HTTP requests are run by Native::dispatch itself, the rest are
# handed to _on_record in order.
sub _drain {
    my ($self) = @_;
    return unless $self->{native};
    # What the apps send while these records are handled is held by the core
    # until the batch ends (one wake-up of its threads per batch), so the
    # batch must end whatever happens.
    my $ok = eval { PAGI::Server::Native::dispatch($self); 1 };
    my $err = $@;
    PAGI::Server::Native::flush($self->{native}) if $self->{native};
    die $err unless $ok;
}

# One record of a batch ($kind, $id and two values that depend on the
# kind); a REQUEST record may come with the first piece of its body.
sub _on_record {
    my ($self, $kind, $id, $a, $b, @body) = @_;
    if ($kind == PAGI::Server::Native::REC_REQUEST) {
        return PAGI::Server::WebSocket::start($self, $id, $a, $b) if $b & PAGI::Server::Native::F_WEBSOCKET;
        return PAGI::Server::Request::start($self, $id, $a, $b, @body);
    }
    if ($kind == PAGI::Server::Native::REC_DISCONNECT) {
        my $req = $self->{requests}{$id};
        PAGI::Server::Native::request_end($self->{native}, $id, PAGI::Server::Native::END_FORGET)
            unless $req && $req->_keeps_slot;
        $req->disconnected($a, $b) if $req;
        return;
    }
    if ($kind == PAGI::Server::Native::REC_LOG) {
        $self->_log(($a == PAGI::Server::Native::LOG_ERROR ? 'error'
                   : $a == PAGI::Server::Native::LOG_WARN  ? 'warn'
                   : $a == PAGI::Server::Native::LOG_DEBUG ? 'debug' : 'info'), $b);
        return;
    }
    if ($kind == PAGI::Server::Native::REC_IDLE) {
        my $f = $self->{idle_future};
        $f->done if $f && !$f->is_ready;
        return;
    }
    my $req = $self->{requests}{$id} or return;
    if    ($kind == PAGI::Server::Native::REC_BODY)       { $req->body($a, $b) }
    elsif ($kind == PAGI::Server::Native::REC_WS_MESSAGE) { $req->message($a, $b) }
    elsif ($kind == PAGI::Server::Native::REC_EOF)        { $req->client_eof }
}

sub shutdown {
    my ($self) = @_;
    return Future->done unless $self->{running};
    return PAGI::Server::Workers::shutdown($self) if $self->{worker_pids};
    $self->{running} = 0;
    my $loop = $self->loop;
    my $h    = $self->{native};
    # New connections are refused from now on, not queued unanswered.
    PAGI::Server::Listeners::release($self);

    my $idle = $self->{idle_future} = $loop->new_future;
    PAGI::Server::Native::shutdown($h, PAGI::Server::Native::SHUTDOWN_GRACEFUL);
    my $timeout = $self->{shutdown_timeout} || 30;
    my $drained = Future->wait_any(
        $idle->then(sub { Future->done(1) }),
        $loop->delay_future(after => $timeout)->then(sub { Future->done(0) }),
    );
    weaken(my $weak = $self);
    return $drained->then(sub {
        my ($clean) = @_;
        return Future->done if $clean || !$weak;
        $weak->_log(warn => 'Shutdown timeout: force-closing ' . $weak->connection_count . ' active connections');
        PAGI::Server::Native::shutdown($h, PAGI::Server::Native::SHUTDOWN_FORCE);
        return Future->wait_any($idle, $loop->delay_future(after => 2));
    })->then(sub {
        return Future->done unless $weak;
        $weak->_release_native;
        my $ls = $weak->{lifespan} or return Future->done;
        return $ls->shutdown($weak->{shutdown_timeout} || 30)->then(sub {
            my ($r) = @_;
            $weak->_log(warn => "PAGI Server shutdown warning: $r->{message}")
                if $weak && $r && !$r->{ok};
            return Future->done;
        });
    })->then(sub {
        # Only now: see _install_signals.
        $weak->_remove_signals if $weak;
        return Future->done($weak);
    });
}

# Stops the Rust side at once and releases its threads and sockets.
sub _release_native {
    my ($self) = @_;
    $self->{native} or return;
    $self->_drain;    # records still queued (the IDLE among them)
    my $h = delete $self->{native};
    if (my $w = delete $self->{wake_handle}) {
        $self->remove_child($w) if $w->parent;
    }
    $_->_released for values %{ $self->{requests} };
    PAGI::Server::Native::free($h);
    PAGI::Server::Listeners::release($self);
}

# The listening sockets this process was given (PAGI_REUSE, systemd's
# LISTEN_FDS), by address; see PAGI::Server::Listeners.
sub _collect_inherited_fds {
    my ($self) = @_;
    return PAGI::Server::Listeners::collect($self->_logger);
}

sub _remove_from_loop {
    my ($self, $loop) = @_;
    $self->_remove_signals;
    if ($self->{native}) {
        $self->{running} = 0;
        PAGI::Server::Native::shutdown($self->{native}, PAGI::Server::Native::SHUTDOWN_FORCE);
        $self->_release_native;
    }
    $self->{lifespan}->abandon if $self->{lifespan};
    $self->SUPER::_remove_from_loop($loop);
}

sub DESTROY {
    my ($self) = @_;
    return if ${^GLOBAL_PHASE} eq 'DESTRUCT' && !$self->{native};
    if (my $h = delete $self->{native}) {
        PAGI::Server::Native::shutdown($h, PAGI::Server::Native::SHUTDOWN_FORCE);
        PAGI::Server::Native::free($h);
    }
}

# ------------------------------------------------------------------- run

sub run {
    my ($self, %opt) = @_;
    my $loop = $self->_create_loop;
    $loop->add($self);
    $self->{_on_bound} = $opt{_on_bound};
    my $ok = eval { $self->listen->get; 1 };
    unless ($ok) {
        my $err  = $@;
        my $port = $self->{port} // '';
        die "Error: Port $port is already in use\n"            if $err =~ /Address already in use/i;
        die "Error: Permission denied to bind to port $port\n" if $err =~ /Permission denied/i;
        die "Error starting server: $err\n";
    }
    # PAGI::Server::Runner's --daemonize tells its launcher here that the
    # server is bound and lifespan startup is done (in a worker, with
    # workers => N).
    if (my $ready = $opt{_on_ready}) {
        my $workers = $self->{_workers_ready};
        $workers ? $workers->on_done(sub { $ready->($self) }) : $ready->($self);
    }
    $loop->run;
    if ($self->{_workers_failed}) {
        my $why = $self->{_startup_failure};
        die "All workers failed to start; no workers remain" . ($why ? " ($why)" : '') . "\n";
    }
    return $self;
}

sub _create_loop {
    my ($self) = @_;
    require IO::Async::Loop;
    my $type = $self->{loop_type} or return IO::Async::Loop->new;
    die "Invalid loop_type '$type': must contain only letters, digits, and ::\n"
        unless $type =~ $LOOP_TYPE_RE;
    my $class = "IO::Async::Loop::$type";
    (my $file = "$class.pm") =~ s{::}{/}g;
    eval { require $file; 1 }
        or die "Cannot load loop backend '$type': $@\nInstall it with: cpanm $class\n";
    return $class->new;
}

1;

__END__

=head1 NAME

PAGI::Server - PAGI application server with a Rust network core

=head1 SYNOPSIS

    use IO::Async::Loop;
    use PAGI::Server;

    my $loop   = IO::Async::Loop->new;
    my $server = PAGI::Server->new(app => $app, host => '127.0.0.1', port => 5000);
    $loop->add($server);
    $server->listen->get;
    $loop->run;

    # or, owning its loop and handling TERM/INT:
    PAGI::Server->new(app => $app, port => 5000)->run;

=head1 DESCRIPTION

A drop-in replacement for the pure-Perl reference C<PAGI::Server>: the same
class, constructor options, methods and C<pagi-server> script, with the
sockets, HTTP parsing and response framing done by a Rust core (on tokio)
running on its own threads. Your application still runs on the Perl
thread, inside your L<IO::Async> loop; requests reach it as PAGI scopes and
its C<$send> calls reach the wire through the core.

The server is an L<IO::Async::Notifier>: add it to a loop, call C<listen>,
and it serves while the same loop runs your other clients.

=head1 CONSTRUCTOR OPTIONS

Their defaults, which of them C<configure> may change, which a pre-forked
worker inherits, which reach the Rust core and their C<pagi-server> flags
are kept in one table, L<PAGI::Server::Options>.

=over 4

=item app (required)

The PAGI application: C<async sub ($scope, $receive, $send)>.

=item host, port

TCP address to bind; default C<127.0.0.1> and C<5000>. Port C<0> picks a free
port, readable with C<port> after C<listen>.

=item socket, socket_mode

Listen on a Unix domain socket at this path instead of TCP, and optionally
C<chmod> it to C<socket_mode>. Cannot be combined with C<host>/C<port>.

=item listen

An array of listener specs, each C<< { host => ..., port => ... } >> or
C<< { socket => ..., socket_mode => ... } >>, to serve several addresses at
once. Cannot be combined with C<host>, C<port>, C<socket> or C<socket_mode>.

=item ssl

Serve HTTPS (and C<wss://>) on every TCP listener; Unix-socket listeners
stay plaintext. The Rust core runs TLS 1.3 and 1.2 with rustls; handshakes
run on the core's threads, never on the Perl thread. A hash of:

=over 4

=item cert_file, key_file

The certificate (PEM; the server's certificate first, then any
intermediates, which are sent to clients) and its private key (PEM: PKCS#8,
PKCS#1 RSA or SEC1 EC). RSA and ECDSA keys work. Both are required.

=item ca_file, verify_client

With C<verify_client> true, every client must present a certificate that
chains to a CA certificate in C<ca_file> (PEM, one or more); the handshake
fails otherwise. X.509 version 1 client certificates, which older OpenSSL
tools make by default, are accepted as OpenSSL accepts them. Without
C<verify_client>, no client certificate is asked for.

=item min_version

The lowest TLS version offered, a floor: C<TLSv1_2> (the default; TLS 1.3
is still used with clients that have it) or C<TLSv1_3>. C<TLSv1> and
C<TLSv1_1> are accepted with a warning: this server does not speak versions
below 1.2. Anything else is an error.

=item cipher_list

An OpenSSL cipher string restricting the TLS 1.2 suites, e.g.
C<ECDHE+AESGCM>. OpenSSL (through L<IO::Socket::SSL>, needed only for this
setting) expands it; the server keeps, in that order, the suites it has:
ECDHE with AES-GCM or ChaCha20-Poly1305. As in OpenSSL, it does not
restrict TLS 1.3. A string OpenSSL cannot read, or one that leaves no TLS
1.2 suite while C<min_version> allows TLS 1.2, is an error. The default is
every suite the server has (the reference's default list selects the
same ones).

=back

Everything is checked when the server is constructed: a missing or
unreadable file, a file with no certificate or no key, a key that does not
belong to the certificate, or a bad setting dies with a message naming the
setting and the file. Unknown keys are warned about and ignored.

Requests over TLS have C<scheme> C<https> (C<wss> for WebSocket) and the
PAGI TLS extension in C<< $scope->{extensions}{tls} >>: C<server_cert>
(PEM), C<client_cert_chain> (PEM strings, the client's certificate first;
empty without one), C<client_cert_name> (its subject as an RFC 4514
string, or undef), C<client_cert_error> (always undef: a certificate that
fails verification ends the handshake), C<tls_version> (e.g. C<0x0304>)
and C<cipher_suite> (the IANA number, e.g. C<0x1301>).

A handshake must finish within C<timeout> seconds (60 when C<timeout> is
0); a failed or timed-out handshake is logged at C<debug> level and closes
the connection. While it runs, a connection counts toward
C<max_connections> and may be closed to admit others, like one that is
slow to send its request head. Over capacity, the 503 answer is sent over
TLS. A plain HTTP request sent to a TLS listener is answered with a
plaintext 400 saying so, as nginx does. ALPN offers C<http/1.1>.

=item disable_tls

Keep the C<ssl> settings but serve plain HTTP (the files are not read).

=item extensions

Hash of extensions advertised in every scope's C<extensions>, for example
C<< { fullflush => {} } >>.

=item access_log, access_log_format

Where the access log goes: a file handle, C<\*STDERR> by default; C<undef>
turns it off. One line per request is written before the client sees the
end of the response. The format is a preset - C<clf> (default,
C<%h - - [%t] "%m %U%q" %s %ds>), C<combined>, C<common>, C<tiny> - or your
own string of atoms: C<%h> client address, C<%l> and C<%u> a dash, C<%t>
time, C<%r> request line, C<%m> method, C<%U> raw path, C<%q> C<?query> or
nothing, C<%H> protocol, C<%s> status, C<%b> body bytes or a dash, C<%B> body
bytes, C<%d> seconds with milliseconds, C<%D> microseconds, C<%T> whole
seconds, C<%{Name}i> a request header, C<%%> a percent sign. An unknown atom
dies at construction, naming it. The lines are formatted by the Rust core.

=item log_level, quiet

Server messages go through Perl's C<warn>. C<log_level> (debug, info, warn,
error; default info) sets the least severe level shown; C<quiet> hides all
but errors.

=item workers

Number of pre-forked worker processes (default 0: serve in this process).
With N > 0, C<listen> binds every listener here, forks N workers that each
run their own loop, lifespan and copy of the server on the inherited
sockets, and returns; this process only supervises (it restarts a worker
that dies, and C<shutdown>, C<SIGTERM> or C<SIGINT> stop them all, waiting
up to C<shutdown_timeout>). Workers stop by themselves when this process
dies. See L</SIGNALS> and L<PAGI::Server::Workers>.

=item max_requests

With C<workers>, the requests a worker serves before it is replaced
(default 0: never). At the limit, plus up to 10% so that workers do not
all go at once, the worker asks its master for a replacement and serves on;
once the replacement is ready the old worker stops gracefully (finishing
its requests, running lifespan shutdown). No request is refused meanwhile.

=item reuseport

With C<workers> (default 0): instead of one listening socket that the
master binds and every worker accepts from, each worker binds its own TCP
socket with C<SO_REUSEPORT> and the kernel spreads connections over them.
The master only reserves the port (bound, not listening), so port 0 is
resolved once for all. Unix sockets are shared as usual. Sockets inherited
through C<PAGI_REUSE> or systemd are not per worker: use the default mode
for hot restart and socket activation. Linux lets only processes of the same
user share such a port.

=item heartbeat_timeout

With C<workers>, seconds (default 50; 0 turns it off) a worker's event loop
may go without running before its master kills the worker with C<SIGKILL>
and starts another. Each worker reports to its master every fifth of it,
from a timer on its loop, from before lifespan startup on; the master
checks every half. Only code that blocks the loop (a C<sleep>, a blocking
database call without C<await>) stops the reports: an app awaiting slow
I/O, however long, is never killed.

=item listener_backlog

Listen queue length, default 2048.

=item max_connections

Connection limit; 0 (default) means 1000 (see C<effective_max_connections>).
At the limit, a new connection is admitted by closing the connection that
has waited longest for a request head (its first, or the next one on a
keep-alive connection), provided it has waited past a grace: 1 second, or
250 ms once part of its head has arrived (a real client sends its head in
one go, so a head still incomplete then is being trickled). A connection
with a request in progress, a WebSocket, or one within its grace is never
closed for this, so idle or trickling clients cannot lock out real ones; a warning "At capacity
(N/MAX): closed K connection(s) waiting longest for a request head to admit
new ones" is logged at most once a second. While the connection closed is
still going away the count may exceed the limit by one or two. When no
connection can be closed, the new one gets C<503 Service Unavailable> with
C<Retry-After: 5> and is closed, and a warning "Connection rejected: at
capacity (N/MAX)" is logged. When the process runs out of file descriptors,
accepting pauses for 100 ms instead of failing.

=item write_high_watermark, write_low_watermark

Backpressure marks in bytes (65536 and 16384): a C<$send> that finds at
least the high mark of its response still waiting for a slow client returns
a pending Future, done once the backlog falls to the low mark. A send that
finds less goes on at once, whatever its own size (as in the reference).

=item max_body_size, max_header_size, max_header_count

Request limits. C<max_body_size> (10_000_000 bytes; 0 = unlimited): a
larger Content-Length is answered C<413> before any body is read, and a
chunked body that grows past it gets C<413> (or, once the response has
started, a closed connection). C<max_header_size> (8192 bytes, request line
included) and C<max_header_count> (100) are answered C<431>; a request line
over 8192 bytes gets C<414>. Malformed requests, an HTTP/1.1 request without
exactly one Host, a Content-Length that is not plain digits or that
conflicts with another, and Content-Length together with chunked
Transfer-Encoding get C<400>; a Transfer-Encoding other than chunked gets
C<501>. These answers close the connection and the app never sees the
request.

=item timeout, request_timeout, min_body_rate, ws_idle_timeout, sse_idle_timeout

C<timeout> (60 s; 0 = off) bounds the wait for a request head: the whole
head must have arrived within C<timeout> of the connection opening, or of
the previous response ending on a keep-alive connection. The deadline is
fixed when the wait begins; bytes trickling in do not extend it, so a
client sending its head a byte at a time is closed on time all the same. An
idle connection is closed quietly; one with part of a head gets
C<408 Request Timeout> first.

C<request_timeout> (0 = off): a request during which nothing is read from
or written to the client for that long is closed, the warning "Request
stall timeout (Ns) - closing connection" is logged, and the app's
C<$receive> yields C<http.disconnect> (reason C<client_timeout>). Fractions
of a second are allowed. A started SSE stream is exempt from this stall
clock (it has C<sse_idle_timeout>), but each write to its client still
has C<request_timeout> to make progress; see L</SERVER-SENT EVENTS>.

C<min_body_rate> (500 bytes/s; 0 = off; acts only while C<request_timeout>
is on) stops a request body from being trickled just fast enough to dodge
the stall timeout: once C<n> body bytes have arrived, the body must have
taken no longer than C<request_timeout + n / min_body_rate> seconds of
reading. Time in which the server is not reading (before the app asks for a
body sent with C<Expect: 100-continue>, or while the app leaves 1 MiB of it
unconsumed) does not count. A body slower than that is ended like a stall:
"Request body too slow (under R bytes/s after Ns) - closing connection" is
logged and the app sees C<http.disconnect> with reason C<client_timeout>.

For comparison: nginx's C<client_header_timeout> (60 s) is likewise one
deadline for the whole head, and its C<client_body_timeout> (60 s) is a
stall timeout between two reads of the body with no minimum rate, like
C<request_timeout> alone. Apache's mod_reqtimeout defaults to
C<header=20-40,MinRate=500 body=20,MinRate=500>: 20 s for the head, extended
by the rate up to 40 s, and 20 s for the body extended by one second per 500
bytes, which is what C<request_timeout = 20> with the default
C<min_body_rate> does for bodies here. The reference server's defaults
(C<timeout> 60, C<request_timeout> off) are kept; when serving untrusted
clients without a proxy in front, set C<request_timeout> (e.g. 20).

C<ws_idle_timeout> (0 = off): a WebSocket with no frame in either
direction for that long is closed, "WebSocket idle timeout (Ns) - closing
connection" is logged and the app sees C<websocket.disconnect> with code
1006 and reason C<idle_timeout>.

C<sse_idle_timeout> (0 = off): an SSE request on which nothing moves for
that long is closed, "SSE idle timeout (Ns) - closing connection" (HTTP/2:
"- resetting HTTP/2 stream") is logged and the app sees C<sse.disconnect>
with reason C<idle_timeout>. What counts as moving is defined under
L</SERVER-SENT EVENTS>.

=item max_receive_queue, max_ws_frame_size, max_ws_message_size

WebSocket limits. C<max_receive_queue> (1000; 0 = no limit) counts client
messages waiting for the app's C<$receive>; one more closes the connection
with code 1008 ("Message queue overflow") and the app sees reason
C<queue_overflow> after the queued messages. Whatever the limit, reading
from a client pauses while 1 MiB of its messages waits for the app, so a
slow app holds back the client instead of growing the server's memory.

C<max_ws_frame_size> (65536 bytes; 0 = no limit) is the largest payload of
one frame a client may send. C<max_ws_message_size> (16777216 bytes, 16 MiB;
0 = no limit) is the largest message: all the frames of a fragmented message
together, and for a compressed message (see C<ws_compression>) the size it
inflates to, so a message is judged by its bytes however many frames carry
it (a 4 MiB message in 64-byte fragments is taken exactly as in 64 KiB
ones). Either limit exceeded is answered with close code 1009, the warning
"PAGI connection error: WebSocket message too big ..." is logged and the app
sees code 1009 with reason C<body_too_large>; an oversized frame or message
is refused as soon as its header shows it, and inflating stops at the limit,
so a small compressed message that would inflate to far more is never
inflated past it. A server holds up to C<max_ws_message_size> bytes per
WebSocket while a message arrives.

=item ws_compression

permessage-deflate (RFC 7692), on by default: when a client offers it (every
browser does), the handshake answer agrees and names it in
C<Sec-WebSocket-Extensions>; compressed client messages are inflated before
the app sees them (as plain text or bytes, like uncompressed ones) and the
app's C<websocket.send> messages go out compressed. The offer's parameters
are honoured as RFC 7692 says: C<server_no_context_takeover> compresses
every message on an empty window; C<server_max_window_bits> of 9 to 15
bounds the window the server compresses with, and an offer asking for 8 (a
256-byte window, which zlib's deflate cannot do) is declined, the next
offer being considered; C<client_no_context_takeover> and
C<client_max_window_bits> need nothing from the server, whose decompressor
takes any window. An offer with unknown or repeated parameters is declined.
Compression state is made when first needed and kept for the WebSocket's
life: about 380 KiB for the compressor (from the app's first message) and
50 KiB for the decompressor (from the client's first compressed message);
where many idle WebSockets matter more than bandwidth, turn it off:
C<< ws_compression => 0 >> (C<--no-ws-compression>) never agrees, and
WebSockets run uncompressed.
The app cannot negotiate an extension itself: a C<Sec-WebSocket-Extensions>
header among the C<websocket.accept> headers is dropped.

=item sync_file_threshold

Accepted (default 65536) and has no effect here: every C<file> and C<fh>
body with a real file descriptor is read by the Rust core off the Perl
thread, whatever its size. Only in-memory and tied handles are read in Perl.

=item lifespan_mode, lifespan_startup_timeout, shutdown_timeout

C<auto> (default) runs the lifespan protocol and carries on if the app does
not support it; C<on> makes a decline fatal; C<off> never calls the app with
a lifespan scope. Startup must finish within C<lifespan_startup_timeout>
seconds (30; 0 waits forever). C<shutdown_timeout> (30) bounds both the drain
of in-flight requests and the lifespan shutdown.

=item validate_events

Validate events the app sends; defaults on when C<PAGI_ENV> is
C<development>. Stored for the event validator.

=item loop_type

Name of an C<IO::Async::Loop::*> backend for C<run> (e.g. C<EPoll>).

=item http2 => $bool

Serve HTTP/2 as well as HTTP/1.1 (default 0: HTTP/1.1 only). On a TLS
listener ALPN offers C<h2> before C<http/1.1> and the client picks. On a
cleartext listener a connection that opens with the HTTP/2 client preface
speaks h2c ("prior knowledge", as gRPC clients and h2c proxies do) and any
other connection is served as HTTP/1.1 on the same port. (The HTTP/1.1
C<Upgrade: h2c> dance is not offered; such a request is answered over
HTTP/1.1.) A Unix socket behaves like a cleartext listener.

Every stream is one PAGI request whose scope has C<http_version> C<2>;
C<:authority> arrives as the C<host> header (once), and cookies the client
split across several fields arrive as one C<cookie> header joined with
C<; >. Request bodies are flow-controlled per stream: the client's window is
given back only as the app reads, so a slow app holds back its own upload
and no other stream. Responses stream with per-stream backpressure, may
carry trailers, get C<date> and C<server> headers when the app sets none,
and never carry C<connection>, C<keep-alive>, C<transfer-encoding> or
C<upgrade> (HTTP/2 forbids them; they are dropped). WebSocket runs over
HTTP/2 streams (RFC 8441 extended CONNECT) with the same events as over
HTTP/1.1, and so do SSE streams. A graceful shutdown sends GOAWAY, lets
open streams finish within C<shutdown_timeout>, then closes. A connection
with no stream open waits for a request as an HTTP/1.1 connection waits
for its head: it is closed (GOAWAY) after C<timeout>, and at
C<max_connections> it may be closed to admit a new client.

=item h2_max_concurrent_streams => $count

SETTINGS_MAX_CONCURRENT_STREAMS: streams one connection may have open at
once (default 100). Streams a client resets do not count against it; see
C<h2_rst_rate_limit>.

=item h2_initial_window_size => $bytes

SETTINGS_INITIAL_WINDOW_SIZE: how much of a request body a client may send
on a stream before the app has read it (default 65535, at most
2147483647). The connection's own window is 1 MiB or this, whichever is
larger.

=item h2_max_frame_size => $bytes

SETTINGS_MAX_FRAME_SIZE: the largest frame payload the server accepts
(default 16384; 16384 to 16777215).

=item h2_enable_push => $bool

Accepted for compatibility (default 0). PAGI has no event that pushes a
response, so this server never sends PUSH_PROMISE whatever the value.

=item h2_enable_connect_protocol => $bool

SETTINGS_ENABLE_CONNECT_PROTOCOL: offer WebSocket over HTTP/2 (RFC 8441;
default 1). With 0, an extended CONNECT is refused and clients use
WebSocket over HTTP/1.1.

=item h2_max_header_list_size => $bytes

SETTINGS_MAX_HEADER_LIST_SIZE: the largest request header block, counted
as RFC 9113 does (names, values and 32 bytes per field; default 65536).
Larger blocks, however many CONTINUATION frames carry them, are refused.

=item h2_rst_rate_limit => { burst => $n, rate => $per_second }

The defence against Rapid Reset (CVE-2023-44487): a token bucket on the
RST_STREAM frames a client sends, C<burst> at once and C<rate> per second
after (default C<< { burst => 1000, rate => 33 } >>). A client that runs it
dry gets GOAWAY (ENHANCE_YOUR_CALM) and the connection closes. PING and
SETTINGS floods (beyond 1000 PINGs at once and 100 per second after, or
100 SETTINGS at once and 10 per second) end the same way; CONTINUATION
floods end at C<h2_max_header_list_size>.

=item on_error

Accepted for older callers and passed to L<IO::Async::Notifier>.

=back

=head1 WEBSOCKET

A request with C<Upgrade: websocket>, a Connection header naming
C<upgrade> among its tokens (C<Connection: keep-alive, Upgrade>, as Firefox
sends it, counts; any case) and no body is a WebSocket handshake. It is
checked before the app sees it (RFC 6455 section 4.2.1): a
C<Sec-WebSocket-Version> other than C<13> (or none) is answered C<426
Upgrade Required> with C<Sec-WebSocket-Version: 13>, and a missing or
malformed C<Sec-WebSocket-Key> (it must be the base64 of 16 bytes) C<400 Bad
Request>. Over HTTP/2 (RFC 8441 extended CONNECT with C<:protocol
websocket>) there is no key, and the version is checked the same way.

A valid handshake gets a C<websocket> scope; L<PAGI::Server::WebSocket>
lists the events. The handshake waits for the app: C<websocket.accept>
answers C<101 Switching Protocols> (C<200> on HTTP/2), C<websocket.close>
answers C<403>, and the C<websocket.http.response> extension sends any
other response. After the handshake the Rust core reads and writes the
frames: fragmented messages are joined, pings answered, compressed messages
inflated (see C<ws_compression>), and client violations closed with the RFC
6455 code: 1002 for framing errors (among them a client frame that is not
masked, a reserved bit or opcode, and a 64-bit length with its top bit
set), 1007 for text that is not UTF-8 (refused at the byte where it stops
being UTF-8, even inside a frame still arriving), 1009 for a frame or
message over its limit. The app's C<$receive> then yields
C<websocket.disconnect> with that code and reason C<protocol_error>
(C<body_too_large> for 1009). When a violation arrives right behind valid
messages, the app still receives those messages, and what it sends for them
reaches the client before the close frame: the close waits until the app
asks for its next message (at most 2 seconds). A client close frame is
echoed and reported with the client's code and reason; a dropped connection
is reported as code 1006, reason C<client_closed>. On shutdown (C<shutdown>,
SIGTERM), open WebSockets get close code 1001 at once and the app sees code
1006, reason C<server_shutdown>. C<websocket.send> counts against the write
watermarks like HTTP bodies.

=head1 SERVER-SENT EVENTS

Everything here holds over HTTP/1.1 and HTTP/2 alike.

=over 4

=item The scope

A request whose C<Accept> header names C<text/event-stream> (anywhere in
it, in any case) and that is no WebSocket upgrade gets an C<sse> scope,
whatever its method. Its C<$receive> first yields the request body as
C<sse.request> events (C<body>, C<more>), like C<http.request>: a request
without a body gets one, empty, with C<< more => 0 >>. After that
C<$receive> waits for C<sse.disconnect>. SSE scopes have C<pagi.transport>
(the write watermarks apply to their events) but no C<pagi.connection>.

=item sse.start

Sends the head at once with the app's C<status> (default 200) and headers,
adding C<Content-Type: text/event-stream> and C<Cache-Control: no-cache>
unless the app gave those fields, and the usual C<date> and C<server>. On
HTTP/1.1 the stream is chunked and the head says C<Connection: close>: the
connection is closed once the stream ends (as the reference does) and is
never reused. A second C<sse.start> makes C<$send> die.

=item sse.send

Writes one event: C<event:>, C<id:> and C<retry:> lines when given, then
C<data> split on LF, CRLF and bare CR into one C<data:> line each, then an
empty line. Character strings go out as UTF-8. Empty C<data> is one empty
C<data:> line (an event with empty data); an event without C<data> (only
a C<retry>, say) has no C<data:> line, so a browser dispatches nothing. A
newline (CR or LF) in C<event> or C<id>, or a C<retry> that is not a
non-negative integer, makes C<$send> die and nothing is written.

=item sse.comment

Writes a comment in which every line starts with C<:> (CR, LF and CRLF all
end a line, a line that starts with C<:> keeps it), so a comment can never
carry an event.

=item sse.keepalive

C<interval> in seconds and C<comment> text; may be sent before or after
C<sse.start>. From the start of the stream the core writes the comment
every C<interval> seconds (at most every 10 ms) until the stream ends;
C<< interval => 0 >> stops it; the last one wins. An C<interval> that is
not a non-negative number makes C<$send> die. The comments are the
server's own traffic: they do not count against the watermarks, nor as
activity for C<sse_idle_timeout>.

=item sse.close

Ends the stream at once, before the app returns: what was sent goes out,
then the end (the terminating chunk and a closed connection on HTTP/1.1,
END_STREAM on HTTP/2), exactly as when the app returns. Its C<reason> is
never written to the client; the app's C<$receive> then yields
C<sse.disconnect> with that reason (C<client_closed> when none was
given). A second C<sse.close> is ignored; any other event afterwards makes
C<$send> die. C<sse.close> before C<sse.start> dies too.

=item Returning

An app that returns after C<sse.start> ends the stream as C<sse.close>
does. One that returns without starting it gets a 500, as an C<http> app.

=item Declining: sse.http.response.start, sse.http.response.body

Instead of C<sse.start>, an app may answer with a plain HTTP response:
C<sse.http.response.start> (C<status> 200-599, C<headers>) and then
C<sse.http.response.body> events (C<body> bytes, C<more>). The body is
gathered until C<< more => 0 >> and sent with a C<Content-Length> (none on
a 204); no SSE header is added; on HTTP/1.1 the connection is closed
after it. The first send wins: after C<sse.http.response.start>, a stream
event (C<sse.start>, C<sse.send>, C<sse.comment>, C<sse.keepalive>,
C<sse.close>) makes C<$send> die, and after C<sse.start> so do both
decline events. A second C<sse.http.response.start> is ignored; a body
before it, a header with CR, LF or NUL (or a control character in its
name), a status out of range or a body of characters make C<$send> die.

=item Misuse and a gone client

An unknown event type, any event after C<sse.close> and the first-send-wins
errors above die whether or not the client is still there. Otherwise, once
the client has gone, C<$send> is a quiet no-op, and C<$receive> yields
C<sse.disconnect>.

=item sse.disconnect reasons

C<client_closed> (the client closed the connection or, on HTTP/2, reset
the stream), C<server_shutdown> (see below), C<idle_timeout> (see
C<sse_idle_timeout>), C<write_timeout> (one write to the client made no
progress for C<request_timeout>), C<write_error> (writing to the client
failed, HTTP/1.1; on HTTP/2 a failed write means the stream or connection
is gone: C<client_closed>).

=item sse_idle_timeout

With C<sse_idle_timeout> on, the core closes an SSE request on which
nothing moves for that long. The clock starts when the request reaches the
app and starts again whenever the app sends an event on it (any C<sse.*>
event, including an C<sse.keepalive> before C<sse.start> and the decline
events) and whenever the connection finishes writing the app's bytes to
the client. A single write that makes no progress for that long counts as
idle too, so a client that stops reading cannot hold a stream open (with
a shorter C<request_timeout>, that write ends the stream as
C<write_timeout> instead). The keepalive comments the core writes, and
anything the client sends, do not count. An app that has not started the
stream is closed all the same. The end is abrupt, so that the client sees
a broken stream rather than one the app ended: the connection is closed
without the terminating chunk (HTTP/1.1), the stream is reset with CANCEL
(HTTP/2). The reference starts its HTTP/2 clock only at C<sse.start> and
restarts it only on the app's events.

=item request_timeout

Applies to an SSE request as to any until C<sse.start> (reading its body,
waiting for the app); a started stream may then be quiet for as long as
the app likes, and only each single write is bounded by it.

=item Shutdown

On shutdown (the C<shutdown> method, TERM or INT) open streams end at once
and properly (the terminating chunk, then the connection closes; on
HTTP/2 END_STREAM, then GOAWAY), the app's C<$receive> yields
C<sse.disconnect> with reason C<server_shutdown>, and an app that goes on
sending is not waited for: its sends are no-ops and the server exits
without waiting out C<shutdown_timeout>.

=item Backpressure

C<sse.send> and C<sse.comment> count against C<write_high_watermark>: once
the backlog has reached it, the app's C<$send> stays pending until the
client has taken the backlog down to C<write_low_watermark>, so a fast app
and a slow client keep the server's memory flat. C<pagi.transport> reports
the backlog.

=back

=head1 HTTP/1.1 BEHAVIOUR

=over 4

=item Responses

The status line echoes the request's HTTP version. App header names are
written in the case given; a C<Date> and a C<Server: PAGI::Server/VERSION>
field are added unless the app sent them. With a C<Content-Length> from the
app the body is cut to that length; otherwise HTTP/1.1 responses are chunked
and HTTP/1.0 responses end by closing the connection. A C<Transfer-Encoding>
from the app is ignored. C<HEAD>, 1xx, 204 and 304 responses carry no body.
Header names or values containing CR, LF or NUL make C<$send> die and never
reach the wire. The head of an C<http> response goes out with the first body
event (or C<http.fullflush>), as the reference server buffers it; an app
that dies after C<http.response.start> still gets its status line out
before the connection closes.

=item Trailers

C<http.response.start> with C<< trailers => 1 >> followed by
C<http.response.trailers> sends the fields after the last chunk of a chunked
body (dropped when the app gave a Content-Length).

=item File bodies

C<http.response.body> with C<file> (a path) or C<fh>, plus optional
C<offset> and C<length>, streams the bytes from the core without passing
them through Perl, and ends the response (C<more> is ignored, as the spec
says). Over HTTP/1.x on a plain TCP or Unix socket a regular file goes out
by sendfile(2), its bytes never read into the process; over TLS, HTTP/2,
and for pipes, the core reads it. A file that shrinks while it is sent
ends the connection. A handle with a real descriptor is duplicated, so the app
may close its handle as soon as C<$send> returns; in-memory and tied handles
are read in Perl. A path is opened with the bytes Perl's own C<open> would
use (a character string, such as a decoded non-ASCII file name, by its UTF-8
bytes).
A path that cannot be opened makes C<$send> die with
C<http.response.body: cannot open PATH: REASON> (a directory, path or
handle, with C<cannot send ...: it is a directory>), a closed handle with
C<http.response.body: fh is not an open filehandle>. When no body went out
before, the response then counts as not started: the app may send a new
C<http.response.start> (a 404, say), and an app that lets the error
propagate gets a C<500>, never a truncated C<200>. An C<offset> past the end
of the file sends no bytes; a C<length> past it sends the rest of the file.

=item Request bodies

C<$receive> yields the body in pieces as they arrive; at most about 1 MiB
waits unread before the core stops reading from the client. With
C<Expect: 100-continue> the interim C<100 Continue> is sent when the app
first calls C<$receive>; if it answers without reading, it is never sent.
An HTTP/1.0 client's C<Expect> is ignored (RFC 9110 10.1.1): it never gets
a C<100 Continue>.

=item Half-closed clients

A client may end its sending side once its request is complete
(C<shutdown(SHUT_WR)>, C<nc -N>): the app still runs and the whole response
is written, then the connection is closed; nothing more is read from it.
An app that calls C<$receive> again after the request is complete (to wait
for a disconnect) gets C<http.disconnect> with reason C<client_closed> at
that point, and the connection is closed. A client that closes before its
request body is complete has disconnected. A client that closed its socket
entirely rather than half-closing it looks the same until the response is
written, which then fails.

=item CONNECT

A C<CONNECT> request is answered C<501 Not Implemented> by the server and
the connection is closed; the app is not called. A successful C<CONNECT>
turns the connection into a raw tunnel, and PAGI has no events that carry a
tunnel's bytes, so no app could take it (the reference server answers the
same for C<CONNECT> over HTTP/2; an HTTP/2 Extended C<CONNECT> for
WebSocket is a different thing). Bytes the client sends after the
C<CONNECT> head are never parsed as further requests.

=item Backpressure

While at least C<write_high_watermark> bytes of a response wait for a slow
client, C<$send> returns a pending Future, completed once the backlog falls
to C<write_low_watermark>; the event's bytes are queued either way. So an
app that streams chunks of the high mark's size waits after every other
chunk. C<pagi.transport> in the scope (L<PAGI::Server::TransportState>)
reports the same numbers; its callbacks are run as writes cross the marks.

=back

=head1 METHODS

=head2 listen

Runs lifespan startup, binds every listener and starts serving. Returns a
Future that completes with the server, or fails with the reason (for example
C<Lifespan startup failed: ...> or the bind error).

=head2 shutdown

Stops accepting, lets in-flight requests finish within C<shutdown_timeout>
(then closes what is left), runs lifespan shutdown and returns a Future.

=head2 run

Creates a loop, listens, and runs until TERM or INT, which shut down
gracefully (see L</SIGNALS>). Dies with C<Error: Port N is already in use>
when the port is taken.

=head2 port, socket_path, listeners

The bound TCP port (the configured one before C<listen>), the first Unix
socket path, and the listener specs.

=head2 is_running, connection_count, effective_max_connections

Whether it serves, how many connections are open, and the connection limit.

=head2 configure

Changes options after construction; listener layout and the options marked
construction-only in the reference (watermarks, C<loop_type>, ...) are
refused.

=head2 has_tls, has_http2

Class methods: whether this build can serve TLS and HTTP/2 (both 1).

=head1 SIGNALS

Signals are watched through the server's L<IO::Async::Loop>, from C<listen>
on, whether the server was started with C<run> or added to your own loop.

=over 4

=item TERM, INT

Graceful shutdown, as C<shutdown>: stop accepting, let requests in flight
finish within C<shutdown_timeout>, run lifespan shutdown, then stop the
loop. The handlers stay in place until lifespan shutdown has run, so a
second TERM, or the INT that Ctrl-C sends to every process of the group,
cannot kill the process halfway; it is noted and ignored.

=item HUP, USR2, TTIN, TTOU (single process)

Logged ("ignoring it and serving on") and otherwise ignored, because
restarts and worker counts need multi-worker mode. (TTIN and TTOU would
otherwise stop the process until C<SIGCONT>.)

=item TTIN, TTOU (multi-worker master)

TTIN starts one more worker. TTOU stops the highest-numbered worker
gracefully (it finishes its requests and runs lifespan shutdown) and does
not replace it; with one worker left it is logged and refused.

=item HUP (multi-worker master)

Rolling restart: every worker is replaced, one at a time. A new worker is
started first; once its lifespan startup is done, the old one stops
gracefully (finishing its requests, running lifespan shutdown), and the
next worker's turn comes. No request is refused meanwhile. Workers are
forked from the master, so this re-runs each worker's lifespan (new
database connections, re-read configuration files) but not code the master
loaded: for that, USR2. If a new worker fails its lifespan startup, the
restart stops there and the remaining old workers serve on.

=item USR2 (multi-worker master)

Hot restart. The master starts its own command line again (as the kernel
recorded it, perl's switches included, from the directory it started in),
with its listening sockets left open and named in C<PAGI_REUSE>, and its
PID in C<PAGI_MASTER_PID>. The new master loads everything afresh, adopts
the sockets instead of binding (connections waiting in their queues are
kept), rewrites the C<--pid> file, starts its workers and, once every one
of them is ready, sends the old master C<SIGTERM>; the old master then
stops as on TERM, leaving its Unix socket files in place. Until then both
serve. If the new master exits before taking over (the app no longer
loads, a worker's lifespan startup fails), the old one logs it and serves
on. With C<--user>/C<--group>, the new master runs as that user already,
so its PID file must be writable by that user.

=back

A worker ignores INT, HUP, TTIN, TTOU and USR2 (its master coordinates)
and shuts down gracefully on TERM. A worker never outlives its master: if
the master dies in any way, including C<SIGKILL>, every worker stops
accepting, finishes its requests within C<shutdown_timeout>, runs lifespan
shutdown and exits, which frees the port. See L<PAGI::Server::Workers>.

=head1 INHERITED SOCKETS

When C<listen> starts a server or a master, each listener first looks for
a socket it was given, by address (C<HOST:PORT>, C<[IPv6]:PORT> or the
Unix socket path):

=over 4

=item C<PAGI_REUSE>

Comma-separated C<HOST:PORT:FD>, C<[IPv6]:PORT:FD> or C<unix:PATH:FD>
entries, as a hot restart's old master leaves them. A listener on port 0
takes the one entry on its host, so a server started with port 0 keeps its
port across hot restarts. After C<listen>, C<PAGI_REUSE> lists this
server's own sockets (a process it execs can adopt them); C<shutdown> takes
them out again.

=item systemd's C<LISTEN_FDS>

With C<LISTEN_PID> equal to this process, descriptors 3 to
3 + C<LISTEN_FDS> - 1 (socket activation). C<LISTEN_FDS>, C<LISTEN_PID> and
C<LISTEN_FDNAMES> are removed from the environment in any case, so that no
process started later takes them for its own.

=back

An adopted listener is marked C<_inherited> in C<listeners>, and its Unix
socket file is never unlinked, except by a hot restart's new master, which
takes its predecessor's socket files over with the sockets. A socket offered for an address that is not
configured is reported and not served (and closed, when it surely came by
exec); an offered descriptor that is not an open listening socket of the
right kind is reported, and a new socket is bound instead. See
L<PAGI::Server::Deploy> for systemd units.

=head1 SEE ALSO

L<PAGI::Server::Deploy> (running it in production: systemd, log rotation,
restarts, reverse proxies, tuning, moving from the reference server),
L<PAGI::Server::Runner>, L<pagi-server>, L<PAGI::Server::Options>, the PAGI
specification.

=cut
