"""Fixtures of the security suites: local upstream HTTP servers (shared with the route runtime tests)."""

from integrations_app.tests.test_runtime_helpers import upstream, upstreams  # noqa: F401 (fixtures)
