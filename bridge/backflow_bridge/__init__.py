"""backflow-mcp: a stdio MCP server that forwards to a remote Backflow (see bridge.py)."""

from backflow_bridge.bridge import main

__all__ = ["main"]
