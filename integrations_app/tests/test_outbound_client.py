"""The integrations' aiohttp client (backflow.outbound.OutboundClient) and its guard, beside httpx's
guard tested in test_egress.py: the same refusals before any connection, the same allowances, and
what one client serving every tenant must not do (follow redirects, read proxies from the
environment, keep cookies).

The tripwire watches the event loop's socket connects, below aiohttp: a target the guard should
refuse fails the test if a connection to it is ever attempted. Nothing leaves loopback.
"""

import asyncio

import pytest
from multidict import CIMultiDict, CIMultiDictProxy

from backflow.egress import EgressPolicy, EgressRefused, shared_client
from backflow.outbound import GuardedConnector, OutboundClient, OutboundHeaders
from integrations_app.tests.test_egress import refused_targets
from integrations_app.tests.test_runtime_helpers import *  # noqa: F403 (fixtures and helpers)
from integrations_app.tests.test_runtime_helpers import Reply


def fetch(url, policy, tripwire, **kwargs):
    """(status, body, headers) of one GET through a new OutboundClient."""

    async def main():
        tripwire.watch(asyncio.get_running_loop())
        async with OutboundClient(policy=policy) as client:
            async with client.stream("GET", url, timeout=5, **kwargs) as response:
                body = b"".join([chunk async for chunk in response.aiter_raw()])
                return response.status_code, body, response.headers

    return asyncio.run(main())


# aiohttp reads these spellings of 127.0.0.1 as names: the guard resolves them and judges 127.0.0.1.
LEGACY_SPELLINGS = ["http://127.1/", "http://2130706433/", "http://0x7f.1/"]


@pytest.mark.parametrize("index", range(len(refused_targets(0))))
def test_refused_without_ever_reaching_the_network(upstream, tripwire, index):
    url = refused_targets(upstream.port)[index]
    with pytest.raises(EgressRefused) as refused:
        fetch(url, EgressPolicy([]), tripwire)
    assert "BACKFLOW_EGRESS_ALLOW" in str(refused.value)
    assert tripwire.reached == [] and upstream.calls() == []


@pytest.mark.parametrize("url", LEGACY_SPELLINGS)
def test_legacy_spellings_of_loopback_are_refused(tripwire, url):
    with pytest.raises(EgressRefused, match="127.0.0.1"):
        fetch(url, EgressPolicy(["10.0.0.0/8"]), tripwire)
    assert tripwire.reached == []


def test_the_guard_is_what_refuses(upstream, tripwire, monkeypatch):
    """With the connector's check switched off, the refused loopback call goes through: the tests
    above would see it."""
    import aiohttp

    monkeypatch.setattr(GuardedConnector, "_resolve_host", aiohttp.TCPConnector._resolve_host)
    status, _, _ = fetch(f"{upstream.url}/through", EgressPolicy([]), tripwire)
    assert status == 200 and len(upstream.calls("/through")) == 1
    assert tripwire.reached == [("127.0.0.1", upstream.port)]


@pytest.mark.parametrize("allow", [["127.0.0.0/8"], ["127.0.0.1"], ["10.0.0.0/8", "127.0.0.1/32"]])
def test_an_allowed_network_lets_loopback_through(upstream, tripwire, allow):
    policy = EgressPolicy(allow)
    status, body, _ = fetch(f"{upstream.url}/ok", policy, tripwire, params={"x": 1})
    assert status == 200 and b'"query": {"x": "1"}' in body
    # a name is resolved once, by the guard, and the connection goes to the very address it checked
    status, body, _ = fetch(f"http://localhost:{upstream.port}/named", policy, tripwire)
    assert status == 200 and b'"path": "/named"' in body
    assert tripwire.hosts() == {"127.0.0.1"}
    with pytest.raises(EgressRefused):
        fetch("http://169.254.169.254/", policy, tripwire)


def test_an_allowed_host_name_is_let_through_by_name_only(upstream, tripwire):
    policy = EgressPolicy(["LocalHost"])
    assert fetch(f"http://localhost:{upstream.port}/ok", policy, tripwire)[0] == 200
    with pytest.raises(EgressRefused):  # the name is allowed, not the addresses it has
        fetch(f"{upstream.url}/ok", policy, tripwire)
    assert len(upstream.calls()) == 1


def test_proxies_from_the_environment_are_ignored(upstream, tripwire, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    monkeypatch.setenv("ALL_PROXY", "http://10.0.0.1:3128")
    assert fetch(f"{upstream.url}/ok", EgressPolicy(["127.0.0.1"]), tripwire)[0] == 200
    assert tripwire.reached == [("127.0.0.1", upstream.port)]


def test_redirects_are_not_followed(upstream, tripwire):
    upstream.on("GET", "/go", Reply(302, b"", headers={"Location": "http://10.0.0.1/"}))
    status, _, headers = fetch(f"{upstream.url}/go", EgressPolicy(["127.0.0.1"]), tripwire)
    assert status == 302 and headers["location"] == "http://10.0.0.1/"
    assert tripwire.hosts() == {"127.0.0.1"}


def test_no_cookie_is_kept_between_calls(upstream, tripwire):
    """One client serves every tenant: a cookie set for one call is never sent on another."""
    upstream.on("GET", "/login", Reply(200, {}, headers={"Set-Cookie": "session=tenant-a; Path=/"}))

    async def main():
        tripwire.watch(asyncio.get_running_loop())
        async with OutboundClient(policy=EgressPolicy(["127.0.0.1"])) as client:
            for path in ("/login", "/next"):
                async with client.stream("GET", f"{upstream.url}{path}") as response:
                    assert response.status_code == 200

    asyncio.run(main())
    assert "cookie" not in upstream.calls("/next")[0].headers


def test_bodies_are_sent_as_httpx_sends_them(upstream, tripwire):
    """JSON compact and UTF-8, a form url-encoded, header values that are not ASCII in UTF-8, the
    query merged into the URL's: the runtime's requests are unchanged by the client under them."""

    async def main():
        tripwire.watch(asyncio.get_running_loop())
        async with OutboundClient(policy=EgressPolicy(["127.0.0.1"])) as client:
            async with client.stream("POST", f"{upstream.url}/json?a=1", params={"b": True, "c": [1, 2]},
                                     headers={"X-Name": "Zoë".encode()}, json={"name": "Zoë", "n": None}):
                pass
            async with client.stream("POST", f"{upstream.url}/form", data={"grant_type": "client_credentials", "scope": "a b"}):
                pass

    asyncio.run(main())
    sent = upstream.calls("/json")[0]
    assert sent.body == '{"name":"Zoë","n":null}'.encode() and sent.headers["content-type"] == "application/json"
    assert sent.query == {"a": "1", "b": "true", "c": "1"} and sent.headers["x-name"].encode("latin-1") == "Zoë".encode()
    assert sent.headers["accept-encoding"] == "gzip, deflate"
    form = upstream.calls("/form")[0]
    assert form.body == b"grant_type=client_credentials&scope=a+b"
    assert form.headers["content-type"] == "application/x-www-form-urlencoded"


def test_a_header_on_several_lines_reads_as_one_value():
    """As with httpx: `Content-Encoding: gzip` twice is `gzip, gzip`, which peer_bodies refuses."""
    headers = OutboundHeaders(CIMultiDictProxy(CIMultiDict([("Content-Encoding", "gzip"), ("content-encoding", "gzip")])))
    assert headers.get("content-encoding") == "gzip, gzip" and "Content-Encoding" in headers
    assert headers.get("location") is None and "location" not in headers


def test_the_shared_client_is_one_per_loop_and_closes_with_it():
    async def main():
        client = shared_client()
        assert shared_client() is client and not client.closed
        return client

    first, second = asyncio.run(main()), asyncio.run(main())
    assert first is not second and first.closed and second.closed


def test_a_tenants_unanswered_name_lookups_hold_only_its_own_share(monkeypatch, settings):
    """A name whose DNS server never answers holds a lookup thread for the resolver's whole
    timeout, after the call that asked gave up. One tenant holds at most
    BACKFLOW_LOOKUPS_PER_TENANT of them (counted until the thread is free); beyond, its lookups are
    refused at once, and another tenant's answer at once."""
    import ipaddress
    import socket
    import threading

    from backflow import egress

    settings.BACKFLOW_LOOKUPS_PER_TENANT = 2
    never, loopback_only = threading.Event(), egress.blocking_getaddrinfo

    def resolver(host, port):
        if host.endswith(".slow.test"):
            never.wait(30)
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return loopback_only(host, port)

    monkeypatch.setattr(egress, "blocking_getaddrinfo", resolver)
    policy = EgressPolicy(["127.0.0.1"])

    async def main():
        with egress.lookups_for("tenant-a"):
            stuck = [asyncio.ensure_future(policy.resolve(f"n{i}.slow.test", 80)) for i in range(2)]
            await asyncio.sleep(0.1)
            for task in stuck:  # the calls give up (their endpoint's timeout); the threads do not
                task.cancel()
            with pytest.raises(EgressRefused, match="2 name lookups of this tenant are still unanswered"):
                await policy.resolve("n3.slow.test", 80)
        with egress.lookups_for("tenant-b"):
            async with asyncio.timeout(5):
                assert await policy.resolve("localhost", 80) == [ipaddress.ip_address("127.0.0.1")]
        never.set()

    try:
        asyncio.run(main())
    finally:
        never.set()
