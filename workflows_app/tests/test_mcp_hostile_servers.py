"""Issue 14: a tenant's own MCP server is hostile.

- It repeats the stored secret it is sent (its Authorization header) in every error it can make: a
  tool result with isError, a JSON-RPC error, a body the client cannot parse (whose parse error
  quotes it, truncated), a failed tool list, an SSE `endpoint` event. The secret reaches no answer
  of /agent/mcp/*, no run or step record and no log line (at DEBUG, the SDK's own included).
- An SSE server that opens its stream and never sends its `endpoint` event: every door answers
  with a clear error naming the server and the timeout, in time.

Real loopback servers (hostile_mcp.EchoingMcp) behind the egress guard, which the tests allow for
127.0.0.1 only.
"""

import json
import logging
import time
import uuid

import pytest

from integrations_app import services as integration_services
from workflows_app import selectors, services
from workflows_app.tests.helpers import run_now, step, workflow
from workflows_app.tests.hostile_mcp import EchoingMcp


@pytest.fixture
def echoer(settings):
    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]
    server = EchoingMcp()
    yield server
    server.stop()


def _register(api, name, url, transport="http", timeout=5):
    made = api.post("/api/mcp-servers/", {"name": name, "transport": transport, "url": url, "timeout": timeout,
                                          "headers": {"Authorization": {"secret": "vault_token", "prefix": "Bearer "}}}, format="json")
    assert made.status_code == 201, made.content
    return made


def _leaked(secret, text):
    """Whether `text` holds the secret, whole, URL-encoded, or a quarter or more of it in one piece."""
    piece = len(secret) // 4
    return secret in text or any(secret[i:i + piece] in text for i in range(len(secret) - piece + 1))


def test_a_server_echoing_its_secret_in_errors_leaks_it_nowhere(acme, echoer, caplog):
    caplog.set_level(logging.DEBUG)
    secret = f"sk-vault-{uuid.uuid4().hex}{uuid.uuid4().hex}"
    integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name="vault_token", value=secret)
    api = acme.client()
    _register(api, "echoer", echoer.url("/mcp"))
    _register(api, "nolist", echoer.url("/no-list"))
    _register(api, "leaky-sse", echoer.url("/sse-leak"), transport="sse", timeout=3)
    shown = []

    # /agent/mcp/execute: (a) isError, (b) a JSON-RPC error, (c) a body the client cannot parse.
    failed = api.post("/agent/mcp/execute", {"server": "echoer", "tool": "fail"}, format="json")
    assert failed.status_code == 200 and failed.json()["isError"] is True, failed.content
    assert failed.json()["content"][0]["text"] == "denied for Bearer [redacted]"
    refused = api.post("/agent/mcp/execute", {"server": "echoer", "tool": "refuse"}, format="json")
    assert refused.status_code == 502 and refused.json()["detail"].startswith("MCP server 'echoer' refused the call: unknown credential"), refused.content
    garbled = api.post("/agent/mcp/execute", {"server": "echoer", "tool": "garble"}, format="json")
    assert garbled.status_code == 502 and "Failed to parse JSON response" in garbled.json()["detail"], garbled.content
    for answer in (failed, refused, garbled):
        assert "[redacted]" in answer.content.decode()  # the server did echo it, and it was scrubbed
        shown.append(answer.content.decode())

    # (d) tool lists: described with the secret, or failing with it; an SSE endpoint carrying it.
    tools = api.get("/agent/mcp/servers/echoer/tools")
    assert tools.status_code == 200 and tools.json()["tools"][0]["description"] == "fails, quoting Bearer [redacted]", tools.content
    no_list = api.get("/agent/mcp/servers/nolist/tools")
    assert no_list.status_code == 502 and "cannot list tools for Bearer [redacted]" in no_list.json()["detail"], no_list.content
    servers = api.get("/agent/mcp/servers")
    assert servers.status_code == 200
    listed = {s["name"]: s for s in servers.json()["servers"]}
    assert listed["echoer"] == {"name": "echoer", "connected": True, "tools": 3}
    assert listed["nolist"]["connected"] is False and "cannot list tools for Bearer [redacted]" in listed["nolist"]["error"]
    # The SDK refuses the other origin and then waits (it only logs why): the connection times out.
    assert listed["leaky-sse"]["connected"] is False and "no usable `endpoint` event within 3 s" in listed["leaky-sse"]["error"], listed
    shown += [tools.content.decode(), no_list.content.decode(), servers.content.decode()]

    # The same through the engine: every step fails (and says why), the run fails on the last one.
    wf = services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=workflow("hostile", [
        step("fail", "mcp.execute", {"server": "echoer", "tool": "fail"}, continueOnError=True),
        step("refuse", "mcp.execute", {"server": "echoer", "tool": "refuse"}, continueOnError=True),
        step("garble", "mcp.execute", {"server": "echoer", "tool": "garble"}, continueOnError=True),
        step("tools", "mcp.listTools", {"server": "echoer"}, continueOnError=True),
        step("sse", "mcp.listTools", {"server": "leaky-sse"}, continueOnError=True),
        step("nolist", "mcp.listTools", {"server": "nolist"}),
    ]))
    run = run_now(acme, wf)
    assert run.status == "failed" and run.error.startswith("Step 'nolist' (mcp.listTools) failed: MCP server 'nolist' refused"), run.error
    records = selectors.run_steps(run=run)
    assert [(r.step_id, r.status) for r in records] == [
        ("fail", "failed"), ("refuse", "failed"), ("garble", "failed"), ("tools", "succeeded"), ("sse", "failed"), ("nolist", "failed")]
    assert all("[redacted]" in (r.error or json.dumps(r.result)) for r in records if r.step_id != "sse"), [(r.error, r.result) for r in records]
    assert "'leaky-sse'" in records[4].error and "`endpoint` event within 3 s" in records[4].error, records[4].error
    shown += [json.dumps(run.to_document(records)), run.error]

    assert echoer.seen and {seen for seen in echoer.seen if seen} == {f"Bearer {secret}"}  # the server did get it
    logged = caplog.text + "\n".join(r.getMessage() for r in caplog.records)
    # The SDK logged the server's answers and its refusal of the SSE endpoint, scrubbed.
    assert "Received" in logged and "Endpoint origin does not match connection origin: http://elsewhere.invalid/messages?auth=Bearer%20[redacted]" in logged
    for text in (*shown, logged):
        assert not _leaked(secret, text), text


def test_an_sse_server_that_never_sends_its_endpoint_event_fails_clearly_everywhere(acme, echoer):
    integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name="vault_token", value=f"sk-{uuid.uuid4().hex}")
    api = acme.client()
    _register(api, "silent", echoer.url("/sse-silent"), transport="sse", timeout=2)
    expected = "Cannot connect to MCP server 'silent': no usable `endpoint` event within 2 s"

    started = time.monotonic()
    servers = api.get("/agent/mcp/servers")
    assert servers.status_code == 200, servers.content
    (listed,) = servers.json()["servers"]
    assert listed["connected"] is False and listed["error"].startswith(expected), listed
    assert time.monotonic() - started < 5

    time.sleep(0.6)  # past the reconnect back-off: each door makes its own attempt
    started = time.monotonic()
    executed = api.post("/agent/mcp/execute", {"server": "silent", "tool": "echo"}, format="json")
    assert executed.status_code == 502 and executed.json()["detail"].startswith(expected), executed.content
    assert time.monotonic() - started < 5

    time.sleep(1.1)
    tools = api.get("/agent/mcp/servers/silent/tools")
    assert tools.status_code == 502 and tools.json()["detail"].startswith(expected), tools.content

    time.sleep(2.1)
    wf = services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=workflow("silent", [
        step("call", "mcp.execute", {"server": "silent", "tool": "echo"})]))
    run = run_now(acme, wf)
    assert run.status == "failed" and run.error.startswith(f"Step 'call' (mcp.execute) failed: {expected}"), run.error


def test_a_step_timeout_shorter_than_the_servers_bounds_the_wait_for_the_endpoint_event(acme, echoer):
    integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name="vault_token", value=f"sk-{uuid.uuid4().hex}")
    _register(acme.client(), "silent", echoer.url("/sse-silent"), transport="sse", timeout=60)
    wf = services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=workflow("impatient", [
        step("call", "mcp.execute", {"server": "silent", "tool": "echo"}, timeout=1)]))
    started = time.monotonic()
    run = run_now(acme, wf)
    assert time.monotonic() - started < 4
    assert run.status == "failed" and run.error == (
        "Step 'call' (mcp.execute) failed: Cannot connect to MCP server 'silent': no usable `endpoint` event within 1 s (an SSE "
        "server sends it first, as soon as the stream opens; is the url the server's SSE endpoint?)."), run.error
