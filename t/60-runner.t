use strict;
use warnings;

# PAGI::Server::Runner and bin/pagi-server: option parsing, app loading,
# mode handling, what reaches the server constructor, process helpers, and
# a real start of bin/pagi-server on 127.0.0.1 with an OS-chosen port.

use Test2::V0;
use Cwd qw(abs_path);
use Data::Dumper ();
use File::Spec;
use File::Temp qw(tempdir);
use FindBin;
use POSIX qw(WNOHANG);
use Time::HiRes qw(sleep time);

use PAGI::Server::Runner;

my $ROOT = abs_path("$FindBin::Bin/..");
my $BIN  = "$ROOT/bin/pagi-server";
my $TMP  = tempdir(CLEANUP => 1);

# Modules the child perl needs: this build (blib when made) and lib/.
my @CHILD_INC = map { "-I$_" }
    grep { -d } map { "$ROOT/$_" } qw(blib/arch blib/lib lib);

my %SPAWNED;    # pid => 1 for every process still to be reaped
END { kill KILL => $_ for keys %SPAWNED; }

# ------------------------------------------------------------- fixtures

sub write_file {
    my ($name, $text) = @_;
    my $path = File::Spec->catfile($TMP, $name);
    my (undef, $dir) = File::Spec->splitpath($path);
    require File::Path;
    File::Path::make_path($dir);
    open my $fh, '>', $path or die "write $path: $!";
    print {$fh} $text;
    close $fh;
    return $path;
}

my $HELLO = write_file('hello.pl', <<'APP');
use strict;
use warnings;
use Future::AsyncAwait;
async sub {
    my ($scope, $receive, $send) = @_;
    die "no lifespan here\n" unless $scope->{type} eq 'http';
    my $body = "hi from $ENV{PAGI_ENV} at $scope->{path}";
    await $send->({ type => 'http.response.start', status => 200,
                    headers => [ [ 'content-type', 'text/plain' ] ] });
    await $send->({ type => 'http.response.body', body => $body, more => 0 });
};
APP

# A module app and a stand-in for PAGI::App::Directory, in a private lib.
my $MODLIB = File::Spec->catdir($TMP, 'modlib');
write_file('modlib/T60/Greeter.pm', <<'PM');
package T60::Greeter;
use strict;
use warnings;
sub new    { my ($class, %args) = @_; return bless {%args}, $class }
sub to_app { my ($self) = @_; my $copy = {%$self}; return sub { $copy } }
1;
PM
write_file('modlib/T60/NoToApp.pm', "package T60::NoToApp;\nsub new { bless {}, shift }\n1;\n");
write_file('modlib/T60/Broken.pm', "package T60::Broken;\nsub {\n1;\n");
write_file('modlib/T60/Exporter.pm', <<'PM');
package T60::Exporter;
our @SEEN;
sub import { shift; push @SEEN, [@_] }
1;
PM

# A server class following the runner contract that reports what its
# constructor received instead of serving.
write_file('modlib/T60/ProbeServer.pm', <<'PM');
package T60::ProbeServer;
use strict;
use warnings;
our $VERSION = '7.25';
our $LAST;
sub new {
    my ($class, %opt) = @_;
    return $LAST = bless { opt => \%opt }, $class;
}
sub run {
    my ($self) = @_;
    my %seen = %{ $self->{opt} };
    $seen{app} = ref $seen{app};
    if (exists $seen{access_log}) {
        $seen{access_log} = defined $seen{access_log} ? 'handle' : 'off';
    }
    $seen{PAGI_ENV} = $ENV{PAGI_ENV};
    local $Data::Dumper::Sortkeys = 1;
    local $Data::Dumper::Terse    = 1;
    local $Data::Dumper::Indent   = 0;
    require Data::Dumper;
    print 'PROBE ', Data::Dumper::Dumper(\%seen), "\n";
    return;
}
1;
PM

unshift @INC, $MODLIB;

# ------------------------------------------------------ child processes

# Starts bin/pagi-server with stdin from /dev/null; returns pid and the
# files its output goes to.
sub spawn_cli {
    my (%o) = @_;
    my $out = File::Spec->catfile($TMP, "out.$$." . int(rand 1e9));
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        local %ENV = (%ENV, %{ $o{env} || {} });
        delete $ENV{$_} for grep { !defined $ENV{$_} } keys %ENV;
        open STDIN,  '<', '/dev/null' or die;
        open STDOUT, '>', "$out.stdout" or die;
        open STDERR, '>', "$out.stderr" or die;
        { exec $^X, @CHILD_INC, "-I$MODLIB", $BIN, @{ $o{args} } }
        print STDERR "exec $^X: $!\n";
        POSIX::_exit(127);
    }
    $SPAWNED{$pid} = 1;
    return ($pid, "$out.stdout", "$out.stderr");
}

sub slurp {
    my ($path) = @_;
    open my $fh, '<', $path or return '';
    local $/;
    return scalar <$fh>;
}

# Waits at most $secs for $pid to exit; returns its exit code or undef.
sub reap {
    my ($pid, $secs) = @_;
    my $deadline = time + $secs;
    while (time < $deadline) {
        my $got = waitpid $pid, WNOHANG;
        if ($got == $pid) {
            delete $SPAWNED{$pid};
            return $? >> 8;
        }
        sleep 0.05;
    }
    return undef;
}

sub kill_hard {
    my ($pid) = @_;
    return unless $SPAWNED{$pid};
    kill KILL => $pid;
    reap($pid, 10);
}

# Runs bin/pagi-server to completion (20 s at most).
sub run_cli {
    my (@args) = @_;
    my %env = (PAGI_ENV => 'production');
    %env = (%env, %{ shift @args }) if ref $args[0] eq 'HASH';
    my ($pid, $out, $err) = spawn_cli(args => \@args, env => \%env);
    my $code = reap($pid, 20);
    unless (defined $code) {
        kill_hard($pid);
        return (-1, slurp($out), slurp($err) . "\n(timed out)");
    }
    return ($code, slurp($out), slurp($err));
}

# Runs the CLI with the probe server and returns what new() received.
sub probe {
    my (@args) = @_;
    my $env = ref $args[0] eq 'HASH' ? shift @args : {};
    my ($code, $out, $err) = run_cli($env, '-s', 'T60::ProbeServer', @args);
    my ($dump) = $out =~ /^PROBE (.*)$/m;
    unless ($code == 0 && defined $dump) {
        diag "exit $code\nstdout: $out\nstderr: $err";
        return undef;
    }
    my $seen = eval $dump;
    die $@ if $@;
    return $seen;
}

# ==================================================== parse_options

subtest 'fresh runner' => sub {
    my $r = PAGI::Server::Runner->new;
    is($r->{$_}, undef, "$_ unset") for qw(host port app app_spec server env eval);
    is($r->{$_}, 0, "$_ off") for qw(quiet daemonize no_access_log);
    is($r->{argv}, [], 'no arguments');
    is($r->{server_options}, {}, 'no server options');

    my $custom = PAGI::Server::Runner->new(host => '::1', port => 0, quiet => 1,
        libs => ['x'], server_options => { timeout => 3 });
    is([@{$custom}{qw(host port quiet)}], ['::1', 0, 1], 'settings kept');
    is($custom->{libs}, ['x'], 'libs kept');
    is($custom->{server_options}, { timeout => 3 }, 'server options kept');
};

subtest 'every runner option, short and long' => sub {
    my $short = PAGI::Server::Runner->new;
    $short->parse_options(qw(-a a.pl -e 1 -I one -I two -M Foo -M), 'Bar=x,y',
        qw(-o 0.0.0.0 -p 8080 -s Some::Server -E none -l EPoll -D -q -v));
    is($short->{app_spec}, 'a.pl', '-a');
    is($short->{eval}, '1', '-e');
    is($short->{libs}, [qw(one two)], '-I repeats');
    is($short->{modules}, ['Foo', 'Bar=x,y'], '-M repeats');
    is([@{$short}{qw(host port server env loop)}],
        ['0.0.0.0', 8080, 'Some::Server', 'none', 'EPoll'], '-o -p -s -E -l');
    is([@{$short}{qw(daemonize quiet show_version)}], [1, 1, 1], '-D -q -v');

    my $long = PAGI::Server::Runner->new;
    $long->parse_options(qw(--app b.pl --lib L --host h --port 1 --server S
        --env production --loop Poll --access-log /tmp/x.log --no-access-log
        --daemonize --pid p.pid --user u --group g --quiet
        --no-default-middleware --version --help));
    is([@{$long}{qw(app_spec host port server env loop access_log pid_file user group)}],
        [qw(b.pl h 1 S production Poll /tmp/x.log p.pid u g)], 'value options');
    is([@{$long}{qw(no_access_log daemonize quiet default_middleware show_version show_help)}],
        [1, 1, 1, 0, 1, 1], 'switches');
    is($long->{libs}, ['L'], '--lib');

    my $on = PAGI::Server::Runner->new;
    $on->parse_options('--default-middleware');
    is($on->{default_middleware}, 1, '--default-middleware');
};

subtest 'app, app arguments and option order' => sub {
    my $r = PAGI::Server::Runner->new;
    $r->parse_options('Some::App', 'root=/srv', '-p', '9', 'x=1', '--quiet');
    is($r->{argv}, ['Some::App', 'root=/srv', 'x=1'], 'options taken from anywhere');
    is($r->{port}, 9, 'port after the app');

    my $dashes = PAGI::Server::Runner->new;
    $dashes->parse_options('-p', '1', '--', 'app.pl', '-p', '2');
    is($dashes->{port}, 1, 'options before -- read');
    is($dashes->{argv}, ['app.pl', '-p', '2'], 'everything after -- kept');
};

subtest 'perl-style cuddled -M, -I and -e' => sub {
    my $r = PAGI::Server::Runner->new;
    $r->parse_options('-MFoo::Bar=a,b', '-Ilib/x', '-esub { 1 }', '-M', '-MNot::Split');
    is($r->{modules}, ['Foo::Bar=a,b', '-MNot::Split'], '-MFoo split, value of -M left alone');
    is($r->{libs}, ['lib/x'], '-Idir split');
    is($r->{eval}, 'sub { 1 }', '-ecode split');
};

subtest 'server_options pair' => sub {
    my $r = PAGI::Server::Runner->new;
    my $so = { timeout => 5 };
    $r->parse_options('-p', '1', server_options => $so, 'app.pl');
    is($r->{server_options}, exact_ref($so), 'hash taken over');
    is($r->{argv}, ['app.pl'], 'pair removed from the arguments');

    my $plain = PAGI::Server::Runner->new;
    $plain->parse_options('server_options=1');
    is($plain->{argv}, ['server_options=1'], 'only a hash reference counts');
};

subtest 'bad options are named' => sub {
    my %cases = (
        'unknown option'    => [ ['--nope'],          qr/Unknown option: --nope\n.*--help/s ],
        'not a number'      => [ ['-p', 'http'],      qr/invalid for option -p.*--help/s ],
        'missing value'     => [ ['--host'],          qr/Option --host requires an argument.*--help/s ],
        'port out of range' => [ ['--port', '65536'], qr/--port must be between 0 and 65535/ ],
        'empty mode'        => [ ['-E', ''],          qr/--env must not be empty/ ],
    );
    for my $name (sort keys %cases) {
        my ($args, $re) = @{ $cases{$name} };
        like(dies { PAGI::Server::Runner->new->parse_options(@$args) }, $re, $name);
    }
};

# ============================================================= mode

subtest 'mode precedence' => sub {
    local $ENV{PAGI_ENV} = 'production';
    is(PAGI::Server::Runner->new(env => 'development')->mode, 'development', '-E first');
    is(PAGI::Server::Runner->new->mode, 'production', 'then PAGI_ENV');

    delete local $ENV{PAGI_ENV};
    my $expect = -t STDIN ? 'development' : 'production';
    is(PAGI::Server::Runner->new->mode, $expect, 'then the terminal test');
    local $ENV{PAGI_ENV} = '';
    is(PAGI::Server::Runner->new->mode, $expect, 'empty PAGI_ENV ignored');
};

# ========================================================= load_app

subtest 'file apps' => sub {
    my $r = PAGI::Server::Runner->new;
    $r->parse_options($HELLO);
    my $app = $r->load_app;
    is(ref $app, 'CODE', 'coderef');
    is($r->{app_spec}, $HELLO, 'spec recorded');
    is($r->{argv}, [], 'spec taken off argv');

    my $dir = tempdir(CLEANUP => 1);
    my $where = "$dir/where.pl";
    open my $fh, '>', $where or die;
    print {$fh} "use FindBin; our \$T60_BIN = \$FindBin::Bin; our \$T60_ZERO = \$0; sub t60_helper { 1 } sub { 1 }\n";
    close $fh;
    my $fb = PAGI::Server::Runner->new;
    $fb->{app_spec} = $where;
    $fb->load_app;
    no warnings 'once';
    is(abs_path($main::T60_BIN), abs_path($dir), 'FindBin::Bin is the app directory');
    is($main::T60_ZERO, $where, '$0 is the app file while it loads');
    isnt($0, $where, '$0 restored afterwards');
    ok(main->can('t60_helper'), 'the file runs in package main');
    ok(!PAGI::Server::Runner->can('t60_helper'), 'not in the runner package');

    my $obj = write_file('object.pl', "package T60::Obj; sub new { bless {}, shift } sub to_app { sub { 'obj' } } package main; T60::Obj->new;\n");
    my $o = PAGI::Server::Runner->new;
    $o->{app_spec} = $obj;
    is($o->load_app->(), 'obj', 'an object with to_app is accepted');
};

subtest 'file app errors' => sub {
    my $missing = PAGI::Server::Runner->new;
    $missing->{app_spec} = "$TMP/absent.pl";
    like(dies { $missing->load_app }, qr/App file not found: .*absent\.pl/, 'missing file');

    my $hash = write_file('hash.pl', "+{ a => 1 };\n");
    my $h = PAGI::Server::Runner->new;
    $h->{app_spec} = $hash;
    like(dies { $h->load_app }, qr/must return a coderef, got: HASH/, 'not code');

    my $syntax = write_file('syntax.pl', "sub {\n");
    my $s = PAGI::Server::Runner->new;
    $s->{app_spec} = $syntax;
    like(dies { $s->load_app }, qr/Error loading .*syntax\.pl/, 'compile error');
};

subtest 'module apps' => sub {
    my $r = PAGI::Server::Runner->new;
    $r->parse_options('T60::Greeter', 'greeting=hello', 'to=world');
    my $app = $r->load_app;
    is($r->{app_spec}, 'T60::Greeter', 'spec');
    is($r->{app_args}, { greeting => 'hello', to => 'world' }, 'key=value arguments');
    my $got = $app->();
    is($got->{greeting}, 'hello', 'arguments reach new()');
    like($got->{_caller_file}, qr{T60/Greeter\.pm$}, '_caller_file is the module file');

    my $absent = PAGI::Server::Runner->new;
    $absent->{argv} = ['T60::Absent'];
    like(dies { $absent->load_app }, qr/Cannot find module 'T60::Absent'/, 'missing module');

    my $broken = PAGI::Server::Runner->new;
    $broken->{argv} = ['T60::Broken'];
    like(dies { $broken->load_app }, qr/Cannot load module 'T60::Broken' \(it failed to compile\)/,
        'module that does not compile');

    my $no = PAGI::Server::Runner->new;
    $no->{argv} = ['T60::NoToApp'];
    like(dies { $no->load_app }, qr/does not have new\(\) and to_app\(\)/, 'not an app module');

    my $bad = PAGI::Server::Runner->new;
    $bad->{argv} = ['Bad::Name::'];
    like(dies { $bad->load_app }, qr/Invalid module name/, 'bad name');

    my $warned = '';
    local $SIG{__WARN__} = sub { $warned .= $_[0] };
    my $odd = PAGI::Server::Runner->new;
    $odd->{argv} = ['T60::Greeter', 'novalue'];
    $odd->load_app;
    like($warned, qr/Ignoring app argument 'novalue'/, 'argument without = warned about');
};

subtest 'spec without :: or / or extension' => sub {
    my $dir = tempdir(CLEANUP => 1);
    open my $fh, '>', "$dir/plainapp" or die;
    print {$fh} "sub { 'plain' }\n";
    close $fh;
    my $r = PAGI::Server::Runner->new;
    $r->{argv} = ["$dir/plainapp"];
    is($r->load_app->(), 'plain', 'existing file used as a file');

    my $cwd = Cwd::getcwd();
    chdir $dir or die;
    my $m = PAGI::Server::Runner->new;
    $m->{argv} = ['plainapp'];
    my $app = eval { $m->load_app };
    chdir $cwd or die;
    is($app && $app->(), 'plain', 'relative bare name of an existing file');
};

subtest 'default app is the directory browser' => sub {
    # Stand in for PAGI::App::Directory so the test needs no PAGI-Tools.
    my $stub = tempdir(CLEANUP => 1);
    require File::Path;
    File::Path::make_path("$stub/PAGI/App");
    open my $fh, '>', "$stub/PAGI/App/Directory.pm" or die;
    print {$fh} "package PAGI::App::Directory; sub new { my (\$c, %a) = \@_; bless {%a}, \$c }\n"
              . "sub to_app { my \$s = shift; sub { \$s } }\n1;\n";
    close $fh;
    local @INC = ($stub, @INC);
    delete local $INC{'PAGI/App/Directory.pm'};
    no warnings 'redefine';

    my $r = PAGI::Server::Runner->new;
    my $app = $r->load_app;
    is($r->{app_spec}, 'PAGI::App::Directory', 'spec');
    is($r->{app_args}, { root => '.' }, 'serves the current directory');

    my $rooted = PAGI::Server::Runner->new;
    $rooted->parse_options('root=/srv', 'show_hidden=1');
    $rooted->load_app;
    is($rooted->{app_args}, { root => '/srv', show_hidden => 1 }, 'key=value arguments apply to it');
};

subtest '-e, -M and -I' => sub {
    my $r = PAGI::Server::Runner->new;
    $r->parse_options('-MT60::Exporter=a,b', '-MT60::Exporter', '-e', 'sub { [ @T60::Exporter::SEEN ] }');
    my $app = $r->load_app;
    is($r->{app_spec}, '-e', 'spec is -e');
    is($app->(), [ ['a', 'b'], [] ], '-M imports with and without a list, before -e');

    my $lib = tempdir(CLEANUP => 1);
    open my $fh, '>', "$lib/T60Inc.pm" or die;
    print {$fh} "package T60Inc; sub app { sub { 'inc' } } 1;\n";
    close $fh;
    local @INC = @INC;
    my $i = PAGI::Server::Runner->new;
    $i->parse_options("-I$lib", '-MT60Inc', '-e', 'T60Inc::app()');
    is($i->load_app->(), 'inc', '-I directories are searched');
    is($INC[0], $lib, '-I directory put first');

    my $not = PAGI::Server::Runner->new;
    $not->parse_options('-e', '42');
    like(dies { $not->load_app }, qr/-e code must return a coderef, got non-reference/, '-e not code');

    my $err = PAGI::Server::Runner->new;
    $err->parse_options('-e', 'die "boom\n"');
    like(dies { $err->load_app }, qr/Error evaluating -e code: boom/, '-e dies');

    my $mod = PAGI::Server::Runner->new;
    $mod->parse_options('-M', 'T60::Nowhere', '-e', 'sub {}');
    like(dies { $mod->load_app }, qr/Cannot load module T60::Nowhere/, '-M missing');

    my $inj = PAGI::Server::Runner->new;
    $inj->parse_options('-M', 'Foo; die', '-e', 'sub {}');
    like(dies { $inj->load_app }, qr/-M: invalid module name/, '-M checks the name');
};

# ====================================================== prepare_app

subtest 'prepare_app and mode middleware' => sub {
    my $tmp   = write_file('plain.pl', "sub { 'plain' }\n");
    my $lint  = eval { require PAGI::Middleware::Lint; 1 };

    for my $mode (qw(production none)) {
        my $r = PAGI::Server::Runner->new(env => $mode, quiet => 1);
        $r->{app_spec} = $tmp;
        my $app = $r->prepare_app;
        is($app, exact_ref($r->{app}), "$mode: stored");
        is($app->(), 'plain', "$mode: app not wrapped");
    }

    my $off = PAGI::Server::Runner->new(env => 'development', default_middleware => 0);
    $off->{app_spec} = $tmp;
    is($off->prepare_app->(), 'plain', 'development without default middleware: not wrapped');

    my @warnings;
    local $SIG{__WARN__} = sub { push @warnings, @_ };
    my $dev = PAGI::Server::Runner->new(env => 'development');
    $dev->{app_spec} = $tmp;
    $dev->prepare_app;
    if ($lint) {
        like("@warnings", qr/Lint/, 'development: Lint announced');
    }
    else {
        like("@warnings", qr/PAGI::Middleware::Lint is not installed/, 'development: missing Lint reported');
    }

    @warnings = ();
    my $quiet = PAGI::Server::Runner->new(env => 'development', quiet => 1);
    $quiet->{app_spec} = $tmp;
    $quiet->prepare_app;
    is(\@warnings, [], 'quiet: no notice');
};

# ====================================================== load_server

subtest 'what load_server passes to the server' => sub {
    my $app = sub { };
    my $build = sub {
        my $r = PAGI::Server::Runner->new(server => 'T60::ProbeServer', @_);
        $r->{app} = $app;
        return $r->load_server->{opt};
    };

    my $dev = $build->(env => 'development');
    is($dev, { app => exact_ref($app), host => '127.0.0.1', port => 5000, quiet => 0 },
        'defaults; development leaves the access log to the server');

    is($build->(env => 'production')->{access_log}, undef, 'production: log off');
    ok(exists $build->(env => 'production')->{access_log}, 'production: access_log passed as undef');
    ok(!exists $build->(env => 'none')->{access_log}, 'none: server default');
    ok(exists $build->(env => 'none', no_access_log => 1)->{access_log}, '--no-access-log');

    my $log = "$TMP/access.log";
    my $opt = $build->(env => 'production', access_log => $log, quiet => 1,
        host => '::1', port => 0, loop => 'Poll');
    ok(defined $opt->{access_log}, 'production with --access-log: handle');
    print { $opt->{access_log} } "line\n";
    is(slurp($log), "line\n", 'log file appended and flushed');
    is([@{$opt}{qw(host port quiet loop_type)}], ['::1', 0, 1, 'Poll'], 'host, port, quiet, loop');

    my $over = $build->(env => 'none', server_options => { quiet => 0, timeout => 9 });
    is([@{$over}{qw(quiet timeout)}], [0, 9], 'server options passed and win');

    my $sock = $build->(env => 'none', server_options => { socket => '/tmp/t60.sock' });
    ok(!exists $sock->{host} && !exists $sock->{port}, 'socket: no host/port');
    my $listen = $build->(env => 'none', server_options => { listen => [] });
    ok(!exists $listen->{host} && !exists $listen->{port}, 'listen: no host/port');

    like(dies { $build->(env => 'none', port => 1, server_options => { socket => 'x' }) },
        qr/--host\/--port cannot be combined with --socket/, 'port with socket refused');

    like(dies { $build->(env => 'none', access_log => "$TMP/no/such/dir/log") },
        qr/Cannot open access log/, 'unwritable access log');

    my $bogus = PAGI::Server::Runner->new(server => 'T60::NoServer');
    like(dies { $bogus->load_server }, qr/Cannot load server 'T60::NoServer'/, 'missing server class');

    my $old = PAGI::Server::Runner->new(server => 'T60::ProbeServer', env => 'none');
    $old->{app} = $app;
    isa_ok($old->prepare_server, ['T60::ProbeServer'], 'prepare_server is load_server');
};

subtest 'load_server builds a working PAGI::Server' => sub {
    my $loaded = eval { require PAGI::Server; require IO::Async::Loop; require Net::Async::HTTP; 1 };
    skip_all "PAGI::Server (built) and Net::Async::HTTP needed: $@" unless $loaded;

    my $r = PAGI::Server::Runner->new(port => 0, quiet => 1, env => 'production');
    $r->{app_spec} = $HELLO;
    $r->prepare_app;
    local $ENV{PAGI_ENV} = 'production';
    my $server = $r->load_server;
    isa_ok($server, ['PAGI::Server'], 'server object');

    my $loop = IO::Async::Loop->new;
    $loop->add($server);
    $server->listen->get;
    my $http = Net::Async::HTTP->new;
    $loop->add($http);
    my $res = Future->wait_any(
        $http->GET('http://127.0.0.1:' . $server->port . '/runner'),
        $loop->timeout_future(after => 10),
    )->get;
    is($res->code, 200, 'status');
    is($res->decoded_content, 'hi from production at /runner', 'body');

    Future->wait_any($server->shutdown, $loop->timeout_future(after => 10))->get;
    $loop->remove($http);
    $loop->remove($server);
};

# ====================================================== process helpers

subtest 'PID file' => sub {
    my $path = "$TMP/runner.pid";
    my $r = PAGI::Server::Runner->new;
    $r->_write_pid_file($path);
    is(slurp($path), "$$\n", 'holds our pid');
    is($r->{_pid_file_path}, $path, 'path remembered');

    my $pid = fork // die "fork: $!";
    if (!$pid) {
        $r->_remove_pid_file;
        POSIX::_exit(0);
    }
    waitpid $pid, 0;
    ok(-e $path, 'a forked child does not remove it');

    $r->_remove_pid_file;
    ok(!-e $path, 'removed by its writer');
    ok(lives { $r->_remove_pid_file }, 'second removal is harmless');

    like(dies { $r->_write_pid_file("$TMP/none/x.pid") }, qr/Cannot write PID file/, 'bad path');
};

subtest 'privilege dropping is checked before anything changes' => sub {
    ok(lives { PAGI::Server::Runner->new->_drop_privileges }, 'nothing asked, nothing done');
    my $user  = PAGI::Server::Runner->new(user  => 't60_no_such_user');
    my $group = PAGI::Server::Runner->new(group => 't60_no_such_group');
    my $both  = PAGI::Server::Runner->new(user => 'root', group => 't60_no_such_group');
    if ($> == 0) {
        like(dies { $user->_drop_privileges },  qr/Unknown user: t60_no_such_user/,   'unknown user');
        like(dies { $group->_drop_privileges }, qr/Unknown group: t60_no_such_group/, 'unknown group');
        like(dies { $both->_drop_privileges },  qr/Unknown group/, 'group checked too');
        is($>, 0, 'still root after the failures');
    }
    else {
        like(dies { $user->_drop_privileges },  qr/Must run as root/, 'needs root (user)');
        like(dies { $group->_drop_privileges }, qr/Must run as root/, 'needs root (group)');
    }
};

subtest 'version line' => sub {
    my $capture = sub {
        my ($r) = @_;
        my $text = '';
        open my $fh, '>', \$text or die;
        my $old = select $fh;
        $r->_show_version;
        select $old;
        return $text;
    };
    my $probe = $capture->(PAGI::Server::Runner->new(server => 'T60::ProbeServer'));
    like($probe, qr/\(PAGI \S+, T60::ProbeServer 7\.25\)$/, 'names the chosen server and its version');
    unlike($probe, qr/PAGI::Server\b/, 'no hard-coded server');
    like($capture->(PAGI::Server::Runner->new(server => 'T60::Missing')),
        qr/T60::Missing unknown/, 'unloadable class: unknown');
};

# ================================================= bin/pagi-server

subtest 'pagi-server --help and --version' => sub {
    my ($code, $out) = run_cli('--help');
    is($code, 0, '--help exits 0');
    like($out, qr/^Usage: pagi-server/, 'usage line');
    like($out, qr/--$_\b/, "help lists --$_")
        for qw(port host env no-default-middleware workers listen ssl-cert http2
               write-high-watermark log-level access-log-format future-xs);

    ($code, $out) = run_cli('-v');
    is($code, 0, '-v exits 0');
    like($out, qr/^pagi-server \(PAGI \S+, PAGI::Server \S+\)$/m, 'version line');
};

subtest 'pagi-server passes server options through' => sub {
    my $seen = probe(qw(--timeout 7 --shutdown-timeout 3 --request-timeout 2
        --ws-idle-timeout 11 --sse-idle-timeout 12 --heartbeat-timeout 13
        --lifespan off --lifespan-startup-timeout 4 --max-body-size 100
        --max-header-size 200 --max-header-count 30 --max-receive-queue 40
        --max-ws-frame-size 500 -b 64 --write-high-watermark 262144
        --write-low-watermark 65536 --http2 --log-level warn
        --sync-file-threshold 1024 --access-log-format clf -w 3 --reuseport
        --max-requests 10 --max-connections 20), $HELLO);
    is($seen, {
        app => 'CODE', host => '127.0.0.1', port => 5000, quiet => 0,
        access_log => 'off', PAGI_ENV => 'production',
        timeout => 7, shutdown_timeout => 3, request_timeout => 2,
        ws_idle_timeout => 11, sse_idle_timeout => 12, heartbeat_timeout => 13,
        lifespan_mode => 'off', lifespan_startup_timeout => 4, max_body_size => 100,
        max_header_size => 200, max_header_count => 30, max_receive_queue => 40,
        max_ws_frame_size => 500, listener_backlog => 64,
        write_high_watermark => 262144, write_low_watermark => 65536,
        http2 => 1, log_level => 'warn', sync_file_threshold => 1024,
        access_log_format => 'clf', workers => 3, reuseport => 1,
        max_requests => 10, max_connections => 20,
    }, 'every option reaches the constructor under its own name') or diag Data::Dumper::Dumper($seen);

    is(probe($HELLO), { app => 'CODE', host => '127.0.0.1', port => 5000,
        quiet => 0, access_log => 'off', PAGI_ENV => 'production' }, 'nothing extra without flags');

    is(probe('--workers', '1', $HELLO)->{workers}, 0, 'one worker means single process');

    my $cert = write_file('c.pem', "cert\n");
    my $key  = write_file('k.pem', "key\n");
    is(probe('--ssl-cert', $cert, '--ssl-key', $key, $HELLO)->{ssl},
        { cert_file => $cert, key_file => $key }, 'TLS files become ssl');

    my $sock = probe('--socket', "$TMP/s.sock", '--socket-mode', '0660', $HELLO);
    is([@{$sock}{qw(socket socket_mode)}], ["$TMP/s.sock", 0660], 'socket and octal mode');
    ok(!exists $sock->{host}, 'no host with --socket');

    my $multi = probe(qw(--socket-mode 0600 --listen 127.0.0.1:0 --listen [::1]:0
        --listen /tmp/t60:1 --listen ./rel.sock --listen bare), $HELLO);
    is($multi->{listen}, [
        { host => '127.0.0.1', port => 0 },
        { host => '::1', port => 0 },
        { socket => '/tmp/t60:1', socket_mode => 0600 },
        { socket => './rel.sock', socket_mode => 0600 },
        { socket => 'bare', socket_mode => 0600 },
    ], '--listen specs');
    ok(!exists $multi->{socket_mode}, 'socket mode moved into the listeners');
};

subtest 'pagi-server runner options and modes' => sub {
    my $seen = probe('-o', '::1', '-p', '0', '-q', '-l', 'Poll', '--access-log', "$TMP/a.log", $HELLO);
    is([@{$seen}{qw(host port quiet loop_type access_log)}], ['::1', 0, 1, 'Poll', 'handle'],
        'runner options reach the server');

    is(probe({ PAGI_ENV => undef }, $HELLO)->{PAGI_ENV}, 'production',
        'no terminal and no PAGI_ENV: production, exported');
    my $dev = probe({ PAGI_ENV => undef }, '-E', 'development', '-q', $HELLO);
    is($dev->{PAGI_ENV}, 'development', '-E exported as PAGI_ENV');
    ok(!exists $dev->{access_log}, 'development keeps the server log default');

    my $none = probe({ PAGI_ENV => 'none' }, '-q', '--no-access-log', $HELLO);
    is($none->{access_log}, 'off', '--no-access-log');

    is(probe('-q', '--', $HELLO)->{app}, 'CODE', 'app after --');
    is(probe('-q', '-e', 'sub { }')->{app}, 'CODE', '-e app');
};

subtest 'pagi-server reports bad input by option name' => sub {
    my %cases = (
        'bad number'       => [ [qw(--timeout soon)],            qr/--timeout expects a whole number.*'soon'/ ],
        'negative'         => [ [qw(--max-body-size -1)],        qr/--max-body-size expects a whole number/ ],
        'missing value'    => [ ['--listener-backlog'],           qr/Option --listener-backlog needs a value/ ],
        'short, no value'  => [ ['-w'],                           qr/Option -w needs a value/ ],
        'flag with value'  => [ ['--http2=yes'],                  qr/--http2 does not take a value/ ],
        'lifespan'         => [ [qw(--lifespan sometimes)],       qr/--lifespan must be auto, on or off/ ],
        'log level'        => [ [qw(--log-level loud)],           qr/--log-level must be debug, info, warn or error/ ],
        'socket mode'      => [ [qw(--socket-mode 660)],          qr/--socket-mode expects an octal mode/ ],
        'lonely cert'      => [ [qw(--ssl-cert x.pem)],           qr/--ssl-cert and --ssl-key must be given together/ ],
        'missing cert'     => [ [qw(--ssl-cert /t60/c --ssl-key /t60/k)], qr/--ssl-cert: file not found/ ],
        'listen port'      => [ [qw(--listen 127.0.0.1:70000)],   qr/--listen: port must be between 0 and 65535/ ],
        'socket + listen'  => [ [qw(--socket a --listen b)],      qr/--socket and --listen cannot be used together/ ],
        'unknown'          => [ ['--frobnicate'],                 qr/Unknown option: --frobnicate/ ],
        'runner number'    => [ [qw(-p eighty)],                  qr/invalid for option -p/ ],
        'missing app'      => [ ["$TMP/nothing-here.pl"],         qr/App file not found/ ],
        'future-xs'        => [ ['--future-xs'],                  qr/--future-xs .*Future::XS/ ],
    );
    for my $name (sort keys %cases) {
        my ($args, $re) = @{ $cases{$name} };
        next if $name eq 'future-xs' && eval { require Future::XS; 1 };
        my ($code, $out, $err) = run_cli(@$args, '-s', 'T60::ProbeServer', $HELLO);
        is($code, 1, "$name: exit 1");
        like($err, $re, "$name: message");
        unlike($out, qr/PROBE/, "$name: server not started");
    }
};

subtest 'pagi-server serves on 127.0.0.1' => sub {
    skip_all 'PAGI::Server is not built (run make)' unless eval { require PAGI::Server; 1 };
    require HTTP::Tiny;

    my $pidfile = "$TMP/serve.pid";
    my ($pid, $out, $err) = spawn_cli(
        env  => { PAGI_ENV => 'production' },
        args => ['-o', '127.0.0.1', '-p', '0', '--pid', $pidfile, '--timeout', '5', $HELLO],
    );

    my $port;
    my $deadline = time + 20;
    until (defined $port || time > $deadline) {
        ($port) = slurp($err) =~ m{listening on http://127\.0\.0\.1:(\d+)/};
        last if defined $port;
        if (waitpid($pid, WNOHANG) == $pid) {    # exited before listening
            delete $SPAWNED{$pid};
            last;
        }
        sleep 0.1;
    }
    ok($port, 'banner names the chosen port') or diag slurp($err);

    SKIP: {
        skip 'server did not start', 4 unless $port;
        my $res = HTTP::Tiny->new(timeout => 10)->get("http://127.0.0.1:$port/cli");
        is($res->{status}, 200, 'status 200');
        is($res->{content}, 'hi from production at /cli', 'body, with PAGI_ENV exported');
        is(slurp($pidfile), "$pid\n", 'PID file holds the server pid');

        kill TERM => $pid;
        my $code = reap($pid, 5);
        todo 'PAGI::Server->run does not return on SIGTERM yet (shutdown future dropped)' => sub {
            is($code, 0, 'TERM stops the server with status 0');
            ok(!-e $pidfile, 'PID file removed on the way out');
        };
    }
    kill_hard($pid);
};

subtest 'pagi-server --http2 serves h2c' => sub {
    skip_all 'PAGI::Server is not built (run make)' unless eval { require PAGI::Server; 1 };
    my ($pid, $out, $err) = spawn_cli(
        env  => { PAGI_ENV => 'production' },
        args => ['--http2', '-o', '127.0.0.1', '-p', '0', $HELLO],
    );
    my $port;
    my $deadline = time + 20;
    until (defined $port || time > $deadline) {
        ($port) = slurp($err) =~ m{listening on http://127\.0\.0\.1:(\d+)/};
        last if defined $port;
        if (waitpid($pid, WNOHANG) == $pid) {    # exited before listening
            delete $SPAWNED{$pid};
            last;
        }
        sleep 0.1;
    }
    ok($port, 'banner names the chosen port') or diag slurp($err);
    like(slurp($err), qr/http2: on \(h2c\)/, 'banner says http2: on (h2c)');
    if ($port && grep { -x "$_/curl" } split /:/, $ENV{PATH} // '') {
        my $got = `curl -sS --max-time 10 --http2-prior-knowledge -w ' %{http_version}' http://127.0.0.1:$port/h2`;
        like($got, qr/ 2\z/, 'curl --http2-prior-knowledge is answered over HTTP/2');
    }
    kill TERM => $pid;
    reap($pid, 5);
    kill_hard($pid);
};

done_testing;
