"""The route runtime as an upstream sees it: every auth type, chaining and templates, concurrency.

Every call goes through the real ASGI app (/t/<tenant>/<path>) in-process, out through the real
guarded httpx client to a local upstream on 127.0.0.1; the tripwire fails the test if anything
else is ever dialled.
"""

import base64
import time
import uuid

import pytest

from integrations_app import services as integration_services
from integrations_app.models import RouteInvocation
from integrations_app.tests.test_runtime_helpers import *  # noqa: F403 (fixtures and helpers)
from integrations_app.tests.test_runtime_helpers import Reply, make_integration, make_route

ECHO = [{"name": "echo", "method": "get", "path": "/echo"}]


def open_route(ctx, path="/probe", integration="up", action="echo", params=None, **extra):
    return make_route(ctx, path, [{"id": "a", "integration": integration, "action": action, "params": params or {}}],
                      requireAuth=False, **extra)


def store_secret(ctx, name, value):
    integration_services.secret_create(tenant=ctx.tenant, actor=ctx.actor, name=name, value=value)


# -- auth types -------------------------------------------------------------------------------


def test_auth_none_sends_no_credentials(acme, upstream, inprocess):
    make_integration(acme, "up", upstream.url, ECHO)
    open_route(acme)
    response = inprocess.call("GET", "/t/acme/probe")
    assert response.status_code == 200, response.text
    seen = upstream.calls("/echo")[-1]
    assert "authorization" not in seen.headers and seen.query == {}


def test_auth_bearer_from_a_stored_secret(acme, upstream, inprocess):
    store_secret(acme, "up_token", "tok-Bearer-123")
    make_integration(acme, "up", upstream.url, ECHO, auth={"type": "bearer", "secret": "up_token"})
    open_route(acme)
    response = inprocess.call("GET", "/t/acme/probe")
    assert response.status_code == 200, response.text
    assert upstream.calls("/echo")[-1].headers["authorization"] == "Bearer tok-Bearer-123"


def test_auth_basic(acme, upstream, inprocess):
    store_secret(acme, "up_password", "pa:ss wörd")
    make_integration(acme, "up", upstream.url, ECHO, auth={"type": "basic", "username": "svc", "secret": "up_password"})
    open_route(acme)
    assert inprocess.call("GET", "/t/acme/probe").status_code == 200
    scheme, _, token = upstream.calls("/echo")[-1].headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(token).decode() == "svc:pa:ss wörd"


def test_auth_api_key_in_header(acme, upstream, inprocess):
    store_secret(acme, "up_key", "key-in-header")
    make_integration(acme, "up", upstream.url, ECHO, auth={"type": "api_key", "name": "X-API-Key", "in": "header", "secret": "up_key"})
    open_route(acme)
    assert inprocess.call("GET", "/t/acme/probe").status_code == 200
    seen = upstream.calls("/echo")[-1]
    assert seen.headers["x-api-key"] == "key-in-header"
    assert "authorization" not in seen.headers and seen.query == {}


def test_auth_api_key_in_query(acme, upstream, inprocess):
    store_secret(acme, "up_key", "key in query&=")
    make_integration(acme, "up", upstream.url, ECHO, auth={"type": "api_key", "name": "api_key", "in": "query", "secret": "up_key"})
    open_route(acme, params={"page": 2})
    assert inprocess.call("GET", "/t/acme/probe").status_code == 200
    seen = upstream.calls("/echo")[-1]
    assert seen.query == {"api_key": "key in query&=", "page": "2"}
    assert "x-api-key" not in seen.headers and "authorization" not in seen.headers


def _token_endpoint(upstream, expires_in):
    issued = []

    def token(seen):
        issued.append(seen.form)
        return Reply(body={"access_token": f"tok-{len(issued)}", "token_type": "Bearer", "expires_in": expires_in})

    upstream.on("POST", "/oauth/token", token)
    return issued


def test_auth_oauth2_client_credentials_token_is_cached_until_expiry(acme, upstream, inprocess):
    # expires_in 32 s: the runtime keeps a token for its lifetime minus 30 s, i.e. two seconds here.
    issued = _token_endpoint(upstream, expires_in=32)
    client_id = f"client-{uuid.uuid4().hex[:8]}"  # a fresh token cache key, even with a shared Redis
    store_secret(acme, "up_client_secret", "cs-oauth-456")
    make_integration(acme, "up", upstream.url, ECHO, auth={
        "type": "oauth2_client_credentials", "tokenUrl": f"{upstream.url}/oauth/token", "clientId": client_id,
        "secret": "up_client_secret", "scopes": ["read", "write"]})
    open_route(acme)

    async def twice(http):
        return [await http.get("/t/acme/probe") for _ in range(2)]

    assert [r.status_code for r in inprocess.run(twice)] == [200, 200]
    assert len(issued) == 1, "two route calls must share one token"
    assert issued[0] == {"grant_type": "client_credentials", "client_id": client_id, "client_secret": "cs-oauth-456",
                         "scope": "read write"}
    assert [s.headers["authorization"] for s in upstream.calls("/echo")] == ["Bearer tok-1", "Bearer tok-1"]

    time.sleep(2.2)  # the cached token has expired
    assert inprocess.call("GET", "/t/acme/probe").status_code == 200
    assert len(issued) == 2
    assert upstream.calls("/echo")[-1].headers["authorization"] == "Bearer tok-2"


def test_oauth2_token_refused_is_a_502_without_the_client_secret(acme, upstream, inprocess):
    upstream.on("POST", "/oauth/token", lambda seen: Reply(401, {"error": "invalid_client", "got": seen.form}))
    store_secret(acme, "up_client_secret", "cs-refused-789")
    make_integration(acme, "up", upstream.url, ECHO, auth={
        "type": "oauth2_client_credentials", "tokenUrl": f"{upstream.url}/oauth/token",
        "clientId": f"client-{uuid.uuid4().hex[:8]}", "secret": "up_client_secret"})
    open_route(acme)
    response = inprocess.call("GET", "/t/acme/probe")
    assert response.status_code == 502
    assert "'a'" in response.json()["error"] and "OAuth" in response.json()["error"]
    assert "cs-refused-789" not in response.text
    assert not upstream.calls("/echo")


@pytest.mark.parametrize("auth, secret_value, forms", [
    ({"type": "bearer", "secret": "s"}, "tok-leak-bearer", lambda v: [v]),
    ({"type": "basic", "username": "u", "secret": "s"}, "pw-leak-basic", lambda v: [v, base64.b64encode(f"u:{v}".encode()).decode()]),
    ({"type": "api_key", "name": "X-Key", "in": "header", "secret": "s"}, "key-leak-header", lambda v: [v]),
    ({"type": "api_key", "name": "key", "in": "query", "secret": "s"}, "key leak/query+",
     lambda v: [v, "key%20leak%2Fquery%2B", "key+leak%2Fquery%2B"]),
])
def test_secret_values_never_appear_in_an_error_answer_or_invocation_row(acme, upstream, inprocess, auth, secret_value, forms):
    """An upstream that echoes what it got (headers, query, the raw URL) in a 4xx answer: the route's
    502 carries the upstream's body for debugging, but never the tenant's credential."""
    def echo_in_error(seen):
        raw = seen.path + "?" + "&".join(f"{k}={v}" for k, v in seen.query.items())
        return Reply(401, {"error": "bad credentials", "headers": seen.headers, "query": seen.query, "raw": raw})

    upstream.on("GET", "/echo", echo_in_error)
    store_secret(acme, "s", secret_value)
    make_integration(acme, "up", upstream.url, ECHO, auth=auth)
    open_route(acme)
    response = inprocess.call("GET", "/t/acme/probe")
    assert response.status_code == 502, response.text
    body = response.json()
    assert body["upstreamStatus"] == 401 and "bad credentials" in str(body["upstreamBody"])
    raw_seen = str(upstream.calls("/echo")[-1].headers) + str(upstream.calls("/echo")[-1].query)
    assert secret_value in raw_seen or any(f in raw_seen for f in forms(secret_value))  # the upstream did get it
    for form in forms(secret_value):
        assert form not in response.text, f"{form!r} leaked into the error answer"
    row = RouteInvocation.objects.for_tenant(acme.tenant).get()
    assert row.status == 502
    for form in forms(secret_value):
        assert all(form not in str(value) for value in (row.path, row.error, row.method))


# -- templates and chaining ------------------------------------------------------------------------

BOOKINGS = [
    {"name": "listSlots", "method": "get", "path": "/slots", "query": {"date": "{{params.date}}"}},
    {"name": "getBooking", "method": "get", "path": "/bookings/{id}"},
    {"name": "createBooking", "method": "post", "path": "/bookings"},
    {"name": "search", "method": "get", "path": "/search"},
    {"name": "slow", "method": "get", "path": "/slow/{n}"},
]


@pytest.fixture
def bookings(acme, upstream):
    upstream.on("GET", "/slots", lambda seen: Reply(body={"date": seen.query.get("date"), "first": {"id": 7, "seats": 3},
                                                          "slots": [7, 8]}))
    upstream.on("POST", "/bookings", lambda seen: Reply(201, {"booking": "bk-1", "received": seen.json}))
    make_integration(acme, "bookings", upstream.url, BOOKINGS)
    return upstream


def test_chained_actions_keep_json_types_and_fill_request_templates(acme, bookings, inprocess):
    make_route(acme, "/book", method="post", actions=[
        {"id": "slots", "integration": "bookings", "action": "listSlots", "params": {"date": "{{request.query.date}}"}},
        {"id": "create", "integration": "bookings", "action": "createBooking", "params": {
            "slot": "{{steps.slots.result.first.id}}", "seats": "{{steps.slots.result.first.seats}}",
            "label": "slot {{steps.slots.result.first.id}} for {{request.body.name}}",
            "customer": "{{request.body.customer}}", "all": "{{steps.slots.result.slots}}"}},
    ], requireAuth=False)
    response = inprocess.call("POST", "/t/acme/book?date=2025-06-01", json={"name": "Ann", "customer": {"id": 5, "vip": True}})
    assert response.status_code == 200, response.text
    assert upstream_query(bookings, "/slots") == {"date": "2025-06-01"}
    create = bookings.calls("/bookings")[-1]
    # leftover params of a POST become the JSON body; single placeholders keep their JSON type
    assert create.json == {"slot": 7, "seats": 3, "label": "slot 7 for Ann", "customer": {"id": 5, "vip": True}, "all": [7, 8]}
    assert create.query == {}
    # default response: the last action's result
    assert response.json() == {"booking": "bk-1", "received": create.json}


def upstream_query(upstream, path):
    return upstream.calls(path)[-1].query


def test_path_params_and_leftover_params_go_to_the_query_for_get(acme, bookings, inprocess):
    make_route(acme, "/bookings/{id}", actions=[
        {"id": "get", "integration": "bookings", "action": "getBooking",
         "params": {"id": "{{request.params.id}}", "expand": "{{request.query.expand}}", "limit": 5, "flags": ["a", "b"]}},
    ], requireAuth=False)
    response = inprocess.call("GET", "/t/acme/bookings/bk-42?expand=customer")
    assert response.status_code == 200, response.text
    seen = bookings.calls()[-1]
    assert seen.method == "GET" and seen.path == "/bookings/bk-42"
    assert seen.query == {"expand": "customer", "limit": "5", "flags": '["a", "b"]'}
    assert seen.body == b""


def test_response_template_shapes_the_answer(acme, bookings, inprocess):
    make_route(acme, "/summary", actions=[
        {"id": "slots", "integration": "bookings", "action": "listSlots", "params": {"date": "{{request.query.date}}"}},
        {"id": "found", "integration": "bookings", "action": "search", "params": {"q": "{{request.query.q}}"}},
    ], response={"date": "{{steps.slots.result.date}}", "count": "{{steps.slots.result.first.seats}}",
                 "query": "{{steps.found.result.query}}", "note": "{{request.query.q}} on {{steps.slots.result.date}}"},
        requireAuth=False)
    response = inprocess.call("GET", "/t/acme/summary?date=2025-06-02&q=yoga")
    assert response.status_code == 200, response.text
    assert response.json() == {"date": "2025-06-02", "count": 3, "query": {"q": "yoga"}, "note": "yoga on 2025-06-02"}


def test_independent_actions_run_concurrently_dependent_ones_in_order(acme, upstream, inprocess):
    upstream.on("GET", "/slow/1", Reply(body={"n": 1}, delay=0.5))
    upstream.on("GET", "/slow/2", Reply(body={"n": 2}, delay=0.5))
    make_integration(acme, "bookings", upstream.url, BOOKINGS)
    make_route(acme, "/parallel", actions=[
        {"id": "one", "integration": "bookings", "action": "slow", "params": {"n": 1}},
        {"id": "two", "integration": "bookings", "action": "slow", "params": {"n": 2}},
    ], response={"one": "{{steps.one.result.n}}", "two": "{{steps.two.result.n}}"}, requireAuth=False)
    make_route(acme, "/serial", actions=[
        {"id": "one", "integration": "bookings", "action": "slow", "params": {"n": 1}},
        {"id": "two", "integration": "bookings", "action": "slow", "params": {"n": "{{steps.one.result.n}}", "after": 1}},
    ], response={"two": "{{steps.two.result.n}}"}, requireAuth=False)

    async def timed(http, path):
        await http.get("/t/acme/probe-warmup")  # builds the route table, not timed
        started = time.monotonic()
        response = await http.get(path)
        return response, time.monotonic() - started

    response, elapsed = inprocess.run(lambda http: timed(http, "/t/acme/parallel"))
    assert response.status_code == 200 and response.json() == {"one": 1, "two": 2}
    assert elapsed < 0.9, f"two independent 0.5 s calls took {elapsed:.2f} s: they did not run concurrently"
    first, second = upstream.calls("/slow/1")[-1], upstream.calls("/slow/2")[-1]
    assert abs(first.at - second.at) < 0.3

    response, elapsed = inprocess.run(lambda http: timed(http, "/t/acme/serial"))
    assert response.status_code == 200 and response.json() == {"two": 1}
    assert elapsed >= 1.0, f"a dependent action started before the one it references finished ({elapsed:.2f} s)"
    one, two = upstream.calls("/slow/1")[-2:]
    assert (one.query, two.query) == ({}, {"after": "1"})
    assert two.at - one.at >= 0.5


def test_a_credential_echoed_in_a_successful_answer_is_redacted(acme, upstream, inprocess):
    """A public route's caller must not read the tenant's credential off an upstream that echoes it."""
    upstream.on("GET", "/echo", lambda seen: Reply(200, {"youSent": seen.headers.get("authorization"), "ok": True}))
    store_secret(acme, "s", "tok-echoed-on-success")
    make_integration(acme, "up", upstream.url, ECHO, auth={"type": "bearer", "secret": "s"})
    open_route(acme)
    response = inprocess.call("GET", "/t/acme/probe")
    assert response.status_code == 200, response.text
    assert response.json() == {"youSent": "Bearer [redacted]", "ok": True}
