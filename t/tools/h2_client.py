#!/usr/bin/env python3
"""HTTP/2 test client for PAGI::Server's tests (hyper-h2).

Opens one HTTP/2 connection (h2c with prior knowledge, or TLS with ALPN h2
and no certificate check) to 127.0.0.1 and drives streams on it:

  ws   one or more RFC 8441 WebSockets (extended CONNECT), each running the
       same list of --step actions, plus optional plain GET streams
  sse  one GET with accept: text/event-stream (or --method with a --body),
       read for --duration seconds or until the stream ends

Output is one event per line, flushed at once, for the Perl tests to parse.
Payloads are hex; S is a stream id; T is seconds since the connection was
made:

  connected tls=0|1 alpn=NAME
  setting NAME VALUE              the server's SETTINGS (each one it sent)
  open S KIND PATH                a stream was opened (KIND: ws, get, sse)
  status S CODE                   response status (informational: info S CODE)
  header S NAME VALUE             one response header (VALUE to end of line)
  trailer S NAME VALUE            one trailer field
  frame S OPCODE FIN HEX          a WebSocket frame from the server (a
                                  compressed message's payload inflated)
  masked S                        ... that frame was masked (a server must not)
  rsv S BITS                      ... that frame had RSV bits set (4: RSV1,
                                  permessage-deflate)
  close S CODE HEX                a close frame (CODE 'none' when empty)
  data S T HEX                    DATA on a stream that is not an accepted WebSocket
  end S                           END_STREAM from the server
  reset S CODE                    RST_STREAM from the server (CODE as a number)
  sent S WHAT                     a step that wrote something
  timeout S STEP                  a wait step ran out of time (its steps stop)
  unmet S STEP                    the stream ended before what a wait step waited for
  goaway CODE LAST_STREAM
  eof                             the server closed the connection
  error MESSAGE
  done

Steps (ws --step, repeatable; {i} in a step is the stream's index from 0):
  text:STRING        a masked text frame
  binary:HEX         a masked binary frame
  pattern:N          a masked binary frame of N bytes, byte k = (7k + 3) mod 256
  frame:B0:HEX       a masked frame whose first byte is B0 (hex), e.g. 81
  nomask:B0:HEX      the same, not masked
  raw:HEX            these bytes as they are
  fragments:N:P      a masked binary message of N bytes (byte k = 31k mod 256)
                     in frames of P bytes
  deflate:STRING     a masked text message compressed (permessage-deflate,
                     RSV1; the stream's compressor keeps its window)
(ws --ws-version V sets the sec-websocket-version sent; empty: none)
  close:CODE[:TEXT]  a close frame
  wait:N             until N WebSocket frames have arrived on this stream
  wait-close         until a close frame has arrived
  wait-end           until the stream ended or was reset
  sleep:SECS
  end                END_STREAM (an empty DATA frame ending our side)
  reset[:CODE]       RST_STREAM (default CANCEL, 8)

A WebSocket that is not accepted (any status but 200) runs no frame step;
its body is reported as data lines. ws also takes --pong (answer pings),
--get PATH (plain GETs alongside), --plain-connect (CONNECT without
:protocol, :scheme or :path) and --connect-protocol NAME; sse takes
--duration, --reset-after SECS, --method and --body. --timeout bounds the whole run and
--linger keeps reading after the streams are done. H2_CLIENT_DEBUG=1
writes every h2 event to stderr.

  h2_client.py --port 8080 ws --path /chat --protocol chat \
      --step text:hi --step wait:1 --step close:1000 --step wait-close
  h2_client.py --port 8443 --tls sse --path /events --duration 2
"""

import argparse
import os
import socket
import ssl
import struct
import sys
import time
import zlib

try:
    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    import h2.settings
except ImportError as e:  # the Perl tests check this before running us
    sys.stderr.write("h2 module missing: %s\n" % e)
    sys.exit(2)

T0 = time.monotonic()


def out(*words):
    sys.stdout.write(" ".join(str(w) for w in words) + "\n")
    sys.stdout.flush()


def now():
    return time.monotonic() - T0


def ws_frame(b0, payload, mask=True):
    """One client frame: first byte b0, payload bytes, masked or not."""
    n = len(payload)
    head = bytes([b0])
    mbit = 0x80 if mask else 0
    if n < 126:
        head += bytes([mbit | n])
    elif n < 65536:
        head += bytes([mbit | 126]) + struct.pack("!H", n)
    else:
        head += bytes([mbit | 127]) + struct.pack("!Q", n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    body = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
    return head + key + body


def parse_frames(buf):
    """Complete frames at the start of buf: ([(b0, masked, payload)], rest)."""
    frames = []
    while len(buf) >= 2:
        b0, b1 = buf[0], buf[1]
        n = b1 & 0x7F
        at = 2
        if n == 126:
            if len(buf) < 4:
                break
            n = struct.unpack("!H", buf[2:4])[0]
            at = 4
        elif n == 127:
            if len(buf) < 10:
                break
            n = struct.unpack("!Q", buf[2:10])[0]
            at = 10
        masked = bool(b1 & 0x80)
        key = b""
        if masked:
            if len(buf) < at + 4:
                break
            key = buf[at:at + 4]
            at += 4
        if len(buf) < at + n:
            break
        payload = buf[at:at + n]
        if masked:
            payload = bytes(c ^ key[i % 4] for i, c in enumerate(payload))
        frames.append((b0, masked, payload))
        buf = buf[at + n:]
    return frames, buf


class Connection(h2.connection.H2Connection):
    """hyper-h2 takes any GOAWAY as the connection's end. A graceful one
    (NO_ERROR) lets the streams it covers finish (RFC 9113 6.8), and a
    server shutting down sends GOAWAY, PING, then a last GOAWAY: after a
    NO_ERROR GOAWAY the connection stays open here until the server closes
    it, so those streams are seen to their end."""

    def _receive_goaway_frame(self, frame):
        before = self.state_machine.state
        frames, events = super()._receive_goaway_frame(frame)
        if frame.error_code == 0:
            self.state_machine.state = before
        return frames, events


class Stream:
    def __init__(self, sid, kind, path, steps):
        self.sid = sid
        self.kind = kind
        self.path = path
        self.steps = list(steps)
        self.status = None
        self.buf = b""
        self.frames = 0
        self.closed_by_server = False
        self.ended = False
        self.outq = b""
        self.end_after_out = False
        self.sleep_until = None
        # permessage-deflate, each way keeping its window (RFC 7692).
        self.deflater = zlib.compressobj(6, zlib.DEFLATED, -15)
        self.inflater = zlib.decompressobj(-15)
        self.compressed = False

    @property
    def websocket(self):
        return self.kind == "ws" and self.status == 200


class Client:
    def __init__(self, args):
        self.args = args
        self.streams = {}
        self.sock = None
        self.conn = None
        self.gone = False

    # ------------------------------------------------------------ connection

    def connect(self):
        a = self.args
        raw = socket.create_connection((a.host, a.port), timeout=5)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        alpn = "none"
        if a.tls:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            raw = ctx.wrap_socket(raw, server_hostname="localhost")
            alpn = raw.selected_alpn_protocol() or "none"
        raw.settimeout(0.02)
        self.sock = raw
        out("connected", "tls=%d" % (1 if a.tls else 0), "alpn=%s" % alpn)
        cfg = h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=False
        )
        self.conn = Connection(config=cfg)
        self.conn.initiate_connection()
        self.flush()

    def flush(self):
        data = self.conn.data_to_send()
        if data and not self.gone:
            try:
                self.sock.sendall(data)
            except OSError as e:
                out("error", "write:", e)
                self.gone = True

    def pump(self):
        """Reads what arrived (waiting at most a moment) and handles it."""
        if self.gone:
            time.sleep(0.02)
            return
        try:
            data = self.sock.recv(65536)
        except (socket.timeout, ssl.SSLWantReadError):
            data = None
        except OSError as e:
            out("error", "read:", e)
            self.gone = True
            return
        if data is None:
            self.push_all()
            return
        if data == b"":
            out("eof")
            self.gone = True
            return
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as e:
            out("error", "protocol:", type(e).__name__, str(e).replace("\n", " "))
            self.flush()
            self.gone = True
            return
        for ev in events:
            if os.environ.get("H2_CLIENT_DEBUG"):
                sys.stderr.write("%.3f %r\n" % (now(), ev))
            self.event(ev)
        self.push_all()
        self.flush()

    def event(self, ev):
        E = h2.events
        sid = getattr(ev, "stream_id", None)
        st = self.streams.get(sid)
        if isinstance(ev, E.RemoteSettingsChanged):
            for code, ch in ev.changed_settings.items():
                try:
                    name = h2.settings.SettingCodes(code).name
                except ValueError:
                    name = "0x%x" % code
                out("setting", name, ch.new_value)
        elif isinstance(ev, E.InformationalResponseReceived):
            out("info", sid, dict(ev.headers).get(":status"))
        elif isinstance(ev, E.ResponseReceived):
            for k, v in ev.headers:
                if k == ":status":
                    out("status", sid, v)
                    if st:
                        st.status = int(v)
            for k, v in ev.headers:
                if k != ":status":
                    out("header", sid, k, v)
        elif isinstance(ev, E.DataReceived):
            if ev.flow_controlled_length:
                self.conn.acknowledge_received_data(ev.flow_controlled_length, sid)
            if st and st.websocket:
                st.buf += ev.data
                frames, st.buf = parse_frames(st.buf)
                for b0, masked, payload in frames:
                    st.frames += 1
                    op = b0 & 0x0F
                    if op in (1, 2):
                        st.compressed = bool(b0 & 0x40)
                    if (op in (0, 1, 2)) and st.compressed:
                        payload = st.inflater.decompress(payload)
                        if b0 & 0x80:
                            payload += st.inflater.decompress(b"\x00\x00\xff\xff")
                    out("frame", sid, op, 1 if b0 & 0x80 else 0, payload.hex())
                    if masked:
                        out("masked", sid)
                    if b0 & 0x70:
                        out("rsv", sid, (b0 >> 4) & 7)
                    if op == 8:
                        st.closed_by_server = True
                        if len(payload) >= 2:
                            code = struct.unpack("!H", payload[:2])[0]
                            out("close", sid, code, payload[2:].hex())
                        else:
                            out("close", sid, "none", "")
                    elif op == 9 and self.args.pong and not st.ended:
                        self.write(st, ws_frame(0x8A, payload))
            elif ev.data:
                out("data", sid, "%.3f" % now(), ev.data.hex())
        elif isinstance(ev, E.TrailersReceived):
            for k, v in ev.headers:
                out("trailer", sid, k, v)
        elif isinstance(ev, E.StreamEnded):
            out("end", sid)
            if st:
                st.ended = True
        elif isinstance(ev, E.StreamReset):
            out("reset", sid, int(ev.error_code))
            if st:
                st.ended = True
        elif isinstance(ev, E.ConnectionTerminated):
            out("goaway", int(ev.error_code), ev.last_stream_id)

    # ---------------------------------------------------------------- sending

    def write(self, st, data, end=False):
        st.outq += data
        st.end_after_out = st.end_after_out or end
        self.push(st)

    def push(self, st):
        """Sends what the flow-control windows allow of a stream's queue."""
        try:
            self._push(st)
        finally:
            self.flush()

    def _push(self, st):
        while (st.outq or st.end_after_out) and not self.gone:
            try:
                room = min(
                    self.conn.local_flow_control_window(st.sid),
                    self.conn.max_outbound_frame_size,
                )
            except (h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError, KeyError):
                st.outq = b""
                st.end_after_out = False
                return
            if st.outq and room <= 0:
                return
            piece, st.outq = st.outq[:room], st.outq[room:]
            end = st.end_after_out and not st.outq
            try:
                self.conn.send_data(st.sid, piece, end_stream=end)
            except h2.exceptions.ProtocolError as e:
                out("error", "send:", type(e).__name__)
                st.outq = b""
                st.end_after_out = False
                return
            if end:
                st.end_after_out = False

    def push_all(self):
        for st in self.streams.values():
            if st.outq or st.end_after_out:
                self.push(st)

    # ---------------------------------------------------------------- streams

    def open_ws(self, path, steps):
        a = self.args
        sid = self.conn.get_next_available_stream_id()
        if a.plain_connect:
            headers = [(":method", "CONNECT"), (":authority", a.authority)]
        else:
            headers = [
                (":method", "CONNECT"),
                (":protocol", a.connect_protocol),
                (":scheme", "https" if a.tls else "http"),
                (":path", path),
                (":authority", a.authority),
            ]
            if a.ws_version:
                headers.append(("sec-websocket-version", a.ws_version))
            if a.protocol is not None:
                headers.append(("sec-websocket-protocol", a.protocol))
        for h in a.header:
            k, _, v = h.partition(":")
            headers.append((k.strip().lower(), v.strip()))
        self.conn.send_headers(sid, headers)
        self.flush()
        st = Stream(sid, "ws", path, steps)
        self.streams[sid] = st
        out("open", sid, "ws", path)
        return st

    def open_get(self, path, kind="get", accept=None, method="GET", body=None):
        a = self.args
        sid = self.conn.get_next_available_stream_id()
        headers = [
            (":method", method),
            (":scheme", "https" if a.tls else "http"),
            (":path", path),
            (":authority", a.authority),
        ]
        if accept:
            headers.append(("accept", accept))
        if body is not None:
            headers.append(("content-length", str(len(body))))
        self.conn.send_headers(sid, headers, end_stream=body is None)
        self.flush()
        st = Stream(sid, kind, path, [])
        self.streams[sid] = st
        out("open", sid, kind, path)
        if body is not None:
            self.write(st, body, end=True)
        return st

    def step(self, st, index):
        """Runs the stream's next steps; False while its current one waits."""
        while st.steps:
            s = st.steps[0].replace("{i}", str(index))
            name, _, arg = s.partition(":")
            if name in ("wait", "wait-close"):
                met = st.frames >= int(arg) if name == "wait" else st.closed_by_server
                if not met and (st.ended or self.gone):
                    # The stream is over: what was waited for never came.
                    out("unmet", st.sid, s)
                    st.steps = []
                    return True
                if not met:
                    return False
            elif name == "wait-end":
                if not st.ended and not self.gone:
                    return False
            elif name == "sleep":
                if st.sleep_until is None:
                    st.sleep_until = time.monotonic() + float(arg)
                if time.monotonic() < st.sleep_until:
                    return False
                st.sleep_until = None
            elif name == "reset":
                code = int(arg) if arg else 8
                try:
                    self.conn.reset_stream(st.sid, error_code=code)
                except h2.exceptions.ProtocolError as e:
                    out("error", "reset:", type(e).__name__)
                self.flush()
                out("sent", st.sid, "reset")
                st.ended = True
            elif not st.websocket or st.ended:
                # Frames only go on an accepted, open WebSocket.
                st.steps = []
                return True
            elif name == "text":
                self.write(st, ws_frame(0x81, arg.encode("utf-8")))
                out("sent", st.sid, "text")
            elif name == "binary":
                self.write(st, ws_frame(0x82, bytes.fromhex(arg)))
                out("sent", st.sid, "binary")
            elif name == "pattern":
                data = bytes((7 * k + 3) % 256 for k in range(int(arg)))
                self.write(st, ws_frame(0x82, data))
                out("sent", st.sid, "pattern")
            elif name in ("frame", "nomask"):
                b0, _, hexp = arg.partition(":")
                self.write(st, ws_frame(int(b0, 16), bytes.fromhex(hexp), mask=name == "frame"))
                out("sent", st.sid, name)
            elif name == "raw":
                self.write(st, bytes.fromhex(arg))
                out("sent", st.sid, "raw")
            elif name == "fragments":
                total, _, piece = arg.partition(":")
                total, piece = int(total), int(piece)
                data = bytes((31 * k) % 256 for k in range(total))
                n = max(1, -(-total // piece))
                wire = b"".join(
                    ws_frame((0x80 if i == n - 1 else 0) | (2 if i == 0 else 0),
                             data[i * piece:(i + 1) * piece])
                    for i in range(n))
                self.write(st, wire)
                out("sent", st.sid, "fragments")
            elif name == "deflate":
                z = st.deflater.compress(arg.encode("utf-8")) + st.deflater.flush(zlib.Z_SYNC_FLUSH)
                if z.endswith(b"\x00\x00\xff\xff"):
                    z = z[:-4]
                self.write(st, ws_frame(0xC1, z))
                out("sent", st.sid, "deflate")
            elif name == "close":
                code, _, text = arg.partition(":")
                self.write(st, ws_frame(0x88, struct.pack("!H", int(code)) + text.encode("utf-8")))
                out("sent", st.sid, "close")
            elif name == "end":
                self.write(st, b"", end=True)
                out("sent", st.sid, "end")
            else:
                out("error", "unknown step", s)
            st.steps.pop(0)
        return True

    # -------------------------------------------------------------- the modes

    def run_ws(self):
        a = self.args
        deadline = time.monotonic() + a.timeout
        ws = [self.open_ws(p, a.step) for p in a.path]
        for p in a.get:
            self.open_get(p)
        # Each WebSocket waits for its answer, then runs its steps.
        while time.monotonic() < deadline and not self.gone:
            self.pump()
            busy = False
            for i, st in enumerate(ws):
                if st.status is None and not st.ended:
                    busy = True
                    continue
                if st.status is not None and st.status != 200 and not st.ended:
                    busy = True  # a denial: its body until the end
                    continue
                if not self.step(st, i):
                    busy = True
            if any(not s.ended for s in self.streams.values() if s.kind == "get"):
                busy = True
            if not busy:
                break
        for i, st in enumerate(ws):
            if st.steps and time.monotonic() >= deadline:
                out("timeout", st.sid, st.steps[0].replace("{i}", str(i)))
            elif st.status is None and not st.ended:
                out("timeout", st.sid, "response")
        self.linger()

    def run_sse(self):
        a = self.args
        body = a.body.encode() if a.body is not None else None
        st = self.open_get(a.path[0], kind="sse", accept="text/event-stream",
                           method=a.method, body=body)
        start = time.monotonic()
        reset_at = start + a.reset_after if a.reset_after is not None else None
        while time.monotonic() < start + a.duration and not self.gone and not st.ended:
            self.pump()
            if reset_at is not None and time.monotonic() >= reset_at:
                self.conn.reset_stream(st.sid, error_code=8)
                self.flush()
                out("sent", st.sid, "reset")
                st.ended = True
        self.linger()

    def linger(self):
        end = time.monotonic() + self.args.linger
        while time.monotonic() < end and not self.gone:
            self.pump()
        if not self.gone:
            try:
                self.conn.close_connection()
                self.flush()
            except h2.exceptions.ProtocolError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass
        out("done")


def main():
    def common(parser, defaults):
        """The connection's options, taken before or after the mode."""
        d = (lambda v: v) if defaults else (lambda v: argparse.SUPPRESS)
        parser.add_argument("--host", default=d("127.0.0.1"))
        parser.add_argument("--port", type=int, default=d(None))
        parser.add_argument("--tls", action="store_true", default=d(False),
                            help="TLS with ALPN h2, no certificate check")
        parser.add_argument("--authority", default=d(None),
                            help="the :authority (default host:port)")
        parser.add_argument("--timeout", type=float, default=d(10.0),
                            help="bound on the whole run")
        parser.add_argument("--linger", type=float, default=d(0.0),
                            help="keep reading this long after the streams are done")

    p = argparse.ArgumentParser(description="HTTP/2 test client (WebSocket over h2, SSE)")
    common(p, True)
    sub = p.add_subparsers(dest="mode", required=True)

    w = sub.add_parser("ws", help="WebSockets over HTTP/2 (RFC 8441)")
    common(w, False)
    w.add_argument("--path", action="append", default=None,
                   help="one WebSocket per --path (default one on /)")
    w.add_argument("--protocol", default=None, help="sec-websocket-protocol to offer")
    w.add_argument("--header", action="append", default=[], help="extra header NAME:VALUE")
    w.add_argument("--step", action="append", default=[], help="see the module doc")
    w.add_argument("--get", action="append", default=[], help="a plain GET alongside")
    w.add_argument("--pong", action="store_true", help="answer the server's pings")
    w.add_argument("--connect-protocol", default="websocket",
                   help="the :protocol of the extended CONNECT")
    w.add_argument("--plain-connect", action="store_true",
                   help="a plain CONNECT (no :protocol, :scheme, :path)")
    w.add_argument("--ws-version", default="13",
                   help="the sec-websocket-version sent (empty: none)")

    s = sub.add_parser("sse", help="one text/event-stream GET")
    common(s, False)
    s.add_argument("--path", action="append", default=None)
    s.add_argument("--duration", type=float, default=3.0)
    s.add_argument("--reset-after", type=float, default=None,
                   help="RST_STREAM (CANCEL) after this many seconds")
    s.add_argument("--method", default="GET")
    s.add_argument("--body", default=None, help="a request body (UTF-8), sent with content-length")

    a = p.parse_args()
    if a.port is None:
        p.error("--port is required")
    if a.path is None:
        a.path = ["/"]
    if a.authority is None:
        a.authority = "%s:%d" % (a.host, a.port)
    c = Client(a)
    try:
        c.connect()
    except OSError as e:
        out("error", "connect:", e)
        out("done")
        return 1
    if a.mode == "ws":
        c.run_ws()
    else:
        c.run_sse()
    return 0


if __name__ == "__main__":
    sys.exit(main())
