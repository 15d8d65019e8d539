"""Serve one MCP connection on this process's stdin/stdout."""

from mcp.server.stdio import stdio_server

from mcp_app.server import CONNECTION, build_server


async def serve_stdio(ctx):
    CONNECTION.set(ctx)  # handlers run in this context: one stdio process is one connection
    server = build_server()
    async with stdio_server() as (read_stream, write_stream):
        await server.run(read_stream, write_stream, server.create_initialization_options())
