"""The build–test tools are doors too (issue 18 on top of issues 14 and 15): call_endpoint and
test_route go through the egress guard and never show a credential; import_openapi takes an
OpenAPI document as hostile input (no outside $ref, no YAML alias bombs, fetched through the
guard, size-capped); the traces are the same for any caller string as the real route's answer."""

import time

import pytest

from integrations_app.models import Integration, RouteInvocation
from integrations_app.tests.test_runtime_helpers import Reply, Tripwire, make_integration, make_route
from mcp_app.http import connection_for
from mcp_app.tests.helpers import result_json
from tenants.authentication import principal_for_token
from tests.security.test_mcp_fuzz import fuzz_session

pytestmark = pytest.mark.django_db(transaction=True)  # tool calls run, and commit, on the SDK's thread

SPEC = {"openapi": "3.1.0", "info": {"title": "Pets", "version": "1"}, "servers": [{"url": "https://pets.example.com/v1"}],
        "paths": {"/pets/{petId}": {"get": {"operationId": "getPet", "parameters": [
            {"name": "petId", "in": "path", "required": True, "schema": {"type": "string"}}], "responses": {"200": {"description": "ok"}}}}}}


@pytest.fixture
def tripwired(monkeypatch):
    """The tools' outbound client, with a network backend that fails the test if a refused address
    is ever reached."""
    from backflow import egress
    from mcp_app.tools import build

    wire = Tripwire()

    def client():  # made per call, with the policy of the test's settings at that moment
        return egress.guarded_client(inner_backend=wire)

    monkeypatch.setattr(build, "shared_client", client)
    monkeypatch.setattr("integrations_app.dispatch.shared_client", client)
    yield wire
    assert not wire.violations, wire.violations


def call(ctx, name, arguments):
    with fuzz_session(connection_for(principal_for_token(ctx.key))) as session:
        result = session.call(name, arguments)
    return result, result_json(result)


@pytest.mark.parametrize("base", ["http://10.0.0.1/v1", "http://169.254.169.254/latest", "http://[::ffff:127.0.0.1]:9/"])
def test_call_endpoint_and_test_route_are_refused_private_addresses(acme, tripwired, settings, base):
    settings.BACKFLOW_EGRESS_ALLOW = []
    make_integration(acme, "inside", base, [{"name": "peek", "method": "get", "path": "/x"}])
    make_route(acme, "/peek", [{"integration": "inside", "action": "peek"}], requireAuth=False)
    result, entry = call(acme, "call_endpoint", {"integration": "inside", "endpoint": "peek"})
    assert not result.is_error and "Refused to call" in entry["error"] and entry["upstreamStatus"] is None, entry
    result, tested = call(acme, "test_route", {"method": "get", "path": "/peek"})
    assert tested["status"] == 502 and "Refused to call" in tested["trace"][0]["error"], tested
    assert tripwired.reached == []


def test_traces_never_show_a_credential(acme, upstream, tripwired, settings):
    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]
    from integrations_app import services

    services.secret_create(tenant=acme.tenant, actor=acme.actor, name="q_key", value="qk-secret/+=value")
    upstream.on("GET", "/echo", lambda seen: Reply(status=400, body={"got": seen.query}))
    make_integration(acme, "q", upstream.url, [{"name": "echo", "method": "get", "path": "/echo"}],
                     auth={"type": "api_key", "name": "key", "in": "query", "secret": "q_key"})
    make_route(acme, "/echo", [{"integration": "q", "action": "echo"}], requireAuth=False)
    _, entry = call(acme, "call_endpoint", {"integration": "q", "endpoint": "echo"})
    _, tested = call(acme, "test_route", {"method": "get", "path": "/echo"})
    assert upstream.calls("/echo")[0].query["key"] == "qk-secret/+=value"  # it was sent
    for shown in (entry, tested):
        assert "qk-secret" not in str(shown), shown
    assert "key=%5Bredacted%5D" in entry["url"] or "key=[redacted]" in entry["url"], entry["url"]


def test_test_route_is_recorded_as_a_test_and_limited_like_a_caller(acme, upstream, tripwired, settings):
    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]
    settings.BACKFLOW_ROUTE_RATE_LIMIT = (2, 60)
    upstream.on("GET", "/ok", Reply(body={"ok": True}))
    make_integration(acme, "up", upstream.url, [{"name": "ok", "method": "get", "path": "/ok"}])
    make_route(acme, "/ok", [{"integration": "up", "action": "ok"}], requireAuth=False)
    from django.core.cache import cache

    cache.clear()
    answers = [call(acme, "test_route", {"method": "get", "path": "/ok"}) for _ in range(3)]
    assert [data.get("status") for _, data in answers[:2]] == [200, 200]
    assert answers[2][0].is_error and answers[2][1]["retryAfterSeconds"] >= 1, answers[2]
    deadline = time.monotonic() + 5
    while RouteInvocation.objects.for_tenant(acme.tenant).count() < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(RouteInvocation.objects.for_tenant(acme.tenant).values_list("is_test", flat=True)) == [True, True]


@pytest.mark.parametrize("spec, fragment", [
    ({**SPEC, "paths": {"/a": {"$ref": "http://127.0.0.1:9/paths.json"}}}, "outside the document"),
    ({**SPEC, "paths": {"/a": {"$ref": "file:///etc/passwd"}}}, "outside the document"),
    ("a: &a [x, x, x]\nb: &b [*a, *a, *a]\nc: &c [*b, *b, *b]\nd: [*c, *c, *c]\n", "aliases"),
    ("openapi: 3.1.0\ninfo: {title: x, version: '1'}\nservers: [{url: 'https://x.example.com'}]\npaths: {}\n", "no operation"),
    ({**SPEC, "servers": [{"url": "/relative"}]}, "absolute baseUrl"),
])
def test_import_openapi_refuses_hostile_documents(acme, spec, fragment):
    result, data = call(acme, "import_openapi", {"integration": "pets", "spec": spec})
    assert result.is_error and fragment in str(data), data
    assert not Integration.objects.for_tenant(acme.tenant).exists()


def test_import_openapi_fetches_through_the_guard_and_caps_the_size(acme, upstream, tripwired, settings):
    settings.BACKFLOW_EGRESS_ALLOW = []
    result, data = call(acme, "import_openapi", {"integration": "pets", "url": "http://10.1.2.3/openapi.json"})
    assert result.is_error and "Refused to call" in str(data), data
    assert tripwired.reached == []

    settings.BACKFLOW_EGRESS_ALLOW, settings.BACKFLOW_UPSTREAM_MAX_BYTES = ["127.0.0.1"], 4096
    upstream.on("GET", "/big.json", Reply(body={"openapi": "3.1.0", "x": "y" * 10_000}))
    result, data = call(acme, "import_openapi", {"integration": "pets", "url": f"{upstream.url}/big.json"})
    assert result.is_error and "larger than 4096 bytes" in str(data), data
    upstream.on("GET", "/openapi.json", Reply(body=SPEC))
    result, data = call(acme, "import_openapi", {"integration": "pets", "url": f"{upstream.url}/openapi.json"})
    assert not result.is_error and data["endpoints"] == ["getPet"], data
    stored = Integration.objects.for_tenant(acme.tenant).get(name="pets")
    assert stored.base_url == "https://pets.example.com/v1" and stored.endpoints[0]["path"] == "/pets/{petId}"
