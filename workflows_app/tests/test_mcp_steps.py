"""MCP steps against real servers: mcp.listTools / mcp.execute, isError, continueOnError, the step
timeout, a crashed stdio server, a tenant's Streamable HTTP and SSE servers behind the egress guard
(and one that restarts), header secrets, env placeholders of stdio servers, and a server whose
program is not installed."""

import os
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from cryptography.fernet import Fernet

from integrations_app import services as integration_services
from integrations_app.models import Secret
from workflows_app import selectors, services
from workflows_app.mcp_client import CLIENT, McpClientError
from workflows_app.models import McpServer
from workflows_app.tests.helpers import (
    EVERYTHING,
    EverythingHttp,
    add_stdio_server,
    alive,
    child_pids,
    echo_workflow,
    everything_stdio,
    run_now,
    step,
    wait_until,
    workflow,
)


def create(ctx, document):
    return services.workflow_create(tenant=ctx.tenant, actor=ctx.actor, document=document)


def everything_children():
    return [pid for pid, cmd in child_pids().items() if EVERYTHING in cmd]


def test_list_tools_and_execute(acme):
    add_stdio_server(acme, everything_stdio())
    wf = create(acme, workflow("discover", [
        step("tools", "mcp.listTools", {"server": "everything"}),
        step("sum", "mcp.execute", {"server": "everything", "tool": "get-sum", "arguments": {"a": "{{input.a}}", "b": 3}}),
        step("weather", "mcp.execute", {"server": "everything", "tool": "get-structured-content",
                                        "arguments": {"location": "{{input.city}}"}}),
        # A single placeholder keeps its JSON type: a number from the structured result of a step.
        step("again", "mcp.execute", {"server": "everything", "tool": "get-sum",
                                      "arguments": {"a": "{{steps.weather.result.temperature}}", "b": 0}}),
        step("say", "mcp.execute", {"server": "everything", "tool": "echo",
                                    "arguments": {"message": "sum={{steps.sum.result}}", "apiToken": "{{input.token}}"}}),
    ]))
    run = run_now(acme, wf, {"a": 2, "city": "New York", "token": "tok-very-secret"})
    assert run.status == "succeeded", run.error
    assert run.output == "Echo: sum=The sum of 2 and 3 is 5."
    tools, total, weather, again, say = selectors.run_steps(run=run)

    listed = {t["name"]: t for t in tools.result}
    assert {"echo", "get-sum", "trigger-long-running-operation"} <= set(listed)
    assert all(set(t) == {"name", "description", "inputSchema"} for t in tools.result)
    assert listed["echo"]["description"] == "Echoes back the input string"
    assert listed["echo"]["inputSchema"]["properties"]["message"]["type"] == "string"

    assert total.params == {"server": "everything", "tool": "get-sum", "arguments": {"a": 2, "b": 3}}
    assert total.result == "The sum of 2 and 3 is 5."
    assert set(weather.result) >= {"temperature", "conditions", "humidity"}  # structuredContent as is
    assert again.result == f"The sum of {weather.result['temperature']} and 0 is {weather.result['temperature']}."
    # Credentials in parameters are redacted in what the run stores; the server got the real value.
    assert say.params["arguments"] == {"message": "sum=The sum of 2 and 3 is 5.", "apiToken": "***redacted***"}
    assert "tok-very-secret" not in str([s.params for s in (tools, total, weather, again, say)])
    assert len(everything_children()) == 1  # one kept connection served all five steps


def test_is_error_fails_the_run_unless_continue_on_error(acme):
    add_stdio_server(acme, everything_stdio())
    bad = step("bad", "mcp.execute", {"server": "everything", "tool": "get-sum", "arguments": {"a": "two", "b": 3}})
    after = step("after", "mcp.execute", {"server": "everything", "tool": "echo", "arguments": {"message": "after"}})
    strict = create(acme, workflow("strict", [bad, after]))
    run = run_now(acme, strict)
    assert run.status == "failed" and run.output is None
    assert run.error.startswith("Step 'bad' (mcp.execute) failed: the tool reported an error:"), run.error
    assert "get-sum" in run.error
    assert [(s.step_id, s.status) for s in selectors.run_steps(run=run)] == [("bad", "failed")]

    unknown = create(acme, workflow("unknown-tool", [step("x", "mcp.execute", {"server": "everything", "tool": "no-such-tool"})]))
    run = run_now(acme, unknown)
    assert run.status == "failed" and "no-such-tool" in run.error, run.error

    lenient = create(acme, workflow("lenient", [
        {**bad, "continueOnError": True, "retries": 1},
        step("report", "mcp.execute", {"server": "everything", "tool": "echo", "arguments": {"message": "{{steps.bad.error}}"}}),
    ]))
    run = run_now(acme, lenient)
    assert run.status == "succeeded", run.error
    failed, report = selectors.run_steps(run=run)
    assert (failed.status, failed.attempts, failed.result) == ("failed", 2, None)
    assert report.status == "succeeded" and report.result == f"Echo: {failed.error}"


def test_a_tool_running_past_the_step_timeout_fails_in_time(acme):
    add_stdio_server(acme, everything_stdio())
    slow = create(acme, workflow("slow", [
        step("wait", "mcp.execute", {"server": "everything", "tool": "trigger-long-running-operation",
                                     "arguments": {"duration": 20, "steps": 4}}, timeout=1),
        step("never", "mcp.execute", {"server": "everything", "tool": "echo", "arguments": {"message": "x"}}),
    ]))
    run_now(acme, create(acme, echo_workflow()), {"who": "warm-up"})  # the server is up: time the call only
    started = time.monotonic()
    run = run_now(acme, slow)
    elapsed = time.monotonic() - started
    assert run.status == "failed", run.error
    assert "did not answer within 1 s" in run.error, run.error
    assert 0.9 <= elapsed < 3.0, elapsed
    (record,) = selectors.run_steps(run=run)
    assert record.status == "failed" and 900 <= record.duration_ms < 3000

    # The connection survives the abandoned call: the next run uses it at once.
    run = run_now(acme, selectors.workflow_get(tenant=acme.tenant, slug="echo"), {"who": "after"})
    assert run.status == "succeeded" and run.output == "Echo: hello after"
    # A finishing long operation within its timeout succeeds.
    quick = create(acme, workflow("quick", [step("wait", "mcp.execute", {
        "server": "everything", "tool": "trigger-long-running-operation", "arguments": {"duration": 0.3, "steps": 2}}, timeout=10)]))
    run = run_now(acme, quick)
    assert run.status == "succeeded" and "completed" in run.output.lower(), (run.error, run.output)


def test_a_killed_stdio_server_is_started_again_by_the_next_call(acme):
    add_stdio_server(acme, everything_stdio())
    wf = create(acme, echo_workflow())
    assert run_now(acme, wf, {"who": "one"}).output == "Echo: hello one"
    (first,) = everything_children()

    os.kill(first, signal.SIGKILL)
    wait_until(lambda: not alive(first), message="the server's death")

    run = run_now(acme, wf, {"who": "two"})
    assert run.status == "succeeded", run.error
    assert run.output == "Echo: hello two"
    (second,) = everything_children()
    assert second != first
    assert run_now(acme, wf, {"who": "three"}).output == "Echo: hello three"
    assert everything_children() == [second]  # reused again


def test_a_tenants_http_server_is_called_through_the_egress_guard(acme, everything_http, listener, settings):
    api = acme.client()
    for name, url in (("remote", everything_http.url), ("sink", f"http://127.0.0.1:{listener.port}/mcp")):
        made = api.post("/api/mcp-servers/", {"name": name, "transport": "http", "url": url, "timeout": 10}, format="json")
        assert made.status_code == 201, made.content
    remote = create(acme, echo_workflow("remote-echo", server="remote"))
    sink = create(acme, workflow("sink", [step("tools", "mcp.listTools", {"server": "sink"})]))

    # Not allowed: refused before any connection is made, with a message that says how to allow it.
    settings.BACKFLOW_EGRESS_ALLOW = []
    for wf in (remote, sink):
        run = run_now(acme, wf, {"who": "nobody"})
        assert run.status == "failed"
        assert "Refused to call '127.0.0.1'" in run.error and "BACKFLOW_EGRESS_ALLOW" in run.error, run.error
    assert listener.connections() == 0

    # Allowed by the operator: the same workflow reaches the server (a new connection, new policy).
    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]
    CLIENT.run(CLIENT.manager.close_all())
    run = run_now(acme, remote, {"who": "http"})
    assert run.status == "succeeded", run.error
    assert run.output == "Echo: hello http"
    tools = run_now(acme, create(acme, workflow("remote-tools", [step("t", "mcp.listTools", {"server": "remote"})])))
    assert "echo" in {t["name"] for t in tools.output}

    # A server that accepts the connection but never speaks MCP: the call fails within its timeout.
    api.patch("/api/mcp-servers/sink/", {"timeout": 1}, format="json")
    started = time.monotonic()
    run = run_now(acme, sink)
    assert run.status == "failed" and "sink" in run.error, run.error
    assert time.monotonic() - started < 8


def test_an_http_server_that_went_away_is_reconnected_when_back(acme, settings):
    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]
    server = EverythingHttp()
    try:
        services.mcp_server_create(tenant=acme.tenant, actor=acme.actor, document={"name": "remote", "url": server.url, "timeout": 5})
        wf = create(acme, echo_workflow(server="remote"))
        assert run_now(acme, wf, {"who": "up"}).output == "Echo: hello up"

        server.stop()
        down = run_now(acme, wf, {"who": "down"})
        assert down.status == "failed" and "MCP server 'remote'" in down.error, down.error

        server = EverythingHttp(port=server.port)  # back, with none of the old sessions
        wait_until(lambda: run_now(acme, wf, {"who": "back"}).status == "succeeded", timeout=10, interval=0.3,
                   message="a run after the server came back")
        assert run_now(acme, wf, {"who": "again"}).output == "Echo: hello again"
    finally:
        server.stop()


def test_header_secrets_reach_the_server_and_nothing_else(acme, settings):
    """A tenant's server header naming a stored secret: the server gets the value; runs, errors and
    the API never show it."""
    seen = []

    class Refusing(BaseHTTPRequestHandler):
        def do_POST(self):
            seen.append(self.headers.get("Authorization"))
            self.send_response(401)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    http = ThreadingHTTPServer(("127.0.0.1", 0), Refusing)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]
        api = acme.client()
        made = api.post("/api/mcp-servers/", {"name": "vault", "url": f"http://127.0.0.1:{http.server_address[1]}/mcp", "timeout": 5,
                                              "headers": {"Authorization": {"secret": "vault_token", "prefix": "Bearer "}}}, format="json")
        assert made.status_code == 201, made.content
        wf = create(acme, workflow("vault", [step("t", "mcp.listTools", {"server": "vault"})]))

        run = run_now(acme, wf)  # the secret does not exist yet
        assert run.status == "failed" and "vault_token" in run.error and seen == [], run.error

        integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name="vault_token", value="s3cr3t-vault-value")
        run = run_now(acme, wf)
        assert run.status == "failed" and "MCP server 'vault'" in run.error, run.error
        assert seen and set(seen) == {"Bearer s3cr3t-vault-value"}
        shown = str(api.get(f"/api/runs/{run.id}/").json()) + str(api.get("/api/mcp-servers/vault/").json())
        assert "s3cr3t-vault-value" not in shown and "s3cr3t-vault-value" not in run.error
    finally:
        http.shutdown()
        http.server_close()


def test_an_sse_server(acme, everything_sse, settings):
    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]
    made = acme.client().post("/api/mcp-servers/", {"name": "events", "transport": "sse", "url": everything_sse.url}, format="json")
    assert made.status_code == 201, made.content
    wf = create(acme, workflow("sse", [
        step("tools", "mcp.listTools", {"server": "events"}),
        step("sum", "mcp.execute", {"server": "events", "tool": "get-sum", "arguments": {"a": 20, "b": 22}}),
    ]))
    run = run_now(acme, wf)
    assert run.status == "succeeded", run.error
    assert run.output == "The sum of 20 and 22 is 42."
    assert "get-sum" in {t["name"] for t in selectors.run_steps(run=run)[0].result}


def test_stdio_env_placeholders_come_from_the_workers_environment(acme, monkeypatch):
    monkeypatch.setenv("BF_TEST_GREETING", "hello from the operator")
    add_stdio_server(acme, everything_stdio(env={"GREETING": "{{env.BF_TEST_GREETING}}", "PLAIN": "as is"}))
    wf = create(acme, workflow("env", [step("env", "mcp.execute", {"server": "everything", "tool": "get-env"})]))
    run = run_now(acme, wf)
    assert run.status == "succeeded", run.error
    assert '"GREETING": "hello from the operator"' in run.output and '"PLAIN": "as is"' in run.output
    assert "BF_TEST_GREETING" not in run.output  # only what the server was given, not the worker's whole environment

    monkeypatch.delenv("BF_TEST_GREETING")
    run = run_now(acme, wf)
    assert run.status == "failed"
    assert "environment variable BF_TEST_GREETING is not set" in run.error and "'everything'" in run.error, run.error


def test_a_server_that_is_not_installed_fails_its_step_clearly(acme):
    services.mcp_server_create(tenant=acme.tenant, actor=acme.actor, allow_stdio=True,
                               document={"name": "github", "command": "npx-not-installed", "args": ["-y", "@modelcontextprotocol/server-github"]})
    add_stdio_server(acme, everything_stdio())
    broken = create(acme, workflow("issues", [
        step("tools", "mcp.listTools", {"server": "github"}),
        step("never", "mcp.execute", {"server": "everything", "tool": "echo", "arguments": {"message": "x"}}),
    ]))
    started = time.monotonic()
    run = run_now(acme, broken)
    assert time.monotonic() - started < 5
    assert run.status == "failed"
    assert run.error == ("Step 'tools' (mcp.listTools) failed: Cannot connect to MCP server 'github': "
                         "FileNotFoundError: [Errno 2] No such file or directory: 'npx-not-installed'.")
    assert [s.step_id for s in selectors.run_steps(run=run)] == ["tools"]

    # Other servers and workflows keep working, and the broken one keeps failing clearly.
    ok = run_now(acme, create(acme, echo_workflow()), {"who": "still here"})
    assert ok.status == "succeeded" and ok.output == "Echo: hello still here"
    again = run_now(acme, broken)
    assert again.status == "failed" and "MCP server 'github'" in again.error and "npx-not-installed" in again.error

    # A server removed after the workflow was written: the run says which.
    services.mcp_server_create(tenant=acme.tenant, actor=acme.actor, document={"name": "gone", "url": "https://gone.example.com/mcp"})
    orphan = create(acme, workflow("orphan", [step("t", "mcp.listTools", {"server": "gone"})]))
    services.workflow_update(tenant=acme.tenant, actor=acme.actor, slug="orphan", changes={"description": "x"})
    McpServer.objects.for_tenant(acme.tenant).filter(name="gone").delete()
    run = run_now(acme, orphan)
    assert run.status == "failed" and "No MCP server named 'gone'" in run.error, run.error


def test_a_header_secret_that_no_longer_decrypts_is_named(acme):
    """The operator changed BACKFLOW_SECRETS_KEY: the server's connection fails naming the secret."""
    integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name="vault_token", value="t-1")
    Secret.objects.for_tenant(acme.tenant).filter(name="vault_token").update(
        ciphertext=Fernet(Fernet.generate_key()).encrypt(b"t-2").decode())
    services.mcp_server_create(tenant=acme.tenant, actor=acme.actor, document={
        "name": "vault", "url": "https://vault.example.com/mcp",
        "headers": {"Authorization": {"secret": "vault_token", "prefix": "Bearer "}}})
    with pytest.raises(McpClientError, match="the secret 'vault_token' cannot be decrypted.*BACKFLOW_SECRETS_KEY"):
        selectors.mcp_server_spec(selectors.mcp_server_get(tenant=acme.tenant, name="vault"))


def test_what_a_server_echoes_of_its_header_secret_is_scrubbed(acme, everything_http, settings):
    """A tenant's MCP server that repeats the credential it was sent (here: server-everything's echo
    tool, asked to) cannot put it in a run's output or an /agent/mcp answer."""
    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]
    integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name="vault_token", value="s3cr3t-echoed")
    api = acme.client()
    made = api.post("/api/mcp-servers/", {"name": "remote", "transport": "http", "url": everything_http.url, "timeout": 10,
                                          "headers": {"Authorization": {"secret": "vault_token", "prefix": "Bearer "}}}, format="json")
    assert made.status_code == 201, made.content
    run = run_now(acme, create(acme, echo_workflow("leaky", server="remote", message="{{input.text}}")), {"text": "s3cr3t-echoed"})
    assert run.status == "succeeded" and run.output == "Echo: [redacted]", (run.status, run.output, run.error)
    answer = api.post("/agent/mcp/execute", {"server": "remote", "tool": "echo", "arguments": {"message": "s3cr3t-echoed"}}, format="json")
    assert answer.status_code == 200 and "s3cr3t-echoed" not in answer.content.decode() and "[redacted]" in answer.content.decode()
