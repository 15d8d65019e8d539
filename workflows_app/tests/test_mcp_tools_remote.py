"""The workflow MCP tools as an assistant uses them: the MCP SDK's Streamable HTTP client against a
real daphne (`live_daphne`), with runs executed by a real `manage.py run_worker`."""

from mcp_app.tests.test_remote_support import run, sdk_session
from workflows_app.tests.helpers import add_stdio_server, everything_stdio, step, workflow

WORKFLOW_TOOLS = {"list_workflows", "get_workflow", "create_workflow", "update_workflow", "delete_workflow", "run_workflow"}

GREET = workflow("greet", [
    step("sum", "mcp.execute", {"server": "everything", "tool": "get-sum", "arguments": {"a": "{{input.a}}", "b": "{{input.b}}"}}),
    step("say", "mcp.execute", {"server": "everything", "tool": "echo", "arguments": {"message": "{{input.who}}: {{steps.sum.result}}"}}),
], name="Greet", description="Adds two numbers and says the result.")


def test_workflow_tools_over_streamable_http(acme, globex, live_daphne, worker):
    add_stdio_server(acme, everything_stdio())
    worker()  # boots while daphne does
    server = live_daphne()
    reader = acme.key_with("workflows:read", name="reader")
    writer = acme.key_with("workflows:read", "workflows:write", name="writer")

    async def main():
        async with sdk_session(server.url, "http", acme.key) as s:
            tools = {t.name: t for t in (await s.session.list_tools()).tools}
            assert WORKFLOW_TOOLS <= set(tools)
            assert tools["list_workflows"].annotations.read_only_hint is True
            assert tools["delete_workflow"].annotations.destructive_hint is True
            assert tools["create_workflow"].input_schema["required"] == ["workflows"]  # the name defaults to the id

            assert await s.ok("list_workflows") == {"workflows": []}
            created = await s.ok("create_workflow", GREET)
            assert created["id"] == "greet" and created["workflows"] == GREET["workflows"] and created["triggers"] == [{"type": "manual"}]
            assert (await s.ok("get_workflow", {"id": "greet"}))["description"] == "Adds two numbers and says the result."
            assert await s.ok("list_workflows") == {"workflows": [{
                "id": "greet", "name": "Greet", "description": "Adds two numbers and says the result.",
                "workflows": [{"name": "main", "steps": 2}], "triggers": ["manual"]}]}

            # Bad documents are isError results that name the field to fix.
            bad = await s.error("create_workflow", workflow("bad", [step("x", "mcp.execute", {"server": "nowhere", "tool": "echo"})]))
            assert list(bad["errors"]) == ["workflows[0].steps[0].params.server"] and "nowhere" in bad["error"], bad
            assert "greet" in str(await s.error("create_workflow", GREET))  # duplicate id
            await s.error("get_workflow", {"id": "nope"})

            updated = await s.ok("update_workflow", {"id": "greet", "triggers": [{"type": "manual"}, {"type": "webhook"}]})
            assert updated["webhookUrl"].startswith("/hooks/acme/greet/") and updated["name"] == "Greet"

            result = await s.ok("run_workflow", {"id": "greet", "input": {"a": 2, "b": 40, "who": "mcp"}, "wait": 20})
            assert result["status"] == "succeeded", result
            assert result["output"] == "Echo: mcp: The sum of 2 and 40 is 42."
            assert [(x["id"], x["status"], x["result"]) for x in result["steps"]] == [
                ("sum", "succeeded", "The sum of 2 and 40 is 42."), ("say", "succeeded", "Echo: mcp: The sum of 2 and 40 is 42.")]
            assert result["steps"][0]["params"]["arguments"] == {"a": 2, "b": 40}

            # Without waiting, the run comes back queued and is done a moment later.
            queued = await s.ok("run_workflow", {"id": "greet", "input": {"a": 1, "b": 1, "who": "later"}, "wait": 0})
            assert queued["status"] in ("queued", "running") and "steps" not in queued

        async with sdk_session(server.url, "http", reader) as s:
            names = await s.tool_names()
            assert names & WORKFLOW_TOOLS == {"list_workflows", "get_workflow"}
            assert (await s.ok("get_workflow", {"id": "greet"}))["id"] == "greet"
            for name, args in (("create_workflow", {**GREET, "id": "sneaky"}), ("delete_workflow", {"id": "greet"}),
                               ("run_workflow", {"id": "greet"}), ("update_workflow", {"id": "greet", "name": "x"})):
                assert "Unknown tool" in (await s.error(name, args))["error"], name

        async with sdk_session(server.url, "http", writer) as s:
            assert (await s.tool_names()) & WORKFLOW_TOOLS == WORKFLOW_TOOLS - {"run_workflow"}
            assert "Unknown tool" in (await s.error("run_workflow", {"id": "greet"}))["error"]

        async with sdk_session(server.url, "http", globex.key) as s:
            assert await s.ok("list_workflows") == {"workflows": []}
            for name, args in (("get_workflow", {"id": "greet"}), ("run_workflow", {"id": "greet", "wait": 0}),
                               ("update_workflow", {"id": "greet", "name": "mine"}), ("delete_workflow", {"id": "greet"})):
                assert "greet" in (await s.error(name, args))["error"], name

        async with sdk_session(server.url, "http", acme.key) as s:
            assert (await s.ok("get_workflow", {"id": "greet"}))["name"] == "Greet"  # untouched by globex
            assert await s.ok("delete_workflow", {"id": "greet"}) == {"deleted": "greet"}
            assert await s.ok("list_workflows") == {"workflows": []}
            await s.error("run_workflow", {"id": "greet"})

    run(main, timeout=90)
