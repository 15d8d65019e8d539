"""Outages of the services Backflow runs on (the database, Redis), told apart from bugs.

Every front door gives the same clear, retryable answer for them: 503 with Retry-After and a JSON
error naming the service (REST, the MCP and tenant-route ASGI apps), or an `isError` tool result
(MCP tools). No process needs a restart: Django opens a new database connection for each
request of its own, the raw ASGI apps' work goes through `reconnecting`, redis-py reconnects at
the next command.
"""

import functools
import sys

from django.db import InterfaceError, OperationalError, connections

DATABASE_ERRORS = (OperationalError, InterfaceError)
DATABASE_UNAVAILABLE = "The database is unavailable right now; retry shortly."
REDIS_UNAVAILABLE = "Redis (the shared cache and channel layer) is unavailable right now; retry shortly."
RETRY_AFTER_SECONDS = 2


def redis_errors():
    """redis-py's connection and timeout errors, or () while redis-py is not imported: nothing can
    raise them then, and a process without REDIS_URL (mcp_stdio above all) skips its import."""
    exceptions = sys.modules.get("redis.exceptions")
    return (exceptions.ConnectionError, exceptions.TimeoutError) if exceptions else ()


def outage_message(exc):
    """The message for an outage of the database or Redis behind `exc` (also inside an exception
    group or as the cause of a wrapping error), or None when `exc` is anything else."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, DATABASE_ERRORS):
            return DATABASE_UNAVAILABLE
        if isinstance(exc, redis_errors()):
            return REDIS_UNAVAILABLE
        if isinstance(exc, BaseExceptionGroup):  # anyio task groups wrap what their tasks raised
            return next(filter(None, map(outage_message, exc.exceptions)), None)
        exc = exc.__cause__
    return None


def describe(exc):
    """One line for the log: the outage and what the driver said (no traceback: not a bug)."""
    return f"{type(exc).__module__}.{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}"


def reconnecting(fn):
    """Wrap sync, idempotent database work of the raw ASGI apps (MCP, tenant routes).

    Unlike a Django view, whose connections are closed at the end of each request, that work runs
    in one long-lived thread whose connection is kept from request to request and never checked:
    once the database dropped it (a restart, a network cut), every later request failed on it
    ("the connection is closed"), even with the database back, until daphne was restarted. Now a
    failed connection is closed and `fn` runs once more on a new one; with the database really
    down the second try fails as fast as the first (503).
    """

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except DATABASE_ERRORS:
            opened = connections.all(initialized_only=True)
            if any(conn.in_atomic_block for conn in opened):
                raise  # never replay part of a transaction
            for conn in opened:
                conn.close()
            return fn(*args, **kwargs)

    return wrapper
