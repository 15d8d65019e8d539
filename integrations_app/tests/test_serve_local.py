"""`manage.py serve_local` (the seed's `npm start`) serves the routes an assistant wrote through
`manage.py mcp_stdio`: both run as real child processes; the upstream is a local HTTP server.
Credentials come from {{env.NAME}}; BACKFLOW_LOCAL_TOKEN guards requireAuth routes; with autoReload
a route added while the server runs is served at once."""

import base64
import json
import os
import sys
import tempfile
from pathlib import Path

import anyio
import httpx
from django.conf import settings
from mcp import ClientSession, StdioServerParameters, stdio_client

from integrations_app.tests.test_runtime_helpers import *  # noqa: F403 (fixtures and helpers)
from integrations_app.tests.test_runtime_helpers import Reply
from tests.live import ServerProcess

ROOT = Path(settings.BASE_DIR)
MANAGE = str(ROOT / "manage.py")
NOT_INHERITED = ("BACKFLOW_INTEGRATIONS_PATH", "BACKFLOW_CONFIG_PATH", "BACKFLOW_LOCAL_TOKEN", "DEBUG", "UP_TOKEN", "UP_USER")


def child_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update(SECRET_KEY=settings.SECRET_KEY, BACKFLOW_SECRETS_KEY=settings.BACKFLOW_SECRETS_KEY, PYTHONUNBUFFERED="1")
    env.update(extra)
    return env


def local_folder(root, auto_reload=True):
    (root / "integrations").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"mcpServers": [], "routes": []}) + "\n", encoding="utf-8")
    mcp_config = root / "mcp-config.json"
    mcp_config.write_text(json.dumps({"enabled": True, "integrationsPath": "./integrations", "configPath": "./config.json",
                                      "autoReload": auto_reload}), encoding="utf-8")
    return mcp_config


class ServeLocal(ServerProcess):
    def __init__(self, mcp_config, **env):
        super().__init__(lambda port: [MANAGE, "serve_local", str(mcp_config), "--port", str(port)], **env)


async def mcp_call(session, tool, arguments):
    result = await session.call_tool(tool, arguments)
    assert not result.is_error, f"{tool} failed: {result.content[0].text}"
    return json.loads(result.content[0].text)


def test_serve_local_serves_routes_written_by_mcp_stdio(tmp_path, upstream):
    upstream.on("GET", "/classes", lambda seen: Reply(body={"classes": [{"id": 1, "day": seen.query.get("day")}]}))
    upstream.on("POST", "/bookings", lambda seen: Reply(201, {"booked": seen.json}))
    mcp_config = local_folder(tmp_path / "studio")
    params = StdioServerParameters(command=sys.executable, args=[MANAGE, "mcp_stdio", str(mcp_config)],
                                   env=child_env(), cwd=str(tmp_path))
    secret_env = {"UP_TOKEN": "up-token-from-env", "UP_USER": "studio-user", "BACKFLOW_EGRESS_ALLOW": "127.0.0.1"}

    async def main():
        with tempfile.TemporaryFile("w+") as errlog:
            async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
                await session.initialize()
                await mcp_call(session, "create_integration", {
                    "name": "studio", "baseUrl": upstream.url, "auth": {"type": "bearer", "secret": "{{env.UP_TOKEN}}"},
                    "endpoints": [{"name": "listClasses", "method": "get", "path": "/classes", "query": {"day": "{{params.day}}"}},
                                  {"name": "book", "method": "post", "path": "/bookings"}]})
                await mcp_call(session, "create_route", {
                    "path": "/classes", "method": "get", "requireAuth": False,
                    "integrations": {"actions": [{"id": "list", "integration": "studio", "action": "listClasses",
                                                  "params": {"day": "{{request.query.day}}"}}]}})
                await mcp_call(session, "create_route", {
                    "path": "/bookings/{classId}", "method": "post",
                    "integrations": {"actions": [{"id": "book", "integration": "studio", "action": "book",
                                                  "params": {"classId": "{{request.params.classId}}", "who": "{{request.body.who}}"}}]},
                    "response": {"ok": True, "booking": "{{steps.book.result.booked}}"}})

                server = await anyio.to_thread.run_sync(
                    lambda: ServeLocal(mcp_config, BACKFLOW_LOCAL_TOKEN="local-route-token", **secret_env))
                try:
                    async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
                        opened = await http.get("/t/local/classes", params={"day": "mon"})
                        assert opened.status_code == 200, (opened.text, server.output())
                        assert opened.json() == {"classes": [{"id": 1, "day": "mon"}]}
                        assert upstream.calls("/classes")[-1].headers["authorization"] == "Bearer up-token-from-env"

                        # requireAuth (the default) needs BACKFLOW_LOCAL_TOKEN
                        assert (await http.post("/t/local/bookings/9", json={"who": "ann"})).status_code == 401
                        wrong = await http.post("/t/local/bookings/9", json={"who": "ann"}, headers={"Authorization": "Bearer nope"})
                        assert wrong.status_code == 401 and "local-route-token" not in wrong.text
                        booked = await http.post("/t/local/bookings/9", json={"who": "ann"},
                                                 headers={"Authorization": "Bearer local-route-token"})
                        assert booked.status_code == 200, booked.text
                        assert booked.json() == {"ok": True, "booking": {"classId": "9", "who": "ann"}}
                        assert len(upstream.calls("/bookings")) == 1

                        assert (await http.get("/t/acme/classes")).status_code == 404
                        assert (await http.get("/t/local/nothing")).status_code == 404

                        # autoReload: a route and an integration (basic auth from env) added while serving
                        assert (await http.get("/t/local/whoami")).status_code == 404
                        await mcp_call(session, "create_integration", {
                            "name": "directory", "baseUrl": upstream.url,
                            "auth": {"type": "basic", "username": "{{env.UP_USER}}", "secret": "{{env.UP_TOKEN}}"},
                            "endpoints": [{"name": "me", "method": "get", "path": "/me"}]})
                        await mcp_call(session, "create_route", {
                            "path": "/whoami", "method": "get", "requireAuth": False,
                            "integrations": {"actions": [{"id": "me", "integration": "directory", "action": "me"}]}})
                        added = await http.get("/t/local/whoami")
                        assert added.status_code == 200, (added.text, server.output())
                        assert added.json()["path"] == "/me"
                        basic = upstream.calls("/me")[-1].headers["authorization"]
                        assert basic == "Basic " + base64.b64encode(b"studio-user:up-token-from-env").decode()
                    assert "up-token-from-env" not in server.output()
                finally:
                    await anyio.to_thread.run_sync(server.stop)

    anyio.run(main)


def test_local_site_guard_and_env_credentials_in_process(tmp_path, upstream, tripwire, monkeypatch, settings):
    """The app serve_local runs (RouteDispatcher over a LocalSite), called in-process: the egress guard
    is on in local mode too, a missing {{env.NAME}} is a 502 naming it (never a crash), and without a
    local token requireAuth routes are served openly."""
    from asgiref.sync import async_to_sync

    from backflow.egress import guarded_client
    from integrations_app import dispatch
    from integrations_app.file_store import FileStore

    root = tmp_path / "site"
    local_folder(root, auto_reload=False)
    (root / "integrations" / "up.json").write_text(json.dumps({
        "name": "up", "baseUrl": upstream.url, "auth": {"type": "bearer", "secret": "{{env.UP_TOKEN}}"},
        "endpoints": [{"name": "ping", "method": "get", "path": "/ping"}]}), encoding="utf-8")
    (root / "config.json").write_text(json.dumps({"routes": [{
        "path": "/ping", "method": "get",
        "integrations": {"actions": [{"id": "ping", "integration": "up", "action": "ping"}]}}]}), encoding="utf-8")
    store = FileStore(integrations_path=root / "integrations", config_path=root / "config.json")
    app = dispatch.RouteDispatcher(dispatch.LocalSites(dispatch.LocalSite(store, token=None)))

    def call(allow):
        settings.BACKFLOW_EGRESS_ALLOW = allow

        async def main():
            client = guarded_client(inner_backend=tripwire)
            monkeypatch.setattr(dispatch, "shared_client", lambda: client)
            try:
                async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://127.0.0.1") as http:
                    return await http.get("/t/local/ping")
            finally:
                await client.aclose()

        return async_to_sync(main)()

    monkeypatch.delenv("UP_TOKEN", raising=False)
    missing = call(["127.0.0.1"])
    assert missing.status_code == 502 and "UP_TOKEN" in missing.json()["error"]

    monkeypatch.setenv("UP_TOKEN", "env-token-1")
    refused = call([])
    assert refused.status_code == 502, refused.text
    assert "Refused to call '127.0.0.1'" in refused.json()["error"] and "env-token-1" not in refused.text
    assert upstream.calls() == [] and tripwire.reached == []

    allowed = call(["127.0.0.0/8"])
    assert allowed.status_code == 200 and allowed.json()["path"] == "/ping"
    assert upstream.calls()[-1].headers["authorization"] == "Bearer env-token-1"
