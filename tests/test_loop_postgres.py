"""backflow.loop_postgres: statements on an event loop's own PostgreSQL connection, which never make
a caller wait for more than its statement: no connection yet, too many waiting, a database that
refused or a statement over its timeout give Unavailable (or Failed, once sent) at once, and
the connection is replaced, not reused broken."""

import asyncio
import time

import psycopg
import pytest
from django.db import connection

from backflow.compiled import Compiled, CompiledInsert
from backflow.loop_postgres import LoopPostgres
from tenants.models import AuditEvent, Tenant

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the loop's own connections are PostgreSQL's"),
]


async def connected(loop_connection):
    """Wait (at most 10 s) until this loop has its connection (made in the background on first use)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            return await loop_connection.run(_nothing)
        except LoopPostgres.Unavailable:
            assert time.monotonic() < deadline, "no connection on the loop within 10 s"
            await asyncio.sleep(0.02)


async def _nothing(connection):
    return None


def test_reads_the_orms_row_on_the_loops_own_connection():
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    by_slug, reads = Compiled(Tenant, lambda slug: Tenant.objects.filter(slug=slug)), LoopPostgres()

    async def read():
        with pytest.raises(LoopPostgres.Unavailable, match="no statement compiled"):
            await reads.first(by_slug, "acme")  # the ORM has not compiled it yet: the caller reads on a thread
        by_slug_compiled = await asyncio.to_thread(by_slug.first, "acme")  # the ORM compiles it
        with pytest.raises(LoopPostgres.Unavailable, match="no connection"):
            await reads.first(by_slug, "acme")  # the loop's connection is being made meanwhile
        await connected(reads)
        return by_slug_compiled, await reads.first(by_slug, "acme"), await reads.first(by_slug, "nobody")

    through_orm, on_loop, missing = asyncio.run(read())
    assert missing is None and on_loop.pk == through_orm.pk == tenant.pk
    assert {f.attname: getattr(on_loop, f.attname) for f in Tenant._meta.concrete_fields} == \
        {f.attname: getattr(through_orm, f.attname) for f in Tenant._meta.concrete_fields}


def test_a_row_that_reads_the_same_is_the_same_instance():
    """Nothing is made again for a row that did not change (the tenant routes keep the site built
    on it); a changed row is a new instance with the new values."""
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    by_slug, reads = Compiled(Tenant, lambda slug: Tenant.objects.filter(slug=slug)), LoopPostgres()
    by_slug.first("acme")  # the ORM compiles it

    async def read():
        await connected(reads)
        first, again = await reads.first(by_slug, "acme"), await reads.first(by_slug, "acme")
        await asyncio.to_thread(Tenant.objects.filter(pk=tenant.pk).update, name="Acme Inc")
        return first, again, await reads.first(by_slug, "acme")

    first, again, changed = asyncio.run(read())
    assert again is first and first.name == "Acme"
    assert changed is not first and changed.name == "Acme Inc"


@pytest.mark.parametrize("prepare", [True, False])
def test_the_tenant_read_is_prepared_unless_turned_off(settings, prepare):
    """The same read on every request: prepared after a few runs (the server parses and plans it
    once); BACKFLOW_LOOP_POSTGRES_PREPARE=False (a pooler that cannot keep prepared statements)
    binds on the client, as Django does."""
    settings.BACKFLOW_LOOP_POSTGRES_PREPARE = prepare
    Tenant.objects.create(slug="acme", name="Acme")
    by_slug, reads = Compiled(Tenant, lambda slug: Tenant.objects.filter(slug=slug)), LoopPostgres()
    by_slug.first("acme")  # the ORM compiles it

    async def prepared_statements(connection):
        cursor = await connection.execute("SELECT statement FROM pg_prepared_statements")
        return [statement for (statement,) in await cursor.fetchall()]

    async def read_often():
        await connected(reads)
        rows = [await reads.first(by_slug, "acme") for _ in range(10)]
        return rows, await reads.run(prepared_statements)

    rows, statements = asyncio.run(read_often())
    assert {row.slug for row in rows} == {"acme"}
    assert len([s for s in statements if 'WHERE "tenants_tenant"."slug" = $1' in s]) == (1 if prepare else 0), statements


def test_statements_beyond_the_waiting_bound_are_refused_at_once():
    loop_connection = LoopPostgres()
    release = None

    async def held(connection):
        await release.wait()

    async def crowd():
        nonlocal release
        release = asyncio.Event()
        await connected(loop_connection)
        holders = [asyncio.create_task(loop_connection.run(held)) for _ in range(LoopPostgres.WAITING)]
        await asyncio.sleep(0.05)
        started = time.monotonic()
        with pytest.raises(LoopPostgres.Unavailable, match="wait for this event loop's connection already"):
            await loop_connection.run(_nothing)
        refused_in = time.monotonic() - started
        release.set()
        await asyncio.gather(*holders)
        await loop_connection.run(_nothing)  # room again
        return refused_in

    assert asyncio.run(crowd()) < 1


def test_a_statement_over_its_timeout_fails_and_its_connection_is_replaced():
    loop_connection = LoopPostgres(timeout=0.5)

    async def sleeping(connection):
        await connection.execute("SELECT pg_sleep(30)")

    async def main():
        await connected(loop_connection)
        first = loop_connection._state().connection
        started = time.monotonic()
        results = await asyncio.gather(loop_connection.run(sleeping), loop_connection.run(_nothing), return_exceptions=True)
        took = time.monotonic() - started
        await connected(loop_connection)
        return results, took, first, loop_connection._state().connection

    (slept, waited), took, first, second = asyncio.run(main())
    assert isinstance(slept, LoopPostgres.Failed) and "TimeoutError" in str(slept), slept
    # The one behind it never got its turn: not sent, so only Unavailable.
    assert isinstance(waited, LoopPostgres.Unavailable) and not isinstance(waited, LoopPostgres.Failed), waited
    assert took < 5, took
    assert first.closed and second is not first and not second.closed


def test_a_broken_connection_fails_once_and_is_replaced():
    loop_connection = LoopPostgres()

    async def main():
        await connected(loop_connection)
        loop_connection._state().connection.pgconn.finish()  # as a database restart leaves it
        with pytest.raises(LoopPostgres.Unavailable):
            await loop_connection.run(_nothing)
        await connected(loop_connection)

    asyncio.run(main())


def test_a_database_that_refuses_is_asked_again_only_after_a_pause(monkeypatch):
    attempts = []

    async def refused(*args, **kwargs):
        attempts.append(time.monotonic())
        raise psycopg.OperationalError("connection refused")

    monkeypatch.setattr(psycopg.AsyncConnection, "connect", refused)
    monkeypatch.setattr(LoopPostgres, "RETRY_AFTER", 0.5)
    loop_connection = LoopPostgres()

    async def main():
        messages = []
        deadline = time.monotonic() + 0.3
        while time.monotonic() < deadline:  # many callers within the pause: one attempt
            with pytest.raises(LoopPostgres.Unavailable) as refusal:
                await loop_connection.run(_nothing)
            messages.append(str(refusal.value))
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.4)
        with pytest.raises(LoopPostgres.Unavailable):
            await loop_connection.run(_nothing)  # after the pause: another attempt
        await asyncio.sleep(0.05)
        return messages

    messages = asyncio.run(main())
    assert len(attempts) == 2, attempts
    assert "cannot connect to PostgreSQL: OperationalError: connection refused" in messages[-1]


def test_rows_inserted_on_the_loop_are_the_rows_insert_makes():
    tenant = Tenant.objects.create(slug="acme", name="Acme")
    rows = CompiledInsert(AuditEvent)
    writes = LoopPostgres()
    made = [rows.values(tenant_id=tenant.pk, action="probe.loop", object_type="probe", object_id=str(n)) for n in range(3)]

    async def insert():
        await connected(writes)
        await rows.insert_on_loop(made, writes)

    asyncio.run(insert())
    rows.insert([rows.values(tenant_id=tenant.pk, action="probe.thread", object_type="probe", object_id="3")])
    stored = {(e.action, e.object_id, e.tenant_id) for e in AuditEvent.all_tenants.filter(object_type="probe")}
    assert stored == {("probe.loop", "0", tenant.pk), ("probe.loop", "1", tenant.pk), ("probe.loop", "2", tenant.pk),
                      ("probe.thread", "3", tenant.pk)}
    # The same columns from both: nothing the loop's insert leaves out (created_at, defaults).
    on_loop, on_thread = AuditEvent.all_tenants.get(object_id="0"), AuditEvent.all_tenants.get(object_id="3")
    assert on_loop.created_at is not None and abs((on_thread.created_at - on_loop.created_at).total_seconds()) < 60
