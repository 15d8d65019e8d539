"""Tenant routes on PostgreSQL admitted on the event loop (DatabaseSites._admissions_on_loop): the
tenant row read on the loop's own connection (backflow.loop_postgres) and the callers counted
there, with no trip to a thread, yet every change seen at the next request as by the trip (a
revoked key, a deactivated tenant, a new route); the tenant's requests that come together share
one read; a connection that breaks sends the request on the trip; the invocation records are
inserted on the loop's other connection. The data is committed (the loop's connections read what
a pool thread's would) and the database work runs on the real pool; each scenario runs on one
event loop, which keeps its connections."""

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from django.core.cache import cache
from django.db import connection

from backflow.loop_postgres import loop_reads_postgres, loop_writes_postgres
from integrations_app import dispatch
from integrations_app.models import RouteInvocation
from integrations_app.tests.test_runtime_helpers import *  # noqa: F403 (fixtures and helpers)
from integrations_app.tests.test_runtime_helpers import action, make_route
from tenants import services as tenant_services
from tests.test_loop_postgres import connected

pytestmark = [
    pytest.mark.pool_threads, pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the loop's own connections are PostgreSQL's"),
]


async def statuses(http, *calls):
    """GET each (url, Authorization or None) in turn: their status codes."""
    return [(await http.get(url, headers={"Authorization": auth} if auth else {})).status_code for url, auth in calls]


def test_a_known_key_is_admitted_on_the_loop_and_its_revocation_refused_at_the_next_request(acme, acme_bookings, inprocess, trips, loop_reads):
    make_route(acme, "/bookings", [action("list")])
    own = ("/t/acme/bookings", f"Bearer {acme.key}")

    async def scenario(http):
        await connected(loop_reads_postgres)
        assert await statuses(http, own) == [200] and trips == [1]  # the key verified and the table built on a thread
        assert await statuses(http, own, own, own) == [200, 200, 200] and trips == [1]  # then none
        assert loop_reads == ["acme"] * 4
        await sync_to_async(tenant_services.api_key_revoke)(tenant=acme.tenant, actor=acme.actor, prefix=acme.key.split("_")[1])
        assert await statuses(http, own) == [401] and trips == [1, 1]

    inprocess.run(scenario)
    assert len(acme_bookings.calls("/bookings")) == 4


def test_a_deactivated_tenant_and_a_new_route_are_seen_at_the_next_request(acme, acme_bookings, inprocess, trips):
    make_route(acme, "/bookings", [action("list")])
    own = ("/t/acme/bookings", f"Bearer {acme.key}")

    async def scenario(http):
        await connected(loop_reads_postgres)
        assert await statuses(http, own, own) == [200, 200] and trips == [1]
        await sync_to_async(make_route)(acme, "/more", [action("list")])
        assert await statuses(http, ("/t/acme/more", own[1]), own) == [200, 200] and trips == [1, 1]  # the table rebuilt once
        await sync_to_async(tenant_services.tenant_set_active)(tenant=acme.tenant, actor=acme.actor, active=False)
        assert await statuses(http, own, ("/t/acme/nothing", own[1])) == [403, 403]

    inprocess.run(scenario)


def test_public_routes_count_their_callers_on_the_loop(acme, acme_bookings, inprocess, settings, trips):
    settings.BACKFLOW_ROUTE_RATE_LIMIT = (3, 3600)
    cache.delete(f"ratelimit:routes:{acme.tenant.pk}:ip:127.0.0.1:{int(time.time() // 3600)}")  # Redis outlives test databases
    make_route(acme, "/open", [action("list")], requireAuth=False)

    async def scenario(http):
        await connected(loop_reads_postgres)
        assert await statuses(http, *[("/t/acme/open", None)] * 5) == [200, 200, 200, 429, 429]
        assert trips == [1]  # the first built the table; the others were read and counted on the loop
        assert await statuses(http, ("/t/acme/nothing", None), ("/t/nobody/open", None)) == [404, 404]

    inprocess.run(scenario)


def test_the_tenants_requests_that_come_together_share_a_read(acme, acme_bookings, inprocess, trips, loop_reads, settings):
    make_route(acme, "/bookings", [action("list")])
    own = f"Bearer {acme.key}"
    crowd = 2 * dispatch.DatabaseSites.ADMISSIONS_PER_TRIP
    settings.BACKFLOW_ROUTE_CONCURRENCY_PER_TENANT = crowd

    async def scenario(http):
        await connected(loop_reads_postgres)
        assert await statuses(http, ("/t/acme/bookings", own)) == [200] and trips == [1]
        loop_reads.clear()
        answers = await asyncio.gather(*(http.get("/t/acme/bookings", headers={"Authorization": own}) for _ in range(crowd)))
        return [answer.status_code for answer in answers]

    assert inprocess.run(scenario) == [200] * crowd
    assert trips == [1]
    assert 1 <= len(loop_reads) <= 8, f"{len(loop_reads)} reads of the tenant row for {crowd} requests that came together"


def test_a_broken_loop_connection_sends_the_request_on_the_trip(acme, acme_bookings, inprocess, trips):
    make_route(acme, "/bookings", [action("list")])
    own = ("/t/acme/bookings", f"Bearer {acme.key}")

    async def scenario(http):
        await connected(loop_reads_postgres)
        assert await statuses(http, own, own) == [200, 200] and trips == [1]
        state = loop_reads_postgres._state()
        state.connection.pgconn.finish()  # as a database restart or a network cut leaves it
        assert await statuses(http, own) == [200] and trips == [1, 1]
        await connected(loop_reads_postgres)  # a new one, made in the background
        assert await statuses(http, own) == [200] and trips == [1, 1]

    inprocess.run(scenario)


def test_invocation_records_are_inserted_on_the_loops_own_connection(acme, acme_bookings, inprocess, monkeypatch):
    make_route(acme, "/bookings", [action("list")])
    own = ("/t/acme/bookings", f"Bearer {acme.key}")
    on_threads = []
    monkeypatch.setattr(dispatch.INVOCATION_ROWS, "insert", lambda rows: on_threads.append(rows))

    async def scenario(http):
        await connected(loop_reads_postgres)
        await connected(loop_writes_postgres)
        assert await statuses(http, own, own, own) == [200, 200, 200]

    inprocess.run(scenario)
    assert on_threads == []
    assert RouteInvocation.objects.for_tenant(acme.tenant).filter(status=200, path="/bookings").count() == 3


def test_a_record_insert_that_fails_on_the_loop_is_logged_not_made_again(acme, monkeypatch, caplog):
    """A batch sent on the loop's connection whose insert fails (here: a tenant that does not
    exist) is logged and dropped, as on a thread; it is not inserted again on a thread, where
    an insert whose answer was lost would be written twice."""
    on_threads = []
    monkeypatch.setattr(dispatch.INVOCATION_ROWS, "insert", lambda rows: on_threads.append(rows))
    row = dispatch.INVOCATION_ROWS.values(tenant_id=acme.tenant.pk + 10_000, method="get", path="/x", status=200, duration_ms=1.0)

    async def main():
        await connected(loop_writes_postgres)
        await dispatch.InvocationWriter._insert([row])

    with caplog.at_level("WARNING", logger="backflow.routes"):
        asyncio.run(main())
    assert on_threads == [] and "Could not record 1 route invocation(s)" in caplog.text
