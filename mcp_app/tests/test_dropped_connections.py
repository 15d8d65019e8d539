"""A tool call on a pool thread whose PostgreSQL connection was dropped while idle (a database
restart, a network cut): read-only tools skip the per-call health check (a SELECT 1 per call) and
are run once more on a new connection; tools that write keep the check. PostgreSQL only (SQLite
connections are never dropped)."""

import json
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection, connections
from django.test.utils import CaptureQueriesContext

from mcp_app import server
from mcp_app.http import connection_for
from tenants.authentication import principal_for_token
from tenants.models import AuditEvent

pytestmark = [pytest.mark.pool_threads, pytest.mark.django_db(transaction=True)]

INTEGRATION = {"name": "kept", "baseUrl": "https://api.example.com", "endpoints": [{"name": "list", "method": "get", "path": "/items"}]}


@pytest.fixture
def thread():
    """One thread, so it keeps its connection between calls, as the pool's threads do."""
    if connection.vendor != "postgresql":
        pytest.skip("connections are dropped on PostgreSQL only")
    with ThreadPoolExecutor(max_workers=1) as one:
        try:
            yield one
        finally:
            one.submit(connections.close_all).result(timeout=60)


@pytest.fixture
def ctx(acme):
    return connection_for(principal_for_token(acme.key))


def drop_connection_of(thread):
    """Terminate the thread's connection from the server side, as a restart would."""
    pid = thread.submit(lambda: connections["default"].connection.info.backend_pid).result(timeout=60)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [pid])


def call(thread, ctx, name, args):
    """One tools/call on `thread`: (isError, the JSON answer)."""
    result = thread.submit(server._call_sync, ctx, name, server.REGISTRY[name], args).result(timeout=60)
    return result.is_error, json.loads(result.content[0].text)


def test_a_read_only_tool_is_read_again_on_a_new_connection(thread, ctx):
    assert call(thread, ctx, "create_integration", INTEGRATION)[0] is False
    drop_connection_of(thread)
    failed, answer = call(thread, ctx, "list_integrations", {})
    assert failed is False, answer
    assert [i["name"] for i in answer["integrations"]] == ["kept"]


def test_a_tool_that_writes_checks_its_connection_first(thread, ctx):
    assert call(thread, ctx, "list_integrations", {})[0] is False
    drop_connection_of(thread)
    failed, answer = call(thread, ctx, "create_integration", INTEGRATION)
    assert failed is False, answer


def test_a_read_only_call_sends_no_health_check(thread, ctx):
    call(thread, ctx, "list_integrations", {})

    def counted():
        with CaptureQueriesContext(connections["default"]) as queries:
            server._call_sync(ctx, "list_integrations", server.REGISTRY["list_integrations"], {})
        return [q["sql"] for q in queries.captured_queries]

    statements = thread.submit(counted).result(timeout=60)
    assert not any(sql.strip().upper() == "SELECT 1" for sql in statements), statements


def test_a_read_only_call_refused_before_any_query_still_records_its_audit_event(thread, ctx, acme):
    assert call(thread, ctx, "list_integrations", {})[0] is False
    drop_connection_of(thread)
    failed, answer = call(thread, ctx, "get_integration", {})  # no name: refused by its schema
    assert failed is True and "Invalid arguments" in answer["error"], answer
    refused = AuditEvent.objects.for_tenant(acme.tenant).filter(object_id="get_integration")
    assert [event.summary["outcome"] for event in refused] == ["error: Invalid arguments for get_integration."]
