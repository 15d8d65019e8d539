"""Verified API keys, remembered per process (tenants/keycache.py), and the nets that make the
memory safe: every write that could change a verification bumps the tenant's auth_version in its
transaction, a remembered verification is used only while the row a request reads carries the
same version (and is active, and the key's expiry is ahead), and only successes are remembered,
by the presented key's hash. The revocation suite over real servers: tests/security/test_revocation.py.
"""

import secrets
import threading
from datetime import timedelta

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from backflow.asgi_utils import HttpError
from integrations_app import dispatch
from integrations_app.tests.test_runtime_helpers import Reply, make_integration, make_route, upstream, upstreams  # noqa: F401
from tenants import keycache, models, services as tenant_services
from tenants.authentication import AuthenticationError, principal_for_token
from tenants.keycache import VerifiedKeys
from tenants.models import ApiKey, Tenant, hash_api_key


@pytest.fixture(autouse=True)
def verified(monkeypatch):
    """A cache of this test's own (what another test verified is not in it)."""
    fresh = VerifiedKeys()
    monkeypatch.setattr(tenant_services, "verified_keys", fresh)
    return fresh


def route_door(slug, key):
    """What /t/<slug>/… does before a route runs: read the tenant row, then authenticate. The
    caller's label, or the HttpError status."""
    tenant, table = dispatch.routes_asgi.sites._lookup(slug)
    if tenant is None or not tenant.is_active:
        return 404 if tenant is None else 403
    try:
        return dispatch.TenantSite(tenant, table).authenticate({"authorization": f"Bearer {key}"})
    except HttpError as exc:
        return exc.status


def rest(key, url="/api/integrations/"):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
    return client.get(url).status_code


def mcp(key):
    """The MCP doors' step (mcp_app.http.authenticate): the principal, or 401."""
    try:
        return principal_for_token(key, None, "http://testserver/mcp")
    except AuthenticationError:
        return 401


def queries(fn, *args):
    with CaptureQueriesContext(connection) as ctx:
        result = fn(*args)
    return result, [q["sql"] for q in ctx.captured_queries]


def version(tenant):
    return Tenant.objects.values_list("auth_version", flat=True).get(pk=tenant.pk)


# -- the lever ---------------------------------------------------------------------------------


def test_the_route_door_verifies_a_key_it_has_seen_with_no_query_beyond_the_tenant_row(acme, verified):
    label = f"key:{acme.key[3:11]}"
    assert route_door("acme", acme.key) == label  # the first: the key query, remembered
    assert len(verified) == 1
    for _ in range(3):
        result, sql = queries(route_door, "acme", acme.key)
        assert result == label
        assert len(sql) == 1 and "tenants_tenant" in sql[0] and "tenants_apikey" not in sql[0], sql


def test_rest_and_mcp_read_the_tenant_row_instead_of_the_key_row(acme):
    assert rest(acme.key) == 200
    principal, sql = queries(mcp, acme.key)
    assert principal.label == f"key:{acme.key[3:11]}" and principal.tenant.pk == acme.tenant.pk
    assert len(sql) == 1 and "tenants_apikey" not in sql[0] and "tenants_tenant" in sql[0], sql


def test_last_used_at_is_still_written_at_most_once_an_interval(acme, monkeypatch, settings):
    stored = ApiKey.objects.for_tenant(acme.tenant).get(prefix=acme.key[3:11])
    process_a, process_b = VerifiedKeys(), VerifiedKeys()
    for cache in (process_a, process_b):
        monkeypatch.setattr(tenant_services, "verified_keys", cache)
        assert route_door("acme", acme.key) and mcp(acme.key) != 401
    stored.refresh_from_db()
    assert stored.last_used_at is not None
    _, sql = queries(lambda: [route_door("acme", acme.key), mcp(acme.key)])
    assert not any("UPDATE" in q for q in sql), sql
    later = timezone.now() + settings.BACKFLOW_KEY_LAST_USED_INTERVAL + timedelta(seconds=1)
    monkeypatch.setattr(tenant_services.timezone, "now", lambda: later)
    _, sql = queries(lambda: [route_door("acme", acme.key), route_door("acme", acme.key), mcp(acme.key)])
    assert sum("UPDATE" in q for q in sql) == 1, sql
    stored.refresh_from_db()
    assert stored.last_used_at == later
    # Another process that decides it a moment later writes nothing: the UPDATE checks again.
    monkeypatch.setattr(tenant_services.timezone, "now", lambda: later + timedelta(seconds=1))
    monkeypatch.setattr(tenant_services, "verified_keys", process_a)
    assert route_door("acme", acme.key)
    stored.refresh_from_db()
    assert stored.last_used_at == later


# -- the nets --------------------------------------------------------------------------------


def _admin():
    client = Client()
    client.force_login(get_user_model().objects.create_superuser(f"ops-{secrets.token_hex(3)}", "ops@example.com", "pw"))
    return client


def _key(ctx, **fields):
    key, plaintext = tenant_services.api_key_create(tenant=ctx.tenant, actor=ctx.actor, name="cached",
                                                     expires_at=fields.pop("expires_at", None), scopes=fields.pop("scopes", None))
    return key, plaintext


def _revoke_service(ctx, key):
    tenant_services.api_key_revoke(tenant=ctx.tenant, actor=ctx.actor, prefix=key.prefix)


def _revoke_admin_action(ctx, key):
    response = _admin().post("/admin/tenants/apikey/", {"action": "revoke", "_selected_action": [key.pk]})
    assert response.status_code == 302


def _delete_admin_page(ctx, key):
    assert _admin().post(f"/admin/tenants/apikey/{key.pk}/delete/", {"post": "yes"}).status_code == 302


def _delete_admin_bulk(ctx, key):
    response = _admin().post("/admin/tenants/apikey/", {"action": "delete_selected", "_selected_action": [key.pk], "post": "yes"})
    assert response.status_code == 302


def _revoked_by_queryset(ctx, key):
    ApiKey.objects.for_tenant(ctx.tenant).filter(pk=key.pk).update(revoked_at=timezone.now())


def _revoked_by_operator_queryset(ctx, key):
    ApiKey.all_tenants.filter(prefix=key.prefix).update(revoked_at=timezone.now())


def _expired_by_queryset(ctx, key):
    ApiKey.objects.for_tenant(ctx.tenant).filter(pk=key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))


def _revoked_by_save(ctx, key):
    key.revoked_at = timezone.now()
    key.save()


def _expired_by_save_fields(ctx, key):
    key.expires_at = timezone.now() - timedelta(seconds=1)
    key.save(update_fields=["expires_at"])


def _revoked_by_bulk_update(ctx, key):
    key.revoked_at = timezone.now()
    ApiKey.objects.for_tenant(ctx.tenant).bulk_update([key], ["revoked_at"])


def _deleted_instance(ctx, key):
    key.delete()


def _deleted_by_queryset(ctx, key):
    ApiKey.objects.for_tenant(ctx.tenant).filter(pk=key.pk).delete()


KEY_WRITES = [_revoke_service, _revoke_admin_action, _delete_admin_page, _delete_admin_bulk, _revoked_by_queryset,
              _revoked_by_operator_queryset, _expired_by_queryset, _revoked_by_save, _expired_by_save_fields,
              _revoked_by_bulk_update, _deleted_instance, _deleted_by_queryset]


@pytest.mark.parametrize("write", KEY_WRITES, ids=lambda f: f.__name__.strip("_"))
def test_every_write_that_ends_a_key_bumps_the_version_and_the_next_request_is_refused_at_every_door(write, acme, verified):
    key, plaintext = _key(acme)
    assert route_door("acme", plaintext) == f"key:{key.prefix}" and rest(plaintext) == 200 and mcp(plaintext) != 401
    assert len(verified) == 1
    before = version(acme.tenant)
    write(acme, key)
    assert version(acme.tenant) != before
    assert route_door("acme", plaintext) == 401
    assert rest(plaintext) == 401
    assert mcp(plaintext) == 401
    assert len(verified) == 0  # a failed verification forgets the old success
    # The tenant's other keys verify again (from the database, once).
    assert route_door("acme", acme.key) == f"key:{acme.key[3:11]}" and rest(acme.key) == 200


TENANT_OFF = {
    "service": lambda ctx: tenant_services.tenant_set_active(tenant=ctx.tenant, actor=ctx.actor, active=False),
    "admin action": lambda ctx: _admin().post("/admin/tenants/tenant/", {"action": "deactivate", "_selected_action": [ctx.tenant.pk]}),
    "queryset update": lambda ctx: Tenant.objects.filter(pk=ctx.tenant.pk).update(is_active=False),
    # Not bumped (a save knows no previous value): the doors check is_active on the row itself.
    "instance save": lambda ctx: (setattr(ctx.tenant, "is_active", False), ctx.tenant.save(update_fields=["is_active"])),
}


@pytest.mark.parametrize("how", TENANT_OFF)
def test_a_deactivated_tenant_is_refused_at_the_next_request(how, acme):
    assert route_door("acme", acme.key) and rest(acme.key) == 200 and mcp(acme.key) != 401
    before = version(acme.tenant)
    TENANT_OFF[how](acme)
    assert (version(acme.tenant) != before) == (how != "instance save")
    assert route_door("acme", acme.key) == 403
    assert rest(acme.key) == 403
    assert not mcp(acme.key).tenant.is_active  # the MCP door answers 403 for that
    row = Tenant.objects.get(pk=acme.tenant.pk)
    assert tenant_services.api_key_verify_for(acme.key, row) is None


def test_a_scope_change_takes_effect_at_the_next_request(acme):
    key, plaintext = _key(acme, scopes=["integrations:read", "routes:read"])
    assert rest(plaintext) == 200 and rest(plaintext, "/api/routes/") == 200
    ApiKey.objects.for_tenant(acme.tenant).filter(pk=key.pk).update(scopes=["routes:read"])
    assert rest(plaintext) == 403
    assert rest(plaintext, "/api/routes/") == 200
    assert mcp(plaintext).scopes == {"routes:read"}
    row = Tenant.objects.get(pk=acme.tenant.pk)
    assert tenant_services.api_key_verify_for(plaintext, row).scopes == {"routes:read"}


def test_an_expired_key_is_refused_from_memory(acme, verified, monkeypatch):
    """The expiry is checked at every use by the clock now: no write happens when a key expires."""
    key, plaintext = _key(acme, expires_at=timezone.now() + timedelta(hours=1))
    assert route_door("acme", plaintext) == f"key:{key.prefix}" and rest(plaintext) == 200
    later = timezone.now() + timedelta(hours=1, seconds=1)
    monkeypatch.setattr(tenant_services.timezone, "now", lambda: later)
    assert route_door("acme", plaintext) == 401
    assert len(verified) == 0
    assert rest(plaintext) == 401
    assert mcp(plaintext) == 401


def test_a_key_revoked_by_one_process_is_refused_by_another_at_its_next_request(acme, monkeypatch):
    """Two processes' caches over one database: the revocation reaches B through the tenant row's
    version, B being told nothing."""
    process_a, process_b = VerifiedKeys(), VerifiedKeys()
    key, plaintext = _key(acme)
    for cache in (process_a, process_b):
        monkeypatch.setattr(tenant_services, "verified_keys", cache)
        assert route_door("acme", plaintext) == f"key:{key.prefix}" and mcp(plaintext) != 401
        assert queries(route_door, "acme", plaintext)[1][0].count("tenants_apikey") == 0  # from memory now
    monkeypatch.setattr(tenant_services, "verified_keys", process_a)
    tenant_services.api_key_revoke(tenant=acme.tenant, actor=acme.actor, prefix=key.prefix)
    monkeypatch.setattr(tenant_services, "verified_keys", process_b)
    assert route_door("acme", plaintext) == 401
    assert mcp(plaintext) == 401


def test_a_wrong_secret_with_a_right_prefix_never_meets_the_remembered_key(acme, verified):
    prefix, secret = acme.key[3:11], acme.key[12:]
    assert route_door("acme", acme.key) == f"key:{prefix}"
    for wrong in (f"bf_{prefix}_{secret[:-4]}AAAA", f"bf_{prefix}_", f"bf_{prefix}_{secret}x"):
        result, sql = queries(route_door, "acme", wrong)
        assert result == 401 and any("tenants_apikey" in q for q in sql), sql  # asked the database
        assert mcp(wrong) == 401 and rest(wrong) == 401
    assert len(verified) == 1 and verified.get(hash_api_key(acme.key)) is not None


def test_a_flood_of_made_up_keys_adds_nothing_and_costs_the_one_query_it_did(acme, globex, verified):
    assert route_door("acme", acme.key) and rest(globex.key) == 200
    prefix = acme.key[3:11]
    made_up = [f"bf_{secrets.token_hex(4)}_{secrets.token_urlsafe(32)}" for _ in range(100)]
    made_up += [f"bf_{prefix}_{secrets.token_urlsafe(32)}" for _ in range(100)]
    for key in made_up:
        result, sql = queries(route_door, "acme", key)
        assert result == 401 and len(sql) == 2, sql  # the tenant row, and the key query of before
        result, sql = queries(mcp, key)
        assert result == 401 and len(sql) == 1, sql
    assert len(verified) == 2
    assert route_door("acme", globex.key) == 401  # another tenant's key: refused, as before
    assert route_door("globex", globex.key) == f"key:{globex.key[3:11]}"


def test_the_cache_holds_at_most_its_bound(acme, settings, verified):
    settings.BACKFLOW_KEY_CACHE_SIZE = 5
    keys = [_key(acme)[1] for _ in range(12)]
    for key in keys:
        assert route_door("acme", key) == f"key:{key[3:11]}"
        assert len(verified) <= 5
    assert len(verified) == 5
    assert all(verified.get(hash_api_key(key)) for key in keys[-5:])  # the most recently used stay
    for key in keys:  # the others are verified from the database again
        assert route_door("acme", key) == f"key:{key[3:11]}" and len(verified) <= 5


def test_the_cache_is_safe_under_threads(acme):
    cache = VerifiedKeys(size=64)
    stored = ApiKey.objects.for_tenant(acme.tenant).get()
    entry = keycache.VerifiedKey(stored, version=1)
    errors = []

    def hammer(n):
        try:
            for i in range(20000):
                digest = f"{n}-{i % 200}"
                if i % 3 == 0:
                    cache.put(digest, entry)
                else:
                    cache.get(digest)
                if i % 7 == 0:
                    cache.discard(digest)
        except Exception as exc:  # noqa: BLE001 (the test reports any)
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(cache) <= 64


class BumpFailed(Exception):
    pass


@pytest.mark.parametrize("write", [_revoke_service, _revoked_by_queryset, _revoked_by_save, _expired_by_save_fields,
                                   _deleted_instance, _deleted_by_queryset], ids=lambda f: f.__name__.strip("_"))
def test_the_version_bump_is_in_the_writes_transaction(write, acme, monkeypatch):
    """Both land or neither: when the bump fails, the key write is undone with it."""
    key, plaintext = _key(acme)
    pk = key.pk

    def fail(tenant_ids):
        raise BumpFailed

    monkeypatch.setattr(models, "bump_auth_version", fail)
    with pytest.raises(BumpFailed):
        write(acme, key)
    stored = ApiKey.objects.for_tenant(acme.tenant).get(pk=pk)
    assert stored.revoked_at is None and stored.expires_at is None
    assert route_door("acme", plaintext) == f"key:{key.prefix}"


def test_recording_a_use_and_creating_keys_leave_the_version_alone(acme):
    before = version(acme.tenant)
    assert rest(acme.key) == 200 and route_door("acme", acme.key)
    ApiKey.objects.for_tenant(acme.tenant).update(last_used_at=None)
    _key(acme)
    assert version(acme.tenant) == before


def test_a_stale_tenant_instance_never_sets_the_version_back(acme):
    """A whole-row save writes neither version (only their own F() updates do): a process must not
    see the number it verified a since-revoked key under again."""
    key, plaintext = _key(acme)
    stale = Tenant.objects.get(pk=acme.tenant.pk)
    assert route_door("acme", plaintext) == f"key:{key.prefix}"
    tenant_services.api_key_revoke(tenant=acme.tenant, actor=acme.actor, prefix=key.prefix)
    stale.name = "Renamed"
    stale.save()
    assert Tenant.objects.get(pk=acme.tenant.pk).name == "Renamed"
    assert route_door("acme", plaintext) == 401


def test_a_tenant_reborn_under_a_deleted_ones_primary_key_trusts_none_of_its_keys(acme, verified):
    """SQLite may reuse a deleted tenant's primary key; the new row's auth_version starts elsewhere."""
    key, plaintext = _key(acme)
    assert route_door("acme", plaintext) == f"key:{key.prefix}"
    pk = acme.tenant.pk
    Tenant.objects.filter(pk=pk).delete()  # its keys go with it, bumping nothing
    Tenant.objects.create(pk=pk, slug="acme", name="Acme again")
    assert route_door("acme", plaintext) == 401


def test_a_key_moved_to_another_tenant_is_refused_by_the_first(acme, globex):
    key, plaintext = _key(acme)
    assert route_door("acme", plaintext) == f"key:{key.prefix}"
    before = version(acme.tenant)
    key.tenant = globex.tenant
    key.save()
    assert version(acme.tenant) != before
    assert route_door("acme", plaintext) == 401
    assert mcp(plaintext).tenant.pk == globex.tenant.pk


# -- two real processes --------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_servers_a_key_revoked_through_one_is_refused_by_the_other(acme, live_daphne, upstream):
    upstream.on("GET", "/things", Reply(body={"things": []}))
    make_integration(acme, "up", upstream.url, [{"name": "listThings", "method": "get", "path": "/things"}])
    make_route(acme, "/things", [{"integration": "up", "action": "listThings"}])
    key, plaintext = _key(acme)
    owner = acme.jwt()
    a, b = live_daphne(BACKFLOW_EGRESS_ALLOW="127.0.0.1"), live_daphne(BACKFLOW_EGRESS_ALLOW="127.0.0.1")
    auth = {"Authorization": f"Bearer {plaintext}"}
    with httpx.Client(base_url=a.url, timeout=30) as at_a, httpx.Client(base_url=b.url, timeout=30) as at_b:
        for server in (at_a, at_b):  # both remember the key
            for _ in range(2):
                assert server.get("/t/acme/things", headers=auth).status_code == 200
                assert server.get("/api/integrations/", headers=auth).status_code == 200
        assert at_a.delete(f"/api/keys/{key.prefix}/", headers={"Authorization": f"Bearer {owner}"}).status_code == 204
        assert at_b.get("/t/acme/things", headers=auth).status_code == 401
        assert at_b.get("/api/integrations/", headers=auth).status_code == 401
        assert at_a.get("/t/acme/things", headers=auth).status_code == 401
