"""`backflow-mcp`: a stdio MCP server that forwards to a remote Backflow.

For assistants that only speak stdio (Claude Desktop): it connects to the remote instance with
the SDK client (Streamable HTTP at /mcp, falling back to SSE at /mcp/sse), lists the tools the
API key allows and forwards every call. Integration and route tools are offered only with
--allow-integrations / --allow-routes. It is its own distribution (`pip install ./bridge`),
depending on the MCP SDK alone: nothing of the server, no Django.
"""

import argparse
import json
import logging
import os
import sys
from contextlib import AsyncExitStack

import anyio
import httpx2
import mcp_types as types
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.server import Server
from mcp.server.stdio import stdio_server

logger = logging.getLogger("backflow.bridge")

DEFAULT_ENDPOINT = "http://127.0.0.1:8000"
# The seed's two tool families the flags open, with the build–test tools that belong to each.
INTEGRATION_TOOLS = frozenset({"create_integration", "list_integrations", "get_integration", "update_integration", "delete_integration",
                               "list_secrets", "call_endpoint", "import_openapi"})
ROUTE_TOOLS = frozenset({"create_route", "list_routes", "get_route", "update_route", "delete_route",
                         "list_route_invocations", "test_route"})
PROBE = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-11-25", "capabilities": {}, "clientInfo": {"name": "backflow-mcp", "version": "1.0.0"}}}


class BridgeError(Exception):
    """Cannot serve: the message is the one line printed on stderr."""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="backflow-mcp", description=__doc__.split("\n\n")[0])
    parser.add_argument("--api-key", default=os.environ.get("BACKFLOW_API_KEY"), help="API key (or BACKFLOW_API_KEY)")
    parser.add_argument("--endpoint", default=os.environ.get("BACKFLOW_ENDPOINT") or DEFAULT_ENDPOINT,
                        help=f"Backflow base URL (or BACKFLOW_ENDPOINT; default {DEFAULT_ENDPOINT})")
    parser.add_argument("--scope", help="Tenant to act on, for credentials that cover several")
    parser.add_argument("--allow-integrations", action="store_true", help="Offer the integration management tools")
    parser.add_argument("--allow-routes", action="store_true", help="Offer the route management tools")
    parser.add_argument("--timeout", type=float, default=60.0, help="Seconds to wait for one remote call")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("give --api-key or set BACKFLOW_API_KEY")
    args.endpoint = args.endpoint.rstrip("/")
    return args


def hidden_tools(args):
    hidden = set()
    if not args.allow_integrations:
        hidden |= INTEGRATION_TOOLS
    if not args.allow_routes:
        hidden |= ROUTE_TOOLS
    return frozenset(hidden)


def request_headers(args):
    headers = {"Authorization": f"Bearer {args.api_key}"}
    if args.scope:
        headers["X-Backflow-Scope"] = args.scope
    return headers


async def choose_transport(args):
    """'http' or 'sse'; BridgeError for a refused key or an unreachable endpoint."""
    async with httpx2.AsyncClient(headers=request_headers(args), timeout=args.timeout) as http:
        try:
            response = await http.post(f"{args.endpoint}/mcp", json=PROBE,
                                       headers={"Accept": "application/json, text/event-stream"})
        except httpx2.HTTPError as exc:
            raise BridgeError(f"backflow-mcp: cannot reach {args.endpoint} ({exc.__class__.__name__}: {exc}).") from exc
    if response.status_code in (401, 403):
        try:
            detail = response.json().get("error", "")
        except ValueError:
            detail = response.text[:200]
        raise BridgeError(f"backflow-mcp: {args.endpoint} refused the API key ({response.status_code}): {detail}")
    if response.status_code in (404, 405):
        return "sse"
    if response.status_code >= 400:
        raise BridgeError(f"backflow-mcp: {args.endpoint}/mcp answered {response.status_code}.")
    return "http"


async def open_remote(stack, args, transport):
    if transport == "http":
        http = await stack.enter_async_context(httpx2.AsyncClient(headers=request_headers(args), timeout=httpx2.Timeout(args.timeout, read=args.timeout)))
        read, write = await stack.enter_async_context(streamable_http_client(f"{args.endpoint}/mcp", http_client=http))
    else:
        read, write = await stack.enter_async_context(sse_client(f"{args.endpoint}/mcp/sse", headers=request_headers(args), timeout=args.timeout))
    session = await stack.enter_async_context(ClientSession(read, write))
    await session.initialize()
    return session


def build_bridge(remote, hidden):
    async def remote_tools():
        tools, cursor = [], None
        while True:
            page = await remote.list_tools(cursor=cursor) if cursor else await remote.list_tools()
            tools += [tool for tool in page.tools if tool.name not in hidden]
            cursor = page.next_cursor
            if not cursor:
                return tools

    async def on_list_tools(ctx, params):
        return types.ListToolsResult(tools=await remote_tools())

    async def on_call_tool(ctx, params):
        if params.name in hidden:
            flag = "--allow-integrations" if params.name in INTEGRATION_TOOLS else "--allow-routes"
            return _error(f"Unknown tool {params.name!r} (start backflow-mcp with {flag} to offer it).")
        try:
            return await remote.call_tool(params.name, params.arguments or {})
        except Exception as exc:  # the remote went away or answered with a protocol error
            logger.warning("Remote call %s failed: %s", params.name, exc)
            return _error(f"The remote Backflow did not complete {params.name}: {exc}")

    return Server("backflow-bridge", version="1.0.0", on_list_tools=on_list_tools, on_call_tool=on_call_tool)


def _error(message):
    body = {"error": message}  # like Backflow's own errors: the JSON as text (no structuredContent to break an outputSchema)
    return types.CallToolResult(content=[types.TextContent(text=json.dumps(body))], is_error=True)


async def serve(args):
    transport = await choose_transport(args)
    async with AsyncExitStack() as stack:
        remote = await open_remote(stack, args, transport)
        server = build_bridge(remote, hidden_tools(args))
        logger.info("Forwarding to %s over %s.", args.endpoint, transport)
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())


def main(argv=None):
    args = parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=os.environ.get("LOG_LEVEL", "WARNING"),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        anyio.run(serve, args)
    except BridgeError as exc:
        print(exc, file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
