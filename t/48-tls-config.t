use strict;
use warnings;

# The ssl option at construction: files that cannot be used, a key that does
# not fit its certificate, min_version, cipher_list and unknown keys. Each
# bad setting dies in PAGI::Server->new (not later, at listen) with a
# message naming the setting or the file. Certificates are made for this
# run with openssl; no server is started.

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use File::Temp qw(tempdir);
use MIME::Base64 qw(encode_base64);
use TestCerts;

BEGIN {
    my $why = TestCerts::skip_reason();
    skip_all($why) if $why;
}
use PAGI::Server;

my $dir   = tempdir(CLEANUP => 1);
my $certs = TestCerts::make($dir, qw(rsa ecdsa chain));
my %base  = (app => sub { Future->done }, host => '127.0.0.1', port => 0, quiet => 1, access_log => undef);
my %rsa   = (cert_file => $certs->{rsa_cert}, key_file => $certs->{rsa_key});

sub write_file {
    my ($name, $text) = @_;
    my $path = "$dir/$name";
    open my $fh, '>', $path or die "write $path: $!";
    print {$fh} $text;
    close $fh or die "close $path: $!";
    return $path;
}

# new() with this ssl hash: (error text or '', warnings, server).
sub build {
    my (%ssl) = @_;
    my @w;
    local $SIG{__WARN__} = sub { push @w, join '', @_ };
    my $s = eval { PAGI::Server->new(%base, ssl => \%ssl) };
    return ($s ? '' : "$@", \@w, $s);
}

sub dies_naming {
    my ($ssl, $re, $name) = @_;
    my ($err) = build(%$ssl);
    like($err, $re, $name) or diag("error: '$err'");
}

subtest 'good settings are accepted' => sub {
    for my $kind (qw(rsa ecdsa chain)) {
        my ($err, $w) = build(cert_file => $certs->{"${kind}_cert"}, key_file => $certs->{"${kind}_key"});
        is($err, '', "$kind certificate and key");
        is($w, [], '... without warnings');
    }
    my ($err) = build(%rsa, ca_file => $certs->{ca_cert}, verify_client => 1,
        min_version => 'TLSv1_3', cipher_list => 'ECDHE+AESGCM:ECDHE+CHACHA20');
    is($err, '', 'every key at once');
};

subtest 'unusable files die naming the file' => sub {
    my $missing = "$dir/no-such.pem";
    my $junk    = write_file('junk.pem', "this is not PEM at all\n");
    my $bad64   = write_file('bad64.pem', "-----BEGIN CERTIFICATE-----\n!!!not base64!!!\n-----END CERTIFICATE-----\n");
    my $fakeder = write_file('fakeder.pem', "-----BEGIN CERTIFICATE-----\n" . encode_base64('x' x 300)
        . "-----END CERTIFICATE-----\n");

    dies_naming({ %rsa, cert_file => $missing }, qr/\Q$missing\E/, 'missing cert_file');
    dies_naming({ %rsa, key_file => $missing },  qr/\Q$missing\E/, 'missing key_file');
    dies_naming({ %rsa, cert_file => $junk }, qr/^.*ssl\.cert_file \Q$junk\E: /, 'a non-PEM cert_file');
    dies_naming({ %rsa, cert_file => $bad64 }, qr/ssl\.cert_file \Q$bad64\E: /, 'a cert_file with broken base64');
    dies_naming({ %rsa, cert_file => $certs->{rsa_key} }, qr/ssl\.cert_file \Q$certs->{rsa_key}\E: .*no certificate/,
        'a key given as cert_file');
    dies_naming({ %rsa, cert_file => $fakeder }, qr/\Q$fakeder\E/, 'a PEM block that is no certificate');
    dies_naming({ %rsa, key_file => $junk }, qr/ssl\.key_file \Q$junk\E: /, 'a non-PEM key_file');
    dies_naming({ %rsa, key_file => $certs->{rsa_cert} }, qr/ssl\.key_file \Q$certs->{rsa_cert}\E: /,
        'a certificate given as key_file');
    dies_naming({ %rsa, ca_file => $junk, verify_client => 1 }, qr/ssl\.ca_file \Q$junk\E: /,
        'a non-PEM ca_file with verify_client');
};

subtest 'a key that does not fit the certificate names both files' => sub {
    my $both = sub {
        my ($cert, $key) = @_;
        return qr/(?=.*ssl\.key_file \Q$key\E)(?=.*ssl\.cert_file \Q$cert\E)/s;
    };
    dies_naming({ cert_file => $certs->{rsa_cert}, key_file => $certs->{ecdsa_key} },
        $both->($certs->{rsa_cert}, $certs->{ecdsa_key}), 'an RSA certificate with an ECDSA key');
    dies_naming({ cert_file => $certs->{ecdsa_cert}, key_file => $certs->{chain_key} },
        $both->($certs->{ecdsa_cert}, $certs->{chain_key}), 'an ECDSA certificate with another ECDSA key');
};

subtest 'settings' => sub {
    dies_naming({ %rsa, verify_client => 1 }, qr/ssl\.verify_client needs ssl\.ca_file/,
        'verify_client without ca_file');
    dies_naming({ key_file => $certs->{rsa_key} }, qr/ssl\.cert_file is required/, 'no cert_file');
    dies_naming({ cert_file => $certs->{rsa_cert} }, qr/ssl\.key_file is required/, 'no key_file');
    # A named file that is missing is reported first, as the reference does.
    dies_naming({ cert_file => "$dir/none.crt" }, qr{^SSL certificate file not found: \Q$dir\E/none\.crt$},
        'a missing cert_file without key_file');
    dies_naming({ key_file => "$dir/none.key" }, qr{^SSL key file not found: \Q$dir\E/none\.key$},
        'a missing key_file without cert_file');
    dies_naming({ ca_file => "$dir/none.ca" }, qr{^SSL CA file not found: \Q$dir\E/none\.ca$},
        'a missing ca_file alone');

    for my $v (qw(TLSv1_2 TLSv1_3 TLSv1.2 TLSv1.3)) {
        my ($err, $w) = build(%rsa, min_version => $v);
        is($err, '', "min_version $v is accepted");
        is($w, [], '... without a warning');
    }
    for my $v (qw(TLSv1 TLSv1_1)) {
        my ($err, $w) = build(%rsa, min_version => $v);
        is($err, '', "min_version $v is accepted");
        like($w, [qr/ssl\.min_version $v: this server offers TLS 1\.2 and 1\.3 only/], '... with a warning');
    }
    for my $v ('TLSv1_4', 'tlsv1_2', 'bogus', '') {
        dies_naming({ %rsa, min_version => $v }, qr/ssl\.min_version '\Q$v\E'/, "min_version '$v' dies");
    }

    my ($err, $w) = build(%rsa, verify_depth => 3);
    is($err, '', 'an unknown ssl key is not fatal');
    like($w, [qr/ssl: unknown key 'verify_depth' ignored/], '... but warned about, by name');

    my (undef, undef, $s) = build(%rsa);
    ok(!eval { $s->configure(ssl => { %rsa, min_version => 'bogus' }); 1 },
        'configure(ssl => ...) checks the new settings');
    like($@, qr/ssl\.min_version 'bogus'/, '... with the same message');
    ok(!eval { $s->configure(ssl => { %rsa, key_file => "$dir/nowhere.key" }); 1 },
        'configure(ssl => ...) reads the new files');
    like($@, qr{nowhere\.key}, '... naming the file');
    ok(eval { $s->configure(ssl => { %rsa }); 1 }, 'good settings are taken') or diag $@;
};

subtest 'cipher_list' => sub {
    for my $list ('ECDHE+AESGCM', 'ECDHE+CHACHA20', 'HIGH:!aNULL', 'ECDHE-RSA-AES128-GCM-SHA256') {
        my ($err) = build(%rsa, cipher_list => $list);
        is($err, '', "'$list' is accepted");
    }
    dies_naming({ %rsa, cipher_list => 'DHE+AESGCM' }, qr/ssl\.cipher_list/,
        "'DHE+AESGCM' leaves no TLS 1.2 suite: dies naming ssl.cipher_list");
    dies_naming({ %rsa, cipher_list => 'AES128-SHA' }, qr/ssl\.cipher_list/,
        "'AES128-SHA' (no ECDHE, no AEAD) dies too");
    my ($err) = build(%rsa, cipher_list => 'DHE+AESGCM', min_version => 'TLSv1_3');
    is($err, '', "... but with min_version TLSv1_3 it is accepted");
    dies_naming({ %rsa, cipher_list => 'garbage' }, qr/ssl\.cipher_list 'garbage'/,
        "'garbage' (OpenSSL cannot read it) dies naming ssl.cipher_list");
    dies_naming({ %rsa, cipher_list => 'garbage', min_version => 'TLSv1_3' }, qr/ssl\.cipher_list 'garbage'/,
        '... whatever min_version is');
};

subtest 'disable_tls skips all of it' => sub {
    my @w;
    local $SIG{__WARN__} = sub { push @w, join '', @_ };
    my $s = eval { PAGI::Server->new(%base, disable_tls => 1, ssl => { %rsa, cipher_list => 'garbage' }) };
    ok($s, 'a bad cipher_list is not read when TLS is disabled') or diag($@);
    like(\@w, [qr/TLS disabled via disable_tls option/], 'with the warning that ssl is ignored');
};

done_testing;
