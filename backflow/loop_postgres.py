"""PostgreSQL from the event loop itself (psycopg's AsyncConnection), for the tenant routes' hot
path in production: the tenant row read on every request, and the invocation records' inserts.

On PostgreSQL each of those took a trip to a pool thread: the hand-off and the wake-up of a
sleeping thread cost about as much as the query (a loopback round trip here is ~150 us), and a
thread waiting for the database's answer then waited for the GIL that the busy event loop held
(up to the interpreter's 5 ms switch interval), so a loaded server's admissions waited 20-30 ms
for trips of two round trips (issue 17). Here the loop sends the statement and awaits the answer
like any other socket.

Each event loop gets one connection per `LoopPostgres`, made in the background as Django makes
the database's (the same parameters, type adapters, time zone and role; autocommit), used by one
statement at a time. Unlike Django's, it prepares its statements (server-side binding, psycopg's
prepare threshold) unless OPTIONS sets `prepare_threshold` (then as Django's) or
BACKFLOW_LOOP_POSTGRES_PREPARE is off (a pooler that cannot keep prepared statements): the same
tenant read and insert come again and again, and a prepared one skips the server's parse and plan
(a tenant-row read at one client here: ~165 against ~240 us), and a row read again that reads
the same is the instance made of it before. It never makes a caller wait for more than the
statement: while it has no connection (being made, or the database refused the last attempt less
than RETRY_AFTER seconds ago), when WAITING statements wait for it already, or when anything
fails, `run` raises Unavailable and the caller does the work as before, on a pool thread (whose
error handling, reconnection and 503 then apply). A statement that was sent and failed or took
longer than its timeout raises Failed (its effect is unknown: an insert must not be made again),
and the connection is closed; the next call makes a new one.
"""

import asyncio
import contextlib
import functools
import logging
import time
import weakref

from django.conf import settings
from django.db import connections

from backflow.compiled import bound_values, remember

logger = logging.getLogger("backflow.loop_postgres")


class LoopPostgres:
    class Unavailable(Exception):
        """Not run: no connection now, or too many statements wait for it."""

    class Failed(Unavailable):
        """Sent, and failed or timed out: its effect is unknown."""

    CONNECT_TIMEOUT = 5.0  # seconds to make a connection (in the background, never a caller's wait)
    RETRY_AFTER = 5.0  # seconds a loop waits after a failed attempt before it tries to connect again
    WAITING = 16  # statements that may wait for a loop's connection at once
    REMEMBERED = 1024  # rows a loop keeps with the values they were read with (then it forgets them all)

    def __init__(self, alias="default", timeout=2.0):
        self.alias = alias
        self.timeout = timeout  # seconds a caller waits for its statement, its turn included
        self.on_postgres = connections.settings[alias]["ENGINE"] == "django.db.backends.postgresql"
        self._loops = weakref.WeakKeyDictionary()  # event loop -> its _LoopConnection

    @property
    def wrapper(self):
        """Django's database wrapper of the alias, never connected: the settings, operations and
        converters' context for the statements and rows of `run`."""
        return self._state().wrapper

    async def run(self, work):
        """`await work(connection)` on this loop's connection, alone on it, within `timeout`."""
        state = self._state()
        connection = state.connection
        if connection is None or connection.closed:
            state.connect_soon()
            raise self.Unavailable(state.why or "no connection to PostgreSQL on this event loop yet")
        if state.waiting >= self.WAITING:
            raise self.Unavailable(f"{state.waiting} statements wait for this event loop's connection already")
        state.waiting += 1
        sent = False
        try:
            async with asyncio.timeout(self.timeout):
                async with state.lock:
                    if state.connection is not connection:  # closed while this one waited
                        raise self.Unavailable("the connection was closed")
                    sent = True
                    try:
                        return await work(connection)
                    except BaseException:  # failed, timed out or cancelled mid-statement: its state is unknown
                        state.drop(connection)
                        raise
        except self.Unavailable:
            raise
        except Exception as exc:
            if not sent:  # its turn did not come within the timeout: the connection is not at fault
                raise self.Unavailable(f"no turn on the connection within {self.timeout:g} s") from exc
            raise self.Failed(f"{type(exc).__name__}: {exc}") from exc
        finally:
            state.waiting -= 1

    async def first(self, compiled, *values):
        """Compiled.first on this loop's connection: the row, or None; the same instance as last
        time while the row reads the same. Unavailable also before the ORM compiled the statement
        for PostgreSQL (the caller's trip to a thread does)."""
        params = bound_values(values)
        statement = compiled.statement((self.alias, "postgresql"), params)
        if statement is None:
            raise self.Unavailable(f"{compiled.model.__name__}: no statement compiled for PostgreSQL yet")
        sql, converters = statement
        rows = await self.run(functools.partial(_first_row, sql, params))
        if not rows:
            return None
        # The row as read before: the instance made of it then (the tenant routes' site built on
        # it is kept while the instance is the same). Rows are for reading only, as LoopReads'.
        remembered = self._state().remembered
        known = remembered.get((compiled, params))
        if known is not None and known[0] == rows[0]:
            return known[1]
        row = compiled.instance(self.alias, self.wrapper, converters, rows[0])
        remember(remembered, self.REMEMBERED, (compiled, params), (rows[0], row))
        return row

    def _state(self):
        loop = asyncio.get_running_loop()
        state = self._loops.get(loop)
        if state is None:
            for other, stale in list(self._loops.items()):  # loops closed with a connection open (tests make many)
                if other.is_closed():
                    if stale.connection is not None:
                        stale.drop(stale.connection)
                    del self._loops[other]
            state = self._loops[loop] = _LoopConnection(self)
        return state


class _LoopConnection:
    """One event loop's connection, the attempt to make it, and its turn."""

    def __init__(self, owner):
        self.owner = owner
        self.wrapper = connections.create_connection(owner.alias)  # never connects
        self.connection = None
        self.lock = asyncio.Lock()
        self.waiting = 0
        self.remembered = {}  # (Compiled, values) -> (the row as read, its instance)
        self.why = None  # why the last attempt failed
        self._failed_at = None
        self._connecting = None  # the task making the connection

    def connect_soon(self):
        if self._connecting is not None:
            return
        if self._failed_at is not None and time.monotonic() - self._failed_at < self.owner.RETRY_AFTER:
            return
        self._connecting = asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self):
        import psycopg
        from psycopg import sql

        params = self.wrapper.get_connection_params()
        # Its few statements, run again and again, are worth preparing (psycopg prepares one after
        # a few runs); that needs server-side binding.
        prepare = params["prepare_threshold"] is None and settings.BACKFLOW_LOOP_POSTGRES_PREPARE
        if prepare:
            del params["prepare_threshold"]
        server_side_binding = prepare or self.wrapper.settings_dict["OPTIONS"].get("server_side_binding") is True
        params["cursor_factory"] = psycopg.AsyncCursor if server_side_binding else psycopg.AsyncClientCursor
        connection = None
        try:
            async with asyncio.timeout(self.owner.CONNECT_TIMEOUT):
                connection = await psycopg.AsyncConnection.connect(**params, autocommit=True)
                # What DatabaseWrapper._configure_connection sets on each of Django's connections.
                timezone_name = self.wrapper.timezone_name
                if timezone_name and connection.info.parameter_status("TimeZone") != timezone_name:
                    await connection.execute(sql.SQL("SET TIME ZONE {}").format(sql.Literal(timezone_name)))
                if role := self.wrapper.settings_dict["OPTIONS"].get("assume_role"):
                    await connection.execute(sql.SQL("SET ROLE {}").format(sql.Literal(role)))
        except Exception as exc:
            if connection is not None:
                self.drop(connection)
            self._failed_at, self.why = time.monotonic(), f"cannot connect to PostgreSQL: {type(exc).__name__}: {exc}".strip()
            logger.info("The event loop's PostgreSQL connection: %s; its work goes to pool threads meanwhile.", self.why)
        else:
            self.connection, self._failed_at, self.why = connection, None, None
        finally:
            self._connecting = None

    def drop(self, connection):
        """Close `connection` now (no await: also for a statement cancelled midway, or a loop
        that was closed); the next caller makes a new one."""
        if self.connection is connection:
            self.connection = None
        with contextlib.suppress(Exception):
            connection.pgconn.finish()


async def _first_row(sql, params, connection):
    cursor = await connection.execute(sql, params)
    return await cursor.fetchmany(1)


# The process's loop connections for reads (the tenant routes' admission) and for the invocation
# records' inserts: one of each per event loop, so that a batch insert never holds up a read.
loop_reads_postgres = LoopPostgres()
loop_writes_postgres = LoopPostgres(timeout=10.0)
