"""Outbound HTTP on a tenant's behalf, and the guard that keeps it off the platform's own network.

Two clients, one guard. Integrations (route actions, workflow integration steps, the build tools
call_endpoint, test_route and import_openapi) send through `shared_client()`: aiohttp's pooled
client (backflow.outbound), which on this machine spent 0.28 ms of CPU per proxied request against
httpx's 3.4 ms (issue 17). The LLM client and tenants' MCP servers use httpx (`guarded_client`)
and the MCP SDK's httpx2 (`guarded_mcp_http_client`); the tests' tripwire clients are httpx too.

The guard sits where each client opens its TCP connections (httpcore's network backend, aiohttp's
connector), so it sees every connection: the first request, each redirect hop, a retry, an OAuth
token fetch. It resolves the host itself, refuses loopback, private, link-local (cloud metadata),
multicast, unspecified and other non-global addresses unless BACKFLOW_EGRESS_ALLOW lists the host
or network, and then connects to the very address it checked (no second lookup a DNS rebinding
could change). Redirects are never followed by the clients (callers follow them hop by hop), and
proxies from the environment are ignored.

IPv6 addresses that carry an IPv4 address inside (IPv4-mapped ::ffff:a.b.c.d, IPv4-compatible
::a.b.c.d, SIIT ::ffff:0:a.b.c.d, NAT64 64:ff9b::/96, 6to4 2002::/16, Teredo 2001::/32) are judged
by the IPv4 address they lead to; the local-use NAT64 prefix 64:ff9b:1::/48 (RFC 8215) is refused
whole, since where it leads depends on the operator's translator. Host spellings such as 0x7f.1,
127.1 or 2130706433 are resolved the way the operating system resolves them (getaddrinfo) and the
resulting address is judged; httpx itself rejects octal forms such as 0177.0.0.1 (httpx.InvalidURL)
before any connection is attempted.
"""

import asyncio
import contextlib
import contextvars
import functools
import ipaddress
import socket
import threading
from concurrent.futures import ThreadPoolExecutor

import httpcore
import httpx
import idna
from django.conf import settings

from backflow import metrics
from backflow.peer_bodies import ACCEPT_ENCODING, PeerBodyError, decoded_chunks


class EgressRefused(Exception):
    """A call to a refused address; the message names the host and why. Each refusal is counted
    in the metrics by `reason` (non_public_address, unresolvable, unix_socket)."""

    def __init__(self, message, *, reason):
        super().__init__(message)
        metrics.egress_refusals.labels(reason).inc()


# IPv6 forms with an IPv4 address inside: where a packet sent to them ends up (RFC 4291, 6052,
# 8215, 3056, 4380, 2765). Python's is_global judges the IPv6 prefix, not the IPv4 inside.
NAT64 = ipaddress.ip_network("64:ff9b::/96")
NAT64_LOCAL_USE = ipaddress.ip_network("64:ff9b:1::/48")
IPV4_COMPATIBLE = ipaddress.ip_network("::/96")
IPV4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_LOW_32_BITS = 0xFFFFFFFF


def embedded_ipv4(address):
    """The IPv4 addresses an IPv6 address leads to (a tuple), () for an ordinary address, or None
    when it leads to an IPv4 address that cannot be known from the address alone (local-use NAT64)."""
    if address.version != 6:
        return ()
    if address.ipv4_mapped:
        return (address.ipv4_mapped,)
    if address.teredo:
        return address.teredo  # (server, client): both must be acceptable
    if address.sixtofour:
        return (address.sixtofour,)
    if address in NAT64_LOCAL_USE:
        return None
    if address in NAT64 or address in IPV4_COMPATIBLE or address in IPV4_TRANSLATED:
        return (ipaddress.IPv4Address(int(address) & _LOW_32_BITS),)
    return ()


class EgressPolicy:
    def __init__(self, allow=()):
        self.hosts, self.networks = set(), []
        for entry in allow:
            entry = entry.strip().lower()
            if not entry:
                continue
            try:
                self.networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                self.hosts.add(entry.strip("[]"))

    @classmethod
    def from_settings(cls):
        return cls(settings.BACKFLOW_EGRESS_ALLOW)

    def host_allowed(self, host):
        return host.lower().strip("[]") in self.hosts

    def address_allowed(self, address):
        """Listed in BACKFLOW_EGRESS_ALLOW as written, or public. An IPv6 address with an IPv4
        address inside is public only when that IPv4 address is (each of them, for Teredo's server
        and client); allowing 127.0.0.1 does not allow ::ffff:127.0.0.1 or 64:ff9b::7f00:1 (list
        those spellings, or their networks, to allow them)."""
        address = ipaddress.ip_address(address)
        if any(address in network for network in self.networks):
            return True
        inner = embedded_ipv4(address)
        if inner is None:
            return False
        if inner:
            return all(v4.is_global and not v4.is_multicast for v4 in inner)
        return address.is_global and not address.is_multicast

    async def resolve(self, host, port):
        """The addresses to connect to, or EgressRefused naming the first forbidden one."""
        bare = host.strip("[]")
        try:
            addresses = [ipaddress.ip_address(bare)]
        except ValueError:
            try:
                infos = await lookups.getaddrinfo(bare, port)
            except OSError as exc:
                raise EgressRefused(f"Cannot resolve {host!r}: {exc}.", reason="unresolvable") from exc
            addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
        for address in addresses:
            if not self.address_allowed(address):
                raise EgressRefused(
                    f"Refused to call {host!r}: it resolves to {address}, a private, loopback, link-local or "
                    "otherwise non-public address. An operator can allow it with BACKFLOW_EGRESS_ALLOW.",
                    reason="non_public_address",
                )
        return addresses


# -- name lookups ----------------------------------------------------------------------------------
#
# getaddrinfo holds a thread until the resolver answers: with resolv.conf's defaults, 10 s and more
# for a name whose server never answers, after the call that asked for it ended with its 504. On
# the event loop's shared executor (a handful of threads) a tenant's unanswerable names made every
# other tenant's lookups wait. Lookups run on a pool of their own, and one owner (a tenant, set by
# whoever calls out on its behalf: `lookups_for`) holds at most BACKFLOW_LOOKUPS_PER_TENANT of its
# threads, counted until the thread is free again; beyond, its lookup is refused at once.

lookup_owner = contextvars.ContextVar("lookup_owner", default=None)


@contextlib.contextmanager
def lookups_for(owner):
    """Count the name lookups made in this block against `owner`'s share."""
    token = lookup_owner.set(owner)
    try:
        yield
    finally:
        lookup_owner.reset(token)


def blocking_getaddrinfo(host, port):
    """The system resolver, as anyio calls it (IDNA 2008 with UTS 46 for names that are not ASCII)."""
    try:
        encoded = host.encode("ascii")
    except UnicodeEncodeError:
        try:
            encoded = idna.encode(host, uts46=True)
        except idna.IDNAError as exc:
            raise socket.gaierror(socket.EAI_NONAME, f"not a valid host name ({exc})") from None
    return socket.getaddrinfo(encoded, port, type=socket.SOCK_STREAM)


class Lookups:
    def __init__(self):
        self._pool = None
        self._held = {}  # owner -> threads its lookups hold now
        self._lock = threading.Lock()  # guards the counts only, never a lookup

    def _executor(self):
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(settings.BACKFLOW_LOOKUP_THREADS, thread_name_prefix="backflow-dns")
            return self._pool

    async def getaddrinfo(self, host, port):
        owner, bound = lookup_owner.get(), settings.BACKFLOW_LOOKUPS_PER_TENANT
        with self._lock:
            held = self._held.get(owner, 0)
            if owner is not None and held >= bound:
                raise EgressRefused(f"Cannot resolve {host!r} now: {held} name lookups of this tenant are still "
                                    "unanswered (BACKFLOW_LOOKUPS_PER_TENANT); retry later.", reason="unresolvable")
            self._held[owner] = held + 1
        future = self._executor().submit(blocking_getaddrinfo, host, port)
        future.add_done_callback(lambda _: self._release(owner))
        return await asyncio.wrap_future(future)

    def _release(self, owner):
        with self._lock:
            self._held[owner] -= 1
            if not self._held[owner]:
                del self._held[owner]


lookups = Lookups()


@functools.cache
def _guarded_transport_class(client_module, core_module):
    """GuardedTransport for one client library: httpx (integrations) or httpx2 (the MCP SDK)."""

    class GuardedNetworkBackend(core_module.AsyncNetworkBackend):
        def __init__(self, policy, inner=None):
            self.policy = policy
            self.inner = inner or core_module.AnyIOBackend()

        async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
            if self.policy.host_allowed(host):
                return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
            last_error = None
            for address in await self.policy.resolve(host, port):
                try:
                    return await self.inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
                except core_module.ConnectError as exc:
                    last_error = exc
            raise last_error

        async def connect_unix_socket(self, path, timeout=None, socket_options=None):
            raise EgressRefused("Unix sockets are not reachable from integrations.", reason="unix_socket")

        async def sleep(self, seconds):
            await self.inner.sleep(seconds)

    class GuardedTransport(client_module.AsyncHTTPTransport):
        """The library's transport with the guard in its pool; no proxies from the environment."""

        def __init__(self, *, policy, inner_backend=None, max_connections=200, max_keepalive=50):
            super().__init__(trust_env=False)
            self._pool = core_module.AsyncConnectionPool(
                ssl_context=client_module.create_ssl_context(trust_env=False),
                max_connections=max_connections,
                max_keepalive_connections=max_keepalive,
                keepalive_expiry=30.0,
                network_backend=GuardedNetworkBackend(policy, inner_backend),
            )

    return GuardedTransport


GuardedTransport = _guarded_transport_class(httpx, httpcore)


def guarded_client(*, policy=None, inner_backend=None, **kwargs):
    """An AsyncClient whose every connection passes the egress guard (redirects are not followed:
    callers follow them hop by hop, so each hop is checked and counted)."""
    transport = GuardedTransport(policy=policy or EgressPolicy.from_settings(), inner_backend=inner_backend)
    return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False, **kwargs)


def guarded_mcp_http_client(headers=None, timeout=None, auth=None, *, max_message_bytes=None, on_refused=None):
    """The MCP SDK's client factory (httpx2), guarded the same way: for tenants' HTTP/SSE MCP servers.

    Every answer is read through backflow.peer_bodies: decoded by the platform (one gzip or deflate
    at most), and at most `max_message_bytes` (default BACKFLOW_MCP_MAX_MESSAGE_BYTES) per JSON
    answer, or per event of an event stream (which may last for hours). Beyond it, reading the body
    fails with an error the SDK hands to the waiting call (a StreamError for a JSON answer, which
    it turns into that request's JSON-RPC error; an SSEError for a stream), and `on_refused(message)`
    is called first, so the caller can say why in its own words."""
    import httpx2

    transport = _bounded_mcp_transport_class()(
        policy=EgressPolicy.from_settings(),
        max_message_bytes=max_message_bytes or settings.BACKFLOW_MCP_MAX_MESSAGE_BYTES,
        on_refused=on_refused,
    )
    client = httpx2.AsyncClient(
        transport=transport, headers=headers, auth=auth, follow_redirects=False, trust_env=False,
        timeout=timeout or httpx2.Timeout(30.0, read=300.0),
    )
    client.headers["Accept-Encoding"] = ACCEPT_ENCODING  # only what peer_bodies decodes
    return client


@functools.cache
def _bounded_mcp_transport_class():
    import httpcore2
    import httpx2

    class MessageTooLarge(httpx2.StreamError):
        """A JSON answer refused while it was read (the SDK catches StreamError for that request)."""

    class EventRefused(httpx2.SSEError):
        """An event stream refused while it was read (the SDK catches SSEError for that stream)."""

    class BoundedStream(httpx2.AsyncByteStream):
        def __init__(self, inner, *, content_encoding, limit, event_stream, on_refused):
            self.inner, self.content_encoding, self.limit = inner, content_encoding, limit
            self.event_stream, self.on_refused = event_stream, on_refused

        async def __aiter__(self):
            what = "its event stream" if self.event_stream else "its answer"
            try:
                async for piece in decoded_chunks(self.inner, content_encoding=self.content_encoding, limit=self.limit,
                                                  what=what, setting="BACKFLOW_MCP_MAX_MESSAGE_BYTES",
                                                  per_event=self.event_stream):
                    yield piece
            except PeerBodyError as exc:
                if self.on_refused is not None:
                    self.on_refused(str(exc))
                raise (EventRefused if self.event_stream else MessageTooLarge)(str(exc)) from None

        async def aclose(self):
            await self.inner.aclose()

    class BoundedMcpTransport(_guarded_transport_class(httpx2, httpcore2)):
        def __init__(self, *, policy, max_message_bytes, on_refused=None, **kwargs):
            super().__init__(policy=policy, **kwargs)
            self.max_message_bytes, self.on_refused = max_message_bytes, on_refused

        async def handle_async_request(self, request):
            response = await super().handle_async_request(request)
            media_type = response.headers.get("content-type", "").partition(";")[0].strip().lower()
            stream = BoundedStream(response.stream, content_encoding=response.headers.get("content-encoding"),
                                   limit=self.max_message_bytes, event_stream=media_type == "text/event-stream",
                                   on_refused=self.on_refused)
            # Decoded here: the client must not decode again, and the length is no longer the header's.
            headers = [(name, value) for name, value in response.headers.raw
                       if name.lower() not in (b"content-encoding", b"content-length")]
            return httpx2.Response(response.status_code, headers=headers, stream=stream, extensions=response.extensions)

    return BoundedMcpTransport


_shared_clients = {}  # event loop -> (its client, the async generator that closes it)


async def _closed_with_the_loop(loop, client):
    """Kept suspended until the loop shuts down: asyncio.run (and so asgiref's async_to_sync)
    closes a loop's async generators before the loop, and this one closes the client."""
    try:
        yield
    finally:
        _shared_clients.pop(loop, None)
        await client.aclose()


def shared_client():
    """One pooled, guarded client per event loop (connections belong to their loop)."""
    loop = asyncio.get_running_loop()
    entry = _shared_clients.get(loop)
    if entry is None:
        for stale in [other for other in _shared_clients if other.is_closed()]:  # closed without shutting down
            del _shared_clients[stale]
        from backflow.outbound import OutboundClient

        client = OutboundClient()
        closer = _closed_with_the_loop(loop, client)
        entry = _shared_clients[loop] = (client, closer)
        loop.create_task(closer.asend(None))
    return entry[0]
