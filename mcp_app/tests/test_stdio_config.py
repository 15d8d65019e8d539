"""mcp-config.json and its environment overrides, each one on a real `mcp_stdio` process."""

import json
import subprocess
import sys

from django.conf import settings

from mcp_app.tests.helpers import (
    LOCAL_TOOLS,
    LocalSite,
    assert_pretty_json,
    child_env,
    mcp_server,
    run,
    run_command,
)

CRM = {"name": "crm", "baseUrl": "https://crm.example.com/api", "auth": {"type": "bearer", "secret": "{{env.CRM_TOKEN}}"},
       "endpoints": [{"name": "listContacts", "method": "get", "path": "/contacts"}]}
CONTACTS = {"path": "/contacts", "method": "get", "integrations": {"actions": [{"integration": "crm", "action": "listContacts"}]}}
# What each flag takes away: the family's write tools (integrations:write, routes:write).
WRITE_INTEGRATION_TOOLS = {"create_integration", "update_integration", "delete_integration", "call_endpoint", "import_openapi"}
WRITE_ROUTE_TOOLS = {"create_route", "update_route", "delete_route", "test_route"}


def write_json(path, data):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def assert_refused_at_start(proc, *fragments):
    """Exit non-zero, nothing on stdout (it belongs to the protocol), one clear line on stderr."""
    assert proc.returncode != 0
    assert proc.stdout == ""
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in proc.stderr
    return lines[0]


# -- permissions ---------------------------------------------------------------------------------


def test_integration_creation_disabled_hides_and_refuses_integration_writes(site, tmp_path):
    write_json(site.integration_file("crm"), CRM)  # an operator-provided integration
    site.write_mcp_config(allowIntegrationCreation=False)
    before = site.files()

    async def main():
        async with mcp_server(site.mcp_config, cwd=tmp_path) as client:
            assert set(await client.tools()) == LOCAL_TOOLS - WRITE_INTEGRATION_TOOLS
            for tool, arguments in [("create_integration", {"name": "stripe", "baseUrl": "https://api.stripe.com"}),
                                    ("update_integration", {"name": "crm", "description": "x"}),
                                    ("delete_integration", {"name": "crm"})]:
                data, _ = await client.error(tool, arguments)
                assert f"Unknown tool {tool!r}" in data["error"]
            assert [i["name"] for i in (await client.ok("list_integrations"))["integrations"]] == ["crm"]
            assert (await client.ok("get_integration", {"name": "crm"}))["baseUrl"] == CRM["baseUrl"]
            assert site.files() == before
            await client.ok("create_route", CONTACTS)  # routes are still allowed

    run(main)
    assert site.integration_names() == ["crm"]
    assert [r["path"] for r in site.read_config()["routes"]] == ["/contacts"]


def test_route_creation_disabled_hides_and_refuses_route_writes(site, tmp_path):
    write_json(site.integration_file("crm"), CRM)
    config = site.read_config()
    config["routes"] = [{**CONTACTS, "id": "r-1"}]
    write_json(site.config, config)
    site.write_mcp_config(allowRouteCreation=False)
    before = site.files()

    async def main():
        async with mcp_server(site.mcp_config, cwd=tmp_path) as client:
            assert set(await client.tools()) == LOCAL_TOOLS - WRITE_ROUTE_TOOLS
            for tool, arguments in [("create_route", {**CONTACTS, "path": "/people"}),
                                    ("update_route", {"path": "/contacts", "method": "get", "description": "x"}),
                                    ("delete_route", {"path": "/contacts", "method": "get"})]:
                data, _ = await client.error(tool, arguments)
                assert f"Unknown tool {tool!r}" in data["error"]
            assert [r["id"] for r in (await client.ok("list_routes"))["routes"]] == ["r-1"]
            assert (await client.ok("get_route", {"path": "/contacts", "method": "GET"}))["id"] == "r-1"
            assert site.files() == before
            await client.ok("update_integration", {"name": "crm", "description": "still writable"})

    run(main)
    assert json.loads(site.integration_file("crm").read_text())["description"] == "still writable"


# -- refusing to start -----------------------------------------------------------------------------


def test_enabled_false_refuses_to_start(site, tmp_path):
    site.write_mcp_config(enabled=False)
    before = site.files()
    proc = run_command(site.mcp_config, cwd=tmp_path)
    assert_refused_at_start(proc, "enabled", str(site.mcp_config))
    assert site.files() == before


def test_a_first_run_creates_the_integrations_folder_and_says_so(site, tmp_path):
    """The seed's first step is `mcp_stdio` in a new project: no `mkdir integrations` needed first."""
    site.write_mcp_config(integrationsPath="./fresh")

    async def main():
        async with mcp_server(site.mcp_config, cwd=tmp_path) as client:
            await client.ok("create_integration", CRM)
            return client.stderr()

    stderr = run(main)
    assert f"created the integrations folder {site.root / 'fresh'}" in stderr, stderr
    assert (site.root / "fresh" / "crm.json").is_file()
    assert not list(site.root.rglob("*.lock")), "a lock file was left in the project, where users commit it"


def test_an_integrations_folder_whose_parent_is_missing_is_a_clear_error(site, tmp_path):
    site.write_mcp_config(integrationsPath="./no-such-parent/integrations")
    proc = run_command(site.mcp_config, cwd=tmp_path)
    assert_refused_at_start(proc, str(site.root / "no-such-parent" / "integrations"), "does not exist")
    assert not (site.root / "no-such-parent").exists()


def test_invalid_mcp_config_json_is_a_clear_error(site, tmp_path):
    site.mcp_config.write_text('{"enabled": true, "autoReload": tru}\n')
    proc = run_command(site.mcp_config, cwd=tmp_path)
    assert_refused_at_start(proc, str(site.mcp_config), "not valid JSON", "line 1")


def test_unknown_mcp_config_key_is_a_clear_error(site, tmp_path):
    site.write_mcp_config(allowRouteCreaton=False)  # a typo must not silently allow writes
    proc = run_command(site.mcp_config, cwd=tmp_path)
    assert_refused_at_start(proc, str(site.mcp_config), "allowRouteCreaton")


def test_wrong_type_in_mcp_config_is_a_clear_error(site, tmp_path):
    site.write_mcp_config(allowIntegrationCreation="no")
    proc = run_command(site.mcp_config, cwd=tmp_path)
    assert_refused_at_start(proc, "allowIntegrationCreation")


def test_missing_mcp_config_file_is_a_clear_error(tmp_path):
    proc = run_command(tmp_path / "nowhere" / "mcp-config.json", cwd=tmp_path)
    assert_refused_at_start(proc, str(tmp_path / "nowhere" / "mcp-config.json"), "does not exist")


def test_without_any_config_a_first_run_creates_the_default_folder(tmp_path):
    async def main():
        async with mcp_server(cwd=tmp_path) as client:
            assert set(await client.tools()) == LOCAL_TOOLS

    run(main)
    assert (tmp_path / "integrations").is_dir()


# -- where the files are -------------------------------------------------------------------------------


def test_relative_paths_resolve_against_the_config_files_folder(tmp_path):
    conf_dir, data_dir, cwd = tmp_path / "conf", tmp_path / "data", tmp_path / "cwd"
    (data_dir / "integrations").mkdir(parents=True)
    cwd.mkdir()
    (cwd / "integrations").mkdir()  # decoys: the cwd must not be used
    write_json(conf_dir / "mcp-config.json", {"integrationsPath": "../data/integrations", "configPath": "../data/config.json"})

    async def main():
        async with mcp_server("../conf/mcp-config.json", cwd=cwd) as client:  # a relative config path, against the cwd
            await client.ok("create_integration", CRM)
            await client.ok("create_route", CONTACTS)

    run(main)
    assert (data_dir / "integrations" / "crm.json").is_file()
    assert [r["path"] for r in json.loads((data_dir / "config.json").read_text())["routes"]] == ["/contacts"]
    assert sorted(p.name for p in cwd.rglob("*")) == ["integrations"]
    assert sorted(p.name for p in conf_dir.iterdir()) == ["mcp-config.json"]


def test_environment_overrides_the_config_paths(site, tmp_path):
    other = LocalSite(tmp_path / "override")
    before = site.files()
    env = {"BACKFLOW_INTEGRATIONS_PATH": str(other.integrations), "BACKFLOW_CONFIG_PATH": str(other.config)}

    async def main():
        async with mcp_server(site.mcp_config, cwd=tmp_path, env=env) as client:
            await client.ok("create_integration", CRM)
            await client.ok("create_route", CONTACTS)

    run(main)
    assert site.files() == before  # the paths of mcp-config.json were not used
    assert other.integration_names() == ["crm"]
    config = other.read_config()
    assert [r["path"] for r in config["routes"]] == ["/contacts"]
    assert config["mcpServers"] == LocalSite.MCP_SERVERS


def test_config_path_override_alone_and_a_config_json_that_does_not_exist_yet(site, tmp_path):
    fresh = tmp_path / "elsewhere" / "routes.json"  # its folder exists, the file not yet
    fresh.parent.mkdir()

    async def main():
        async with mcp_server(site.mcp_config, cwd=tmp_path, env={"BACKFLOW_CONFIG_PATH": str(fresh)}) as client:
            assert (await client.ok("list_routes"))["routes"] == []
            await client.ok("create_integration", CRM)  # integrationsPath still comes from mcp-config.json
            return await client.ok("create_route", CONTACTS)

    created = run(main)
    assert site.integration_names() == ["crm"]
    assert site.read_config()["routes"] == []
    assert assert_pretty_json(fresh) == {"routes": [created]}


def test_without_config_argument_the_cwd_folders_are_used(site):
    async def main():
        async with mcp_server(cwd=site.root) as client:  # like `cd studio && manage.py mcp_stdio`
            assert set(await client.tools()) == LOCAL_TOOLS
            await client.ok("create_integration", CRM)
            await client.ok("create_route", CONTACTS)

    run(main)
    assert site.integration_names() == ["crm"]
    config = site.read_config()
    assert [r["path"] for r in config["routes"]] == ["/contacts"]
    assert config["mcpServers"] == LocalSite.MCP_SERVERS and config["port"] == 3000


# -- autoReload ---------------------------------------------------------------------------------------


def test_auto_reload_true_sees_hand_edits_without_restart(site, tmp_path):
    site.write_mcp_config(autoReload=True)

    async def main():
        async with mcp_server(site.mcp_config, cwd=tmp_path) as client:
            assert (await client.ok("list_integrations"))["integrations"] == []
            write_json(site.integration_file("crm"), CRM)  # written by hand while the server runs
            assert [i["name"] for i in (await client.ok("list_integrations"))["integrations"]] == ["crm"]
            assert (await client.ok("get_integration", {"name": "crm"}))["endpoints"][0]["name"] == "listContacts"

            config = site.read_config()
            config["routes"].append(CONTACTS)  # a hand-written route, without an id
            write_json(site.config, config)
            routes = (await client.ok("list_routes"))["routes"]
            assert [(r["path"], r["method"]) for r in routes] == [("/contacts", "get")]
            assert (await client.ok("get_route", {"path": "/contacts", "method": "get"}))["id"] == routes[0]["id"]

            write_json(site.integration_file("crm"), {**CRM, "description": "edited by hand"})
            assert (await client.ok("get_integration", {"name": "crm"}))["description"] == "edited by hand"
            site.integration_file("crm").unlink()
            write_json(site.config, {**config, "routes": []})
            assert (await client.ok("list_integrations"))["integrations"] == []

    run(main)


def test_auto_reload_false_ignores_hand_edits_until_a_write(site, tmp_path):
    site.write_mcp_config(autoReload=False)

    async def main():
        async with mcp_server(site.mcp_config, cwd=tmp_path) as client:
            assert (await client.ok("list_integrations"))["integrations"] == []
            write_json(site.integration_file("crm"), CRM)
            assert (await client.ok("list_integrations"))["integrations"] == []
            await client.error("get_integration", {"name": "crm"})
            # a write re-reads the files first: the hand-written integration can be used at once
            await client.ok("create_route", CONTACTS)
            assert [i["name"] for i in (await client.ok("list_integrations"))["integrations"]] == ["crm"]

    run(main)
    assert [r["path"] for r in site.read_config()["routes"]] == ["/contacts"]


# -- malformed files --------------------------------------------------------------------------------------


def test_malformed_files_are_reported_and_the_rest_still_loads(site, tmp_path):
    write_json(site.integration_file("crm"), CRM)
    site.integration_file("broken").write_text('{"name": "broken", "baseUrl": ')
    write_json(site.integration_file("renamed"), {**CRM, "name": "other"})
    write_json(site.integration_file("nourl"), {"name": "nourl"})
    bad_routes = [
        {"path": "/ghost", "method": "get", "integrations": {"actions": [{"integration": "ghost", "action": "x"}]}},
        {"path": "/typed", "method": 7, "integrations": {"actions": [{"integration": "crm", "action": "listContacts"}]}},
        "not a route",
    ]
    config = site.read_config()
    config["routes"] = [bad_routes[0], {**CONTACTS, "id": "good"}, bad_routes[1], bad_routes[2]]
    write_json(site.config, config)

    async def main():
        async with mcp_server(site.mcp_config, cwd=tmp_path) as client:
            listed = await client.ok("list_integrations")
            assert [i["name"] for i in listed["integrations"]] == ["crm"]
            problems = {p["file"]: p["error"] for p in listed["problems"]}
            broken, renamed, nourl = (str(site.integration_file(n)) for n in ("broken", "renamed", "nourl"))
            assert "not valid JSON" in problems[broken] or "Expecting value" in problems[broken], problems[broken]
            assert "does not match the file name" in problems[renamed]
            assert "baseUrl" in problems[nourl]
            assert "ghost" in problems[f"{site.config} routes[0]"]
            assert "method" in problems[f"{site.config} routes[2]"]
            assert f"{site.config} routes[3]" in problems
            assert len(problems) == 6
            assert [r["id"] for r in (await client.ok("list_routes"))["routes"]] == ["good"]

            # writes keep every malformed entry as it was, where it was
            await client.ok("create_route", {**CONTACTS, "path": "/people"})
            await client.ok("update_route", {"path": "/contacts", "method": "get", "description": "changed"})
            await client.ok("delete_route", {"path": "/people", "method": "get"})
            await client.ok("create_integration", {"name": "stripe", "baseUrl": "https://api.stripe.com/v1"})
            after = await client.ok("list_integrations")
            assert [i["name"] for i in after["integrations"]] == ["crm", "stripe"]
            assert len(after["problems"]) == 6
            return client.stderr()

    stderr = run(main)
    routes = site.read_config()["routes"]
    assert routes[0] == bad_routes[0] and routes[2] == bad_routes[1] and routes[3] == bad_routes[2]
    assert routes[1]["id"] == "good" and routes[1]["description"] == "changed"
    assert len(routes) == 4
    assert site.integration_file("broken").read_text() == '{"name": "broken", "baseUrl": '
    assert "broken.json" in stderr  # also logged when loading


def test_unreadable_config_json_is_reported_and_never_overwritten(site, tmp_path):
    write_json(site.integration_file("crm"), CRM)
    broken = '{"mcpServers": [], "routes": [\n' + json.dumps(CONTACTS)  # a hand edit in progress

    async def main():
        async with mcp_server(site.mcp_config, cwd=tmp_path) as client:
            await client.ok("list_integrations")
            site.config.write_text(broken)
            data, text = await client.error("create_route", CONTACTS)
            assert "config.json" in data["errors"] and str(site.config) in text
            # while config.json cannot be read, nobody can tell which routes use an integration
            for tool, arguments in [("delete_integration", {"name": "crm"}),
                                    ("update_integration", {"name": "crm", "endpoints": []})]:
                data, text = await client.error(tool, arguments)
                assert "config.json" in data["errors"] and str(site.config) in text
            await client.ok("create_integration", {"name": "stripe", "baseUrl": "https://api.stripe.com/v1"})  # its own file
            listed = await client.ok("list_integrations")
            assert any(p["file"] == str(site.config) and "not valid JSON" in p["error"] for p in listed["problems"]), listed
            assert (await client.ok("list_routes"))["routes"] == []

    run(main)
    assert site.config.read_text() == broken
    assert site.integration_names() == ["crm", "stripe"]
    assert json.loads(site.integration_file("crm").read_text()) == CRM


# -- start-up ------------------------------------------------------------------------------------

def test_start_up_loads_neither_twisted_nor_the_openapi_validator_nor_aiohttp_nor_the_oauth_views():
    """An assistant spawns mcp_stdio on demand and waits for it: daphne's server (Twisted, only
    `runserver` needs it), the OpenAPI validator (only import_openapi needs it), aiohttp (only a
    call that sends needs it: backflow.outbound), the OAuth server's views (tenants.oauth, with
    DOT's views and oauthlib: only the web process serves them), the REST views' schema helpers
    (drf_spectacular, and with them DRF's fields, requests and django.contrib.postgres) and, without
    REDIS_URL, redis-py stay unloaded until used, each about 0.05-0.2 s of every start."""
    code = ("import os, sys, django; os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'backflow.settings'); django.setup(); "
            "import mcp_app.management.commands.mcp_stdio, mcp_app.stdio; from mcp_app.server import build_server; build_server(); "
            "print(sorted(m for m in ('twisted', 'daphne.server', 'openapi_spec_validator', 'dotenv', 'aiohttp', 'tenants.oauth', "
            "'oauth2_provider.views', 'drf_spectacular.utils', 'rest_framework.fields', 'redis') if m in sys.modules))")
    env = {k: v for k, v in child_env().items() if k != "REDIS_URL"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
