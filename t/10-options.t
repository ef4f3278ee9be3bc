use strict;
use warnings;

# Constructor options, their validation messages and configure().
# Nothing here needs a client; the listen() calls at the end only watch the
# banner to see that configure() really changed the logging settings.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp qw(tempdir);
use File::Spec;
use IO::Async::Loop;
use Time::HiRes ();

use PAGI::Server;
use TestCerts;

my $app = sub { Future->done };

# Runs $code, returns the exception text ('' when it lived).
sub error_of (&) {
    my ($code) = @_;
    local $@;
    return eval { $code->(); 1 } ? '' : "$@";
}

# Runs $code while collecting everything passed to warn().
sub warnings_of (&) {
    my ($code) = @_;
    my @w;
    local $SIG{__WARN__} = sub { push @w, join '', @_ };
    $code->();
    return \@w;
}

my $dir = tempdir(CLEANUP => 1);
sub make_file {
    my ($name, $content) = @_;
    my $path = File::Spec->catfile($dir, $name);
    open my $fh, '>', $path or die "cannot create $path: $!";
    print {$fh} $content // "-----BEGIN PLACEHOLDER-----\n";
    close $fh;
    return $path;
}
my $cert    = make_file('cert.pem');
my $key     = make_file('key.pem');
my $ca      = make_file('ca.pem');
my $missing = File::Spec->catfile($dir, 'no-such-file.pem');

subtest 'version and feature probes' => sub {
    ok(defined $PAGI::Server::VERSION, '$VERSION is set');
    ok(version->parse($PAGI::Server::VERSION) > version->parse('0.002005'),
        "\$VERSION ($PAGI::Server::VERSION) is newer than the reference 0.002005");

    for my $probe (qw(has_tls has_http2)) {
        my $class_v = PAGI::Server->$probe;
        ok(defined $class_v && $class_v =~ /\A[01]\z/,
            "PAGI::Server->$probe returns 0 or 1")
            or diag('got ' . ($class_v // 'undef'));
        my $obj = PAGI::Server->new(app => $app, port => 0, quiet => 1, access_log => undef);
        is($obj->$probe, $class_v, "$probe gives the same answer on an instance");
    }
};

subtest 'every documented option is accepted' => sub {
    my %tcp = (
        app                        => $app,
        host                       => '127.0.0.1',
        port                       => 0,
        ssl                        => { cert_file => $cert, key_file => $key, ca_file => $ca,
                                        verify_client => 0, min_version => 'TLSv1_2',
                                        cipher_list => 'HIGH:!aNULL' },
        disable_tls                => 1,
        extensions                 => { fullflush => {} },
        access_log                 => undef,
        access_log_format          => 'clf',
        log_level                  => 'warn',
        quiet                      => 1,
        workers                    => 0,
        listener_backlog           => 128,
        reuseport                  => 0,
        max_receive_queue          => 50,
        max_ws_frame_size          => 4096,
        max_connections            => 10,
        write_high_watermark       => 32768,
        write_low_watermark        => 8192,
        max_body_size              => 1024,
        max_header_size            => 4096,
        max_header_count           => 20,
        sync_file_threshold        => 0,
        max_requests               => 0,
        timeout                    => 5,
        lifespan_startup_timeout   => 2,
        lifespan_mode              => 'off',
        request_timeout            => 3,
        ws_idle_timeout            => 4,
        sse_idle_timeout           => 6,
        heartbeat_timeout          => 0,
        shutdown_timeout           => 7,
        validate_events            => 1,
        loop_type                  => 'Poll',
        http2                      => 0,
        h2_max_concurrent_streams  => 10,
        h2_initial_window_size     => 65535,
        h2_max_frame_size          => 16384,
        h2_enable_push             => 0,
        h2_enable_connect_protocol => 1,
        h2_max_header_list_size    => 8192,
        h2_rst_rate_limit          => { burst => 10, rate => 1 },
        on_error                   => sub { },
    );
    my $server;
    my $w = warnings_of { $server = eval { PAGI::Server->new(%tcp) } };
    my $err = $@;
    ok($server, 'new() takes the full TCP option set') or diag($err);
    isa_ok($server, ['PAGI::Server', 'IO::Async::Notifier'], 'the server');
    ok((grep { /TLS disabled via disable_tls option/ } @$w),
        'ssl together with disable_tls warns that the ssl config is ignored')
        or diag(join "", @$w);
    is($server->effective_max_connections, 10, 'max_connections was taken') if $server;

    my $sock_dir = tempdir(CLEANUP => 1);
    my $unix = eval {
        PAGI::Server->new(app => $app, socket => "$sock_dir/s.sock", socket_mode => 0660,
            quiet => 1, access_log => undef);
    };
    ok($unix, 'new() takes socket + socket_mode') or diag($@);
    is($unix->socket_path, "$sock_dir/s.sock", 'socket_path reports the socket') if $unix;
    is($unix->port, undef, 'port is undef for a Unix-socket server') if $unix;

    my $multi = eval {
        PAGI::Server->new(app => $app, quiet => 1, access_log => undef,
            listen => [ { host => '127.0.0.1', port => 0 },
                        { socket => "$sock_dir/m.sock", socket_mode => 0600 } ]);
    };
    ok($multi, 'new() takes a listen array') or diag($@);
    if ($multi) {
        is(scalar @{ $multi->listeners }, 2, 'two listeners');
        is($multi->listeners->[0]{type}, 'tcp', 'first is tcp');
        is($multi->listeners->[1]{type}, 'unix', 'second is unix');
        is($multi->socket_path, "$sock_dir/m.sock", 'socket_path finds the unix listener');
    }

    SKIP: {
        # The files are parsed at construction: they must be a real
        # certificate and its key (made here with openssl).
        my $why = TestCerts::skip_reason();
        skip $why, 3 if $why;
        my $real = TestCerts::make($dir, 'rsa');
        my $with_ssl = eval {
            PAGI::Server->new(app => $app, port => 0, quiet => 1, access_log => undef,
                ssl => { cert_file => $real->{rsa_cert}, key_file => $real->{rsa_key} });
        };
        ok($with_ssl, 'ssl with a readable certificate and key is accepted at construction') or diag($@);
        is($with_ssl && $with_ssl->listeners->[0]{ssl}{cert_file}, $real->{rsa_cert},
            'the tcp listener carries the ssl config');
        like(error_of {
                PAGI::Server->new(app => $app, port => 0, quiet => 1, access_log => undef,
                    ssl => { cert_file => $cert, key_file => $key });
            }, qr/^PAGI::Server: ssl\.cert_file \Q$cert\E: /,
            'existing files that hold no certificate are refused at construction, naming the file');
    }

    my $mode_only = eval {
        PAGI::Server->new(app => $app, port => 0, socket_mode => 0600, quiet => 1, access_log => undef);
    };
    ok($mode_only, 'socket_mode without socket is ignored, not an error') or diag($@);
    is($mode_only->listeners->[0]{type}, 'tcp', '... and the server stays on TCP') if $mode_only;
};

subtest 'defaults' => sub {
    my $s = PAGI::Server->new(app => $app, quiet => 1, access_log => undef);
    is($s->port, 5000, 'default port is 5000');
    is($s->listeners, [ { type => 'tcp', host => '127.0.0.1', port => 5000 } ],
        'default listener is 127.0.0.1:5000');
    is($s->socket_path, undef, 'no socket path');
    is($s->is_running, 0, 'not running after new()');
    is($s->effective_max_connections, 1000, 'default connection limit is 1000');
};

subtest 'undef option values fall back to the defaults' => sub {
    # The reference reads every option with //, so an explicit undef (as a
    # wrapper passing through an unset setting would give) means "default".
    my %base = (app => $app, port => 0, quiet => 1, access_log => undef);
    for my $k (qw(log_level lifespan_mode max_connections timeout extensions
                  access_log_format workers shutdown_timeout lifespan_startup_timeout)) {
        is(error_of { PAGI::Server->new(%base, $k => undef) }, '', "$k => undef is accepted");
    }
    my $s = PAGI::Server->new(%base, max_connections => undef);
    my $w = warnings_of { is($s->effective_max_connections, 1000, 'max_connections => undef means 1000') };
    is($w, [], '... without warnings');
};

subtest 'app is required' => sub {
    like(error_of { PAGI::Server->new(port => 0) }, qr/app is required/, 'no app');
    like(error_of { PAGI::Server->new(app => undef, port => 0) }, qr/app is required/, 'app => undef');
};

subtest 'log_level, lifespan_mode and loop_type are validated' => sub {
    my %base = (app => $app, port => 0, quiet => 1, access_log => undef);

    for my $lvl (qw(debug info warn error)) {
        is(error_of { PAGI::Server->new(%base, log_level => $lvl) }, '', "log_level '$lvl' is valid");
    }
    is(error_of { PAGI::Server->new(%base, log_level => 'verbose') },
        "Invalid log_level 'verbose' - must be one of: debug, info, warn, error\n",
        'unknown log_level');
    like(error_of { PAGI::Server->new(%base, log_level => 'INFO') },
        qr/^Invalid log_level 'INFO'/, 'log_level is case-sensitive');

    for my $m (qw(auto on off)) {
        is(error_of { PAGI::Server->new(%base, lifespan_mode => $m) }, '', "lifespan_mode '$m' is valid");
    }
    is(error_of { PAGI::Server->new(%base, lifespan_mode => 'maybe') },
        "Invalid lifespan_mode 'maybe' - must be one of: auto, on, off\n",
        'unknown lifespan_mode');
    like(error_of { PAGI::Server->new(%base, lifespan_mode => 'on ') },
        qr/^Invalid lifespan_mode/, 'lifespan_mode must match exactly');

    for my $lt (qw(Poll EPoll Select Foo::Bar Some_Backend)) {
        is(error_of { PAGI::Server->new(%base, loop_type => $lt) }, '', "loop_type '$lt' is valid");
    }
    for my $lt ('../../etc/passwd', 'Foo;system', '9Lives', 'Foo::', 'Foo Bar') {
        is(error_of { PAGI::Server->new(%base, loop_type => $lt) },
            "Invalid loop_type '$lt': must contain only letters, digits, and ::\n",
            "loop_type '$lt' is refused");
    }
    is(error_of { PAGI::Server->new(%base, loop_type => '') }, '', 'an empty loop_type means none');
};

subtest 'SSL file checks' => sub {
    my %base = (app => $app, port => 0, quiet => 1, access_log => undef);
    my %good = (cert_file => $cert, key_file => $key, ca_file => $ca);

    is(error_of { PAGI::Server->new(%base, ssl => { %good, cert_file => $missing }) },
        "SSL certificate file not found: $missing\n", 'missing certificate');
    is(error_of { PAGI::Server->new(%base, ssl => { %good, key_file => $missing }) },
        "SSL key file not found: $missing\n", 'missing key');
    is(error_of { PAGI::Server->new(%base, ssl => { %good, ca_file => $missing }) },
        "SSL CA file not found: $missing\n", 'missing CA');
    like(error_of { PAGI::Server->new(%base, ssl => { cert_file => $missing, key_file => $missing }) },
        qr/^SSL certificate file not found/, 'the certificate is checked before the key');

    my %locked = map { ($_ => make_file("locked-$_.pem")) } qw(cert key ca);
    chmod 0000, values %locked;
    SKIP: {
        skip 'running as root: chmod 000 files stay readable', 3 if -r $locked{cert};
        is(error_of { PAGI::Server->new(%base, ssl => { %good, cert_file => $locked{cert} }) },
            "SSL certificate file not readable: $locked{cert}\n", 'unreadable certificate');
        is(error_of { PAGI::Server->new(%base, ssl => { %good, key_file => $locked{key} }) },
            "SSL key file not readable: $locked{key}\n", 'unreadable key');
        is(error_of { PAGI::Server->new(%base, ssl => { %good, ca_file => $locked{ca} }) },
            "SSL CA file not readable: $locked{ca}\n", 'unreadable CA');
    }
    chmod 0600, values %locked;

    my ($err, $s);
    my $w = warnings_of {
        $err = error_of {
            $s = PAGI::Server->new(%base, disable_tls => 1,
                ssl => { cert_file => $missing, key_file => $missing, ca_file => $missing });
        };
    };
    is($err, '', 'disable_tls skips the file checks, so missing files are fine');
    ok($s, '... and a server is built');
    is(scalar(grep { $_ eq "PAGI::Server: TLS disabled via disable_tls option, ssl config ignored\n" } @$w), 1,
        '... with one warning that the ssl config is ignored')
        or diag(join "", @$w);
};

subtest 'listener conflicts' => sub {
    my %base = (app => $app, quiet => 1, access_log => undef);
    my $tcp  = [ { host => '127.0.0.1', port => 0 } ];
    my @cases = (
        [ 'listen + host',        { listen => $tcp, host => '127.0.0.1' },
          "Cannot specify both 'listen' and 'host' options\n" ],
        [ 'listen + port',        { listen => $tcp, port => 0 },
          "Cannot specify both 'listen' and 'port' options\n" ],
        [ 'listen + socket',      { listen => $tcp, socket => '/tmp/x.sock' },
          "Cannot specify both 'listen' and 'socket' options\n" ],
        [ 'listen + socket_mode', { listen => $tcp, socket_mode => 0600 },
          "Cannot specify both 'listen' and 'socket_mode' options\n" ],
        [ 'listen + socket + host reports the listen conflict first',
          { listen => $tcp, socket => '/tmp/x.sock', host => '127.0.0.1' },
          "Cannot specify both 'listen' and 'host' options\n" ],
        [ 'empty listen array',   { listen => [] },
          "'listen' must be a non-empty arrayref\n" ],
        [ 'listen is a hash',     { listen => { host => '127.0.0.1', port => 0 } },
          "'listen' must be a non-empty arrayref\n" ],
        [ 'listen is a string',   { listen => '127.0.0.1:0' },
          "'listen' must be a non-empty arrayref\n" ],
        [ 'listen spec is a string', { listen => ['127.0.0.1:0'] },
          "Each listen spec must be a hashref\n" ],
        [ 'second listen spec is an array', { listen => [ { host => '127.0.0.1', port => 0 }, [] ] },
          "Each listen spec must be a hashref\n" ],
        [ 'spec socket + host',   { listen => [ { socket => '/tmp/x.sock', host => '127.0.0.1' } ] },
          "Cannot specify both 'socket' and 'host' in a listen spec\n" ],
        [ 'spec socket + port',   { listen => [ { socket => '/tmp/x.sock', port => 8080 } ] },
          "Cannot specify both 'socket' and 'port' in a listen spec\n" ],
        [ 'tcp spec without port', { listen => [ { host => '127.0.0.1' } ] },
          "TCP listen spec requires both 'host' and 'port'\n" ],
        [ 'tcp spec without host', { listen => [ { port => 0 } ] },
          "TCP listen spec requires both 'host' and 'port'\n" ],
        [ 'socket + host',        { socket => '/tmp/x.sock', host => '127.0.0.1' },
          "Cannot specify both 'socket' and 'host' options\n" ],
        [ 'socket + port',        { socket => '/tmp/x.sock', port => 0 },
          "Cannot specify both 'socket' and 'port' options\n" ],
    );
    for my $c (@cases) {
        my ($name, $opts, $msg) = @$c;
        is(error_of { PAGI::Server->new(%base, %$opts) }, $msg, $name);
    }

    # Specs are tested for truthiness of socket/host/port, not definedness.
    is(error_of { PAGI::Server->new(%base, listen => [ { socket => '/tmp/x.sock', port => 0 } ]) }, '',
        'a unix spec with port => 0 is accepted');
    is(error_of { PAGI::Server->new(%base, listen => [ { host => '127.0.0.1', port => 0, socket => '' } ]) }, '',
        'a tcp spec with an empty socket is accepted');
};

subtest 'unknown options' => sub {
    my $err = error_of {
        PAGI::Server->new(app => $app, port => 0, quiet => 1, access_log => undef, no_such_option => 1);
    };
    like($err, qr/^Unrecognised configuration keys for PAGI::Server - no_such_option/,
        'an unknown key croaks and names the key');
    like($err, qr/ at \Q${\ __FILE__ }\E line \d+\.$/, '... from the caller\'s point of view');

    $err = error_of {
        PAGI::Server->new(app => $app, port => 0, quiet => 1, access_log => undef, alpha => 1, beta => 2);
    };
    like($err, qr/Unrecognised configuration keys/, 'several unknown keys');
    like($err, qr/\balpha\b/, '... names the first');
    like($err, qr/\bbeta\b/,  '... names the second');
};

subtest 'configure()' => sub {
    my $s = PAGI::Server->new(app => $app, port => 0, quiet => 1, access_log => undef);

    is(error_of { $s->configure(max_connections => 5) }, '', 'max_connections can change');
    is($s->effective_max_connections, 5, '... and takes effect');
    is(error_of { $s->configure(port => 4321) }, '', 'port can change before listen');
    is($s->port, 4321, '... and port() reports it');
    $s->configure(port => 0);

    is(error_of { $s->configure(log_level => 'bogus') },
        "Invalid log_level 'bogus' - must be one of: debug, info, warn, error\n",
        'configure validates log_level');
    is(error_of { $s->configure(lifespan_mode => 'sometimes') },
        "Invalid lifespan_mode 'sometimes' - must be one of: auto, on, off\n",
        'configure validates lifespan_mode');

    for my $k (qw(write_high_watermark write_low_watermark disable_tls loop_type
                  validate_events reuseport sync_file_threshold heartbeat_timeout
                  h2_max_concurrent_streams)) {
        like(error_of { $s->configure($k => 1) },
            qr/^Unrecognised configuration keys for PAGI::Server - $k\b/,
            "configure refuses $k");
    }

    my $before = [ map { +{%$_} } @{ $s->listeners } ];
    is(error_of { $s->configure(socket => '/tmp/never.sock', socket_mode => 0600,
                                listen => [ { host => '127.0.0.1', port => 1 } ]) },
        '', 'socket, socket_mode and listen are accepted by configure');
    is($s->listeners, $before, '... but do not change the listeners');
    is($s->socket_path, undef, '... so there is still no unix socket');
};

# Starts $server on a fresh loop, returns the warnings emitted by listen().
sub listen_warnings {
    my ($server) = @_;
    my $loop = IO::Async::Loop->new;
    $loop->add($server);
    my $w = warnings_of {
        my $f = $server->listen;
        Future->wait_any($f, $loop->delay_future(after => 5))->get;
        die "listen did not complete\n" unless $f->is_done;
        $server->shutdown->get;
    };
    $loop->remove($server);
    return $w;
}

subtest 'configure() changes logging' => sub {
    my $banner = qr/^PAGI Server listening on http:\/\/127\.0\.0\.1:\d+\//;

    my $s = PAGI::Server->new(app => $app, port => 0, quiet => 1, access_log => undef,
        lifespan_mode => 'off');
    my $w = listen_warnings($s);
    is([ grep { /$banner/ } @$w ], [], 'quiet => 1: no banner');

    $s->configure(quiet => 0);
    $w = listen_warnings($s);
    is(scalar(grep { /$banner/ } @$w), 1, 'after configure(quiet => 0) the banner appears')
        or diag(join "", @$w);

    $s->configure(log_level => 'warn');
    $w = listen_warnings($s);
    is([ grep { /$banner/ } @$w ], [], 'after configure(log_level => "warn") the info banner is gone');

    $s->configure(log_level => 'info');
    $w = listen_warnings($s);
    is(scalar(grep { /$banner/ } @$w), 1, 'back to info: banner again');
};

done_testing;
