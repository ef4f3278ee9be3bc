package PAGI::Server::Runner;

use strict;
use warnings;

our $VERSION = '0.003000';

use File::Basename ();
use File::Spec;
use Getopt::Long ();
use PAGI::Server::Options ();
use POSIX ();
use Scalar::Util ();

# Server options the runner sets from its own flags, which work with any
# server class: the runner's field => the PAGI::Server option whose table
# entry spells the flag.
my %SERVER_OPTION_OF = (host => 'host', port => 'port', loop => 'loop_type', quiet => 'quiet');
my %ENTRY = map { $_ => PAGI::Server::Options::get($SERVER_OPTION_OF{$_}) } keys %SERVER_OPTION_OF;

# Runner-level command line options: Getopt::Long spec => key in %opts.
# The value-taking ones are also listed in %TAKES_VALUE so that the
# cuddled-form splitter (-MFoo, -Ilib, -e'...') leaves their values alone.
my @OPTION_SPECS = (
    'a|app=s'             => 'app',
    'e=s'                 => 'eval',
    'I|lib=s@'            => 'libs',
    'M=s@'                => 'modules',
    (map { PAGI::Server::Options::getopt_spec($ENTRY{$_}) => $_ } qw(host port)),
    's|server=s'          => 'server',
    'E|env=s'             => 'env',
    PAGI::Server::Options::getopt_spec($ENTRY{loop}) => 'loop',
    'access-log=s'        => 'access_log',
    'no-access-log'       => 'no_access_log',
    'D|daemonize'         => 'daemonize',
    'pid=s'               => 'pid_file',
    'user=s'              => 'user',
    'group=s'             => 'group',
    PAGI::Server::Options::getopt_spec($ENTRY{quiet}) => 'quiet',
    'default-middleware!' => 'default_middleware',
    'help'                => 'help',
    'v|version'           => 'version',
);

my %TAKES_VALUE;
for (my $i = 0; $i < @OPTION_SPECS; $i += 2) {
    my ($names, $type) = $OPTION_SPECS[$i] =~ /^([^=!]+)(=.*)?$/;
    next unless $type;
    $TAKES_VALUE{$_} = 1 for split /\|/, $names;
}

my $MODULE_NAME_RE = qr/\A[A-Za-z_]\w*(?:::\w+)*\z/;

# The runner whose PID file the END block removes (set by run).
our $PID_FILE_OWNER;

# --------------------------------------------------------------- construct

sub new {
    my ($class, %args) = @_;
    my $self = bless {
        app            => undef,
        app_spec       => undef,
        app_args       => {},
        argv           => [],
        server_options => {},
        libs           => [],
        modules        => [],
        quiet          => 0,
        no_access_log  => 0,
        daemonize      => 0,
    }, $class;

    for my $key (qw(host port server env loop access_log pid_file user group
                    eval default_middleware)) {
        $self->{$key} = $args{$key};
    }
    for my $key (qw(quiet no_access_log daemonize libs modules server_options)) {
        $self->{$key} = $args{$key} if defined $args{$key};
    }
    return $self;
}

sub run {
    my ($self, @args) = @_;
    $self = $self->new unless ref $self;

    $self->parse_options(@args);
    $ENV{PAGI_ENV} = $self->mode;
    $self->_configure_future_io;

    return $self->_show_version if $self->{show_version};
    return $self->_show_help    if $self->{show_help};

    $self->prepare_app;
    my $server = $self->load_server;

    # From here on a daemon reports to its launcher, which is still on the
    # terminal and exits only once it knows whether the server came up.
    $self->{_launcher} = $self->_daemonize if $self->{daemonize};
    my $ok = eval {
        # The PID file, then --user/--group: PAGI::Server runs these once
        # its sockets are bound (so a port below 1024 works) and before any
        # app code or worker runs; another server class before its run.
        my $bound = sub {
            if (defined $self->{pid_file}) {
                $self->_write_pid_file($self->{pid_file});
                $PID_FILE_OWNER = $self;    # the END block removes it on any exit
            }
            $self->_drop_privileges if $self->{user} || $self->{group};
        };
        my $ready = $self->{_launcher} && sub { $self->_report_to_launcher("ready $$\n") };
        if (Scalar::Util::blessed($server) && $server->isa('PAGI::Server')) {
            # It also says when it is started (in a worker, with workers).
            $server->run(_on_bound => $bound, ($ready ? (_on_ready => $ready) : ()));
        }
        else {
            $bound->();
            $ready->() if $ready;
            $server->run;
        }
        1;
    };
    unless ($ok) {
        my $err = $@;
        my $msg = "$err";
        utf8::encode($msg) if utf8::is_utf8($msg);
        $self->_report_to_launcher('error ' . length($msg) . "\n$msg");
        die $err;
    }

    $self->_remove_pid_file;
    return;
}

# ---------------------------------------------------------------- options

sub parse_options {
    my ($self, @args) = @_;

    # A CLI wrapper hands over its server-specific options as the pair
    # (server_options => \%hash) somewhere in the list.
    for my $i (0 .. $#args - 1) {
        next unless !ref $args[$i] && $args[$i] eq 'server_options'
            && ref $args[$i + 1] eq 'HASH';
        $self->{server_options} = $args[$i + 1];
        splice @args, $i, 2;
        last;
    }

    @args = _split_cuddled(@args);

    my %opts;
    my @bindings;
    for (my $i = 0; $i < @OPTION_SPECS; $i += 2) {
        my ($spec, $key) = @OPTION_SPECS[$i, $i + 1];
        push @bindings, $spec => ($spec =~ /\@$/ ? ($opts{$key} = []) : \$opts{$key});
    }

    my @problems;
    my $parser = Getopt::Long::Parser->new(
        config => [qw(no_auto_abbrev no_ignore_case permute no_bundling)],
    );
    {
        local $SIG{__WARN__} = sub { push @problems, $_[0] };
        $parser->getoptionsfromarray(\@args, @bindings);
    }
    if (@problems) {
        # Getopt::Long names options bare ("option p"); show them as typed.
        for (@problems) {
            chomp;
            s/\b(option:?) ([\w-]+)/$1 . ' ' . (length $2 == 1 ? '-' : '--') . $2/ie;
        }
        die join('', map { "$_\n" } @problems)
          . "Run with --help to see the available options.\n";
    }

    if (defined $opts{port} && ($opts{port} < 0 || $opts{port} > 65535)) {
        die "Option --port must be between 0 and 65535 (got $opts{port})\n";
    }
    for my $key (qw(env server loop host)) {
        next unless defined $opts{$key} && $opts{$key} eq '';
        (my $flag = $key) =~ tr/_/-/;
        die "Option --$flag must not be empty\n";
    }

    for my $key (qw(host port server env loop access_log pid_file user group eval)) {
        $self->{$key} = $opts{$key} if defined $opts{$key};
    }
    for my $key (qw(quiet no_access_log daemonize)) {
        $self->{$key} = 1 if $opts{$key};
    }
    $self->{default_middleware} = $opts{default_middleware} ? 1 : 0
        if defined $opts{default_middleware};
    $self->{app_spec} = $opts{app} if defined $opts{app};

    push @{ $self->{libs} },    @{ $opts{libs} };
    push @{ $self->{modules} }, @{ $opts{modules} };
    push @{ $self->{argv} },    @args;

    $self->{show_version} = 1 if $opts{version};
    $self->{show_help}    = 1 if $opts{help};
    return $self;
}

# Turns perl-style cuddled flags (-MFoo::Bar, -Ilib, -e'code') into two
# arguments, except where the token is the value of a preceding option or
# comes after a "--" terminator.
sub _split_cuddled {
    my @in = @_;
    my @out;
    my $value_next = 0;
    while (@in) {
        my $arg = shift @in;
        if ($arg eq '--') {
            push @out, $arg, @in;
            last;
        }
        if (!$value_next && $arg =~ /^-([IMe])(.+)\z/s) {
            push @out, "-$1", $2;
            next;
        }
        push @out, $arg;
        if ($value_next) {
            $value_next = 0;
        }
        elsif ($arg =~ /^--?([\w-]+)\z/ && $TAKES_VALUE{$1}) {
            $value_next = 1;
        }
    }
    return @out;
}

sub mode {
    my ($self) = @_;
    return $self->{env} if defined $self->{env} && length $self->{env};
    return $ENV{PAGI_ENV} if defined $ENV{PAGI_ENV} && length $ENV{PAGI_ENV};
    return -t STDIN ? 'development' : 'production';
}

# ------------------------------------------------------------ app loading

sub load_app {
    my ($self) = @_;

    unshift @INC, map { File::Spec->rel2abs($_) } @{ $self->{libs} };

    $self->_load_preload_module($_) for @{ $self->{modules} };

    if (defined $self->{eval}) {
        my $app = _eval_inline($self->{eval});
        die "Error evaluating -e code: $@\n" if $@;
        die '-e code must return a coderef, got ' . _describe($app) . "\n"
            unless _is_code($app);
        $self->{app_spec} = '-e';
        return $self->{app} = $app;
    }

    my @rest = @{ $self->{argv} };
    if (!defined $self->{app_spec} && @rest && $rest[0] !~ /=/) {
        $self->{app_spec} = shift @rest;
        $self->{argv} = [@rest];
    }

    my $spec = $self->{app_spec};
    my %args;
    if (defined $spec) {
        %args = $self->_parse_app_args(@rest);
    }
    else {
        # Nothing given: browse the current directory, letting key=value
        # arguments (e.g. root=/srv/www) adjust it.
        $spec = 'PAGI::App::Directory';
        %args = (root => '.', $self->_parse_app_args(@rest));
    }
    $self->{app_spec} = $spec;
    $self->{app_args} = \%args;

    my $as_file = $self->_is_module_name($spec) ? 0
                : $self->_is_file_path($spec)   ? 1
                : -f $spec;

    my $app = $as_file ? $self->_load_file($spec)
                       : $self->_load_module($spec, %args);
    return $self->{app} = $app;
}

sub prepare_app {
    my ($self) = @_;
    my $app = $self->load_app;

    my $wanted = $self->{default_middleware} // 1;
    if ($wanted && $self->mode eq 'development') {
        if (eval { require PAGI::Middleware::Lint; 1 }) {
            $app = PAGI::Middleware::Lint->new(strict => 1)->wrap($app);
            warn "Development mode: wrapping the app in PAGI::Middleware::Lint (strict)\n"
                unless $self->{quiet};
        }
        elsif (!$self->{quiet}) {
            warn "Development mode: PAGI::Middleware::Lint is not installed "
               . "(it comes with PAGI-Tools), so the app runs unchecked\n";
        }
    }
    return $self->{app} = $app;
}

# ----------------------------------------------------------------- server

sub load_server {
    my ($self) = @_;

    my $class = $self->{server} // 'PAGI::Server';
    die "Invalid server class name: $class\n" unless $class =~ $MODULE_NAME_RE;
    (my $file = "$class.pm") =~ s{::}{/}g;
    eval { require $file; 1 }
        or die "Cannot load server '$class': $@\n";

    my %extra = %{ $self->{server_options} // {} };

    my $own_binding = exists $extra{socket} || exists $extra{listen};
    if ($own_binding && (defined $self->{host} || defined $self->{port})) {
        my $which = exists $extra{listen} ? 'listen' : 'socket';
        die "Options --host/--port cannot be combined with --$which\n";
    }

    my @logging;
    if ($self->{no_access_log}) {
        @logging = (access_log => undef);
    }
    elsif (defined $self->{access_log} && length $self->{access_log}) {
        open my $fh, '>>', $self->{access_log}
            or die "Cannot open access log $self->{access_log}: $!\n";
        $fh->autoflush(1);
        @logging = (access_log => $fh);
    }
    elsif ($self->mode eq 'production') {
        @logging = (access_log => undef);
    }

    my @binding = $own_binding ? () : (
        host => $self->{host} // PAGI::Server::Options::default_of('host'),
        port => $self->{port} // PAGI::Server::Options::default_of('port'),
    );

    return $class->new(
        app   => $self->{app},
        @binding,
        quiet => $self->{quiet} ? 1 : 0,
        ($self->{loop} ? (loop_type => $self->{loop}) : ()),
        @logging,
        %extra,
    );
}

# Name used by releases before load_server existed.
sub prepare_server { shift->load_server(@_) }

# --------------------------------------------------------------- internals

sub _configure_future_io {
    my ($self) = @_;
    return unless eval { require Future::IO::Impl::IOAsync; 1 };
    warn "Future::IO will use the IO::Async loop\n"
        if !$self->{quiet} && $self->mode ne 'production';
    return 1;
}

sub _is_module_name {
    my ($self, $spec) = @_;
    return $spec =~ /::/ ? 1 : 0;
}

sub _is_file_path {
    my ($self, $spec) = @_;
    return 1 if index($spec, '/') >= 0;
    return $spec =~ /\.(?:pl|psgi)\z/i ? 1 : 0;
}

sub _parse_app_args {
    my ($self, @pairs) = @_;
    my %args;
    for my $pair (@pairs) {
        if ($pair =~ /\A([^=]+)=(.*)\z/s) {
            $args{$1} = $2;
        }
        else {
            warn "Ignoring app argument '$pair': expected key=value\n";
        }
    }
    return %args;
}

sub _load_preload_module {
    my ($self, $arg) = @_;
    my ($module, $list) = split /=/, $arg, 2;
    die "Option -M: invalid module name '$module'\n"
        unless $module =~ $MODULE_NAME_RE;
    (my $file = "$module.pm") =~ s{::}{/}g;
    eval { require $file; 1 } or die "Cannot load module $module: $@\n";
    my @imports = defined $list ? split(/,/, $list) : ();
    eval { $module->import(@imports); 1 }
        or die "Cannot import from module $module: $@\n";
    return;
}

sub _load_module {
    my ($self, $module, %args) = @_;
    die "Invalid module name: $module\n" unless $module =~ $MODULE_NAME_RE;

    (my $file = "$module.pm") =~ s{::}{/}g;
    unless (eval { require $file; 1 }) {
        my $err = $@;
        die "Cannot find module '$module' (is it installed and in \@INC?): $err\n"
            if $err =~ /^Can't locate \Q$file\E in \@INC/;
        die "Cannot load module '$module' (it failed to compile): $err\n";
    }

    die "Module '$module' does not have new() and to_app() methods\n"
        unless $module->can('new') && $module->can('to_app');

    my $app = $module->new(%args, _caller_file => $INC{$file})->to_app;
    die "Module '$module' to_app() did not return a coderef\n"
        unless _is_code($app);
    return $app;
}

sub _load_file {
    my ($self, $path) = @_;
    my $file = File::Spec->rel2abs($path);
    die "App file not found: $file\n" unless -f $file;

    # Make the app see itself as the running script, as plackup does, so
    # that FindBin inside it points at the app's own directory.
    local $0    = $file;
    local @ARGV = ($file);
    FindBin::again() if $INC{'FindBin.pm'} && FindBin->can('again');

    local $@;
    local $!;
    my $app = _do_file($file);
    die "Error loading $file: $@\n"  if $@;
    die "Error reading $file: $!\n"  if !defined $app && $!;

    if (Scalar::Util::blessed($app) && !_is_code($app) && $app->can('to_app')) {
        $app = $app->to_app;
    }
    die 'App file must return a coderef, got: ' . _describe($app) . "\n"
        unless _is_code($app);
    return $app;
}

sub _is_code {
    my ($thing) = @_;
    return ref $thing && (Scalar::Util::reftype($thing) // '') eq 'CODE';
}

sub _describe {
    my ($thing) = @_;
    return 'undef' unless defined $thing;
    return ref($thing) || 'non-reference';
}

# ------------------------------------------------------------ help/version

sub _help_text {
    my %line = map { $_ => PAGI::Server::Options::help_line($ENTRY{$_}, 27) } keys %ENTRY;
    return <<"TEXT";
Usage: pagi-server [options] [app] [key=value ...]

The app is a file returning a PAGI coderef (./app.pl, app.psgi), a module
name with new() and to_app() (PAGI::App::Directory root=/srv), or inline
code given with -e. Without one, the current directory is served.

Runner options:
  -a, --app FILE           app file (same as giving FILE as an argument)
  -e CODE                  inline app code returning a coderef
  -M MODULE[=a,b]          load MODULE (and import a,b) before -e; repeatable
  -I, --lib DIR            prepend DIR to \@INC; repeatable
$line{host}$line{port}  -s, --server CLASS       server class (default PAGI::Server)
  -E, --env MODE           development, production or none
                           (default: \$PAGI_ENV, else development on a
                           terminal and production otherwise)
$line{loop}      --access-log FILE    append the access log to FILE
      --no-access-log      turn the access log off
  -D, --daemonize          detach and run in the background
      --pid FILE           write the server's process id to FILE
      --user USER          switch to USER before serving (root only)
      --group GROUP        switch to GROUP before serving (root only)
$line{quiet}      --no-default-middleware
                           no Lint wrapping in development mode
  -v, --version            print versions and exit
      --help               print this help and exit
TEXT
}

sub _show_help {
    my ($self) = @_;
    print $self->_help_text;
    return;
}

sub _show_version {
    my ($self) = @_;
    my $class = $self->{server} // 'PAGI::Server';

    my $server_version;
    if ($class =~ $MODULE_NAME_RE) {
        (my $file = "$class.pm") =~ s{::}{/}g;
        $server_version = eval { require $file; $class->VERSION };
    }
    my $pagi_version = eval { require PAGI; PAGI->VERSION };

    printf "%s (PAGI %s, %s %s)\n",
        File::Basename::basename($0),
        $pagi_version   // 'unknown',
        $class,
        $server_version // 'unknown';
    return;
}

# ------------------------------------------------------- process handling

# Detaches (two forks and a new session). The launcher - the process the
# user started - stays on the terminal until the daemon reports through a
# pipe that it serves ("ready PID") or why it could not ("error LENGTH" and
# the message), then exits 0 or prints the message and exits 1. Nothing is bound
# before the forks, so no Rust runtime ever exists in a process that forks
# here; the daemon binds, and a busy port still reaches the terminal.
# Returns, in the daemon, the write end of that pipe.
sub _daemonize {
    my ($self) = @_;

    pipe(my $from_daemon, my $to_launcher) or die "Cannot create a pipe for --daemonize: $!\n";
    my $first = fork;
    die "Cannot fork to daemonize: $!\n" unless defined $first;
    if ($first) {
        close $to_launcher;
        my $code = $self->_await_daemon($from_daemon, $first);
        STDOUT->flush;
        STDERR->flush;
        # The launcher leaves without END blocks or destructors: they
        # belong to the daemon.
        POSIX::_exit($code);
    }
    close $from_daemon;

    POSIX::setsid() != -1 or die "Cannot start a new session: $!\n";

    my $second = fork;
    die "Cannot fork to daemonize: $!\n" unless defined $second;
    _leave() if $second;

    chdir '/' or die "Cannot chdir to /: $!\n";
    umask 022;
    open STDIN,  '<', '/dev/null' or die "Cannot reopen STDIN: $!\n";
    open STDOUT, '>', '/dev/null' or die "Cannot reopen STDOUT: $!\n";
    open STDERR, '>', '/dev/null' or die "Cannot reopen STDERR: $!\n";
    return $to_launcher;
}

# In the launcher: waits for the daemon's report; returns the exit code.
sub _await_daemon {
    my ($self, $fh, $child) = @_;
    waitpid $child, 0;    # the intermediate process leaves at once
    my $first = readline $fh;
    if (defined $first && $first =~ /\Aready ([0-9]+)\n\z/) {
        print STDERR "PAGI server running in the background as PID $1\n" unless $self->{quiet};
        return 0;
    }
    # The length tells where the message ends: processes the daemon forked
    # may keep the pipe open, so its end is not a reliable marker.
    my $msg = '';
    if (defined $first && $first =~ /\Aerror ([0-9]+)\n\z/) {
        my $want = $1;
        while (length $msg < $want) {
            read($fh, $msg, $want - length $msg, length $msg) or last;
        }
    }
    $msg = "The daemon exited before it was serving (it reported no reason)\n"
        unless length $msg;
    $msg .= "\n" unless $msg =~ /\n\z/;
    print STDERR $msg;
    return 1;
}

# In the daemon: tells the launcher once, then lets it go.
sub _report_to_launcher {
    my ($self, $msg) = @_;
    my $fh = delete $self->{_launcher} or return;
    # A launcher killed meanwhile (its terminal closed, Ctrl-C) must not
    # take the daemon with it: the write then fails with EPIPE instead.
    local $SIG{PIPE} = 'IGNORE';
    while (length $msg) {
        my $n = syswrite $fh, $msg;
        last unless $n;    # the launcher is gone: nobody left to tell
        substr($msg, 0, $n, '');
    }
    close $fh;
    return;
}

# Exit an intermediate process without running END blocks or destructors
# that belong to the daemon.
sub _leave {
    STDOUT->flush;
    STDERR->flush;
    POSIX::_exit(0);
}

# A PID file naming a live process (other than the master a hot restart
# replaces) means the server is running already; one naming a dead
# process is stale and replaced.
sub _write_pid_file {
    my ($self, $path) = @_;
    my $running = _other_live_pid($path);
    my $replacing = $ENV{PAGI_MASTER_PID};
    die "PID file $path names process $running, which is running: is the server already running?\n"
        if $running && !(defined $replacing && $running eq $replacing);
    _put_pid($path, $$);
    $self->{_pid_file_path} = $path;
    $self->{_pid_file_pid}  = $$;
    $self->{_replacing}     = $replacing if defined $replacing && $running;
    return $path;
}

sub _put_pid {
    my ($path, $pid) = @_;
    open my $fh, '>', $path or die "Cannot write PID file $path: $!\n";
    print {$fh} "$pid\n";
    close $fh or die "Cannot write PID file $path: $!\n";
}

sub _remove_pid_file {
    my ($self) = @_;
    my $path = $self->{_pid_file_path} or return;
    # A forked child of the server must not remove its parent's PID file.
    return if defined $self->{_pid_file_pid} && $self->{_pid_file_pid} != $$;
    delete $self->{_pid_file_path};
    $PID_FILE_OWNER = undef if $PID_FILE_OWNER && $PID_FILE_OWNER == $self;
    # After a hot restart the file names the new master: it stays. A new
    # master that failed gives it back to the old one, which serves on.
    return 1 if _other_live_pid($path);
    my $old = $self->{_replacing};
    if ($old && _alive($old)) {
        eval { _put_pid($path, $old) };
    }
    else {
        unlink $path;
    }
    return 1;
}

# The PID in the file at $path if it is a live process other than this one.
sub _other_live_pid {
    my ($path) = @_;
    open my $fh, '<', $path or return;
    my ($pid) = (<$fh> // '') =~ /\A\s*([0-9]+)/;
    close $fh;
    return $pid && $pid != $$ && _alive($pid) ? $pid : undef;
}

# A process exists and is not a zombie (a daemon's exited master may stay
# one where nothing reaps orphans).
sub _alive {
    my ($pid) = @_;
    return 0 unless kill(0, $pid) || $!{EPERM};
    open my $fh, '<', "/proc/$pid/stat" or return 1;
    my ($state) = (<$fh> // '') =~ /\) (\S)/;
    return !defined $state || $state ne 'Z';
}

END {
    local ($!, $?);
    $PID_FILE_OWNER->_remove_pid_file if $PID_FILE_OWNER;
}

sub _drop_privileges {
    my ($self) = @_;
    my ($user, $group) = @{$self}{qw(user group)};
    return unless $user || $group;

    # Resolve both names before changing anything.
    my ($uid, $gid);
    if ($> != 0) {
        # A hot restart's new master runs as the user its predecessor
        # switched to; that is the only case allowed without root.
        my @pw = $user ? getpwnam $user : ();
        my $g  = $group ? getgrnam $group : undef;
        return 1 if (!$user || (@pw && $pw[2] == $>)) && (!$group || (defined $g && (split ' ', $))[0] == $g));
        die "Must run as root to use --user/--group\n";
    }
    if ($user) {
        my @pw = getpwnam $user;
        die "Unknown user: $user\n" unless @pw;
        ($uid, $gid) = @pw[2, 3];
    }
    if ($group) {
        my $g = getgrnam $group;
        die "Unknown group: $group\n" unless defined $g;
        $gid = $g;
    }

    # Group first, while still allowed to; this also drops the
    # supplementary groups inherited from root.
    $) = "$gid $gid";
    $( = $gid;
    die "Cannot switch to group " . ($group // $gid) . ": $!\n"
        unless (split ' ', $))[0] == $gid && $( == $gid;

    if (defined $uid) {
        $< = $> = $uid;
        die "Cannot switch to user $user: $!\n" unless $> == $uid && $< == $uid;
    }
    return 1;
}

# App files run in package main, as a script would, not in this package.
sub _do_file {
    package main;
    return do $_[0];
}

# Runs -e code the way perl -e does: package main, no strict.
sub _eval_inline {
    no strict;
    no warnings;
    package main;
    return eval $_[0];
}

1;

__END__

=encoding UTF-8

=head1 NAME

PAGI::Server::Runner - command line front end that loads a PAGI app and starts a server

=head1 SYNOPSIS

From a script (this is all F<bin/pagi-server> does after reading its own
server options):

    use PAGI::Server::Runner;
    PAGI::Server::Runner->run(@ARGV);

Step by step, for embedding or tests:

    my $runner = PAGI::Server::Runner->new(port => 0, quiet => 1);
    $runner->parse_options('-E', 'production', './app.pl');
    $runner->prepare_app;              # load the app, add mode middleware
    my $server = $runner->load_server; # PAGI::Server->new(...)
    $server->run;

=head1 DESCRIPTION

The runner is the part of C<pagi-server> that does not depend on a
particular server: it reads the common command line options, finds and
loads the application (a file, a module or inline code), decides which
environment mode applies, wraps the app with that mode's middleware,
builds the server object and, around C<< $server->run >>, takes care of
daemonizing, the PID file and dropping root privileges.

Options that only make sense for one server (worker counts, TLS files,
limits, ...) are read by that server's own script and handed to the runner
as a hash; the runner passes them to the server's constructor untouched.
The server is any class following the contract in L<PAGI::Spec::Server>
(C<< new(%options) >> and C<run>); L<PAGI::Server> is the default.

=head1 ENVIRONMENT MODES

The mode is taken from C<-E>/C<--env> if given, otherwise from the
C<PAGI_ENV> environment variable, otherwise it is C<development> when
standard input is a terminal and C<production> when it is not (systemd,
containers, cron). C<run> stores the outcome back into C<$ENV{PAGI_ENV}>
before the app is loaded, so applications can read it.

=over 4

=item development

The app is wrapped in L<PAGI::Middleware::Lint> in strict mode, which
reports protocol mistakes as they happen. Lint belongs to the PAGI-Tools
distribution; without it a notice is printed and the app runs unwrapped.
The access log goes to the server's default (standard error).

=item production

No middleware is added and, unless C<--access-log FILE> asks for one, the
access log is switched off.

=item none

No middleware is added, whatever the terminal says. The access log keeps
the server's default.

=back

Any other value is accepted and behaves like C<none>; C<PAGI_ENV> still
carries it to the application. C<--no-default-middleware> keeps the mode
but skips the middleware.

=head1 HOW THE APP IS FOUND

The app comes from the first of these that applies:

=over 4

=item * C<-e CODE>

The code is evaluated in package C<main> (without C<strict>, as C<perl -e>
would) after every C<-M> module is loaded, and must return a code
reference.

=item * C<-a FILE> / C<--app FILE>

=item * the first positional argument that does not contain C<=>

=item * nothing at all

The current directory is served with C<PAGI::App::Directory> (from
PAGI-Tools), as if C<PAGI::App::Directory root=.> had been given; any
C<key=value> arguments override C<root> and add further settings.

=back

A specification containing C<::> is a module name. One containing a C</>
or ending in C<.pl> or C<.psgi> is a file. Anything else is a file when
such a file exists and a module name otherwise.

A B<module> is loaded, constructed with the C<key=value> arguments that
follow it (plus C<_caller_file>, the path the module was loaded from) and
asked for its C<to_app>, which must return a code reference:

    pagi-server PAGI::App::Directory root=/var/www show_hidden=1

A B<file> is run with C<do>, in package C<main>, and must return the
application's code reference (an object with a C<to_app> method is also
accepted). While it runs, C<$0> is the file's absolute path and, if L<FindBin> is already
loaded, C<FindBin::again> is called, so C<$FindBin::Bin> inside the app
names the app's directory, as under C<plackup>.

=head1 METHODS

=head2 new

    my $runner = PAGI::Server::Runner->new(%settings);

Creates a runner without reading any command line. The settings use the
names of the fields the options fill: C<host>, C<port>, C<server>, C<env>,
C<loop>, C<quiet>, C<access_log>, C<no_access_log>, C<daemonize>,
C<pid_file>, C<user>, C<group>, C<libs> and C<modules> (array
references), C<eval>, C<default_middleware> and C<server_options> (a hash
reference for the server constructor). C<host> and C<port> stay undefined
unless given; their defaults are applied by L</load_server>.

=head2 run

    PAGI::Server::Runner->run(@ARGV);
    $runner->run(@args);

Does everything: L</parse_options>, sets C<PAGI_ENV> from L</mode>, hooks
L<Future::IO> up to L<IO::Async> when L<Future::IO::Impl::IOAsync> is
installed, prints the version or help and returns if that was asked for,
then L</prepare_app>, L</load_server>, daemonizes, writes the PID file,
switches user and group, and calls C<< $server->run >>. The PID file is
removed when C<run> returns and, through an C<END> block, when the process
exits some other way. Called on the class, it makes a new runner first.

=head2 parse_options

    $runner->parse_options(@args);
    $runner->parse_options(@args, server_options => \%server_specific);

Reads the runner's options (listed under L</OPTIONS>) from C<@args> into
the runner. Options may come before or after the app and its arguments;
C<--> ends option processing. The perl-like forms C<-MModule>, C<-Idir> and
C<-e'code'> are understood. What is left (the app and its C<key=value>
arguments) is appended to C<< $runner->{argv} >>.

A pair C<< server_options => \%hash >> anywhere in the list is taken out
and becomes the hash passed to the server's constructor.

An unknown option, a missing value or a malformed number makes it die
with a message naming the option. C<--help> and C<--version> only set a
flag that L</run> acts on.

=head2 mode

    my $mode = $runner->mode;

The environment mode in effect, resolved as described in
L</ENVIRONMENT MODES>.

=head2 load_app

    my $app = $runner->load_app;

Prepends the C<-I> directories to C<@INC> (made absolute, so they survive
C<--daemonize> changing directory), loads the C<-M> modules, then finds and
loads the application as described in L</HOW THE APP IS FOUND>. Stores
the coderef in C<< $runner->{app} >>, the specification in
C<< $runner->{app_spec} >> (C<-e> for inline code) and the parsed
arguments in C<< $runner->{app_args} >>, and returns the coderef. Dies with
a message saying what went wrong: file missing (C<App file not found>),
module missing (C<Cannot find module>), compile errors (C<Error loading>,
C<Cannot load module>), or a value that is not a code reference
(C<must return a coderef>).

=head2 prepare_app

    my $app = $runner->prepare_app;

Calls L</load_app> and, in development mode, wraps the result in
L<PAGI::Middleware::Lint> unless C<--no-default-middleware> was given.
Returns (and stores) the app that will be served.

=head2 load_server

    my $server = $runner->load_server;

Loads the server class (C<-s>, by default L<PAGI::Server>) and calls its
C<new> with

=over 4

=item * C<app>: the prepared app;

=item * C<host> and C<port>: the given values or C<127.0.0.1> and C<5000>,
left out entirely when the server options contain C<socket> or C<listen>
(giving C<--host> or C<--port> as well is then an error);

=item * C<quiet>;

=item * C<loop_type>, when C<--loop> was given;

=item * C<access_log>: C<undef> for C<--no-access-log> and in production
mode, an append handle (flushed per line) for C<--access-log FILE>, and
left out otherwise so the server's own default applies;

=item * everything in C<server_options>, which wins over the above.

=back

Returns the server object without starting it. The server's constructor
validates its own options, so bad values die here.

=head2 prepare_server

The same as L</load_server>, kept for scripts written against releases
that used this name.

=head1 OPTIONS

These are the options the runner itself reads. F<bin/pagi-server> adds
the options of L<PAGI::Server>; see L<pagi-server>.

=over 4

=item B<-a>, B<--app> FILE

The app file. Giving the file as the first argument does the same.

=item B<-e> CODE

Inline app code, evaluated after the C<-M> modules are loaded. It must
return a coderef.

=item B<-M> MODULE, B<-M> MODULE=NAME,NAME

Load MODULE before C<-e> runs and call its C<import>, with the
comma-separated names when given. May be repeated.

=item B<-I>, B<--lib> DIR

Put DIR at the front of C<@INC> before anything is loaded. May be
repeated; the first one given ends up first.

=item B<-h>, B<-o>, B<--host> HOST

Address to listen on (C<-h> is the spelling of earlier releases; help is
only C<--help>). Default C<127.0.0.1>, so only local clients can
connect until you say otherwise (C<0.0.0.0>, C<::>).

=item B<-p>, B<--port> PORT

TCP port, 0 to 65535. Default 5000; 0 lets the system choose.

=item B<-s>, B<--server> CLASS

Class of the server to build. Default L<PAGI::Server>.

=item B<-E>, B<--env> MODE

Environment mode: C<development>, C<production> or C<none>.

=item B<-l>, B<--loop> BACKEND

The L<IO::Async::Loop> subclass to run on, named without the
C<IO::Async::Loop::> prefix (C<EPoll>, C<EV>, C<Poll>, ...). Default: what
L<IO::Async::Loop> picks.

=item B<--access-log> FILE

Append the access log to FILE, in every mode.

=item B<--no-access-log>

No access log at all.

=item B<-D>, B<--daemonize>

After the app and server are built, detach from the terminal (two forks
and a new session), change to C</>, set the umask to C<022> and point
standard input and output and error at F</dev/null>. The command you ran
waits until the daemon is listening and its lifespan startup is done
(with C<--workers>, until the workers are forked), then exits 0 and, unless
C<--quiet>, prints the daemon's process id. If the daemon cannot start - a
port already in use, a failed lifespan startup, a PID file it cannot write
- the command prints the same message as without C<-D> and exits 1.

=item B<--pid> FILE

Write the serving process's id to FILE (after daemonizing, so it is the
daemon's id). The file is removed when the server stops.

=item B<--user> USER, B<--group> GROUP

Switch to this user and/or group before the server starts serving. Only
root can do this; without C<--group>, the user's primary group is used,
and supplementary groups are dropped. Because the switch happens before
C<< $server->run >> binds its sockets, a privileged port (below 1024)
needs the capability to bind it to be granted another way (for example
systemd socket settings or C<CAP_NET_BIND_SERVICE>).

=item B<-q>, B<--quiet>

Passed to the server as C<quiet>, and silences the runner's own notices.

=item B<--no-default-middleware>

Do not add the mode's middleware. (C<--default-middleware> turns it back
on.)

=item B<-v>, B<--version>

Print the program name with the versions of PAGI and of the server class,
then stop.

=item B<--help>

Print a summary of the options, then stop.

=back

=head1 ENVIRONMENT

=over 4

=item C<PAGI_ENV>

Read as the mode when C<-E> is absent; always set to the resolved mode by
L</run>.

=back

=head1 SEE ALSO

L<pagi-server>, L<PAGI::Server>, L<PAGI::Spec::Server>,
L<PAGI::Middleware::Lint>, L<Plack::Runner>

=head1 LICENSE

This library is free software; you can redistribute it and/or modify it
under the same terms as Perl itself.

=cut
