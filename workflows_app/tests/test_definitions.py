"""Workflow documents and MCP server records over REST: CRUD, validation naming the field, conflicts,
who may define stdio servers, and servers still in use. Nothing here connects to a server."""

import copy

import pytest
from django.contrib.auth import get_user_model
from django.test import Client

from integrations_app import services as integration_services
from integrations_app.stores import DatabaseStore
from workflows_app.models import McpServer, ScheduledTrigger, Workflow
from workflows_app.tests.helpers import add_stdio_server, everything_stdio, step, workflow

REMOTE = {"name": "remote", "transport": "http", "url": "https://mcp.example.com/mcp"}
ANALYZE = workflow(
    "file-analysis",
    [step("read-file", "read_file", {"path": "{{input.filePath}}"}),
     step("analyze", "llm", {"prompt": "Analyze this file content:\n{{steps.read-file.result}}"})],
    tools=[{"name": "read_file", "type": "mcp_tool", "params": {"mcpServer": "remote", "toolName": "read_file"}},
           {"name": "llm", "type": "llm_call"}],
    name="File analysis",
)


@pytest.fixture
def api(acme):
    client = acme.client()
    assert client.post("/api/mcp-servers/", REMOTE, format="json").status_code == 201
    return client


def errors_of(response, status=400):
    assert response.status_code == status, (response.status_code, response.content)
    body = response.json()
    assert isinstance(body.get("detail"), str), body
    return body.get("errors", {})


def test_workflow_crud(api, acme):
    created = api.post("/api/workflows/", ANALYZE, format="json")
    assert created.status_code == 201, created.content
    doc = created.json()
    assert doc["id"] == "file-analysis" and doc["name"] == "File analysis"
    assert doc["workflows"] == ANALYZE["workflows"] and doc["tools"][0]["params"]["toolName"] == "read_file"
    assert doc["triggers"] == [{"type": "manual"}] and "webhookUrl" not in doc  # default trigger
    assert doc["createdAt"] and doc["updatedAt"]

    listed = api.get("/api/workflows/").json()
    assert [w["id"] for w in listed["results"]] == ["file-analysis"] and listed["count"] == 1
    assert api.get("/api/workflows/file-analysis/").json() == doc

    # PATCH changes only what it names; a webhook trigger gives the document its URL.
    patched = api.patch("/api/workflows/file-analysis/", {"description": "Reads a file, asks the LLM",
                                                          "triggers": [{"type": "manual"}, {"type": "webhook"}]}, format="json")
    assert patched.status_code == 200, patched.content
    patched = patched.json()
    assert patched["description"] == "Reads a file, asks the LLM" and patched["workflows"] == ANALYZE["workflows"]
    token = Workflow.objects.for_tenant(acme.tenant).get(slug="file-analysis").webhook_token
    assert patched["webhookUrl"] == f"/hooks/acme/file-analysis/{token}"

    # PUT replaces the document (the id stays); a schedule trigger is registered with the worker's clock.
    replaced = copy.deepcopy(ANALYZE)
    replaced["name"] = "File analysis v2"
    replaced["triggers"] = [{"type": "schedule", "cron": "*/15 * * * *", "input": {"filePath": "/srv/a.txt"}}]
    put = api.put("/api/workflows/file-analysis/", replaced, format="json")
    assert put.status_code == 200, put.content
    assert put.json()["name"] == "File analysis v2" and put.json()["description"] == "" and "webhookUrl" not in put.json()
    schedule = ScheduledTrigger.objects.for_tenant(acme.tenant).get()
    assert (schedule.cron, schedule.entry, schedule.input) == ("*/15 * * * *", "main", {"filePath": "/srv/a.txt"})

    renamed = api.patch("/api/workflows/file-analysis/", {"id": "other"}, format="json")
    assert "id" in errors_of(renamed)

    assert api.delete("/api/workflows/file-analysis/").status_code == 204
    assert api.get("/api/workflows/file-analysis/").status_code == 404
    assert api.delete("/api/workflows/file-analysis/").status_code == 404
    assert not ScheduledTrigger.objects.for_tenant(acme.tenant).filter().exists()


def test_duplicate_workflow_id_is_409(api):
    assert api.post("/api/workflows/", ANALYZE, format="json").status_code == 201
    again = api.post("/api/workflows/", {**ANALYZE, "name": "Another"}, format="json")
    assert "id" in errors_of(again, 409)
    # Without an id, one is made from the name; the same name again conflicts the same way.
    unnamed = {k: v for k, v in ANALYZE.items() if k != "id"}
    unnamed["name"] = "Nightly Report"
    made = api.post("/api/workflows/", unnamed, format="json")
    assert made.status_code == 201 and made.json()["id"] == "nightly-report"
    assert api.post("/api/workflows/", unnamed, format="json").status_code == 409


def with_changes(change):
    doc = copy.deepcopy(ANALYZE)
    change(doc)
    return doc


def _steps(doc):
    return doc["workflows"][0]["steps"]


INVALID = {
    "duplicate step id": (lambda d: _steps(d).append(step("read-file", "llm", {"prompt": "again"})),
                          "workflows[0].steps[2].id", "duplicate step id"),
    "unknown action": (lambda d: _steps(d).insert(0, step("first", "summon_demon")),
                       "workflows[0].steps[0].action", "summon_demon"),
    "template naming a later step": (lambda d: _steps(d).insert(0, step("early", "llm", {"prompt": "{{steps.analyze.result}}"})),
                                     "workflows[0].steps[0].params", "does not run before it"),
    "template naming an unknown root": (lambda d: _steps(d)[0]["params"].update(path="{{secrets.key}}"),
                                        "workflows[0].steps[0].params", "unknown root"),
    "mcp_tool on an unregistered server": (lambda d: d["tools"][0]["params"].update(mcpServer="nowhere"),
                                           "tools[0].params.mcpServer", "no MCP server named 'nowhere'"),
    "mcp_tool without toolName": (lambda d: d["tools"][0]["params"].pop("toolName"),
                                  "tools[0].params.toolName", "toolName"),
    "mcp.execute on an unregistered server": (
        lambda d: _steps(d).append(step("run", "mcp.execute", {"server": "nowhere", "tool": "echo"})),
        "workflows[0].steps[2].params.server", "no MCP server named 'nowhere'"),
    "mcp.listTools without a server": (lambda d: _steps(d).append(step("tools", "mcp.listTools")),
                                       "workflows[0].steps[2].params.server", "needs params.server"),
    "integration tool naming a missing endpoint": (
        lambda d: d["tools"].append({"name": "charges", "type": "integration", "params": {"integration": "stripe", "action": "refundAll"}}),
        "tools[2].params.action", "no endpoint 'refundAll'"),
    "integration tool naming a missing integration": (
        lambda d: d["tools"].append({"name": "charges", "type": "integration", "params": {"integration": "paypal", "action": "x"}}),
        "tools[2].params.integration", "no integration named 'paypal'"),
    "invalid cron": (lambda d: d.update(triggers=[{"type": "schedule", "cron": "every tuesday"}]), "triggers[0].cron", "cron"),
    "schedule without cron": (lambda d: d.update(triggers=[{"type": "schedule"}]), "triggers[0].cron", "cron"),
    "llm step without prompt": (lambda d: _steps(d)[1]["params"].pop("prompt"), "workflows[0].steps[1].params.prompt", "prompt"),
    "unknown trigger type": (lambda d: d.update(triggers=[{"type": "email"}]), "triggers[0].type", ""),
    "unknown tool type": (lambda d: d["tools"].append({"name": "x", "type": "shell"}), "tools[2].type", ""),
    "step id with a space": (lambda d: _steps(d)[0].update(id="read file"), "workflows[0].steps[0].id", ""),
    "no steps": (lambda d: d["workflows"][0].update(steps=[]), "workflows[0].steps", ""),
    "unknown field": (lambda d: d.update(color="red"), "body", "'color'"),
}


@pytest.mark.parametrize("case", list(INVALID))
def test_invalid_workflows_name_the_bad_field(api, acme, case):
    integration_services.integration_create(store=DatabaseStore(tenant=acme.tenant, actor=acme.actor), document={
        "name": "stripe", "baseUrl": "https://api.stripe.com/v1",
        "endpoints": [{"name": "listCharges", "method": "get", "path": "/charges"}]})
    change, field, words = INVALID[case]
    errors = errors_of(api.post("/api/workflows/", with_changes(change), format="json"))
    assert field in errors, (case, errors)
    assert words in " ".join(errors[field]), (case, errors)
    assert not Workflow.objects.for_tenant(acme.tenant).filter().exists()


def test_bad_bodies_are_400_never_500(api):
    for body in ([1, 2], "text", {"name": 5, "workflows": "none"}):
        response = api.post("/api/workflows/", body, format="json")
        assert response.status_code == 400, (body, response.content)
    response = api.generic("POST", "/api/workflows/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert api.post("/api/workflows/", ANALYZE, format="json").status_code == 201
    assert api.patch("/api/workflows/file-analysis/", {"workflows": [{"name": "main", "steps": "x"}]}, format="json").status_code == 400


def test_write_needs_workflows_write(acme):
    reader = acme.client(acme.key_with("workflows:read"))
    assert reader.get("/api/workflows/").status_code == 200
    assert reader.post("/api/workflows/", ANALYZE, format="json").status_code == 403
    assert reader.post("/api/mcp-servers/", REMOTE, format="json").status_code == 403
    assert acme.client("bf_nope_nothing").get("/api/workflows/").status_code == 401


def test_tenants_register_http_and_sse_servers_but_not_stdio(acme):
    api = acme.client()
    http = api.post("/api/mcp-servers/", {**REMOTE, "headers": {"Authorization": {"secret": "remote_token", "prefix": "Bearer "}}},
                    format="json")
    assert http.status_code == 201, http.content
    assert http.json()["transport"] == "http" and http.json()["timeout"] == 60.0 and http.json()["maxConcurrency"] == 4
    sse = api.post("/api/mcp-servers/", {"name": "events", "transport": "sse", "url": "https://mcp.example.com/sse", "timeout": 5},
                   format="json")
    assert sse.status_code == 201 and sse.json()["timeout"] == 5

    stdio = api.post("/api/mcp-servers/", {"name": "shell", "command": "/bin/sh", "args": ["-c", "id"]}, format="json")
    assert "transport" in errors_of(stdio)
    explicit = api.post("/api/mcp-servers/", {"name": "shell", "transport": "stdio", "command": "/bin/sh"}, format="json")
    assert "transport" in errors_of(explicit)
    assert not McpServer.all_tenants.filter(name="shell").exists()

    assert "url" in errors_of(api.post("/api/mcp-servers/", {"name": "nourl", "transport": "http"}, format="json"))
    assert "url" in errors_of(api.post("/api/mcp-servers/", {"name": "ftp", "url": "ftp://x.example.com"}, format="json"))
    assert "command" in errors_of(api.post("/api/mcp-servers/", {"name": "mixed", "transport": "http",
                                                                 "url": "https://a.example.com/mcp", "command": "/bin/sh"}, format="json"))
    assert "name" in errors_of(api.post("/api/mcp-servers/", {"name": "Bad Name", "url": "https://a.example.com/mcp"}, format="json"))
    assert "name" in errors_of(api.post("/api/mcp-servers/", REMOTE, format="json"), 409)
    # An http server cannot be turned into a stdio one either.
    assert "transport" in errors_of(api.patch("/api/mcp-servers/remote/", {"transport": "stdio", "command": "/bin/sh"}, format="json"))
    assert api.patch("/api/mcp-servers/remote/", {"url": "https://mcp2.example.com/mcp"}, format="json").json()["url"] == \
        "https://mcp2.example.com/mcp"
    assert sorted(s["name"] for s in api.get("/api/mcp-servers/").json()["results"]) == ["events", "remote"]


def test_operators_define_stdio_servers_that_tenants_see_but_cannot_change(acme):
    add_stdio_server(acme, everything_stdio(env={"LOG": "{{env.HOME}}"}))
    api = acme.client()
    shown = api.get("/api/mcp-servers/everything/").json()
    assert shown["transport"] == "stdio" and shown["args"][0].endswith("server-everything/dist/index.js")
    assert shown["env"] == {"LOG": "{{env.HOME}}"}  # the placeholder, never the operator's value
    assert "transport" in errors_of(api.patch("/api/mcp-servers/everything/", {"args": ["/tmp/evil.js"]}, format="json"))
    assert "transport" in errors_of(api.delete("/api/mcp-servers/everything/"))
    assert McpServer.objects.for_tenant(acme.tenant).get(name="everything").args == shown["args"]


def test_operators_add_stdio_servers_in_the_admin(acme):
    operator = get_user_model().objects.create_superuser("ops", "ops@example.com", "pw")
    admin = Client()
    admin.force_login(operator)
    response = admin.post("/admin/workflows_app/mcpserver/add/", {
        "tenant": acme.tenant.pk, "name": "filesystem", "transport": "stdio", "command": "npx",
        "args": '["-y", "@modelcontextprotocol/server-filesystem", "/srv/files"]', "env": "{}", "url": "", "headers": "{}",
        "timeout": "30", "max_concurrency": "2",
    })
    assert response.status_code == 302, response.content.decode()[-2000:]
    server = McpServer.objects.for_tenant(acme.tenant).get(name="filesystem")
    assert (server.transport, server.command, server.args, server.timeout, server.max_concurrency) == (
        "stdio", "npx", ["-y", "@modelcontextprotocol/server-filesystem", "/srv/files"], 30.0, 2)
    assert admin.get(f"/admin/workflows_app/mcpserver/{server.pk}/change/").status_code == 200
    # A workflow of the tenant may now use it.
    made = acme.client().post("/api/workflows/", workflow("ls", [step("ls", "mcp.execute", {
        "server": "filesystem", "tool": "list_directory", "arguments": {"path": "/srv/files"}})]), format="json")
    assert made.status_code == 201, made.content


def test_a_server_used_by_a_workflow_cannot_be_deleted(api, acme):
    assert api.post("/api/mcp-servers/", {"name": "spare", "url": "https://spare.example.com/mcp"}, format="json").status_code == 201
    assert api.post("/api/workflows/", ANALYZE, format="json").status_code == 201  # mcp_tool on "remote"
    assert api.post("/api/workflows/", workflow("discover", [step("tools", "mcp.listTools", {"server": "spare"})]),
                    format="json").status_code == 201
    for name, user in (("remote", "file-analysis"), ("spare", "discover")):
        response = api.delete(f"/api/mcp-servers/{name}/")
        assert response.status_code == 409, response.content
        assert user in response.json()["detail"] and "name" in response.json()["errors"]
    assert api.delete("/api/workflows/file-analysis/").status_code == 204
    assert api.delete("/api/mcp-servers/remote/").status_code == 204
    assert api.get("/api/mcp-servers/remote/").status_code == 404
    # With its server gone, a workflow naming it is refused again.
    assert "tools[0].params.mcpServer" in errors_of(api.post("/api/workflows/", ANALYZE, format="json"))
