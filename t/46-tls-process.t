use strict;
use warnings;

# TLS from the command line and in multi-worker mode: pagi-server
# --ssl-cert/--ssl-key serves HTTPS and says so in its banner; one flag
# without the other is refused; with --workers 2 every worker serves TLS
# (and HTTP/2 with http2 => 1) and none is left after shutdown. Certificates are made for this run with
# openssl. Every process is started and stopped by PID (ProcTest).

use Test2::V0;
use FindBin;
use lib "$FindBin::Bin/lib";
use TestCerts;

BEGIN {
    my $why = TestCerts::skip_reason();
    skip_all($why) if $why;
}
use IO::Socket::SSL;
use JSON::PP ();
use ProcTest qw(spawn_cli reap wait_until children_of alive slurp listening_port
                write_file tmpdir log_lines how_it_ended http_get);
use TLSTest qw(tls_get run_cmd serve stop_server server_log);

$SIG{PIPE} = 'IGNORE';
$SIG{ALRM} = sub { die "46-tls-process.t: overall time limit reached\n" };
alarm 90;

my $certs = TestCerts::make(tmpdir(), qw(rsa));
my %trust = (SSL_ca_file => $certs->{ca_cert});
my @ssl_args = ('--ssl-cert', $certs->{rsa_cert}, '--ssl-key', $certs->{rsa_key});
my $APP = write_file('app.pl', "use ProcApp; ProcApp::app();\n");

subtest 'pagi-server --ssl-cert --ssl-key serves HTTPS' => sub {
    my $log = tmpdir() . '/cli.log';
    my $p = spawn_cli(env => { T_LOG => $log }, args => [ @ssl_args, '-p', 0, $APP ]);
    my $port = listening_port($p->{err}, 15);
    ok($port, 'the banner says "listening on https://HOST:PORT/"') or diag(slurp($p->{err}));
    if ($port) {
        like(slurp($p->{err}), qr/tls: on/, 'and "tls: on"');
        my $r = tls_get($port, '/hello', %trust);
        is($r->{response} && $r->{response}{status}, 200, 'an IO::Socket::SSL client gets 200')
            or diag($r->{error} // $r->{raw});
        like($r->{response} && $r->{response}{body}, qr{^done /hello $p->{pid}$}, 'from the app in that process');

        my ($st, $out, $err) = run_cmd(20, 'curl', '-sS', '--max-time', 10, '--cacert', $certs->{ca_cert},
            '--resolve', "localhost:$port:127.0.0.1", "https://localhost:$port/curl");
        is($st, 0, 'curl verifies the server and succeeds') or diag($err);
        is($out, "done /curl $p->{pid}", 'curl reads the body');

        my $plain = http_get($port, '/plain', 3);
        unlike($plain, qr{^HTTP/1\.[01] 200}, 'plain HTTP on that port gets no 200');
    }
    kill TERM => $p->{pid};
    my $status = reap($p->{pid}, 15);
    is(how_it_ended($status), 'exit 0', 'SIGTERM stops it cleanly');
    ok(!alive($p->{pid}), 'the server process is gone');
};

subtest 'one TLS flag without the other is refused' => sub {
    for my $args ([ '--ssl-cert', $certs->{rsa_cert} ], [ '--ssl-key', $certs->{rsa_key} ]) {
        my $p = spawn_cli(args => [ @$args, '-p', 0, $APP ]);
        my $status = reap($p->{pid}, 20);
        my $how = how_it_ended($status);
        like($how, qr/^exit [1-9]/, "$args->[0] alone: exits non-zero") or diag($how);
        like(slurp($p->{err}), qr/--ssl-cert and --ssl-key must be given together/,
            '... with a message naming both flags') or diag(slurp($p->{err}));
        unlike(slurp($p->{err}), qr/listening on/, '... without ever listening');
        if (!defined $status) {
            kill KILL => $p->{pid};
            reap($p->{pid}, 5);
        }
    }
};

subtest 'workers => 2 with ssl: every worker serves TLS' => sub {
    my $log = tmpdir() . '/workers.log';
    my $p = spawn_cli(env => { T_LOG => $log }, args => [ @ssl_args, '-w', 2, '-p', 0, $APP ]);
    my $port = listening_port($p->{err}, 15);
    ok($port, 'the master listens on https://') or diag(slurp($p->{err}));
    ok(wait_until(15, sub { log_lines($log, 'startup') == 2 }), 'both workers started')
        or diag(slurp($p->{err}));
    my @workers = children_of($p->{pid});
    is(scalar @workers, 2, 'two worker processes');
    my %is_worker = map { $_ => 1 } @workers;
    if ($port) {
        my (%served_by, $ok);
        for my $i (1 .. 8) {
            my $r = tls_get($port, "/r$i", %trust);
            my ($pid) = ($r->{response} && $r->{response}{body} // '') =~ m{^done /r$i ([0-9]+)$};
            $ok++ if $r->{response} && $r->{response}{status} == 200 && $pid;
            $served_by{ $pid // 'none' }++;
        }
        is($ok, 8, 'eight HTTPS requests answered') or diag(join ' ', %served_by);
        is([ grep { !$is_worker{$_} } keys %served_by ], [], 'each by one of the workers')
            or diag(join ' ', %served_by);
        note('requests per worker: ' . join(', ', map { "$_=" . ($served_by{$_} // 0) } @workers));
    }
    kill TERM => $p->{pid};
    my $status = reap($p->{pid}, 20);
    is(how_it_ended($status), 'exit 0', 'the master exits cleanly on SIGTERM');
    ok(wait_until(5, sub { !grep { alive($_) } @workers }), 'no worker process remains')
        or diag('still alive: ' . join ' ', grep { alive($_) } @workers);
    is(scalar(log_lines($log, 'shutdown')), 2, 'both workers ran lifespan shutdown');
};

subtest 'PAGI::Server->new(workers => 2, ssl => {...})' => sub {
    my $srv = serve(workers => 2, ssl => { cert_file => $certs->{rsa_cert}, key_file => $certs->{rsa_key} });
    ok(!$srv->{error}, 'the master is up') or return diag($srv->{error});
    my @workers;
    ok(wait_until(10, sub { (@workers = children_of($srv->{pid})) == 2 }), 'two workers');
    my $ok = 0;
    for my $i (1 .. 4) {
        my $r = tls_get($srv->{port}, "/w$i", %trust);
        $ok++ if $r->{facts} && $r->{facts}{scheme} eq 'https' && grep { $_ == $r->{facts}{pid} } @workers;
    }
    is($ok, 4, 'four HTTPS requests answered by workers, scheme https');
    is(stop_server($srv), 0, 'the master stops cleanly on SIGTERM') or diag(server_log($srv));
    ok(wait_until(5, sub { !grep { alive($_) } @workers }), 'no worker process remains')
        or diag('still alive: ' . join ' ', grep { alive($_) } @workers);
};

subtest 'workers => 2 with http2 and ssl: every worker serves h2' => sub {
    my ($curl) = run_cmd(10, 'curl', '--version');
    skip_all('curl is not installed') unless $curl eq '0';
    my $srv = serve(workers => 2, http2 => 1,
        ssl => { cert_file => $certs->{rsa_cert}, key_file => $certs->{rsa_key} });
    ok(!$srv->{error}, 'the master is up') or return diag($srv->{error});
    my @workers;
    ok(wait_until(10, sub { (@workers = children_of($srv->{pid})) == 2 }), 'two workers');
    my %is_worker = map { $_ => 1 } @workers;
    my ($ok, @got) = (0);
    for my $i (1 .. 4) {
        my ($st, $out) = run_cmd(15, 'curl', '-sS', '--max-time', 10, '--http2',
            '--cacert', $certs->{ca_cert}, "https://localhost:$srv->{port}/h$i",
            '--resolve', "localhost:$srv->{port}:127.0.0.1");
        my $f = eval { JSON::PP->new->decode($out) } || {};
        push @got, ($f->{version} // '?') . '@' . ($f->{pid} // '?');
        $ok++ if ($f->{version} // '') eq '2' && $is_worker{ $f->{pid} // 0 };
    }
    is($ok, 4, 'four requests over h2 (ALPN), each answered by a worker') or diag("@got");
    is(stop_server($srv), 0, 'the master stops cleanly on SIGTERM') or diag(server_log($srv));
    ok(wait_until(5, sub { !grep { alive($_) } @workers }), 'no worker process remains')
        or diag('still alive: ' . join ' ', grep { alive($_) } @workers);
};

done_testing;
