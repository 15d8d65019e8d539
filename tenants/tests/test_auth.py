"""Authentication and authorisation: API keys, scopes, JWTs, key management and operator commands."""

import hashlib
import io
import json
import re
import subprocess
import sys
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.core.management import CommandError, call_command
from django.utils import timezone
from rest_framework.test import APIClient

from tenants import services as tenant_services
from tenants.models import ApiKey, Membership, Tenant
from tenants.scopes import ALL_SCOPES

KEY_FORMAT = re.compile(r"^bf_([a-z0-9]{8})_([A-Za-z0-9_-]{20,})$")


def _list_urls():
    """Every tenant resource list under /api/ (router list routes without URL parameters)."""
    from django.urls import NoReverseMatch, reverse

    from tests.test_tenant_isolation import api_endpoints

    urls = []
    for endpoint in api_endpoints():
        if endpoint.basename and not endpoint.detail and endpoint.basename != "apikey":
            try:
                urls.append(reverse(endpoint.name))
            except NoReverseMatch:
                continue  # nested under a parent's URL parameter
    return urls


# One URL per tenant resource (list routes); used for the "everything" checks.
RESOURCE_LISTS = _list_urls()


def bearer(value):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {value}")
    return client


def make_user(username, password="correct-horse-battery"):
    return get_user_model().objects.create_user(username=username, password=password)


def token_pair(username, password, tenant=None):
    body = {"username": username, "password": password}
    if tenant is not None:
        body["tenant"] = tenant
    return APIClient().post("/api/auth/token", body, format="json")


# --- API keys -------------------------------------------------------------------------------


def test_no_credentials_is_401_with_www_authenticate(acme):
    assert {"/api/integrations/", "/api/routes/", "/api/secrets/", "/api/audit/"} <= set(RESOURCE_LISTS)
    for url in RESOURCE_LISTS + ["/api/keys/"]:
        response = APIClient().get(url)
        assert response.status_code == 401, (url, response.content)
        assert response["WWW-Authenticate"].startswith("Bearer"), url
        assert response.json()["detail"]


def test_other_authorization_schemes_are_401(acme):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Basic {acme.key}")
    assert client.get("/api/integrations/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION="Bearer ")
    assert client.get("/api/integrations/").status_code == 401


def _bad_keys(ctx):
    _, good = tenant_services.api_key_create(tenant=ctx.tenant, actor=ctx.actor, name="victim")
    prefix, secret = KEY_FORMAT.match(good).groups()
    revoked_key, revoked = tenant_services.api_key_create(tenant=ctx.tenant, actor=ctx.actor, name="revoked")
    tenant_services.api_key_revoke(tenant=ctx.tenant, actor=ctx.actor, prefix=revoked_key.prefix)
    expired_key, expired = tenant_services.api_key_create(
        tenant=ctx.tenant, actor=ctx.actor, name="expired", expires_at=timezone.now() + timedelta(days=1)
    )
    ApiKey.objects.for_tenant(ctx.tenant).filter(pk=expired_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    return {
        "garbage": "garbage",
        "garbage-jwt": "eyJhbGciOiJIUzI1NiJ9.eyJ4IjoxfQ.bad",
        "unknown-prefix": f"bf_zzzzzzzz_{secret}",
        "short-prefix": f"bf_abc_{secret}",
        "wrong-secret": f"bf_{prefix}_{secret[:-4]}AAAA",
        "truncated": f"bf_{prefix}_",
        "revoked": revoked,
        "expired": expired,
    }


def test_bad_keys_are_401(acme):
    for label, value in _bad_keys(acme).items():
        for url in ("/api/integrations/", "/api/keys/"):
            response = bearer(value).get(url)
            assert response.status_code == 401, (label, url, response.content)
            assert "WWW-Authenticate" in response, label
        assert bearer(value).post("/api/integrations/", {"name": "x", "baseUrl": "https://x.example"}, format="json").status_code == 401


def test_a_token_that_is_neither_key_nor_jwt_is_told_it_is_unknown(acme):
    # Not the OAuth-only hint: that is for a live OAuth access token sent to REST.
    for value in ("garbage", "not-a-real-token", "x" * 64):
        response = bearer(value).get("/api/integrations/")
        assert response.status_code == 401, response.content
        assert response.json()["detail"] == "Invalid, expired or revoked token.", (value, response.content)
    response = bearer("bf_zzzzzzzz_" + "A" * 32).get("/api/integrations/")
    assert response.json()["detail"] == "Invalid, expired or revoked API key."


def test_key_of_other_tenant_with_scope_header_is_401(acme, globex):
    client = acme.client()
    assert client.get("/api/integrations/", HTTP_X_BACKFLOW_SCOPE="acme").status_code == 200
    assert client.get("/api/integrations/", HTTP_X_BACKFLOW_SCOPE="globex").status_code == 401
    assert client.get("/api/integrations/?scope=globex").status_code == 401


def test_read_scope_can_read_but_not_write(acme):
    client = acme.client(acme.key_with("integrations:read"))
    assert client.get("/api/integrations/").status_code == 200
    assert client.get("/api/secrets/").status_code == 200
    response = client.post("/api/integrations/", {"name": "stripe", "baseUrl": "https://api.stripe.com"}, format="json")
    assert response.status_code == 403, response.content
    assert "integrations:write" in response.json()["detail"]
    response = client.post("/api/secrets/", {"name": "k", "value": "v"}, format="json")
    assert response.status_code == 403
    assert "integrations:write" in response.json()["detail"]
    # Other resources need their own scopes.
    response = client.get("/api/routes/")
    assert response.status_code == 403
    assert "routes:read" in response.json()["detail"]


def test_routes_need_routes_scopes(acme):
    full_integrations = acme.client(acme.key_with("integrations:read", "integrations:write"))
    response = full_integrations.get("/api/routes/")
    assert response.status_code == 403 and "routes:read" in response.json()["detail"]
    response = full_integrations.post("/api/routes/", {}, format="json")
    assert response.status_code == 403 and "routes:write" in response.json()["detail"]

    reader = acme.client(acme.key_with("routes:read"))
    assert reader.get("/api/routes/").status_code == 200
    response = reader.post("/api/routes/", {"path": "/x", "method": "get", "integrations": {"actions": []}}, format="json")
    assert response.status_code == 403 and "routes:write" in response.json()["detail"]
    assert reader.get("/api/integrations/").status_code == 403

    writer = acme.client(acme.key_with("routes:read", "routes:write"))
    response = writer.post("/api/routes/", {"path": "/x", "method": "get", "integrations": {"actions": []}}, format="json")
    assert response.status_code == 400  # allowed through; the body itself is invalid


def test_inactive_tenant_is_403_for_everything(acme, globex):
    jwt = acme.jwt()
    scoped = acme.key_with("routes:read")
    Tenant.objects.filter(pk=acme.tenant.pk).update(is_active=False)
    for client in (acme.client(), acme.client(scoped), acme.client(jwt)):
        for url in RESOURCE_LISTS + ["/api/keys/"]:
            response = client.get(url)
            assert response.status_code == 403, (url, response.content)
            assert "inactive" in response.json()["detail"]
        for url in ("/api/integrations/", "/api/routes/", "/api/secrets/", "/api/keys/"):
            assert client.post(url, {"name": "x"}, format="json").status_code == 403, url
        assert client.delete("/api/integrations/anything/").status_code == 403
    # No new token for an inactive tenant; the other tenant is unaffected.
    assert token_pair(acme.owner.username, "pw-acmeacme", "acme").status_code == 401
    assert globex.client().get("/api/integrations/").status_code == 200


def test_last_used_at_is_set(acme):
    key = acme.key_with("integrations:read", name="tracked")
    stored = ApiKey.objects.for_tenant(acme.tenant).get(prefix=key[3:11])
    assert stored.last_used_at is None
    assert acme.client(key).get("/api/integrations/").status_code == 200
    stored.refresh_from_db()
    assert stored.last_used_at is not None
    assert timezone.now() - stored.last_used_at < timedelta(minutes=1)
    # A failed attempt with the same prefix does not count as a use.
    ApiKey.objects.for_tenant(acme.tenant).filter(pk=stored.pk).update(last_used_at=None)
    assert bearer(key[:-3] + "AAA").get("/api/integrations/").status_code == 401
    stored.refresh_from_db()
    assert stored.last_used_at is None


# --- JWT ------------------------------------------------------------------------------------


def test_token_wrong_password_and_unknown_user_are_401(acme):
    assert token_pair(acme.owner.username, "wrong", "acme").status_code == 401
    assert token_pair("nobody", "whatever", "acme").status_code == 401
    response = token_pair(acme.owner.username, "pw-acmeacme", "acme")
    assert response.status_code == 200
    assert set(response.json()) == {"access", "refresh"}


def test_token_for_tenant_user_is_not_member_of_is_401(acme, globex):
    response = token_pair(globex.owner.username, "pw-globexglobex", "acme")
    assert response.status_code == 401
    assert response.json()["detail"]
    assert token_pair(globex.owner.username, "pw-globexglobex", "no-such-tenant").status_code == 401
    loner = make_user("loner")
    assert token_pair("loner", "correct-horse-battery").status_code == 401
    assert loner.pk


def test_token_is_bound_to_its_tenant(acme, globex):
    client = bearer(acme.jwt())
    assert client.get("/api/integrations/").status_code == 200
    assert client.get("/api/integrations/", HTTP_X_BACKFLOW_SCOPE="globex").status_code == 401
    assert client.get("/api/integrations/?scope=globex").status_code == 401


def test_multi_tenant_token_needs_scope_choice(acme, globex):
    user = make_user("consultant")
    tenant_services.membership_set(tenant=acme.tenant, user=user, role="member")
    tenant_services.membership_set(tenant=globex.tenant, user=user, role="member")
    acme.client().post("/api/integrations/", {"name": "acme-only", "baseUrl": "https://a.example"}, format="json")
    globex.client().post("/api/integrations/", {"name": "globex-only", "baseUrl": "https://g.example"}, format="json")

    response = token_pair("consultant", "correct-horse-battery")
    assert response.status_code == 200
    client = bearer(response.json()["access"])

    response = client.get("/api/integrations/")
    assert response.status_code == 401
    assert "X-Backflow-Scope" in response.json()["detail"]

    names = [i["name"] for i in client.get("/api/integrations/", HTTP_X_BACKFLOW_SCOPE="acme").json()["results"]]
    assert names == ["acme-only"]
    names = [i["name"] for i in client.get("/api/integrations/?scope=globex").json()["results"]]
    assert names == ["globex-only"]
    assert client.get("/api/integrations/", HTTP_X_BACKFLOW_SCOPE="initech").status_code == 401

    # A token for one tenant needs no choice.
    single = bearer(token_pair("consultant", "correct-horse-battery", "globex").json()["access"])
    assert [i["name"] for i in single.get("/api/integrations/").json()["results"]] == ["globex-only"]


def test_removing_membership_stops_the_token(acme):
    user = make_user("leaver")
    tenant_services.membership_set(tenant=acme.tenant, user=user, role="admin")
    client = bearer(acme.jwt(user=user, password="correct-horse-battery"))
    assert client.get("/api/integrations/").status_code == 200
    assert client.get("/api/keys/").status_code == 200
    Membership.objects.for_tenant(acme.tenant).filter(user=user).delete()
    assert client.get("/api/integrations/").status_code == 401
    assert client.get("/api/keys/").status_code == 401


def test_deactivated_user_token_stops_working(acme):
    client = bearer(acme.jwt())
    assert client.get("/api/integrations/").status_code == 200
    get_user_model().objects.filter(pk=acme.owner.pk).update(is_active=False)
    assert client.get("/api/integrations/").status_code == 401


def test_refresh(acme):
    pair = token_pair(acme.owner.username, "pw-acmeacme", "acme").json()
    response = APIClient().post("/api/auth/refresh", {"refresh": pair["refresh"]}, format="json")
    assert response.status_code == 200, response.content
    access = response.json()["access"]
    assert access != pair["access"]
    client = bearer(access)
    assert client.get("/api/integrations/").status_code == 200
    assert client.get("/api/keys/").status_code == 200
    assert APIClient().post("/api/auth/refresh", {"refresh": "garbage"}, format="json").status_code == 401
    # An access token is not a refresh token.
    assert APIClient().post("/api/auth/refresh", {"refresh": pair["access"]}, format="json").status_code == 401


# --- key management over REST ---------------------------------------------------------------


def test_api_keys_cannot_manage_keys(acme):
    for client in (acme.client(), acme.client(acme.key_with(*ALL_SCOPES))):
        assert client.get("/api/keys/").status_code == 403
        response = client.post("/api/keys/", {"name": "escalate"}, format="json")
        assert response.status_code == 403
        assert "owners and admins" in response.json()["detail"]


def test_members_cannot_manage_keys(acme):
    member = make_user("member")
    tenant_services.membership_set(tenant=acme.tenant, user=member, role="member")
    client = bearer(acme.jwt(user=member, password="correct-horse-battery"))
    assert client.get("/api/integrations/").status_code == 200
    before = ApiKey.objects.for_tenant(acme.tenant).count()
    assert client.get("/api/keys/").status_code == 403
    assert client.post("/api/keys/", {"name": "mine"}, format="json").status_code == 403
    prefix = ApiKey.objects.for_tenant(acme.tenant).first().prefix
    assert client.delete(f"/api/keys/{prefix}/").status_code == 403
    assert ApiKey.objects.for_tenant(acme.tenant).count() == before
    assert ApiKey.objects.for_tenant(acme.tenant).get(prefix=prefix).revoked_at is None


def test_admin_role_manages_keys(acme):
    admin_user = make_user("tenant-admin")
    tenant_services.membership_set(tenant=acme.tenant, user=admin_user, role="admin")
    client = bearer(acme.jwt(user=admin_user, password="correct-horse-battery"))
    assert client.post("/api/keys/", {"name": "by-admin"}, format="json").status_code == 201


def test_owner_creates_lists_and_revokes_keys(acme):
    client = bearer(acme.jwt())
    response = client.post("/api/keys/", {"name": "deploy", "scopes": ["routes:read"]}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    match = KEY_FORMAT.match(body["key"])
    assert match, body["key"]
    plaintext, prefix = body["key"], match.group(1)
    assert body["prefix"] == prefix
    assert body["scopes"] == ["routes:read"]
    assert body["createdBy"] == f"user:{acme.owner.username}"

    listed = client.get("/api/keys/").json()["results"]
    mine = [k for k in listed if k["prefix"] == prefix]
    assert len(mine) == 1
    for item in listed:
        assert "key" not in item and not any("hash" in field.lower() for field in item)
    assert plaintext not in str(listed) and match.group(2) not in str(listed)
    detail = client.get(f"/api/keys/{prefix}/").json()
    assert "key" not in detail and plaintext not in str(detail)

    # The new key works within its scopes.
    key_client = bearer(plaintext)
    assert key_client.get("/api/routes/").status_code == 200
    assert key_client.get("/api/integrations/").status_code == 403

    assert client.delete(f"/api/keys/{prefix}/").status_code == 204
    assert client.get(f"/api/keys/{prefix}/").json()["revokedAt"] is not None
    assert key_client.get("/api/routes/").status_code == 401
    # Revoking again is harmless; unknown prefixes are 404.
    assert client.delete(f"/api/keys/{prefix}/").status_code == 204
    assert client.delete("/api/keys/zzzzzzzz/").status_code == 404


def test_key_create_validation(acme):
    client = bearer(acme.jwt())
    before = ApiKey.objects.for_tenant(acme.tenant).count()
    response = client.post("/api/keys/", {"name": "x", "scopes": ["nope:read"]}, format="json")
    assert response.status_code == 400 and "scopes" in str(response.json()["errors"])
    response = client.post("/api/keys/", {"scopes": ["routes:read"]}, format="json")
    assert response.status_code == 400 and "name" in response.json()["errors"]
    past = (timezone.now() - timedelta(days=1)).isoformat()
    response = client.post("/api/keys/", {"name": "old", "expiresAt": past}, format="json")
    assert response.status_code == 400 and "expiresAt" in response.json()["errors"]
    assert ApiKey.objects.for_tenant(acme.tenant).count() == before
    # No scopes means all of them.
    response = client.post("/api/keys/", {"name": "everything"}, format="json")
    assert response.status_code == 201 and response.json()["scopes"] == list(ALL_SCOPES)


# --- operator commands ----------------------------------------------------------------------


def test_create_tenant_command(db):
    err = io.StringIO()
    call_command("create_tenant", "initech", "--name", "Initech Corp", stderr=err, stdout=io.StringIO())
    tenant = Tenant.objects.get(slug="initech")
    assert tenant.name == "Initech Corp" and tenant.is_active
    assert "initech" in err.getvalue()
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_tenant", "initech", stderr=io.StringIO(), stdout=io.StringIO())
    with pytest.raises(CommandError, match="slug"):
        call_command("create_tenant", "Not A Slug", stderr=io.StringIO(), stdout=io.StringIO())
    assert Tenant.objects.count() == 1


def test_create_api_key_command(acme):
    out = io.StringIO()
    call_command("create_api_key", "acme", "--name", "ci", "--scope", "routes:read", "--scope", "routes:write", stdout=out)
    plaintext = out.getvalue().strip()
    match = KEY_FORMAT.match(plaintext)
    assert match, out.getvalue()
    stored = ApiKey.objects.for_tenant(acme.tenant).get(prefix=match.group(1))
    assert stored.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert stored.scopes == ["routes:read", "routes:write"] and stored.name == "ci"
    client = bearer(plaintext)
    assert client.get("/api/routes/").status_code == 200
    assert client.get("/api/integrations/").status_code == 403

    out = io.StringIO()
    call_command("create_api_key", "acme", "--expires-days", "3", stdout=out)
    stored = ApiKey.objects.for_tenant(acme.tenant).get(prefix=out.getvalue().strip()[3:11])
    assert stored.scopes == list(ALL_SCOPES)
    assert timedelta(days=2, hours=23) < stored.expires_at - timezone.now() <= timedelta(days=3)

    before = ApiKey.objects.for_tenant(acme.tenant).count()
    with pytest.raises(CommandError, match=r"Unknown scope.*routes:delete"):
        call_command("create_api_key", "acme", "--scope", "routes:delete", stdout=io.StringIO())
    with pytest.raises(CommandError, match="No tenant 'nobody'"):
        call_command("create_api_key", "nobody", stdout=io.StringIO())
    with pytest.raises(CommandError, match="expires-days"):
        call_command("create_api_key", "acme", "--expires-days", "0", stdout=io.StringIO())
    assert ApiKey.objects.for_tenant(acme.tenant).count() == before


def test_commands_as_subprocesses(transactional_db, acme):
    """The README's operator commands in real processes, on this run's (committed) test database."""
    from tests.live import ROOT, child_env

    commands = {
        "key": ["create_api_key", "acme", "--scope", "routes:read"],
        "existing-tenant": ["create_tenant", "acme"],
        "bad-scope": ["create_api_key", "acme", "--scope", "routes:destroy"],
        # A fresh process: the bearer scheme's extension is registered by the URLconf, not by an app's ready().
        "schema": ["spectacular", "--format", "openapi-json"],
    }
    # Independent commands: run them side by side (each process start costs a few seconds).
    processes = {
        label: subprocess.Popen([sys.executable, "manage.py", *args], cwd=ROOT, env=child_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for label, args in commands.items()
    }
    results = {}
    for label, process in processes.items():
        stdout, stderr = process.communicate(timeout=120)
        results[label] = (process.returncode, stdout, stderr)

    code, stdout, stderr = results["key"]
    assert code == 0, stderr
    assert KEY_FORMAT.match(stdout.rstrip("\n")), repr(stdout)
    assert stdout.count("\n") <= 1  # the key alone on stdout
    plaintext = stdout.strip()
    stored = ApiKey.objects.for_tenant(acme.tenant).get(prefix=plaintext[3:11])
    assert stored.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert stored.scopes == ["routes:read"] and stored.created_by == "system:create_api_key"
    assert bearer(plaintext).get("/api/routes/").status_code == 200

    code, stdout, stderr = results["existing-tenant"]
    assert code == 1
    assert "Tenant 'acme' already exists" in stderr and stdout == ""
    assert "Traceback" not in stderr

    code, stdout, stderr = results["bad-scope"]
    assert code == 1
    assert "Unknown scope(s) routes:destroy" in stderr and "routes:read" in stderr  # names the valid ones
    assert stdout == "" and "Traceback" not in stderr
    assert ApiKey.objects.for_tenant(acme.tenant).count() == 2  # the fixture's key and the one above

    code, stdout, stderr = results["schema"]
    assert code == 0, stderr
    schema = json.loads(stdout)
    assert schema["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert schema["paths"]["/api/routes/"]["get"]["security"] == [{"bearer": []}]
    assert "could not resolve authenticator" not in stderr
