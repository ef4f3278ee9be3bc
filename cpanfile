# Runtime and test dependencies (Debian: lib*-perl packages of the same names).
requires 'perl', '5.018';
requires 'IO::Async', '0.802';
requires 'Future', '0.49';
requires 'Future::AsyncAwait', '0.63';
requires 'URI::Escape';
# Reads the ssl option's cipher_list (an OpenSSL cipher string); TLS itself
# is served by the Rust core.
recommends 'IO::Socket::SSL';

on 'test' => sub {
    requires 'Test2::V0';
    requires 'Net::Async::HTTP';
    requires 'Future::IO';
    requires 'JSON::MaybeXS';
    requires 'IO::Socket::SSL';
};

on 'configure' => sub {
    requires 'ExtUtils::MakeMaker', '6.64';
};
