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
from dataclasses import dataclass

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

from tests.isolation import (
    make_api_key,
    make_app,
    make_audit_event,
    make_collection,
    make_entity,
    make_integration,
    make_mcp_server,
    make_oauth_grant,
    make_route,
    make_run,
    make_secret,
    make_workflow,
    stored_row,
    tenant_rows,
)

# Endpoints under /api/ that are not tenant resources.
EXEMPT = {"auth-token", "auth-refresh", "auth-logout", "schema", "swagger-ui"}
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
        acme_rows, acme_object = tenant_rows(acme.tenant), stored_row(mine.obj)
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
        assert stored_row(mine.obj) == acme_object, f"{kind}: globex changed or deleted acme's {basename}"
        assert tenant_rows(acme.tenant) == acme_rows, f"{kind}: globex changed acme's data through {basename}"
        if before_api is not None:
            after_api = acme_client.get(detail_url)
            assert after_api.status_code == 200
            assert after_api.json() == before_api.json()
        # And acme can act on it (the 404s were not a broken route).
        if "patch" in main_detail.methods and mine.patch_body:
            response = acme_client.patch(detail_url, mine.patch_body, format="json")
            assert response.status_code == 200, response.content
