use strict;
use warnings;

# PAGI::Server::Options is the one table of options. Checks that what is
# derived from it agrees with it, and that the Rust core knows exactly the
# config keys Perl sends: no line the core would refuse, no key the core
# reads that Perl never sends.

use Test2::V0;
use FindBin qw($Bin);
use lib "$Bin/lib";

use PAGI::Server;
use PAGI::Server::Options;
use ProcTest qw(spawn_cli reap slurp tmpdir);
use TestCerts;

my $app = sub { Future->done };
my %base = (app => $app, port => 0, quiet => 1, access_log => undef);
my @table = PAGI::Server::Options::all();

sub error_of (&) {
    my ($code) = @_;
    local $@;
    return eval { $code->(); 1 } ? '' : "$@";
}

sub keys_of {
    my ($cfg) = @_;
    my %k = map { (split /=/, $_, 2)[0] => 1 } split /\n/, $cfg;
    return [ sort keys %k ];
}

# A valid value different from the default, per kind.
sub other_value {
    my ($o, $n) = @_;
    return $o->{values}[-1]     if $o->{kind} eq 'enum';
    return 20000 + $n           if $o->{name} eq 'h2_max_frame_size';    # at least 16384
    return 1000 + $n            if $o->{kind} eq 'count';
    return 2.5 + $n             if $o->{kind} eq 'seconds';
    return 'combined'           if $o->{name} eq 'access_log_format';
    return 1                    if $o->{kind} eq 'bool';
    return PAGI::Server::Options::default_of($o->{name});
}

my $known;
subtest 'the core refuses an unknown key, naming it and the keys it knows' => sub {
    my $h;
    my $err = error_of { $h = PAGI::Server::Native::new("listen=tcp:127.0.0.1:0\nno_such_key=1\n") };
    PAGI::Server::Native::free($h) if $h;
    like($err, qr/unknown config key 'no_such_key' \(known: [a-z0-9_, ]+\)/, 'refused with the key named')
        or diag $err;
    ($known) = $err =~ /\(known: ([a-z0-9_, ]+)\)/;
    $known = [ sort split /, /, $known // '' ];
};

subtest 'Perl sends exactly the keys the core knows' => sub {
    # ssl with every setting that has a core line (tls_*); its files are
    # read at construction, so they are a real CA, certificate and key.
    my $why = TestCerts::skip_reason();
    skip_all($why) if $why;
    my $certs = TestCerts::make(tmpdir(), 'rsa');
    my $n = 0;
    my %every = map { $_->{name} => other_value($_, $n++) }
        grep { !$_->{own_init} && !$_->{cli_only} && $_->{name} ne 'http2' } @table;
    $every{ssl} = { cert_file => $certs->{rsa_cert}, key_file => $certs->{rsa_key},
                    ca_file => $certs->{ca_cert}, verify_client => 1,
                    min_version => 'TLSv1_3', cipher_list => 'ECDHE+AESGCM' };
    $every{disable_tls} = 0;    # other_value would turn TLS off
    my $s = PAGI::Server->new(%base, %every, _test_panic_path => '/boom');
    my $cfg = $s->_native_config;
    is(keys_of($cfg), $known, 'the keys sent are the keys the core knows') or diag $cfg;
    like($cfg, qr/^tls_verify_client=1$/m, 'verify_client reaches the core');
    like($cfg, qr/^tls_min_version=1\.3$/m, 'min_version reaches the core as 1.3');
    my ($ciphers) = $cfg =~ /^tls_ciphers=(.*)$/m;
    my @tls12 = grep { !/^TLS_/ } split /:/, $ciphers // '';    # OpenSSL lists TLS 1.3 suites too
    ok(@tls12 && !grep({ !/^ECDHE-(?:RSA|ECDSA)-AES(?:128|256)-GCM-SHA(?:256|384)$/ } @tls12),
        'cipher_list reaches the core expanded into OpenSSL names (ECDHE AES-GCM only)')
        or diag($ciphers);
    like($cfg, qr/^listen=tls\+tcp:/m, 'the TCP listener is a TLS one');

    my $h;
    is(error_of { $h = PAGI::Server::Native::new($cfg) }, '', 'the core takes every line');
    PAGI::Server::Native::free($h) if $h;
};

subtest 'each core line carries its option' => sub {
    my $n = 0;
    for my $o (grep { $_->{core} } @table) {
        my ($given, $want);
        if ($o->{name} eq 'access_log') {
            ($given, $want) = (undef, 0);
        }
        elsif ($o->{name} eq 'max_connections') {
            ($given, $want) = (7, 7);
        }
        elsif ($o->{name} eq 'h2_rst_rate_limit') {
            ($given, $want) = ({ burst => 50, rate => 5 }, '50/5');
        }
        else {
            $given = $want = other_value($o, $n++);
        }
        my $cfg = PAGI::Server->new(%base, $o->{name} => $given)->_native_config;
        my @lines = grep { /^\Q$o->{core}\E=/ } split /\n/, $cfg;
        is(\@lines, ["$o->{core}=$want"], "$o->{name} goes to the core as $o->{core}");
    }
    my $cfg = PAGI::Server->new(%base, max_connections => 0)->_native_config;
    like($cfg, qr/^max_connections=1000$/m, 'max_connections 0 reaches the core as the effective 1000');
};

subtest 'new() takes the defaults from the table' => sub {
    my $s = PAGI::Server->new(app => $app, quiet => 1);
    for my $o (grep { !$_->{own_init} && !$_->{cli_only} && $_->{name} ne 'quiet' } @table) {
        is($s->{ $o->{name} }, PAGI::Server::Options::default_of($o->{name}), "$o->{name} default");
    }
    is($s->port, PAGI::Server::Options::default_of('port'), 'port default');
    is($s->{host}, PAGI::Server::Options::default_of('host'), 'host default');
};

subtest 'configure() follows the table' => sub {
    my $n = 0;
    for my $o (grep { !$_->{cli_only} } @table) {
        my $s = PAGI::Server->new(%base);
        my $v = $o->{name} eq 'app' ? sub { Future->done } : other_value($o, $n++);
        my $err = error_of { $s->configure($o->{name} => $v) };
        my $when = $o->{reconfigure} // '';
        if ($when eq '1') {
            is($err, '', "$o->{name} can change");
            is($s->{ $o->{name} }, $v, '... and changes');
        }
        elsif ($when eq 'ignored') {
            is($err, '', "$o->{name} is accepted without effect");
        }
        else {
            like($err, qr/^Unrecognised configuration keys for PAGI::Server - $o->{name}\b/,
                "$o->{name} is refused after construction");
        }
    }
    for my $o (grep { $_->{kind} eq 'enum' } @table) {
        my $s = PAGI::Server->new(%base);
        is(error_of { $s->configure($o->{name} => 'nonsense') },
            "Invalid $o->{name} 'nonsense' - must be one of: " . join(', ', @{ $o->{values} }) . "\n",
            "configure checks $o->{name} against its values");
    }
};

subtest 'pagi-server --help lists every flag of the table' => sub {
    my $p = spawn_cli(args => ['--help']);
    my $status = reap($p->{pid}, 20);
    is($status, 0, '--help exits 0');
    my $help = slurp($p->{out});
    for my $o (grep { $_->{flags} } @table) {
        for my $name (split /\|/, $o->{flags}) {
            my $flag = (length $name == 1 ? '-' : '--') . $name;
            like($help, qr/(?<![\w-])\Q$flag\E(?![\w-])/, "help shows $flag ($o->{name})");
        }
    }
};

done_testing;
