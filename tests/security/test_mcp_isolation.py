"""Tenant isolation for every MCP tool over every transport: stdio (`mcp_stdio --tenant`), SSE and
Streamable HTTP.

acme owns one object of each kind (made through the service layer, see tests/isolation.py). globex,
connected over each transport, then calls every tool it can see, aimed at acme's objects:
listings never show them, reads and writes answer "No …" exactly as for a missing object, creating
under the same name makes globex's own record, and not one of acme's rows changes. CASES must name
every tool of the registry, so a new tool cannot ship without this coverage.
"""

import json
import uuid
from dataclasses import dataclass

import pytest

from mcp_app.registry import visible_tools
from mcp_app.tests.helpers import mcp_server, run
from mcp_app.tests.test_remote_support import sdk_session
from tenants.scopes import ALL_SCOPES
from integrations_app.models import RouteInvocation
from tests.isolation import make_app, make_entity, make_integration, make_route, make_run, make_secret, make_workflow, tenant_rows
from tests import live

pytestmark = pytest.mark.django_db(transaction=True)


@dataclass
class AcmeObjects:
    marker: str
    route_path: str
    collection: str
    entity_id: str
    run_id: str


def make_acme_objects(acme):
    marker = f"acme-{uuid.uuid4().hex[:8]}"
    make_integration(acme, marker)
    make_route(acme, marker)
    entity = make_entity(acme, marker)
    make_app(acme, marker)
    make_workflow(acme, marker)
    make_secret(acme, marker)
    run = make_run(acme, f"{marker}-run")
    RouteInvocation.objects.create(tenant=acme.tenant, method="get", path=f"/{marker}/1", status=502, duration_ms=1.0,
                                   error=f"{marker} failed")
    return AcmeObjects(marker, route_path=f"/{marker}/{{id}}", collection=entity.list_kwargs["collection_name"],
                       entity_id=entity.detail_kwargs["pk"], run_id=run.detail_kwargs["pk"])


# How each tool is aimed at acme's objects. "list": must answer, without a trace of acme.
# "missing": must fail exactly as for an object that does not exist. "own": globex makes its own
# record under acme's name (names are per tenant), and acme's stays as it was.
CASES = {
    "list_integrations": ("list", lambda o: {}),
    "get_integration": ("missing", lambda o: {"name": o.marker}),
    "update_integration": ("missing", lambda o: {"name": o.marker, "description": "taken over"}),
    "delete_integration": ("missing", lambda o: {"name": o.marker}),
    "list_routes": ("list", lambda o: {}),
    "get_route": ("missing", lambda o: {"path": o.route_path, "method": "get"}),
    "update_route": ("missing", lambda o: {"path": o.route_path, "method": "get", "description": "taken over"}),
    "delete_route": ("missing", lambda o: {"path": o.route_path, "method": "get"}),
    "list_collections": ("list", lambda o: {}),
    "list_entities": ("missing", lambda o: {"collection": o.collection}),
    "get_entity": ("missing", lambda o: {"collection": o.collection, "id": o.entity_id}),
    "update_entity": ("missing", lambda o: {"collection": o.collection, "id": o.entity_id, "data": {"owner": "globex"}}),
    "delete_entity": ("missing", lambda o: {"collection": o.collection, "id": o.entity_id}),
    "create_entity": ("missing", lambda o: {"collection": o.collection, "data": {"owner": "globex"}}),
    "list_apps": ("list", lambda o: {}),
    "get_app": ("missing", lambda o: {"id": o.marker}),
    "update_app": ("missing", lambda o: {"id": o.marker, "public": True}),
    "delete_app": ("missing", lambda o: {"id": o.marker}),
    "list_workflows": ("list", lambda o: {}),
    "get_workflow": ("missing", lambda o: {"id": o.marker}),
    "update_workflow": ("missing", lambda o: {"id": o.marker, "description": "taken over"}),
    "delete_workflow": ("missing", lambda o: {"id": o.marker}),
    "run_workflow": ("missing", lambda o: {"id": o.marker, "wait": 0}),
    "list_route_invocations": ("list", lambda o: {}),
    "list_runs": ("list", lambda o: {}),
    "get_run": ("missing", lambda o: {"id": o.run_id}),
    "list_secrets": ("list", lambda o: {}),
    "test_route": ("http-404", lambda o: {"method": "get", "path": f"/{o.marker}/1"}),
    "call_endpoint": ("missing", lambda o: {"integration": o.marker, "endpoint": "listThings"}),
    "import_openapi": ("own", lambda o: {"integration": f"{o.marker}-api", "spec": {
        "openapi": "3.1.0", "info": {"title": "globex", "version": "1", "description": "globex's own"},
        "servers": [{"url": "https://globex.example.com"}],
        "paths": {"/things": {"get": {"operationId": "listThings", "responses": {"200": {"description": "ok"}}}}}}}),
    # Same names as acme's, in globex: its own records. Run last, so the cases above saw none of them.
    "create_integration": ("own", lambda o: {
        "name": o.marker, "baseUrl": "https://globex.example.com", "description": "globex's own",
        "endpoints": [{"name": "listThings", "method": "get", "path": "/things"}]}),
    "create_route": ("own", lambda o: {
        "path": o.route_path, "method": "get", "description": "globex's own",
        "integrations": {"actions": [{"integration": o.marker, "action": "listThings"}]}}),
    "create_app": ("own", lambda o: {
        "id": o.marker, "name": "globex", "description": "globex's own",
        "pages": [{"path": "", "title": "globex", "components": [{"type": "markdown", "props": {"text": "globex"}}]}]}),
    "create_workflow": ("own", lambda o: {
        "id": o.marker, "name": "globex", "description": "globex's own",
        "workflows": [{"name": "main", "steps": [{"id": "ask", "action": "llm", "params": {"prompt": "globex"}}]}],
        "tools": [{"name": "llm", "type": "llm_call"}]}),
}
ORDER = {"list": 0, "missing": 1, "http-404": 1, "own": 2}


def test_cases_cover_every_tool():
    tools = set(visible_tools(scopes=ALL_SCOPES))
    assert set(CASES) == tools, (
        f"Tools without an isolation case in {__name__}.CASES: {sorted(tools - set(CASES))}; "
        f"cases for tools that no longer exist: {sorted(set(CASES) - tools)}"
    )


async def _probe(session, objects):
    """Every tool, aimed at acme's objects; returns the tool names that were exercised."""
    assert {t.name for t in (await session.session.list_tools()).tools} == set(CASES)
    for name, (kind, arguments) in sorted(CASES.items(), key=lambda item: ORDER[item[1][0]]):
        result, data = await session.call(name, arguments(objects))
        text = result.content[0].text
        if kind == "list":
            assert not result.is_error, (name, text)
            assert objects.marker not in text and objects.collection not in text, f"{name} shows acme's objects: {text}"
        elif kind == "missing":
            assert result.is_error and data["error"].startswith("No "), f"{name} did not answer as for a missing object: {text}"
        elif kind == "http-404":  # what a caller of the route would get: no such route, at globex
            assert not result.is_error and data["status"] == 404 and data["trace"] == [], (name, text)
            assert objects.marker not in json.dumps(data["body"]).replace(f"/{objects.marker}/1", ""), (name, text)
        else:
            assert not result.is_error, (name, text)
            assert data.get("description", "globex's own") == "globex's own", (name, text)
    # globex's listings now show its own records under those names, one of each, and nothing else.
    _, listed = await session.call("list_integrations", {})
    assert {i["description"] for i in listed["integrations"]} == {"globex's own"}  # create_integration's and import_openapi's


@pytest.mark.parametrize("transport", ["stdio", "sse", "http"])
def test_globex_reaches_none_of_acmes_objects_through_any_tool(transport, acme, globex, live_daphne):
    objects = make_acme_objects(acme)
    before = tenant_rows(acme.tenant)
    server = None if transport == "stdio" else live_daphne()

    async def main():
        if transport == "stdio":
            connection = mcp_server("--tenant", globex.tenant.slug, env={"DATABASE_URL": live.child_database_url()})
        else:
            connection = sdk_session(server.url, transport, globex.key)
        async with connection as session:
            await _probe(session, objects)

    run(main, timeout=120)
    after = tenant_rows(acme.tenant)
    # Audit rows are globex's (its tool calls); acme's tables are exactly as they were.
    assert after == before, "a tool call as globex changed acme's data"
