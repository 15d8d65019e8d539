"""MCP over HTTP, mounted in the Channels router in front of Django.

- Streamable HTTP at /mcp: the SDK's session manager in stateless mode, so any process behind
  one address answers any request (no session lives in one process's memory).
- SSE at /mcp/sse + /mcp/messages (the seed's flow): the stream's process registers the session
  in the shared cache and listens on its own channel-layer channel; a POST on any process looks
  the session up and forwards the message there (Redis channel layer in production).

Every request is authenticated (API key, JWT; the tenant from the key or X-Backflow-Scope /
?scope=), checked against ALLOWED_HOSTS (Host and Origin: DNS-rebinding protection) and size-
limited. The principal's scopes decide the tool set.
"""

import asyncio
import json
import logging
from urllib.parse import urlencode
from uuid import uuid4

import anyio
import mcp_types as types
from asgiref.sync import sync_to_async
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared._context_streams import create_context_streams
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from backflow.asgi_utils import HttpError, check_host, query_params, read_body, request_headers, respond
from integrations_app.stores import DatabaseStore
from mcp_app.context import ToolContext
from mcp_app.registry import visible_tools
from mcp_app.server import CONNECTION, build_server
from tenants.authentication import AuthenticationError, bearer_value, principal_for_token

logger = logging.getLogger("backflow.mcp")

SSE_PATH, MESSAGES_PATH, STREAMABLE_PATH = "/mcp/sse", "/mcp/messages", "/mcp"
MCP_PATHS = (SSE_PATH, MESSAGES_PATH, STREAMABLE_PATH)
SESSION_TTL = 120  # seconds; the stream refreshes it with every keep-alive


def public_base(scope, headers):
    if settings.BACKFLOW_PUBLIC_URL:
        return settings.BACKFLOW_PUBLIC_URL.rstrip("/")
    return f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"


def www_authenticate(base):
    """Points OAuth-capable clients at the protected resource metadata (RFC 9728)."""
    return [(b"www-authenticate", f'Bearer realm="backflow", resource_metadata="{base}/.well-known/oauth-protected-resource/mcp"'.encode())]


async def authenticate(scope, headers, query, *, allow_query_token=False):
    base = public_base(scope, headers)
    raw = bearer_value(headers.get("authorization"))
    if raw is None and allow_query_token:
        raw = query.get("token")
    if not raw:
        raise HttpError(401, "Send Authorization: Bearer <API key, JWT or OAuth access token>.", www_authenticate(base))
    requested = headers.get("x-backflow-scope") or query.get("scope") or None
    try:
        principal = await sync_to_async(principal_for_token)(raw, requested, base + STREAMABLE_PATH)
    except AuthenticationError as exc:
        raise HttpError(401, str(exc), www_authenticate(base)) from exc
    if not principal.tenant.is_active:
        raise HttpError(403, f"Tenant {principal.tenant.slug!r} is inactive.")
    return principal


def connection_for(principal):
    return ToolContext(
        store=DatabaseStore(tenant=principal.tenant, actor=principal),
        allowed=visible_tools(scopes=principal.scopes),
        tenant=principal.tenant,
        actor=principal,
        rate_key=owner_of(principal),
    )


def owner_of(principal):
    return f"{principal.tenant.slug}/{principal.label}"


# -- SSE ---------------------------------------------------------------------------------------

def _session_key(session_id):
    return f"mcp:sse:{session_id}"


async def sse_stream(scope, receive, send, principal):
    """Hold one SSE session open until the client goes away."""
    session_id = uuid4().hex
    layer = get_channel_layer()
    channel = await layer.new_channel("mcp.sse.")
    record = {"channel": channel, "owner": owner_of(principal)}
    await cache.aset(_session_key(session_id), record, timeout=SESSION_TTL)
    CONNECTION.set(connection_for(principal))
    server = build_server()
    read_writer, read_stream = create_context_streams[SessionMessage | Exception](0)
    write_stream, write_reader = create_context_streams[SessionMessage](0)
    send_lock = anyio.Lock()

    async def emit(chunk):
        async with send_lock:
            await send({"type": "http.response.body", "body": chunk.encode(), "more_body": True})

    async def outgoing():
        async for message in write_reader:
            data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
            await emit(f"event: message\ndata: {data}\n\n")

    async def incoming():
        while True:
            event = await layer.receive(channel)
            try:
                message = types.jsonrpc_message_adapter.validate_json(event["body"], by_name=False)
            except ValidationError:
                continue  # the POST already answered 400
            await read_writer.send(SessionMessage(message))

    async def keepalive():
        while True:
            await anyio.sleep(settings.BACKFLOW_SSE_KEEPALIVE_SECONDS)
            await emit(": keep-alive\n\n")
            await cache.aset(_session_key(session_id), record, timeout=SESSION_TTL)

    async def until_disconnect():
        while (await receive())["type"] != "http.disconnect":
            pass

    await send({"type": "http.response.start", "status": 200, "headers": [
        (b"content-type", b"text/event-stream"), (b"cache-control", b"no-store"),
        (b"x-accel-buffering", b"no"), (b"mcp-session-id", session_id.encode()),
    ]})
    endpoint = f"{MESSAGES_PATH}?sessionId={session_id}"
    if "scope" in query_params(scope):  # a tenant chosen with ?scope= must reach the POSTs too
        endpoint += "&" + urlencode({"scope": principal.tenant.slug})
    await emit(f"event: endpoint\ndata: {endpoint}\n\n")
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.run, read_stream, write_stream, server.create_initialization_options())
            tasks.start_soon(outgoing)
            tasks.start_soon(incoming)
            tasks.start_soon(keepalive)
            await until_disconnect()
            tasks.cancel_scope.cancel()
    finally:
        with anyio.CancelScope(shield=True):
            await cache.adelete(_session_key(session_id))
            await read_writer.aclose()
            await write_reader.aclose()
            logger.debug("SSE session %s closed", session_id)


async def post_message(scope, receive, send, principal, query):
    session_id = query.get("sessionId") or query.get("session_id")
    if not session_id:
        raise HttpError(400, "Give the session as ?sessionId=… (from the stream's endpoint event).")
    record = await cache.aget(_session_key(session_id))
    if record is None or record["owner"] != owner_of(principal):
        raise HttpError(404, "No such session.")  # another principal's session does not exist for you
    if not request_headers(scope).get("content-type", "").startswith("application/json"):
        raise HttpError(415, "Send the JSON-RPC message as Content-Type: application/json.")
    body = await read_body(receive, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    try:
        types.jsonrpc_message_adapter.validate_json(body, by_name=False)
    except ValidationError:
        return await respond(send, 400, {"jsonrpc": "2.0", "id": None, "error": {
            "code": -32700 if not _is_json(body) else -32600,
            "message": "Parse error: send one JSON-RPC 2.0 message." if not _is_json(body) else "Invalid Request: not a JSON-RPC 2.0 message.",
        }})
    try:
        await get_channel_layer().send(record["channel"], {"type": "mcp.message", "body": body.decode()})
    except ChannelFull as exc:
        raise HttpError(503, "The session is busy; retry shortly.", [(b"retry-after", b"1")]) from exc
    await respond(send, 202, b"Accepted", content_type=b"text/plain")


def _is_json(body):
    try:
        json.loads(body)
        return True
    except ValueError:
        return False


# -- Streamable HTTP ---------------------------------------------------------------------------

class StreamableHttp:
    """The SDK's manager, started on the first request (daphne sends no lifespan events)."""

    def __init__(self):
        self._manager = None
        self._ready = None

    async def _run(self, ready):
        async with self._manager.run():
            ready.set()
            await asyncio.Event().wait()  # lives as long as the process

    async def handle(self, scope, receive, send, principal):
        if self._ready is None:
            self._manager = StreamableHTTPSessionManager(
                app=build_server(), stateless=True, max_request_body_size=settings.DATA_UPLOAD_MAX_MEMORY_SIZE
            )
            self._ready = asyncio.Event()
            self._runner = asyncio.get_running_loop().create_task(self._run(self._ready))
        await self._ready.wait()
        token = CONNECTION.set(connection_for(principal))
        try:
            await self._manager.handle_request(scope, receive, send)
        finally:
            CONNECTION.reset(token)


streamable = StreamableHttp()


async def mcp_asgi(scope, receive, send):
    """ASGI app for /mcp, /mcp/sse and /mcp/messages."""
    path = scope.get("path", "").rstrip("/")
    if path not in MCP_PATHS:
        return await respond(send, 404, {"error": f"No MCP endpoint at {path}; use {', '.join(MCP_PATHS)}."})
    try:
        await _dispatch(path, scope, receive, send)
    except HttpError as exc:
        await respond(send, exc.status, exc.body(), exc.headers)


async def _dispatch(path, scope, receive, send):
    headers, query, method = request_headers(scope), query_params(scope), scope["method"]
    check_host(headers)
    if path == SSE_PATH:
        if method != "GET":
            raise HttpError(405, "Open the SSE stream with GET.", [(b"allow", b"GET")])
        principal = await authenticate(scope, headers, query, allow_query_token=True)
        return await sse_stream(scope, receive, send, principal)
    if path == MESSAGES_PATH:
        if method != "POST":
            raise HttpError(405, "POST messages here.", [(b"allow", b"POST")])
        principal = await authenticate(scope, headers, query)
        return await post_message(scope, receive, send, principal, query)
    principal = await authenticate(scope, headers, query)
    length = int(headers.get("content-length") or 0)
    if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raise HttpError(413, f"Request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")
    await streamable.handle(scope, receive, send, principal)
