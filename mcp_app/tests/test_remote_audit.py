"""Remote tool calls are audited (who, what, outcome, how long; credentials redacted) and rate-limited
per principal across both transports."""

import asyncio
import json
import time
from types import SimpleNamespace

import pytest
from django.db import DataError

from backflow.logs import request_id_bound
from integrations_app.tests.test_runtime_helpers import make_integration
from mcp_app import server
from mcp_app.http import connection_for
from mcp_app.tests.test_remote_support import integration, key_prefix, run, sdk_session
from tenants.authentication import principal_for_token
from tenants.models import AuditEvent

SECRET_VALUES = ("sk-live-0123456789", "hunter2-password", "tok-abcdef", "xyz-api-key-value")


def test_every_remote_tool_call_is_audited_with_credentials_redacted(acme, live_daphne):
    server = live_daphne()
    key = acme.key_with("integrations:read", "integrations:write", name="audited")
    jwt = acme.jwt()
    calls = []  # (principal, tool, ok?)

    async def main():
        for transport in ("sse", "http"):
            async with sdk_session(server.url, transport, key) as s:
                name = f"audited-{transport}"
                doc = integration(name, auth={"type": "bearer", "secret": "stripe_key"})
                doc["endpoints"][0]["headers"] = {"Authorization": f"Bearer {SECRET_VALUES[0]}", "X-Trace": "kept"}
                result, _ = await s.call("create_integration", doc)
                calls.append((f"key:{key_prefix(key)}", "create_integration", transport, not result.is_error))
                await s.ok("list_integrations")
                calls.append((f"key:{key_prefix(key)}", "list_integrations", transport, True))
                # Refused by the schema, but still a call: audited, with the credential-like keys redacted.
                await s.error("get_integration", {"name": name, "password": SECRET_VALUES[1], "token": SECRET_VALUES[2],
                                                  "nested": {"apiKey": SECRET_VALUES[3]}})
                calls.append((f"key:{key_prefix(key)}", "get_integration", transport, False))
                await s.error("get_integration", {"name": "does-not-exist"})
                calls.append((f"key:{key_prefix(key)}", "get_integration", transport, False))
            async with sdk_session(server.url, transport, jwt) as s:
                await s.ok("list_integrations")
                calls.append(("user:acme-owner", "list_integrations", transport, True))

    run(main, timeout=60)

    events = list(AuditEvent.objects.for_tenant(acme.tenant).filter(action="mcp.tool_call").order_by("created_at", "id"))
    assert [(e.principal, e.object_id) for e in events] == [(p, tool) for p, tool, _, _ in calls], events
    for event, (_, tool, transport, ok) in zip(events, calls):
        assert event.object_type == "tool"
        summary = event.summary
        assert isinstance(summary["durationMs"], (int, float)) and 0 <= summary["durationMs"] < 30_000, summary
        if ok:
            assert summary["outcome"] == "ok", (tool, transport, summary)
        else:
            assert summary["outcome"].startswith("error"), (tool, transport, summary)
        assert "arguments" in summary, summary
    dumped = json.dumps([e.summary for e in events])
    for secret in SECRET_VALUES:
        assert secret not in dumped, f"{secret} leaked into the audit log: {dumped}"
    # No payload in the audit log (a key of any scope reads /api/audit/): the arguments' names and
    # the identifiers of what the call acted on, never values such as documents or entity data.
    refused = [e.summary for e in events if "password" in e.summary["arguments"]]
    assert len(refused) == 2, refused
    for summary in refused:
        assert summary["target"]["name"].startswith("audited-")  # what was acted on stays readable
        assert {"password", "token", "nested"} <= set(summary["arguments"])
    created = [e.summary for e in events if e.object_id == "create_integration"]
    assert created and all(set(s["arguments"]) >= {"name", "auth", "endpoints"} for s in created)
    assert "kept" not in dumped and "stripe_key" not in dumped  # documents' contents are not copied


def wait_for_a_fresh_window(window, margin=8.0):
    """Fixed windows: start well inside one so that every call of the test lands in the same one."""
    remaining = window - time.time() % window
    if remaining < margin:
        time.sleep(remaining + 0.2)


def test_rate_limit_per_principal_across_transports(acme, live_daphne):
    server = live_daphne(BACKFLOW_MCP_RATE_LIMIT="3,60")
    limited, other = acme.key_with("integrations:read", name="limited"), acme.key_with("integrations:read", name="other")
    wait_for_a_fresh_window(60)

    async def main():
        async with sdk_session(server.url, "sse", limited) as sse, sdk_session(server.url, "http", limited) as http:
            await sse.ok("list_integrations")
            await http.ok("list_integrations")
            await sse.ok("list_integrations")
            # The fourth call within the window, whatever the transport, is refused with a retry hint.
            for session in (http, sse):
                data = await session.error("list_integrations")
                assert 1 <= data["retryAfterSeconds"] <= 61, data
                assert "retry" in data["error"].lower(), data
            # Listing is not a call; another principal has its own budget.
            assert await http.tool_names() == {"get_integration", "list_integrations", "list_secrets"}
        async with sdk_session(server.url, "http", other) as s:
            for _ in range(3):
                await s.ok("list_integrations")
            await s.error("list_integrations")

    run(main, timeout=60)


def test_refused_calls_are_audited_too(transactional_db, acme):
    """Unknown or hidden tools are refused with isError and still leave an audit row."""
    import anyio

    from mcp_app.context import ToolContext
    from mcp_app.server import call_tool
    from tenants.models import AuditEvent

    ctx = ToolContext(store=None, allowed=frozenset({"list_integrations"}), tenant=acme.tenant, actor=acme.actor)
    result = anyio.run(call_tool, ctx, "create_integration", {"name": "x"})
    assert result.is_error and "Unknown tool 'create_integration'" in result.content[0].text
    event = AuditEvent.objects.for_tenant(acme.tenant).get(action="mcp.tool_call", object_id="create_integration")
    assert event.summary["outcome"].startswith("error: Unknown tool")


def gathered(acme, settings, monkeypatch, calls, refuse=None):
    """`calls` ((tool, arguments)…) made at once, request-<index> each, while the tenant has one
    database thread, so that they gather in trips: their results, and the sizes of the trips, of
    their rate-limit counts and of their audit INSERTs. `refuse(row)`: the database refuses a batch
    holding a row it is true for."""
    settings.BACKFLOW_SYNC_THREADS_PER_TENANT = 1
    make_integration(acme, "crm", "http://127.0.0.1:9", [{"name": "list", "method": "get", "path": "/x"}])
    ctx = connection_for(principal_for_token(acme.key))
    trips, sizes, counts, inserts = server._tool_calls, [], [], []
    run_trip, count, insert = trips._run, server.retry_after_each, server.audit_rows_insert
    monkeypatch.setattr(trips, "_run", lambda owner, calls: sizes.append(len(calls)) or run_trip(owner, calls))
    monkeypatch.setattr(server, "retry_after_each", lambda keys, *args, **kwargs: counts.append(len(keys)) or count(keys, *args, **kwargs))

    def inserting(rows):
        inserts.append(len(rows))
        if refuse and any(map(refuse, rows)):
            raise DataError("value too long for type character varying(300)")
        insert(rows)

    monkeypatch.setattr(server, "audit_rows_insert", inserting)

    async def call(index, name, args):
        with request_id_bound(f"request-{index}"):
            return await server.call_tool(ctx, name, args)

    async def together():
        return await asyncio.gather(*(call(index, name, args) for index, (name, args) in enumerate(calls)))

    results = asyncio.run(together())
    assert max(sizes) > 1 and sum(sizes) == len(calls), sizes  # they did come together
    return SimpleNamespace(results=results, sizes=sizes, counts=counts, inserts=inserts)


def tool_call_events(tenant):
    """(request id, tool, ok) of each tool call's audit event."""
    events = AuditEvent.objects.for_tenant(tenant).filter(action="mcp.tool_call")
    return sorted((event.request_id, event.object_id, event.summary["outcome"] == "ok") for event in events)


@pytest.mark.pool_threads
@pytest.mark.django_db(transaction=True)
def test_tool_calls_that_come_together_are_answered_and_audited_each_as_its_own(acme, settings, monkeypatch):
    """A tenant's tool calls that come while its database threads are busy share a trip
    (mcp_app.server._tool_calls): each gets its own answer, and its audit event its request's id;
    the trip's events go in one INSERT."""
    calls = [("get_integration", {"name": "crm"}), ("get_integration", {"name": "missing"}), ("list_integrations", {})] * 3
    trips = gathered(acme, settings, monkeypatch, calls)
    assert [result.is_error for result in trips.results] == [False, True, False] * 3, trips.results
    assert json.loads(trips.results[0].content[0].text)["name"] == "crm"
    assert sorted(trips.inserts) == sorted(trips.sizes)
    assert tool_call_events(acme.tenant) == sorted(
        (f"request-{index}", name, args.get("name") != "missing") for index, (name, args) in enumerate(calls))


@pytest.mark.pool_threads
@pytest.mark.django_db(transaction=True)
def test_a_trip_whose_audit_insert_is_refused_for_one_event_keeps_the_others(acme, settings, monkeypatch):
    """The database refuses one event of a trip's INSERT: the trip's events are inserted again one
    by one, and only that event is lost (logged); every call is answered."""
    calls = [("list_integrations", {}), ("get_integration", {"name": "crm"}), ("get_integration", {"name": "refused"})] * 2
    trips = gathered(acme, settings, monkeypatch, calls, refuse=lambda row: "refused" in str(row))
    assert [result.is_error for result in trips.results] == [False, False, True] * 2, trips.results
    assert max(trips.inserts) > 1  # a refused event was in a batch with others
    assert tool_call_events(acme.tenant) == sorted(
        (f"request-{index}", name, True) for index, (name, args) in enumerate(calls) if args.get("name") != "refused")


@pytest.mark.pool_threads
@pytest.mark.django_db(transaction=True)
def test_a_trips_calls_are_counted_together_each_against_the_rate_limit(acme, settings, monkeypatch):
    """The calls of a trip are counted in one go before the first runs (one Redis round trip), each
    against its principal's budget in the order they came: past it, refused with retryAfterSeconds."""
    settings.BACKFLOW_MCP_RATE_LIMIT = (4, 3600)
    trips = gathered(acme, settings, monkeypatch, [("list_integrations", {})] * 9)
    assert sorted(trips.counts) == sorted(trips.sizes)
    assert [result.is_error for result in trips.results] == [False] * 4 + [True] * 5, trips.results
    refused = json.loads(trips.results[-1].content[0].text)
    assert refused["error"].startswith("Too many tool calls") and refused["retryAfterSeconds"] > 0


@pytest.mark.pool_threads
@pytest.mark.django_db(transaction=True)
def test_a_trip_whose_batch_count_fails_lets_each_call_count_itself(acme, settings, monkeypatch):
    """The cache fails the trip's batch count with something other than a Redis outage (which fails
    open): the trip still runs, each call counts itself as outside a trip and is answered; tool calls
    answer a CallToolResult, never an exception."""

    def broken(keys, *args, **kwargs):
        raise RuntimeError("the cache backend is broken")

    monkeypatch.setattr(server, "retry_after_each", broken)
    counted = []
    count = server.retry_after
    monkeypatch.setattr(server, "retry_after", lambda key, *args, **kwargs: counted.append(key) or count(key, *args, **kwargs))
    trips = gathered(acme, settings, monkeypatch, [("list_integrations", {})] * 6)
    assert [result.is_error for result in trips.results] == [False] * 6, trips.results
    assert len(counted) == 6
