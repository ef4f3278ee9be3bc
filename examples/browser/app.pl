# A page that a browser loads from the server and that then talks back to
# it: a WebSocket echo on /ws and an EventSource on /events. The page's
# script writes what it saw (JSON) into <pre id="result"> and sets the title
# to "done"; t/63-browser.t runs headless Chromium against it. The script
# sets no timers of its own: headless Chromium's virtual time would fire
# them at once while it waits for the network.
#
#   pagi-server examples/browser/app.pl
#   pagi-server --http2 --ssl-cert cert.pem --ssl-key key.pem examples/browser/app.pl
#
# then open http://127.0.0.1:5000/ (or https://...) in a browser.
use strict;
use warnings;
use Future::AsyncAwait;

my $PAGE = <<'HTML';
<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>waiting</title></head>
<body>
<pre id="result"></pre>
<script>
const out = { page: performance.getEntriesByType('navigation')[0].nextHopProtocol, ws: {}, sse: [] };
const finish = () => {
  const json = JSON.stringify(out);
  document.getElementById('result').textContent = json;
  document.title = 'done';
  fetch('/result', { method: 'POST', body: json });
};
const wsDone = new Promise((resolve) => {
  const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws');
  ws.onopen = () => { out.ws.extensions = ws.extensions; ws.send('hello ' + 'x'.repeat(2000)); };
  ws.onmessage = (ev) => {
    out.ws.reply = ev.data.length > 80 ? ev.data.slice(0, 80) + '...(' + ev.data.length + ')' : ev.data;
    ws.close(1000, 'bye');
  };
  ws.onclose = (ev) => { out.ws.close = ev.code; resolve(); };
  ws.onerror = () => { out.ws.error = 'error'; };
});
const sseDone = new Promise((resolve) => {
  const es = new EventSource('/events');
  es.addEventListener('tick', (ev) => {
    out.sse.push(ev.data + '#' + ev.lastEventId);
    if (out.sse.length === 3) { es.close(); resolve(); }
  });
  es.onerror = () => { if (out.sse.length < 3) { out.sse.push('error'); } };
});
Promise.all([wsDone, sseDone]).then(finish);
</script>
</body>
</html>
HTML

my $app = async sub {
    my ($scope, $receive, $send) = @_;
    my $type = $scope->{type};
    die "no lifespan here\n" if $type eq 'lifespan';

    if ($type eq 'websocket') {
        my $ev = await $receive->();
        return unless $ev->{type} eq 'websocket.connect';
        await $send->({ type => 'websocket.accept' });
        while (1) {
            $ev = await $receive->();
            last if $ev->{type} ne 'websocket.receive';
            my $text = $ev->{text} // $ev->{bytes} // '';
            await $send->({ type => 'websocket.send', text => "echo over HTTP/$scope->{http_version}: $text" });
        }
        return;
    }

    if ($type eq 'sse') {
        await $send->({ type => 'sse.start', status => 200 });
        for my $n (1 .. 3) {
            await $send->({ type => 'sse.send', event => 'tick', data => "tick $n over HTTP/$scope->{http_version}", id => $n });
        }
        # The browser closes the stream once it has all three.
        while (1) {
            my $ev = await $receive->();
            last if $ev->{type} eq 'sse.disconnect';
        }
        return;
    }

    if ($scope->{path} eq '/result' && $scope->{method} eq 'POST') {
        my $got = '';
        while (1) {
            my $ev = await $receive->();
            last if $ev->{type} ne 'http.request';
            $got .= $ev->{body} // '';
            last unless $ev->{more};
        }
        $got =~ s/[\r\n]+/ /g;
        print STDERR "browser result: $got\n";
        await $send->({ type => 'http.response.start', status => 204, headers => [] });
        await $send->({ type => 'http.response.body', body => '' });
        return;
    }

    my ($status, $ctype, $body) = $scope->{path} eq '/'
        ? (200, 'text/html; charset=utf-8', $PAGE)
        : (404, 'text/plain', "not here\n");
    await $send->({ type => 'http.response.start', status => $status,
                    headers => [ [ 'content-type', $ctype ], [ 'content-length', length $body ] ] });
    await $send->({ type => 'http.response.body', body => $body });
};

$app;
