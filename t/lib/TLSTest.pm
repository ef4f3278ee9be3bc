package TLSTest;

# Test helper for the TLS tests: a PAGI::Server run in a forked child (so
# the test can use blocking clients: IO::Socket::SSL, curl, raw sockets),
# an app that answers with what its scope says about the connection, and
# clients whose every wait is bounded in time. Every child started is
# stopped by PID, and killed at the end if a test dies first (commands run
# by run_cmd through ProcTest).

use strict;
use warnings;

use Exporter 'import';
use Errno qw(EAGAIN EWOULDBLOCK EINTR);
use File::Spec;
use File::Temp qw(tempdir);
use Future::AsyncAwait;
use IO::Select;
use IO::Socket::INET;
use IO::Socket::SSL;
use JSON::PP ();
use POSIX qw(WNOHANG);
use ProcTest qw(start_cmd finish_cmd slurp);
use Test2::API qw(context);
use Test2::Tools::Basic qw(ok diag);
use Test2::Tools::Compare qw(is);
use Time::HiRes qw(sleep time);

our @EXPORT_OK = qw(
    serve serve_ok stop_server stopped_ok server_log wait_log tls_connect read_until read_all
    parse_response tls_get raw_exchange run_cmd iana_of facts_of
);

my $MAIN = $$;
my $TMP  = tempdir(CLEANUP => 1);
my %CHILD;    # pid => 1 until reaped

our %TLS_KEYS = map { $_ => 1 }
    qw(server_cert client_cert_chain client_cert_name client_cert_error tls_version cipher_suite);

# IANA numbers of the suites an OpenSSL client may report.
my %IANA = (
    TLS_AES_128_GCM_SHA256        => 0x1301,
    TLS_AES_256_GCM_SHA384        => 0x1302,
    TLS_CHACHA20_POLY1305_SHA256  => 0x1303,
    'ECDHE-ECDSA-AES128-GCM-SHA256' => 0xc02b,
    'ECDHE-ECDSA-AES256-GCM-SHA384' => 0xc02c,
    'ECDHE-ECDSA-CHACHA20-POLY1305' => 0xcca9,
    'ECDHE-RSA-AES128-GCM-SHA256'   => 0xc02f,
    'ECDHE-RSA-AES256-GCM-SHA384'   => 0xc030,
    'ECDHE-RSA-CHACHA20-POLY1305'   => 0xcca8,
);
sub iana_of { my ($name) = @_; return defined $name ? $IANA{$name} : undef }

my $JSON = JSON::PP->new->canonical;

# The app: answers every request (and WebSocket) with JSON facts about its
# scope. /slow?s=N waits N seconds first; /echo answers with the request
# body twice (chunked).
sub app {
    return async sub {
        my ($scope, $receive, $send) = @_;
        return unless $scope->{type} eq 'http' || $scope->{type} eq 'websocket';
        my $ext = $scope->{extensions} || {};
        my $facts = {
            type    => $scope->{type},
            scheme  => $scope->{scheme},
            version => $scope->{http_version},
            has_tls => exists $ext->{tls} ? 1 : 0,
            tls     => $ext->{tls},
            pid     => $$,
        };
        if ($scope->{type} eq 'websocket') {
            await $receive->();    # websocket.connect
            await $send->({ type => 'websocket.accept' });
            await $send->({ type => 'websocket.send', text => $JSON->encode($facts) });
            await $send->({ type => 'websocket.close', code => 1000 });
            return;
        }
        my $in = '';
        while (1) {
            my $ev = await $receive->();
            $in .= $ev->{body} // '';
            last unless $ev->{type} eq 'http.request' && $ev->{more};
        }
        if ($scope->{path} eq '/echo') {    # the request body back, twice over
            await $send->({ type => 'http.response.start', status => 200,
                headers => [ [ 'content-type', 'application/octet-stream' ] ] });
            await $send->({ type => 'http.response.body', body => $in, more => 1 });
            await $send->({ type => 'http.response.body', body => $in });
            return;
        }
        if ($scope->{path} eq '/slow') {
            my ($s) = ($scope->{query_string} // '') =~ /s=([0-9.]+)/;
            require IO::Async::Loop;
            await IO::Async::Loop->new->delay_future(after => $s // 2);
        }
        my $body = $JSON->encode($facts);
        await $send->({ type => 'http.response.start', status => 200,
            headers => [ [ 'content-type', 'application/json' ], [ 'content-length', length $body ] ] });
        await $send->({ type => 'http.response.body', body => $body });
    };
}

# serve(%opts): a PAGI::Server (host 127.0.0.1, port 0, quiet, no access
# log, lifespan off, the app above, then %opts) listening in a forked
# child. Returns { pid, port, log } (log: the child's STDERR), or
# { error => message } when construction or listen failed.
sub serve {
    my (%opts) = @_;
    my $log = File::Spec->catfile($TMP, 'server.' . int(rand 1e9) . '.log');
    pipe(my $r, my $w) or die "pipe: $!";
    my $pid = fork // die "fork: $!";
    if (!$pid) {
        close $r;
        open STDIN,  '<', '/dev/null' or POSIX::_exit(127);
        open STDERR, '>', $log        or POSIX::_exit(127);
        open STDOUT, '>&', \*STDERR   or POSIX::_exit(127);
        my $ok = eval {
            require IO::Async::Loop;
            require PAGI::Server;
            my $loop = IO::Async::Loop->new;
            my $server = PAGI::Server->new(
                ($opts{listen} ? () : (host => '127.0.0.1', port => 0)),
                quiet         => 1,
                access_log    => undef,
                lifespan_mode => 'off',
                app           => app(),
                %opts,
            );
            $loop->add($server);
            $server->listen->get;
            syswrite $w, 'port ' . ($server->port // 0) . "\n";
            close $w;
            $loop->run;    # until SIGTERM: the server stops the loop
            1;
        };
        unless ($ok) {
            (my $e = "$@") =~ s/\n/ /g;
            syswrite $w, "error $e\n";
            POSIX::_exit(1);
        }
        POSIX::_exit(0);
    }
    close $w;
    $CHILD{$pid} = 1;
    my $line = '';
    my $sel = IO::Select->new($r);
    my $deadline = time + 15;
    while ($line !~ /\n/ && (my $left = $deadline - time) > 0) {
        last unless $sel->can_read($left);
        my $n = sysread $r, $line, 4096, length $line;
        last unless $n;
    }
    close $r;
    if ($line =~ /^port ([0-9]+)/) {
        return { pid => $pid, port => $1, log => $log };
    }
    _reap($pid, 5) // do { kill KILL => $pid; _reap($pid, 5) };
    chomp $line;
    $line =~ s/^error //;
    return { error => length $line ? $line : 'no port from the server child: ' . server_log({ log => $log }) };
}

sub _reap {
    my ($pid, $secs) = @_;
    my $deadline = time + $secs;
    while (1) {
        if (waitpid($pid, WNOHANG) == $pid) {
            delete $CHILD{$pid};
            return $?;
        }
        return undef if time >= $deadline;
        sleep 0.05;
    }
}

# Stops a server from serve() with SIGTERM; returns its wait status (0 for
# a clean exit), or 'killed' when it had to be killed after 10 s.
sub stop_server {
    my ($srv) = @_;
    my $pid = $srv->{pid} or return undef;
    kill TERM => $pid;
    my $st = _reap($pid, 10);
    return $st if defined $st;
    kill KILL => $pid;
    _reap($pid, 5);
    return 'killed';
}

# serve_ok($name, %opts): serve(%opts) and a test that the server came up
# ("$name: server is up"; the error as a diagnostic when not). Returns what
# serve() returned.
sub serve_ok {
    my ($name, %opts) = @_;
    my $srv = serve(%opts);
    my $ctx = context();
    ok(!$srv->{error}, "$name: server is up") or diag($srv->{error});
    $ctx->release;
    return $srv;
}

# stopped_ok($srv, $name): stops a server from serve_ok() and tests that it
# exited 0 on SIGTERM (its log as a diagnostic when not), within 5 s. No
# test when the server never started.
sub stopped_ok {
    my ($srv, $name) = @_;
    return unless $srv->{pid};
    my $ctx = context();
    my $t0 = time;
    is(stop_server($srv), 0, "$name: server stopped cleanly by SIGTERM") or diag(server_log($srv));
    ok(time - $t0 < 5, "$name: ... within 5 s");
    $ctx->release;
    return;
}

sub server_log { my ($srv) = @_; return slurp($srv->{log}) }

# Waits (at most $secs) until the server's log matches $re (a regex, or a
# sub given the log text).
sub wait_log {
    my ($srv, $re, $secs) = @_;
    my $deadline = time + ($secs // 3);
    my $test = ref $re eq 'CODE' ? $re : sub { $_[0] =~ $re };
    while (1) {
        return 1 if $test->(server_log($srv));
        return 0 if time >= $deadline;
        sleep 0.05;
    }
}

# A TLS client on 127.0.0.1:$port (the name checked is localhost; pass
# SSL_ca_file, or SSL_verify_mode => SSL_VERIFY_NONE). Returns the socket,
# or undef and the reason.
sub tls_connect {
    my ($port, %o) = @_;
    my $s = IO::Socket::SSL->new(
        PeerHost            => '127.0.0.1',
        PeerPort            => $port,
        Timeout             => 5,
        SSL_hostname        => 'localhost',
        SSL_verifycn_name   => 'localhost',
        SSL_verifycn_scheme => 'http',
        SSL_verify_mode     => SSL_VERIFY_PEER,
        %o,
    );
    return $s if $s;
    return (undef, ($IO::Socket::SSL::SSL_ERROR || "$!"));
}

# Reads from $sock (TLS or plain) until $cond->($buf) holds, EOF, an error
# or $secs pass. Returns ($buf, $end): $end is 'match', 'eof', 'timeout'
# or the error.
sub read_until {
    my ($sock, $secs, $cond) = @_;
    my $buf = '';
    my $deadline = time + $secs;
    my $tls = $sock->isa('IO::Socket::SSL');
    $sock->blocking(0);
    while (1) {
        return ($buf, 'match') if $cond && $cond->($buf);
        my $n = sysread $sock, my $chunk, 65536;
        if (defined $n) {
            return ($buf, 'eof') if $n == 0;
            $buf .= $chunk;
            next;
        }
        my $left = $deadline - time;
        return ($buf, 'timeout') if $left <= 0;
        if ($tls && $IO::Socket::SSL::SSL_ERROR == SSL_WANT_WRITE) {
            IO::Select->new($sock)->can_write($left);
        }
        elsif (($tls && $IO::Socket::SSL::SSL_ERROR == SSL_WANT_READ)
            || $! == EAGAIN || $! == EWOULDBLOCK || $! == EINTR) {
            IO::Select->new($sock)->can_read($left);
        }
        else {
            return ($buf, ($tls && $IO::Socket::SSL::SSL_ERROR) ? "$IO::Socket::SSL::SSL_ERROR" : "$!");
        }
    }
}

sub read_all { my ($sock, $secs) = @_; return read_until($sock, $secs) }

# Status, head and body (de-chunked) of an HTTP/1.x response read to its
# end (undef unless one is there).
sub parse_response {
    my ($buf) = @_;
    return undef unless defined $buf && $buf =~ m{\AHTTP/1\.[01] ([0-9]{3})[^\r\n]*\r\n(.*?)\r\n\r\n(.*)\z}s;
    my $r = { status => $1, head => $2, body => $3 };
    if ($r->{head} =~ /^transfer-encoding:[ \t]*chunked[ \t]*\r?$/mi) {
        my ($rest, $body) = ($r->{body}, '');
        while ($rest =~ s/\A([0-9a-fA-F]+)[^\r\n]*\r\n//) {
            my $n = hex $1;
            last if $n == 0 || length $rest < $n;
            $body .= substr($rest, 0, $n, '');
            $rest =~ s/\A\r\n//;
        }
        $r->{body} = $body;
    }
    return $r;
}

# The JSON facts the app answered with (undef when the body is no JSON).
sub facts_of {
    my ($r) = @_;
    return undef unless $r && $r->{status} == 200;
    return eval { $JSON->decode($r->{body}) };
}

# One GET over a new TLS connection. Returns a hash: error (connect
# failure), sock_version (0x0303/0x0304), cipher (OpenSSL name), raw,
# end, response (parsed) and facts.
sub tls_get {
    my ($port, $path, %o) = @_;
    my ($s, $err) = tls_connect($port, %o);
    return { error => $err } unless $s;
    my %r = (sock_version => $s->get_sslversion_int, cipher => $s->get_cipher);
    my $req = "GET $path HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
    # A peer that rejects us after its handshake may have closed already.
    local $SIG{PIPE} = 'IGNORE';
    my $wrote = $s->syswrite($req);
    ($r{raw}, $r{end}) = read_all($s, 8);
    $r{write_error} = defined $wrote && $wrote == length $req ? undef : ($IO::Socket::SSL::SSL_ERROR || "$!");
    $r{response} = parse_response($r{raw});
    $r{facts} = facts_of($r{response});
    $s->close(SSL_fast_shutdown => 1);
    return \%r;
}

# Plain TCP: connects, sends $bytes (may be ''), reads until EOF or $secs.
# Returns ($buf, $end, $elapsed) or (undef, connect error).
sub raw_exchange {
    my ($port, $bytes, $secs) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $port, Proto => 'tcp', Timeout => 5)
        or return (undef, "connect: $!");
    my $t0 = time;
    local $SIG{PIPE} = 'IGNORE';
    syswrite $s, $bytes if length $bytes;
    my ($buf, $end) = read_all($s, $secs);
    close $s;
    return ($buf, $end, time - $t0);
}

# Runs a command (no shell) for at most $secs; returns (wait status or
# 'timeout', stdout, stderr).
sub run_cmd {
    my ($secs, @cmd) = @_;
    return finish_cmd(start_cmd(argv => \@cmd), $secs);
}

END {
    local ($!, $?);
    if ($$ == $MAIN) {
        for my $pid (keys %CHILD) {
            kill KILL => $pid;
            waitpid $pid, 0;
        }
    }
}

1;
