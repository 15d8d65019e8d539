"""Importing this package registers every tool, grouped like the seed's tool tables."""

from mcp_app.tools import apps, build, entities, integrations, observe, routes, workflows  # noqa: F401
