"""Connections to external MCP servers, kept open and reused by every workflow run of a process.

All of them live on one background event loop (a thread), so sync callers (the task worker) and
async callers (daphne) share them: lazy connect, reuse, reconnect with backoff after a crash,
the tool list cached until the server says it changed, a timeout per call, a bound on calls in
flight per server, and stdio children stopped when the process exits.

Whatever a server sends can carry back the credentials it was sent (a tenant's server echoing its
Authorization header): every answer, every McpClientError and every log line made while talking
to a server is scrubbed of the spec's `credentials` here, at the source, so no caller has to.

What an HTTP/SSE server sends is bounded (backflow.egress.guarded_mcp_http_client): a JSON answer,
or one SSE event, of more than BACKFLOW_MCP_MAX_MESSAGE_BYTES (decoded) fails the call that waited
for it, saying so; results and tool lists holding NaN, Infinity or nesting deeper than
BACKFLOW_JSON_MAX_DEPTH are refused (backflow.jsonbody.check_value: the SDK's parser accepts them);
a tool list may span at most MAX_TOOL_PAGES pages.
"""

import asyncio
import atexit
import contextvars
import functools
import hashlib
import json
import logging
import math
import threading
import time
from contextlib import AsyncExitStack
from dataclasses import dataclass, field

import anyio
import mcp_types as types
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.client.sse import sse_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError

from django.conf import settings

from backflow.egress import guarded_mcp_http_client
from backflow.jsonbody import JsonBodyError, check_value
from backflow.redaction import scrub, scrub_text

logger = logging.getLogger("backflow.mcp_client")
BACKOFF_MAX = 30.0
MAX_TOOL_PAGES = 20  # tools/list pages read per listing (a server whose cursor never ends)
# The SDK's SSE transport reads each event with its own 1 MiB bound (mcp.shared._httpx_utils
# sse_within_origin, not configurable): over SSE, the platform's bound is at most that, so that its
# clearer error comes first.
SDK_SSE_EVENT_LIMIT = 1024 * 1024


class McpClientError(Exception):
    """A call could not be made or did not finish; the message names the server and cause, and
    holds nothing of the credentials the server was sent."""


# The credentials of the server being talked to, in every task that talks to it (connection
# tasks inherit it), so that what the SDK and httpx log there is scrubbed as it is recorded.
_CREDENTIALS_IN_PLAY = contextvars.ContextVar("backflow_mcp_credentials", default=())
# Why the HTTP client refused what the server sent, for the call waiting on it: the SDK reads a
# request's answer in a task that runs in a copy of the calling task's context, so the list set by
# ServerConnection._call is the one the refusal lands in.
_CALL_REFUSALS = contextvars.ContextVar("backflow_mcp_refusals", default=None)


def _scrub_record(record, credentials):
    try:
        message = record.getMessage()
    except Exception:  # a malformed log call: scrub what there is
        message = f"{record.msg} {record.args}"
    record.msg, record.args = scrub_text(message, credentials), ()
    if record.exc_info and record.exc_info[0] is not None:
        # The traceback's text (exception messages hold what the server sent), scrubbed once;
        # formatters print exc_text, and the raw exception object is not handed on.
        record.exc_text = scrub_text(logging.Formatter().formatException(record.exc_info), credentials)
        record.exc_info = None
    if record.stack_info:
        record.stack_info = scrub_text(record.stack_info, credentials)


def _install_log_scrubber():
    previous = logging.getLogRecordFactory()
    if getattr(previous, "backflow_mcp_scrubber", False):
        return

    def make_record(*args, **kwargs):
        record = previous(*args, **kwargs)
        credentials = _CREDENTIALS_IN_PLAY.get()
        if credentials:
            _scrub_record(record, credentials)
        return record

    make_record.backflow_mcp_scrubber = True
    logging.setLogRecordFactory(make_record)


_install_log_scrubber()


def _describe(exc):
    """`Class: message` of the exception that caused it, looking inside (anyio) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        if len(exc.exceptions) > 1:
            return "; ".join(_describe(inner) for inner in exc.exceptions)
        exc = exc.exceptions[0]
    return f"{exc.__class__.__name__}: {exc}" if str(exc) else exc.__class__.__name__


def _connection_lost(exc):
    """The session's transport ended (the server exited or the stream closed), not a refusal."""
    return isinstance(exc, MCPError) and exc.code == types.CONNECTION_CLOSED


@dataclass(frozen=True)
class ServerSpec:
    key: tuple  # (tenant id, name)
    name: str
    transport: str
    command: str = ""
    args: tuple = ()
    env: tuple = ()  # rendered (name, value) pairs
    url: str = ""
    headers: tuple = ()  # resolved (name, value) pairs
    credentials: tuple = ()  # the stored secrets in those headers, scrubbed from what the server answers
    timeout: float = 60.0
    max_concurrency: int = 4
    fingerprint: str = field(default="", compare=False)

    def with_fingerprint(self):
        digest = hashlib.sha256(json.dumps([self.transport, self.command, self.args, self.env, self.url, self.headers]).encode()).hexdigest()
        return ServerSpec(**{**self.__dict__, "fingerprint": digest})


class ServerConnection:
    def __init__(self, spec):
        self.spec = spec
        self.session = None
        self.tools = None
        self.error = None
        self._closed = None
        self._runner = None
        self._attempt = None  # set when the latest connection attempt connected or failed
        self._stage = ""  # how far that attempt got: "transport", then "handshake"
        self._connect_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(spec.max_concurrency)
        self._failures = 0
        self._retry_at = 0.0
        self._stream_refusal = None  # a refusal on a stream no call was waiting on (SSE)

    @property
    def connected(self):
        return self.session is not None

    def _error(self, message):
        return McpClientError(scrub_text(message, self.spec.credentials))

    def _scrubbed(self, model):
        """A copy of an answer (a tool, a tool's result) without the credentials the server was sent."""
        if not self.spec.credentials:
            return model
        return type(model).model_validate(scrub(model.model_dump(by_alias=True, exclude_none=True, mode="json"), self.spec.credentials))

    def _not_connected_within(self, seconds, stage):
        if stage == "transport" and self.spec.transport == "sse":
            return (f"no usable `endpoint` event within {seconds:g} s (an SSE server sends it first, as soon as the stream opens; "
                    "is the url the server's SSE endpoint?)")
        if stage == "transport":
            return f"the connection did not open within {seconds:g} s"
        return f"no answer to the MCP handshake (initialize) within {seconds:g} s"

    def _note_refusal(self, message):
        """Called by the HTTP client when it refuses what the server sent (too large, bad encoding)."""
        waiting = _CALL_REFUSALS.get()
        if waiting is not None:
            waiting.append(message)
        else:
            self._stream_refusal = message

    def _refused(self, waiting):
        """McpClientError naming what the client refused for this call (or on the connection's
        stream, which ended the call), or None."""
        message = waiting[0] if waiting else self._stream_refusal
        self._stream_refusal = None
        return self._error(f"MCP server {self.spec.name!r}: {message}") if message else None

    def _transport(self, stack):
        spec = self.spec
        limit = settings.BACKFLOW_MCP_MAX_MESSAGE_BYTES
        if spec.transport == "stdio":
            params = StdioServerParameters(command=spec.command, args=list(spec.args), env=dict(spec.env) or None)
            return stack.enter_async_context(stdio_client(params))
        if spec.transport == "sse":
            factory = functools.partial(guarded_mcp_http_client, max_message_bytes=min(limit, SDK_SSE_EVENT_LIMIT),
                                        on_refused=self._note_refusal)
            return stack.enter_async_context(sse_client(spec.url, headers=dict(spec.headers), timeout=spec.timeout,
                                                        httpx_client_factory=factory))
        http = guarded_mcp_http_client(headers=dict(spec.headers), max_message_bytes=limit, on_refused=self._note_refusal)
        return self._http(stack, http, limit)

    async def _http(self, stack, http, limit):
        await stack.enter_async_context(http)
        return await stack.enter_async_context(streamable_http_client(self.spec.url, http_client=http, max_sse_event_size=limit))

    async def _run(self, ready):
        """Own the transport in one task (anyio scopes must open and close in the same task).

        Connecting (opening the transport: for SSE, until the server's `endpoint` event; then the
        MCP handshake) must finish within the server's timeout; a connected session lives until
        closed or lost."""
        _CREDENTIALS_IN_PLAY.set(self.spec.credentials)
        _CALL_REFUSALS.set(None)  # this task outlives the call that started it: its refusals are the stream's
        connecting = anyio.CancelScope(deadline=anyio.current_time() + self.spec.timeout)
        try:
            try:
                with connecting:
                    async with AsyncExitStack() as stack:
                        self._stage = "transport"
                        read, write = await self._transport(stack)
                        self._stage = "handshake"
                        session = await stack.enter_async_context(ClientSession(read, write, message_handler=self._on_message))
                        await session.initialize()
                        connecting.deadline = math.inf
                        self.session, self.error, self._failures = session, None, 0
                        ready.set()
                        await self._closed.wait()
                if connecting.cancel_called and not ready.is_set():
                    self.error = self._not_connected_within(self.spec.timeout, self._stage)
            except Exception as exc:  # a crash, a refused connection, a bad handshake
                cause = self._not_connected_within(self.spec.timeout, self._stage) if connecting.cancel_called and not ready.is_set() else None
                self.error = cause or scrub_text(_describe(exc), self.spec.credentials)
            if self.error:
                logger.warning("MCP server %s disconnected: %s", self.spec.name, self.error)
        finally:
            self.session, self.tools = None, None
            if not ready.is_set():  # never connected: back off before the next attempt
                self.error = self.error or "the connection was abandoned"
                self._failures += 1
                self._retry_at = time.monotonic() + min(BACKOFF_MAX, 0.5 * 2 ** (self._failures - 1))
            ready.set()

    async def _on_message(self, message):
        if isinstance(getattr(message, "root", message), types.ToolListChangedNotification):
            self.tools = None

    async def ensure(self, wait=None):
        """The connected session; connects (or joins the attempt in flight) and waits at most `wait`
        seconds (default: the server's timeout) for it. An attempt outlives a caller that stops
        waiting: the next caller finds its connection, or its failure."""
        if self.session is not None:
            return self.session
        async with self._connect_lock:
            if self.session is not None:
                return self.session
            if self._attempt is None or self._attempt.is_set():
                delay = self._retry_at - time.monotonic()
                if delay > 0:
                    raise self._error(f"MCP server {self.spec.name!r} is unavailable ({self.error}); next reconnect in {delay:.1f} s.")
                self._attempt, self._closed, self._stage = asyncio.Event(), asyncio.Event(), "transport"
                self._runner = asyncio.get_running_loop().create_task(self._run(self._attempt))
            attempt = self._attempt
        wait = wait or self.spec.timeout
        with anyio.move_on_after(wait):
            await attempt.wait()
        if not attempt.is_set():
            raise self._error(f"Cannot connect to MCP server {self.spec.name!r}: {self._not_connected_within(wait, self._stage)}.")
        if self.session is None:
            raise self._error(f"Cannot connect to MCP server {self.spec.name!r}: {(self.error or 'the connection closed').rstrip('.')}.")
        return self.session

    async def close(self):
        if self._closed is not None:
            self._closed.set()
        if self._runner is not None:
            if self.session is None:  # still connecting: stop trying
                self._runner.cancel()
            await asyncio.wait([self._runner], timeout=5)

    async def _call(self, operation, timeout):
        # Errors that quote the server are raised `from None`: the cause's own text is unscrubbed.
        # What the HTTP client refused (too large, bad encoding) is said first, and never retried.
        refusals = []
        _CALL_REFUSALS.set(refusals)
        for attempt in (1, 2):
            session = await self.ensure(timeout)
            try:
                async with self._slots:
                    with anyio.fail_after(timeout):
                        return await operation(session)
            except TimeoutError as exc:
                if refused := self._refused(refusals):
                    raise refused from None
                raise self._error(f"MCP server {self.spec.name!r} did not answer within {timeout:g} s.") from exc
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
                if refused := self._refused(refusals):
                    await self.close()
                    raise refused from None
                # The connection died (server crashed or went away): reconnect once and retry.
                await self.close()
                if attempt == 2:
                    raise self._error(f"MCP server {self.spec.name!r} went away ({exc.__class__.__name__}).") from exc
            except McpClientError:
                raise
            except Exception as exc:
                if refused := self._refused(refusals):
                    if _connection_lost(exc):
                        await self.close()
                    raise refused from None
                if _connection_lost(exc):  # e.g. the stdio server was killed: start it again, once
                    await self.close()
                    if attempt == 2:
                        raise self._error(f"MCP server {self.spec.name!r} went away ({exc}).") from None
                    continue
                if self.session is None:  # the transport failed under the call
                    if attempt == 2:
                        raise self._error(f"MCP server {self.spec.name!r} failed: {exc}") from None
                    continue
                raise self._error(f"MCP server {self.spec.name!r} refused the call: {exc}") from None

    def _strict(self, model, what):
        """The answer, if it is JSON the platform accepts (the SDK's parser takes NaN, Infinity and
        1e999, and ~200 levels of nesting); else McpClientError naming why."""
        try:
            check_value(model.model_dump(by_alias=True, exclude_none=True))
        except JsonBodyError as exc:
            raise self._error(f"MCP server {self.spec.name!r} answered {what} that is not acceptable JSON: {exc}") from None
        return model

    async def list_tools(self, timeout=None):
        if self.tools is None or self.session is None:
            async def fetch(session):
                tools, cursor = [], None
                for _ in range(MAX_TOOL_PAGES):
                    page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor) if cursor else None)
                    tools += page.tools
                    cursor = page.next_cursor
                    if not cursor:
                        return tools
                raise self._error(f"MCP server {self.spec.name!r} lists its tools over more than {MAX_TOOL_PAGES} pages "
                                  "(its cursor does not end); the platform reads at most that many.")
            tools = await self._call(fetch, timeout or self.spec.timeout)
            self.tools = [self._scrubbed(self._strict(tool, "a tool list")) for tool in tools]
        return self.tools

    async def call_tool(self, name, arguments, timeout=None):
        result = await self._call(lambda session: session.call_tool(name, arguments or {}), timeout or self.spec.timeout)
        return self._scrubbed(self._strict(result, f"a result of {name!r}"))


class ConnectionManager:
    def __init__(self):
        self._connections = {}

    async def connection(self, spec):
        current = self._connections.get(spec.key)
        if current is not None and current.spec.fingerprint != spec.fingerprint:
            await current.close()  # the server's definition changed
            current = None
        if current is None:
            current = self._connections[spec.key] = ServerConnection(spec)
        return current

    def known(self, key):
        return self._connections.get(key)

    async def close_all(self):
        for connection in list(self._connections.values()):
            await connection.close()
        self._connections.clear()


class BackgroundLoop:
    """A process-wide event loop in a daemon thread, for connections that outlive any one task."""

    def __init__(self):
        self._loop = None
        self._lock = threading.Lock()
        self.manager = ConnectionManager()

    def loop(self):
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                threading.Thread(target=self._loop.run_forever, name="backflow-mcp-client", daemon=True).start()
                atexit.register(self.shutdown)
            return self._loop

    def run(self, coroutine, timeout=None):
        """Run on the background loop from sync code; waits at most `timeout` seconds."""
        future = asyncio.run_coroutine_threadsafe(coroutine, self.loop())
        return future.result(timeout)

    async def arun(self, coroutine):
        """Run on the background loop from another event loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coroutine, self.loop()))

    def shutdown(self):
        if self._loop is not None and self._loop.is_running():
            try:
                asyncio.run_coroutine_threadsafe(self.manager.close_all(), self._loop).result(10)
            except Exception:  # at exit: best effort, children are also reaped with the process group
                logger.exception("Closing MCP connections failed")


CLIENT = BackgroundLoop()


async def _with_connection(spec, operation):
    _CREDENTIALS_IN_PLAY.set(spec.credentials)  # this task's context only
    connection = await CLIENT.manager.connection(spec)
    return await operation(connection)


def _wait(spec, operation, timeout):
    """Run `operation` on the background loop for a sync caller. The inner timeouts (connecting,
    the call) fire first with the clearer message; this one only stops a caller from waiting
    forever on a loop that is stuck, and says so in the same terms."""
    limit = _outer(spec, timeout)
    future = asyncio.run_coroutine_threadsafe(_with_connection(spec, operation), CLIENT.loop())
    try:
        return future.result(limit)
    except TimeoutError:
        if future.done():
            raise
        future.cancel()
        raise McpClientError(f"MCP server {spec.name!r} did not connect and answer within {limit:g} s.") from None


def call_tool(spec, name, arguments, timeout=None):
    return _wait(spec, lambda c: c.call_tool(name, arguments, timeout), timeout)


def list_tools(spec, timeout=None):
    return _wait(spec, lambda c: c.list_tools(timeout), timeout)


async def acall_tool(spec, name, arguments, timeout=None):
    return await CLIENT.arun(_with_connection(spec, lambda c: c.call_tool(name, arguments, timeout)))


async def alist_tools(spec, timeout=None):
    return await CLIENT.arun(_with_connection(spec, lambda c: c.list_tools(timeout)))


def _outer(spec, timeout):
    # Connecting plus the call; the inner timeouts fire first and give the clearer message.
    return (timeout or spec.timeout) * 2 + 5
