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

import mcp_types as types
from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections
from mcp.server import Server

from backflow.errors import InvalidInput, ServiceError
from backflow.ratelimit import retry_after
from backflow.redaction import redact
from backflow.validation import schema_errors
from mcp_app.registry import REGISTRY, visible_tools
from tenants.services import audit_record

logger = logging.getLogger("backflow.mcp")
CONNECTION = contextvars.ContextVar("backflow_mcp_connection")

INSTRUCTIONS = (
    "Backflow hosts a tenant's HTTP integrations and the API routes that chain them. Create an "
    "integration (base URL, auth naming a stored secret, endpoints), then routes whose actions call "
    "its endpoints by name. Every error says which field to fix."
)


def json_result(value, *, is_error=False):
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(value, ensure_ascii=False, default=str))],
        structured_content=value,
        is_error=is_error,
    )


def error_result(message, errors=None, **extra):
    body = {"error": message, **extra}
    if errors:
        body["errors"] = errors
    return json_result(body, is_error=True)


def _call_sync(ctx, name, definition, args):
    """Rate limit, validation, the tool and its audit event in one trip to the sync thread.
    Refused calls (unknown or hidden tool, over the rate limit) are audited too."""
    close_old_connections()  # long-lived processes: drop connections the database closed
    started = time.monotonic()
    try:
        wait = retry_after(f"mcp:{ctx.rate_key}", settings.BACKFLOW_MCP_RATE_LIMIT) if ctx.rate_key else None
        try:
            if definition is None:
                raise ServiceError(f"Unknown tool {name!r}. Available tools: {', '.join(sorted(ctx.allowed))}.")
            if wait:
                raise ServiceError(f"Too many tool calls; retry in {wait} s.")
            errors = schema_errors(definition.input_schema, args)
            if errors:
                raise InvalidInput(f"Invalid arguments for {name}.", errors)
            result, outcome = json_result(definition.handler(ctx, args)), "ok"
        except ServiceError as exc:
            extra = {"retryAfterSeconds": wait} if wait else {}
            result, outcome = error_result(str(exc), exc.errors, **extra), f"error: {exc.message}"
        except Exception:
            logger.exception("MCP tool %s failed", name)
            result, outcome = error_result(f"{name} failed unexpectedly; the server logged the details."), "crash"
        try:
            _audit(ctx, name, args, outcome, started)
        except Exception:
            logger.exception("Could not record the audit event for %s", name)
        logger.debug("tools/call %s -> %s (%.1f ms)", name, outcome, (time.monotonic() - started) * 1000)
        return result
    finally:
        close_old_connections()


def _audit(ctx, name, args, outcome, started):
    if ctx.tenant is None:
        return
    audit_record(
        tenant=ctx.tenant, actor=ctx.actor, action="mcp.tool_call", object_type="tool", object_id=name,
        summary={"outcome": outcome, "durationMs": round((time.monotonic() - started) * 1000, 1), "arguments": redact(args)},
    )


async def call_tool(ctx, name, args):
    """Validate, run and record one tool call; always a CallToolResult, never an exception."""
    definition = REGISTRY.get(name) if name in ctx.allowed else None
    return await sync_to_async(_call_sync, thread_sensitive=True)(ctx, name, definition, args if isinstance(args, dict) else {})


async def _on_list_tools(request_ctx, params):
    ctx = CONNECTION.get()
    return types.ListToolsResult(tools=[REGISTRY[name].to_mcp() for name in sorted(ctx.allowed)])


async def _on_call_tool(request_ctx, params):
    return await call_tool(CONNECTION.get(), params.name, params.arguments)


def build_server():
    visible_tools(scopes=())  # make sure every tool module is imported
    return Server(
        "backflow", version="1.0.0", title="Backflow", instructions=INSTRUCTIONS,
        on_list_tools=_on_list_tools, on_call_tool=_on_call_tool,
    )
