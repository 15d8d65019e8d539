"""What the route runtime counts: route invocations by status class, upstream calls by outcome,
egress and rate-limit refusals (in-process, against local upstreams). Each expectation is a
delta of the process's counters, written out here."""

import asyncio

import pytest
from prometheus_client import REGISTRY

from backflow.egress import EgressPolicy, EgressRefused
from integrations_app.tests.test_runtime_helpers import (  # noqa: F401 (fixtures)
    Reply,
    inprocess,
    make_integration,
    make_route,
    tripwire,
    upstream,
    upstreams,
)


def counted(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


class Delta:
    """Counters before and after: `delta(name, **labels)`."""

    def __init__(self, *series):
        self.series = series
        self.before = {key: counted(key[0], **dict(key[1])) for key in series}

    def __call__(self, name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return counted(name, **labels) - self.before[key]


def series(name, **labels):
    return name, tuple(sorted(labels.items()))


UPSTREAM = "backflow_upstream_calls_total"
ROUTES = "backflow_route_invocations_total"


@pytest.fixture
def routed(acme, upstream):
    make_integration(acme, "up", upstream.url, [
        {"name": "fine", "method": "get", "path": "/fine"},
        {"name": "broken", "method": "get", "path": "/broken"},
        {"name": "slow", "method": "get", "path": "/slow", "timeout": 0.3},
    ])
    for name in ("fine", "broken", "slow"):
        make_route(acme, f"/{name}", [{"id": "a", "integration": "up", "action": name}], requireAuth=False)
    upstream.on("GET", "/broken", Reply(status=500, body={"error": "down"}))
    upstream.on("GET", "/slow", Reply(body={}, delay=2.0))
    return acme


def test_routes_and_upstream_calls_are_counted_by_outcome(routed, inprocess):
    delta = Delta(series(ROUTES, outcome="2xx"), series(ROUTES, outcome="5xx"), series(UPSTREAM, outcome="ok"),
                  series(UPSTREAM, outcome="http_error"), series(UPSTREAM, outcome="timeout"))
    assert inprocess.call("GET", "/t/acme/fine").status_code == 200
    assert inprocess.call("GET", "/t/acme/broken").status_code == 502
    assert inprocess.call("GET", "/t/acme/slow").status_code == 504
    assert (delta(ROUTES, outcome="2xx"), delta(ROUTES, outcome="5xx")) == (1, 2)
    assert (delta(UPSTREAM, outcome="ok"), delta(UPSTREAM, outcome="http_error"), delta(UPSTREAM, outcome="timeout")) == (1, 1, 1)


def test_a_refused_destination_is_counted_as_refused_and_as_an_egress_refusal(acme, inprocess, settings):
    settings.BACKFLOW_EGRESS_ALLOW = []
    make_integration(acme, "internal", "http://127.0.0.1:9/", [{"name": "peek", "method": "get", "path": "/admin"}])
    make_route(acme, "/peek", [{"id": "a", "integration": "internal", "action": "peek"}], requireAuth=False)
    delta = Delta(series(UPSTREAM, outcome="refused"), series("backflow_egress_refusals_total", reason="non_public_address"))
    assert inprocess.call("GET", "/t/acme/peek").status_code == 502
    assert delta(UPSTREAM, outcome="refused") == 1
    assert delta("backflow_egress_refusals_total", reason="non_public_address") == 1


def test_every_egress_refusal_names_its_reason_in_the_counter():
    delta = Delta(series("backflow_egress_refusals_total", reason="non_public_address"))
    with pytest.raises(EgressRefused):
        asyncio.run(EgressPolicy().resolve("169.254.169.254", 80))
    assert delta("backflow_egress_refusals_total", reason="non_public_address") == 1


def test_a_route_over_its_rate_limit_is_counted_as_a_refusal(routed, inprocess, settings):
    settings.BACKFLOW_ROUTE_RATE_LIMIT = (1, 3600)
    delta = Delta(series("backflow_rate_limit_refusals_total", limit="routes"))

    async def twice(http):
        return [(await http.get("/t/acme/fine")).status_code for _ in range(2)]

    assert inprocess.run(twice)[-1] == 429
    assert delta("backflow_rate_limit_refusals_total", limit="routes") >= 1
