"""Tenant routes on real daphne processes: a route changed through one process is served changed by
another at its next call (the route-table version lives in the shared cache, Redis).

Both children share a Redis: the run's REDIS_URL when it has one, else a spare database of a
Redis on 127.0.0.1:6379; without a reachable Redis the test is skipped.
"""

import socket
import time

import httpx
import pytest
from django.conf import settings

from integrations_app import services as integration_services
from integrations_app.models import RouteInvocation
from integrations_app.tests.test_runtime_helpers import *  # noqa: F403 (fixtures and helpers)
from integrations_app.tests.test_runtime_helpers import Reply, make_integration, make_route

SPARE_REDIS_URL = "redis://127.0.0.1:6379/13"


def redis_for_children():
    if settings.REDIS_URL:
        return {}  # the children inherit the run's REDIS_URL
    try:
        with socket.create_connection(("127.0.0.1", 6379), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            if not sock.recv(16).startswith(b"+PONG"):
                raise OSError("not a Redis")
    except OSError as exc:
        pytest.skip(f"no Redis on 127.0.0.1:6379 to share route versions between two processes ({exc})")
    return {"REDIS_URL": SPARE_REDIS_URL}


def test_route_change_through_one_process_is_served_by_another(acme, upstream, live_daphne):
    env = {"BACKFLOW_EGRESS_ALLOW": "127.0.0.1", **redis_for_children()}
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
            assert response.json() == {"version": 1, "auth": "Bearer live-secret"}
        assert http.get(f"{second.url}/t/acme/rooms").status_code == 401

        changed = http.patch(f"{first.url}/api/routes/{route['id']}/", headers=auth, json={
            "integrations": {"actions": [{"id": "rooms", "integration": "rooms", "action": "v2"}]}})
        assert changed.status_code == 200, changed.text

        for server in (second, first):
            response = http.get(f"{server.url}/t/acme/rooms", headers=auth)
            assert response.status_code == 200, response.text
            assert response.json()["version"] == 2, f"{server.url} still serves the old route"

    deadline = time.monotonic() + 5  # rows are written after the answer is sent
    while RouteInvocation.objects.for_tenant(acme.tenant).count() < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    rows = list(RouteInvocation.objects.for_tenant(acme.tenant).order_by("created_at"))
    assert [row.status for row in rows] == [200, 200, 200, 200]  # a refused caller ran no route
    assert all(row.duration_ms > 0 and row.path == "/rooms" for row in rows)
    assert [s.path for s in upstream.calls()] == ["/v1/rooms", "/v1/rooms", "/v2/rooms", "/v2/rooms"]
