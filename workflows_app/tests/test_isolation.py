"""Tenant isolation for workflows, runs, MCP servers, webhooks and /agent/mcp/*: globex neither sees
nor runs acme's, gets 404 (never 403), and leaves acme's records as they were. Servers of the same
name in two tenants are two servers, with two connections."""

from rest_framework.test import APIClient

from workflows_app import selectors
from workflows_app.models import McpServer, Workflow, WorkflowRun
from workflows_app.tests.helpers import add_stdio_server, echo_workflow, everything_stdio, filesystem_stdio, run_now, step, workflow


def test_globex_cannot_see_or_touch_acmes_workflows_runs_and_servers(acme, globex):
    add_stdio_server(acme, everything_stdio())
    a = acme.client()
    assert a.post("/api/mcp-servers/", {"name": "remote", "url": "https://acme-mcp.example.com/mcp"}, format="json").status_code == 201
    made = a.post("/api/workflows/", echo_workflow(triggers=[{"type": "webhook"}]), format="json")
    assert made.status_code == 201
    hook = made.json()["webhookUrl"]
    acme_run = a.post("/api/workflows/echo/runs/", {"input": {"who": "acme"}}, format="json").json()
    before = (a.get("/api/workflows/echo/").json(), a.get("/api/mcp-servers/remote/").json(), a.get(f"/api/runs/{acme_run['id']}/").json())

    g = globex.client()
    assert g.get("/api/workflows/").json()["count"] == 0
    assert g.get("/api/mcp-servers/").json()["count"] == 0
    for method, url, body in (
        ("get", "/api/workflows/echo/", None), ("put", "/api/workflows/echo/", echo_workflow()),
        ("patch", "/api/workflows/echo/", {"name": "mine"}), ("delete", "/api/workflows/echo/", None),
        ("get", "/api/workflows/echo/runs/", None), ("post", "/api/workflows/echo/runs/", {"input": {}}),
        ("post", "/api/workflows/echo/runs/?wait=1", {"input": {}}),
        ("get", f"/api/runs/{acme_run['id']}/", None), ("post", f"/api/runs/{acme_run['id']}/cancel/", None),
        ("get", "/api/mcp-servers/remote/", None), ("patch", "/api/mcp-servers/remote/", {"url": "https://evil.example.com/mcp"}),
        ("put", "/api/mcp-servers/remote/", {"name": "remote", "url": "https://evil.example.com/mcp"}),
        ("delete", "/api/mcp-servers/remote/", None), ("delete", "/api/mcp-servers/everything/", None),
        ("get", "/agent/mcp/servers/everything/tools", None), ("get", "/agent/mcp/servers/remote/tools", None),
        ("post", "/agent/mcp/execute", {"server": "everything", "tool": "echo", "arguments": {"message": "x"}}),
    ):
        response = getattr(g, method)(url, body, format="json")
        assert response.status_code == 404, (method, url, response.status_code, response.content)
    assert g.get("/agent/mcp/servers").json() == {"servers": []}

    # A globex workflow cannot name acme's servers: they do not exist for globex.
    refused = g.post("/api/workflows/", echo_workflow(), format="json")
    assert refused.status_code == 400 and "workflows[0].steps[0].params.server" in refused.json()["errors"]

    # acme's webhook token under globex's name (or the other way round) is no webhook.
    token = hook.rsplit("/", 1)[1]
    anonymous = APIClient()
    assert anonymous.post(f"/hooks/globex/echo/{token}", {}, format="json").status_code == 404
    g.post("/api/mcp-servers/", {"name": "everything", "url": "https://globex-mcp.example.com/mcp"}, format="json")
    assert g.post("/api/workflows/", echo_workflow(triggers=[{"type": "webhook"}]), format="json").status_code == 201
    globex_token = Workflow.objects.for_tenant(globex.tenant).get(slug="echo").webhook_token
    assert globex_token != token
    assert anonymous.post(f"/hooks/acme/echo/{globex_token}", {}, format="json").status_code == 404
    assert anonymous.post("/hooks/nobody/echo/" + token, {}, format="json").status_code == 404

    # Nothing of acme's changed, and no run was queued for it by globex.
    assert (a.get("/api/workflows/echo/").json(), a.get("/api/mcp-servers/remote/").json(),
            a.get(f"/api/runs/{acme_run['id']}/").json()) == before
    assert WorkflowRun.objects.for_tenant(acme.tenant).count() == 1
    assert McpServer.objects.for_tenant(acme.tenant).count() == 2


def test_servers_of_the_same_name_are_each_tenants_own(acme, globex, tmp_path):
    for ctx in (acme, globex):
        folder = tmp_path / ctx.tenant.slug
        folder.mkdir()
        (folder / "owner.txt").write_text(f"belongs to {ctx.tenant.slug}")
        add_stdio_server(ctx, filesystem_stdio(folder, name="files"))
        ctx.client().post("/api/workflows/", workflow("read", [step("read", "mcp.execute", {
            "server": "files", "tool": "read_text_file", "arguments": {"path": "{{input.path}}"}})]), format="json")

    for ctx, other in ((acme, globex), (globex, acme)):
        wf = selectors.workflow_get(tenant=ctx.tenant, slug="read")
        own = run_now(ctx, wf, {"path": str(tmp_path / ctx.tenant.slug / "owner.txt")})
        assert own.status == "succeeded" and own.output == {"content": f"belongs to {ctx.tenant.slug}"}, own.error
        theirs = run_now(ctx, wf, {"path": str(tmp_path / other.tenant.slug / "owner.txt")})
        assert theirs.status == "failed" and "Access denied" in theirs.error
        listed = ctx.client().post("/agent/mcp/execute", {"server": "files", "tool": "list_allowed_directories"}, format="json")
        assert listed.json()["content"][0]["text"].endswith(str(tmp_path / ctx.tenant.slug))


def test_runs_belong_to_their_tenant(acme, globex):
    add_stdio_server(acme, everything_stdio())
    add_stdio_server(globex, everything_stdio())
    for ctx in (acme, globex):
        assert ctx.client().post("/api/workflows/", echo_workflow(), format="json").status_code == 201
    acme_run = run_now(acme, selectors.workflow_get(tenant=acme.tenant, slug="echo"), {"who": "acme"})
    globex_run = run_now(globex, selectors.workflow_get(tenant=globex.tenant, slug="echo"), {"who": "globex"})
    assert (acme_run.output, globex_run.output) == ("Echo: hello acme", "Echo: hello globex")
    for ctx, mine, theirs in ((acme, acme_run, globex_run), (globex, globex_run, acme_run)):
        api = ctx.client()
        assert [r["id"] for r in api.get("/api/workflows/echo/runs/").json()["results"]] == [str(mine.id)]
        assert api.get(f"/api/runs/{mine.id}/").json()["steps"][0]["result"] == mine.output
        assert api.get(f"/api/runs/{theirs.id}/").status_code == 404
