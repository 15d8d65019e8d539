"""Beyond tools: the initialize instructions, resources (the reference from docs/, the tenant's
documents, scope-gated), prompts, progress notifications of run_workflow, and logging/setLevel —
with the MCP SDK's own client against a real daphne (and a worker for the run)."""

import json
from contextlib import AsyncExitStack
from pathlib import Path

import httpx2
import mcp_types as types
import pytest
from django.conf import settings
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from integrations_app.tests.test_runtime_helpers import Reply, make_integration, upstream, upstreams  # noqa: F401 (fixtures)
from mcp_app.tests.helpers import run
from mcp_app.tests.test_remote_support import bearer
from tests.isolation import make_app, make_workflow
from workflows_app import services as workflow_services
from workflows_app.tests.helpers import Worker, step, workflow

TOPICS = {"templates", "auth", "integrations", "routes", "workflows", "filters", "apps", "build-loop"}


class Connected:
    def __init__(self, session, initialized, logs):
        self.session, self.initialized, self.logs = session, initialized, logs


async def connect(base_url, key, stack, transport="http"):
    logs = []

    async def on_log(params):
        logs.append(params)

    if transport == "sse":
        read, write = await stack.enter_async_context(sse_client(f"{base_url}/mcp/sse", headers=bearer(key), timeout=15))
    else:
        http = await stack.enter_async_context(httpx2.AsyncClient(headers=bearer(key), timeout=httpx2.Timeout(15, read=60)))
        read, write = await stack.enter_async_context(streamable_http_client(f"{base_url}/mcp", http_client=http))
    session = await stack.enter_async_context(ClientSession(read, write, logging_callback=on_log))
    initialized = await session.initialize()
    return Connected(session, initialized, logs)


def test_instructions_resources_and_prompts(acme, globex, live_daphne):
    make_integration(acme, "crm", "https://crm.example.com/v1", [{"name": "list", "method": "get", "path": "/contacts"}])
    make_workflow(acme, "nightly")
    make_app(acme, "studio")
    make_integration(globex, "theirs", "https://globex.example.com", [])
    server = live_daphne()
    routes_only = acme.key_with("routes:read", "mcp:use", name="routes-only")

    async def main():
        async with AsyncExitStack() as stack:
            full = await connect(server.url, acme.key, stack)
            narrow = await connect(server.url, routes_only, stack)
            instructions = full.initialized.instructions
            for word in ("call_endpoint", "test_route", "trace", "backflow://docs/"):
                assert word in instructions, instructions
            caps = full.initialized.capabilities
            assert caps.resources is not None and caps.prompts is not None and caps.logging is not None

            listed = {str(r.uri) for r in (await full.session.list_resources()).resources}
            assert listed == {f"backflow://docs/{topic}" for topic in TOPICS}
            templates = {t.uri_template for t in (await full.session.list_resource_templates()).resource_templates}
            assert templates == {"backflow://docs/{topic}", "backflow://integrations/{name}", "backflow://workflows/{id}", "backflow://apps/{id}"}
            narrow_templates = {t.uri_template for t in (await narrow.session.list_resource_templates()).resource_templates}
            assert narrow_templates == {"backflow://docs/{topic}"}  # scope-gated like the tools

            # The reference comes from docs/ (one source): the very text of the tenant guide's section.
            text = (await full.session.read_resource("backflow://docs/templates")).contents[0].text
            guide = (Path(settings.BASE_DIR) / "docs" / "tenant-guide.md").read_text()
            assert text.startswith("### Templates") and text.split("\n\n")[1] in guide
            for topic in TOPICS:
                assert (await full.session.read_resource(f"backflow://docs/{topic}")).contents[0].text.strip()

            crm = json.loads((await full.session.read_resource("backflow://integrations/crm")).contents[0].text)
            assert crm["name"] == "crm" and crm["endpoints"][0]["name"] == "list"
            assert json.loads((await full.session.read_resource("backflow://workflows/nightly")).contents[0].text)["id"] == "nightly"
            assert json.loads((await full.session.read_resource("backflow://apps/studio")).contents[0].text)["id"] == "studio"
            for uri in ("backflow://integrations/theirs", "backflow://docs/nothing", "backflow://secrets/x", "https://example.com/"):
                with pytest.raises(MCPError) as refused:
                    await full.session.read_resource(uri)
                assert refused.value.code == types.INVALID_PARAMS, uri
            with pytest.raises(MCPError):  # no integrations:read: no integration documents either
                await narrow.session.read_resource("backflow://integrations/crm")

            prompts = {p.name: p for p in (await full.session.list_prompts()).prompts}
            assert set(prompts) == {"setup_tenant_api", "integration_from_openapi", "app_over_collection"}
            assert [a.name for a in prompts["setup_tenant_api"].arguments] == ["business", "apis"]
            got = await full.session.get_prompt("setup_tenant_api", {"business": "a fitness studio", "apis": "Mindbody, Stripe, Twilio"})
            said = got.messages[0].content.text
            assert "a fitness studio" in said and "Mindbody, Stripe, Twilio" in said and "test_route" in said
            with pytest.raises(MCPError):
                await full.session.get_prompt("app_over_collection", {})

    run(main, timeout=90)


def test_run_workflow_reports_each_step_as_progress_and_logs_at_the_level_asked(acme, live_daphne, upstream, settings):
    upstream.on("GET", "/step", Reply(body={"ok": True}))
    make_integration(acme, "up", upstream.url, [{"name": "step", "method": "get", "path": "/step"}])
    tool = {"name": "call", "type": "integration", "params": {"integration": "up", "action": "step"}}
    workflow_services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=workflow(
        "three", [step("one", "call"), step("two", "call"), step("three", "call")], tools=[tool]))
    server = live_daphne(BACKFLOW_EGRESS_ALLOW="127.0.0.1")
    worker = Worker(BACKFLOW_EGRESS_ALLOW="127.0.0.1")
    progress = []

    async def on_progress(value, total, message):
        progress.append((value, total, message))

    async def main(transport):
        async with AsyncExitStack() as stack:
            connected = await connect(server.url, acme.key, stack, transport)
            if transport == "sse":  # a stream holds the connection's level (Streamable HTTP here is stateless)
                await connected.session.set_logging_level("info")
            result = await connected.session.call_tool("run_workflow", {"id": "three", "wait": 30}, progress_callback=on_progress)
            return result, connected.logs

    expected = [(1, 3, "step one succeeded"), (2, 3, "step two succeeded"), (3, 3, "step three succeeded")]
    try:
        for transport in ("http", "sse"):
            progress.clear()
            result, logs = run(lambda: main(transport), timeout=90)
            assert result.structured_content["status"] == "succeeded", (transport, result)
            assert progress == expected, (transport, progress)
            # notifications/message only where the client asked for info-level logs
            assert [entry.data for entry in logs] == ([m for _, _, m in expected] if transport == "sse" else []), (transport, logs)
    finally:
        worker.stop()
