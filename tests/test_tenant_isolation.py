"""Tenant isolation for every REST endpoint under /api/, discovered from the URL conf.

The walker groups DRF router routes by basename (`integration-list`, `integration-detail`, extra
actions such as `workflow-runs`). Every basename must have an entry in REGISTRY: a factory that
creates one object for a tenant through the service layer and says how to address it. A new
endpoint without an entry makes `test_every_api_endpoint_has_an_isolation_factory` fail, so it
cannot ship uncovered. For every entry, globex (the other tenant) must neither see acme's object in
its lists nor reach it through any detail-level route (404 for every method the route supports,
never 403), and nothing of acme's may change.
"""

import json
import uuid
from dataclasses import dataclass, field

import pytest
from django.apps import apps
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from entities_app import selectors as entity_selectors
from entities_app import services as entity_services
from integrations_app import services as integration_services
from integrations_app.models import Integration, Route
from integrations_app.stores import DatabaseStore
from tenants import services as tenant_services
from tenants.scoping import TenantOwned
from workflows_app import services as workflow_services

# Endpoints under /api/ that are not tenant resources.
EXEMPT = {"auth-token", "auth-refresh", "schema", "swagger-ui"}
DETAIL_METHODS = ("get", "put", "patch", "delete")


def walk(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            yield prefix + str(pattern.pattern), pattern.name, pattern.callback


@dataclass
class Endpoint:
    name: str
    route: str
    basename: str | None  # DRF router basename, None for plain views
    detail: bool
    methods: set


def api_endpoints():
    """Every URL pattern below api/."""
    found = []
    for route, name, callback in walk(get_resolver().url_patterns):
        if not route.startswith(("api/", "^api/")):
            continue
        initkwargs = getattr(callback, "initkwargs", {}) or {}
        found.append(Endpoint(
            name=name or f"<unnamed {route}>", route=route, basename=initkwargs.get("basename"),
            detail=bool(initkwargs.get("detail")), methods=set(getattr(callback, "actions", {}) or {}),
        ))
    return found


@dataclass
class Made:
    """What a factory created: the model instance, how to address it, and valid request bodies."""

    obj: object
    detail_kwargs: dict
    put_body: dict | None = None
    patch_body: dict | None = None
    list_kwargs: dict = field(default_factory=dict)
    # Bodies for POST to detail-level extra actions, by route name (e.g. "workflow-runs").
    post_bodies: dict = field(default_factory=dict)


def _store(ctx):
    return DatabaseStore(tenant=ctx.tenant, actor=ctx.actor)


def _integration_doc(name, marker):
    return {
        "name": name,
        "displayName": marker,
        "description": f"integration {marker}",
        "baseUrl": "https://api.example.com/v1",
        "auth": {"type": "bearer", "secret": "iso_token"},
        "endpoints": [{"name": "listThings", "method": "get", "path": "/things"}],
    }


def make_integration(ctx, marker):
    doc = _integration_doc(marker, marker)
    integration_services.integration_create(store=_store(ctx), document=doc)
    obj = Integration.objects.for_tenant(ctx.tenant).get(name=marker)
    put = {**doc, "displayName": "taken over", "baseUrl": "https://evil.example.com"}
    return Made(obj, {"name": marker}, put_body=put, patch_body={"description": "taken over"})


def make_route(ctx, marker):
    integration_services.integration_create(store=_store(ctx), document=_integration_doc(f"{marker}-int", marker))
    doc = {
        "path": f"/{marker}/{{id}}",
        "method": "get",
        "description": marker,
        "integrations": {"actions": [{"integration": f"{marker}-int", "action": "listThings",
                                      "params": {"id": "{{request.params.id}}"}}]},
    }
    saved = integration_services.route_create(store=_store(ctx), document=doc)
    obj = Route.objects.for_tenant(ctx.tenant).get(pk=saved["id"])
    put = {**doc, "path": "/taken-over", "description": "taken over"}
    return Made(obj, {"pk": saved["id"]}, put_body=put, patch_body={"description": "taken over"})


def make_secret(ctx, marker):
    obj = integration_services.secret_create(tenant=ctx.tenant, actor=ctx.actor, name=marker,
                                             value=f"value-of-{marker}", description=marker)
    return Made(obj, {"name": marker}, put_body={"value": "taken over", "description": "taken over"},
                patch_body={"value": "taken over"})


def make_api_key(ctx, marker):
    obj, _ = tenant_services.api_key_create(tenant=ctx.tenant, actor=ctx.actor, name=marker)
    return Made(obj, {"prefix": obj.prefix}, put_body={"name": "taken over"}, patch_body={"name": "taken over"})


def make_audit_event(ctx, marker):
    obj = tenant_services.audit_record(tenant=ctx.tenant, actor=ctx.actor, action="test.isolation",
                                       object_type="test", object_id=marker, summary={"marker": marker})
    return Made(obj, {"pk": obj.pk}, put_body={"action": "taken over"}, patch_body={"action": "taken over"})


def make_collection(ctx, marker):
    obj = entity_services.collection_create(tenant=ctx.tenant, actor=ctx.actor,
                                            document={"name": marker, "description": marker})
    return Made(obj, {"name": marker}, put_body={"name": marker, "description": "taken over"},
                patch_body={"description": "taken over", "schema": {"type": "object", "required": ["x"]}})


def make_entity(ctx, marker):
    # Both tenants use the SAME collection name: globex must not reach acme's entity through its own
    # collection of that name either.
    collection = "shared-" + marker.split("-", 1)[1]
    if not entity_selectors.collection_list(tenant=ctx.tenant).filter(name=collection).exists():
        entity_services.collection_create(tenant=ctx.tenant, actor=ctx.actor, document={"name": collection})
    obj = entity_services.entity_create(tenant=ctx.tenant, actor=ctx.actor, collection_name=collection,
                                        data={"owner": marker, "n": 1})
    body = {"data": {"owner": "taken over"}}
    return Made(obj, {"collection_name": collection, "pk": str(obj.id)}, put_body=body, patch_body=body,
                list_kwargs={"collection_name": collection})


def make_app(ctx, marker):
    doc = {"id": marker, "name": marker, "description": marker,
           "pages": [{"path": "", "title": marker, "components": [{"type": "markdown", "props": {"text": marker}}]}]}
    obj = entity_services.app_create(tenant=ctx.tenant, actor=ctx.actor, document=doc)
    return Made(obj, {"slug": marker}, put_body={**doc, "name": "taken over", "public": True},
                patch_body={"public": True, "description": "taken over"})


def _workflow_doc(marker):
    return {"id": marker, "name": marker, "description": marker,
            "workflows": [{"name": "main", "steps": [{"id": "ask", "action": "llm", "params": {"prompt": marker}}]}],
            "tools": [{"name": "llm", "type": "llm_call"}]}


def make_workflow(ctx, marker):
    doc = _workflow_doc(marker)
    obj = workflow_services.workflow_create(tenant=ctx.tenant, actor=ctx.actor, document=doc)
    return Made(obj, {"slug": marker}, put_body={**doc, "name": "taken over"},
                patch_body={"description": "taken over"}, post_bodies={"workflow-runs": {"input": {"x": 1}}})


def make_run(ctx, marker):
    workflow = workflow_services.workflow_create(tenant=ctx.tenant, actor=ctx.actor, document=_workflow_doc(marker))
    obj = workflow_services.run_create(tenant=ctx.tenant, actor=ctx.actor, workflow=workflow, input={"marker": marker})
    return Made(obj, {"pk": str(obj.id)}, post_bodies={"run-cancel": {}})


def make_mcp_server(ctx, marker):
    doc = {"name": marker, "transport": "http", "url": f"https://{marker}.example.com/mcp"}
    obj = workflow_services.mcp_server_create(tenant=ctx.tenant, actor=ctx.actor, document=doc)
    return Made(obj, {"name": marker}, put_body={**doc, "url": "https://evil.example.com/mcp"},
                patch_body={"url": "https://evil.example.com/mcp"})


def make_oauth_grant(ctx, marker):
    """An MCP client's OAuth connection to the tenant (as the consent page leaves it)."""
    from datetime import timedelta

    from django.utils import timezone
    from oauth2_provider.models import (
        get_access_token_model,
        get_application_model,
        get_refresh_token_model,
    )

    application = get_application_model().objects.create(
        name=marker, client_type="public", authorization_grant_type="authorization-code",
        redirect_uris="http://127.0.0.1:9/callback",
    )
    token = get_access_token_model().objects.create(
        user=ctx.owner, application=application, token=uuid.uuid4().hex,
        expires=timezone.now() + timedelta(hours=1), scope=f"tenant:{ctx.tenant.slug} integrations:read",
    )
    get_refresh_token_model().objects.create(user=ctx.owner, application=application, token=uuid.uuid4().hex,
                                             access_token=token)
    return Made(token, {"pk": token.pk})


@dataclass
class Entry:
    factory: object
    # Which credentials of each tenant to try: its full-scope API key and/or its owner's JWT.
    credentials: tuple = ("key", "jwt")


# router basename -> how to make one object of that resource for a tenant.
REGISTRY = {
    "integration": Entry(make_integration),
    "route": Entry(make_route),
    "secret": Entry(make_secret),
    # Keys are managed only by a tenant's owners and admins signed in with a JWT.
    "apikey": Entry(make_api_key, credentials=("jwt",)),
    "audit": Entry(make_audit_event),
    "collection": Entry(make_collection),
    "entity": Entry(make_entity),
    "app": Entry(make_app),
    "workflow": Entry(make_workflow),
    "run": Entry(make_run),
    "mcpserver": Entry(make_mcp_server),
    # OAuth connections are managed by owners and admins, like keys.
    "oauth-authorization": Entry(make_oauth_grant, credentials=("jwt",)),
}


def test_every_api_endpoint_has_an_isolation_factory():
    endpoints = api_endpoints()
    uncovered = [f"{e.name} ({e.route})" for e in endpoints if e.name not in EXEMPT and e.basename not in REGISTRY]
    assert not uncovered, (
        "These /api/ endpoints have no tenant-isolation factory: add an entry to REGISTRY in "
        f"tests/test_tenant_isolation.py (or to EXEMPT if they are not tenant resources): {uncovered}"
    )
    bases = {e.basename for e in endpoints}
    for basename in REGISTRY:
        assert basename in bases, f"REGISTRY names {basename!r}, which no longer exists."
        assert any(e.basename == basename and e.detail for e in endpoints), f"{basename} has no detail route."
    # Sanity: the walker really sees the known resources.
    assert {"integration", "route", "secret", "apikey", "audit", "collection", "entity", "app"} <= bases
    # Entities live under their collection: /api/collections/{collection_name}/entities/.
    assert all("collections/" in e.route and "collection_name" in e.route for e in endpoints if e.basename == "entity")


def _discovered_basenames():
    return sorted({e.basename or e.name for e in api_endpoints() if e.name not in EXEMPT})


def _client(ctx, kind):
    return ctx.client() if kind == "key" else ctx.client(ctx.jwt())


def _tenant_rows(tenant):
    """Every row the tenant owns, in every tenant-owned model (read across tenants)."""
    snapshot = {}
    for model in apps.get_models():
        if issubclass(model, TenantOwned):
            rows = model._base_manager.filter(tenant=tenant).order_by("pk").values()
            snapshot[model._meta.label] = [json.dumps(r, sort_keys=True, default=str) for r in rows]
    return snapshot


def _row(obj):
    """The database row of obj as stored now (None if gone), read across tenants."""
    return type(obj)._base_manager.filter(pk=obj.pk).values().first()


def _items(response):
    body = response.json()
    return body["results"] if isinstance(body, dict) and "results" in body else body


def _url(endpoint, kwargs):
    return reverse(endpoint.name, kwargs=kwargs or None)


@pytest.mark.parametrize("basename", _discovered_basenames())
def test_other_tenant_cannot_see_or_touch(basename, acme, globex):
    entry = REGISTRY.get(basename)
    assert entry is not None, f"{basename} has no isolation factory in REGISTRY."
    routes = [e for e in api_endpoints() if e.basename == basename]
    lists = [e for e in routes if not e.detail and "get" in e.methods]
    details = [e for e in routes if e.detail]
    main_detail = next(e for e in details if e.name == f"{basename}-detail")

    for kind in entry.credentials:
        suffix = uuid.uuid4().hex[:8]
        acme_marker, globex_marker = f"acme-{suffix}", f"globex-{suffix}"
        mine = entry.factory(acme, acme_marker)
        theirs = entry.factory(globex, globex_marker)
        acme_client, globex_client = _client(acme, kind), _client(globex, kind)

        detail_url = _url(main_detail, mine.detail_kwargs)
        before_api = acme_client.get(detail_url) if "get" in main_detail.methods else None
        if before_api is not None:
            assert before_api.status_code == 200, (kind, before_api.content)

        # Lists: each tenant sees its own object and never the other's.
        for endpoint in lists:
            acme_list = acme_client.get(_url(endpoint, mine.list_kwargs) + "?page_size=500")
            globex_list = globex_client.get(_url(endpoint, theirs.list_kwargs) + "?page_size=500")
            assert acme_list.status_code == 200 and globex_list.status_code == 200, (endpoint.name, kind)
            acme_text, globex_text = json.dumps(_items(acme_list)), json.dumps(_items(globex_list))
            assert acme_marker in acme_text and globex_marker in globex_text, "the factory's marker must be listed"
            assert acme_marker not in globex_text, f"{kind}: globex's {endpoint.name} shows acme's object"
            assert globex_marker not in acme_text, f"{kind}: acme's {endpoint.name} shows globex's object"
            # Listing acme's own list URL (nested resources) as globex shows nothing of acme either.
            response = globex_client.get(_url(endpoint, mine.list_kwargs) + "?page_size=500")
            assert response.status_code in (200, 404) and acme_marker not in response.content.decode()

        # Detail-level routes: 404 for every supported method (existence is never revealed).
        acme_rows, acme_object = _tenant_rows(acme.tenant), _row(mine.obj)
        for endpoint in details:
            url = _url(endpoint, mine.detail_kwargs)
            methods = DETAIL_METHODS if endpoint is main_detail else sorted(endpoint.methods)
            for method in methods:
                body = {"put": mine.put_body, "patch": mine.patch_body, "post": mine.post_bodies.get(endpoint.name, {})}.get(method)
                kwargs = {"format": "json"} if body is None else {"data": body, "format": "json"}
                response = getattr(globex_client, method)(url, **kwargs)
                expected = 404 if method in endpoint.methods else 405
                assert response.status_code == expected, (kind, method, url, response.status_code, response.content)
                assert acme_marker not in response.content.decode(), (kind, method, url)

        # Nothing of acme's changed (the object itself and every other row), and acme still sees it.
        assert _row(mine.obj) == acme_object, f"{kind}: globex changed or deleted acme's {basename}"
        assert _tenant_rows(acme.tenant) == acme_rows, f"{kind}: globex changed acme's data through {basename}"
        if before_api is not None:
            after_api = acme_client.get(detail_url)
            assert after_api.status_code == 200
            assert after_api.json() == before_api.json()
        # And acme can act on it (the 404s were not a broken route).
        if "patch" in main_detail.methods and mine.patch_body:
            response = acme_client.patch(detail_url, mine.patch_body, format="json")
            assert response.status_code == 200, response.content
