"""Tenant routes on real daphne processes: a route changed through one process is served changed by
another at its next call, whether the change came through a daphne's REST API or straight from
another process's service layer (as `mcp_stdio --tenant` or `import_config` make them). The
tenant row carries the routes' version, so this holds on the embedded default without Redis too.
"""

import time

import httpx

from integrations_app import services as integration_services
from integrations_app.models import RouteInvocation
from integrations_app.stores import DatabaseStore
from integrations_app.tests.test_runtime_helpers import *  # noqa: F403 (fixtures and helpers)
from integrations_app.tests.test_runtime_helpers import Reply, make_integration, make_route


def test_route_change_through_one_process_is_served_by_another(acme, upstream, live_daphne):
    env = {"BACKFLOW_EGRESS_ALLOW": "127.0.0.1"}
    upstream.on("GET", "/v1/rooms", lambda seen: Reply(body={"version": 1, "auth": seen.headers.get("authorization")}))
    upstream.on("GET", "/v2/rooms", lambda seen: Reply(body={"version": 2, "auth": seen.headers.get("authorization")}))
    integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name="rooms_token", value="live-secret")
    make_integration(acme, "rooms", upstream.url, [{"name": "v1", "method": "get", "path": "/v1/rooms"},
                                                   {"name": "v2", "method": "get", "path": "/v2/rooms"}],
                     auth={"type": "bearer", "secret": "rooms_token"})
    route = make_route(acme, "/rooms", [{"id": "rooms", "integration": "rooms", "action": "v1"}])
    first, second = live_daphne(**env), live_daphne(**env)
    auth = {"Authorization": f"Bearer {acme.key}"}

    with httpx.Client(timeout=10) as http:
        for server in (first, second):  # both processes build and keep acme's route table
            response = http.get(f"{server.url}/t/acme/rooms", headers=auth)
            assert response.status_code == 200, response.text
            # The upstream got the secret; its echo of it is redacted on the way back.
            assert response.json() == {"version": 1, "auth": "Bearer [redacted]"}
            assert upstream.calls()[-1].headers["authorization"] == "Bearer live-secret"
        assert http.get(f"{second.url}/t/acme/rooms").status_code == 401

        changed = http.patch(f"{first.url}/api/routes/{route['id']}/", headers=auth, json={
            "integrations": {"actions": [{"id": "rooms", "integration": "rooms", "action": "v2"}]}})
        assert changed.status_code == 200, changed.text

        for server in (second, first):
            response = http.get(f"{server.url}/t/acme/rooms", headers=auth)
            assert response.status_code == 200, response.text
            assert response.json()["version"] == 2, f"{server.url} still serves the old route"

        # Changed by a third process (this one), through the service layer: served at the next call.
        integration_services.route_update(store=DatabaseStore(tenant=acme.tenant, actor=acme.actor), route_id=route["id"],
                                          changes={"integrations": {"actions": [{"id": "rooms", "integration": "rooms", "action": "v1"}]}})
        for server in (first, second):
            assert http.get(f"{server.url}/t/acme/rooms", headers=auth).json()["version"] == 1

    deadline = time.monotonic() + 5  # rows are written after the answer is sent
    while RouteInvocation.objects.for_tenant(acme.tenant).count() < 6 and time.monotonic() < deadline:
        time.sleep(0.05)
    rows = list(RouteInvocation.objects.for_tenant(acme.tenant).order_by("created_at"))
    assert [row.status for row in rows] == [200] * 6  # a refused caller ran no route
    assert all(row.duration_ms > 0 and row.path == "/rooms" for row in rows)
    assert [s.path for s in upstream.calls()] == ["/v1/rooms", "/v1/rooms", "/v2/rooms", "/v2/rooms", "/v1/rooms", "/v1/rooms"]
