"""Drive the real `manage.py mcp_stdio` command over stdio with the MCP SDK's client.

Every server is a real child process; nothing is mocked. A test writes `async def main()` and
hands it to `run(main)`, which runs it with anyio under a time limit.
"""

import json
import os
import subprocess
import sys
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path
from typing import ClassVar

import anyio
from django.conf import settings
from mcp import ClientSession, StdioServerParameters, stdio_client

MANAGE = str(Path(settings.BASE_DIR) / "manage.py")
PYTHON = sys.executable  # the project's .venv interpreter that runs pytest

# The tools each scope opens, written out here: tests state what they expect, they do not ask
# the registry (a tool added or moved to another scope must change this table).
TOOLS_BY_SCOPE = {
    "integrations:read": {"list_integrations", "get_integration", "list_secrets"},
    "integrations:write": {"create_integration", "update_integration", "delete_integration", "call_endpoint", "import_openapi"},
    "routes:read": {"list_routes", "get_route", "list_route_invocations"},
    "routes:write": {"create_route", "update_route", "delete_route", "test_route"},
    "workflows:read": {"list_workflows", "get_workflow", "list_runs", "get_run"},
    "workflows:write": {"create_workflow", "update_workflow", "delete_workflow"},
    "workflows:run": {"run_workflow"},
    "apps:read": {"list_apps", "get_app"},
    "apps:write": {"create_app", "update_app", "delete_app"},
    "entities:read": {"list_collections", "list_entities", "get_entity"},
    "entities:write": {"create_entity", "update_entity", "delete_entity"},
    "mcp:use": set(),
}
INTEGRATION_TOOLS = TOOLS_BY_SCOPE["integrations:read"] | TOOLS_BY_SCOPE["integrations:write"]
ROUTE_TOOLS = TOOLS_BY_SCOPE["routes:read"] | TOOLS_BY_SCOPE["routes:write"]
# Local mode (files, no database): the integration and route tools that act on documents.
LOCAL_TOOLS = {"create_integration", "list_integrations", "get_integration", "update_integration", "delete_integration",
               "create_route", "list_routes", "get_route", "update_route", "delete_route", "test_route", "call_endpoint",
               "import_openapi"}


def tools_for(*scopes):
    """The tool names a credential with these scopes may list and call."""
    return set().union(*(TOOLS_BY_SCOPE[scope] for scope in scopes))

# Variables of the test runner's own environment that would change what the child serves.
_NOT_INHERITED = ("BACKFLOW_INTEGRATIONS_PATH", "BACKFLOW_CONFIG_PATH", "DEBUG", "LOG_LEVEL")


def child_env(extra=None):
    """The runner's environment with this checkout's keys, minus local-mode overrides, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if k not in _NOT_INHERITED}
    env["SECRET_KEY"] = settings.SECRET_KEY
    env["BACKFLOW_SECRETS_KEY"] = settings.BACKFLOW_SECRETS_KEY
    env.update(extra or {})
    return env


def command_args(*args):
    return [MANAGE, "mcp_stdio", *map(str, args)]


def run(main, timeout=60):
    """Run `async def main()` in a fresh event loop, failing after `timeout` seconds."""

    async def limited():
        with anyio.fail_after(timeout):
            return await main()

    return anyio.run(limited)


def run_command(*args, cwd=None, env=None, timeout=30):
    """Run `manage.py mcp_stdio ARGS` with stdin closed (for servers that must refuse to start)."""
    return subprocess.run(
        [PYTHON, *command_args(*args)], check=False, cwd=cwd, env=child_env(env), stdin=subprocess.DEVNULL,
        capture_output=True, text=True, timeout=timeout,
    )


def result_json(result):
    """The JSON of a tool result, after checking structuredContent is exactly the text's JSON (for a
    success; an error is text only, since clients validate structuredContent against the outputSchema)."""
    assert result.content and result.content[0].type == "text", result
    parsed = json.loads(result.content[0].text)
    expected = None if result.is_error else parsed
    assert result.structured_content == expected, (result.structured_content, result.content[0].text)
    return parsed


class Client:
    """A ClientSession with the checks every tool call gets."""

    def __init__(self, session, errlog):
        self.session = session
        self._errlog = errlog

    async def tools(self):
        return {t.name: t for t in (await self.session.list_tools()).tools}

    async def call(self, name, arguments=None):
        result = await self.session.call_tool(name, arguments if arguments is not None else {})
        return result, result_json(result)

    async def ok(self, name, arguments=None):
        result, data = await self.call(name, arguments)
        assert not result.is_error, f"{name}({arguments}) failed: {result.content[0].text}"
        return data

    async def error(self, name, arguments=None):
        """The error body of a call that must fail, and its text (what the assistant reads)."""
        result, data = await self.call(name, arguments)
        assert result.is_error, f"{name}({arguments}) should have failed but returned {result.content[0].text}"
        assert isinstance(data.get("error"), str) and data["error"], data
        return data, result.content[0].text

    def stderr(self):
        self._errlog.flush()
        with open(self._errlog.name, encoding="utf-8", errors="replace") as handle:
            return handle.read()


@asynccontextmanager
async def mcp_server(*args, cwd=None, env=None):
    """Spawn `manage.py mcp_stdio ARGS`, initialize a session and yield a Client."""
    params = StdioServerParameters(command=PYTHON, args=command_args(*args), env=child_env(env), cwd=str(cwd) if cwd else None)
    with tempfile.NamedTemporaryFile("w+", prefix="mcp-stderr-", suffix=".log", encoding="utf-8") as errlog:
        async with stdio_client(params, errlog=errlog) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            yield Client(session, errlog)


def assert_pretty_json(path):
    """The file parses and is written the way people read it (2-space indent, final newline)."""
    text = Path(path).read_text(encoding="utf-8")
    data = json.loads(text)
    assert text == json.dumps(data, indent=2, ensure_ascii=False) + "\n", f"{path} is not pretty-printed JSON:\n{text}"
    return data


class LocalSite:
    """A local-mode folder as in the seed: mcp-config.json, integrations/ and config.json."""

    MCP_SERVERS: ClassVar[list] = [
        {"name": "filesystem", "command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/srv/files"]},
        {"name": "github", "command": "npx", "args": ["-y", "@modelcontextprotocol/server-github"],
         "env": {"GITHUB_TOKEN": "{{env.GITHUB_TOKEN}}"}},
    ]

    def __init__(self, root, **mcp_config):
        self.root = Path(root)
        self.integrations = self.root / "integrations"
        self.config = self.root / "config.json"
        self.mcp_config = self.root / "mcp-config.json"
        self.integrations.mkdir(parents=True, exist_ok=True)
        # A hand-written config.json: compact, with keys Backflow does not own.
        self.config.write_text(json.dumps({"port": 3000, "mcpServers": self.MCP_SERVERS, "routes": []}) + "\n", encoding="utf-8")
        self.write_mcp_config(**mcp_config)

    def write_mcp_config(self, **overrides):
        document = {"enabled": True, "allowIntegrationCreation": True, "allowRouteCreation": True,
                    "integrationsPath": "./integrations", "configPath": "./config.json", "autoReload": False}
        document.update(overrides)
        self.mcp_config.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")

    def read_config(self):
        return json.loads(self.config.read_text(encoding="utf-8"))

    def integration_file(self, name):
        return self.integrations / f"{name}.json"

    def integration_names(self):
        return sorted(p.stem for p in self.integrations.glob("*.json"))

    def files(self):
        """{relative path: bytes} of every file in the project's folder (a lock file too: there must be none)."""
        return {str(p.relative_to(self.root)): p.read_bytes() for p in sorted(self.root.rglob("*")) if p.is_file()}

    def assert_no_temp_files(self):
        leftovers = [p.name for p in self.root.rglob("*.tmp")]
        assert not leftovers, f"temporary files left behind: {leftovers}"

