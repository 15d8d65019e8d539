"""The operator admin: every page renders, and writes go through the same services as REST."""

import hashlib
import json
import re

import pytest
from django.contrib import admin
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from entities_app import services as entity_services
from entities_app.models import App, Collection, Entity
from integrations_app import services
from integrations_app.models import Integration, Route, RouteInvocation, Secret
from integrations_app.stores import DatabaseStore
from tenants import services as tenant_services
from tenants.models import ApiKey, AuditEvent
from workflows_app import services as workflow_services

STRIPE = {
    "name": "stripe",
    "baseUrl": "https://api.stripe.com/v1",
    "auth": {"type": "bearer", "secret": "stripe_key"},
    "endpoints": [{"name": "listCharges", "method": "get", "path": "/charges"}],
}


@pytest.fixture
def operator(db):
    return get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")


@pytest.fixture
def admin_client(operator):
    client = Client()
    client.force_login(operator)
    return client


@pytest.fixture
def populated(acme, operator):
    """At least one object of every model the admin shows."""
    store = DatabaseStore(tenant=acme.tenant, actor=acme.actor)
    services.integration_create(store=store, document=STRIPE)
    route = services.route_create(store=store, document={
        "path": "/charges", "method": "get",
        "integrations": {"actions": [{"integration": "stripe", "action": "listCharges"}]},
    })
    services.secret_create(tenant=acme.tenant, actor=acme.actor, name="stripe_key", value="sk_test_admin")
    RouteInvocation.objects.create(tenant=acme.tenant, route_id=route["id"], method="get", path="/charges",
                                   status=200, duration_ms=12.5)
    entity_services.collection_create(tenant=acme.tenant, actor=acme.actor, document={"name": "members"})
    entity_services.entity_create(tenant=acme.tenant, actor=acme.actor, collection_name="members", data={"name": "Ada"})
    entity_services.app_create(tenant=acme.tenant, actor=acme.actor, document={
        "id": "studio", "name": "Studio",
        "pages": [{"path": "", "components": [{"type": "table", "binding": {"collection": "members"}}]}],
    })
    workflow = workflow_services.workflow_create(tenant=acme.tenant, actor=acme.actor, document={
        "id": "nightly", "name": "Nightly",
        "workflows": [{"name": "main", "steps": [{"id": "ask", "action": "llm", "params": {"prompt": "hi"}}]}],
        "tools": [{"name": "llm", "type": "llm_call"}],
    })
    workflow_services.run_create(tenant=acme.tenant, actor=acme.actor, workflow=workflow, input={})
    workflow_services.mcp_server_create(tenant=acme.tenant, actor=acme.actor, document={
        "name": "files", "transport": "http", "url": "https://mcp.example.com/mcp"})
    workflow_services.worker_beat(worker_id="host:1:ab12", hostname="host", pid=1, concurrency=4, started_at=timezone.now())
    _oauth_objects(acme)
    # A signed-out person's refresh token: an outstanding token and its blacklist row.
    from rest_framework_simplejwt.tokens import RefreshToken

    RefreshToken.for_user(acme.owner).blacklist()
    Group.objects.create(name="operators")
    return {"route_id": route["id"]}


def _oauth_objects(ctx):
    """One of each django-oauth-toolkit record (an MCP client connected to the tenant)."""
    import uuid
    from datetime import timedelta

    from django.utils import timezone
    from oauth2_provider import models as oauth

    expires = timezone.now() + timedelta(hours=1)
    application = oauth.get_application_model().objects.create(
        name="Claude", client_type="public", authorization_grant_type="authorization-code",
        redirect_uris="http://127.0.0.1:9/callback",
    )
    scope = f"tenant:{ctx.tenant.slug} integrations:read"
    oauth.get_grant_model().objects.create(user=ctx.owner, application=application, code=uuid.uuid4().hex, expires=expires,
                                           redirect_uri="http://127.0.0.1:9/callback", scope=scope,
                                           code_challenge="x" * 43, code_challenge_method="S256")
    id_token = oauth.get_id_token_model().objects.create(user=ctx.owner, application=application, expires=expires, scope=scope)
    token = oauth.get_access_token_model().objects.create(user=ctx.owner, application=application, token=uuid.uuid4().hex,
                                                          expires=expires, scope=scope, id_token=id_token)
    oauth.get_refresh_token_model().objects.create(user=ctx.owner, application=application, token=uuid.uuid4().hex,
                                                   access_token=token)


def _admin_url(model, view, *args):
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


def test_every_admin_page_renders(admin_client, populated):
    assert admin_client.get("/admin/").status_code == 200
    registered = admin.site._registry
    assert {Integration, Route, RouteInvocation, Secret, ApiKey, AuditEvent, Collection, Entity, App} <= set(registered)
    for model, model_admin in registered.items():
        label = model._meta.label
        response = admin_client.get(_admin_url(model, "changelist"))
        assert response.status_code == 200, (label, "changelist", response.status_code)
        if model_admin.search_fields:
            assert admin_client.get(_admin_url(model, "changelist") + "?q=a").status_code == 200, label
        if model_admin.has_add_permission(_request(admin_client)):
            response = admin_client.get(_admin_url(model, "add"))
            assert response.status_code == 200, (label, "add", response.status_code)
        obj = model._base_manager.first()
        assert obj is not None, f"the `populated` fixture in {__name__} makes no {label}: add one"
        for view in ("change", "history", "delete"):
            if view == "delete" and not model_admin.has_delete_permission(_request(admin_client), obj):
                continue
            response = admin_client.get(_admin_url(model, view, obj.pk))
            assert response.status_code == 200, (label, view, response.status_code)
    # Each app index too.
    for app_label in {m._meta.app_label for m in registered}:
        assert admin_client.get(reverse("admin:app_list", args=[app_label])).status_code == 200


def _request(client):
    from django.test import RequestFactory

    request = RequestFactory().get("/admin/")
    request.user = get_user_model().objects.get(pk=client.session["_auth_user_id"])
    return request


def _integration_form(tenant, **overrides):
    data = {
        "tenant": tenant.pk, "name": "airtable", "display_name": "Airtable", "description": "",
        "base_url": "https://api.airtable.com/v0",
        "auth": json.dumps({"type": "bearer", "secret": "airtable_token"}),
        "endpoints": json.dumps([{"name": "listRecords", "method": "GET", "path": "/{baseId}/{table}"}]),
    }
    data.update(overrides)
    return data


def test_add_integration_goes_through_the_service(admin_client, acme):
    response = admin_client.post(_admin_url(Integration, "add"), _integration_form(acme.tenant))
    assert response.status_code == 302, response.content.decode()[:2000]
    obj = Integration.objects.for_tenant(acme.tenant).get(name="airtable")
    assert obj.endpoints[0]["method"] == "get"  # normalised by the service
    event = AuditEvent.objects.for_tenant(acme.tenant).get(action="integration.create", object_id="airtable")
    assert event.principal == "system:admin:ops"
    assert event.summary["endpoints"] == ["listRecords"]

    # Changing it is an audited service update as well.
    response = admin_client.post(_admin_url(Integration, "change", obj.pk), _integration_form(acme.tenant, display_name="AT"))
    assert response.status_code == 302
    obj.refresh_from_db()
    assert obj.display_name == "AT"
    assert AuditEvent.objects.for_tenant(acme.tenant).filter(action="integration.update", principal="system:admin:ops").exists()


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"name": "Air Table"}, "name"),
        ({"base_url": "ftp://x"}, "baseUrl"),
        ({"auth": json.dumps({"type": "bearer"})}, "auth.secret"),
        ({"endpoints": json.dumps([{"name": "x", "method": "fetch", "path": "/x"}])}, "endpoints[0].method"),
        ({"endpoints": "not json"}, "Enter a valid JSON"),
    ],
)
def test_invalid_integration_shows_a_form_error(admin_client, acme, overrides, message):
    before = AuditEvent.objects.for_tenant(acme.tenant).count()
    response = admin_client.post(_admin_url(Integration, "add"), _integration_form(acme.tenant, **overrides))
    assert response.status_code == 200  # the form again, not a redirect
    page = response.content.decode()
    assert "errornote" in page and message in page
    assert not Integration.objects.for_tenant(acme.tenant).exists()
    assert AuditEvent.objects.for_tenant(acme.tenant).count() == before


def test_duplicate_integration_in_admin_is_a_form_error(admin_client, acme):
    services.integration_create(store=DatabaseStore(tenant=acme.tenant, actor=acme.actor), document={**STRIPE, "name": "airtable"})
    response = admin_client.post(_admin_url(Integration, "add"), _integration_form(acme.tenant))
    assert response.status_code == 200
    assert "is taken" in response.content.decode()
    assert Integration.objects.for_tenant(acme.tenant).count() == 1


def test_deleting_an_integration_used_by_a_route_is_protected(admin_client, acme, populated):
    obj = Integration.objects.for_tenant(acme.tenant).get(name="stripe")
    url = _admin_url(Integration, "delete", obj.pk)
    page = admin_client.get(url)
    assert page.status_code == 200
    text = page.content.decode()
    assert "would require deleting the following protected related objects" in text
    assert "GET /charges uses stripe" in text

    response = admin_client.post(url, {"post": "yes"})
    assert response.status_code == 200
    assert Integration.objects.for_tenant(acme.tenant).filter(name="stripe").exists()

    # The bulk "delete selected" action is refused the same way.
    response = admin_client.post(_admin_url(Integration, "changelist"),
                                 {"action": "delete_selected", "_selected_action": [obj.pk], "post": "yes"})
    assert response.status_code == 200
    assert "GET /charges uses stripe" in response.content.decode()
    assert Integration.objects.for_tenant(acme.tenant).filter(name="stripe").exists()
    assert not AuditEvent.objects.for_tenant(acme.tenant).filter(action="integration.delete").exists()

    # Once the route is gone (deleted in the admin, through the service), the integration can go.
    route = Route.objects.for_tenant(acme.tenant).get()
    assert admin_client.post(_admin_url(Route, "delete", route.pk), {"post": "yes"}).status_code == 302
    assert admin_client.post(url, {"post": "yes"}).status_code == 302
    assert not Integration.objects.for_tenant(acme.tenant).exists()
    actions = set(AuditEvent.objects.for_tenant(acme.tenant).filter(principal="system:admin:ops").values_list("action", flat=True))
    assert {"route.delete", "integration.delete"} <= actions


def test_route_admin_goes_through_the_service(admin_client, acme, populated):
    data = {
        "tenant": acme.tenant.pk, "path": "/charges/{id}", "method": "get", "description": "one",
        "require_auth": "on", "response": "",
        "actions": json.dumps([{"integration": "stripe", "action": "listCharges", "params": {"id": "{{request.params.id}}"}}]),
    }
    response = admin_client.post(_admin_url(Route, "add"), data)
    assert response.status_code == 302, response.content.decode()[:2000]
    assert AuditEvent.objects.for_tenant(acme.tenant).filter(action="route.create", principal="system:admin:ops").exists()
    # A duplicate path and method, or an unknown integration, is a form error.
    response = admin_client.post(_admin_url(Route, "add"), data)
    assert response.status_code == 200 and "is taken" in response.content.decode()
    response = admin_client.post(_admin_url(Route, "add"), {**data, "path": "/other", "actions": json.dumps([{"integration": "nope", "action": "x"}])})
    assert response.status_code == 200 and "integrations.actions[0].integration" in response.content.decode()
    assert Route.objects.for_tenant(acme.tenant).count() == 2


def test_api_key_created_in_admin_is_shown_once_and_hashed(admin_client, acme):
    before = set(ApiKey.objects.for_tenant(acme.tenant).values_list("prefix", flat=True))
    response = admin_client.post(_admin_url(ApiKey, "add"),
                                 {"tenant": acme.tenant.pk, "name": "from-admin", "scopes": ["routes:read", "routes:write"]},
                                 follow=True)
    assert response.status_code == 200
    created = ApiKey.objects.for_tenant(acme.tenant).exclude(prefix__in=before).get()
    match = re.search(rf"bf_{created.prefix}_[A-Za-z0-9_-]+", response.content.decode())
    assert match, "the new key must be shown in a message"
    plaintext = match.group(0)
    assert created.key_hash == hashlib.sha256(plaintext.encode()).hexdigest()
    assert created.scopes == ["routes:read", "routes:write"]
    assert created.created_by == "system:admin:ops"
    assert AuditEvent.objects.for_tenant(acme.tenant).filter(action="api_key.create", principal="system:admin:ops").exists()

    # Shown once: no later page has it.
    secret = plaintext.split("_", 2)[2]
    for url in (_admin_url(ApiKey, "changelist"), _admin_url(ApiKey, "change", created.pk), "/admin/"):
        assert secret not in admin_client.get(url).content.decode()
    # It works, and revoking it in the admin (action) makes it stop working.
    assert acme.client(plaintext).get("/api/routes/").status_code == 200
    response = admin_client.post(_admin_url(ApiKey, "changelist"), {"action": "revoke", "_selected_action": [created.pk]})
    assert response.status_code == 302
    assert acme.client(plaintext).get("/api/routes/").status_code == 401


def test_api_key_admin_refuses_a_past_expiry(admin_client, acme):
    before = ApiKey.objects.for_tenant(acme.tenant).count()
    response = admin_client.post(_admin_url(ApiKey, "add"), {
        "tenant": acme.tenant.pk, "name": "old", "expires_at_0": "2000-01-01", "expires_at_1": "00:00:00",
    })
    assert response.status_code == 200 and "The expiry must be in the future." in response.content.decode()
    assert ApiKey.objects.for_tenant(acme.tenant).count() == before


def test_audit_events_are_read_only(admin_client, acme):
    tenant_services.audit_record(tenant=acme.tenant, actor=acme.actor, action="x.y", object_type="x")
    event = AuditEvent.objects.for_tenant(acme.tenant).first()
    assert admin_client.get(_admin_url(AuditEvent, "add")).status_code == 403
    page = admin_client.get(_admin_url(AuditEvent, "change", event.pk))
    assert page.status_code == 200 and 'name="_save"' not in page.content.decode()
    assert admin_client.post(_admin_url(AuditEvent, "change", event.pk), {"action": "forged"}).status_code == 403
    assert admin_client.post(_admin_url(AuditEvent, "delete", event.pk), {"post": "yes"}).status_code == 403
    assert AuditEvent.objects.for_tenant(acme.tenant).filter(pk=event.pk, action=event.action).exists()
