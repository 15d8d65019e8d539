"""The egress guard: private, loopback, link-local and other non-public targets are refused before
any connection is attempted, on the first request, on every redirect hop and on OAuth token fetches.

The guard's inner network backend is the tripwire: if the guard ever hands it a target the test did
not allow (only 127.0.0.1, where the tests' own upstream listens), the test fails on the spot.
Nothing here sends a packet beyond loopback or looks up a name outside /etc/hosts.
"""

import asyncio

import httpx
import pytest

from backflow.egress import EgressPolicy, EgressRefused, guarded_client
from integrations_app import services as integration_services
from integrations_app.tests.test_runtime_helpers import *  # noqa: F403 (fixtures and helpers)
from integrations_app.tests.test_runtime_helpers import Reply, make_integration, make_route


def fetch(url, policy, tripwire):
    async def main():
        async with guarded_client(policy=policy, inner_backend=tripwire, timeout=5) as client:
            return await client.get(url)

    return asyncio.run(main())


def refused_targets(port):
    return [
        f"http://127.0.0.1:{port}/",
        "http://10.0.0.1/",
        "http://172.16.0.1/",
        "http://192.168.1.1/",
        "http://100.64.0.1/",  # carrier-grade NAT
        "http://169.254.169.254/latest/meta-data/",  # cloud metadata
        "http://0.0.0.0/",
        "http://224.0.0.1/",  # multicast
        f"http://[::1]:{port}/",
        "http://[fd00::1]/",
        "http://[fe80::1]/",
        f"http://[::ffff:127.0.0.1]:{port}/",  # IPv4-mapped loopback
        "http://[::ffff:169.254.169.254]/",
        f"http://localhost:{port}/",  # a name: resolved (from /etc/hosts) and the address checked
    ]


@pytest.mark.parametrize("index", range(14))
def test_refused_without_ever_reaching_the_network(upstream, tripwire, index):
    url = refused_targets(upstream.port)[index]
    with pytest.raises(EgressRefused) as refused:
        fetch(url, EgressPolicy([]), tripwire)
    assert "BACKFLOW_EGRESS_ALLOW" in str(refused.value)
    assert tripwire.reached == []
    assert upstream.calls() == []


def test_allowing_one_address_allows_nothing_else(upstream, tripwire):
    policy = EgressPolicy(["127.0.0.1"])
    assert fetch(f"{upstream.url}/ok", policy, tripwire).status_code == 200
    for url in refused_targets(upstream.port)[1:-1]:
        with pytest.raises(EgressRefused):
            fetch(url, policy, tripwire)
    assert tripwire.reached == [("127.0.0.1", upstream.port)]


@pytest.mark.parametrize("allow", [["127.0.0.0/8"], [" 127.0.0.0/8 "], ["127.0.0.1"], ["10.0.0.0/8", "127.0.0.1/32"]])
def test_an_allowed_network_lets_loopback_through(upstream, tripwire, allow):
    policy = EgressPolicy(allow)
    response = fetch(f"{upstream.url}/ok?x=1", policy, tripwire)
    assert response.status_code == 200 and response.json()["query"] == {"x": "1"}
    # a name is resolved once by the guard, which connects to the very address it checked
    assert fetch(f"http://localhost:{upstream.port}/named", policy, tripwire).json()["path"] == "/named"
    assert tripwire.hosts() == {"127.0.0.1"}
    with pytest.raises(EgressRefused):
        fetch("http://169.254.169.254/", policy, tripwire)


@pytest.mark.parametrize("allow", [["localhost"], ["LocalHost"]])
def test_an_allowed_host_name_is_let_through_by_name(upstream, tripwire, allow):
    tripwire.allowed.add("localhost")
    policy = EgressPolicy(allow)
    assert fetch(f"http://localhost:{upstream.port}/ok", policy, tripwire).status_code == 200
    assert tripwire.hosts() == {"localhost"}
    with pytest.raises(EgressRefused):  # the name is allowed, not the addresses it has
        fetch(f"{upstream.url}/ok", policy, tripwire)
    assert len(upstream.calls()) == 1


def test_guarded_client_ignores_proxy_environment(upstream, tripwire, monkeypatch):
    monkeypatch.setenv("HTTP_PROXY", "http://10.0.0.1:3128")
    monkeypatch.setenv("ALL_PROXY", "http://10.0.0.1:3128")
    assert fetch(f"{upstream.url}/ok", EgressPolicy(["127.0.0.1"]), tripwire).status_code == 200
    assert tripwire.reached == [("127.0.0.1", upstream.port)]


def test_guarded_client_does_not_follow_redirects_itself(upstream, tripwire):
    upstream.on("GET", "/go", Reply(302, b"", headers={"Location": "http://10.0.0.1/"}))
    response = fetch(f"{upstream.url}/go", EgressPolicy(["127.0.0.1"]), tripwire)
    assert response.status_code == 302 and isinstance(response, httpx.Response)


# -- through a route -------------------------------------------------------------------------------

ENDPOINTS = [{"name": "go", "method": "get", "path": "/go"}, {"name": "fetch", "method": "get", "path": "/fetch"}]


def _route(ctx, action):
    make_route(ctx, f"/{action}", [{"id": "hop", "integration": "up", "action": action, "params": {}}], requireAuth=False)


@pytest.mark.parametrize("target", ["http://10.0.0.1/", "http://169.254.169.254/latest/meta-data/", "http://[::1]/",
                                    "http://[::ffff:192.168.0.10]:8080/admin"])
def test_a_redirect_from_an_allowed_upstream_to_a_private_address_is_refused(acme, upstream, inprocess, tripwire, target):
    upstream.on("GET", "/go", Reply(302, b"", headers={"Location": target}))
    make_integration(acme, "up", upstream.url, ENDPOINTS)
    _route(acme, "go")
    response = inprocess.call("GET", "/t/acme/go")
    assert response.status_code == 502, response.text
    error = response.json()["error"]
    assert "action 'hop' (up.go)" in error and "Refused to call" in error and "BACKFLOW_EGRESS_ALLOW" in error
    assert tripwire.hosts() == {"127.0.0.1"}
    assert len(upstream.calls("/go")) == 1


def test_route_to_loopback_is_refused_unless_the_operator_allows_it(acme, upstream, inprocess, tripwire, settings):
    make_integration(acme, "up", upstream.url, ENDPOINTS)
    _route(acme, "fetch")
    settings.BACKFLOW_EGRESS_ALLOW = []
    response = inprocess.call("GET", "/t/acme/fetch")
    assert response.status_code == 502 and "Refused to call '127.0.0.1'" in response.json()["error"]
    assert tripwire.reached == [] and upstream.calls() == []

    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.0/8"]
    response = inprocess.call("GET", "/t/acme/fetch")
    assert response.status_code == 200 and response.json()["path"] == "/fetch"


def test_oauth_token_url_on_a_private_address_is_refused(acme, upstream, inprocess, tripwire):
    integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name="cs", value="client-secret-x")
    make_integration(acme, "up", upstream.url, ENDPOINTS, auth={
        "type": "oauth2_client_credentials", "tokenUrl": "http://169.254.169.254/token", "clientId": "c", "secret": "cs"})
    _route(acme, "fetch")
    response = inprocess.call("GET", "/t/acme/fetch")
    assert response.status_code == 502, response.text
    assert "OAuth token endpoint" in response.json()["error"] and "Refused to call" in response.json()["error"]
    assert "client-secret-x" not in response.text
    assert tripwire.reached == [] and upstream.calls() == []


def test_route_to_an_allowed_host_name(acme, upstream, inprocess, tripwire, settings):
    make_integration(acme, "up", f"http://localhost:{upstream.port}", ENDPOINTS)
    _route(acme, "fetch")
    settings.BACKFLOW_EGRESS_ALLOW = []
    refused = inprocess.call("GET", "/t/acme/fetch")
    assert refused.status_code == 502 and "Refused to call 'localhost'" in refused.json()["error"]
    assert tripwire.reached == []

    settings.BACKFLOW_EGRESS_ALLOW = ["localhost"]
    response = inprocess.call("GET", "/t/acme/fetch")
    assert response.status_code == 200 and response.json()["path"] == "/fetch"
    # Let through by name, though its address 127.0.0.1 is not listed (the connector resolved it).
    assert tripwire.hosts() == {"127.0.0.1"}


def test_a_redirect_to_a_location_that_is_no_url_is_the_upstreams_fault(acme, upstream, inprocess, tripwire):
    upstream.on("GET", "/go", Reply(302, b"", headers={"Location": "\xff\xfe"}))  # not UTF-8 on the wire
    make_integration(acme, "up", upstream.url, ENDPOINTS)
    _route(acme, "go")
    response = inprocess.call("GET", "/t/acme/go")
    assert response.status_code == 502, response.text
    assert "redirected (302)" in response.json()["error"] and "not a valid URL" in response.json()["error"]


@pytest.mark.parametrize("status", [300, 304, 305])
def test_a_3xx_answer_that_is_not_followed_is_not_a_success(acme, upstream, inprocess, tripwire, status):
    upstream.on("GET", "/go", Reply(status, b"", headers={"Location": "http://10.0.0.1/"}))
    make_integration(acme, "up", upstream.url, ENDPOINTS)
    _route(acme, "go")
    response = inprocess.call("GET", "/t/acme/go")
    assert response.status_code == 502 and f"the upstream answered {status}" in response.json()["error"], response.text
    assert tripwire.hosts() == {"127.0.0.1"}
