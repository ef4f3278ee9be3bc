use strict;
use warnings;
use Test2::V0;

use FindBin;
use lib "$FindBin::Bin/lib";

use H2Py;
use IO::Async::Loop;
use Future::AsyncAwait;
use Time::HiRes qw(time);
use RawHTTP qw(start_server pump_until stream_of);

# The events of an SSE scope, over HTTP/1.1 (a raw socket) and HTTP/2 (the
# h2 client, h2c) against one server on this process's loop: which
# requests get an sse scope and how sse.request delivers their body;
# sse.start's headers; sse.send's framing and the fields that make $send
# die; sse.close (the end at once, a repeat ignored, any later send dying,
# its reason kept off the wire); declining with sse.http.response.* (first
# send wins, either way round); a return ending the stream; the client
# going away. Each route reports what its app saw in %seen.

$SIG{ALRM} = sub { die "63-sse-events.t: overall time limit reached\n" };
alarm 120;

my $loop = IO::Async::Loop->new;
my (%route, %seen, %hold);

my @warnings;
$SIG{__WARN__} = sub { push @warnings, $_[0] };

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    my ($name) = $scope->{path} =~ m{\A/([^/?]+)};
    my $r = $route{ $name // '' };
    unless ($r) {
        await $send->({ type => 'http.response.start', status => 404, headers => [] });
        await $send->({ type => 'http.response.body', body => '' });
        return;
    }
    await $r->($scope, $receive, $send, $name);
};

# Runs $code, returning '' when it lived and its error when it died.
async sub raised {
    my ($code) = @_;
    my $ok = eval { await $code->(); 1 };
    return $ok ? '' : "$@";
}

# What the app got from $receive until the body was complete.
async sub read_body {
    my ($receive) = @_;
    my @ev;
    while (1) {
        my $ev = await $receive->();
        push @ev, $ev;
        last unless $ev->{type} eq 'sse.request' && $ev->{more};
    }
    return \@ev;
}

$route{scope} = async sub {
    my ($scope, $receive, $send, $name) = @_;
    if ($scope->{type} ne 'sse') {
        await $send->({ type => 'http.response.start', status => 200, headers => [['content-type', 'text/plain']] });
        await $send->({ type => 'http.response.body', body => "type=$scope->{type}" });
        return;
    }
    my $ev = await read_body($receive);
    my $body = join '', map { $_->{body} // '' } @$ev;
    my $types = join ',', map { $_->{type} . ($_->{more} ? '+' : '') } @$ev;
    await $send->({ type => 'sse.start' });
    await $send->({ type => 'sse.send', data => "type=sse method=$scope->{method} events=$types body=$body" });
};

$route{'headers-default'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->({ type => 'sse.start' });
    await $send->({ type => 'sse.send', data => 'x' });
};

$route{'headers-own'} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->({ type => 'sse.start', status => 201, headers => [
        ['Content-Type', 'text/event-stream; charset=utf-8'], ['Cache-Control', 'no-store'], ['x-own', 'yes'] ] });
    await $send->({ type => 'sse.send', data => 'x' });
};

$route{format} = async sub {
    my ($scope, $receive, $send, $name) = @_;
    await $send->({ type => 'sse.start' });
    await $send->({ type => 'sse.send', event => 'tick', id => '7', retry => 3000, data => "a\nb\r\nc\rd" });
    await $send->({ type => 'sse.send', data => "caf\x{e9} \x{263a}" });
    await $send->({ type => 'sse.send', data => "trail\n" });
    await $send->({ type => 'sse.send', data => '' });
    await $send->({ type => 'sse.send', retry => 500 });
    my @bad = (
        { event => "x\ny" }, { event => "x\ry" }, { id => "1\r\n2" }, { id => "3\n" },
        { retry => '1.5' }, { retry => 'soon' }, { retry => -1 },
    );
    my @errs;
    for my $b (@bad) {
        push @errs, await raised(sub { $send->({ type => 'sse.send', data => 'BAD', %$b }) });
    }
    $seen{$name} = \@errs;
    await $send->({ type => 'sse.send', data => 'after' });
};

$route{close} = async sub {
    my ($scope, $receive, $send, $name) = @_;
    my $s = $seen{$name} = {};
    await $send->({ type => 'sse.start' });
    await $send->({ type => 'sse.send', data => 'one' });
    my $plain = ($scope->{query_string} // '') eq 'plain';
    await $send->({ type => 'sse.close', ($plain ? () : (reason => 'done_here')) });
    $s->{again} = await raised(sub { $send->({ type => 'sse.close' }) });
    $s->{send} = await raised(sub { $send->({ type => 'sse.send', data => 'LATE' }) });
    $s->{comment} = await raised(sub { $send->({ type => 'sse.comment', comment => 'LATE' }) });
    $s->{keepalive} = await raised(sub { $send->({ type => 'sse.keepalive', interval => 1 }) });
    $s->{start} = await raised(sub { $send->({ type => 'sse.start' }) });
    my $ev = await $receive->();
    $s->{request} = $ev->{type};
    $ev = await $receive->();
    $s->{receive} = "$ev->{type} " . ($ev->{reason} // '');
    await $hold{$name};
    $s->{returned} = 1;
};

$route{decline} = async sub {
    my ($scope, $receive, $send, $name) = @_;
    my ($status) = ($scope->{query_string} // '') =~ /status=(\d+)/;
    my $s = $seen{$name} = {};
    $s->{bad_header} = await raised(sub { $send->({ type => 'sse.http.response.start', status => 404,
        headers => [['x-bad', "a\r\nb"]] }) });
    $s->{body_first} = await raised(sub { $send->({ type => 'sse.http.response.body', body => 'x' }) });
    await $send->({ type => 'sse.http.response.start', status => $status // 404,
        headers => [['content-type', 'text/plain'], ['x-why', 'no-such-stream']] });
    $s->{second_start} = await raised(sub { $send->({ type => 'sse.http.response.start', status => 500 }) });
    for my $try ([ send => { type => 'sse.send', data => 'LATE' } ],
                 [ start => { type => 'sse.start' } ],
                 [ keepalive => { type => 'sse.keepalive', interval => 1 } ],
                 [ comment => { type => 'sse.comment', comment => 'x' } ],
                 [ close => { type => 'sse.close' } ]) {
        $s->{ $try->[0] } = await raised(sub { $send->($try->[1]) });
    }
    if (($status // 404) == 204) {
        await $send->({ type => 'sse.http.response.body' });
    }
    else {
        await $send->({ type => 'sse.http.response.body', body => 'No such ', more => 1 });
        await $send->({ type => 'sse.http.response.body', body => 'stream', more => 0 });
    }
};

$route{'stream-then-decline'} = async sub {
    my ($scope, $receive, $send, $name) = @_;
    my $s = $seen{$name} = {};
    await $send->({ type => 'sse.start' });
    $s->{start} = await raised(sub { $send->({ type => 'sse.http.response.start', status => 404, headers => [] }) });
    $s->{body} = await raised(sub { $send->({ type => 'sse.http.response.body', body => 'x' }) });
    await $send->({ type => 'sse.send', data => 'still streaming' });
};

$route{return} = async sub {
    my ($scope, $receive, $send) = @_;
    await $send->({ type => 'sse.start' });
    await $send->({ type => 'sse.send', data => 'R' });
    return;
};

$route{gone} = async sub {
    my ($scope, $receive, $send, $name) = @_;
    await $send->({ type => 'sse.start' });
    await $send->({ type => 'sse.send', data => 'open' });
    my $ev = await $receive->();
    while ($ev->{type} eq 'sse.request') {
        $ev = await $receive->();
    }
    my $after = await raised(sub { $send->({ type => 'sse.send', data => 'after' }) });
    $seen{$name} = { type => $ev->{type}, reason => $ev->{reason}, send_after => $after };
};

my $server = start_server($loop, app => $app, http2 => 1, shutdown_timeout => 5);
my $port = $server->port;
my $h2_why = H2Py::skip_reason();

# ------------------------------------------------------------- clients

# One SSE request over HTTP/1.1. %o: method, body, accept (default
# text/event-stream; undef for none), chunks (a body sent chunked, in
# these pieces), close_after (seconds: the client closes then).
# Returns { status, headers => { lc name => value }, body, terminated,
# eof, raw }.
sub fetch_h1 {
    my ($path, %o) = @_;
    my $method = $o{method} // 'GET';
    my $accept = exists $o{accept} ? $o{accept} : 'text/event-stream';
    my $c = RawHTTP->new(loop => $loop, port => $port);
    my $req = "$method $path HTTP/1.1\r\nHost: x\r\n";
    $req .= "Accept: $accept\r\n" if defined $accept;
    $req .= 'Content-Length: ' . length($o{body}) . "\r\n" if defined $o{body};
    $req .= "Transfer-Encoding: chunked\r\n" if $o{chunks};
    $c->write("$req\r\n" . ($o{body} // ''));
    for my $piece (@{ $o{chunks} || [] }) {
        $c->wait_for(0.2, sub { 0 });
        $c->write(sprintf("%x\r\n%s\r\n", length $piece, $piece));
    }
    $c->write("0\r\n\r\n") if $o{chunks};
    if ($o{close_after}) {
        $c->wait_for($o{close_after}, sub { 0 });
        $c->close;
        return { raw => $c->{buf} };
    }
    $c->wait_close($o{secs} // 5);
    my ($status, $body, $done) = stream_of($c->{buf});
    my %h;
    my ($head) = split /\r\n\r\n/, $c->{buf}, 2;
    for (split /\r\n/, $head // '') {
        $h{ lc $1 } = $2 if /\A([^:]+):\s*(.*)\z/;
    }
    # A response with a length (a declined stream) is not chunked.
    $body = substr($c->{buf}, length($head) + 4) if defined $h{'content-length'};
    return { status => $status, headers => \%h, body => $body, terminated => $done,
             eof => $c->{eof} ? 1 : 0, raw => $c->{buf} };
}

# The same over HTTP/2 (h2c). Returns { status, headers, body, ending,
# client } (ending: 'end' for END_STREAM, 'reset N', or '').
sub fetch_h2 {
    my ($path, %o) = @_;
    my @args = ('--port', $port, '--timeout', 10, 'sse', '--path', $path, '--duration', $o{duration} // 4);
    push @args, '--method', $o{method} if $o{method};
    push @args, '--body', $o{body} if defined $o{body};
    push @args, '--reset-after', $o{reset_after} if $o{reset_after};
    my $c = H2Py->run($loop, \@args);
    my ($sid) = $c->streams('sse');
    return { status => $c->status($sid), headers => $c->headers($sid), body => scalar $c->data($sid),
             ending => $c->ending($sid), client => $c, done => $c->done };
}

sub each_protocol {
    my ($what, $code) = @_;
    subtest "HTTP/1.1: $what" => sub { $code->('h1', \&fetch_h1) };
    SKIP: {
        skip "HTTP/2: $h2_why", 1 if $h2_why;
        subtest "HTTP/2: $what" => sub { $code->('h2', \&fetch_h2) };
    }
}

# The stream ended properly: the terminating chunk and a close (HTTP/1.1),
# END_STREAM (HTTP/2).
sub ended_ok {
    my ($proto, $r, $what) = @_;
    if ($proto eq 'h1') {
        ok($r->{terminated} && $r->{eof}, "$what: terminating chunk, then the connection closed")
            or diag("got: $r->{raw}");
    }
    else {
        is($r->{ending}, 'end', "$what: END_STREAM") or diag($r->{client}->output);
    }
}

# --------------------------------------------------------------- tests

each_protocol('which requests are sse, and sse.request delivers the body' => sub {
    my ($proto, $fetch) = @_;
    my $r = $fetch->('/scope');
    is($r->{status}, 200, 'GET with Accept: text/event-stream streams');
    is($r->{body}, "data: type=sse method=GET events=sse.request body=\n\n",
        'an sse scope; one sse.request, empty and final, for a bodyless GET');
    for my $m (qw(POST PUT)) {
        $r = $fetch->('/scope', method => $m, body => qq({"q":"$m"}));
        is($r->{body}, qq(data: type=sse method=$m events=sse.request body={"q":"$m"}\n\n),
            "$m: an sse scope, its body in sse.request events");
    }
    if ($proto eq 'h1') {
        $r = $fetch->('/scope', method => 'POST', chunks => [ 'one ', 'two ', 'three' ]);
        like($r->{body}, qr/\Adata: type=sse method=POST events=(sse\.request\+,)+sse\.request body=one two three\n\n\z/,
            'a chunked body in several sse.request events (more => 1 until the last)');
        $r = $fetch->('/scope', accept => 'text/html, Text/Event-Stream;q=0.9');
        like($r->{body}, qr/type=sse/, 'the media type anywhere in Accept, any case');
        $r = $fetch->('/scope', accept => 'text/html');
        is($r->{body}, 'type=http', 'no text/event-stream in Accept: an http scope');
        $r = $fetch->('/scope', accept => undef);
        is($r->{body}, 'type=http', 'no Accept: an http scope');
    }
});

each_protocol('sse.start supplies content-type and cache-control unless given' => sub {
    my ($proto, $fetch) = @_;
    my $r = $fetch->('/headers-default');
    is($r->{status}, 200, 'status 200 by default');
    is($r->{headers}{'content-type'}, 'text/event-stream', 'content-type: text/event-stream');
    is($r->{headers}{'cache-control'}, 'no-cache', 'cache-control: no-cache');
    ok($r->{headers}{date}, 'a date header');
    if ($proto eq 'h1') {
        like($r->{raw}, qr/\r\nTransfer-Encoding: chunked\r\n/i, 'chunked');
        like($r->{raw}, qr/\r\nConnection: close\r\n/i, 'Connection: close (the connection ends with the stream)');
    }
    $r = $fetch->('/headers-own');
    is($r->{status}, 201, "the app's status");
    is($r->{headers}{'content-type'}, 'text/event-stream; charset=utf-8', "the app's content-type, once");
    is($r->{headers}{'cache-control'}, 'no-store', "the app's cache-control, once");
    is($r->{headers}{'x-own'}, 'yes', "the app's other headers");
    if ($proto eq 'h1') {
        is(scalar(() = $r->{raw} =~ /^content-type:/mig), 1, 'one content-type line');
        is(scalar(() = $r->{raw} =~ /^cache-control:/mig), 1, 'one cache-control line');
    }
});

each_protocol('sse.send framing; a newline in event or id, or a bad retry, makes $send die' => sub {
    my ($proto, $fetch) = @_;
    %seen = ();
    my $r = $fetch->('/format');
    my $want = "event: tick\nid: 7\nretry: 3000\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
        . "data: caf\xc3\xa9 \xe2\x98\xba\n\n"
        . "data: trail\ndata: \n\n"
        . "data: \n\n"
        . "retry: 500\n\n"
        . "data: after\n\n";
    is($r->{body}, $want,
        'data split on LF, CRLF and CR; characters as UTF-8; empty data is one empty line, none without data; '
        . 'nothing of the bad sends')
        or diag($r->{raw} // $r->{client}->output);
    ended_ok($proto, $r, 'the app returned');
    my @errs = @{ $seen{format} || [] };
    is(scalar @errs, 7, 'every bad send was tried');
    like($errs[$_], qr/'event' must not contain newlines/, "event with a newline dies ($_)") for 0, 1;
    like($errs[$_], qr/'id' must not contain newlines/, "id with a newline dies ($_)") for 2, 3;
    like($errs[$_], qr/'retry' must be a non-negative integer/, "retry $_ dies") for 4 .. 6;
});

each_protocol('sse.close ends the stream at once; a repeat is ignored, any other send dies' => sub {
    my ($proto, $fetch) = @_;
    %seen = ();
    $hold{close} = $loop->new_future;
    my $r = $fetch->('/close');
    is($r->{body}, "data: one\n\n", 'the event before the close, and nothing after it');
    ended_ok($proto, $r, 'sse.close');
    my $s = $seen{close} // {};
    ok(!$s->{returned}, 'while the app had not returned');
    unlike($r->{raw} // $r->{client}->output, qr/done_here/, 'the reason is not on the wire');
    is($s->{again}, '', 'a second sse.close is ignored');
    like($s->{$_}, qr/cannot send 'sse\.\Q$_\E' after sse\.close/, "sse.$_ after sse.close dies")
        for qw(send comment keepalive start);
    is($s->{request}, 'sse.request', '$receive still yields the request first');
    is($s->{receive}, 'sse.disconnect done_here', 'then sse.disconnect with the reason');
    $hold{close}->done;
    pump_until($loop, 2, sub { $s->{returned} });
    ok($s->{returned}, 'the app returned afterwards, quietly');

    %seen = ();
    $hold{close} = Future->done;
    $r = $fetch->('/close?plain');
    ended_ok($proto, $r, 'sse.close without a reason');
    pump_until($loop, 2, sub { $seen{close} && $seen{close}{returned} });
    is($seen{close}{receive}, 'sse.disconnect client_closed', 'the reason is then client_closed');
});

each_protocol('declining: sse.http.response.* before sse.start' => sub {
    my ($proto, $fetch) = @_;
    %seen = ();
    my $r = $fetch->('/decline');
    is($r->{status}, 404, 'the status of sse.http.response.start');
    is($r->{body}, 'No such stream', 'the body of the sse.http.response.body events');
    is($r->{headers}{'content-type'}, 'text/plain', "the app's content-type, not text/event-stream");
    is($r->{headers}{'x-why'}, 'no-such-stream', "the app's headers");
    is($r->{headers}{'content-length'}, 14, 'a content-length');
    ok(!exists $r->{headers}{'cache-control'}, 'no SSE headers added');
    if ($proto eq 'h1') {
        ok($r->{eof}, 'the connection closed after it');
    }
    else {
        is($r->{ending}, 'end', 'END_STREAM');
    }
    my $s = $seen{decline} // {};
    like($s->{bad_header}, qr/sse\.http\.response\.start: header 'x-bad' has a value with CR, LF or NUL/,
        'a header with CR/LF makes sse.http.response.start die');
    like($s->{body_first}, qr/sse\.http\.response\.body sent before sse\.http\.response\.start/,
        'a body before the start dies');
    is($s->{second_start}, '', 'a second sse.http.response.start is ignored (the first wins)');
    like($s->{$_}, qr/cannot send 'sse\.\Q$_\E' after sse\.http\.response\.start/,
        "sse.$_ after the decline began dies") for qw(send start keepalive comment close);

    $r = $fetch->('/decline?status=204');
    is($r->{status}, 204, '204 (an EventSource stops reconnecting)');
    is($r->{body} // '', '', 'no body');
    ok($r->{eof}, 'the connection closed after it') if $proto eq 'h1';
    ok(!exists $r->{headers}{'content-length'}, 'no content-length on a 204');

    $r = $fetch->('/stream-then-decline');
    is($r->{status}, 200, 'after sse.start the stream goes on');
    is($r->{body}, "data: still streaming\n\n", 'the stream is unharmed');
    my $t = $seen{'stream-then-decline'} // {};
    like($t->{start}, qr/cannot send 'sse\.http\.response\.start' after sse\.start/, 'a decline after sse.start dies');
    like($t->{body}, qr/cannot send 'sse\.http\.response\.body' after sse\.start/, 'and so does its body');
});

each_protocol('returning ends the stream' => sub {
    my ($proto, $fetch) = @_;
    my $r = $fetch->('/return');
    is($r->{body}, "data: R\n\n", 'the event');
    ended_ok($proto, $r, 'the app returned');
});

each_protocol('the client going away: sse.disconnect client_closed, later sends are no-ops' => sub {
    my ($proto, $fetch) = @_;
    %seen = ();
    if ($proto eq 'h1') {
        my $r = fetch_h1('/gone', close_after => 0.5);
        like($r->{raw}, qr/data: open\n\n/, 'the stream was open');
    }
    else {
        my $r = fetch_h2('/gone', duration => 2, reset_after => 0.5);
        like($r->{body}, qr/\Adata: open\n\n/, 'the stream was open');
        like(join("\n", $r->{client}->lines), qr/^sent \d+ reset$/m, 'the client reset it');
    }
    pump_until($loop, 3, sub { $seen{gone} });
    is($seen{gone}, { type => 'sse.disconnect', reason => 'client_closed', send_after => '' },
        'the app saw sse.disconnect (client_closed); a send afterwards is a quiet no-op');
    if ($proto eq 'h2') {
        %seen = ();
        my $r = fetch_h2('/gone', duration => 0.5);
        like($r->{body}, qr/\Adata: open\n\n/, 'a stream was open');
        is($r->{ending}, '', 'when the client closed its connection');
        pump_until($loop, 3, sub { $seen{gone} });
        is($seen{gone} && $seen{gone}{reason}, 'client_closed', 'the app saw sse.disconnect (client_closed)');
    }
});

is([ grep { /PAGI application error/ } @warnings ], [], 'no app failed');

$server->shutdown->get;
$loop->remove($server);
done_testing;
