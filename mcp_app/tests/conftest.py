"""Fixtures for the stdio tests, which run `manage.py mcp_stdio` as real child processes (tenant-mode
children open the test database through tests.live.child_database_url; the root conftest keeps the
SQLite test database in a file for them), and for the credential checks' tests (`trips`)."""

import pytest

from mcp_app.tests.helpers import LocalSite


@pytest.fixture
def site(tmp_path):
    """A seed-style local-mode folder: mcp-config.json, integrations/, config.json (with mcpServers)."""
    return LocalSite(tmp_path / "studio")


@pytest.fixture
def trips(trip_sizes):
    """The sizes of the MCP doors' credential checks' trips to a thread."""
    from mcp_app import http

    return trip_sizes(http._credential_checks)
