"""Helpers shared by the remote-transport tests (test_remote_*.py, test_bridge*.py); no tests here.

Everything talks to real daphne processes on 127.0.0.1 started by `live_daphne`; nothing is mocked.
The SSE stream is read with plain httpx (RawSse) to check the wire format the seed documents; the
SDK clients (sse_client, streamable_http_client) check that real MCP clients work end to end.
"""

import json
import os
import re
import socket
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import anyio
import httpx
import httpx2
from mcp import ClientSession
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from rest_framework.test import APIClient

from mcp_app.tests.helpers import INTEGRATION_TOOLS, ROUTE_TOOLS, TOOLS_BY_SCOPE, result_json, run, tools_for  # noqa: F401  (re-exported)
from tenants import services as tenant_services



def all_tools():
    """Every tool a full-scope credential sees (pinned per scope in mcp_app/tests/helpers.py)."""
    return tools_for(*TOOLS_BY_SCOPE)


ENDPOINT_DATA = re.compile(r"^/mcp/messages\?sessionId=([0-9a-f]{32})(?:&scope=([a-z0-9-]+))?(?:&token=([^&]+))?$")
PROTOCOL_VERSION = "2025-11-25"
REQUEST_TIMEOUT = 15  # seconds: a request whose POST failed would otherwise wait for its answer forever


def bearer(credential):
    return {"Authorization": f"Bearer {credential}"}


def key_prefix(key):
    """`bf_<prefix>_<secret>` -> prefix (the part shown in audit rows as key:<prefix>)."""
    return key.split("_", 2)[1]


@contextmanager
def orm_in_loop():
    """Let the test's own (main-thread) database connection be used while an event loop runs.

    The tests drive the servers from `anyio.run` in pytest's main thread; a few steps (revoking a
    key mid-session) must write to the database there, on the connection the test owns.
    """
    old = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = old


def multi_tenant_jwt(username, password, *tenant_contexts, role="member"):
    """A user who is a member of every given tenant, and an access token covering all of them."""
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user(username=username, password=password)
    for ctx in tenant_contexts:
        tenant_services.membership_set(tenant=ctx.tenant, user=user, role=role)
    response = APIClient().post("/api/auth/token", {"username": username, "password": password}, format="json")
    assert response.status_code == 200, response.content
    return response.json()["access"]


def redis_reachable(host="127.0.0.1", port=6379):
    try:
        with socket.create_connection((host, port), timeout=1) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# -- raw SSE (httpx) ---------------------------------------------------------------------------

@dataclass
class Event:
    name: str
    data: str

    def json(self):
        return json.loads(self.data)


def rpc(method, params=None, id=None):
    message = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        message["params"] = params
    if id is not None:
        message["id"] = id
    return message


def initialize(id=1):
    return rpc("initialize", {"protocolVersion": PROTOCOL_VERSION, "capabilities": {},
                              "clientInfo": {"name": "backflow-tests", "version": "1"}}, id=id)


class RawSse:
    """One `text/event-stream` response read line by line; `event()` returns the next event."""

    def __init__(self, response):
        self.response = response
        self._lines = response.aiter_lines()
        self.endpoint = self.session_id = self.scope = None

    async def event(self, timeout=10.0):
        name, data = None, []
        with anyio.fail_after(timeout):
            while True:
                line = await self._lines.__anext__()
                if line == "":
                    if name is not None or data:
                        return Event(name or "message", "\n".join(data))
                    continue
                if line.startswith(":"):
                    continue  # comment (keep-alive)
                field, _, value = line.partition(":")
                value = value[1:] if value.startswith(" ") else value
                if field == "event":
                    name = value
                elif field == "data":
                    data.append(value)

    async def answer(self, id, timeout=10.0):
        """The next event must be the JSON-RPC answer with this id."""
        event = await self.event(timeout)
        assert event.name == "message", event
        message = event.json()
        assert message.get("id") == id, f"expected the answer to {id}, got {message}"
        return message


@asynccontextmanager
async def raw_sse(http, url, headers=None):
    """GET the SSE stream; yields a RawSse whose endpoint event has been read and checked."""
    request = http.build_request("GET", url, headers={"Accept": "text/event-stream", **(headers or {})})
    response = await http.send(request, stream=True)
    try:
        assert response.status_code == 200, (response.status_code, await response.aread())
        assert response.headers["content-type"].startswith("text/event-stream")
        stream = RawSse(response)
        first = await stream.event()
        assert first.name == "endpoint", first
        match = ENDPOINT_DATA.match(first.data)
        assert match, f"endpoint event data {first.data!r} is not /mcp/messages?sessionId=SID"
        stream.endpoint, stream.session_id, stream.scope = first.data, match.group(1), match.group(2)
        yield stream
    finally:
        await response.aclose()


async def post_json(http, path, message, credential=None, headers=None):
    body = message if isinstance(message, (bytes, str)) else json.dumps(message)
    all_headers = {"Content-Type": "application/json", **(bearer(credential) if credential else {}), **(headers or {})}
    return await http.post(path, content=body, headers=all_headers)


async def exchange(http, stream, credential, message):
    """POST one request to the stream's session (202) and return its answer from the stream."""
    response = await post_json(http, stream.endpoint, message, credential)
    assert response.status_code == 202, (response.status_code, response.text)
    return await stream.answer(message["id"])


async def handshake(http, stream, credential):
    answer = await exchange(http, stream, credential, initialize(id=1))
    assert answer["result"]["serverInfo"]["name"] == "backflow", answer
    response = await post_json(http, stream.endpoint, rpc("notifications/initialized"), credential)
    assert response.status_code == 202, response.text
    return answer["result"]


def raw_client(server):
    return httpx.AsyncClient(base_url=server.url, timeout=httpx.Timeout(10.0, read=30.0))


# -- SDK clients -------------------------------------------------------------------------------

class Session:
    """An initialized ClientSession with the checks every tool call gets."""

    def __init__(self, session):
        self.session = session

    async def tool_names(self):
        return {t.name for t in (await self.session.list_tools()).tools}

    async def call(self, name, arguments=None):
        result = await self.session.call_tool(name, arguments or {})
        return result, result_json(result)

    async def ok(self, name, arguments=None):
        result, data = await self.call(name, arguments)
        assert not result.is_error, f"{name}({arguments}) failed: {result.content[0].text}"
        return data

    async def error(self, name, arguments=None):
        result, data = await self.call(name, arguments)
        assert result.is_error, f"{name}({arguments}) should have failed: {result.content[0].text}"
        assert isinstance(data.get("error"), str) and data["error"], data
        return data


@asynccontextmanager
async def sdk_session(base_url, transport, credential, headers=None, query=""):
    """An MCP session over `transport` ("sse" or "http") with the SDK's own clients."""
    all_headers = {**bearer(credential), **(headers or {})}
    if transport == "sse":
        async with sse_client(f"{base_url}/mcp/sse{query}", headers=all_headers, timeout=10) as (read, write):
            async with ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT) as session:
                await session.initialize()
                yield Session(session)
    elif transport == "http":
        async with httpx2.AsyncClient(headers=all_headers, timeout=httpx2.Timeout(10, read=30)) as http:
            async with streamable_http_client(f"{base_url}/mcp{query}", http_client=http) as (read, write):
                async with ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT) as session:
                    await session.initialize()
                    yield Session(session)
    else:
        raise ValueError(transport)


def integration(name, **extra):
    return {"name": name, "baseUrl": f"https://{name}.example.com/v1",
            "endpoints": [{"name": "ping", "method": "get", "path": "/ping"}], **extra}


def integration_names(data):
    return sorted(item["name"] for item in data["integrations"])
