"""The stdio channel itself: stdout carries only JSON-RPC, and two servers can share one folder."""

import json
import queue
import subprocess
import threading
import time

import anyio

from mcp_app.tests.helpers import LOCAL_TOOLS, PYTHON, child_env, command_args, mcp_server, run

CRM = {"name": "crm", "baseUrl": "https://crm.example.com/api", "auth": {"type": "bearer", "secret": "{{env.CRM_TOKEN}}"},
       "endpoints": [{"name": "listContacts", "method": "get", "path": "/contacts"}]}


class RawServer:
    """`mcp_stdio` spoken to line by line, keeping every byte it writes to stdout."""

    def __init__(self, *args, cwd, env, stderr):
        self.process = subprocess.Popen(
            [PYTHON, *command_args(*args)], cwd=cwd, env=child_env(env),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr,
        )
        self.lines = []  # every raw stdout line
        self._messages = queue.Queue()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.append(line)
            try:
                self._messages.put(json.loads(line))
            except ValueError:
                self._messages.put(None)

    def send(self, message):
        self.process.stdin.write((json.dumps(message) + "\n").encode())
        self.process.stdin.flush()

    def send_raw(self, data):
        self.process.stdin.write(data)
        self.process.stdin.flush()

    def request(self, request_id, method, params=None):
        self.send({"jsonrpc": "2.0", "id": request_id, "method": method, **({"params": params} if params is not None else {})})
        deadline = time.monotonic() + 30
        while True:
            message = self._messages.get(timeout=max(0.1, deadline - time.monotonic()))
            if isinstance(message, dict) and message.get("id") == request_id:
                return message

    def close(self, timeout=15):
        self.process.stdin.close()
        code = self.process.wait(timeout=timeout)
        self._reader.join(timeout=5)
        self.process.stdout.close()
        return code


def test_stdout_is_protocol_only_and_debug_logs_go_to_stderr(site, tmp_path):
    stderr_path = tmp_path / "stderr.log"
    with open(stderr_path, "wb") as stderr:
        server = RawServer(site.mcp_config, cwd=tmp_path, env={"DEBUG": "mcp*"}, stderr=stderr)
        try:
            init = server.request(1, "initialize", {
                "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "raw-test", "version": "0"}})
            assert init["result"]["serverInfo"]["name"] == "backflow"
            server.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
            tools = server.request(2, "tools/list", {})
            assert {t["name"] for t in tools["result"]["tools"]} == LOCAL_TOOLS
            created = server.request(3, "tools/call", {"name": "create_integration", "arguments": CRM})
            assert created["result"]["isError"] is False
            refused = server.request(4, "tools/call", {"name": "create_integration", "arguments": {"name": "crm"}})
            assert refused["result"]["isError"] is True
            got = server.request(5, "tools/call", {"name": "get_integration", "arguments": {"name": "crm"}})
            assert got["result"]["structuredContent"]["baseUrl"] == CRM["baseUrl"]
            server.send_raw(b"this is not json\n")  # garbage from the client must not put garbage on stdout
            assert server.request(6, "ping")["result"] == {}
            unknown = server.request(7, "no/such/method", {})
            assert "error" in unknown
        finally:
            code = server.close()
    assert code == 0  # stdin closed: a clean exit

    assert server.lines, "the server wrote nothing to stdout"
    for line in server.lines:
        assert line.endswith(b"\n")
        message = json.loads(line)  # every stdout line is one JSON-RPC message
        assert message.get("jsonrpc") == "2.0", line
        assert "id" in message or "method" in message, line
    logs = stderr_path.read_text()
    assert "DEBUG" in logs and "tools/call create_integration" in logs, logs
    assert f"Serving {len(LOCAL_TOOLS)} MCP tools" in logs
    assert "integration.create crm" in logs


def test_two_servers_on_one_folder_lose_no_route(site, tmp_path):
    per_server = 15

    def route(owner, n):
        return {"path": f"/{owner}/contacts-{n}", "method": "get", "description": f"{owner} #{n}",
                "integrations": {"actions": [{"integration": "crm", "action": "listContacts"}]}}

    async def main():
        async with mcp_server(site.mcp_config, cwd=tmp_path) as a, mcp_server(site.mcp_config, cwd=tmp_path) as b:
            await a.ok("create_integration", CRM)  # b has not seen it; its writes re-read the files

            async def create_all(client, owner):
                async with anyio.create_task_group() as tg:
                    for n in range(per_server):
                        tg.start_soon(client.ok, "create_route", route(owner, n))

            async with anyio.create_task_group() as tg:  # both servers write at the same time
                tg.start_soon(create_all, a, "a")
                tg.start_soon(create_all, b, "b")

            listings = []
            for client, owner in ((a, "a"), (b, "b")):
                await client.ok("update_route", {"path": f"/{owner}/contacts-0", "method": "get", "description": "touched"})
                listings.append({r["path"] for r in (await client.ok("list_routes"))["routes"]})
            return listings

    listings = run(main, timeout=90)
    expected = {f"/{owner}/contacts-{n}" for owner in "ab" for n in range(per_server)}
    config = site.read_config()
    assert len(config["routes"]) == 2 * per_server
    assert {r["path"] for r in config["routes"]} == expected
    assert len({r["id"] for r in config["routes"]}) == 2 * per_server
    assert config["mcpServers"] == site.MCP_SERVERS and config["port"] == 3000
    assert listings == [expected, expected]
    site.assert_no_temp_files()
