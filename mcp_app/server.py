"""The MCP server: the SDK's low-level Server over the tool registry.

Every transport (stdio now, SSE and Streamable HTTP later) sets CONNECTION for the task that
delivers a message; the handlers read it, so each connection lists and calls only its tools.
Bad arguments and refused calls come back as `isError` results that say what to fix; nothing a
client sends can crash the server.
"""

import contextvars
import json
import logging
import time
import warnings
from dataclasses import dataclass

import mcp_types as types
import pydantic_core
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections
from mcp.server import Server
from mcp.shared.exceptions import MCPDeprecationWarning
from pydantic import ValidationError

from backflow import metrics
from backflow.errors import InvalidInput, ServiceError, TooManyRequests
from backflow.outages import RETRY_AFTER_SECONDS, describe, outage_message, reconnecting
from backflow.ratelimit import retry_after, retry_after_each
from backflow.redaction import redact
from backflow.sync import GroupedTrips, in_thread
from backflow.validation import schema_errors
from mcp_app import resources
from mcp_app.registry import REGISTRY, published, visible_tools
from tenants.services import audit_row, audit_rows_insert

logger = logging.getLogger("backflow.mcp")
# The issue asks for logging/setLevel; the SDK warns that the 2026-07-28 protocol deprecates it.
warnings.filterwarnings("ignore", message="The logging capability is deprecated", category=MCPDeprecationWarning)
CONNECTION = contextvars.ContextVar("backflow_mcp_connection")

INSTRUCTIONS = (
    "Backflow hosts a tenant's HTTP integrations, the API routes that chain them, workflows, apps and "
    "entity collections. Build and test in a loop: create_integration (auth names a stored secret: "
    "list_secrets), try an endpoint with call_endpoint, create_route, then test_route and read its "
    "trace (each action's URL, upstream status and result); fix with update_integration or "
    "update_route and test again. list_route_invocations and get_run show what real calls did. "
    "Every error says which field to fix. Reference: the backflow://docs/{topic} resources "
    "(build-loop, templates, auth, routes, workflows, filters, apps)."
)
# What a tool handler may report while it works: (progress, total, message) -> awaitable, or None.
PROGRESS = contextvars.ContextVar("backflow_mcp_progress", default=None)
LOG_LEVELS = ("debug", "info", "notice", "warning", "error", "critical", "alert", "emergency")


def json_result(value, *, is_error=False):
    """The value as JSON text, and (for a success) as structuredContent, which then satisfies the
    tool's outputSchema. An error carries its JSON as text only: clients validate any
    structuredContent against the outputSchema, errors included (the TypeScript SDK does)."""
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(value, ensure_ascii=False, default=str))],
        structured_content=None if is_error else value,
        is_error=is_error,
    )


def error_result(message, errors=None, **extra):
    body = {"error": message, **extra}
    if errors:
        body["errors"] = errors
    return json_result(body, is_error=True)


def _check_connections(*, health_check):
    """close_old_connections() without CONN_MAX_AGE: tool calls run on the threads of
    backflow.sync's pool (or the stdio loop's), each of which keeps its database connection from
    one call to the next. Closing it after every call (CONN_MAX_AGE=0, the default) made each call
    open a new one, and on SQLite pay the WAL checkpoint the last connection does on close: 64
    calls/s instead of 215 under load (bench/load_mcp.py). A connection left in a transaction, or
    one that fails its check (before a call; after a call only if it raised database errors), is
    closed: the next query opens a fresh one, so a restarted database costs no call."""
    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        if conn.get_autocommit() != conn.settings_dict["AUTOCOMMIT"] or ((health_check or conn.errors_occurred) and not conn.is_usable()):
            conn.close()
        else:
            conn.errors_occurred = False


class TooManyCalls(TooManyRequests):
    def __init__(self, wait):
        super().__init__(f"Too many tool calls; retry in {wait} s.", retry_after=wait)


_COUNT_NOW = object()


def _rate_counter(ctx):
    return f"mcp:{ctx.rate_key}"


def _admit(ctx, name, definition, args, wait=_COUNT_NOW):
    """Refuse the call (unknown or hidden tool, over the rate limit, bad arguments) or let it run.
    `wait`: the call's rate-limit verdict when it was counted already (with the others of its trip)."""
    if wait is _COUNT_NOW:
        wait = retry_after(_rate_counter(ctx), settings.BACKFLOW_MCP_RATE_LIMIT, name="mcp_tool_calls") if ctx.rate_key else None
    if definition is None:
        raise ServiceError(f"Unknown tool {name!r}. Available tools: {', '.join(sorted(ctx.allowed))}.")
    if wait:
        raise TooManyCalls(wait)
    errors = schema_errors(definition.input_schema, args)
    if errors:
        raise InvalidInput(f"Invalid arguments for {name}.", errors)


def _failure(name, exc):
    """The isError result and audit outcome of a call that raised."""
    if isinstance(exc, ServiceError):
        extra = {"retryAfterSeconds": exc.retry_after} if isinstance(exc, TooManyRequests) else {}
        return error_result(str(exc), exc.errors, **extra), f"error: {exc.message}"
    outage = outage_message(exc)
    if outage:  # the database (or Redis) went away: retryable, not a bug of the tool
        metrics.outage(outage)
        logger.warning("MCP tool %s: %s", name, describe(exc))
        return error_result(f"{name} did not complete: {outage}", retryAfterSeconds=RETRY_AFTER_SECONDS), "error: service unavailable"
    logger.exception("MCP tool %s failed", name, exc_info=exc)
    return error_result(f"{name} failed unexpectedly; the server logged the details."), "crash"


def _record(ctx, name, args, outcome, started, admitted, trip=None):
    """The call's audit event (refused calls too) and metrics; a failure to write the event never
    fails the call. In a trip of tool calls (`trip`, a _ToolTrip) the event is inserted with the
    trip's others after its last call."""
    metrics.tool_call(name if name in REGISTRY else "unknown", "ok" if outcome == "ok" else "error" if admitted else "refused",
                      ctx.tenant.slug if ctx.tenant is not None else None)
    if ctx.tenant is not None:
        try:
            row = _audit_row(ctx, name, args, outcome, started)
            if trip is None:
                audit_rows_insert([row])
            else:
                trip.add(name, row)
        except Exception as exc:
            _audit_failed(exc, name)
    logger.debug("tools/call %s -> %s (%.1f ms)", name, outcome, (time.monotonic() - started) * 1000)


def _audit_failed(exc, names):
    if outage_message(exc):
        logger.warning("Could not record the audit event for %s: %s", names, describe(exc))
    else:
        logger.exception("Could not record the audit event for %s", names)


class _ToolTrip:
    """One trip of a tenant's tool calls (_tool_calls). Their rate-limit counts are made together
    before the first call runs (on Redis, one round trip for the trip instead of one per call, each
    waited for in turn), and their audit events are inserted in one statement after the last call
    and before any of them is answered (one INSERT, on PostgreSQL one commit, per trip: the INSERT
    was the largest part of a call's work on its thread). A batch the database refuses for one of
    its rows is inserted again row by row, so only that row's event is lost (logged), as before."""

    def __init__(self, calls):
        counted = [call for call in calls if call[0].rate_key]
        try:
            waits = retry_after_each([_rate_counter(call[0]) for call in counted], settings.BACKFLOW_MCP_RATE_LIMIT,
                                     name="mcp_tool_calls")
        except Exception:  # the cache failed (not a Redis outage: those fail open): each call counts itself and fails alone
            counted, waits = [], []
        self._waits = {id(call): wait for call, wait in zip(counted, waits)}
        self.names, self.rows = [], []
        self.unchecked = False  # a call made no query: the connection is checked before the INSERT

    def call(self, call):
        """Run one of the trip's calls (ctx, name, definition, args) with its counted verdict."""
        return _call_sync(*call, trip=self, wait=self._waits.get(id(call), _COUNT_NOW))

    def add(self, name, row):
        self.names.append(name)
        self.rows.append(row)

    def insert(self):
        if not self.rows:
            return
        _check_connections(health_check=self.unchecked)
        try:
            audit_rows_insert(self.rows)
        except Exception as exc:
            if outage_message(exc) or len(self.rows) == 1:
                _audit_failed(exc, ", ".join(self.names))
            else:
                for name, row in zip(self.names, self.rows):
                    self._insert_one(name, row)
        finally:
            _check_connections(health_check=False)

    @staticmethod
    def _insert_one(name, row):
        try:
            audit_rows_insert([row])
        except Exception as exc:
            _audit_failed(exc, name)


def _with_checked_connections(fn):
    """Runs `fn` on a thread whose database connection is checked before (the database may have
    closed it while idle) and, after database errors, again after."""

    def checked(*args):
        _check_connections(health_check=True)
        try:
            return fn(*args)
        finally:
            _check_connections(health_check=False)

    return checked


def _call_sync(ctx, name, definition, args, trip=None, wait=_COUNT_NOW):
    """Admission, the tool and its audit event in one trip to a thread (the event inserted with the
    others of `trip`, a _ToolTrip, when given).

    A read-only tool skips the connection's health check (on PostgreSQL a `SELECT 1`, a round trip
    per call) and is run once more on a new connection when its first try fails on a dropped one
    (reads can be repeated); a tool that writes keeps the check, so that it never runs twice. When
    no query of the call went through (refused, or failed before reading), the check runs before
    the audit event's INSERT, so that a dropped connection does not lose the event."""
    read_only = definition is not None and definition.read_only
    _check_connections(health_check=not read_only)
    answered = []  # a query of this call went through: its connection is alive for the audit event

    def noting(execute, *query):
        result = execute(*query)
        answered.append(True)
        return result

    try:
        with connections[DEFAULT_DB_ALIAS].execute_wrapper(noting):
            result, outcome, started, admitted = _run(ctx, name, definition, args, reconnecting if read_only else None, wait)
        if read_only and not answered:  # refused or failed before any query: check before the audit INSERT
            if trip is None:
                _check_connections(health_check=True)
            else:
                trip.unchecked = True
        _record(ctx, name, args, outcome, started, admitted, trip)
        return result
    finally:
        _check_connections(health_check=False)


# A tenant's tool calls that come while its threads are all busy run one after another in the next
# trip (each in its caller's context: the audit event keeps its request id), counted together at its
# start and audited together at its end (_ToolTrip); at most 16, so that a slow one holds back few of
# the tenant's own calls.
_tool_calls = GroupedTrips(_ToolTrip.call, limit=16, prepare=lambda owner, calls: _ToolTrip(calls), conclude=_ToolTrip.insert)


def _call_local(ctx, name, definition, args):
    """A read-only tool in local file mode: files held in memory, no database connection to check,
    no audit event (there is no tenant)."""
    result, outcome, started, admitted = _run(ctx, name, definition, args)
    _record(ctx, name, args, outcome, started, admitted)
    return result


def _run(ctx, name, definition, args, wrap=None, wait=_COUNT_NOW):
    """(result, audit outcome, when it started, whether it was admitted): the tool, `wrap`ped if
    given, after admission (`wait`: see _admit)."""
    started, admitted = time.monotonic(), False
    try:
        _admit(ctx, name, definition, args, wait)
        admitted = True
        result, outcome = json_result((wrap(definition.handler) if wrap else definition.handler)(ctx, args)), "ok"
    except Exception as exc:
        result, outcome = _failure(name, exc)
    return result, outcome, started, admitted


async def _call_async(ctx, name, definition, args):
    """A tool that waits on something outside (a run, an upstream): its waits are async, so no
    thread is held while it waits; admission and the audit event each take a short trip."""
    started, admitted = time.monotonic(), False
    try:
        await in_thread(ctx.owner, _with_checked_connections(_admit), ctx, name, definition, args)
        admitted = True
        result, outcome = json_result(await definition.handler(ctx, args)), "ok"
    except Exception as exc:
        result, outcome = _failure(name, exc)
    await in_thread(ctx.owner, _with_checked_connections(_record), ctx, name, args, outcome, started, admitted)
    return result


AUDITED_IDENTIFIERS = ("name", "id", "collection", "path", "method", "integration", "workflow")


def _audit_row(ctx, name, args, outcome, started):
    """The call's audit event. Audit summaries carry no payload: the arguments' names and the
    identifiers of what the call acted on, never values such as entity data, inputs or documents
    (a key without the resource's scope reads /api/audit/ too)."""
    target = {k: args[k] for k in AUDITED_IDENTIFIERS if isinstance(args.get(k), str) and len(args[k]) <= 200}
    return audit_row(
        tenant=ctx.tenant, actor=ctx.actor, action="mcp.tool_call", object_type="tool", object_id=name,
        summary={"outcome": outcome, "durationMs": round((time.monotonic() - started) * 1000, 1),
                 "arguments": sorted(str(k)[:100] for k in list(args)[:50]), "target": redact(target)},
    )


async def call_tool(ctx, name, args):
    """Validate, run and record one tool call; always a CallToolResult, never an exception."""
    definition = REGISTRY.get(name) if name in ctx.allowed else None
    args = args if isinstance(args, dict) else {}
    if definition is not None and definition.is_async:
        return await _call_async(ctx, name, definition, args)
    if ctx.local and definition is not None and definition.read_only:
        # Local files, read from memory (a stat when autoReload is on): answered on the loop, as a
        # trip to a thread and back costs several times the read. One stdio process serves one client.
        return _call_local(ctx, name, definition, args)
    return await _tool_calls(ctx.owner, (ctx, name, definition, args))


async def _on_list_tools(request_ctx, params):
    ctx = CONNECTION.get()
    return types.ListToolsResult(tools=list(published(ctx.allowed)))


async def _on_call_tool(request_ctx, params):
    ctx = CONNECTION.get()
    meta = request_ctx.meta or {}
    wants_progress = meta.get("progress_token", meta.get("progressToken")) is not None
    reset = PROGRESS.set(_progress_reporter(request_ctx, ctx) if wants_progress else None)
    try:
        return await call_tool(ctx, params.name, params.arguments)
    finally:
        PROGRESS.reset(reset)


def _progress_reporter(request_ctx, ctx):
    """Progress of this request (on its own stream, against its token), and the same as a log
    message when the connection asked for info-level logs."""
    async def report(progress, total, message):
        await request_ctx.session.report_progress(progress, total, message)
        if LOG_LEVELS.index(ctx.log_level) <= LOG_LEVELS.index("info"):
            await request_ctx.session.send_log_message(level="info", data=message, logger="backflow",
                                                       related_request_id=request_ctx.request_id)

    return report


async def _on_set_logging_level(request_ctx, params):
    """logging/setLevel: the connection's notifications/message go out from this level up."""
    CONNECTION.get().log_level = params.level
    return types.EmptyResult()


async def _on_list_resources(request_ctx, params):
    return await resources.list_resources(CONNECTION.get())


async def _on_list_resource_templates(request_ctx, params):
    return await resources.list_resource_templates(CONNECTION.get())


async def _on_read_resource(request_ctx, params):
    return await resources.read_resource(CONNECTION.get(), str(params.uri), call_tool)


async def _on_list_prompts(request_ctx, params):
    return await resources.list_prompts(CONNECTION.get())


async def _on_get_prompt(request_ctx, params):
    return await resources.get_prompt(CONNECTION.get(), params.name, params.arguments)


def build_server():
    visible_tools(scopes=())  # make sure every tool module is imported
    return Server(
        "backflow", version="1.0.0", title="Backflow", instructions=INSTRUCTIONS,
        on_list_tools=_on_list_tools, on_call_tool=_on_call_tool,
        on_list_resources=_on_list_resources, on_list_resource_templates=_on_list_resource_templates,
        on_read_resource=_on_read_resource, on_list_prompts=_on_list_prompts, on_get_prompt=_on_get_prompt,
        on_set_logging_level=_on_set_logging_level,
    )


# -- frames that are not one JSON-RPC message -----------------------------------------------------

@dataclass(frozen=True)
class Rejection:
    """Why a frame is not one JSON-RPC 2.0 message MCP can use, and the error that answers it."""

    code: int
    message: str
    id: str | int | None = None  # the frame's id when it is a valid one, else null (JSON-RPC 2.0 §5)
    reply: bool = True  # False for a notification or a client response: JSON-RPC never answers those

    def error(self):
        return types.JSONRPCError(jsonrpc="2.0", id=self.id, error=types.ErrorData(code=self.code, message=self.message))


def _valid_id(value):
    return isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool))


def check_message(raw, limit=None):
    """None if `raw` (one frame: a stdio line, an HTTP body) is one valid JSON-RPC 2.0 message, else
    the Rejection that answers it.

    Every transport asks this before the SDK parses a frame, because the SDK alone answers some
    frames with nothing at all (stdio drops what it cannot parse, so a request whose id is fine but
    whose params are not an object waits forever), reads a request whose id is an object or a
    float as a notification (never answered), and accepts NaN, which is not JSON and which the
    audit log cannot store. Parsed with the SDK's own parser (pydantic_core), so both agree on
    every frame that passes: duplicate keys (the last one wins), nesting depth, UTF-8.
    """
    if limit is not None and len(raw) > limit:
        return Rejection(types.INVALID_REQUEST, f"Invalid Request: the message is larger than {limit} bytes.")
    try:
        message = pydantic_core.from_json(raw, allow_inf_nan=False)
    except ValueError as exc:  # also bad UTF-8, NaN/Infinity and nesting deeper than the parser's limit
        return Rejection(types.PARSE_ERROR, f"Parse error: {exc}; send one JSON-RPC 2.0 message as UTF-8 JSON.")
    if isinstance(message, list):
        return Rejection(types.INVALID_REQUEST, "Invalid Request: batches are not supported (MCP dropped JSON-RPC "
                                                "batching in 2025-06-18); send one message at a time.")
    if not isinstance(message, dict):
        return Rejection(types.INVALID_REQUEST, "Invalid Request: a JSON-RPC message is a JSON object.")
    request_id = message.get("id") if _valid_id(message.get("id")) else None
    if "method" not in message and ("result" in message or "error" in message):  # a client's response
        return None if _valid_message(message) else Rejection(
            types.INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 response.", request_id, reply=False)
    if message.get("jsonrpc") != "2.0":
        return Rejection(types.INVALID_REQUEST, 'Invalid Request: "jsonrpc" must be "2.0".', request_id)
    if not isinstance(message.get("method"), str):
        return Rejection(types.INVALID_REQUEST, 'Invalid Request: "method" must be a string.', request_id)
    if "id" in message and request_id is None:  # MCP: a string or an integer, never null
        return Rejection(types.INVALID_REQUEST, 'Invalid Request: "id" must be a string or an integer.')
    params = message.get("params")
    if isinstance(params, list):  # JSON-RPC's positional params; every MCP method takes named ones
        return Rejection(types.INVALID_PARAMS, 'Invalid params: "params" must be an object.', request_id, reply="id" in message)
    if params is not None and not isinstance(params, dict):
        return Rejection(types.INVALID_REQUEST, 'Invalid Request: "params" must be an object.', request_id)
    if not _valid_message(message):  # anything the checks above missed: still answered, never dropped
        return Rejection(types.INVALID_REQUEST, "Invalid Request: not a JSON-RPC 2.0 message.", request_id)
    return None


def _valid_message(message):
    try:
        types.jsonrpc_message_adapter.validate_python(message, by_name=False)
    except ValidationError:
        return False
    return True
