"""Hostile peers for tests/security/test_hostile_peers.py: real loopback servers, no mocks.

- Bodies: compression bombs built once per process without ever holding the decoded bytes
  (`gzip_bomb`, `stacked_gzip_bomb`), giant and endless bodies as chunk generators.
- `HostileMcp`: an MCP server over Streamable HTTP (POST /mcp, JSON or SSE answers) and over the
  older SSE transport (GET /sse + POST /messages), whose tools answer with what a hostile server
  sends: a giant JSON answer, a gzip bomb, stacked encodings, NaN, deep nesting, one huge SSE
  event, an event that never ends, many small events (legitimate), a tool list whose cursor never
  ends (`pages = 0`). `ok` answers normally, to show the connection still works afterwards.
- `peak_rss_growth()`: how far this process's peak resident memory (VmHWM, reset first) rose above
  its resident memory at the start of the block.
"""

import functools
import gc
import itertools
import json
import queue
import resource
import socket
import threading
import time
import uuid
import zlib
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

MIB = 1024 * 1024
BLOCK = b"x" * MIB


# -- memory ----------------------------------------------------------------------------------

def _status_kib(field):
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise LookupError(field)


@contextmanager
def peak_rss_growth():
    """`with peak_rss_growth() as peak: …` then `peak.bytes`: the rise of the process's peak RSS.

    Linux resets the peak (VmHWM) when 5 is written to /proc/self/clear_refs; where that is not
    allowed, ru_maxrss (the peak since the process started) is the fallback, which only sees a
    rise above every earlier peak."""
    class Peak:
        bytes = 0

    peak = Peak()
    gc.collect()
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        base, read = _status_kib("VmRSS"), lambda: _status_kib("VmHWM")
    except OSError:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        read = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # noqa: E731
    try:
        yield peak
    finally:
        peak.bytes = max(0, read() - base) * 1024


# -- bodies ----------------------------------------------------------------------------------

def _gzip_stream(chunks, wbits=31):
    packer = zlib.compressobj(9, zlib.DEFLATED, wbits)
    out = bytearray()
    for chunk in chunks:
        out += packer.compress(chunk)
    return bytes(out + packer.flush())


@functools.cache
def gzip_bomb(mib=200, fill=b"\0"):
    """`mib` MiB of `fill` bytes, gzipped once (about 200 KB for 200 MiB of zeros)."""
    block = fill * MIB
    return _gzip_stream(itertools.repeat(block, mib))


@functools.cache
def deflate_bomb(mib=200):
    return _gzip_stream(itertools.repeat(b"\0" * MIB, mib), wbits=15)


@functools.cache
def stacked_gzip_bomb(mib=200, layers=3):
    """The issue's bomb: `mib` MiB of zeros gzipped `layers` times (273 bytes for 200 MiB, 3 layers)."""
    data = gzip_bomb(mib)
    for _ in range(layers - 1):
        data = _gzip_stream([data])
    return data


@functools.cache
def gzip_json_answer(prefix, mib, suffix):
    """A JSON document with `mib` MiB of `x` inside, gzipped (about 200 KB for 200 MiB)."""
    return _gzip_stream(itertools.chain([prefix], itertools.repeat(BLOCK, mib), [suffix]))


def giant(total):
    """`total` bytes of x, a MiB at a time (never held)."""
    full, rest = divmod(total, MIB)
    yield from itertools.repeat(BLOCK, full)
    if rest:
        yield BLOCK[:rest]


def endless(piece=b"x" * 1024):
    while True:
        yield piece


def trickle(first=b"{", every=0.05):
    """A body that never ends, a byte at a time."""
    yield first
    while True:
        time.sleep(every)
        yield b" "


class ClosePeer:
    """An HTTP peer that answers every request with `headers` and then `body()` (byte chunks),
    without Content-Length: the body ends when the connection closes (or never)."""

    def __init__(self, headers, body):
        self.headers, self.body, self.streamed, self.requests = headers, body, 0, 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while not self.stopped.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        with conn:
            request = b""
            while b"\r\n\r\n" not in request:
                data = conn.recv(65536)
                if not data:
                    return
                request += data
            self.requests += 1
            head = "HTTP/1.1 200 OK\r\n" + "".join(f"{k}: {v}\r\n" for k, v in self.headers.items()) + "Connection: close\r\n\r\n"
            try:
                conn.sendall(head.encode())
                for chunk in self.body():
                    if self.stopped.is_set():
                        return
                    conn.sendall(chunk)
                    self.streamed += len(chunk)
            except OSError:
                return

    def stop(self):
        self.stopped.set()
        self.sock.close()


# -- an MCP server -----------------------------------------------------------------------------

def _event(message):
    return b"event: message\ndata: " + json.dumps(message).encode() + b"\n\n"


class HostileMcp:
    """See the module docstring. `stop()` ends it (and every stream it holds open)."""

    TOOLS = ["ok", "huge", "bomb", "stacked", "nan", "deep", "bigevent", "endlessevent", "manyevents", "medium"]

    def __init__(self, huge_bytes=300 * 1024 * 1024, bomb_mib=200):
        self.huge_bytes, self.bomb_mib = huge_bytes, bomb_mib
        self.sessions = {}  # SSE transport: session id -> queue of byte chunks for its stream
        self.stop_event = threading.Event()
        self.streamed = 0  # bytes of tool answers written
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                if not self.path.startswith("/sse"):
                    return self._send(405, b"", "text/plain")
                session = uuid.uuid4().hex
                chunks = owner.sessions[session] = queue.Queue()
                self.send_response(200)
                self.send_header("Content-Type", "text/event-stream")
                self.send_header("Cache-Control", "no-cache")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    self.wfile.write(f"event: endpoint\ndata: /messages?sessionId={session}\n\n".encode())
                    self.wfile.flush()
                    while not owner.stop_event.is_set():
                        try:
                            item = chunks.get(timeout=0.2)
                        except queue.Empty:
                            continue
                        for chunk in item:
                            self.wfile.write(chunk)
                            owner._count(chunk)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass
                finally:
                    owner.sessions.pop(session, None)
                    self.close_connection = True

            def do_DELETE(self):
                self._send(200, b"", "text/plain")

            def do_POST(self):
                message = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
                if self.path.startswith("/messages"):
                    session = self.path.partition("sessionId=")[2]
                    chunks = owner.sessions.get(session)
                    if chunks is None:
                        return self._send(404, b"no session", "text/plain")
                    self._send(202, b"Accepted", "text/plain")
                    if "id" in message:
                        chunks.put(owner.sse_answer(message))
                    return
                if "id" not in message:  # a notification
                    return self._send(202, b"", "text/plain")
                status, headers, body = owner.http_answer(message)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    for chunk in body:
                        if owner.stop_event.is_set():
                            return
                        self.wfile.write(chunk)
                        owner._count(chunk)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _send(self, status, data, content_type="application/json"):
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, path):
        return self.base_url + path

    def _count(self, chunk):
        with self.lock:
            self.streamed += len(chunk)

    def stop(self):
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()

    # -- answers ------------------------------------------------------------------------------

    @staticmethod
    def _reply(message, result=None, error=None):
        return {"jsonrpc": "2.0", "id": message["id"], **({"error": error} if error else {"result": result})}

    def _basic(self, message):
        """initialize and tools/list; None for tools/call."""
        method, params = message.get("method"), message.get("params") or {}
        if method == "initialize":
            return self._reply(message, {"protocolVersion": params.get("protocolVersion"), "capabilities": {"tools": {}},
                                         "serverInfo": {"name": "hostile", "version": "1.0.0"}})
        if method == "tools/list":  # `pages` pages (0: a cursor that never ends), the tools spread over them
            page = int(params.get("cursor") or 0)
            tools = [{"name": name, "inputSchema": {"type": "object"}} for name in self.TOOLS]
            if self.pages == 0:
                return self._reply(message, {"tools": tools, "nextCursor": str(page + 1)})
            mine = tools[page::self.pages]
            return self._reply(message, {"tools": mine, **({"nextCursor": str(page + 1)} if page + 1 < self.pages else {})})
        if method != "tools/call":
            return self._reply(message, error={"code": -32601, "message": f"no method {method}"})
        return None

    pages = 1

    @staticmethod
    def _text_result(message, text):
        return HostileMcp._reply(message, {"content": [{"type": "text", "text": text}]})

    def _huge_parts(self, message, size):
        prefix = json.dumps(self._text_result(message, "@")).encode()
        head, _, tail = prefix.partition(b"@")
        return head, tail, len(head) + size + len(tail)

    def http_answer(self, message):
        """(status, headers, body chunks) for a Streamable HTTP POST."""
        basic = self._basic(message)
        json_type = {"Content-Type": "application/json"}
        if basic is not None:
            data = json.dumps(basic).encode()
            return 200, {**json_type, "Content-Length": str(len(data))}, [data]
        name = message["params"]["name"]
        if name == "huge":
            head, tail, length = self._huge_parts(message, self.huge_bytes)
            return 200, {**json_type, "Content-Length": str(length)}, itertools.chain([head], giant(self.huge_bytes), [tail])
        if name == "bomb":
            head, tail, _ = self._huge_parts(message, 0)
            data = gzip_json_answer(head, self.bomb_mib, tail)
            return 200, {**json_type, "Content-Encoding": "gzip", "Content-Length": str(len(data))}, [data]
        if name == "stacked":
            data = json.dumps(self._text_result(message, "small, but wrapped three times")).encode()
            for _ in range(3):
                data = _gzip_stream([data])
            return 200, {**json_type, "Content-Encoding": "gzip, gzip, gzip", "Content-Length": str(len(data))}, [data]
        if name in ("bigevent", "endlessevent", "manyevents"):
            return 200, {"Content-Type": "text/event-stream"}, self._events(message, name)
        data = self._small(message, name)
        return 200, {**json_type, "Content-Length": str(len(data))}, [data]

    def _small(self, message, name):
        if name == "nan":
            return (b'{"jsonrpc": "2.0", "id": %s, "result": {"content": [{"type": "text", "text": "n"}], '
                    b'"structuredContent": {"value": NaN}}}' % json.dumps(message["id"]).encode())
        if name == "deep":
            deep = "[" * 150 + "]" * 150
            return (b'{"jsonrpc": "2.0", "id": %s, "result": {"content": [{"type": "text", "text": "d"}], '
                    b'"structuredContent": {"value": %s}}}' % (json.dumps(message["id"]).encode(), deep.encode()))
        if name == "medium":  # 300 KB: under the message limit, over a small step result limit
            return json.dumps(self._reply(message, {"content": [{"type": "text", "text": "m"}],
                                                    "structuredContent": {"rows": ["r" * 1000] * 300}})).encode()
        return json.dumps(self._text_result(message, "ok")).encode()

    def _events(self, message, name):
        if name == "bigevent":  # one event of 3 MiB
            head, tail, _ = self._huge_parts(message, 0)
            yield b"event: message\ndata: " + head
            yield from giant(3 * MIB)
            yield tail + b"\n\n"
        elif name == "endlessevent":  # an event that never ends
            yield b"event: message\ndata: "
            yield from endless()
        else:  # 40 notifications of 100 KB (4 MB in all, each far under the limit), then the answer
            for _ in range(40):
                yield _event({"jsonrpc": "2.0", "method": "notifications/message",
                              "params": {"level": "info", "data": "n" * 100_000}})
            yield _event(self._text_result(message, "after many events"))

    def sse_answer(self, message):
        """Byte chunks for the SSE transport's stream."""
        basic = self._basic(message)
        if basic is not None:
            return [_event(basic)]
        name = message["params"]["name"]
        if name in ("huge", "bigevent"):
            return self._events(message, "bigevent")
        if name in ("endlessevent", "manyevents"):
            return self._events(message, name)
        return [b"event: message\ndata: " + self._small(message, name) + b"\n\n"]
