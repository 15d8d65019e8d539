"""Backflow's MCP server (tool registry, stdio and HTTP transports) and the `backflow-mcp` bridge.

Kept free of imports: `mcp_app.bridge` must run without Django.
"""
