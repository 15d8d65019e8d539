"""Tenant isolation for every page outside /api/, discovered from the URL conf.

Every non-API URL pattern must appear in PAGES: either proved here (app pages, with two tenants,
signed in as the other tenant's owner, anonymous, and on public apps) or pointing at the test that
proves it for that page. A new page without an entry fails `test_every_page_is_covered`.
"""

from pathlib import Path

import pytest
from django.conf import settings
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from entities_app import services as entity_services
from entities_app.models import Entity
from tests.isolation import tenant_rows

ROOT = Path(settings.BASE_DIR)
HERE = "tests/security/test_page_isolation.py"
WORKFLOWS = "workflows_app/tests/test_isolation.py"
OAUTH_CONNECTIONS = "tenants/tests/test_oauth_connections.py"

# URL name -> (file, test) proving the other tenant cannot reach the first tenant's page.
PAGES = {
    "app-home": (HERE, "test_app_pages_of_one_tenant_do_not_exist_for_another"),
    "app-page": (HERE, "test_app_pages_of_one_tenant_do_not_exist_for_another"),
    "workflow-webhook": (WORKFLOWS, "test_globex_cannot_see_or_touch_acmes_workflows_runs_and_servers"),
    "agent-mcp-servers": (WORKFLOWS, "test_globex_cannot_see_or_touch_acmes_workflows_runs_and_servers"),
    "agent-mcp-tools": (WORKFLOWS, "test_globex_cannot_see_or_touch_acmes_workflows_runs_and_servers"),
    "agent-mcp-execute": (WORKFLOWS, "test_globex_cannot_see_or_touch_acmes_workflows_runs_and_servers"),
    "authorized-token-list": (OAUTH_CONNECTIONS, "test_people_revoke_on_their_page_and_operators_in_the_admin"),
    "authorized-token-delete": (OAUTH_CONNECTIONS, "test_people_revoke_on_their_page_and_operators_in_the_admin"),
    "authorize": ("tenants/tests/test_oauth_flow.py", "test_member_of_two_tenants_picks_one_and_sees_only_its_data"),
    "home": ("tests/test_landing.py", "test_sign_in_without_next_lands_on_the_landing_page_showing_only_my_tenants"),
}
# Pages that show no tenant's data: sign-in, OAuth protocol endpoints and metadata (the tenant of a
# grant is chosen on the consent page, `authorize`), the guides of docs/, and the operators' admin
# (staff only).
NOT_TENANT_PAGES = {
    "guide",
    "login", "logout", "password_change", "password_change_done", "token", "revoke-token", "introspect", "dcr-register",
    "dcr-register-management", "oauth-server-metadata", "oauth-resource-metadata", "oauth-resource-metadata-mcp",
}


def _pages(patterns, prefix=""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _pages(pattern.url_patterns, prefix + str(pattern.pattern))
        elif isinstance(pattern, URLPattern):
            route = prefix + str(pattern.pattern)
            if not route.startswith(("api/", "^api/", "admin/", "^admin/")):
                yield route, pattern.name


def test_every_page_is_covered():
    pages = dict((name, route) for route, name in _pages(get_resolver().url_patterns))
    uncovered = sorted(f"{name} ({route})" for name, route in pages.items() if name not in PAGES and name not in NOT_TENANT_PAGES)
    assert not uncovered, f"pages without a tenant-isolation test: add them to PAGES in {HERE}: {uncovered}"
    assert set(PAGES) | NOT_TENANT_PAGES <= set(pages), f"entries for pages that no longer exist: {set(PAGES) - set(pages)}"
    for name, (path, test) in PAGES.items():
        assert f"def {test}(" in (ROOT / path).read_text(encoding="utf-8"), f"{name}: {path} has no {test}"


def test_the_admin_is_for_operators_only(acme):
    owner = Client()
    owner.force_login(acme.owner)  # a tenant's owner is not staff
    response = owner.get("/admin/integrations_app/integration/")
    assert response.status_code == 302 and response["Location"].startswith("/admin/login/")


MEMBERS = {"name": "members", "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]}}


def _app(slug, public):
    return {"id": slug, "name": slug.title(), "public": public, "pages": [
        {"path": "", "title": "Home", "components": [
            {"type": "table", "binding": {"collection": "members", "fields": ["name"]}},
            {"type": "form", "binding": {"collection": "members", "fields": ["name"]}},
        ]},
        {"path": "about", "title": "About", "components": [{"type": "stat", "props": {"label": "people", "op": "count"},
                                                             "binding": {"collection": "members"}}]},
    ]}


@pytest.mark.django_db
def test_app_pages_of_one_tenant_do_not_exist_for_another(acme, globex):
    for ctx, person in ((acme, "Ana of acme"), (globex, "Gus of globex")):
        entity_services.collection_create(tenant=ctx.tenant, actor=ctx.actor, document=MEMBERS)
        entity_services.entity_create(tenant=ctx.tenant, actor=ctx.actor, collection_name="members", data={"name": person})
        # The same app ids in both tenants: each URL names its tenant, and only that tenant's data shows.
        entity_services.app_create(tenant=ctx.tenant, actor=ctx.actor, document=_app("private", public=False))
        entity_services.app_create(tenant=ctx.tenant, actor=ctx.actor, document=_app("open", public=True))
    before = tenant_rows(acme.tenant)
    globex_owner, anonymous = Client(), Client()
    globex_owner.force_login(globex.owner)

    for page in ("", "about", "nope"):
        # acme's private app does not exist for globex's owner, for any page or method.
        assert globex_owner.get(f"/apps/acme/private/{page}").status_code == 404
        assert globex_owner.post(f"/apps/acme/private/{page}", {"_component": "1", "name": "intruder"}).status_code == 404
        # Anonymous visitors are sent to sign in, without learning whether the app exists.
        for app in ("private", "missing"):
            response = anonymous.get(f"/apps/acme/{app}/{page}")
            assert response.status_code == 302 and response["Location"] == f"/accounts/login/?next=/apps/acme/{app}/{page}"
    # Public: anyone reads acme's data, none of globex's; no one but acme's members may write.
    for visitor in (globex_owner, anonymous):
        html = visitor.get("/apps/acme/open/").content.decode()
        assert "Ana of acme" in html and "Gus of globex" not in html
        assert visitor.post("/apps/acme/open/", {"_component": "1", "name": "intruder"}).status_code == 404
    # globex's owner sees globex's own apps, with globex's data only.
    html = globex_owner.get("/apps/globex/private/").content.decode()
    assert "Gus of globex" in html and "Ana of acme" not in html
    # A tenant slug that is not the app's owner, or no tenant at all: 404.
    assert globex_owner.get("/apps/nobody/private/").status_code == 404

    assert tenant_rows(acme.tenant) == before
    assert not Entity.objects.for_tenant(acme.tenant).filter(data__name="intruder").exists()
