"""Outbound HTTP on a tenant's behalf, and the guard that keeps it off the platform's own network.

The guard sits in the connection pool's network backend, so it sees every TCP connection the
client opens: the first request, each redirect hop, a retry, an OAuth token fetch. It resolves
the host itself, refuses loopback, private, link-local (cloud metadata), multicast, unspecified
and other non-global addresses unless BACKFLOW_EGRESS_ALLOW lists the host or network, and then
connects to the very address it checked (no second lookup a DNS rebinding could change).
"""

import ipaddress
import socket

import anyio
import httpcore
import httpx
from django.conf import settings


class EgressRefused(Exception):
    """A call to a refused address; the message names the host and why."""


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
        if any(address in network for network in self.networks):
            return True
        if getattr(address, "ipv4_mapped", None):
            address = address.ipv4_mapped
        return address.is_global and not address.is_multicast

    async def resolve(self, host, port):
        """The addresses to connect to, or EgressRefused naming the first forbidden one."""
        bare = host.strip("[]")
        try:
            addresses = [ipaddress.ip_address(bare)]
        except ValueError:
            try:
                infos = await anyio.getaddrinfo(bare, port, type=socket.SOCK_STREAM)
            except OSError as exc:
                raise EgressRefused(f"Cannot resolve {host!r}: {exc}.") from exc
            addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
        for address in addresses:
            if not self.address_allowed(address):
                raise EgressRefused(
                    f"Refused to call {host!r}: it resolves to {address}, a private, loopback, link-local or "
                    "otherwise non-public address. An operator can allow it with BACKFLOW_EGRESS_ALLOW."
                )
        return addresses


class GuardedNetworkBackend(httpcore.AsyncNetworkBackend):
    def __init__(self, policy, inner=None):
        self.policy = policy
        self.inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        if self.policy.host_allowed(host):
            return await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
        last_error = None
        for address in await self.policy.resolve(host, port):
            try:
                return await self.inner.connect_tcp(str(address), port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last_error = exc
        raise last_error

    async def connect_unix_socket(self, path, timeout=None, socket_options=None):
        raise EgressRefused("Unix sockets are not reachable from integrations.")

    async def sleep(self, seconds):
        await self.inner.sleep(seconds)


class GuardedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport with the guard in its pool; no proxies from the environment."""

    def __init__(self, *, policy, inner_backend=None, max_connections=200, max_keepalive=50):
        super().__init__(trust_env=False)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=httpx.create_ssl_context(trust_env=False),
            max_connections=max_connections,
            max_keepalive_connections=max_keepalive,
            keepalive_expiry=30.0,
            network_backend=GuardedNetworkBackend(policy, inner_backend),
        )


def guarded_client(*, policy=None, inner_backend=None, **kwargs):
    """An AsyncClient whose every connection passes the egress guard (redirects are not followed:
    callers follow them hop by hop, so each hop is checked and counted)."""
    transport = GuardedTransport(policy=policy or EgressPolicy.from_settings(), inner_backend=inner_backend)
    return httpx.AsyncClient(transport=transport, follow_redirects=False, trust_env=False, **kwargs)
