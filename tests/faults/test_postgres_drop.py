"""Postgres connections dropped mid-request and between requests, under a real daphne and worker.

The children reach a private database (created, migrated and dropped by the test) through a
loopback TCP proxy of the test's own, which can cut every connection, refuse new ones, or cut
the moment a given statement is sent (Postgres' protocol is plain text here: sslmode=disable).
The statement chosen is the audit INSERT of `integration.create`, sent after the integration's
own INSERT in the same transaction, so the cut lands inside a half-done write. Shown:
- a REST write cut mid-transaction answers 503 with a JSON body naming the database and a
  Retry-After (no 500 page, no traceback); an MCP tool call cut the same way answers `isError`
  naming the database; neither left a row behind (the transaction was rolled back);
- while the database refuses connections, REST, SSE POSTs, Streamable HTTP, tenant routes and
  workflow webhooks (a plain Django view) all answer 503 at once, naming the database;
- once it accepts again the very next requests succeed, and so they do after every connection was
  cut between requests (kept connections of the MCP and route apps are replaced, not reused
  broken), without restarting daphne; everything committed before the faults is intact;
- a `run_worker` child whose connections are cut, then refused for a while, keeps running and
  executes the runs queued after the database is back.

Runs when a Postgres server answers on 127.0.0.1:5432 (or BACKFLOW_TEST_POSTGRES_URL) with a role
that may create databases, whatever the run's own database; skipped otherwise.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit
from uuid import uuid4

import httpx
import pytest

from integrations_app.tests.test_runtime_helpers import Reply, Upstream
from mcp_app.tests.test_remote_multiprocess import call, streamable_result
from mcp_app.tests.test_remote_support import (
    bearer,
    exchange,
    handshake,
    post_json,
    raw_client,
    raw_sse,
    run,
)
from tests.faults.helpers import TcpProxy, wait_until
from tests.live import ROOT, Daphne, child_env, postgres_admin_url, postgres_url
from workflows_app.tests.helpers import Worker

psycopg = pytest.importorskip("psycopg")

STREAMABLE_HEADERS = {"Accept": "application/json, text/event-stream"}
# The audit row's action, sent after the integration's INSERT on the same connection (same
# transaction): cutting there leaves a half-done write for the database to roll back.
HALF_WRITE = {"marker": b"integration.create", "after": b'INSERT INTO "integrations_app_integration"'}
SETUP = """
import django
django.setup()
from django.core.management import call_command
from tenants import services
from tenants.principals import Principal

call_command("migrate", verbosity=0)
tenant = services.tenant_create(slug="acme", name="Acme")
_, key = services.api_key_create(tenant=tenant, actor=Principal.system(tenant, "faults"), name="faults")
print(key)
"""


class Stack:
    """A private database, a proxy to it, a daphne on the proxy, a local upstream."""

    def __init__(self, admin):
        self.admin = admin
        self.name = f"bf_faults_{os.getpid()}_{uuid4().hex[:8]}"
        self.direct = postgres_url(admin, self.name)
        self.proxy = self.server = self.upstream = None

    def start(self):
        with psycopg.connect(self.admin, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'CREATE DATABASE "{self.name}"')
        setup = subprocess.run([sys.executable, "-c", SETUP], check=False, cwd=ROOT, capture_output=True, text=True, timeout=120,
                               env=child_env(DATABASE_URL=self.direct, REDIS_URL="", DJANGO_SETTINGS_MODULE="backflow.settings"))
        assert setup.returncode == 0, setup.stderr[-3000:]
        self.key = setup.stdout.strip().splitlines()[-1]
        parts = urlsplit(self.admin)
        self.proxy = TcpProxy((parts.hostname or "127.0.0.1", parts.port or 5432))
        self.proxied = postgres_url(self.admin, self.name, port=self.proxy.port)
        self.upstream = Upstream()
        self.upstream.on("GET", "/ping", Reply(body={"pong": True}))
        # REDIS_URL="": the in-memory layers, so that only the database fails here.
        self.env = {"DATABASE_URL": self.proxied, "REDIS_URL": "", "BACKFLOW_EGRESS_ALLOW": "127.0.0.1"}
        self.server = Daphne(**self.env)
        self.url = self.server.url
        return self

    def stop(self):
        if self.server:
            self.server.stop()
        if self.proxy:
            self.proxy.close()
        if self.upstream:
            self.upstream.close()
        with psycopg.connect(self.admin, autocommit=True, connect_timeout=5) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')

    def query(self, sql, *params):
        """Read the database directly (not through the proxy)."""
        with psycopg.connect(self.direct, connect_timeout=5) as db:
            return db.execute(sql, params).fetchall()

    def log(self):
        return Path(self.server.log.name).read_text(errors="replace")


@pytest.fixture(scope="module")
def stack():
    admin = postgres_admin_url()
    try:
        with psycopg.connect(admin, autocommit=True, connect_timeout=3) as probe:
            probe.execute("SELECT 1")
    except psycopg.Error as exc:
        pytest.skip(f"no Postgres to create a private database on ({urlsplit(admin).netloc}): {exc}".strip())
    made = Stack(admin)
    try:
        yield made.start()
    finally:
        made.stop()


def integration_doc(name, upstream):
    return {"name": name, "baseUrl": upstream.url, "endpoints": [{"name": "ping", "method": "get", "path": "/ping"}]}


def assert_database_unavailable(response, what):
    """A clear, retryable refusal: 503, Retry-After, a JSON error naming the database."""
    assert response.status_code == 503, (what, response.status_code, response.text[:2000])
    assert response.headers["content-type"].startswith("application/json"), (what, response.headers)
    body = response.json()
    message = body.get("error") or body.get("detail")
    assert "database" in message, (what, body)
    assert int(response.headers["retry-after"]) >= 1, (what, response.headers)


def names(answer):
    assert answer["result"]["isError"] is False, answer
    return sorted(i["name"] for i in answer["result"]["structuredContent"]["integrations"])


def stored_integrations(stack):
    return sorted(name for (name,) in stack.query("SELECT name FROM integrations_app_integration"))


def test_postgres_dropped_mid_request_and_between_requests(stack):
    key, proxy, upstream = stack.key, stack.proxy, stack.upstream
    auth = bearer(key)

    async def main():
        async with raw_client(stack) as http:
            async def streamable(message):
                return await http.post("/mcp", json=message, headers={**auth, **STREAMABLE_HEADERS})

            async def every_door_works(id, expected):
                response = await http.get("/api/integrations/", headers=auth)
                assert response.status_code == 200, response.text[:2000]
                assert sorted(i["name"] for i in response.json()["results"]) == expected
                assert names(await exchange(http, sse, key, call(id))) == expected
                assert names(streamable_result(await streamable(call(id + 1)))) == expected
                response = await http.get("/t/acme/kept")
                assert response.status_code == 200 and response.json() == {"pong": True}, response.text[:2000]

            response = await http.post("/api/integrations/", json=integration_doc("kept", upstream), headers=auth)
            assert response.status_code == 201, response.text
            response = await http.post("/api/routes/", headers=auth, json={
                "path": "/kept", "method": "get", "requireAuth": False,
                "integrations": {"actions": [{"id": "ping", "integration": "kept", "action": "ping"}]}})
            assert response.status_code == 201, response.text
            async with raw_sse(http, "/mcp/sse", headers=auth) as sse:
                await handshake(http, sse, key)
                created = await exchange(http, sse, key, call(2, "create_integration", integration_doc("kept-mcp", upstream)))
                assert created["result"]["isError"] is False, created
                await every_door_works(3, ["kept", "kept-mcp"])

                # A REST write cut inside its transaction; the database then stays down.
                proxy.cut_on(**HALF_WRITE)
                response = await http.post("/api/integrations/", json=integration_doc("half-rest", upstream), headers=auth)
                assert proxy.tripped.is_set(), "the write never reached its audit INSERT"
                assert_database_unavailable(response, "the REST write cut mid-transaction")

                started = time.monotonic()
                assert_database_unavailable(await http.get("/api/integrations/", headers=auth), "REST read")
                assert_database_unavailable(await post_json(http, sse.endpoint, call(10), key), "SSE POST")
                assert_database_unavailable(await streamable(call(11)), "Streamable HTTP")
                assert_database_unavailable(await http.get("/t/acme/kept"), "tenant route")
                # A plain Django view (no DRF): Django's 500 handler tells the outage apart.
                response = await http.post("/hooks/acme/ping-flow/not-a-token", json={})
                assert response.status_code == 503 and "database" in response.text, (response.status_code, response.text[:2000])
                assert int(response.headers["retry-after"]) >= 1
                assert time.monotonic() - started < 10, "refusals must be quick, not timeouts"

                proxy.accept()
                await every_door_works(20, ["kept", "kept-mcp"])

                # An MCP tool call cut inside its transaction.
                proxy.cut_on(**HALF_WRITE)
                answer = await exchange(http, sse, key, call(30, "create_integration", integration_doc("half-mcp", upstream)))
                assert proxy.tripped.is_set()
                assert answer["result"]["isError"] is True, answer
                assert "database" in json.loads(answer["result"]["content"][0]["text"])["error"], answer
                proxy.accept()
                await every_door_works(31, ["kept", "kept-mcp"])

                # Every connection cut between requests (a database restart, a network blip):
                # the next requests must not reuse a dead connection.
                proxy.cut()
                await every_door_works(40, ["kept", "kept-mcp"])
                proxy.cut()
                await every_door_works(50, ["kept", "kept-mcp"])

    try:
        run(main, timeout=80)
    finally:
        print(f"--- daphne log ---\n{stack.log()[-20000:]}")  # shown by pytest when the test fails
    assert stack.server.process.poll() is None, stack.server.output()
    assert "Traceback" not in stack.log(), stack.log()[-4000:]
    # Committed data intact, and nothing of the two half-done writes.
    assert stored_integrations(stack) == ["kept", "kept-mcp"]
    assert stack.query("SELECT count(*) FROM tenants_auditevent WHERE object_id LIKE 'half-%%'") == [(0,)]


def test_a_worker_keeps_running_through_dropped_connections(stack):
    worker = Worker(**stack.env)
    wf = {"id": "ping-flow", "name": "Ping flow", "workflows": [{"name": "main", "steps": [{"id": "ping", "action": "ping"}]}],
          "tools": [{"name": "ping", "type": "integration", "params": {"integration": "kept", "action": "ping"}}]}
    try:
        with httpx.Client(base_url=stack.url, headers=bearer(stack.key), timeout=30) as http:
            if http.get("/api/integrations/kept/").status_code == 404:  # this test alone (-k)
                assert http.post("/api/integrations/", json=integration_doc("kept", stack.upstream)).status_code == 201
            response = http.post("/api/workflows/", json=wf)
            assert response.status_code == 201, response.text

            def run_once(label):
                queued = http.post("/api/workflows/ping-flow/runs/", json={"input": {}})
                assert queued.status_code in (201, 202), queued.text
                run_id = queued.json()["id"]

                def finished():
                    body = http.get(f"/api/runs/{run_id}/").json()
                    return body if body["status"] in ("succeeded", "failed", "cancelled") else None

                body = wait_until(finished, timeout=30, interval=0.1, message=f"the run {label}")
                assert body["status"] == "succeeded", (label, body, worker.output()[-3000:])

            run_once("before any fault")
            stack.proxy.cut()
            run_once("after its connections were cut")
            stack.proxy.refuse()
            stack.proxy.cut()
            time.sleep(2)  # the worker polls every 0.1 s: many failed polls
            assert worker.process.poll() is None, worker.output()[-3000:]
            stack.proxy.accept()
            run_once("after the database was back")
            assert worker.process.poll() is None, worker.output()[-3000:]
    finally:
        worker.stop()
