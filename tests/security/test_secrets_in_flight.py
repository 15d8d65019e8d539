"""A secret in use stays out of everything the platform gives back or writes down.

One tenant secret authenticates an integration whose upstream echoes every header it gets into an
error answer. The secret is then used through every path that calls out, on real processes run at
DEBUG: a tenant route (daphne), a workflow run (the worker), and MCP tool calls over Streamable HTTP.
Afterwards the secret's value appears in no answer, no run or step row, no route invocation, no
audit row, no table of the database and no line either process logged. (Writing and reading
secrets over REST and the admin: integrations_app/tests/test_secrets.py.)
"""

import json
import uuid

import httpx
import pytest
from django.db import connection

from integrations_app import services as integration_services
from integrations_app.tests.test_runtime_helpers import Reply, make_integration, make_route
from workflows_app.tests.helpers import Worker, step, workflow

pytestmark = pytest.mark.django_db(transaction=True)

STREAMABLE = {"Accept": "application/json, text/event-stream", "MCP-Protocol-Version": "2025-11-25"}


def _tables():
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            yield from (f"{table} {row!r}" for row in cursor.fetchall())


def _tool_call(http, server, key, name, arguments):
    message = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments}}
    response = http.post(f"{server.url}/mcp", json=message, headers={**STREAMABLE, "Authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.text
    return response.text


def test_a_secret_used_by_routes_workflows_and_tools_is_never_given_back_or_logged(acme, upstream, live_daphne):
    value = f"sk-live-{uuid.uuid4().hex}"
    upstream.on("GET", "/echo", lambda seen: Reply(401, {"error": "bad credentials", "headers": seen.headers}))
    integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name="token", value=value)
    make_integration(acme, "up", upstream.url, [{"name": "echo", "method": "get", "path": "/echo"}],
                     auth={"type": "bearer", "secret": "token"})
    make_route(acme, "/probe", [{"id": "a", "integration": "up", "action": "echo"}])
    env = {"BACKFLOW_EGRESS_ALLOW": "127.0.0.1", "LOG_LEVEL": "DEBUG"}
    server, worker = live_daphne(**env), Worker(**env)
    seen = []
    try:
        with httpx.Client(timeout=30, headers={"Authorization": f"Bearer {acme.key}"}) as http:
            route = http.get(f"{server.url}/t/acme/probe")
            assert route.status_code == 502 and "bad credentials" in route.text, route.text
            seen.append(route.text)

            made = http.post(f"{server.url}/api/workflows/", json=workflow("probe", [step("call", "echo")], tools=[
                {"name": "echo", "type": "integration", "params": {"integration": "up", "action": "echo"}}]))
            assert made.status_code == 201, made.text
            run = http.post(f"{server.url}/api/workflows/probe/runs/?wait=20", json={"input": {}})
            assert run.status_code in (200, 201) and run.json()["status"] == "failed", run.text
            assert "401" in run.json()["error"], run.text
            for path in (f"/api/runs/{run.json()['id']}/", "/api/workflows/probe/runs/", "/api/audit/?page_size=500", "/api/integrations/up/",
                         "/api/secrets/token/"):
                response = http.get(f"{server.url}{path}")
                assert response.status_code == 200, (path, response.text)
                seen.append(response.text)
            for name, arguments in (("get_integration", {"name": "up"}), ("list_integrations", {}),
                                    ("run_workflow", {"id": "probe", "wait": 20}), ("get_workflow", {"id": "probe"})):
                seen.append(_tool_call(http, server, acme.key, name, arguments))
        assert upstream.calls("/echo") and all(c.headers.get("authorization") == f"Bearer {value}" for c in upstream.calls("/echo"))
    finally:
        logs = worker.output() + server.output(tail=None)
        worker.stop()
    assert "DEBUG" in logs  # the processes did log at DEBUG
    everything = "\n".join([*seen, logs, *_tables()])
    assert "bad credentials" in everything
    for form in (value, value.removeprefix("sk-live-"), json.dumps(value)):
        assert form not in everything, "the secret's value leaked"


@pytest.mark.parametrize("client_logger", ["httpx", "httpcore", "httpx2", "httpcore2"])
def test_the_outbound_clients_log_no_url(client_logger):
    """httpx (the LLM client) and the MCP SDK's httpx2 (tenants' MCP servers) log every request's
    full URL at INFO, where an api_key in the query would be written down."""
    import logging

    assert not logging.getLogger(client_logger).isEnabledFor(logging.INFO)
