"""Issue 15, "Hostile peers": the platform trusted what its peers sent back.

Each test is the hostile peer's answer, sent by a loopback server the test starts (an upstream, an
OAuth token endpoint, an LLM, a tenant's MCP server over Streamable HTTP or SSE): a compression
bomb, a giant answer, NaN, deep nesting, an endless stream. Each asserts a clear error, a bounded
rise of this process's peak resident memory (VmHWM, reset before the call: hostile_peers.peak_rss_growth)
where the attack is about memory, and that nothing is lost (the run ends, the connection still
works, a legitimate answer still passes). Every net here has a test that fails when it is switched
off (docs/security.md, "Peer trust (issue 15)").
"""

import functools
import json
import re
import time
import uuid

import pytest
from django.core.cache import cache

from backflow import peer_bodies
from integrations_app import services as integration_services
from integrations_app.tests.test_runtime_helpers import *  # noqa: F403 (fixtures)
from integrations_app.tests.test_runtime_helpers import Reply, make_integration, make_route
from tests.security.hostile_peers import (
    MIB, ClosePeer, HostileMcp, deflate_bomb, endless, giant, gzip_bomb, peak_rss_growth, stacked_gzip_bomb, trickle,
)
from workflows_app import engine, selectors, services
from workflows_app.tests.helpers import close_connections, run_now, step, workflow

# What a call may add to the process's peak memory while refusing: generous (the caps are 5 MiB
# and 1 MiB; imports, threads and connections come on top), and far below what the hostile answers
# would take (200 MiB decoded, 300 MB read).
BOUND = 96 * MIB

ENDPOINTS = [{"name": name, "method": "get", "path": f"/{name}"} for name in
             ("stacked", "gzip", "deflate", "br", "nan", "inf", "big", "deep", "endless", "fine", "finegz", "finedeflate", "token")]


def route(ctx, name):
    return make_route(ctx, f"/{name}", [{"id": "call", "integration": "up", "action": name}], requireAuth=False)


def error_of(response, status=502):
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    return response.json()["error"]


@pytest.fixture(autouse=True)
def _fresh_mcp_connections():
    close_connections()
    yield
    close_connections()


@pytest.fixture
def hostile_upstream(acme, upstream):
    """An upstream whose endpoints answer as hostile peers do, integrated as `up` for acme."""
    zeros = {"Content-Type": "application/json"}
    upstream.on("GET", "/stacked", Reply(body=stacked_gzip_bomb(), headers={**zeros, "Content-Encoding": "gzip, gzip, gzip"}))
    upstream.on("GET", "/gzip", Reply(body=gzip_bomb(), headers={**zeros, "Content-Encoding": "gzip"}))
    upstream.on("GET", "/deflate", Reply(body=deflate_bomb(), headers={**zeros, "Content-Encoding": "deflate"}))
    upstream.on("GET", "/br", Reply(body=b"\x1b\x00\x00", headers={**zeros, "Content-Encoding": "br"}))
    upstream.on("GET", "/nan", Reply(body=b'{"a": NaN}'))
    upstream.on("GET", "/inf", Reply(body=b'{"a": [1, Infinity, 1e999]}'))
    upstream.on("GET", "/deep", Reply(body=b"[" * 100_000 + b"]" * 100_000))
    upstream.on("GET", "/big", lambda seen: Reply(body=giant(300 * MIB), length=300 * MIB))
    upstream.on("GET", "/fine", Reply(body={"kept": "every byte", "n": 1.5}))
    fine = json.dumps({"kept": "every byte", "n": 1.5}).encode()
    upstream.on("GET", "/finegz", Reply(body=__import__("gzip").compress(fine), headers={"Content-Encoding": "gzip"}))
    upstream.on("GET", "/finedeflate", Reply(body=__import__("zlib").compress(fine), headers={"Content-Encoding": "deflate"}))
    make_integration(acme, "up", upstream.url, ENDPOINTS)
    return upstream


def warm_up(inprocess, acme):
    """Imports, tables and the first connection, before memory is measured."""
    route(acme, "fine")
    assert inprocess.call("GET", "/t/acme/fine").status_code == 200


# -- 1. compression bombs and giant answers from an upstream --------------------------------------


def test_the_issues_stacked_gzip_bomb_is_refused_naming_the_encoding_in_bounded_memory(acme, hostile_upstream, inprocess):
    """273 bytes of `Content-Encoding: gzip, gzip, gzip` (200 MiB of zeros): daphne went from 820 MB
    to 1.2 GB before the cap answered; four parallel calls to a public route reached 1.8 GB."""
    assert len(stacked_gzip_bomb()) < 400
    warm_up(inprocess, acme)
    route(acme, "stacked")

    async def four(http):
        import asyncio
        return await asyncio.gather(*(http.get("/t/acme/stacked") for _ in range(4)))

    with peak_rss_growth() as peak:
        answers = inprocess.run(four)
    for answer in answers:
        error = error_of(answer)
        assert "action 'call' (up.stacked)" in error, error
        assert "stacked content encodings (Content-Encoding: gzip, gzip, gzip)" in error, error
    assert peak.bytes < BOUND, f"peak RSS rose {peak.bytes / MIB:.0f} MiB refusing four bombs"


@pytest.mark.parametrize("name, coding", [("gzip", "gzip"), ("deflate", "deflate")])
def test_a_single_layer_bomb_stops_at_the_cap_once_decompressed(acme, hostile_upstream, inprocess, name, coding):
    warm_up(inprocess, acme)
    route(acme, name)

    async def four(http):
        import asyncio
        return await asyncio.gather(*(http.get(f"/t/acme/{name}") for _ in range(4)))

    with peak_rss_growth() as peak:
        answers = inprocess.run(four)
    for answer in answers:
        error = error_of(answer)
        assert f"action 'call' (up.{name})" in error and "larger than 5242880 bytes once decompressed" in error, error
        assert f"({coding})" in error and "BACKFLOW_UPSTREAM_MAX_BYTES" in error, error
    assert peak.bytes < BOUND, f"peak RSS rose {peak.bytes / MIB:.0f} MiB refusing four {name} bombs"


def test_an_unknown_encoding_is_refused_naming_it(acme, hostile_upstream, inprocess):
    route(acme, "br")
    error = error_of(inprocess.call("GET", "/t/acme/br"))
    assert "action 'call' (up.br)" in error and "Content-Encoding 'br', which is not accepted" in error, error


def test_a_giant_answer_is_refused_unread_and_an_endless_one_at_the_cap(acme, hostile_upstream, inprocess):
    warm_up(inprocess, acme)
    route(acme, "big")
    with peak_rss_growth() as peak:
        error = error_of(inprocess.call("GET", "/t/acme/big"))
    assert "larger than 5242880 bytes (314572800 announced)" in error, error
    assert peak.bytes < BOUND
    assert hostile_upstream.streamed < 300 * MIB

    # No Content-Length to go by (the body ends when the connection does, or never): read up to
    # the cap, then refused; a slow one ends at the endpoint's timeout.
    endless_peer = ClosePeer({"Content-Type": "application/json"}, endless)
    slow_peer = ClosePeer({"Content-Type": "application/json"}, trickle)
    try:
        make_integration(acme, "far", endless_peer.url, [{"name": "endless", "method": "get", "path": "/"}])
        make_integration(acme, "slow", slow_peer.url, [{"name": "slow", "method": "get", "path": "/", "timeout": 1}])
        make_route(acme, "/endless", [{"id": "call", "integration": "far", "action": "endless"}], requireAuth=False)
        make_route(acme, "/slow", [{"id": "call", "integration": "slow", "action": "slow"}], requireAuth=False)
        started = time.monotonic()
        with peak_rss_growth() as peak:
            error = error_of(inprocess.call("GET", "/t/acme/endless"))
        assert error == "action 'call' (far.endless): the upstream answer is larger than 5242880 bytes; the limit is BACKFLOW_UPSTREAM_MAX_BYTES.", error
        assert peak.bytes < BOUND and time.monotonic() - started < 10
        error = error_of(inprocess.call("GET", "/t/acme/slow"), 504)
        assert error == "action 'call' (slow.slow): the upstream did not answer within 1 s (the endpoint's timeout).", error
        assert time.monotonic() - started < 10
    finally:
        endless_peer.stop()
        slow_peer.stop()


def test_legitimate_compressed_answers_still_pass_whole(acme, hostile_upstream, inprocess):
    for name in ("fine", "finegz", "finedeflate"):
        route(acme, name)
        response = inprocess.call("GET", f"/t/acme/{name}")
        assert response.status_code == 200, response.text
        assert response.json() == {"kept": "every byte", "n": 1.5}
    assert {seen.headers.get("accept-encoding") for seen in hostile_upstream.calls()} == {"gzip, deflate"}


# -- 3. NaN, Infinity and depth from an upstream ------------------------------------------------


@pytest.mark.parametrize("name, says", [
    ("nan", "NaN is not JSON (numbers must be finite)"),
    ("inf", "Infinity is not JSON (numbers must be finite)"),
    ("deep", "nested more than 64 levels deep (BACKFLOW_JSON_MAX_DEPTH)"),
])
def test_an_upstreams_bad_json_is_a_502_naming_the_action(acme, hostile_upstream, inprocess, name, says):
    """`{"a": NaN}` made the route answer invalid JSON; a 100 000-deep answer was a 500."""
    route(acme, name)
    response = inprocess.call("GET", f"/t/acme/{name}")
    error = error_of(response)
    assert f"action 'call' (up.{name})" in error and "the upstream said JSON but sent something else" in error, error
    assert says in error, error
    json.loads(response.text, parse_constant=lambda c: pytest.fail(f"the answer holds {c}"))


def test_a_workflow_step_on_an_upstreams_nan_fails_and_the_run_ends_failed(transactional_db, acme, hostile_upstream, settings):
    """As a workflow step, NaN failed the save and left the run `running` until the stale sweep."""
    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]
    wf = services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=workflow(
        "nan", [step("fetch", "nan"), step("after", "fine")],
        tools=[{"name": n, "type": "integration", "params": {"integration": "up", "action": n}} for n in ("nan", "fine")]))
    run = run_now(acme, wf)
    assert run.status == "failed", (run.status, run.error)
    assert run.error.startswith("Step 'fetch' (nan) failed: integration up: the upstream said JSON but sent something else: NaN"), run.error
    (record,) = selectors.run_steps(run=run)
    assert record.status == "failed" and record.result is None and "NaN is not JSON" in record.error


# -- OAuth token endpoints ----------------------------------------------------------------------


def _oauth_integration(acme, upstream, token_path):
    integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name="client_secret", value="cs-hostile-token")
    make_integration(acme, "up", upstream.url, ENDPOINTS, auth={
        "type": "oauth2_client_credentials", "tokenUrl": f"{upstream.url}{token_path}", "clientId": "c", "secret": "client_secret"})
    route(acme, "fine")
    cache.clear()


@pytest.mark.parametrize("reply, says", [
    (lambda: Reply(body=giant(300 * MIB), length=300 * MIB), "the OAuth token endpoint's answer is larger than 65536 bytes"),
    (lambda: Reply(body=endless(), length=10**12), "the OAuth token endpoint's answer is larger than 65536 bytes"),
    (lambda: Reply(body=gzip_bomb(), headers={"Content-Encoding": "gzip"}),
     "the OAuth token endpoint's answer is larger than 65536 bytes once decompressed (gzip)"),
    (lambda: Reply(body=stacked_gzip_bomb(), headers={"Content-Encoding": "gzip, gzip, gzip"}),
     "the OAuth token endpoint's answer has stacked content encodings (Content-Encoding: gzip, gzip, gzip)"),
    (lambda: Reply(body=b'{"access_token": "t", "expires_in": NaN}'), "acceptable JSON: NaN is not JSON"),
    (lambda: Reply(body=b"[" * 1000 + b"]" * 1000), "acceptable JSON: arrays and objects are nested more than 64"),
    (lambda: Reply(body={"access_token": "t\r\nX-Injected: 1"}), "without a usable access_token"),
    (lambda: Reply(body={"access_token": {"not": "text"}}), "without a usable access_token"),
])
def test_a_hostile_token_endpoint_is_a_502_in_bounded_memory(acme, upstream, inprocess, reply, says):
    """The token fetch of oauth2_client_credentials integrations had no cap at all."""
    upstream.on("POST", "/token", lambda seen: reply())
    _oauth_integration(acme, upstream, "/token")
    assert inprocess.call("GET", "/t/acme/warm-up").status_code == 404
    with peak_rss_growth() as peak:
        error = error_of(inprocess.call("GET", "/t/acme/fine"))
    assert "action 'call' (up.fine)" in error and says in error, error
    assert peak.bytes < BOUND, f"peak RSS rose {peak.bytes / MIB:.0f} MiB"
    assert not upstream.calls("/fine")


def test_a_token_answer_with_a_nonsense_lifetime_still_works(acme, upstream, inprocess):
    """`expires_in: "soon"` was a ValueError (500); now the token is kept the default 300 s."""
    upstream.on("POST", "/token", Reply(body={"access_token": "tok-1", "expires_in": "soon"}))
    _oauth_integration(acme, upstream, "/token")
    for _ in range(2):
        response = inprocess.call("GET", "/t/acme/fine")
        assert response.status_code == 200, response.text
    assert len(upstream.calls("/token")) == 1  # cached
    assert upstream.calls("/fine")[-1].headers["authorization"] == "Bearer tok-1"


# -- LLM answers ----------------------------------------------------------------------------------


def _llm_workflow(acme):
    return services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=workflow(
        "ask", [step("ask", "llm", {"prompt": "hello"}, timeout=3)], tools=[{"name": "llm", "type": "llm_call"}]))


def _completion(content):
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


@pytest.mark.parametrize("reply, says", [
    (lambda: Reply(body=giant(300 * MIB), length=300 * MIB), "The LLM's answer is larger than 5242880 bytes (314572800 announced)"),
    (lambda: Reply(body=gzip_bomb(), headers={"Content-Encoding": "gzip"}),
     "The LLM's answer is larger than 5242880 bytes once decompressed (gzip); the limit is BACKFLOW_UPSTREAM_MAX_BYTES."),
    (lambda: Reply(body=stacked_gzip_bomb(), headers={"Content-Encoding": "gzip, gzip, gzip"}),
     "The LLM's answer has stacked content encodings (Content-Encoding: gzip, gzip, gzip)"),
    (lambda: Reply(body=b'{"choices": [{"message": {"content": "hi"}}], "usage": {"cost": NaN}}'),
     "The LLM's answer is not acceptable JSON: NaN is not JSON"),
    (lambda: Reply(body=b"[" * 100_000), "The LLM's answer is not acceptable JSON: arrays and objects are nested more than 64"),
    (lambda: Reply(body=_completion({"nested": ["not", "text"]})), "choices[0].message.content is an object, not text"),
    (lambda: Reply(body=trickle(), length=10**6), "The LLM did not answer within 3 s"),
])
def test_a_hostile_llm_fails_the_step_clearly_in_bounded_memory(acme, upstream, settings, reply, says):
    settings.BACKFLOW_LLM_BASE_URL, settings.BACKFLOW_LLM_MODEL = f"{upstream.url}/v1", "m"
    upstream.on("POST", "/v1/chat/completions", lambda seen: reply())
    wf = _llm_workflow(acme)
    run_now(acme, wf)  # warm-up: imports, the background loop
    started = time.monotonic()
    with peak_rss_growth() as peak:
        run = run_now(acme, wf)
    assert run.status == "failed" and says in run.error, run.error
    assert peak.bytes < BOUND, f"peak RSS rose {peak.bytes / MIB:.0f} MiB"
    assert time.monotonic() - started < 8


def test_a_legitimate_llm_answer_still_passes(acme, upstream, settings):
    settings.BACKFLOW_LLM_BASE_URL, settings.BACKFLOW_LLM_MODEL = f"{upstream.url}/v1", "m"
    body = json.dumps(_completion("fine, thanks")).encode()
    upstream.on("POST", "/v1/chat/completions", Reply(body=__import__("gzip").compress(body), headers={"Content-Encoding": "gzip"}))
    run = run_now(acme, _llm_workflow(acme))
    assert run.status == "succeeded" and run.output == "fine, thanks", run.error


# -- 2. tenants' MCP servers over HTTP and SSE ---------------------------------------------------


@pytest.fixture
def hostile_mcp(settings):
    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]
    server = HostileMcp()
    yield server
    server.stop()


def _register(acme, name, url, transport="http", timeout=10):
    made = acme.client().post("/api/mcp-servers/", {"name": name, "transport": transport, "url": url, "timeout": timeout}, format="json")
    assert made.status_code == 201, made.content


def _execute(acme, server, tool):
    return acme.client().post("/agent/mcp/execute", {"server": server, "tool": tool}, format="json")


def _detail(answer, status=502):
    assert answer.status_code == status, answer.content[:500]
    return answer.json()["detail"]


def test_a_300_mb_json_answer_from_an_mcp_server_fails_the_call_in_bounded_memory(acme, hostile_mcp):
    """A 300 MB answer to tools/call came back whole from /agent/mcp/execute (1.9 GB peak)."""
    _register(acme, "big", hostile_mcp.url("/mcp"))
    assert _execute(acme, "big", "ok").json()["content"][0]["text"] == "ok"  # warm-up
    with peak_rss_growth() as peak:
        answer = _execute(acme, "big", "huge")
    detail = _detail(answer)
    assert detail == ("MCP server 'big': its answer is larger than 1048576 bytes; "
                      "the limit is BACKFLOW_MCP_MAX_MESSAGE_BYTES."), detail
    assert peak.bytes < BOUND, f"peak RSS rose {peak.bytes / MIB:.0f} MiB"
    assert hostile_mcp.streamed < 100 * MIB
    # Nothing lost: the connection still serves the next call.
    assert _execute(acme, "big", "ok").json()["content"][0]["text"] == "ok"


@pytest.mark.parametrize("tool, says", [
    ("bomb", "MCP server 'big': its answer is larger than 1048576 bytes once decompressed (gzip); "
             "the limit is BACKFLOW_MCP_MAX_MESSAGE_BYTES."),
    ("stacked", "MCP server 'big': its answer has stacked content encodings (Content-Encoding: gzip, gzip, gzip); "
                "only one of gzip or deflate is accepted."),
    ("bigevent", "MCP server 'big': its event stream holds an event larger than 1048576 bytes; "
                 "the limit is BACKFLOW_MCP_MAX_MESSAGE_BYTES."),
    ("endlessevent", "MCP server 'big': its event stream holds an event larger than 1048576 bytes; "
                     "the limit is BACKFLOW_MCP_MAX_MESSAGE_BYTES."),
])
def test_bombs_and_giant_events_from_an_mcp_server_over_http_fail_the_call(acme, hostile_mcp, tool, says):
    _register(acme, "big", hostile_mcp.url("/mcp"))
    assert _execute(acme, "big", "ok").status_code == 200  # warm-up
    started = time.monotonic()
    with peak_rss_growth() as peak:
        detail = _detail(_execute(acme, "big", tool))
    assert detail == says, detail
    assert peak.bytes < BOUND, f"peak RSS rose {peak.bytes / MIB:.0f} MiB"
    assert time.monotonic() - started < 8
    assert _execute(acme, "big", "ok").json()["content"][0]["text"] == "ok"


def test_an_sse_stream_is_counted_per_event_not_whole(acme, hostile_mcp):
    """40 events of 100 KB (4 MB in all) before the answer: every event is under the limit."""
    _register(acme, "chatty", hostile_mcp.url("/mcp"))
    answer = _execute(acme, "chatty", "manyevents")
    assert answer.status_code == 200, answer.content[:300]
    assert answer.json()["content"][0]["text"] == "after many events"


@pytest.mark.parametrize("tool, says", [
    ("huge", "MCP server 'old': its event stream holds an event larger than 1048576 bytes; "
             "the limit is BACKFLOW_MCP_MAX_MESSAGE_BYTES."),
    ("endlessevent", "MCP server 'old': its event stream holds an event larger than 1048576 bytes; "
                     "the limit is BACKFLOW_MCP_MAX_MESSAGE_BYTES."),
])
def test_the_sse_transport_fails_a_giant_event_clearly_and_reconnects(acme, hostile_mcp, tool, says):
    _register(acme, "old", hostile_mcp.url("/sse"), transport="sse")
    assert _execute(acme, "old", "ok").json()["content"][0]["text"] == "ok"
    with peak_rss_growth() as peak:
        detail = _detail(_execute(acme, "old", tool))
    assert detail == says, detail
    assert peak.bytes < BOUND
    assert _execute(acme, "old", "ok").json()["content"][0]["text"] == "ok"
    many = _execute(acme, "old", "manyevents")
    assert many.status_code == 200 and many.json()["content"][0]["text"] == "after many events", many.content[:300]


def test_the_message_limit_is_the_setting(acme, hostile_mcp, settings):
    settings.BACKFLOW_MCP_MAX_MESSAGE_BYTES = 50_000
    _register(acme, "small", hostile_mcp.url("/mcp"))
    detail = _detail(_execute(acme, "small", "manyevents"))
    assert detail == ("MCP server 'small': its event stream holds an event larger than 50000 bytes; "
                      "the limit is BACKFLOW_MCP_MAX_MESSAGE_BYTES."), detail


@pytest.mark.parametrize("tool, says", [
    ("nan", "MCP server 'odd' answered a result of 'nan' that is not acceptable JSON: NaN is not JSON (numbers must be finite)."),
    ("deep", "MCP server 'odd' answered a result of 'deep' that is not acceptable JSON: arrays and objects are nested more than 64 "
             "levels deep (BACKFLOW_JSON_MAX_DEPTH)."),
])
def test_nan_and_deep_results_from_an_mcp_server_are_refused(acme, hostile_mcp, tool, says):
    """The SDK's parser takes NaN, 1e999 and ~200 levels: /agent/mcp/execute turned NaN into null."""
    _register(acme, "odd", hostile_mcp.url("/mcp"))
    assert _detail(_execute(acme, "odd", tool)) == says


def test_a_tool_list_whose_cursor_never_ends_is_refused_and_pages_are_read(acme, hostile_mcp):
    hostile_mcp.pages = 0
    _register(acme, "pages", hostile_mcp.url("/mcp"))
    detail = _detail(acme.client().get("/agent/mcp/servers/pages/tools"))
    assert detail == ("MCP server 'pages' lists its tools over more than 20 pages (its cursor does not end); "
                      "the platform reads at most that many."), detail
    # Nothing lost: a list of three pages is read whole (the client's cursor argument was a TypeError).
    hostile_mcp.pages = 3
    _register(acme, "paged", hostile_mcp.url("/mcp"))
    tools = acme.client().get("/agent/mcp/servers/paged/tools")
    assert tools.status_code == 200, tools.content
    assert sorted(tool["name"] for tool in tools.json()["tools"]) == sorted(HostileMcp.TOOLS)


# -- step results ---------------------------------------------------------------------------------


def _mcp_workflow(acme, *tools, continue_on_error=False):
    return services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=workflow(
        f"mcp-{uuid.uuid4().hex[:8]}", [step(tool, "mcp.execute", {"server": "srv", "tool": tool}, continueOnError=continue_on_error) for tool in tools]))


def test_a_step_result_over_the_limit_fails_the_step_naming_size_and_setting(acme, hostile_mcp, settings):
    """As a workflow step, a 20 MB answer was stored twice (step result and run output)."""
    settings.BACKFLOW_STEP_RESULT_MAX_BYTES = 100_000
    _register(acme, "srv", hostile_mcp.url("/mcp"))
    run = run_now(acme, _mcp_workflow(acme, "ok", "medium"))
    assert run.status == "failed" and run.output is None, run.error
    first, second = selectors.run_steps(run=run)
    assert first.status == "succeeded" and first.result == "ok"
    assert second.status == "failed" and second.result is None
    assert re.match(r"the result is \d{6} bytes of JSON, more than BACKFLOW_STEP_RESULT_MAX_BYTES \(100000\)", second.error), second.error
    assert run.error == f"Step 'medium' (mcp.execute) failed: {second.error}"

    settings.BACKFLOW_STEP_RESULT_MAX_BYTES = 1024 * 1024  # the default: the same result is stored, once, and as the output
    run = run_now(acme, _mcp_workflow(acme, "medium"))
    assert run.status == "succeeded", run.error
    (record,) = selectors.run_steps(run=run)
    assert record.result == run.output == {"rows": ["r" * 1000] * 300}


@pytest.mark.parametrize("tool, says", [
    ("nan", "NaN is not JSON"), ("deep", "nested more than 64 levels deep"),
    ("huge", "its answer is larger than 1048576 bytes"), ("bomb", "once decompressed (gzip)"),
])
def test_hostile_mcp_answers_fail_their_step_and_the_run_ends(acme, hostile_mcp, tool, says):
    _register(acme, "srv", hostile_mcp.url("/mcp"))
    run = run_now(acme, _mcp_workflow(acme, tool, "ok", continue_on_error=True))
    assert run.status == "succeeded" and run.output == "ok", run.error  # continueOnError: the next step ran
    failed, ok = selectors.run_steps(run=run)
    assert failed.status == "failed" and says in failed.error and failed.result is None, failed.error
    assert ok.status == "succeeded"
    run = run_now(acme, _mcp_workflow(acme, tool))
    assert run.status == "failed" and says in run.error, run.error


def _peer_workflow(acme, **extra):
    return services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=workflow(
        "peer", [step("s", "llm", {"prompt": "p"}, **extra)], tools=[{"name": "llm", "type": "llm_call"}]))


class _Peer:
    """A step action whose result is what a hostile peer's parser let through."""

    def __init__(self, value):
        self.value = value

    def __call__(self, action, params, timeout):
        return self.value


@pytest.mark.parametrize("value, says", [
    ({"a": float("nan")}, "the result is not storable JSON: NaN is not JSON (numbers must be finite)."),
    ([float("inf")], "the result is not storable JSON: Infinity is not JSON (numbers must be finite)."),
    (json.loads("[" * 150 + "]" * 150), "the result is not storable JSON: arrays and objects are nested more than 64 levels deep"),
    (functools.reduce(lambda inner, _: [inner], range(100_000), []),
     "the result is not storable JSON: arrays and objects are nested more than 64 levels deep"),
])
def test_jsonable_refuses_what_postgresql_and_json_cannot_hold(acme, monkeypatch, value, says):
    """The engine's own net (_jsonable), whatever the step kind: not retried, the run ends failed."""
    monkeypatch.setattr(engine.RunContext, "call", _Peer(value))
    wf = _peer_workflow(acme, retries=2)
    run = run_now(acme, wf)
    assert run.status == "failed", run.status
    (record,) = selectors.run_steps(run=run)
    assert record.status == "failed" and record.error.startswith(says) and record.attempts == 1, record.error


def test_a_step_record_the_database_refuses_fails_the_run_instead_of_leaving_it_running(acme, monkeypatch):
    """The net behind _jsonable: with it switched off, NaN reaches the database, which refuses the
    record (SQLite's JSON_VALID check, PostgreSQL's jsonb); the step and the run end failed."""
    monkeypatch.setattr(engine.RunContext, "call", _Peer({"a": float("nan")}))
    monkeypatch.setattr(engine, "_jsonable", lambda value: value)
    wf = _peer_workflow(acme)
    run = run_now(acme, wf)
    assert run.status == "failed", run.status
    assert run.error.startswith("Step 's' (llm) failed: the step's result could not be stored ("), run.error
    (record,) = selectors.run_steps(run=run)
    assert record.status == "failed" and record.result is None


def test_a_fault_of_ours_ends_the_run_failed(acme, monkeypatch):
    def broken(*args):
        raise RuntimeError("a bug")

    monkeypatch.setattr(engine, "_run_step", broken)
    wf = _peer_workflow(acme)
    run = run_now(acme, wf)
    assert run.status == "failed" and run.error == "internal error (RuntimeError); the operator's log has the details", run.error


# -- the bounded reader itself ------------------------------------------------------------------


def test_the_decoder_never_produces_more_than_a_piece_at_a_time():
    import asyncio

    async def one(data):
        yield data

    async def collect(data, encoding, limit):
        sizes = []
        async for piece in peer_bodies.decoded_chunks(one(data), content_encoding=encoding, limit=limit, what="it"):
            sizes.append(len(piece))
        return sizes

    sizes = asyncio.run(collect(gzip_bomb(8), "gzip", 10 * MIB))
    assert sum(sizes) == 8 * MIB and max(sizes) <= peer_bodies.PIECE
    with pytest.raises(peer_bodies.PeerBodyTooLarge, match="it is larger than 1000 bytes once decompressed"):
        asyncio.run(collect(gzip_bomb(8), "gzip", 1000))
    with pytest.raises(peer_bodies.PeerEncodingRefused, match="stacked"):
        asyncio.run(collect(b"", "gzip, identity, deflate", 1000))
    assert asyncio.run(collect(b"", "identity", 1000)) == []
