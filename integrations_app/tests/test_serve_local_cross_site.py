"""Issue 15, hole 3: `serve_local` was callable cross-site. An `<img>` on another site's page made
the developer's browser call a local route, which POSTed upstream with `{{env.PAY_TOKEN}}`.

Two nets, each on a real `manage.py serve_local` child with a loopback upstream counting calls:
- requests another site's page starts (`Sec-Fetch-Site: cross-site` or `same-site`, which browsers
  send on every request, an `<img>` included, and pages cannot change) are refused with 403
  before any route runs, whatever the route's requireAuth;
- without BACKFLOW_LOCAL_TOKEN, serve_local makes a token at start and prints it once on stderr,
  and routes with requireAuth need it (they were served to anyone before).
The last test drives headless Chromium: an attacker's page on another origin loads the route as an
image and with fetch(); the upstream is never called.
"""

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from integrations_app.tests.test_runtime_helpers import Reply, upstream, upstreams  # noqa: F401 (fixtures)
from integrations_app.tests.test_serve_local import ServeLocal, local_folder

PAY_TOKEN = "pay-token-of-the-developer"
TOKEN_LINE = re.compile(r"^ +Authorization: Bearer (\S+)$", re.MULTILINE)
IMAGE = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "no-cors", "Sec-Fetch-Dest": "image"}  # what an <img> sends


def pay_site(root, upstream):
    """The developer's local files: a `pay` integration with their token from the environment,
    GET /pay (requireAuth, the default) and GET /open (requireAuth false) that both charge."""
    mcp_config = local_folder(root, auto_reload=False)
    (root / "integrations" / "pay.json").write_text(json.dumps({
        "name": "pay", "baseUrl": upstream.url, "auth": {"type": "bearer", "secret": "{{env.PAY_TOKEN}}"},
        "endpoints": [{"name": "charge", "method": "post", "path": "/charge", "body": {"amount": 100}}]}), encoding="utf-8")
    actions = {"actions": [{"id": "charge", "integration": "pay", "action": "charge"}]}
    (root / "config.json").write_text(json.dumps({"routes": [
        {"path": "/pay", "method": "get", "integrations": actions},
        {"path": "/open", "method": "get", "requireAuth": False, "integrations": actions},
    ]}), encoding="utf-8")
    return mcp_config


@pytest.fixture
def serve_local():
    started = []

    def start(mcp_config, **env):
        server = ServeLocal(mcp_config, PAY_TOKEN=PAY_TOKEN, BACKFLOW_EGRESS_ALLOW="127.0.0.1", **env)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def printed_token(server):
    for _ in range(50):
        found = TOKEN_LINE.findall(server.output(tail=None))
        if found:
            return found
        time.sleep(0.1)
    return []


def test_requests_started_by_another_site_are_refused_before_any_route_runs(tmp_path, upstream, serve_local):
    upstream.on("POST", "/charge", Reply(body={"charged": True}))
    server = serve_local(pay_site(tmp_path / "dev", upstream))
    (token,) = printed_token(server)
    with httpx.Client(base_url=server.url, timeout=10) as http:
        for path in ("/t/local/pay", "/t/local/open", "/t/local/nothing", "/elsewhere"):
            for site in ("cross-site", "same-site", "CROSS-SITE", "something-new"):
                refused = http.get(path, headers={**IMAGE, "Sec-Fetch-Site": site, "Authorization": f"Bearer {token}"})
                assert refused.status_code == 403, (path, site, refused.text)
                assert "another site" in refused.json()["error"]
            posted = http.post(path, json={}, headers={"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate"})
            assert posted.status_code == 403
        assert upstream.calls() == []

        # What the developer's own tools send still works: no header (curl, scripts), a typed URL, same origin.
        assert http.get("/t/local/open").status_code == 200
        assert http.get("/t/local/open", headers={"Sec-Fetch-Site": "none", "Sec-Fetch-Mode": "navigate"}).status_code == 200
        assert http.get("/t/local/pay", headers={"Sec-Fetch-Site": "same-origin", "Authorization": f"Bearer {token}"}).status_code == 200
    assert len(upstream.calls("/charge")) == 3
    assert upstream.calls("/charge")[0].headers["authorization"] == f"Bearer {PAY_TOKEN}"


def test_without_backflow_local_token_a_token_is_made_printed_once_and_required(tmp_path, upstream, serve_local):
    upstream.on("POST", "/charge", Reply(body={"charged": True}))
    server = serve_local(pay_site(tmp_path / "dev", upstream))
    found = printed_token(server)
    assert len(found) == 1 and len(found[0]) >= 32, server.output()
    token = found[0]
    assert "BACKFLOW_LOCAL_TOKEN is not set" in server.output() and "requireAuth" in server.output()
    with httpx.Client(base_url=server.url, timeout=10) as http:
        missing = http.get("/t/local/pay")  # what any page or program could send before
        assert missing.status_code == 401 and token not in missing.text
        assert missing.headers["www-authenticate"].startswith("Bearer")
        assert http.get("/t/local/pay", headers={"Authorization": "Bearer guess"}).status_code == 401
        assert upstream.calls() == []
        paid = http.get("/t/local/pay", headers={"Authorization": f"Bearer {token}"})
        assert paid.status_code == 200, paid.text
        assert http.get("/t/local/open").status_code == 200  # requireAuth false: no token needed
    assert len(upstream.calls("/charge")) == 2
    output = server.output(tail=None)
    assert output.count(token) == 1 and PAY_TOKEN not in output

    # A token of the developer's choosing is used as it is, and nothing is printed.
    again = serve_local(pay_site(tmp_path / "mine", upstream), BACKFLOW_LOCAL_TOKEN="my-own-local-token")
    time.sleep(0.5)
    assert TOKEN_LINE.findall(again.output(tail=None)) == [] and "my-own-local-token" not in again.output(tail=None)
    with httpx.Client(base_url=again.url, timeout=10) as http:
        assert http.get("/t/local/pay", headers={"Authorization": f"Bearer {token}"}).status_code == 401
        assert http.get("/t/local/pay", headers={"Authorization": "Bearer my-own-local-token"}).status_code == 200


CHROMIUM = "/usr/bin/chromium"
ATTACK = """<!doctype html><title>cute cats</title>
<img src="{target}/t/local/open?via=img"><img src="{target}/t/local/pay?via=img">
<script>
  fetch("{target}/t/local/open?via=fetch", {{mode: "no-cors", credentials: "include"}}).catch(() => {{}});
  fetch("{target}/t/local/pay?via=fetch", {{mode: "no-cors"}}).catch(() => {{}}).finally(() => {{ document.title = "done"; }});
</script>"""


class AttackerSite:
    """Another site: a page on its own loopback origin that points the visitor's browser at serve_local."""

    def __init__(self, target):
        page = ATTACK.format(target=target).encode()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f"no Chromium at {CHROMIUM} (`make browser` installs it)")
def test_an_image_on_another_site_cannot_make_the_browser_spend_the_developers_token(tmp_path, upstream, serve_local):
    from entities_app.tests.test_browser import chromium

    upstream.on("POST", "/charge", Reply(body={"charged": True}))
    server = serve_local(pay_site(tmp_path / "dev", upstream))
    attacker = AttackerSite(server.url)
    try:
        with chromium() as browser:
            page = browser.new_page()
            seen = []
            page.on("request", lambda request: seen.append(request.url))
            # localhost and 127.0.0.1 are two sites (cross-site); another port of 127.0.0.1 is the same site.
            for origin in (f"http://localhost:{attacker.port}/", f"http://127.0.0.1:{attacker.port}/"):
                page.goto(origin)
                page.wait_for_function("document.title === 'done'", timeout=10000)
                page.wait_for_load_state("load")
            assert sum("/t/local/" in url for url in seen) == 8, seen  # the browser did send them all
            assert upstream.calls() == []
            # The developer opening the URL themselves (Sec-Fetch-Site: none) is served.
            opened = page.goto(f"{server.url}/t/local/open")
            assert opened.status == 200 and len(upstream.calls("/charge")) == 1
    finally:
        attacker.close()
