"""MCP credentials checked on the event loop itself (mcp_app.http: SQLite only): an API key this
process verified before costs no trip to a thread while its tenant row says nothing changed; a
revocation or deactivation is refused at the next request as by the trip, and anything the loop
cannot decide alone (a new key, a JWT, another tenant asked for, a row SQLite cannot read at
once) takes the trip. The data is committed and the database work runs on the real pool."""

import asyncio
import sqlite3

import pytest

from backflow.asgi_utils import HttpError
from mcp_app import http
from tenants import services as tenant_services
from tenants.selectors import tenant_by_id

pytestmark = [
    pytest.mark.pool_threads, pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(http.reads_here is None, reason="the loop reads SQLite only; other databases always take the trip"),
]


def authenticate(credential, scope_header=None):
    """mcp_app.http.authenticate for a request with `Authorization: Bearer <credential>`: its principal, or the HttpError."""
    headers = {"host": "testserver", "authorization": f"Bearer {credential}"}
    if scope_header:
        headers["x-backflow-scope"] = scope_header
    scope = {"type": "http", "scheme": "http", "headers": [(k.encode(), v.encode()) for k, v in headers.items()]}
    try:
        return asyncio.run(http.authenticate(scope, headers, {}))
    except HttpError as exc:
        return exc


def known(ctx, trips):
    """ctx's key verified on a thread (its first use), with the tenant row's statement compiled by
    the ORM (which a later check by a trip would do): the principal."""
    tenant_by_id(ctx.tenant.pk)
    principal = authenticate(ctx.key)
    assert (principal.tenant.slug, principal.label) == (ctx.tenant.slug, f"key:{ctx.key.split('_')[1]}") and trips == [1]
    return principal


def test_a_known_key_is_checked_on_the_loop_and_its_revocation_refused_at_the_next_request(acme, trips):
    first = known(acme, trips)
    again = authenticate(acme.key)
    assert (again.tenant.pk, again.label, again.scopes) == (first.tenant.pk, first.label, first.scopes) and trips == [1]
    tenant_services.api_key_revoke(tenant=acme.tenant, actor=acme.actor, prefix=acme.key.split("_")[1])
    refused = authenticate(acme.key)
    assert isinstance(refused, HttpError) and refused.status == 401 and trips == [1, 1]


def test_a_deactivated_tenant_is_refused_at_the_next_request(acme, trips):
    known(acme, trips)
    assert authenticate(acme.key).tenant.slug == "acme" and trips == [1]
    tenant_services.tenant_set_active(tenant=acme.tenant, actor=acme.actor, active=False)
    refused = authenticate(acme.key)
    assert isinstance(refused, HttpError) and refused.status == 403 and trips == [1, 1]


def test_what_the_loop_cannot_decide_alone_takes_the_trip(acme, globex, trips, monkeypatch):
    known(acme, trips)
    other = authenticate(acme.key, scope_header="globex")  # a known key, asked for another tenant
    assert isinstance(other, HttpError) and other.status == 401 and "globex" in str(other) and trips == [1, 1]
    jwt = acme.jwt()
    assert authenticate(jwt).label == "user:acme-owner" and authenticate(jwt).label == "user:acme-owner" and len(trips) == 4

    class Locked:
        def execute(self, *args):
            raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(http.reads_here, "_connection", lambda: (Locked(), None, {}))
    assert authenticate(acme.key).tenant.slug == "acme" and len(trips) == 5
