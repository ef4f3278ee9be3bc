package TestCerts;

# Test helper: certificates made at test time with the openssl command
# line, in a directory of the caller's. Nothing here is a fixed key: every
# run makes fresh ones.
#
#   my $why = TestCerts::skip_reason();     # '' when TLS tests can run
#   my $c = TestCerts::make($dir, qw(rsa client));
#   $c->{rsa_cert}, $c->{rsa_key}, $c->{ca_cert}, ...
#
# What can be asked for (each brings what it needs):
#   ca        root CA (ca_cert, ca_key)
#   rsa       server cert with an RSA 2048 key, signed by ca (rsa_cert, rsa_key)
#   ecdsa     server cert with an ECDSA P-256 key, signed by ca (ecdsa_cert, ecdsa_key)
#   inter     intermediate CA signed by ca (inter_cert, inter_key)
#   chain     server cert signed by inter: chain_cert holds leaf then
#             intermediate, chain_leaf the leaf alone (chain_key)
#   client    client cert signed by ca, subject /C=US/O=PAGI Test/CN=Test Client
#             (client_cert, client_key)
#   other_ca  a second, unrelated root CA (other_ca_cert, other_ca_key)
#   stranger  client cert signed by other_ca (stranger_cert, stranger_key)
# Server certificates name localhost, 127.0.0.1 and ::1.

use strict;
use warnings;

use File::Spec;
use POSIX ();
use ProcTest qw(slurp);

our $CLIENT_SUBJECT = '/C=US/O=PAGI Test/CN=Test Client';

my %NEEDS = (
    ca       => [],
    other_ca => [],
    rsa      => ['ca'],
    ecdsa    => ['ca'],
    inter    => ['ca'],
    chain    => ['inter'],
    client   => ['ca'],
    stranger => ['other_ca'],
    # X.509 version 1 (no extensions), as `openssl x509 -req` makes them.
    client_v1   => ['ca'],
    stranger_v1 => ['other_ca'],
);

my $CONFIG = <<'CNF';
[req]
distinguished_name = dn
prompt = no

[dn]
CN = unused

[ca_ext]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash

[inter_ext]
basicConstraints = critical,CA:TRUE,pathlen:0
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[server_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1,IP:::1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid

[client_ext]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
CNF

# Why TLS tests cannot run here, or '' when they can.
sub skip_reason {
    return 'IO::Socket::SSL is not installed' unless eval { require IO::Socket::SSL; 1 };
    my $found = grep { -x File::Spec->catfile($_, 'openssl') } File::Spec->path;
    return 'the openssl command is not installed' unless $found;
    return '';
}

# Runs openssl with @args; dies with its output when it fails.
sub _openssl {
    my ($dir, @args) = @_;
    my $log = File::Spec->catfile($dir, 'openssl.log');
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        open STDIN,  '<', '/dev/null' or POSIX::_exit(127);
        open STDOUT, '>', $log        or POSIX::_exit(127);
        open STDERR, '>&', \*STDOUT   or POSIX::_exit(127);
        { exec 'openssl', @args }
        print STDERR "exec openssl: $!\n";
        POSIX::_exit(127);
    }
    waitpid $pid, 0;
    die "openssl @args failed (status $?):\n" . slurp($log) if $?;
    return;
}

my $serial = 1000 + int rand 1e6;

# make($dir, @names): makes the named certificates (and what they need) in
# $dir unless they are there already; returns a hash of file paths.
sub make {
    my ($dir, @names) = @_;
    my %paths;
    my $cnf = File::Spec->catfile($dir, 'openssl-test.cnf');
    unless (-e $cnf) {
        open my $fh, '>', $cnf or die "write $cnf: $!";
        print {$fh} $CONFIG;
        close $fh or die "close $cnf: $!";
    }
    my $path = sub { File::Spec->catfile($dir, $_[0]) };
    my %done;
    my $build;
    $build = sub {
        my ($name) = @_;
        return if $done{$name}++;
        $build->($_) for @{ $NEEDS{$name} or die "TestCerts: no certificate called '$name'\n" };
        my ($cert, $key) = map { $path->("$name.$_") } qw(crt key);
        @paths{ "${name}_cert", "${name}_key" } = ($cert, $key);
        if ($name eq 'chain') {
            $paths{chain_leaf} = $path->('chain-leaf.crt');
        }
        return if -e $cert;
        my %how = (
            ca       => [ 'ec',  undef,      '/O=PAGI Test/CN=PAGI Test Root CA',    'ca_ext' ],
            other_ca => [ 'ec',  undef,      '/O=Elsewhere/CN=Unrelated Test CA',    'ca_ext' ],
            inter    => [ 'ec',  'ca',       '/O=PAGI Test/CN=PAGI Test Intermediate', 'inter_ext' ],
            rsa      => [ 'rsa', 'ca',       '/O=PAGI Test/CN=localhost',            'server_ext' ],
            ecdsa    => [ 'ec',  'ca',       '/O=PAGI Test/CN=localhost',            'server_ext' ],
            chain    => [ 'ec',  'inter',    '/O=PAGI Test/CN=localhost',            'server_ext' ],
            client   => [ 'ec',  'ca',       $CLIENT_SUBJECT,                        'client_ext' ],
            stranger => [ 'ec',  'other_ca', '/C=US/O=Elsewhere/CN=Test Client',     'client_ext' ],
            client_v1   => [ 'rsa', 'ca',       '/C=US/O=PAGI Test/CN=Version One',  undef ],
            stranger_v1 => [ 'rsa', 'other_ca', '/C=US/O=Elsewhere/CN=Version One',  undef ],
        );
        my ($type, $issuer, $subject, $ext) = @{ $how{$name} };
        my $tmp = "$cert.tmp";
        _openssl($dir, 'genpkey', '-out', $key,
            $type eq 'rsa'
                ? ('-algorithm', 'RSA', '-pkeyopt', 'rsa_keygen_bits:2048')
                : ('-algorithm', 'EC',  '-pkeyopt', 'ec_paramgen_curve:P-256'));
        if (!$issuer) {
            _openssl($dir, 'req', '-config', $cnf, '-new', '-x509', '-key', $key, '-subj', $subject,
                '-extensions', $ext, '-days', 30, '-set_serial', $serial++, '-out', $tmp);
        }
        else {
            my $csr = $path->("$name.csr");
            _openssl($dir, 'req', '-config', $cnf, '-new', '-key', $key, '-subj', $subject,
                '-out', $csr);
            _openssl($dir, 'x509', '-req', '-in', $csr,
                '-CA', $path->("$issuer.crt"), '-CAkey', $path->("$issuer.key"),
                '-set_serial', $serial++, '-days', 30,
                ($ext ? ('-extfile', $cnf, '-extensions', $ext) : ()), '-out', $tmp);
        }
        if ($name eq 'chain') {
            rename $tmp, $paths{chain_leaf} or die "rename: $!";
            open my $out, '>', $tmp or die "write $tmp: $!";
            print {$out} slurp($paths{chain_leaf}), slurp($path->('inter.crt'));
            close $out or die "close $tmp: $!";
        }
        rename $tmp, $cert or die "rename $tmp: $!";
    };
    $build->($_) for @names;
    return \%paths;
}

# The certificates (PEM blocks) in a file, in order.
sub pem_blocks {
    my ($file) = @_;
    return slurp($file) =~ /(-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----)/sg;
}

# PEM text with all whitespace taken out, for comparisons.
sub squash {
    my ($pem) = @_;
    return undef unless defined $pem;
    (my $s = $pem) =~ s/\s+//g;
    return $s;
}

1;
