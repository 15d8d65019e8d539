"""The newcomer's path: `/` says what this is and where to go, sign-in without `next` lands on a
page that exists, and the guides it links to are readable in a browser."""

import pytest
from django.test import Client

from tenants import services as tenant_services

LINKS = ('href="/admin/"', 'href="/api/docs/"', 'href="/accounts/login/"', 'href="/docs/mcp-guide.md"')


def test_anonymous_landing_page_says_what_this_is_and_links_the_ways_in(db):
    response = Client().get("/")
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    page = response.content.decode()
    assert "<h1>Backflow</h1>" in page and "Model Context Protocol" in page
    for link in LINKS:
        assert link in page, link
    assert '<code id="mcp-url">http://testserver/mcp</code>' in page
    assert Client().head("/").status_code == 200
    assert Client().post("/").status_code == 405


def test_sign_in_without_next_lands_on_the_landing_page_showing_only_my_tenants(acme, globex):
    owner = acme.owner
    owner.set_password("pw-landing")
    owner.save()
    browser = Client()
    response = browser.post("/accounts/login/", {"username": owner.username, "password": "pw-landing"})
    assert response.status_code == 302 and response["Location"] == "/", response
    page = browser.get(response["Location"]).content.decode()
    assert f"Signed in as {owner.username}" in page
    assert "<code>acme</code>" in page and "globex" not in page, page
    assert 'href="/o/authorized_tokens/"' in page


def test_a_tenant_that_deactivated_shows_as_inactive(acme):
    tenant_services.tenant_set_active(tenant=acme.tenant, actor=acme.actor, active=False)
    acme.owner.set_password("pw-landing")
    acme.owner.save()
    browser = Client()
    browser.force_login(acme.owner)
    assert "inactive" in browser.get("/").content.decode()


@pytest.mark.parametrize("name", ["mcp-guide", "tenant-guide", "operator-guide", "security"])
def test_guides_render(db, name):
    response = Client().get(f"/docs/{name}.md")
    assert response.status_code == 200 and "<h1>" in response.content.decode()


def test_guides_are_an_allowlist_and_render_no_markup(db, settings, tmp_path):
    for path in ("/docs/README.md", "/docs/..%2Fbackflow%2Fsettings.md", "/docs/nope.md", "/docs/.env.md", "/docs/mcp-guide"):
        assert Client().get(path).status_code == 404, path
    # Raw HTML in a guide is shown as text, never run (the renderer has HTML off).
    from backflow import pages

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "security.md").write_text("# Title\n\n<script>alert(1)</script>\n")
    settings.BASE_DIR = tmp_path
    pages.rendered_guide.cache_clear()
    try:
        page = Client().get("/docs/security.md").content.decode()
    finally:
        pages.rendered_guide.cache_clear()
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
