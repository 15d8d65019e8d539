"""MCP credentials checked on the event loop on PostgreSQL (mcp_app.http._credential_checks_on_loop):
an API key this process verified before costs no trip to a thread while its tenant row, read on the
loop's own connection (backflow.loop_postgres), says nothing changed; a revocation or deactivation
is refused at the next request as by the trip; the requests with one credential that come together
share a read; anything the loop cannot decide alone (a new key, a JWT, another tenant asked for, a
broken connection) takes the trip. The data is committed and the database work runs on the real
pool; each scenario runs on one event loop, which keeps its connection."""

import asyncio

import pytest
from asgiref.sync import sync_to_async
from django.db import connection

from backflow.asgi_utils import HttpError
from backflow.loop_postgres import loop_reads_postgres
from mcp_app import http
from tenants import services as tenant_services
from tenants.selectors import tenant_by_id
from tests.test_loop_postgres import connected

pytestmark = [
    pytest.mark.pool_threads, pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(connection.vendor != "postgresql", reason="the loop's own connections are PostgreSQL's"),
]


async def authenticate(credential, scope_header=None):
    """mcp_app.http.authenticate for a request with `Authorization: Bearer <credential>`: its principal, or the HttpError."""
    headers = {"host": "testserver", "authorization": f"Bearer {credential}"}
    if scope_header:
        headers["x-backflow-scope"] = scope_header
    scope = {"type": "http", "scheme": "http", "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    try:
        return await http.authenticate(scope, headers, {})
    except HttpError as exc:
        return exc


async def known(ctx, trips):
    """ctx's key verified on a thread (its first use), with the loop's connection made and the
    tenant row's statement compiled by the ORM (which a check by a trip does): the principal."""
    await sync_to_async(tenant_by_id)(ctx.tenant.pk)
    await connected(loop_reads_postgres)
    principal = await authenticate(ctx.key)
    assert (principal.tenant.slug, principal.label) == (ctx.tenant.slug, f"key:{ctx.key.split('_')[1]}") and trips == [1]
    return principal


def test_a_known_key_is_checked_on_the_loop_and_its_revocation_refused_at_the_next_request(acme, trips, loop_reads):
    async def scenario():
        first = await known(acme, trips)
        again = await authenticate(acme.key)
        assert (again.tenant.pk, again.label, again.scopes) == (first.tenant.pk, first.label, first.scopes) and trips == [1]
        assert loop_reads == [acme.tenant.pk]  # the first check read nothing on the loop: the key was not known yet
        await sync_to_async(tenant_services.api_key_revoke)(tenant=acme.tenant, actor=acme.actor, prefix=acme.key.split("_")[1])
        refused = await authenticate(acme.key)
        assert isinstance(refused, HttpError) and refused.status == 401 and trips == [1, 1]

    asyncio.run(scenario())


def test_a_deactivated_tenant_is_refused_at_the_next_request(acme, trips):
    async def scenario():
        await known(acme, trips)
        assert (await authenticate(acme.key)).tenant.slug == "acme" and trips == [1]
        await sync_to_async(tenant_services.tenant_set_active)(tenant=acme.tenant, actor=acme.actor, active=False)
        refused = await authenticate(acme.key)
        assert isinstance(refused, HttpError) and refused.status == 403 and trips == [1, 1]

    asyncio.run(scenario())


def test_the_requests_with_one_credential_that_come_together_share_a_read(acme, trips, loop_reads):
    async def scenario():
        await known(acme, trips)
        loop_reads.clear()
        principals = await asyncio.gather(*(authenticate(acme.key) for _ in range(100)))
        assert {principal.label for principal in principals} == {f"key:{acme.key.split('_')[1]}"} and trips == [1]
        assert 1 <= len(loop_reads) <= 4, f"{len(loop_reads)} reads of the tenant row for 100 checks that came together"

    asyncio.run(scenario())


def test_what_the_loop_cannot_decide_alone_takes_the_trip(acme, globex, trips, monkeypatch):
    on_loop, carry = [], http._credential_checks_on_loop._carry

    async def counted(owner, calls):
        on_loop.append(owner)
        return await carry(owner, calls)

    monkeypatch.setattr(http._credential_checks_on_loop, "_carry", counted)

    async def scenario():
        await known(acme, trips)
        other = await authenticate(acme.key, scope_header="globex")  # a known key, asked for another tenant
        assert isinstance(other, HttpError) and other.status == 401 and "globex" in str(other) and trips == [1, 1]
        jwt = await sync_to_async(acme.jwt)()
        assert (await authenticate(jwt)).label == "user:acme-owner" and len(trips) == 3
        assert len(on_loop) == 1  # the known key asked for globex; the JWT went straight to its trip
        loop_reads_postgres._state().connection.pgconn.finish()  # as a database restart leaves it
        assert (await authenticate(acme.key)).tenant.slug == "acme" and len(trips) == 4

    asyncio.run(scenario())
