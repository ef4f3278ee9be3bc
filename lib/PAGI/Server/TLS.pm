package PAGI::Server::TLS;

use strict;
use warnings;

our $VERSION = '0.003000';

# The `ssl` option of PAGI::Server: checked here with messages that name
# the key, turned into the Rust core's tls_* config lines, and described as
# IO::Socket::SSL parameters (the reference server's view of the same
# settings). TLS itself runs in the core (rustls); OpenSSL, through
# IO::Socket::SSL, only reads cipher_list strings, which are OpenSSL's
# language.

my %KNOWN = map { $_ => 1 } qw(cert_file key_file ca_file verify_client min_version cipher_list);

# min_version is a floor. rustls speaks TLS 1.2 and 1.3; an older floor is
# accepted (every version offered is above it) with a warning.
my %FLOOR = ('TLSv1_2' => '1.2', 'TLSv1_3' => '1.3', 'TLSv1.2' => '1.2', 'TLSv1.3' => '1.3');
my %OLD_FLOOR = map { $_ => 1 } qw(SSLv3 TLSv1 TLSv1_1 TLSv1.1);
my @OPENSSL_ORDER = qw(SSLv2 SSLv3 TLSv1 TLSv1_1 TLSv1_2 TLSv1_3);

# The cipher list the reference server asks OpenSSL for when none is given.
# Its TLS 1.2 suites that rustls has are exactly rustls's own set, so the
# core is then left with its defaults.
our $DEFAULT_CIPHER_LIST = 'ECDHE+AESGCM:DHE+AESGCM:ECDHE+CHACHA20:!aNULL:!eNULL:!EXPORT:!DES'
    . ':!RC4:!MD5:!PSK:!aECDH:!EDH-DSS-DES-CBC3-SHA:!KRB5-DES-CBC3-SHA';

sub check {
    my ($ssl) = @_;
    die "ssl must be a hash reference of TLS settings\n" unless ref $ssl eq 'HASH';
    for my $k (sort keys %$ssl) {
        warn "PAGI::Server: ssl: unknown key '$k' ignored (known: "
            . join(', ', sort keys %KNOWN) . ")\n" unless $KNOWN{$k};
    }
    # Files that are named must exist (the reference's messages), then
    # both of cert_file and key_file must be named.
    my %what = (cert_file => 'certificate', key_file => 'key', ca_file => 'CA');
    for my $k (qw(cert_file key_file ca_file)) {
        my $path = $ssl->{$k} // next;
        die "SSL $what{$k} file not found: $path\n"    unless -e $path;
        die "SSL $what{$k} file not readable: $path\n" unless -r $path;
        die "ssl.$k must not contain a newline\n" if $path =~ /\n/;
    }
    for my $k (qw(cert_file key_file)) {
        die "ssl.$k is required to serve TLS\n" unless defined $ssl->{$k} && length $ssl->{$k};
    }
    die "ssl.verify_client needs ssl.ca_file (the CA that signs client certificates)\n"
        if $ssl->{verify_client} && !defined $ssl->{ca_file};
    my $min = $ssl->{min_version} // 'TLSv1_2';
    if ($OLD_FLOOR{$min}) {
        warn "PAGI::Server: ssl.min_version $min: this server offers TLS 1.2 and 1.3 only\n";
    }
    elsif (!$FLOOR{$min}) {
        die "ssl.min_version '$min' is not one of TLSv1_2, TLSv1_3\n";
    }
    return;
}

sub core_lines {
    my ($ssl) = @_;
    my @lines = ("tls_cert_file=$ssl->{cert_file}", "tls_key_file=$ssl->{key_file}");
    push @lines, "tls_ca_file=$ssl->{ca_file}" if defined $ssl->{ca_file};
    push @lines, 'tls_verify_client=' . ($ssl->{verify_client} ? 1 : 0);
    push @lines, 'tls_min_version=' . ($FLOOR{ $ssl->{min_version} // 'TLSv1_2' } // '1.2');
    if (defined $ssl->{cipher_list}) {
        push @lines, 'tls_ciphers=' . join(':', expand_cipher_list($ssl->{cipher_list}));
    }
    return @lines;
}

sub openssl_params {
    my ($ssl) = @_;
    my %p = (SSL_server => 1);
    $p{SSL_cert_file} = $ssl->{cert_file} if $ssl->{cert_file};
    $p{SSL_key_file}  = $ssl->{key_file}  if $ssl->{key_file};
    # A floor: every protocol below min_version excluded.
    my $min = $ssl->{min_version} // 'TLSv1_2';
    $min =~ tr/./_/;
    if (grep { $_ eq $min } @OPENSSL_ORDER) {
        my @below;
        for my $v (@OPENSSL_ORDER) {
            last if $v eq $min;
            push @below, "!$v";
        }
        $p{SSL_version} = join(':', 'SSLv23', @below);
    }
    else {
        $p{SSL_version} = $min;
    }
    $p{SSL_cipher_list} = $ssl->{cipher_list} // $DEFAULT_CIPHER_LIST;
    if ($ssl->{verify_client}) {
        $p{SSL_verify_mode} = 0x03;    # peer, and fail without a certificate
        $p{SSL_ca_file} = $ssl->{ca_file} if $ssl->{ca_file};
    }
    else {
        $p{SSL_verify_mode} = 0x00;
    }
    return \%p;
}

sub openssl_context {
    my ($params) = @_;
    eval { require IO::Socket::SSL; 1 }
        or return (undef, "IO::Socket::SSL cannot be loaded (Debian: libio-socket-ssl-perl)");
    my $ctx = IO::Socket::SSL::SSL_Context->new($params);
    return $ctx ? ($ctx) : (undef, 'OpenSSL: ' . IO::Socket::SSL::errstr());
}

# OpenSSL's expansion of each cipher_list seen: the core's config is made
# several times (construction, listen, each worker), the answer never changes.
my %EXPANDED;

sub expand_cipher_list {
    my ($list) = @_;
    return @{ $EXPANDED{$list} //= [ _expand($list) ] };
}

sub _expand {
    my ($list) = @_;
    # A context of its own, without files: only the cipher string matters.
    my ($ctx, $err) = openssl_context({ SSL_server => 0, SSL_verify_mode => 0,
                                        SSL_cipher_list => $list });
    die "ssl.cipher_list '$list' cannot be read: $err\n" unless $ctx;
    require Net::SSLeay;
    my $s = Net::SSLeay::new($ctx->{context})
        or die "ssl.cipher_list '$list' cannot be read: OpenSSL cannot make a session\n";
    my (@names, $name);
    push @names, $name while defined($name = Net::SSLeay::get_cipher_list($s, scalar @names));
    Net::SSLeay::free($s);
    die "ssl.cipher_list '$list' selects no cipher\n" unless @names;
    return @names;
}

1;

__END__

=head1 NAME

PAGI::Server::TLS - the ssl option of PAGI::Server, checked and translated

=head1 SYNOPSIS

    PAGI::Server::TLS::check($ssl);                  # dies naming the key
    my @lines  = PAGI::Server::TLS::core_lines($ssl);
    my $params = PAGI::Server::TLS::openssl_params($ssl);

=head1 DESCRIPTION

L<PAGI::Server> serves TLS in its Rust core, with rustls. This module is
the Perl side of the C<ssl> option: it checks the settings when the server
is constructed, turns them into the core's configuration, and gives the
same settings as L<IO::Socket::SSL> parameters for code that wants the
OpenSSL view of them (L<PAGI::Server/_build_ssl_config>).

The core offers TLS 1.3 and TLS 1.2. C<cipher_list> is an OpenSSL cipher
string; OpenSSL (through IO::Socket::SSL, needed only when C<cipher_list>
is given) expands it into cipher names, and the core keeps, in that order,
the TLS 1.2 suites it has: ECDHE with AES-GCM or ChaCha20-Poly1305, for
RSA and ECDSA keys. As in OpenSSL, C<cipher_list> does not restrict TLS
1.3. A list that leaves no TLS 1.2 suite is an error unless C<min_version>
is C<TLSv1_3>.

=head1 FUNCTIONS

=over 4

=item check($ssl)

Dies with a message naming the key when a setting cannot work: a missing
or unreadable file, C<verify_client> without C<ca_file>, an unknown
C<min_version>. Warns about unknown keys and about a C<min_version> below
TLS 1.2.

=item core_lines($ssl)

The C<tls_*> configuration lines for the core. A C<cipher_list> is
expanded by OpenSSL here.

=item openssl_params($ssl)

The settings as IO::Socket::SSL server parameters (C<SSL_cert_file>,
C<SSL_version> as a floor, C<SSL_cipher_list>, C<SSL_verify_mode>, ...).

=item openssl_context($params)

An C<IO::Socket::SSL::SSL_Context> made from such parameters, or C<undef>
and the reason.

=item expand_cipher_list($cipher_list)

The OpenSSL names of the ciphers C<cipher_list> selects, most preferred
first; dies naming C<ssl.cipher_list> when OpenSSL matches none.

=back

=cut
