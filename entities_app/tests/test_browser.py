"""App pages in a real browser: Debian's headless Chromium driven by Playwright, against daphne.

The server is the `make run` one (`live_daphne`: daphne on the test database, WhiteNoise serving
the collected static files). Entities are created through the REST API over HTTP, pages are used
the way people use them (sign in, read the table, submit the form), and one screenshot per page
type is kept in tests/artifacts/ (gitignored) for a human to look at.

Playwright downloads nothing: it launches /usr/bin/chromium (`make browser` installs it). `launch`
gives every browser a fresh, temporary user-data dir of its own. Playwright's sync API runs an
event loop in this thread, so the ORM is only used before the browser starts; inside, the test
talks to the server over HTTP like any client.
"""

import json
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher

from entities_app import services

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-quic",
]
ARTIFACTS = Path(settings.BASE_DIR) / "tests" / "artifacts"
SCREENSHOTS = ("login-page", "table-page", "form-error", "detail-page", "list-page")

pytestmark = [
    pytest.mark.skipif(not Path(CHROMIUM).exists(),
                       reason=f"no Chromium at {CHROMIUM}: `make browser` (part of `make test`) installs Debian's package"),
    pytest.mark.slow,
]

MEMBERS = {
    "name": "members",
    "description": "Studio members",
    "schema": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 2},
            "status": {"type": "string", "enum": ["active", "paused"]},
            "age": {"type": "integer", "minimum": 0},
        },
        "required": ["name"],
        "additionalProperties": False,
    },
}
STUDIO = {"id": "studio", "name": "Studio", "pages": [
    {"path": "", "title": "Members", "components": [
        {"type": "markdown", "props": {"text": "Welcome, **members**."}},
        {"type": "stat", "props": {"label": "active members", "op": "count"},
         "binding": {"collection": "members", "filters": {"status": "active"}}},
        {"type": "table", "props": {"title": "All members"},
         "binding": {"collection": "members", "fields": ["name", "status", "age"], "sort": "name"}},
        {"type": "form", "props": {"title": "New member", "submitLabel": "Add member"},
         "binding": {"collection": "members", "fields": ["name", "status", "age"]}},
    ]},
    {"path": "people", "title": "People", "components": [
        {"type": "list", "binding": {"collection": "members", "fields": ["name", "status"], "sort": "-age"}},
    ]},
    {"path": "person", "title": "Person", "components": [
        {"type": "detail", "binding": {"collection": "members", "fields": ["name", "status", "age"]}},
    ]},
]}
BOARD = {"id": "board", "name": "Board", "public": True, "pages": [
    {"path": "", "title": "Board", "components": [
        {"type": "table", "binding": {"collection": "members", "fields": ["name", "status"], "sort": "name"}},
        {"type": "form", "binding": {"collection": "members", "fields": ["name"]}},
    ]},
]}


@pytest.fixture(scope="session")
def collected_static():
    """daphne serves /static/ from STATIC_ROOT through WhiteNoise with the manifest storage, as in
    production: collect once when the manifest is missing or older than a source file (`make test`
    has normally done it already; collecting again while other processes serve would race them)."""
    root = Path(settings.STATIC_ROOT)
    manifest = root / "staticfiles.json"
    static = Path(settings.BASE_DIR) / "entities_app" / "static"
    sources = [p for p in static.rglob("*") if p.is_file()]
    stale = not manifest.exists() or any(p.stat().st_mtime > manifest.stat().st_mtime for p in sources)
    if not stale:
        paths = json.loads(manifest.read_text()).get("paths", {})
        stale = any(p.relative_to(static).as_posix() not in paths for p in sources)
    if stale:
        subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "--verbosity", "0"],
                       cwd=settings.BASE_DIR, check=True, timeout=300)


@contextmanager
def chromium():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def api(server, ctx):
    return httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {ctx.key}"}, timeout=10)


def create_member(http, data):
    response = http.post("/api/collections/members/entities/", json={"data": data})
    assert response.status_code == 201, response.text
    return response.json()


def password_for_the_server(ctx):
    """The test process hashes with MD5 (conftest, for speed), which daphne's settings do not accept:
    store the owner's password with the production hasher (few rounds; upgraded at sign-in)."""
    hasher = PBKDF2PasswordHasher()
    encoded = hasher.encode("pw-" + ctx.tenant.slug * 2, hasher.salt(), iterations=1000)
    get_user_model().objects.filter(pk=ctx.owner.pk).update(password=encoded)


def sign_in(page, ctx):
    page.fill("main input[name=username]", ctx.owner.username)
    page.fill("main input[name=password]", "pw-" + ctx.tenant.slug * 2)
    page.click("main form button[type=submit]")


def screenshot(page, name):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def watch_console(page):
    """The page's console messages, as they arrive."""
    messages = []
    page.on("console", lambda message: messages.append(message.text))
    return messages


def csp_violations(messages):
    """Chromium's reports of the Content-Security-Policy at work ("Refused to ...", "... violates
    the following Content Security Policy directive ...")."""
    return [m for m in messages if "Content Security Policy" in m or "Refused to" in m]


def table_rows(page, component="table"):
    rows = page.locator(f"section.component-{component} tbody tr[data-id]")
    return [(rows.nth(i).get_attribute("data-id"), rows.nth(i).locator("td").all_inner_texts()) for i in range(rows.count())]


def test_member_reads_and_writes_an_app_in_chromium(acme, live_daphne, collected_static):
    from playwright.sync_api import expect

    services.collection_create(tenant=acme.tenant, actor=acme.actor, document=MEMBERS)
    services.app_create(tenant=acme.tenant, actor=acme.actor, document=STUDIO)
    password_for_the_server(acme)
    server = live_daphne()
    for name in SCREENSHOTS:
        (ARTIFACTS / f"{name}.png").unlink(missing_ok=True)

    with api(server, acme) as http, chromium() as browser:
        ana = create_member(http, {"name": "Ana", "status": "active", "age": 34})
        ben = create_member(http, {"name": "Ben", "status": "paused", "age": 41})
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        console = watch_console(page)

        # Not signed in: the sign-in page, which comes back to the app afterwards.
        page.goto(f"{server.url}/apps/acme/studio/")
        assert page.url == f"{server.url}/accounts/login/?next=/apps/acme/studio/", page.url
        expect(page.locator("main h1")).to_have_text("Sign in")
        # The stylesheet comes from the collected static files (hashed name), served by WhiteNoise.
        href = page.locator("link[rel=stylesheet]").get_attribute("href")
        assert href.startswith("/static/entities_app/app.") and href != "/static/entities_app/app.css", href
        css = page.request.get(server.url + href)
        assert css.status == 200 and css.headers["content-type"].startswith("text/css")
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == "rgb(247, 248, 250)"
        screenshot(page, "login-page")
        sign_in(page, acme)
        page.wait_for_url(f"{server.url}/apps/acme/studio/")

        # The table shows what the API created, sorted by name, with the entity ids.
        expect(page.locator("main h1")).to_have_text("Members")
        assert table_rows(page) == [(ana["id"], ["Ana", "active", "34"]), (ben["id"], ["Ben", "paused", "41"])]
        expect(page.locator("section.component-stat .stat-value")).to_have_text("1")
        expect(page.locator("section.component-markdown strong")).to_have_text("members")
        expect(page.locator("header .who")).to_contain_text(acme.owner.username)
        screenshot(page, "table-page")

        # Invalid input: the page comes back (400) with each message next to its field; nothing is saved.
        form = page.locator("section.component-form form")
        form.locator("input[name=name]").fill("A")
        form.locator("select[name=status]").select_option("active")
        form.locator("input[name=age]").fill("-3")
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            form.locator("button[type=submit]").click()
        assert posted.value.status == 400
        page.wait_for_load_state()
        for field, words in (("name", "too short"), ("age", "minimum")):
            error = page.locator(f'section.component-form label.field:has([name="{field}"]) + p.error[data-field="{field}"]')
            expect(error).to_be_visible()
            expect(error).to_contain_text(words)
        assert page.locator("p.error").count() == 2
        form = page.locator("section.component-form form")  # what was typed is still there to correct
        expect(form.locator("input[name=name]")).to_have_value("A")
        expect(form.locator("select[name=status]")).to_have_value("active")
        expect(form.locator("input[name=age]")).to_have_value("-3")
        assert len(http.get("/api/collections/members/entities/").json()["results"]) == 2
        screenshot(page, "form-error")

        # Valid input: saved, shown in the table and the stat, and readable through the API.
        form = page.locator("section.component-form form")
        form.locator("input[name=name]").fill("Cleo")
        form.locator("select[name=status]").select_option("active")
        form.locator("input[name=age]").fill("29")
        form.locator("button[type=submit]").click()
        page.wait_for_url(f"{server.url}/apps/acme/studio/?created=*")
        created_id = page.url.rsplit("=", 1)[1]
        expect(page.locator("p.notice")).to_have_text("Saved.")
        assert [cells for _, cells in table_rows(page)] == [["Ana", "active", "34"], ["Ben", "paused", "41"], ["Cleo", "active", "29"]]
        assert table_rows(page)[2][0] == created_id
        expect(page.locator("section.component-stat .stat-value")).to_have_text("2")
        entity = http.get(f"/api/collections/members/entities/{created_id}/").json()
        assert entity["data"] == {"name": "Cleo", "status": "active", "age": 29} and entity["version"] == 1
        listed = http.get("/api/collections/members/entities/", params={"filters": json.dumps({"status": "active"}), "sort": "name"})
        assert [e["data"]["name"] for e in listed.json()["results"]] == ["Ana", "Cleo"]

        # Detail page: one entity, chosen with ?id=. Every app page carries a strict policy.
        response = page.goto(f"{server.url}/apps/acme/studio/person?id={created_id}")
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy, policy
        expect(page.locator("main h1")).to_have_text("Person")
        expect(page.locator("nav a[aria-current=page]")).to_have_text("Person")
        assert page.locator("section.component-detail dt").all_inner_texts() == ["name", "status", "age"]
        assert page.locator("section.component-detail dd").all_inner_texts() == ["Cleo", "active", "29"]
        screenshot(page, "detail-page")
        page.goto(f"{server.url}/apps/acme/studio/person?id=00000000-0000-0000-0000-000000000000")
        expect(page.locator("section.component-detail p.empty")).to_be_visible()

        # List page: oldest first (sort -age).
        page.goto(f"{server.url}/apps/acme/studio/people")
        items = page.locator("section.component-list li[data-id]")
        assert [items.nth(i).locator("span").all_inner_texts() for i in range(items.count())] == [
            ["Ben", "paused"], ["Ana", "active"], ["Cleo", "active"]]
        screenshot(page, "list-page")

        # Everything above worked under the policy: not one thing was refused.
        assert csp_violations(console) == [], console
        # And the policy holds: a script put into the page does not run.
        with pytest.raises(Exception):
            page.add_script_tag(content="window.injected = true")
        assert page.evaluate("window.injected") is None
        assert any("inline script" in m for m in csp_violations(console)), console

    for name in SCREENSHOTS:
        path = ARTIFACTS / f"{name}.png"
        assert path.is_file() and path.stat().st_size > 1000, f"no screenshot {path}"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", path


def test_visitors_public_apps_and_other_tenants_in_chromium(acme, globex, live_daphne, collected_static):
    from playwright.sync_api import expect

    services.collection_create(tenant=acme.tenant, actor=acme.actor, document=MEMBERS)
    services.app_create(tenant=acme.tenant, actor=acme.actor, document=STUDIO)
    services.app_create(tenant=acme.tenant, actor=acme.actor, document=BOARD)
    # globex has an app with the same id and its own members.
    services.collection_create(tenant=globex.tenant, actor=globex.actor, document=MEMBERS)
    services.app_create(tenant=globex.tenant, actor=globex.actor, document=STUDIO)
    password_for_the_server(acme)
    password_for_the_server(globex)
    server = live_daphne()

    with api(server, acme) as acme_http, api(server, globex) as globex_http, chromium() as browser:
        create_member(acme_http, {"name": "Ana", "status": "active", "age": 34})
        create_member(globex_http, {"name": "Gina", "status": "active", "age": 50})

        # An anonymous visitor: private pages send them to sign in, the public app is read-only.
        visitor = browser.new_context().new_page()
        console = watch_console(visitor)
        for path in ("", "people", "person"):
            visitor.goto(f"{server.url}/apps/acme/studio/{path}")
            assert "/accounts/login/?next=/apps/acme/studio/" in visitor.url, visitor.url
            assert "Ana" not in visitor.content()
        response = visitor.goto(f"{server.url}/apps/acme/board/")
        assert response.status == 200
        assert [cells for _, cells in table_rows(visitor)] == [["Ana", "active"]]
        assert visitor.locator("form input[name=_component]").count() == 0
        assert visitor.locator("section.component-form input, section.component-form button").count() == 0
        expect(visitor.locator("section.component-form")).to_contain_text("Sign in as a member to add entries.")
        expect(visitor.locator("header .who a")).to_have_text("Sign in")
        assert "default-src 'none'" in response.headers["content-security-policy"]
        assert csp_violations(console) == [], console

        # globex's owner, signed in: acme's private app does not exist for them, their own does.
        other = browser.new_context().new_page()
        other.goto(f"{server.url}/accounts/login/?next=/apps/globex/studio/")
        sign_in(other, globex)
        other.wait_for_url(f"{server.url}/apps/globex/studio/")
        assert [cells for _, cells in table_rows(other)] == [["Gina", "active", "50"]]
        for path in ("", "people", "person", "nope"):
            response = other.goto(f"{server.url}/apps/acme/studio/{path}")
            assert response.status == 404, (path, response.status)
            assert "Ana" not in other.content()
        response = other.goto(f"{server.url}/apps/acme/board/")  # public: read-only for non-members too
        assert response.status == 200 and other.locator("form input[name=_component]").count() == 0
        assert [cells for _, cells in table_rows(other)] == [["Ana", "active"]]
        assert other.goto(f"{server.url}/apps/nope/studio/").status == 404

        # And acme's owner still sees only acme's members in the app of the same id.
        owner = browser.new_context().new_page()
        owner.goto(f"{server.url}/apps/acme/studio/")
        sign_in(owner, acme)
        owner.wait_for_url(f"{server.url}/apps/acme/studio/")
        assert [cells for _, cells in table_rows(owner)] == [["Ana", "active", "34"]]
        assert owner.goto(f"{server.url}/apps/globex/studio/").status == 404


def test_newcomer_signs_in_from_the_landing_page_in_chromium(acme, live_daphne, collected_static):
    from playwright.sync_api import expect

    password_for_the_server(acme)
    server = live_daphne()
    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        console = watch_console(page)
        page.goto(server.url + "/")
        expect(page.locator("main h1")).to_have_text("Backflow")
        expect(page.locator("#mcp-url")).to_have_text(server.url + "/mcp")
        page.click("main a[href='/accounts/login/']")
        sign_in(page, acme)
        page.wait_for_url(server.url + "/")  # LOGIN_REDIRECT_URL: a page that exists
        expect(page.locator("main h2").nth(1)).to_have_text(f"Signed in as {acme.owner.username}")
        expect(page.locator("main table")).to_contain_text("acme")
        page.click("main a[href='/docs/mcp-guide.md']")
        expect(page.locator("article.guide h1").first).to_be_visible()
        assert not csp_violations(console), console
