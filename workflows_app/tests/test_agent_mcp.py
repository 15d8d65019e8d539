"""The seed's MCP client endpoints, /agent/mcp/*, against real servers (server-everything and
server-filesystem over stdio): the answer shapes exactly as the seed documents them, the mcp:use
scope, unknown and other tenants' servers."""

from rest_framework.test import APIClient

from workflows_app.tests.helpers import add_stdio_server, everything_stdio, filesystem_stdio

EVERYTHING_TOOLS = 13  # server-everything 2026.8.31 (tests/peers), stdio mode


def test_servers_tools_and_execute_as_in_the_seed(acme, tmp_path):
    (tmp_path / "config.json").write_text('{"debug": false}')
    add_stdio_server(acme, everything_stdio())
    add_stdio_server(acme, filesystem_stdio(tmp_path))
    api = acme.client()

    servers = api.get("/agent/mcp/servers")
    assert servers.status_code == 200, servers.content
    assert servers.json() == {"servers": [
        {"name": "everything", "connected": True, "tools": EVERYTHING_TOOLS},
        {"name": "filesystem", "connected": True, "tools": 14},
    ]}

    tools = api.get("/agent/mcp/servers/everything/tools")
    assert tools.status_code == 200
    listed = tools.json()["tools"]
    assert list(tools.json()) == ["tools"] and len(listed) == EVERYTHING_TOOLS
    assert all(list(t) == ["name", "description", "inputSchema"] for t in listed)
    echo = next(t for t in listed if t["name"] == "echo")
    assert echo["description"] == "Echoes back the input string"
    assert echo["inputSchema"]["type"] == "object" and echo["inputSchema"]["required"] == ["message"]

    executed = api.post("/agent/mcp/execute", {"server": "everything", "tool": "echo", "arguments": {"message": "hi"}}, format="json")
    assert executed.status_code == 200, executed.content
    assert executed.json()["content"] == [{"type": "text", "text": "Echo: hi"}]
    assert executed.json().get("isError") in (None, False)

    # The seed's own example: read a file through the filesystem server.
    read = api.post("/agent/mcp/execute", {"server": "filesystem", "tool": "read_file",
                                           "arguments": {"path": str(tmp_path / "config.json")}}, format="json")
    assert read.status_code == 200
    assert read.json()["content"][0]["text"] == '{"debug": false}'
    assert read.json()["structuredContent"] == {"content": '{"debug": false}'}

    # A tool's own failure is its result (isError), not an HTTP error.
    denied = api.post("/agent/mcp/execute", {"server": "filesystem", "tool": "read_file", "arguments": {"path": "/etc/passwd"}},
                      format="json")
    assert denied.status_code == 200 and denied.json()["isError"] is True
    assert "Access denied" in denied.json()["content"][0]["text"]


def test_bad_requests_and_broken_servers(acme):
    add_stdio_server(acme, everything_stdio())
    add_stdio_server(acme, {"name": "broken", "command": "mcp-server-not-installed"})
    api = acme.client()

    servers = api.get("/agent/mcp/servers").json()["servers"]
    broken = next(s for s in servers if s["name"] == "broken")
    assert broken["connected"] is False and broken["tools"] == 0
    assert "mcp-server-not-installed" in broken["error"]
    assert next(s for s in servers if s["name"] == "everything") == {"name": "everything", "connected": True, "tools": EVERYTHING_TOOLS}

    failed = api.get("/agent/mcp/servers/broken/tools")
    assert failed.status_code == 502 and "broken" in failed.json()["detail"]
    failed = api.post("/agent/mcp/execute", {"server": "broken", "tool": "x"}, format="json")
    assert failed.status_code == 502 and "broken" in failed.json()["detail"]

    for body, field in (({"tool": "echo"}, "server"), ({"server": "everything"}, "tool"), ({"server": "everything", "tool": ""}, "tool"),
                        ({"server": "everything", "tool": "echo", "arguments": ["hi"]}, "arguments")):
        response = api.post("/agent/mcp/execute", body, format="json")
        assert response.status_code == 400 and field in response.json()["errors"], (body, response.content)
    assert api.post("/agent/mcp/execute", [1], format="json").status_code == 400

    # Unknown servers are 404; an unknown tool is the server's own answer (isError, its message).
    assert api.get("/agent/mcp/servers/nowhere/tools").status_code == 404
    assert api.post("/agent/mcp/execute", {"server": "nowhere", "tool": "echo"}, format="json").status_code == 404
    unknown = api.post("/agent/mcp/execute", {"server": "everything", "tool": "no-such-tool"}, format="json")
    assert unknown.status_code == 200 and unknown.json()["isError"] is True, unknown.content
    assert "no-such-tool" in unknown.json()["content"][0]["text"]


def test_mcp_use_scope_is_required(acme):
    add_stdio_server(acme, everything_stdio())
    calls = (("get", "/agent/mcp/servers", None), ("get", "/agent/mcp/servers/everything/tools", None),
             ("post", "/agent/mcp/execute", {"server": "everything", "tool": "echo", "arguments": {"message": "x"}}))
    without = acme.client(acme.key_with("workflows:read", "workflows:write", "workflows:run"))
    for method, url, body in calls:
        response = getattr(without, method)(url, body, format="json")
        assert response.status_code == 403, (url, response.content)
        assert "mcp:use" in response.json()["detail"]
        assert getattr(APIClient(), method)(url, body, format="json").status_code == 401
    only = acme.client(acme.key_with("mcp:use"))
    for method, url, body in calls:
        assert getattr(only, method)(url, body, format="json").status_code == 200, url


def test_another_tenants_servers_are_not_found(acme, globex):
    add_stdio_server(acme, everything_stdio())
    other = globex.client()
    assert other.get("/agent/mcp/servers").json() == {"servers": []}
    assert other.get("/agent/mcp/servers/everything/tools").status_code == 404
    executed = other.post("/agent/mcp/execute", {"server": "everything", "tool": "echo", "arguments": {"message": "x"}}, format="json")
    assert executed.status_code == 404 and "everything" in executed.json()["detail"]
