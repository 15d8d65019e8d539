"""Connections to external MCP servers, kept open and reused by every workflow run of a process.

All of them live on one background event loop (a thread), so sync callers (the task worker) and
async callers (daphne) share them: lazy connect, reuse, reconnect with backoff after a crash,
the tool list cached until the server says it changed, a timeout per call, a bound on calls in
flight per server, and stdio children stopped when the process exits.
"""

import asyncio
import atexit
import hashlib
import json
import logging
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

from backflow.egress import guarded_mcp_http_client

logger = logging.getLogger("backflow.mcp_client")
BACKOFF_MAX = 30.0


class McpClientError(Exception):
    """A call could not be made or did not finish; the message names the server and cause."""


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
        self._connect_lock = asyncio.Lock()
        self._slots = asyncio.Semaphore(spec.max_concurrency)
        self._failures = 0
        self._retry_at = 0.0

    @property
    def connected(self):
        return self.session is not None

    def _transport(self, stack):
        spec = self.spec
        if spec.transport == "stdio":
            params = StdioServerParameters(command=spec.command, args=list(spec.args), env=dict(spec.env) or None)
            return stack.enter_async_context(stdio_client(params))
        if spec.transport == "sse":
            return stack.enter_async_context(sse_client(spec.url, headers=dict(spec.headers), timeout=spec.timeout,
                                                        httpx_client_factory=guarded_mcp_http_client))
        http = guarded_mcp_http_client(headers=dict(spec.headers))
        return self._http(stack, http)

    async def _http(self, stack, http):
        await stack.enter_async_context(http)
        return await stack.enter_async_context(streamable_http_client(self.spec.url, http_client=http))

    async def _run(self, ready):
        """Own the transport in one task (anyio scopes must open and close in the same task)."""
        try:
            async with AsyncExitStack() as stack:
                read, write = await self._transport(stack)
                session = await stack.enter_async_context(ClientSession(read, write, message_handler=self._on_message))
                with anyio.fail_after(self.spec.timeout):
                    await session.initialize()
                self.session, self.error, self._failures = session, None, 0
                ready.set()
                await self._closed.wait()
        except Exception as exc:  # a crash, a refused connection, a bad handshake
            self.error = _describe(exc)
            logger.warning("MCP server %s disconnected: %s", self.spec.name, self.error)
        finally:
            self.session, self.tools = None, None
            ready.set()

    async def _on_message(self, message):
        if isinstance(getattr(message, "root", message), types.ToolListChangedNotification):
            self.tools = None

    async def ensure(self):
        if self.session is not None:
            return self.session
        async with self._connect_lock:
            if self.session is not None:
                return self.session
            wait = self._retry_at - time.monotonic()
            if wait > 0:
                raise McpClientError(f"MCP server {self.spec.name!r} is unavailable ({self.error}); next reconnect in {wait:.1f} s.")
            ready, self._closed = asyncio.Event(), asyncio.Event()
            self._runner = asyncio.get_running_loop().create_task(self._run(ready))
            await ready.wait()
            if self.session is None:
                self._failures += 1
                self._retry_at = time.monotonic() + min(BACKOFF_MAX, 0.5 * 2 ** (self._failures - 1))
                raise McpClientError(f"Cannot connect to MCP server {self.spec.name!r}: {self.error.rstrip('.')}.")
            return self.session

    async def close(self):
        if self._closed is not None:
            self._closed.set()
        if self._runner is not None:
            with anyio.move_on_after(5):
                await self._runner

    async def _call(self, operation, timeout):
        for attempt in (1, 2):
            session = await self.ensure()
            try:
                async with self._slots:
                    with anyio.fail_after(timeout):
                        return await operation(session)
            except TimeoutError as exc:
                raise McpClientError(f"MCP server {self.spec.name!r} did not answer within {timeout:g} s.") from exc
            except (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream) as exc:
                # The connection died (server crashed or went away): reconnect once and retry.
                await self.close()
                if attempt == 2:
                    raise McpClientError(f"MCP server {self.spec.name!r} went away ({exc.__class__.__name__}).") from exc
            except McpClientError:
                raise
            except Exception as exc:
                if _connection_lost(exc):  # e.g. the stdio server was killed: start it again, once
                    await self.close()
                    if attempt == 2:
                        raise McpClientError(f"MCP server {self.spec.name!r} went away ({exc}).") from exc
                    continue
                if self.session is None:  # the transport failed under the call
                    if attempt == 2:
                        raise McpClientError(f"MCP server {self.spec.name!r} failed: {exc}") from exc
                    continue
                raise McpClientError(f"MCP server {self.spec.name!r} refused the call: {exc}") from exc

    async def list_tools(self, timeout=None):
        if self.tools is None or self.session is None:
            async def fetch(session):
                tools, cursor = [], None
                while True:
                    page = await session.list_tools(cursor=cursor) if cursor else await session.list_tools()
                    tools += page.tools
                    cursor = page.next_cursor
                    if not cursor:
                        return tools
            self.tools = await self._call(fetch, timeout or self.spec.timeout)
        return self.tools

    async def call_tool(self, name, arguments, timeout=None):
        return await self._call(lambda session: session.call_tool(name, arguments or {}), timeout or self.spec.timeout)


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
    connection = await CLIENT.manager.connection(spec)
    return await operation(connection)


def call_tool(spec, name, arguments, timeout=None):
    return CLIENT.run(_with_connection(spec, lambda c: c.call_tool(name, arguments, timeout)), _outer(spec, timeout))


def list_tools(spec, timeout=None):
    return CLIENT.run(_with_connection(spec, lambda c: c.list_tools(timeout)), _outer(spec, timeout))


async def acall_tool(spec, name, arguments, timeout=None):
    return await CLIENT.arun(_with_connection(spec, lambda c: c.call_tool(name, arguments, timeout)))


async def alist_tools(spec, timeout=None):
    return await CLIENT.arun(_with_connection(spec, lambda c: c.list_tools(timeout)))


def _outer(spec, timeout):
    # Connecting plus the call; the inner timeouts fire first and give the clearer message.
    return (timeout or spec.timeout) * 2 + 5
