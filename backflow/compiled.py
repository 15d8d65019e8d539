"""Reads made on every request or tool call, with their SQL compiled by the ORM once instead of per
call; and rows inserted in batches without model instances (`CompiledInsert`).

Building and compiling a query cost more than running it: reading one tenant row by its slug took
a route request about 0.2 ms of CPU, and a tenant's five integrations about 0.7 ms where the same
SQL run directly took 0.2 ms. `Compiled` asks the ORM for the statement once per database, keeps
its column converters, and then only executes it with the call's values: the same SQL, the same
parameters, the same instances as evaluating the queryset.
"""

import contextlib
import sqlite3
import threading

from django.db import connections, models, router, transaction
from django.db.backends.sqlite3.base import FORMAT_QMARK_REGEX
from django.utils import timezone

# Values bound as they are: the ORM would prepare other types (UUIDs, dates) per database.
_BOUND_AS_IS = (int, str)


def bound_values(values):
    return tuple(value.pk if isinstance(value, models.Model) else value for value in values)


class Compiled:
    """`Compiled(Model, build)`: `build(*values)` returns the queryset of those values, whose SQL
    takes exactly the values as its parameters, in that order (a model instance stands for its
    primary key), and selects the model's own columns (no select_related, values() or annotations).

    `.all(*values)` / `.first(*values)` run it. The shape is checked when it is compiled; values it
    cannot bind as they are (None, types other than those it was compiled with), or a shape that
    does not match, are read through the ORM instead, with the same result. Scoping (for_tenant)
    is compiled into the SQL with the rest of the filter, and its guard runs at that compile."""

    def __init__(self, model, build):
        self.model, self.build = model, build
        self.names = [field.attname for field in model._meta.concrete_fields]
        self._statements = {}  # (alias, vendor) -> (parameter types, sql, converters), or None: through the ORM

    def all(self, *values):
        return list(self._rows(values, many=True))

    def first(self, *values):
        """The row, for a queryset that matches at most one (a unique column), or None."""
        return next(iter(self._rows(values, many=False)), None)

    def _rows(self, values, many):
        params = bound_values(values)
        alias = router.db_for_read(self.model)
        connection = connections[alias]
        key = (alias, connection.vendor)
        if key not in self._statements and all(type(param) in _BOUND_AS_IS for param in params):
            self._statements[key] = self._compile(alias, values, params)
        statement = self.statement(key, params)
        if statement is None:
            queryset = self.build(*values)
            return queryset if many else queryset[:1]
        sql, converters = statement
        with connection.cursor() as cursor:
            cursor.execute(sql, params)
            rows = cursor.fetchall() if many else cursor.fetchmany(1)
        return [self.instance(alias, connection, converters, row) for row in rows]

    def statement(self, key, params):
        """(SQL, converters) compiled for database `key` = (alias, vendor) and values of the types
        of `params`; None before the ORM compiled it there, or for other types (an int where it was
        compiled for a str): the ORM reads those."""
        statement = self._statements.get(key)
        if statement is None or tuple(map(type, params)) != statement[0]:
            return None
        return statement[1:]

    def instance(self, alias, connection, converters, row):
        """The model instance of a selected row, its values converted as the ORM converts them."""
        values = list(row)
        for position, (functions, expression) in converters:
            for convert in functions:
                values[position] = convert(values[position], expression, connection)
        return self.model.from_db(alias, self.names, values)

    def _compile(self, alias, values, params):
        """The ORM's own SQL and row converters, or None when the queryset's shape is not one
        this can run (then every call reads through the ORM)."""
        query = self.build(*values).query
        compiler = query.get_compiler(alias)
        sql, compiled_params = compiler.as_sql()
        selected = [expression for expression, _, _ in compiler.select]
        columns = [getattr(getattr(expression, "target", None), "attname", None) for expression in selected]
        if tuple(compiled_params) != params or columns != self.names or query.select_related or compiler.klass_info is None:
            return None
        return tuple(map(type, params)), sql, list(compiler.get_converters(selected).items())


def remember(memory, limit, key, value):
    """`memory[key] = value`, the whole memory forgotten first when it holds `limit` entries: a
    bound that costs nothing per read (no order to keep), for memories whose entries are cheap to
    make again. Returns `value`."""
    if len(memory) >= limit:
        memory.clear()
    memory[key] = value
    return value


class LoopReads:
    """Compiled reads made on the event loop's own thread, for the embedded profile (SQLite) only:
    `first(compiled, *values)` as Compiled.first, on a connection of the loop's own.

    A read of one row by a unique column, with its instance, costs the loop about 55 us of CPU in a
    server answering routes (11 us in a tight loop), where a trip to a pool thread for it cost about
    300 us and a wait for the GIL (issue 17). Each event loop's thread gets its own sqlite3
    connection, made as Django makes the database's (the same file, options and column converters),
    read-only and in autocommit: every read is its own read transaction and sees the last commit,
    as a pool thread's connection would. It never waits: with a busy timeout of 0, a read SQLite
    cannot make at once raises Unavailable, as does a statement the ORM has not compiled yet
    (Compiled.statement) or a database that is not SQLite; the caller then takes the trip to a
    thread as before. The read holds the loop for the statement only: a unique-index lookup in a
    file the operating system keeps in memory. While no connection has committed since a row was
    read (`PRAGMA data_version`, one check of the WAL index, about half the cost of the read and its
    instance in a loaded server), the loop gets the same instance again: the rows are for reading
    only (nothing on the doors that use them assigns to a tenant row)."""

    class Unavailable(Exception):
        pass

    REMEMBERED = 1024  # rows a loop keeps with the data_version they were read at (then it forgets them all)

    def __init__(self, alias="default"):
        self.alias = alias
        self.on_sqlite = connections.settings[alias]["ENGINE"] == "django.db.backends.sqlite3"
        self._thread = threading.local()  # the loop thread's (sqlite3 connection, Django wrapper)
        self._sql = {}  # the ORM's SQL -> the same in sqlite3's parameter style (as Django's SQLite cursor converts it)

    def first(self, compiled, *values):
        """The row, or None; Unavailable when it cannot be read on this loop at once."""
        params = bound_values(values)
        statement = compiled.statement((self.alias, "sqlite"), params) if self.on_sqlite else None
        if statement is None:
            raise self.Unavailable(f"{compiled.model.__name__}: no statement compiled for SQLite yet")
        sql, converters = statement
        connection, wrapper, remembered = self._connection()
        try:
            # Changes whenever another connection commits: while it does not, the row read last is the row.
            version = connection.execute("PRAGMA data_version").fetchone()[0]
            known = remembered.get((compiled, params))
            if known is not None and known[0] == version:
                return known[1]
            rows = connection.execute(self._qmark(sql), params).fetchall()  # to the end: the read transaction ends here
        except sqlite3.Error as exc:
            raise self.Unavailable(str(exc)) from exc
        row = compiled.instance(self.alias, wrapper, converters, rows[0]) if rows else None
        remember(remembered, self.REMEMBERED, (compiled, params), (version, row))
        return row

    def _qmark(self, sql):
        converted = self._sql.get(sql)
        if converted is None:
            converted = self._sql[sql] = FORMAT_QMARK_REGEX.sub("?", sql).replace("%%", "%")
        return converted

    def _connection(self):
        made = getattr(self._thread, "made", None)
        if made is None:
            wrapper = connections.create_connection(self.alias)  # never connects: the settings and converters' context
            options = {**wrapper.get_connection_params(), "timeout": 0}
            try:
                connection = sqlite3.connect(**options)
                connection.isolation_level = None
                connection.execute("PRAGMA query_only = ON")
            except sqlite3.Error as exc:
                raise self.Unavailable(str(exc)) from exc
            made = self._thread.made = (connection, wrapper, {})
        return made


# The process's loop reads, shared by every door that reads on its loop (tenant routes, MCP): one
# connection and one set of remembered rows per loop thread.
loop_reads = LoopReads()


class CompiledInsert:
    """Rows of `model` inserted in batches, as bulk_create would insert instances made of the same
    values, without making the instances.

    `values(**by_attname)` takes a row's values where the row is made (defaults, `auto_now_add`
    and callables such as the request id, are read there, as Model() would); `insert(rows)` then
    prepares each value with its field for the database and runs one multi-row INSERT per batch the
    database takes, several in one transaction (one is atomic by itself, and joins the caller's
    transaction if there is one: the audit event of a write). A record per routed request made a
    model instance on the event loop (about 80 us of CPU in the server) and bulk_create took about
    225 us a row in a batch of 8; here the row is a tuple (about 60 us with its defaults) and about
    155 us a row, most of it the database's own insert into the table and its indexes; an audit
    event through AuditEvent.objects.create took about 290 us, through here about 160 us."""

    def __init__(self, model):
        opts = model._meta
        self.model = model
        self.fields = [field for field in opts.local_concrete_fields if field is not opts.auto_field and not field.generated]
        for field in self.fields:
            if hasattr(field, "get_placeholder"):  # its SQL is not a plain parameter: bulk_create would know it
                raise ValueError(f"CompiledInsert cannot insert {model.__name__}.{field.name}: its placeholder is not plain.")
        self._names = {field.attname for field in self.fields}
        # Each field's attname and what makes its value when none is given (chosen once: values()
        # runs on the event loop for every routed request).
        self._defaults = tuple((field.attname, timezone.now if _made_when_saved(field) else field.get_default) for field in self.fields)
        self._statements = {}  # (alias, row count) -> INSERT
        # alias -> each field's get_db_prep_save, remembering what it made of values seen before
        # unless each row has a value of its own (_fresh)
        self._preparers = {}

    def values(self, **given):
        """The row for `given` values (by attname), every other field at its default."""
        unknown = set(given) - self._names
        if unknown:
            raise TypeError(f"{self.model.__name__} has no insertable field {', '.join(sorted(unknown))}.")
        return tuple(given[name] if name in given else default() for name, default in self._defaults)

    def insert(self, rows):
        alias = router.db_for_write(self.model)
        connection = connections[alias]
        statements = self._statements_for(alias, connection, rows)
        # One statement is atomic by itself (and joins the caller's transaction): no BEGIN/COMMIT around it.
        together = transaction.atomic(using=alias, savepoint=False) if len(statements) > 1 else contextlib.nullcontext()
        with together, connection.cursor() as cursor:
            for sql, params in statements:
                cursor.execute(sql, params)

    async def insert_on_loop(self, rows, writes):
        """insert, on the event loop's own PostgreSQL connection (`writes`, a
        backflow.loop_postgres.LoopPostgres): LoopPostgres.Unavailable when nothing was sent (the
        caller inserts the rows on a thread), LoopPostgres.Failed when it was sent and failed."""
        if router.db_for_write(self.model) != writes.alias:
            raise writes.Unavailable(f"{self.model.__name__} is not written to {writes.alias!r}")
        statements = self._statements_for(writes.alias, writes.wrapper, rows)

        async def run(connection):
            async with connection.transaction() if len(statements) > 1 else contextlib.nullcontext():
                for sql, params in statements:
                    await connection.execute(sql, params)

        await writes.run(run)

    def _statements_for(self, alias, connection, rows):
        """(INSERT, parameters) for each batch of `rows` the database takes in one statement."""
        prepare = self._preparers.get(alias)
        if prepare is None:
            prepare = self._preparers[alias] = [field.get_db_prep_save if _fresh(field) else _remembering(field) for field in self.fields]
        prepared = [[each(value, connection) for each, value in zip(prepare, row)] for row in rows]
        size = max(1, connection.ops.bulk_batch_size(self.fields, prepared))
        return [(self._sql(alias, connection, len(batch)), [value for row in batch for value in row])
                for batch in (prepared[start:start + size] for start in range(0, len(prepared), size))]

    def _sql(self, alias, connection, count):
        """The INSERT of `count` rows, made once per database and row count (at most a batch's size)."""
        sql = self._statements.get((alias, count))
        if sql is None:
            quote = connection.ops.quote_name
            columns = ", ".join(quote(field.column) for field in self.fields)
            placeholders = ["%s"] * len(self.fields)
            sql = self._statements[(alias, count)] = (f"INSERT INTO {quote(self.model._meta.db_table)} ({columns}) "
                                                      + connection.ops.bulk_insert_sql(self.fields, [placeholders] * count))
        return sql


def _made_when_saved(field):
    return getattr(field, "auto_now", False) or getattr(field, "auto_now_add", False)


def _fresh(field):
    """Whether each row has a value of its own for `field` (the time it was made, a callable default
    such as the request's id): a memory of those would never be asked for one again, and each miss
    costs more than the preparation itself (on SQLite 5.5 against 4.0 us a row for a time, 1.1
    against 0.5 for a request id)."""
    return _made_when_saved(field) or (field.has_default() and callable(field.default))


def _remembering(field, remembered=256):
    """`field.get_db_prep_save(value, connection)`, taken from memory for a value prepared before
    for the same database (one memory per database alias: each thread's connection to it prepares
    alike).

    Django's preparation of a row (2-5 us for some values: a UUID parsed, an integer's range
    checked, a time converted) was three quarters of an invocation record's insert on SQLite (about
    15 of 20 us a row), and a batch of records repeats most of its values (the tenant, the route,
    the status): prepared once, a row costs about 7. Values are told apart by type too (True, 1 and
    1.0 are equal keys); unhashable ones are prepared each time. The memory holds at most
    `remembered` values a field and starts over when full (values that seldom repeat, such as
    durations; fields whose every row has a value of its own do not use it: _fresh)."""
    memory = {}

    def prepare(value, connection):
        try:
            key = (value.__class__, value)
            return memory[key]
        except KeyError:
            return remember(memory, remembered, key, field.get_db_prep_save(value, connection))
        except TypeError:  # unhashable (a dict for a JSONField)
            return field.get_db_prep_save(value, connection)

    return prepare
