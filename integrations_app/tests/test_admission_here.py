"""Tenant routes admitted on the event loop itself (DatabaseSites._admitted_here, the embedded
profile: SQLite with the rate limits in memory): with no trip to a thread, yet every change seen
at the next request as by the trip (a revoked key, a deactivated tenant, a new route), a key's
use still recorded, the caller still counted; a crowd of the tenant's requests stays on the loop;
a read SQLite cannot make at once takes the trip. The data is committed (the loop's connection
reads what a pool thread's would) and the database work runs on the real pool."""

import asyncio
import sqlite3
from datetime import timedelta

import pytest

from integrations_app import dispatch
from integrations_app.tests.test_runtime_helpers import *  # noqa: F403 (fixtures and helpers)
from integrations_app.tests.test_runtime_helpers import action, make_route
from tenants import services as tenant_services
from tenants.models import ApiKey

pytestmark = [
    pytest.mark.pool_threads, pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(dispatch.routes_asgi.sites.reads_here is None,
                       reason="not the embedded profile (SQLite, rate limits in memory): every admission takes the trip"),
]


def get_each(inprocess, *calls):
    """GET each (url, Authorization or None) in turn: their status codes."""
    async def one_by_one(http):
        return [(await http.get(url, headers={"Authorization": auth} if auth else {})).status_code for url, auth in calls]

    return inprocess.run(one_by_one)


def test_a_known_key_is_admitted_on_the_loop_and_its_revocation_refused_at_the_next_request(acme, acme_bookings, inprocess, trips):
    make_route(acme, "/bookings", [action("list")])
    own = ("/t/acme/bookings", f"Bearer {acme.key}")
    assert get_each(inprocess, own) == [200] and trips == [1]  # the first: the key verified and the table built on a thread
    assert get_each(inprocess, own, own, own) == [200, 200, 200] and trips == [1]  # then none
    tenant_services.api_key_revoke(tenant=acme.tenant, actor=acme.actor, prefix=acme.key.split("_")[1])
    assert get_each(inprocess, own) == [401] and trips == [1, 1]
    assert len(acme_bookings.calls("/bookings")) == 4


def test_a_deactivated_tenant_and_a_new_route_are_seen_at_the_next_request(acme, acme_bookings, inprocess, trips):
    make_route(acme, "/bookings", [action("list")])
    own = ("/t/acme/bookings", f"Bearer {acme.key}")
    assert get_each(inprocess, own, own) == [200, 200] and trips == [1]
    make_route(acme, "/more", [action("list")])
    assert get_each(inprocess, ("/t/acme/more", own[1]), own) == [200, 200] and trips == [1, 1]  # the table rebuilt once
    tenant_services.tenant_set_active(tenant=acme.tenant, actor=acme.actor, active=False)
    assert get_each(inprocess, own, ("/t/acme/nothing", own[1])) == [403, 403]


def test_public_routes_count_their_callers_on_the_loop(acme, acme_bookings, inprocess, settings, trips):
    settings.BACKFLOW_ROUTE_RATE_LIMIT = (3, 3600)
    make_route(acme, "/open", [action("list")], requireAuth=False)
    assert get_each(inprocess, *[("/t/acme/open", None)] * 5) == [200, 200, 200, 429, 429]
    assert trips == [1]  # the first built the table; the others were counted on the loop
    assert get_each(inprocess, ("/t/acme/nothing", None), ("/t/nobody/open", None)) == [404, 404]


def test_a_keys_use_due_for_its_record_takes_the_trip_that_writes_it(acme, acme_bookings, inprocess, settings, trips):
    make_route(acme, "/bookings", [action("list")])
    own = ("/t/acme/bookings", f"Bearer {acme.key}")
    assert get_each(inprocess, own) == [200]
    ApiKey.all_tenants.filter(tenant=acme.tenant).update(last_used_at=None)
    settings.BACKFLOW_KEY_LAST_USED_INTERVAL = timedelta(0)  # every use is due for its record
    tenant_services.verified_keys.get(tenant_services.hash_api_key(acme.key)).last_used_at = None
    assert get_each(inprocess, own, own) == [200, 200] and trips == [1, 1, 1]
    assert ApiKey.all_tenants.get(tenant=acme.tenant).last_used_at is not None


def test_a_read_sqlite_cannot_make_at_once_takes_the_trip(acme, acme_bookings, inprocess, monkeypatch, trips):
    make_route(acme, "/bookings", [action("list")])
    own = ("/t/acme/bookings", f"Bearer {acme.key}")
    assert get_each(inprocess, own, own) == [200, 200] and trips == [1]

    class Locked:
        def execute(self, *args):
            raise sqlite3.OperationalError("database is locked")

    reads = dispatch.routes_asgi.sites.reads_here
    monkeypatch.setattr(reads, "_connection", lambda: (Locked(), None, {}))
    assert get_each(inprocess, own) == [200] and trips == [1, 1]


def test_a_crowd_of_the_tenants_requests_is_admitted_on_the_loop(acme, acme_bookings, inprocess, trips, settings):
    """However many of a tenant's requests are in flight together, a known key's are admitted on
    the loop: no trip (handing the work to a thread and back cost a loaded server more than it)."""
    make_route(acme, "/bookings", [action("list")])
    own = f"Bearer {acme.key}"
    assert get_each(inprocess, ("/t/acme/bookings", own)) == [200] and trips == [1]
    crowd = 2 * dispatch.DatabaseSites.ADMISSIONS_PER_TRIP
    settings.BACKFLOW_ROUTE_CONCURRENCY_PER_TENANT = crowd

    async def together(http):
        return [answer.status_code for answer in await asyncio.gather(
            *(http.get("/t/acme/bookings", headers={"Authorization": own}) for _ in range(crowd)))]

    assert inprocess.run(together) == [200] * crowd
    assert trips == [1], trips


def test_with_the_rate_limits_in_redis_every_admission_takes_the_trip(settings):
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:6379/15"}}
    assert dispatch.DatabaseSites().reads_here is None  # counting would wait on the network
