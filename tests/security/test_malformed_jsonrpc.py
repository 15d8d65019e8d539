"""Malformed JSON-RPC on every MCP transport: stdio, SSE and Streamable HTTP.

One table (CASES) of bad frames goes, byte for byte, to a real `manage.py mcp_stdio` child (one
line on its stdin), to a real daphne's SSE session (POST /mcp/messages) and to its Streamable
HTTP endpoint (POST /mcp). Each frame must get exactly the answer JSON-RPC 2.0 and MCP prescribe:

- -32700 parse error (not JSON, bad UTF-8, NaN, nesting deeper than the parser takes), -32600
  invalid request (not one object: numbers, strings, null, arrays and batches, which MCP dropped
  in 2025-06-18; a wrong "jsonrpc", a missing or non-string "method", an id that is not a string
  or an integer), -32601 unknown method, -32602 invalid params; with the request's id whenever it
  can be read, `null` otherwise;
- nothing at all for notifications and client responses (JSON-RPC never answers those);
- a tool result with isError for a call of an unknown tool or with bad arguments (CONTRACT), and
  an ordinary answer for frames that are odd but valid (duplicate keys: the last one wins, as in
  the SDK's parser; an unknown extra member; an id beyond 64 bits; CRLF);
- on HTTP, frames refused before they reach the server get 400 with that JSON-RPC error as the
  body; the others are answered like any request (200 on /mcp, 202 + the stream on SSE).

After every frame the same stdio process, the same SSE session and the same keep-alive HTTP client
still answer `tools/list` (and, at the end, `tools/call`): nothing crashes, hangs, answers 500,
drops the session, writes anything but protocol to stdout, puts a Python traceback on the wire or
in the server's log. HTTP_CASES add what only HTTP has: content types, Accept, methods, session
ids, body sizes and headers, each a 4xx with a body that says what to fix.

One stdio child and one daphne serve the whole module (starting them takes seconds).
"""

import json
import re
import socket
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
from anyio.from_thread import start_blocking_portal
from django.conf import settings
from django.core.management import call_command

from mcp_app.tests.helpers import LocalSite
from mcp_app.tests.test_remote_support import (
    RawSse,
    bearer,
    handshake,
    initialize,
    post_json,
    raw_client,
    raw_sse,
    rpc,
)
from mcp_app.tests.test_stdio_protocol import RawServer
from tenants import services as tenant_services
from tenants.principals import Principal
from tenants.tests.oauth_helpers import ACCEPT_MCP, _stop_before_the_database_goes
from tests.live import Daphne

PARSE_ERROR, INVALID_REQUEST, METHOD_NOT_FOUND, INVALID_PARAMS = -32700, -32600, -32601, -32602
LIMIT = settings.DATA_UPLOAD_MAX_MEMORY_SIZE  # the children read the same setting from the same environment
REPLY_TIMEOUT = 10  # seconds: a frame that gets no answer in this time counts as a hang
TRACEBACK = re.compile(r"Traceback \(most recent call last\)|File \"[^\"]+\.py\", line \d+")
TRANSPORTS = ("stdio", "sse", "http")

# The servers' rows are made once per module (api_key) and committed. transaction=True: no test
# holds a transaction (on SQLite, Django's BEGIN IMMEDIATE would lock the servers' audit writes
# out); available_apps=["mcp_app"], an app without tables, so the flush after each test leaves
# the module's rows alone (api_key flushes everything at the end).
pytestmark = pytest.mark.django_db(transaction=True, available_apps=["mcp_app"])


# -- the table -------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """One bad frame and the answer it must get. `code` None: a result (or, with answered=False,
    no answer at all); `before_dispatch`: refused before the MCP server sees it (HTTP 400)."""

    name: str
    body: bytes
    code: int | None = None
    id: object = None
    answered: bool = True
    before_dispatch: bool = True
    tool_error: bool = False  # the result must be a tool result with isError: true
    result_key: str | None = None  # the result must hold this key
    http_status: int | None = None  # on HTTP transports: this status instead of a JSON-RPC answer
    stdio: tuple = ()  # field overrides on stdio, where framing differs (one line is one message)

    def on(self, transport):
        return replace(self, **dict(self.stdio)) if transport == "stdio" else self


def raw(message):
    return json.dumps(message).encode()


def request(method, params=None, id="bad"):
    return raw(rpc(method, params, id=id))


def call(name, arguments=None, id="bad", **extra):
    params = {"name": name, **({"arguments": arguments} if arguments is not None else {}), **extra}
    return request("tools/call", params, id=id)


def deep(depth):
    return b'{"jsonrpc":"2.0","id":"deep","method":"tools/call","params":{"name":"list_integrations","arguments":{"x":' + \
        b"[" * depth + b"]" * depth + b"}}}"


def parse_error(name, body, **kw):
    return Case(name, body, code=PARSE_ERROR, **kw)


def invalid(name, body, id=None, **kw):
    return Case(name, body, code=INVALID_REQUEST, id=id, **kw)


def unanswered(name, body, **kw):
    return Case(name, body, answered=False, before_dispatch=False, **kw)


def served(name, body, id="bad", **kw):
    """Reaches the server and is answered there (200 on /mcp, 202 + the stream on SSE)."""
    return Case(name, body, id=id, before_dispatch=False, **kw)


OVERSIZED = call("list_integrations", {"pad": "x" * LIMIT}, id="huge")

CASES = [
    # Not JSON at all (the id cannot be read, so the answer's is null).
    parse_error("not json", b"hello, server"),
    parse_error("truncated", request("tools/list")[:-7]),
    parse_error("two messages on one line", request("ping", id=1) + request("ping", id=2)),
    parse_error("invalid utf-8", b'{"jsonrpc":"2.0","id":"u","method":"tools/call","params":{"name":"\xff\xfe"}}'),
    parse_error("overlong utf-8 slash", b'{"jsonrpc":"2.0","id":"u","method":"tools\xc0\xaflist"}'),
    parse_error("raw NUL inside a string", b'{"jsonrpc":"2.0","id":"n","method":"tools/li\x00st"}'),
    parse_error("raw NUL after the message", request("tools/list") + b"\x00"),
    parse_error("NaN is not JSON", b'{"jsonrpc":"2.0","id":"nan","method":"tools/call","params":'
                                   b'{"name":"list_integrations","arguments":{"limit":NaN}}}'),
    parse_error("nested 100000 deep", deep(100_000)),
    parse_error("nested 1000 deep", deep(1000)),
    parse_error("empty", b"", stdio=(("answered", False), ("before_dispatch", False))),  # stdio: a blank line is no message
    # JSON, but not one JSON-RPC object.
    invalid("number", b"42"),
    invalid("string", b'"tools/list"'),
    invalid("null", b"null"),
    invalid("true", b"true"),
    invalid("empty object", b"{}"),
    invalid("empty array", b"[]"),
    invalid("batch of requests", b"[" + request("tools/list", id="b1") + b"," + request("ping", id="b2") + b"]"),
    invalid("batch of one notification", b"[" + raw(rpc("notifications/initialized")) + b"]"),
    # The envelope is wrong; the id is echoed when it is a string or an integer.
    invalid("no jsonrpc member", raw({"id": "v", "method": "tools/list"}), id="v"),
    invalid("jsonrpc 1.0", raw({"jsonrpc": "1.0", "id": "v", "method": "tools/list"}), id="v"),
    invalid("jsonrpc as a number", raw({"jsonrpc": 2.0, "id": 7, "method": "tools/list"}), id=7),
    invalid("no method", raw({"jsonrpc": "2.0", "id": "m"}), id="m"),
    invalid("method is a number", raw({"jsonrpc": "2.0", "id": "m", "method": 42}), id="m"),
    invalid("method is null", raw({"jsonrpc": "2.0", "id": "m", "method": None}), id="m"),
    invalid("method is an object", raw({"jsonrpc": "2.0", "id": "m", "method": {"name": "tools/list"}}), id="m"),
    invalid("id is an object", raw({"jsonrpc": "2.0", "id": {"n": 1}, "method": "tools/list"})),
    invalid("id is an array", raw({"jsonrpc": "2.0", "id": [1], "method": "tools/list"})),
    invalid("id is a float", raw({"jsonrpc": "2.0", "id": 1.5, "method": "tools/list"})),
    invalid("id is 1.0", b'{"jsonrpc":"2.0","id":1.0,"method":"tools/list"}'),
    invalid("id is true", raw({"jsonrpc": "2.0", "id": True, "method": "tools/list"})),
    invalid("id is null", raw({"jsonrpc": "2.0", "id": None, "method": "tools/list"})),
    invalid("params is a string", raw({"jsonrpc": "2.0", "id": "p", "method": "tools/list", "params": "all"}), id="p"),
    invalid("params is a number", raw({"jsonrpc": "2.0", "id": 9, "method": "tools/call", "params": 1}), id=9),
    # JSON-RPC allows positional params; MCP methods take named ones.
    Case("params is an array", raw({"jsonrpc": "2.0", "id": "p", "method": "tools/list", "params": []}),
         code=INVALID_PARAMS, id="p"),
    invalid("too big", OVERSIZED, http_status=413),
    # Well-formed requests the server itself refuses.
    served("unknown method", request("tools/destroy", {}), code=METHOD_NOT_FOUND),
    served("empty method name", request("", id=11), code=METHOD_NOT_FOUND, id=11),
    served("tools/call without params", request("tools/call"), code=INVALID_PARAMS),
    served("tools/call with null params", raw({"jsonrpc": "2.0", "id": "bad", "method": "tools/call", "params": None}),
           code=INVALID_PARAMS),
    served("tools/call without a name", request("tools/call", {"arguments": {}}), code=INVALID_PARAMS),
    served("tools/call with a numeric name", call(42), code=INVALID_PARAMS),
    served("arguments is an array", call("list_integrations", ["x"]), code=INVALID_PARAMS),
    served("arguments is a string", call("list_integrations", "{}"), code=INVALID_PARAMS),
    served("initialize params wrong", request("initialize", {"protocolVersion": 2025}), code=INVALID_PARAMS),
    # Refused calls are tool results that say what to fix (CONTRACT), not protocol errors.
    served("unknown tool", call("drop_all_tables", {}), tool_error=True),
    served("escaped NUL in the tool name", call("list_integrations\u0000", {}), tool_error=True),
    served("escaped NUL in an argument", call("get_route", {"path": "/a\u0000b", "method": "get"}), tool_error=True),
    served("arguments the schema refuses", call("get_route", {"path": ["/"], "method": 1}), tool_error=True),
    # Valid after all: the answer is an ordinary result.
    served("duplicate method: the last wins", b'{"jsonrpc":"2.0","id":"dup","method":"tools/destroy","method":"tools/list"}',
           id="dup", result_key="tools"),
    served("duplicate id: the last wins", b'{"jsonrpc":"2.0","id":{"x":1},"method":"tools/list","id":"dup2"}',
           id="dup2", result_key="tools"),
    served("unknown extra member", raw({**rpc("tools/list", id="x"), "extra": True}), id="x", result_key="tools"),
    served("integer id beyond 64 bits", request("tools/list", id=2**70 + 1), id=2**70 + 1, result_key="tools"),
    served("CR before the newline", request("ping", id="cr") + b"\r", id="cr", result_key=None),
    # Notifications and client responses: never answered (HTTP: 202 and no body).
    unanswered("unknown notification", raw(rpc("notifications/bogus", {"x": 1}))),
    unanswered("request method without an id", raw(rpc("tools/call", {"name": "delete_integration"}))),
    unanswered("notification with positional params", raw(rpc("notifications/bogus", [1, 2]))),
    unanswered("response nobody asked for", raw({"jsonrpc": "2.0", "id": "r", "result": {}})),
    unanswered("malformed response", raw({"jsonrpc": "2.0", "id": "r", "result": "yes"})),
    unanswered("error response with null id", raw({"jsonrpc": "2.0", "id": None, "error": {"code": -1, "message": "x"}})),
]


# -- transports -----------------------------------------------------------------------------------

@dataclass
class Reply:
    status: int | None  # HTTP status; None on stdio
    message: dict | None  # the JSON-RPC answer, if one came
    text: str  # every byte the client was sent for this frame, for the traceback check


class LogWatch:
    """The part of a server's log written since the last look."""

    def __init__(self, path):
        self.path, self.offset = Path(path), 0

    def new_text(self):
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        self.offset += len(data)
        return data.decode("utf-8", "replace")


class StdioWire:
    """A `mcp_stdio` child in local mode, spoken to one raw line at a time (RawServer)."""

    name = "stdio"

    def __init__(self, server, log):
        self.server, self.log, self.next_id = server, log, 1000
        self.before_initialize = self.call("tools/list")  # recorded for test_request_before_initialize
        assert self.call("initialize", initialize()["params"]).get("result"), "the handshake failed"
        self.server.send(rpc("notifications/initialized"))

    def next_message(self):
        message = self.server._messages.get(timeout=REPLY_TIMEOUT)  # raises queue.Empty: a hang
        assert message is not None, f"stdout carried something that is not JSON: {self.server.lines[-1]!r}"
        assert message.get("jsonrpc") == "2.0", f"stdout carried something that is not JSON-RPC: {message}"
        return message

    def send(self, body, expect_answer):
        self.server.send_raw(body + b"\n")
        if not expect_answer:
            return Reply(None, None, "")
        message = self.next_message()
        return Reply(None, message, json.dumps(message))

    def call(self, method, params=None):
        """A valid request; its answer must be the very next message (nothing stray before it)."""
        self.next_id += 1
        self.server.send(rpc(method, params, id=self.next_id))
        message = self.next_message()
        assert message.get("id") == self.next_id, f"expected the answer to {method} #{self.next_id}, got {message}"
        return message


class SseWire:
    """One SSE session of daphne: POST /mcp/messages, answers on the stream (RawSse)."""

    name = "sse"

    def __init__(self, portal, http, stream, key, log):
        self.portal, self.http, self.stream, self.key, self.log, self.next_id = portal, http, stream, key, log, 1000
        self.before_initialize = self.call("tools/list")
        portal.call(handshake, http, stream, key)

    def post(self, body):
        return self.portal.call(lambda: post_json(self.http, self.stream.endpoint, body, self.key))

    def send(self, body, expect_answer):
        response = self.post(body)
        if response.status_code == 202 and expect_answer:
            event = self.portal.call(self.stream.event, REPLY_TIMEOUT)
            assert event.name == "message", event
            return Reply(202, event.json(), response.text + event.data)
        return Reply(response.status_code, _json_or_none(response.content), response.text)

    def call(self, method, params=None):
        self.next_id += 1
        response = self.post(rpc(method, params, id=self.next_id))
        assert response.status_code == 202, (response.status_code, response.text)
        message = self.portal.call(self.stream.event, REPLY_TIMEOUT).json()
        assert message.get("id") == self.next_id, f"expected the answer to {method} #{self.next_id}, got {message}"
        return message


class HttpWire:
    """Stateless Streamable HTTP: every frame a POST /mcp on one keep-alive client."""

    name = "http"

    def __init__(self, portal, http, key, log):
        self.portal, self.http, self.key, self.log, self.next_id = portal, http, key, log, 1000
        self.before_initialize = self.call("tools/list")  # stateless: there is no handshake to wait for

    def request(self, method, path="/mcp", body=b"", headers=None):
        all_headers = {"Content-Type": "application/json", "Accept": ACCEPT_MCP, **bearer(self.key), **(headers or {})}
        return self.portal.call(lambda: self.http.request(method, path, content=body, headers=all_headers, timeout=REPLY_TIMEOUT))

    def send(self, body, expect_answer):
        response = self.request("POST", body=body)
        return Reply(response.status_code, self.answer_of(response), response.text)

    def answer_of(self, response):
        """The JSON-RPC message in a JSON or an SSE response; None for an empty body."""
        if response.headers.get("content-type", "").startswith("text/event-stream"):
            event = self.portal.call(RawSse(response).event, REPLY_TIMEOUT)
            assert event.name == "message", event
            return event.json()
        return _json_or_none(response.content)

    def call(self, method, params=None):
        self.next_id += 1
        response = self.request("POST", body=raw(rpc(method, params, id=self.next_id)))
        assert response.status_code == 200, (response.status_code, response.text)
        message = self.answer_of(response)
        assert message.get("id") == self.next_id, f"expected the answer to {method} #{self.next_id}, got {message}"
        return message


def _json_or_none(content):
    try:
        return json.loads(content) if content else None
    except ValueError:
        return None


# -- fixtures -------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def portal():
    """An event loop in a thread for the async httpx clients and SSE stream that live all module."""
    with start_blocking_portal() as portal:
        yield portal


@pytest.fixture(scope="module")
def api_key(django_db_setup, django_db_blocker):
    """A full-scope key of a tenant of this module, committed so daphne sees it; the tests here
    use no per-test database fixture, so nothing rolls these rows back until the flush."""
    with django_db_blocker.unblock():
        tenant = tenant_services.tenant_create(slug="malformed", name="Malformed")
        _, key = tenant_services.api_key_create(tenant=tenant, actor=Principal.system(tenant, "tests"), name="full")
    yield key
    with django_db_blocker.unblock():
        call_command("flush", interactive=False, verbosity=0)  # what a transactional test leaves behind


@pytest.fixture(scope="module")
def daphne(api_key, django_db_blocker):
    server = Daphne(BACKFLOW_MCP_RATE_LIMIT="100000,60")
    yield server
    _stop_before_the_database_goes(server, django_db_blocker)


@pytest.fixture(scope="module")
def remote(portal, daphne, api_key):
    """The daphne's SSE session and Streamable HTTP client, open for the whole module."""
    log = LogWatch(daphne.log.name)
    http = portal.call(raw_client, daphne)
    with portal.wrap_async_context_manager(http), \
            portal.wrap_async_context_manager(raw_sse(http, "/mcp/sse", bearer(api_key))) as stream:
        yield {"sse": SseWire(portal, http, stream, api_key, log), "http": HttpWire(portal, http, api_key, log)}


@pytest.fixture(scope="module")
def stdio(tmp_path_factory):
    root = tmp_path_factory.mktemp("malformed-stdio")
    site = LocalSite(root / "site")
    with open(root / "stderr.log", "wb") as stderr:
        server = RawServer(site.mcp_config, cwd=root, env=None, stderr=stderr)
        try:
            yield StdioWire(server, LogWatch(root / "stderr.log"))
        finally:
            assert server.close() == 0, "the stdio server did not exit cleanly when its stdin closed"
    for line in server.lines:  # everything it ever wrote to stdout was one JSON-RPC message a line
        assert json.loads(line).get("jsonrpc") == "2.0", line


@pytest.fixture(scope="module", params=TRANSPORTS)
def wire(request):
    return request.getfixturevalue("stdio") if request.param == "stdio" else request.getfixturevalue("remote")[request.param]


# -- checks ---------------------------------------------------------------------------------------

def assert_no_traceback(text, where):
    assert not TRACEBACK.search(text), f"a Python traceback in {where}:\n{text[-3000:]}"


def assert_alive(wire):
    """The same connection still serves: the valid request's answer is the very next message."""
    tools = wire.call("tools/list")["result"]["tools"]
    assert any(tool["name"] == "list_integrations" for tool in tools)
    assert_no_traceback(wire.log.new_text(), f"the {wire.name} server's log")


def expected_status(case, transport):
    if transport == "stdio":
        return None
    if case.http_status:
        return case.http_status
    if case.answered and case.before_dispatch:
        return 400
    return 202 if transport == "sse" or not case.answered else 200


def check_answer(case, message):
    assert message is not None, "no answer"
    assert message.get("jsonrpc") == "2.0" and "id" in message, message
    assert message["id"] == case.id, f"answer id {message['id']!r}, expected {case.id!r}: {message}"
    if case.code is not None:
        error = message.get("error")
        assert error and "result" not in message, message
        assert error["code"] == case.code, f"code {error['code']}, expected {case.code}: {error}"
        assert isinstance(error["message"], str) and error["message"].strip(), error
        return
    result = message.get("result")
    assert isinstance(result, dict) and "error" not in message, message
    if case.tool_error:
        assert result.get("isError") is True, result
        assert json.loads(result["content"][0]["text"])["error"], result
        assert "failed unexpectedly" not in result["content"][0]["text"], result  # a crash inside the tool
    if case.result_key:
        assert case.result_key in result, result


# -- tests ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_malformed_frame_gets_the_right_answer_and_the_session_lives(wire, case):
    case = case.on(wire.name)
    reply = wire.send(case.body, expect_answer=case.answered)
    assert_no_traceback(reply.text, "the answer")
    assert reply.status == expected_status(case, wire.name), (reply.status, reply.text[:500])
    if case.http_status and wire.name != "stdio":
        assert reply.message and isinstance(reply.message.get("error"), str | dict), reply.text[:500]
    elif case.answered:
        check_answer(case, reply.message)
    else:
        assert reply.message is None, f"a {case.name} must not be answered: {reply.text[:500]}"
    assert_alive(wire)


def test_request_before_initialize(wire):
    """Before the handshake a request gets an error and the session lives on to initialize; the
    stateless Streamable HTTP endpoint has no handshake and just answers."""
    answer = wire.before_initialize
    if wire.name == "http":
        assert answer.get("result", {}).get("tools"), answer
        return
    # MCP names no code for this; the SDK answers -32602 (its "pinned compat"), -32600 would do too.
    assert answer["error"]["code"] in (INVALID_REQUEST, INVALID_PARAMS), answer
    assert answer["error"]["message"], answer


def test_tool_calls_still_work_after_all_that(wire):
    for _ in range(2):
        answer = wire.call("tools/call", {"name": "list_integrations", "arguments": {}})
        assert answer["result"]["isError"] is False, answer
        assert answer["result"]["structuredContent"]["integrations"] == [], answer
    assert_alive(wire)


# -- HTTP only ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class HttpCase:
    name: str
    method: str = "POST"
    path: str = "/mcp"  # "SESSION": the SSE session's /mcp/messages?sessionId=… endpoint
    body: bytes = raw(rpc("tools/list", id="h"))
    headers: tuple = ()
    status: int = 400


HTTP_CASES = [
    HttpCase("text/plain body", headers=(("Content-Type", "text/plain"),), status=415),
    HttpCase("form body", headers=(("Content-Type", "application/x-www-form-urlencoded"),), status=415),
    HttpCase("no content type", headers=(("Content-Type", ""),), status=415),
    HttpCase("accept html only", headers=(("Accept", "text/html"),), status=406),
    HttpCase("accept json only", headers=(("Accept", "application/json"),), status=406),
    HttpCase("no accept", headers=(("Accept", ""),), status=406),
    HttpCase("GET /mcp", method="GET", body=b"", headers=(("Accept", "text/event-stream"),), status=405),
    HttpCase("DELETE /mcp", method="DELETE", body=b"", status=405),
    HttpCase("PUT /mcp", method="PUT", status=405),
    HttpCase("unknown protocol version header", headers=(("MCP-Protocol-Version", "1999-01-01"),), status=400),
    HttpCase("oversized /mcp", body=OVERSIZED, status=413),
    HttpCase("oversized SSE message", path="SESSION", body=OVERSIZED, status=413),
    HttpCase("messages without sessionId", path="/mcp/messages", status=400),
    HttpCase("messages with an empty sessionId", path="/mcp/messages?sessionId=", status=400),
    HttpCase("messages with an unknown sessionId", path="/mcp/messages?sessionId=" + "0" * 32, status=404),
    HttpCase("messages with a malformed sessionId", path="/mcp/messages?sessionId=../../etc%00", status=404),
    HttpCase("messages as text/plain", path="SESSION", headers=(("Content-Type", "text/plain"),), status=415),
    HttpCase("GET on messages", method="GET", path="SESSION", body=b"", status=405),
    HttpCase("POST on the SSE endpoint", path="/mcp/sse", status=405),
]


@pytest.mark.parametrize("case", HTTP_CASES, ids=[case.name for case in HTTP_CASES])
def test_http_request_refused_with_a_clear_status(remote, case):
    sse, http = remote["sse"], remote["http"]
    path = sse.stream.endpoint if case.path == "SESSION" else case.path
    response = http.request(case.method, path, case.body, dict(case.headers))
    assert response.status_code == case.status, (response.status_code, response.text[:500])
    assert_no_traceback(response.text, "the answer")
    body = _json_or_none(response.content)
    assert isinstance(body, dict), f"the body should be JSON that says what to fix: {response.text[:500]!r}"
    message = body["error"]["message"] if isinstance(body.get("error"), dict) else body.get("error")
    assert isinstance(message, str) and message.strip(), body
    if response.status_code == 405 and case.path == "/mcp":
        assert response.headers["allow"] == "POST"  # what /mcp does take
    assert_alive(sse)
    assert_alive(http)


def test_oversized_body_without_content_length(remote):
    """A chunked body has no Content-Length to refuse up front: it is cut off at the limit."""
    sse, http = remote["sse"], remote["http"]

    async def chunks():
        for _ in range(LIMIT // 65536 + 2):
            yield b" " * 65536

    headers = {"Content-Type": "application/json", "Accept": ACCEPT_MCP, **bearer(http.key)}
    for path in ("/mcp", sse.stream.endpoint):
        response = http.portal.call(lambda path=path: http.http.post(path, content=chunks(), headers=headers))
        assert response.status_code == 413, (path, response.status_code, response.text[:500])
        assert_no_traceback(response.text, "the answer")
    assert_alive(sse)
    assert_alive(http)


@pytest.mark.parametrize("length", ["abc", "-1", "1" * 30])
def test_nonsense_content_length(remote, daphne, length):
    """Headers a client library would never send, written on a raw socket: a 4xx, never a 500."""
    body = raw(rpc("tools/list", id="cl"))
    head = (f"POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:{daphne.port}\r\nAuthorization: Bearer {remote['http'].key}\r\n"
            f"Content-Type: application/json\r\nAccept: {ACCEPT_MCP}\r\nContent-Length: {length}\r\n"
            "Connection: close\r\n\r\n").encode()
    data = b""
    with socket.create_connection(("127.0.0.1", daphne.port), timeout=3) as sock:
        sock.sendall(head + body)
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except TimeoutError:
            pass  # daphne (Twisted) waits for the 10^29 bytes announced before it calls the app: fair
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else None
    assert status is None or 400 <= status < 500, data[:500]  # closing the connection is a fine answer too
    assert_no_traceback(data.decode("latin-1"), "the answer")
    assert_alive(remote["http"])
