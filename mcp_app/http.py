"""MCP over HTTP, mounted in the Channels router in front of Django.

- Streamable HTTP at /mcp: the SDK's session manager in stateless mode, so any process behind
  one address answers any request (no session lives in one process's memory).
- SSE at /mcp/sse + /mcp/messages (the seed's flow): the stream's process registers the session
  in the shared cache and listens on its own channel-layer channel; a POST on any process looks
  the session up and forwards the message there (Redis channel layer in production). A POST that
  reaches the stream's own process (one process, or a balancer that keeps a client on one) hands
  the message over in memory: no cache lookup and no channel-layer round trips.

Every request is authenticated (API key, JWT; the tenant from the key or X-Backflow-Scope /
?scope=), checked against ALLOWED_HOSTS (Host and Origin: DNS-rebinding protection) and size-
limited. The principal's scopes decide the tool set.
"""

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from urllib.parse import urlencode
from uuid import uuid4

import anyio
import mcp_types as types
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.shared._context_streams import create_context_streams
from mcp.shared.message import SessionMessage
from pydantic import ValidationError

from backflow import metrics
from backflow.asgi_utils import HttpError, check_host, query_params, read_body, request_headers, respond
from backflow.bounds import Full, Slots
from backflow.compiled import LoopReads, loop_reads
from backflow.loop_postgres import LoopPostgres, loop_reads_postgres
from backflow.outages import describe, reconnecting, redis_errors
from backflow.sync import GroupedTrips, LoopTrips
from integrations_app.stores import DatabaseStore
from mcp_app.context import ToolContext
from mcp_app.registry import visible_tools
from mcp_app.server import CONNECTION, build_server, check_message
from tenants.authentication import AuthenticationError, bearer_value, known_principal, known_principal_on_loop, principal_for_token
from tenants.scopes import ALL_SCOPES
from tenants.services import api_key_remembered

logger = logging.getLogger("backflow.mcp")

SSE_PATH, MESSAGES_PATH, STREAMABLE_PATH = "/mcp/sse", "/mcp/messages", "/mcp"
MCP_PATHS = (SSE_PATH, MESSAGES_PATH, STREAMABLE_PATH)
SESSION_TTL = 120  # seconds; the stream refreshes it with every keep-alive


def public_base(scope, headers):
    if settings.BACKFLOW_PUBLIC_URL:
        return settings.BACKFLOW_PUBLIC_URL.rstrip("/")
    return f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"


def www_authenticate(base, error=None):
    """The challenge of a 401 (RFC 6750 §3, MCP authorization): the protected resource metadata
    (RFC 9728) and the scopes to ask for; `invalid_token` when a credential was sent but refused."""
    parts = ['Bearer realm="backflow"']
    if error:
        parts.append(f'error="{error}", error_description="{WWW_DESCRIPTIONS[error]}"')
    parts.append(f'resource_metadata="{base}/.well-known/oauth-protected-resource/mcp", scope="{" ".join(ALL_SCOPES)}"')
    return [(b"www-authenticate", ", ".join(parts).encode())]


WWW_DESCRIPTIONS = {"invalid_token": "The access token is invalid, expired or revoked"}

# Requests with the same credential (and tenant and resource asked for) that come together, such as
# the POSTs of a client's sessions, are checked in one trip to a thread: its read of the tenant row
# starts after each of them arrived, so a revoked key is refused from the next request.
_principal = reconnecting(principal_for_token)
_credential_checks = GroupedTrips(lambda principal, credential: principal, limit=64,
                                  prepare=lambda owner, credentials: _principal(*credentials[0]))
# On SQLite, an API key verified before is checked on the event loop itself, no trip (as the tenant
# routes admit their requests: integrations_app.dispatch.DatabaseSites._admitted_here). Unlike the
# routes' admission it needs no crowd rule: under load_mcp (200 sessions of one key) checking each
# message on the loop measured the same as gathering the checks in trips (0.80/0.77x against
# 0.80/0.75x the bare SDK, alternating). On PostgreSQL the loop reads the row on its own connection
# (backflow.loop_postgres), once for the requests with one credential that come together.
reads_here = loop_reads if loop_reads.on_sqlite else None


async def _principal_on_loop(owner, checks):
    """On PostgreSQL: the principal of a remembered key (its keycache entry and the tenant asked
    for) checked with its tenant row read on the loop's own connection (backflow.loop_postgres),
    once for the requests that came together as the trips do; None: take the trip."""
    entry, requested = checks[0]
    try:
        return await known_principal_on_loop(entry, requested, loop_reads_postgres)
    except LoopPostgres.Unavailable:
        return None


_credential_checks_on_loop = LoopTrips(lambda principal, check: principal, limit=64, prepare=_principal_on_loop) \
    if loop_reads_postgres.on_postgres else None


def _known(raw, requested):
    """The principal of a credential checked without a query or a write, on the loop; None: take the trip."""
    if reads_here is None:
        return None
    try:
        return known_principal(raw, requested, reads_here)
    except LoopReads.Unavailable:
        return None


async def authenticate(scope, headers, query, *, allow_query_token=False):
    base = public_base(scope, headers)
    raw = bearer_value(headers.get("authorization"))
    if raw is None and allow_query_token:
        raw = query.get("token")
    if not raw:
        raise HttpError(401, "Send Authorization: Bearer <API key, JWT or OAuth access token>.", www_authenticate(base))
    requested = headers.get("x-backflow-scope") or query.get("scope") or None
    credential = (raw, requested, base + STREAMABLE_PATH)
    try:
        principal = _known(raw, requested)
        # Only a key this process verified before can be decided on the loop: a JWT or an OAuth
        # token goes straight to the trip, without a pass through the loop's trips first.
        remembered = api_key_remembered(raw) if principal is None and _credential_checks_on_loop is not None else None
        if remembered is not None:
            principal = await _credential_checks_on_loop(("credential", *credential), (remembered, requested))
        if principal is None:
            principal = await _credential_checks(("credential", *credential), credential)
    except AuthenticationError as exc:
        raise HttpError(401, str(exc), www_authenticate(base, error="invalid_token")) from exc
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


_open_sessions = Slots()  # per principal: each stream holds a server task, a channel and memory
# What one session may hold, handed over in memory and not yet read by its server; beyond it POSTs
# get 503 (a flood of large bodies must not take the process's memory).
SESSION_QUEUE_MESSAGES = 1000
SESSION_QUEUE_BYTES = 16 * 1024 * 1024


@dataclass
class LocalSession:
    """A stream of this process, for POSTs that arrive here: its owner, its event loop and the
    queue its server reads (beside the messages that come through the channel layer)."""

    owner: str
    loop: asyncio.AbstractEventLoop
    queue: object  # an anyio memory object send stream of message bodies (str)
    queued_bytes: int = 0

    def hand_over(self, body):
        """Queue one message, or raise WouldBlock when the session holds its bound already."""
        if self.queued_bytes + len(body) > SESSION_QUEUE_BYTES:
            raise anyio.WouldBlock
        self.queue.send_nowait(body)
        self.queued_bytes += len(body)

    def taken(self, body):
        """The stream's server read `body`: its bytes no longer count against the bound."""
        self.queued_bytes -= len(body)


_local_sessions = {}  # session id -> LocalSession, while the stream is open


@contextlib.contextmanager
def _session_slot(owner):
    """One of the principal's BACKFLOW_SSE_SESSIONS_PER_PRINCIPAL streams on this process."""
    try:
        with _open_sessions.take(owner, settings.BACKFLOW_SSE_SESSIONS_PER_PRINCIPAL):
            yield
    except Full as full:
        metrics.rate_limit_refusals.labels("sse_sessions").inc()
        raise HttpError(429, f"This credential already holds {full.held} open SSE sessions; close one first.",
                        [(b"retry-after", b"5")]) from None


async def sse_stream(scope, receive, send, principal, url_token=None):
    """Hold one SSE session open until the client goes away. `url_token`: the credential the stream
    was opened with in its URL (`?token=`), handed back in the endpoint event so that a client
    given only that URL sends it with every message too (a session is never a credential)."""
    session_id = uuid4().hex
    layer = get_channel_layer()
    channel = await layer.new_channel("mcp.sse.")
    record = {"channel": channel, "owner": owner_of(principal)}
    await cache.aset(_session_key(session_id), record, timeout=SESSION_TTL)
    CONNECTION.set(connection_for(principal))
    server = build_server()
    read_writer, read_stream = create_context_streams[SessionMessage | Exception](0)
    write_stream, write_reader = create_context_streams[SessionMessage](0)
    local_queue, local_messages = anyio.create_memory_object_stream[str](SESSION_QUEUE_MESSAGES)
    here = _local_sessions[session_id] = LocalSession(record["owner"], asyncio.get_running_loop(), local_queue)
    send_lock = anyio.Lock()
    redis_down = []  # the outage being waited out, if any: logged once, and once when it ends

    def redis_failed(exc):
        if not redis_down:
            logger.warning("SSE session %s: Redis is unavailable; the stream stays open and POSTs get 503 until it is back (%s)",
                           session_id, describe(exc))
            redis_down.append(exc)

    async def emit(chunk):
        async with send_lock:
            await send({"type": "http.response.body", "body": chunk.encode(), "more_body": True})

    async def outgoing():
        async for message in write_reader:
            data = message.message.model_dump_json(by_alias=True, exclude_unset=True)
            await emit(f"event: message\ndata: {data}\n\n")

    async def forward(body):
        try:
            message = types.jsonrpc_message_adapter.validate_json(body, by_name=False)
        except ValidationError:
            return  # the POST already answered 400
        await read_writer.send(SessionMessage(message))

    async def incoming():
        while True:
            try:
                event = await layer.receive(channel)
            except redis_errors() as exc:  # keep the session; listen again once Redis is back
                redis_failed(exc)
                await anyio.sleep(1)
                continue
            await forward(event["body"])

    async def incoming_here():
        async for body in local_messages:
            here.taken(body)
            await forward(body)

    async def keepalive():
        while True:
            await anyio.sleep(settings.BACKFLOW_SSE_KEEPALIVE_SECONDS)
            await emit(": keep-alive\n\n")
            try:  # also registers the session again after Redis lost it (a restart)
                await cache.aset(_session_key(session_id), record, timeout=SESSION_TTL)
            except redis_errors() as exc:
                redis_failed(exc)
            else:
                if redis_down:
                    logger.warning("SSE session %s: Redis is back; the session answers again", session_id)
                    redis_down.clear()

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
    if url_token:
        endpoint += "&" + urlencode({"token": url_token})
    await emit(f"event: endpoint\ndata: {endpoint}\n\n")
    try:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(server.run, read_stream, write_stream, server.create_initialization_options())
            tasks.start_soon(outgoing)
            tasks.start_soon(incoming)
            tasks.start_soon(incoming_here)
            tasks.start_soon(keepalive)
            await until_disconnect()
            tasks.cancel_scope.cancel()
    finally:
        _local_sessions.pop(session_id, None)
        local_queue.close()
        with anyio.CancelScope(shield=True):
            try:
                await cache.adelete(_session_key(session_id))
            except redis_errors():
                pass  # Redis is down: the record expires by itself (SESSION_TTL)
            await read_writer.aclose()
            await write_reader.aclose()
            await local_messages.aclose()
            logger.debug("SSE session %s closed", session_id)


async def post_message(scope, receive, send, principal, query):
    session_id = query.get("sessionId") or query.get("session_id")
    if not session_id:
        raise HttpError(400, "Give the session as ?sessionId=… (from the stream's endpoint event).")
    here = _local_sessions.get(session_id)
    if here is not None and here.loop is not asyncio.get_running_loop():
        here = None  # another event loop's stream (in-process tests): through the channel layer
    record = None if here else await cache.aget(_session_key(session_id))
    owner = here.owner if here else record["owner"] if record else None
    if owner != owner_of(principal):
        raise HttpError(404, "No such session.")  # another principal's session does not exist for you
    if not request_headers(scope).get("content-type", "").startswith("application/json"):
        raise HttpError(415, "Send the JSON-RPC message as Content-Type: application/json.")
    body = await read_body(receive, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    rejection = check_message(body)
    if rejection is not None:
        return await refuse_message(send, rejection)
    if here:
        try:
            here.hand_over(body.decode())
        except anyio.WouldBlock:
            raise session_busy() from None
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            raise HttpError(404, "No such session.") from None  # it ended while the body was read
    else:
        try:
            await get_channel_layer().send(record["channel"], {"type": "mcp.message", "body": body.decode()})
        except ChannelFull as exc:
            raise session_busy() from exc
    await respond(send, 202, b"Accepted", content_type=b"text/plain")


def session_busy():
    return HttpError(503, "The session is busy; retry shortly.", [(b"retry-after", b"1")])


async def refuse_message(send, rejection):
    """A body that is not one JSON-RPC message (check_message): 400 with the JSON-RPC error that
    says why. A notification or client response that no one may answer is accepted and dropped
    (202), as the SDK does with those it has no use for."""
    if not rejection.reply:
        return await respond(send, 202, b"Accepted", content_type=b"text/plain")
    await respond(send, 400, rejection.error().model_dump(mode="json", by_alias=True, exclude_unset=True))


def _replayed(body, receive):
    """`receive` for an app that reads a body already read: the body, then the client's events."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay():
        return pending.pop() if pending else await receive()

    return replay


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
        with _session_slot(owner_of(principal)):
            url_token = query.get("token") if bearer_value(headers.get("authorization")) is None else None
            return await sse_stream(scope, receive, send, principal, url_token)
    if path == MESSAGES_PATH:
        if method != "POST":
            raise HttpError(405, "POST messages here.", [(b"allow", b"POST")])
        principal = await authenticate(scope, headers, query, allow_query_token=True)
        return await post_message(scope, receive, send, principal, query)
    principal = await authenticate(scope, headers, query)
    length = int(headers.get("content-length") or 0)  # daphne (Twisted) has refused one that is not a number
    if length > settings.DATA_UPLOAD_MAX_MEMORY_SIZE:
        raise HttpError(413, f"Request body is larger than {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes.")
    if method != "POST":
        # Stateless: a GET stream would never carry a message, yet the SDK opened one and held it
        # (and a server task) until the client hung up; there is no session to DELETE either. The
        # spec's answer for both is 405 (the SDK's own 405 advertised GET and DELETE).
        raise HttpError(405, f"POST JSON-RPC messages to /mcp; this stateless server has no stream to GET and no session to "
                             f"end, so {method} is not allowed.", [(b"allow", b"POST")])
    if "application/json" not in (part.strip() for part in headers.get("content-type", "").split(";")[0].split(",")):
        raise HttpError(415, "Send the JSON-RPC message as Content-Type: application/json.")  # the SDK: 400, plain text
    # Checked here, not by the SDK: it answers a bad envelope with -32602 and pydantic's text,
    # takes a request whose id is an object for a notification (202, never answered), accepts NaN.
    body = await read_body(receive, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
    rejection = check_message(body)
    if rejection is not None:
        return await refuse_message(send, rejection)
    receive = _replayed(body, receive)
    await streamable.handle(scope, receive, send, principal)
