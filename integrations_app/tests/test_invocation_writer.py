"""Route invocation records are inserted in batches after the answers (dispatch.InvocationWriter):
the records of calls answered while an insert runs go in the next insert together, and no more
than BACKFLOW_ROUTE_INVOCATION_BUFFER wait at once."""

import asyncio
import time

import pytest
from asgiref.sync import async_to_sync
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backflow import metrics
from backflow.logs import request_id_bound
from integrations_app.dispatch import INVOCATION_ROWS, InvocationWriter
from integrations_app.models import RouteInvocation

pytestmark = pytest.mark.django_db


def _records(ctx, count):
    return [INVOCATION_ROWS.values(tenant_id=ctx.tenant.pk, method="get", path=f"/items/{n}", status=200, duration_ms=1.0)
            for n in range(count)]


def _write(rows):
    """Add `rows` as calls answered at once would, then wait for the writer."""

    async def main():
        background = set()
        writer = InvocationWriter(background)
        for row in rows:
            writer.add(row)
        while background:
            await asyncio.gather(*list(background))

    async_to_sync(main)()


def _inserts(queries):
    return sum(q["sql"].lstrip().upper().startswith("INSERT") for q in queries.captured_queries)


def test_records_answered_together_are_inserted_together(acme):
    with CaptureQueriesContext(connection) as queries:
        _write(_records(acme, 50))  # within one statement of SQLite's (999 parameters)
    assert _inserts(queries) == 1
    assert RouteInvocation.objects.for_tenant(acme.tenant).count() == 50


def test_a_batch_is_at_most_batch_records(acme, monkeypatch):
    monkeypatch.setattr(InvocationWriter, "BATCH", 20)
    with CaptureQueriesContext(connection) as queries:
        _write(_records(acme, 41))
    assert _inserts(queries) == 3
    assert RouteInvocation.objects.for_tenant(acme.tenant).count() == 41


def test_records_beyond_the_buffer_are_dropped_and_counted(acme, settings):
    settings.BACKFLOW_ROUTE_INVOCATION_BUFFER = 10
    dropped = metrics.route_invocation_records_dropped._value.get()
    _write(_records(acme, 25))
    assert RouteInvocation.objects.for_tenant(acme.tenant).count() == 10
    assert metrics.route_invocation_records_dropped._value.get() - dropped == 15


def test_a_record_keeps_the_id_of_the_request_that_made_it(acme):
    with request_id_bound("req-from-the-call"):
        rows = _records(acme, 1)
    _write(rows)
    assert RouteInvocation.objects.for_tenant(acme.tenant).get().request_id == "req-from-the-call"


def test_a_busy_writer_waits_to_take_more_records_per_insert(acme, monkeypatch):
    """Records keep coming (one every 2 ms) while each insert takes 10 ms: inserts start at most
    once every LINGER, however fast or slow the machine runs the test, instead of as soon as the
    last one ends (every 10 ms). Checked on the times the inserts start, not on their number,
    which depends on how long the shared machine takes to hand out the records."""
    linger = 0.05
    monkeypatch.setattr(InvocationWriter, "LINGER", linger)
    insert = InvocationWriter._insert
    starts = []

    async def slow_insert(batch):
        starts.append(time.monotonic())
        await asyncio.sleep(0.01)
        await insert(batch)

    monkeypatch.setattr(InvocationWriter, "_insert", staticmethod(slow_insert))
    rows = _records(acme, 100)

    async def main():
        background = set()
        writer = InvocationWriter(background)
        for row in rows:
            writer.add(row)
            await asyncio.sleep(0.002)
        while background:
            await asyncio.gather(*list(background))

    async_to_sync(main)()
    assert RouteInvocation.objects.for_tenant(acme.tenant).count() == 100
    gaps = [later - earlier for earlier, later in zip(starts, starts[1:])]
    assert gaps and min(gaps) >= linger - 0.001  # the event loop may wake a timer a tick early


def test_a_record_after_a_quiet_moment_is_written_at_once(acme, monkeypatch):
    """No insert ran on this loop within LINGER: the writer does not wait (a 30 s LINGER would show)."""
    monkeypatch.setattr(InvocationWriter, "LINGER", 30)
    started = time.monotonic()
    _write(_records(acme, 1))
    assert time.monotonic() - started < 10
    assert RouteInvocation.objects.for_tenant(acme.tenant).count() == 1
