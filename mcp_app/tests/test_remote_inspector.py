"""The official MCP Inspector CLI (Node 22, tests/peers) against daphne over SSE and Streamable HTTP,
with the API key as a header."""

import json
import os
import subprocess
from pathlib import Path

import pytest
from django.conf import settings

from integrations_app.models import Integration
from mcp_app.tests.test_remote_support import all_tools, integration

PEERS = Path(settings.BASE_DIR) / "tests" / "peers" / "node_modules"
NODE = PEERS / "node" / "bin" / "node"
INSPECTOR = PEERS / "@modelcontextprotocol" / "inspector" / "clients" / "launcher" / "build" / "index.js"
URLS = {"sse": "/mcp/sse", "http": "/mcp"}

pytestmark = pytest.mark.skipif(
    not (NODE.exists() and INSPECTOR.exists()),
    reason="tests/peers/node_modules is missing: run `make peers` (make test installs it)",
)


def inspector(tmp_path, server, transport, key, *args):
    env = {**os.environ, "MCP_STORAGE_DIR": str(tmp_path / "inspector"), "MCP_INSPECTOR_SECRET_STORE": "memory",
           "MCP_AUTO_OPEN_ENABLED": "false", "NO_UPDATE_NOTIFIER": "1"}
    headers = ["--header", f"Authorization: Bearer {key}"] if key else []
    return subprocess.run(
        [str(NODE), str(INSPECTOR), "--cli", "--transport", transport, "--server-url", server.url + URLS[transport],
         *headers, "--stored-auth-only", "--connect-timeout", "10000", *args, "--format", "json", "-q"],
        cwd=tmp_path, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )


def output(proc):
    return json.JSONDecoder().raw_decode(proc.stdout.strip())[0]


def test_inspector_lists_and_calls_tools_over_sse_and_streamable_http(acme, live_daphne, tmp_path):
    server = live_daphne()
    read_only = acme.key_with("integrations:read")
    for transport in URLS:
        check_transport(tmp_path, server, acme, read_only, transport)


def check_transport(tmp_path, server, acme, read_only, transport):
    proc = inspector(tmp_path, server, transport, acme.key, "--method", "tools/list")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    tools = {t["name"]: t for t in output(proc)["result"]["tools"]}
    assert set(tools) == all_tools()
    assert tools["get_integration"]["annotations"]["readOnlyHint"] is True
    assert tools["get_integration"]["inputSchema"]["required"] == ["name"]

    doc = integration(f"inspected-{transport}")
    proc = inspector(tmp_path, server, transport, acme.key, "--method", "tools/call", "--tool-name", "create_integration",
                     "--tool-args-json", json.dumps(doc))
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    result = output(proc)["result"]
    assert result["isError"] is False and result["structuredContent"]["name"] == doc["name"]
    assert json.loads(result["content"][0]["text"]) == result["structuredContent"]
    assert Integration.objects.for_tenant(acme.tenant).filter(name=doc["name"]).exists()

    proc = inspector(tmp_path, server, transport, acme.key, "--method", "tools/call", "--tool-name", "list_integrations")
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    assert doc["name"] in [i["name"] for i in output(proc)["result"]["structuredContent"]["integrations"]]

    # A key without the write scope: the tool is not even listed, so the inspector refuses to call it.
    proc = inspector(tmp_path, server, transport, read_only, "--method", "tools/call", "--tool-name", "delete_integration",
                     "--tool-arg", f"name={doc['name']}")
    assert proc.returncode != 0 and "not found" in proc.stderr, (proc.returncode, proc.stdout, proc.stderr)
    assert Integration.objects.for_tenant(acme.tenant).filter(name=doc["name"]).exists()
    # A call the server refuses comes back as isError (exit 5) with the reason.
    proc = inspector(tmp_path, server, transport, read_only, "--method", "tools/call", "--tool-name", "get_integration",
                     "--tool-arg", "name=nothing-here")
    assert proc.returncode == 5, (proc.returncode, proc.stdout, proc.stderr)
    result = output(proc)["result"]
    assert result["isError"] is True and "nothing-here" in json.loads(result["content"][0]["text"])["error"], result
    assert "structuredContent" not in result  # an error is text: clients validate structuredContent against outputSchema

    # No key: the inspector cannot connect (and never starts an interactive sign-in).
    proc = inspector(tmp_path, server, transport, None, "--method", "tools/list")
    assert proc.returncode != 0, (proc.stdout, proc.stderr)
