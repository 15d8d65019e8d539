"""`backflow-mcp` (and `python -m mcp_app.bridge`): a stdio MCP server forwarding to a remote Backflow,
run as a real child process driven by the SDK's stdio client against a real daphne."""

import subprocess
import sys
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from django.conf import settings
from mcp import ClientSession, StdioServerParameters, stdio_client

from integrations_app.models import Integration
from mcp_app.tests.test_remote_support import (
    all_tools,
    INTEGRATION_TOOLS,
    ROUTE_TOOLS,
    Session,
    integration,
    integration_names,
    multi_tenant_jwt,
    run,
    sdk_session,
)
from tests.live import free_port

ROOT = Path(settings.BASE_DIR)
PYTHON = sys.executable
CONSOLE_SCRIPT = str(Path(PYTHON).parent / "backflow-mcp")
MODULE = [PYTHON, "-m", "mcp_app.bridge"]


def bare_env(**extra):
    """What a desktop assistant gives the bridge: no Django settings, no database, no secrets."""
    return {"PATH": "/usr/bin:/bin", "HOME": tempfile.gettempdir(), **extra}


@asynccontextmanager
async def bridge(command, *args, env=None):
    params = StdioServerParameters(command=command[0], args=[*command[1:], *args], env=bare_env(**(env or {})), cwd=tempfile.gettempdir())
    with tempfile.TemporaryFile("w+") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield Session(session)


def refused(command, *args, env=None):
    return subprocess.run([*command, *args], env=bare_env(**(env or {})), cwd=tempfile.gettempdir(),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)


def test_bridge_offers_only_the_allowed_tool_families_and_forwards_calls(acme, live_daphne):
    server = live_daphne()
    key_args = ("--api-key", acme.key, "--endpoint", server.url)
    read_only = acme.key_with("integrations:read")

    async def main():
        # No flags: neither integration nor route tools are listed or callable.
        async with bridge([CONSOLE_SCRIPT], *key_args) as s:
            assert await s.tool_names() == all_tools() - INTEGRATION_TOOLS - ROUTE_TOOLS
            data = await s.error("create_integration", integration("blocked"))
            assert "--allow-integrations" in data["error"], data
            data = await s.error("list_routes")
            assert "--allow-routes" in data["error"], data

        # --allow-integrations, with the key and endpoint from the environment, via `python -m`.
        async with bridge(MODULE, "--allow-integrations", env={"BACKFLOW_API_KEY": acme.key, "BACKFLOW_ENDPOINT": server.url}) as s:
            assert await s.tool_names() == all_tools() - ROUTE_TOOLS
            created = await s.ok("create_integration", integration("via-bridge"))
            assert created["name"] == "via-bridge"
            assert integration_names(await s.ok("list_integrations")) == ["via-bridge"]
            # Errors of the remote come back as they are.
            data = await s.error("create_integration", integration("via-bridge"))
            assert "exists" in data["error"], data
            await s.error("list_routes")

        # Both flags: every tool the key allows.
        async with bridge([CONSOLE_SCRIPT], *key_args, "--allow-integrations", "--allow-routes") as s:
            assert await s.tool_names() == all_tools()
            route = await s.ok("create_route", {"path": "/ping", "method": "get", "integrations": {
                "actions": [{"integration": "via-bridge", "action": "ping"}]}})
            assert route["path"] == "/ping"
            assert [r["path"] for r in (await s.ok("list_routes"))["routes"]] == ["/ping"]

        # The key's scopes still decide what the remote allows behind the flags.
        async with bridge([CONSOLE_SCRIPT], "--api-key", read_only, "--endpoint", server.url,
                          "--allow-integrations", "--allow-routes") as s:
            assert await s.tool_names() == {"get_integration", "list_integrations", "list_secrets"}
            await s.error("delete_integration", {"name": "via-bridge"})

    run(main, timeout=60)
    assert Integration.objects.for_tenant(acme.tenant).filter(name="via-bridge").exists()


def test_bridge_scope_picks_the_tenant_of_a_multi_tenant_jwt(acme, globex, live_daphne):
    server = live_daphne()
    token = multi_tenant_jwt("bridged", "pw-bridged-bridged", acme, globex)

    async def main():
        async with sdk_session(server.url, "http", globex.key) as s:
            await s.ok("create_integration", integration("globex-only"))
        for scope, expected in (("globex", ["globex-only"]), ("acme", [])):
            async with bridge(MODULE, "--endpoint", server.url, "--scope", scope, "--allow-integrations",
                              env={"BACKFLOW_API_KEY": token}) as s:
                assert integration_names(await s.ok("list_integrations")) == expected, scope

    run(main, timeout=60)
    # Without --scope the token is ambiguous, and it does not cover other tenants: the bridge says so and exits.
    proc = refused(MODULE, "--api-key", token, "--endpoint", server.url)
    assert proc.returncode != 0
    one_clear_line(proc, "several tenants")
    proc = refused(MODULE, "--api-key", token, "--endpoint", server.url, "--scope", "initech")
    assert proc.returncode != 0
    one_clear_line(proc, "initech")


def one_clear_line(proc, *words):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert all(word in lines[0] for word in words), lines[0]
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""  # nothing but protocol ever goes to stdout


def test_bridge_refuses_to_start_with_a_wrong_key_or_an_unreachable_endpoint(acme, live_daphne):
    server = live_daphne()
    proc = refused([CONSOLE_SCRIPT], "--api-key", "bf_wrongkey_" + "x" * 43, "--endpoint", server.url)
    assert proc.returncode != 0, proc
    one_clear_line(proc, "refused", server.url)

    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    proc = refused(MODULE, env={"BACKFLOW_API_KEY": acme.key, "BACKFLOW_ENDPOINT": closed})
    assert proc.returncode != 0, proc
    one_clear_line(proc, "cannot reach", closed)

    proc = refused([CONSOLE_SCRIPT], "--endpoint", server.url)  # no key at all
    assert proc.returncode != 0 and "BACKFLOW_API_KEY" in proc.stderr, proc.stderr


def test_importing_the_bridge_loads_no_django():
    code = ("import sys, mcp_app.bridge; "
            "loaded = sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'backflow', 'tenants', 'integrations_app')); "
            "print(loaded); sys.exit(1 if loaded else 0)")
    proc = subprocess.run([PYTHON, "-c", code], env=bare_env(), cwd=tempfile.gettempdir(), capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert proc.stdout.strip() == "[]"


@pytest.mark.slow
def test_the_bridge_installs_on_its_own_and_serves_a_live_server(acme, live_daphne, tmp_path):
    """`pip install ./bridge` into a new virtualenv: the MCP SDK and nothing of the server (no
    Django), no build/ or *.egg-info left in the checkout, and its `backflow-mcp` serves the tools."""
    server = live_daphne()
    venv = tmp_path / "venv"
    subprocess.run([PYTHON, "-m", "venv", str(venv)], check=True, timeout=120)
    before = set((ROOT / "bridge").iterdir())
    install = subprocess.run([str(venv / "bin" / "pip"), "install", "--quiet", "--disable-pip-version-check", str(ROOT / "bridge")],
                             capture_output=True, text=True, timeout=600)
    assert install.returncode == 0, install.stderr[-3000:]
    assert set((ROOT / "bridge").iterdir()) == before, "installing left files in the checkout"
    listed = subprocess.run([str(venv / "bin" / "pip"), "list", "--format=freeze"], capture_output=True, text=True, timeout=60).stdout
    names = {line.split("==")[0].lower() for line in listed.splitlines()}
    assert "backflow-mcp" in names and "mcp" in names, names
    assert not {"django", "djangorestframework", "channels", "daphne", "backflow"} & names, names

    async def main():
        async with bridge([str(venv / "bin" / "backflow-mcp")], "--api-key", acme.key, "--endpoint", server.url,
                          "--allow-integrations") as s:
            assert await s.tool_names() == all_tools() - ROUTE_TOOLS
            assert integration_names(await s.ok("list_integrations")) == []

    run(main, timeout=60)
