package PAGI::Server::Options;

use strict;
use warnings;

our $VERSION = '0.003000';

# The one table of PAGI::Server's options; see the POD below for what each
# field means. The order is the order of `pagi-server --help`.
my @TABLE = (
    # ---------------------------------------------------------- listening
    { name => 'app', kind => 'code', own_init => 1, reconfigure => 1,
      help => 'the PAGI application: async sub ($scope, $receive, $send)' },
    { name => 'host', kind => 'text', default => '127.0.0.1', own_init => 1, reconfigure => 1,
      flags => 'h|o|host', arg => 'HOST', runner => 1, help => 'address to bind' },
    { name => 'port', kind => 'count', default => 5000, own_init => 1, reconfigure => 1,
      flags => 'p|port', arg => 'PORT', runner => 1, help => 'port to bind, 0 picks a free one' },
    { name => 'socket', kind => 'path', own_init => 1, reconfigure => 'ignored',
      flags => 'socket', arg => 'PATH', help => 'listen on a Unix socket instead of host/port' },
    { name => 'socket_mode', kind => 'octal', default => undef, reconfigure => 'ignored',
      flags => 'socket-mode', arg => 'MODE', help => 'Unix socket permissions, e.g. 0660' },
    { name => 'listen', kind => 'listen', own_init => 1, reconfigure => 'ignored',
      flags => 'listen', arg => 'SPEC',
      help => 'HOST:PORT, [IPv6]:PORT or a socket path; repeatable, replaces --host/--port/--socket' },
    { name => 'workers', kind => 'count', default => 0, reconfigure => 1,
      flags => 'w|workers', arg => 'N', from_cli => sub { $_[0] <= 1 ? 0 : $_[0] },
      help => 'worker processes, 0 or 1: one process' },
    { name => 'reuseport', kind => 'bool', default => 0, worker => 1,
      core => 'reuseport', core_value => sub { $_[0]{reuseport} ? 1 : 0 },
      flags => 'reuseport', help => 'SO_REUSEPORT listeners for workers' },
    { name => 'max_requests', kind => 'count', default => 0, reconfigure => 1, worker => 1,
      flags => 'max-requests', arg => 'N', help => 'requests before a worker is replaced, 0: never' },
    { name => 'max_connections', kind => 'count', default => 0, reconfigure => 1, worker => 1,
      core => 'max_connections', core_value => sub { $_[0]->effective_max_connections },
      flags => 'max-connections', arg => 'N', help => 'open connections allowed, 0: 1000' },
    { name => 'listener_backlog', kind => 'count', default => 2048, reconfigure => 1, worker => 1,
      core => 'backlog', flags => 'b|listener-backlog|listener_backlog', arg => 'N',
      help => 'queue of connections waiting to be accepted' },

    # ---------------------------------------------------------- protocols
    # Checked and sent to the core (as tls_* lines) by PAGI::Server::TLS.
    { name => 'ssl', kind => 'hash', default => undef, reconfigure => 1, worker => 1,
      help => 'TLS: cert_file, key_file, ca_file, verify_client, min_version, cipher_list' },
    { name => 'ssl_cert', kind => 'path', cli_only => 1,
      flags => 'ssl-cert', arg => 'FILE', help => 'TLS certificate (needs --ssl-key)' },
    { name => 'ssl_key', kind => 'path', cli_only => 1,
      flags => 'ssl-key', arg => 'FILE', help => 'TLS private key (needs --ssl-cert)' },
    { name => 'disable_tls', kind => 'bool', default => 0, worker => 1, help => 'ignore the ssl option' },
    { name => 'http2', kind => 'bool', default => 0, reconfigure => 1, worker => 1,
      core => 'http2', core_value => sub { $_[0]{http2} ? 1 : 0 }, flags => 'http2', help => 'serve HTTP/2 (h2 over TLS, h2c otherwise)' },
    { name => 'h2_max_concurrent_streams', kind => 'count', worker => 1, core => 'h2_max_concurrent_streams', default => 100,
      help => 'HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS' },
    { name => 'h2_initial_window_size', kind => 'count', worker => 1, core => 'h2_initial_window_size', default => 65535,
      help => 'HTTP/2 SETTINGS_INITIAL_WINDOW_SIZE' },
    { name => 'h2_max_frame_size', kind => 'count', worker => 1, core => 'h2_max_frame_size', default => 16384,
      help => 'HTTP/2 SETTINGS_MAX_FRAME_SIZE' },
    { name => 'h2_enable_push', kind => 'bool', default => 0, help => 'HTTP/2 server push' },
    { name => 'h2_enable_connect_protocol', kind => 'bool', default => 1, worker => 1,
      core => 'h2_enable_connect_protocol', core_value => sub { $_[0]{h2_enable_connect_protocol} ? 1 : 0 },
      help => 'HTTP/2 extended CONNECT (WebSocket over HTTP/2)' },
    { name => 'h2_max_header_list_size', kind => 'count', worker => 1, core => 'h2_max_header_list_size', default => 65536,
      help => 'HTTP/2 SETTINGS_MAX_HEADER_LIST_SIZE' },
    { name => 'h2_rst_rate_limit', kind => 'hash', default => { burst => 1000, rate => 33 }, worker => 1,
      core => 'h2_rst_rate_limit', core_value => sub { "$_[0]{h2_rst_rate_limit}{burst}/$_[0]{h2_rst_rate_limit}{rate}" },
      help => 'HTTP/2 stream resets allowed: burst and rate per second' },

    # ----------------------------------------------------------- timeouts
    { name => 'timeout', kind => 'seconds', default => 60, reconfigure => 1, worker => 1,
      core => 'timeout', flags => 'timeout', arg => 'SEC',
      help => 'time allowed for a request head, 0: off' },
    { name => 'request_timeout', kind => 'seconds', default => 0, reconfigure => 1, worker => 1,
      core => 'request_timeout', flags => 'request-timeout', arg => 'SEC',
      help => 'close a request stalled this long, 0: off' },
    { name => 'min_body_rate', kind => 'count', default => 500, reconfigure => 1, worker => 1,
      core => 'min_body_rate', flags => 'min-body-rate', arg => 'BYTES',
      help => 'body bytes/s owed with --request-timeout, 0: off' },
    { name => 'ws_idle_timeout', kind => 'seconds', default => 0, reconfigure => 1, worker => 1,
      core => 'ws_idle_timeout', flags => 'ws-idle-timeout', arg => 'SEC',
      help => 'close a WebSocket idle this long, 0: off' },
    { name => 'sse_idle_timeout', kind => 'seconds', default => 0, reconfigure => 1, worker => 1,
      core => 'sse_idle_timeout', flags => 'sse-idle-timeout', arg => 'SEC',
      help => 'close an SSE stream idle this long, 0: off' },
    { name => 'shutdown_timeout', kind => 'seconds', default => 30, reconfigure => 1, worker => 1,
      flags => 'shutdown-timeout', arg => 'SEC', help => 'graceful shutdown limit' },
    { name => 'heartbeat_timeout', kind => 'seconds', default => 50,
      flags => 'heartbeat-timeout', arg => 'SEC', help => 'worker heartbeat limit, 0: off' },
    { name => 'log_level', kind => 'enum', values => [qw(debug info warn error)], default => 'info',
      reconfigure => 1, worker => 1, flags => 'log-level', arg => 'LEVEL',
      help => 'debug, info, warn or error' },
    { name => 'lifespan_mode', kind => 'enum', values => [qw(auto on off)], default => 'auto',
      reconfigure => 1, worker => 1, flags => 'lifespan', arg => 'MODE',
      help => 'auto, on or off' },
    { name => 'lifespan_startup_timeout', kind => 'seconds', default => 30, reconfigure => 1, worker => 1,
      flags => 'lifespan-startup-timeout', arg => 'SEC', help => 'lifespan startup limit, 0: none' },

    # ------------------------------------------------------------- limits
    { name => 'max_body_size', kind => 'count', default => 10_000_000, reconfigure => 1, worker => 1,
      core => 'max_body_size', flags => 'max-body-size', arg => 'BYTES',
      help => 'largest request body, 0: no limit' },
    { name => 'max_header_size', kind => 'count', default => 8192, reconfigure => 1, worker => 1,
      core => 'max_header_size', flags => 'max-header-size', arg => 'BYTES',
      help => 'largest request head' },
    { name => 'max_header_count', kind => 'count', default => 100, reconfigure => 1, worker => 1,
      core => 'max_header_count', flags => 'max-header-count', arg => 'N',
      help => 'most header fields in a request' },
    { name => 'max_receive_queue', kind => 'count', default => 1000, reconfigure => 1, worker => 1,
      core => 'max_receive_queue', flags => 'max-receive-queue', arg => 'N',
      help => 'WebSocket messages queued, 0: no limit' },
    { name => 'max_ws_frame_size', kind => 'count', default => 65536, reconfigure => 1, worker => 1,
      core => 'max_ws_frame_size', flags => 'max-ws-frame-size', arg => 'BYTES',
      help => 'largest WebSocket frame, 0: no limit' },
    { name => 'max_ws_message_size', kind => 'count', default => 16_777_216, reconfigure => 1, worker => 1,
      core => 'max_ws_message_size', flags => 'max-ws-message-size', arg => 'BYTES',
      help => 'largest WebSocket message (all its frames, inflated), 0: no limit' },
    { name => 'ws_compression', kind => 'bool', default => 1, reconfigure => 1, worker => 1,
      core => 'ws_compression', core_value => sub { $_[0]{ws_compression} ? 1 : 0 },
      flags => 'no-ws-compression', from_cli => sub { 0 },
      help => 'never agree to WebSocket permessage-deflate' },
    { name => 'write_high_watermark', kind => 'count', default => 65536, worker => 1,
      core => 'write_high_watermark', flags => 'write-high-watermark', arg => 'BYTES',
      help => 'send waits above this much unsent' },
    { name => 'write_low_watermark', kind => 'count', default => 16384, worker => 1,
      core => 'write_low_watermark', flags => 'write-low-watermark', arg => 'BYTES',
      help => '... until it falls to this' },
    { name => 'sync_file_threshold', kind => 'count', default => 65536, worker => 1,
      flags => 'sync-file-threshold', arg => 'BYTES', help => 'accepted, has no effect here' },

    # ------------------------------------------------- logging and the app
    { name => 'quiet', kind => 'bool', default => 0, reconfigure => 1,
      flags => 'q|quiet', runner => 1, help => 'no startup or mode messages' },
    { name => 'access_log', kind => 'handle', default => sub { \*STDERR }, own_init => 1,
      reconfigure => 1, worker => 1, core => 'access_log', core_value => sub { $_[0]{access_log} ? 1 : 0 },
      help => 'handle the access log is written to; undef for none' },
    { name => 'access_log_format', kind => 'text', default => 'clf', reconfigure => 1, worker => 1,
      core => 'access_log_format', flags => 'access-log-format', arg => 'FMT',
      help => 'preset or %-format' },
    { name => 'extensions', kind => 'hash', default => sub { {} }, reconfigure => 1, worker => 1,
      help => 'extensions announced in every scope' },
    { name => 'validate_events', kind => 'bool', worker => 1,
      default => sub { ($ENV{PAGI_ENV} // '') eq 'development' ? 1 : 0 },
      help => 'check the events the app sends (default on when PAGI_ENV is development)' },
    { name => 'loop_type', kind => 'text', default => undef,
      flags => 'l|loop', arg => 'BACKEND', runner => 1,
      help => 'IO::Async loop backend, e.g. EPoll, EV, Poll' },
);

my %FIELDS = map { $_ => 1 } qw(name kind values default own_init reconfigure worker core
    core_value flags arg runner from_cli cli_only help);
my %KINDS = map { $_ => 1 } qw(count seconds bool enum octal text path listen hash code handle);

my %BY_NAME;
for my $o (@TABLE) {
    # A mistake in the table is found when the module loads, not by users.
    my @missing = grep { !defined $o->{$_} } qw(name kind help);
    die "PAGI::Server::Options: " . ($o->{name} // '?') . ": missing @missing\n" if @missing;
    my @bad = grep { !$FIELDS{$_} } sort keys %$o;
    die "PAGI::Server::Options: $o->{name}: unknown field(s) @bad\n" if @bad;
    die "PAGI::Server::Options: $o->{name}: unknown kind '$o->{kind}'\n" unless $KINDS{ $o->{kind} };
    die "PAGI::Server::Options: $o->{name}: an enum needs values\n"
        if ($o->{kind} eq 'enum') != !!$o->{values};
    die "PAGI::Server::Options: $o->{name} is listed twice\n" if $BY_NAME{ $o->{name} };
    $BY_NAME{ $o->{name} } = $o;
}

sub all { @TABLE }

sub get { $BY_NAME{ $_[0] } }

sub names_with {
    my ($field) = @_;
    return map { $_->{name} } grep { $_->{$field} } @TABLE;
}

sub default_of {
    my ($name) = @_;
    my $d = $BY_NAME{$name}{default};
    return ref $d eq 'CODE' ? $d->() : $d;
}

sub invalid {
    my ($name, $value) = @_;
    my $o = $BY_NAME{$name} or return;
    return unless $o->{kind} eq 'enum';
    return if defined $value && grep { $_ eq $value } @{ $o->{values} };
    return "Invalid $name '" . ($value // '') . "' - must be one of: " . join(', ', @{ $o->{values} }) . "\n";
}

# This process's command line as the kernel has it (perl's own switches
# included), else perl, $0 and PAGI_ARGV: what a hot restart runs again.
# Read it before anything sets $0, which overwrites the kernel's copy.
sub command_line {
    if (open my $fh, '<', "/proc/$$/cmdline") {
        local $/;
        my @argv = split /\0/, <$fh> // '';
        return @argv if @argv;
    }
    return ($^X, $0, split /\0/, $ENV{PAGI_ARGV} // '');
}

sub core_lines {
    my ($server) = @_;
    my @lines;
    for my $o (grep { $_->{core} } @TABLE) {
        my $v = $o->{core_value} ? $o->{core_value}->($server) : $server->{ $o->{name} };
        $v //= $o->{kind} eq 'text' ? '' : 0;
        push @lines, "$o->{core}=$v";
    }
    return @lines;
}

sub getopt_spec {
    my ($o) = @_;
    my $type = $o->{kind} eq 'bool' ? ''
             : $o->{kind} =~ /\A(?:count|seconds)\z/ ? '=i'
             : $o->{kind} eq 'listen' ? '=s@'
             : '=s';
    return $o->{flags} . $type;
}

sub help_line {
    my ($o, $width) = @_;
    my @flags = map { length == 1 ? "-$_" : "--$_" } split /\|/, $o->{flags};
    my $left  = '  ' . (length $flags[0] == 2 ? '' : '    ') . join(', ', @flags)
              . (defined $o->{arg} ? " $o->{arg}" : '');
    my @words = split ' ', $o->{help};
    my $d     = $o->{default};
    push @words, "(default $d)" if defined $d && !ref $d && $o->{kind} ne 'bool';
    # The description starts at column $width (on the next line when the
    # flags reach it) and wraps before column 80.
    my @lines = ($left);
    push @lines, '' if length $left >= $width - 1;
    $lines[-1] .= ' ' x ($width - length $lines[-1]);
    for my $word (@words) {
        my $used = length($lines[-1]) > $width;
        if ($used && length($lines[-1]) + 1 + length($word) > 79) {
            push @lines, ' ' x $width;
            $used = 0;
        }
        $lines[-1] .= ($used ? ' ' : '') . $word;
    }
    return join("\n", @lines) . "\n";
}

1;

__END__

=head1 NAME

PAGI::Server::Options - the one table of PAGI::Server's options

=head1 SYNOPSIS

    use PAGI::Server::Options;

    my @for_workers = PAGI::Server::Options::names_with('worker');
    my $default     = PAGI::Server::Options::default_of('timeout');
    print PAGI::Server::Options::help_line($_, 35)
        for grep { $_->{flags} && !$_->{runner} } PAGI::Server::Options::all();

=head1 DESCRIPTION

Every option of L<PAGI::Server> is described once, here. The constructor's
defaults, what C<configure> may change, what a pre-forked worker is built
with (L<PAGI::Server::Workers>), the C<key=value> lines handed to the Rust
core, the command line flags of F<pagi-server> and L<PAGI::Server::Runner>
with their checks, and the option part of C<pagi-server --help> are all
derived from this table. The meaning of each option is documented in
L<PAGI::Server/CONSTRUCTOR OPTIONS>.

=head1 FIELDS

Each entry is a hash with these fields (only C<name>, C<kind> and C<help>
are always present):

=over 4

=item name

The constructor key.

=item kind

The kind of value: C<count> (a whole number, 0 or more), C<seconds> (a
number of seconds, 0 or more; whole on the command line), C<bool>, C<enum>
(one of C<values>; the constructor and C<configure> refuse anything else),
C<octal> (a file mode, given as C<0660> on the command line), C<text>,
C<path>, C<listen> (a list of listener specs), C<hash>, C<code> or
C<handle>. On the command line the kind decides the L<Getopt::Long> type
and the check of the value.

=item values

The allowed values of an C<enum>, in the order messages list them (for
C<log_level>, least severe first, which is how PAGI::Server ranks them).

=item default

The value used when the option is not given or given as C<undef>. A code
reference is called for a fresh value each time.

=item own_init

The constructor sets this option with code of its own (the listener
options, C<app>, and C<access_log>, where C<undef> means "no log") instead
of taking the default.

=item reconfigure

True when C<configure> may change the option after construction; the
string C<ignored> marks listener options C<configure> accepts without
effect. Any other option given to C<configure> is refused.

=item worker

Passed on to the server each pre-forked worker builds.

=item core, core_value

The key of the line that carries the option to the Rust core, and, when
the line's value is not the option's value as given, a code reference that
computes it from the server object. The core refuses a key it does not know
with an error naming it and listing the keys it knows.

=item flags

L<Getopt::Long> names of the command line flag, e.g.
C<b|listener-backlog|listener_backlog>: one-letter names are short flags,
the first longer one names the flag in messages.

=item runner

The flags are read by L<PAGI::Server::Runner>, which passes the value to
any server class; without it F<pagi-server> reads them.

=item arg, help

The value's placeholder in C<--help> and a one-line description. C<--help>
adds the default when it is a plain value.

=item from_cli

A code reference that turns the checked command line value into the
option's value (C<--workers 1> means a single process).

=item cli_only

A flag that is no constructor option by itself (C<--ssl-cert> and
C<--ssl-key> together become C<ssl>).

=back

=head1 FUNCTIONS

=over 4

=item all

Every entry, in table order.

=item get($name)

The entry for one option, or C<undef>.

=item names_with($field)

The names of the options whose C<$field> is true.

=item default_of($name)

The option's default (a fresh one where the default is built by code).

=item invalid($name, $value)

For an C<enum> option, the constructor's error message when C<$value> is
not one of its values; otherwise nothing.

=item core_lines($server)

The C<key=value> lines for the Rust core that carry the server's options.

=item getopt_spec($entry)

The entry's L<Getopt::Long> specification.

=item help_line($entry, $width)

The entry's line(s) for C<--help>, the description starting at column
C<$width>.

=back

=head1 ADDING AN OPTION

Add one entry here and document the option in L<PAGI::Server/CONSTRUCTOR OPTIONS>.
If the Rust core needs it, give it C<core> and add the same key to the
C<KEYS> table in F<src/config.rs>; F<t/18-option-table.t> fails until the
two agree. Only an option with behaviour of its own in Perl needs code
elsewhere.

=cut
