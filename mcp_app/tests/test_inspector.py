"""The official MCP Inspector CLI (Node 22, tests/peers) against the real `mcp_stdio` command."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from mcp_app.tests.helpers import LOCAL_TOOLS, MANAGE, PYTHON, assert_pretty_json

PEERS = Path(settings.BASE_DIR) / "tests" / "peers" / "node_modules"
NODE = PEERS / "node" / "bin" / "node"
INSPECTOR = PEERS / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"

pytestmark = pytest.mark.skipif(
    not (NODE.exists() and INSPECTOR.exists()),
    reason="tests/peers/node_modules is missing: run `make peers` (make test installs it)",
)


def inspector(tmp_path, site, *args):
    """Run `mcp-inspector --cli <our command> …`; the inspector gives its stdio server a bare environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BACKFLOW_") and k != "DEBUG"}
    env.update(MCP_STORAGE_DIR=str(tmp_path / "inspector"), MCP_INSPECTOR_SECRET_STORE="memory",
               MCP_AUTO_OPEN_ENABLED="false", NO_UPDATE_NOTIFIER="1")
    server_env = []
    if not (Path(settings.BASE_DIR) / "var" / "local.env").exists():  # otherwise the command reads its keys there
        server_env = ["-e", f"SECRET_KEY={settings.SECRET_KEY}", "-e", f"BACKFLOW_SECRETS_KEY={settings.BACKFLOW_SECRETS_KEY}"]
    proc = subprocess.run(
        [str(NODE), str(INSPECTOR), "--cli", *server_env, PYTHON, MANAGE, "mcp_stdio", str(site.mcp_config),
         *args, "--format", "json", "-q"],
        check=False, cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )
    return proc


def output(proc):
    # --format json prints one object first; stderr may add a summary line of its own
    return json.JSONDecoder().raw_decode(proc.stdout.strip())[0]


def test_inspector_lists_and_calls_tools(site, tmp_path):
    proc = inspector(tmp_path, site, "--method", "tools/list")
    assert proc.returncode == 0, proc.stderr
    tools = {t["name"]: t for t in output(proc)["result"]["tools"]}
    assert set(tools) == LOCAL_TOOLS
    assert all(t["inputSchema"]["type"] == "object" and t["title"] and t["annotations"] for t in tools.values())
    assert tools["list_integrations"]["annotations"]["readOnlyHint"] is True
    assert tools["delete_route"]["annotations"]["destructiveHint"] is True

    proc = inspector(tmp_path, site, "--method", "tools/call", "--tool-name", "list_integrations")
    assert proc.returncode == 0, proc.stderr
    result = output(proc)["result"]
    assert result["isError"] is False and result["structuredContent"] == {"integrations": []}

    auth = json.dumps({"type": "bearer", "secret": "{{env.STRIPE_SECRET_KEY}}"})
    proc = inspector(tmp_path, site, "--method", "tools/call", "--tool-name", "create_integration",
                     "--tool-arg", "name=stripe", "baseUrl=https://api.stripe.com/v1", f"auth={auth}")
    assert proc.returncode == 0, proc.stderr
    result = output(proc)["result"]
    assert result["isError"] is False
    assert result["structuredContent"]["auth"] == {"type": "bearer", "secret": "{{env.STRIPE_SECRET_KEY}}"}
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    assert assert_pretty_json(site.integration_file("stripe")) == result["structuredContent"]

    # a refused call: the inspector sees isError and exits 5
    proc = inspector(tmp_path, site, "--method", "tools/call", "--tool-name", "create_integration",
                     "--tool-arg", "name=stripe", "baseUrl=https://api.stripe.com/v1")
    assert proc.returncode == 5, (proc.returncode, proc.stdout, proc.stderr)
    result = output(proc)["result"]
    assert result["isError"] is True and "already exists" in json.loads(result["content"][0]["text"])["error"]
