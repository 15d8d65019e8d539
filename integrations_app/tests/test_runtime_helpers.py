"""Shared pieces of the route runtime tests (no tests here): local upstreams, the tripwire network
backend, and a way to call the real ASGI app in-process.

- `Upstream`: a threading HTTP server on 127.0.0.1 (a free port). Each (method, path) can get a
  handler; every request it receives is recorded (method, path, query, headers, body, JSON).
  Unknown paths answer a JSON echo of the request.
- `Tripwire`: fails the test the moment a connection is attempted anywhere the test did not allow
  (only 127.0.0.1 by default), so a refusal is proven to happen before any packet could leave. It
  sits *inside* the egress guard of either client: as the network backend of httpx's
  (`guarded_client(inner_backend=tripwire)`), and for the aiohttp client (`OutboundClient`,
  what routes use) as the event loop's socket connect (`tripwire.watch(loop)`), below aiohttp.
- `InProcess`: runs `backflow.asgi.application` through httpx.ASGITransport in a fresh event loop
  (via async_to_sync, so the ORM runs on the test's own connection), with the dispatcher's shared
  client replaced by the production client whose loop the tripwire watches. Route invocation rows
  (written in the background after the answer) are waited for before `run` returns.

Import the fixtures into a test module with `from integrations_app.tests.test_runtime_helpers import *`.
"""

import asyncio
import json
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

import httpcore
import httpx
import pytest
from asgiref.sync import async_to_sync

from backflow.outbound import OutboundClient
from integrations_app import dispatch
from integrations_app import services as integration_services
from integrations_app.stores import DatabaseStore

__all__ = [
    "InProcess", "Reply", "Tripwire", "Upstream", "free_port", "make_integration", "make_route",
    "_fresh_route_tables", "inprocess", "tripwire", "upstream", "upstreams", "BOOKINGS_ENDPOINTS", "action", "acme_bookings",
    "trips",
]


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- upstream ------------------------------------------------------------------------------


@dataclass
class Reply:
    """What a handler answers. `body` may be bytes, a JSON-able value (sent as JSON) or an
    iterable of byte chunks (streamed with the given `length`)."""

    status: int = 200
    body: object = None
    headers: dict = field(default_factory=dict)
    delay: float = 0.0
    length: int | None = None


@dataclass
class Seen:
    method: str
    path: str
    query: dict
    headers: dict
    body: bytes
    at: float

    @property
    def json(self):
        return json.loads(self.body) if self.body else None

    @property
    def form(self):
        return {k: v[0] for k, v in parse_qs(self.body.decode()).items()}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep test output clean
        pass

    def _handle(self):
        upstream = self.server.upstream
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = Seen(
            method=self.command, path=parts.path, query={k: v[0] for k, v in parse_qs(parts.query, keep_blank_values=True).items()},
            headers={k.lower(): v for k, v in self.headers.items()}, body=body, at=time.monotonic(),
        )
        with upstream.lock:
            upstream.seen.append(seen)
        handler = upstream.handlers.get((self.command, parts.path)) or upstream.handlers.get(("*", parts.path))
        reply = handler(seen) if callable(handler) else (handler if isinstance(handler, Reply) else None)
        if reply is None:
            reply = Reply(body={"method": seen.method, "path": seen.path, "query": seen.query,
                                "headers": seen.headers, "json": _maybe_json(body)})
        if reply.delay:
            time.sleep(reply.delay)
        headers = {"Content-Type": "application/json", **reply.headers}
        chunks = None
        if isinstance(reply.body, bytes):
            payload = reply.body
        elif reply.body is not None and not isinstance(reply.body, (dict, list, str, int, float, bool)):
            chunks, payload = reply.body, None
        else:
            payload = json.dumps(reply.body).encode()
        try:
            self.send_response(reply.status)
            for name, value in headers.items():
                self.send_header(name, value)
            if chunks is None:
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            else:
                self.send_header("Content-Length", str(reply.length))
                self.send_header("Connection", "close")
                self.end_headers()
                for chunk in chunks:
                    self.wfile.write(chunk)
                    with upstream.lock:
                        upstream.streamed += len(chunk)
                self.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _handle


def _maybe_json(body):
    try:
        return json.loads(body) if body else None
    except ValueError:
        return body.decode(errors="replace")


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    # socketserver listens with a backlog of 5: a crowd of calls connecting at once (the routes'
    # crowd tests send 128) had SYNs dropped and retried 1, 3 and 7 s later, past the endpoint's
    # timeout (a 504 now and then).
    request_queue_size = 256


class Upstream:
    def __init__(self):
        self.handlers, self.seen, self.lock, self.streamed = {}, [], threading.Lock(), 0
        self.server = _Server(("127.0.0.1", 0), _Handler)
        self.server.upstream = self
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def on(self, method, path, handler):
        """`handler`: a Reply, or a callable (Seen) -> Reply or None (None = echo)."""
        self.handlers[(method.upper(), path)] = handler
        return self

    def calls(self, path=None):
        with self.lock:
            return [s for s in self.seen if path is None or s.path == path]

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstreams():
    """A factory of local upstreams, all closed after the test."""
    made = []

    def make():
        made.append(Upstream())
        return made[-1]

    yield make
    for server in made:
        server.close()


@pytest.fixture
def upstream(upstreams):
    return upstreams()


# -- tripwire --------------------------------------------------------------------------------


class Tripwire(httpcore.AsyncNetworkBackend):
    """The network backend inside the egress guard. Anything but an allowed host fails the test."""

    def __init__(self, allowed=("127.0.0.1",)):
        self.inner = httpcore.AnyIOBackend()
        self.allowed = set(allowed)
        self.reached = []  # every (host, port) the guard passed on
        self.violations = []

    def _check(self, host, port):
        self.reached.append((host, port))
        if host not in self.allowed:
            self.violations.append((host, port))
            pytest.fail(f"The egress guard let a connection to {host}:{port} reach the network backend.")

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        self._check(host, port)
        return await self.inner.connect_tcp(host, port, timeout=timeout, local_address=local_address, socket_options=socket_options)

    def watch(self, loop):
        """Check every socket connect of `loop` (aiohttp connects through loop.sock_connect)."""
        connect = loop.sock_connect

        async def sock_connect(sock, address):
            self._check(address[0], address[1])
            return await connect(sock, address)

        loop.sock_connect = sock_connect

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        self.violations.append(("unix", path))
        pytest.fail(f"The egress guard let a unix socket connection to {path} through.")

    async def sleep(self, seconds):
        await self.inner.sleep(seconds)

    def hosts(self):
        return {host for host, _ in self.reached}


@pytest.fixture
def tripwire():
    wire = Tripwire()
    yield wire
    assert not wire.violations, f"connections that should have been refused reached the backend: {wire.violations}"


# -- the ASGI app in-process ------------------------------------------------------------------


class InProcess:
    def __init__(self, tripwire):
        self.tripwire = tripwire
        self._client = None

    def shared_client(self):
        return self._client

    def run(self, fn, timeout=30):
        """Run `async fn(http)` (http: an httpx.AsyncClient on the ASGI app) in a fresh event loop."""
        from backflow.asgi import application

        async def main():
            self.tripwire.watch(asyncio.get_running_loop())
            self._client = OutboundClient()  # policy from settings
            try:
                transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 40000))
                async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=timeout) as http:
                    return await asyncio.wait_for(fn(http), timeout)
            finally:
                while dispatch.routes_asgi._background:
                    await asyncio.gather(*list(dispatch.routes_asgi._background), return_exceptions=True)
                await self._client.aclose()

        return async_to_sync(main)()

    def call(self, method, url, **kwargs):
        async def one(http):
            return await http.request(method, url, **kwargs)

        return self.run(one)


@pytest.fixture
def inprocess(tripwire, monkeypatch, settings):
    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]
    app = InProcess(tripwire)
    monkeypatch.setattr(dispatch, "shared_client", app.shared_client)
    return app


@pytest.fixture
def trips(trip_sizes):
    """The sizes of the tenant routes' admission trips taken to a thread."""
    return trip_sizes(dispatch.routes_asgi.sites._admissions)


@pytest.fixture(autouse=True)
def _fresh_route_tables():
    """Each test starts with no compiled route tables in this process: test databases reuse
    primary keys after a rollback, and on_commit (which bumps a tenant's version) never fires
    inside a rolled-back test."""
    dispatch.routes_asgi.sites._tables.clear()
    yield
    dispatch.routes_asgi.sites._tables.clear()


# -- documents ---------------------------------------------------------------------------------


def make_integration(ctx, name, base_url, endpoints, auth=None, **extra):
    store = DatabaseStore(tenant=ctx.tenant, actor=ctx.actor)
    doc = {"name": name, "baseUrl": base_url, "auth": auth or {"type": "none"}, "endpoints": endpoints, **extra}
    return integration_services.integration_create(store=store, document=doc)


def make_route(ctx, path, actions, method="get", **extra):
    store = DatabaseStore(tenant=ctx.tenant, actor=ctx.actor)
    doc = {"path": path, "method": method, "integrations": {"actions": actions}, **extra}
    return integration_services.route_create(store=store, document=doc)


# -- acme's bookings upstream (test_dispatch, test_admission_here) -----------------------------


BOOKINGS_ENDPOINTS = [
    {"name": "list", "method": "get", "path": "/bookings"},
    {"name": "get", "method": "get", "path": "/bookings/{id}"},
    {"name": "new", "method": "get", "path": "/bookings/new-form"},
    {"name": "create", "method": "post", "path": "/bookings"},
]


def action(name, params=None, step=None):
    """A route action calling the bookings integration's endpoint `name`."""
    return {"id": step or name, "integration": "bookings", "action": name, "params": params or {}}


@pytest.fixture
def acme_bookings(acme, upstream):
    """The bookings integration of acme, on a local upstream (returned)."""
    make_integration(acme, "bookings", upstream.url, BOOKINGS_ENDPOINTS)
    return upstream
