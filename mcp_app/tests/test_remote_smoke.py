import anyio
import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mcp_app.tests.test_remote_support import all_tools, tools_for


def test_streamable_http_lists_tools_of_the_key(acme, live_daphne):
    server = live_daphne()
    read_only = acme.key_with("integrations:read")

    async def tool_names(key):
        async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {key}"}) as http:
            async with streamable_http_client(f"{server.url}/mcp", http_client=http) as (r, w), ClientSession(r, w) as s:
                await s.initialize()
                return sorted(t.name for t in (await s.list_tools()).tools)

    assert set(anyio.run(tool_names, read_only)) == tools_for("integrations:read")
    assert set(anyio.run(tool_names, acme.key)) == all_tools()
