"""What /readyz checks: the database and its migrations, Redis (when configured), collected
static files and, when asked, a recent worker heartbeat.

Each check answers "ok" or a short reason that names the part and what to do, never a driver's
message, an address or a version (the probe is unauthenticated); the details go to the log.
"""

import logging

from django.conf import settings
from django.contrib.staticfiles.storage import ManifestFilesMixin, staticfiles_storage
from django.db import DEFAULT_DB_ALIAS, connections
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.recorder import MigrationRecorder

from backflow.outages import describe, reconnecting

logger = logging.getLogger("backflow.health")
OK = "ok"
_applied_when_complete = []  # how many migrations were recorded when none was left to apply


_FAILED = object()  # what _read gives for a read that failed on a new connection too


def _read(read, problem):
    """`read()` on this probe thread's connection, once more on a new one when that one fails
    (`reconnecting`: the database may have been restarted since the last probe). Each check runs
    on whichever probe thread is free, each thread keeping its own connection: after an outage the
    database check may reconnect on one thread while the next check finds its thread's connection
    dead, so every check that reads reconnects (else /readyz said 503 with the database back, for
    as long as a thread kept its dead connection). A read that fails anyway closes the connection,
    logs `problem` with what the driver said and gives _FAILED."""
    try:
        return reconnecting(read)()
    except Exception as exc:
        connections[DEFAULT_DB_ALIAS].close()
        logger.warning("Readiness: %s (%s)", problem, describe(exc))
        return _FAILED


def check_database():
    """SELECT 1."""
    if _read(_select_one, "the database does not answer") is _FAILED:
        return "unavailable: the database does not answer"
    return OK


def _select_one():
    with connections[DEFAULT_DB_ALIAS].cursor() as cursor:
        cursor.execute("SELECT 1")


def check_migrations():
    """Unapplied migrations, counted from the migration files once; afterwards, while the number
    of recorded migrations has not dropped, one count query (a probe runs every few seconds)."""
    pending = _read(_pending_migrations, "cannot read the applied migrations")
    if pending is _FAILED:
        return "unknown: cannot read the applied migrations"
    if pending:
        return f"pending: {len(pending)} migration(s) not applied; run `manage.py migrate`"
    return OK


def _pending_migrations():
    connection = connections[DEFAULT_DB_ALIAS]
    recorder = MigrationRecorder(connection)
    if _applied_when_complete and recorder.migration_qs.count() >= _applied_when_complete[0]:
        return []
    executor = MigrationExecutor(connection)  # an empty database (no table yet) has every migration pending
    pending = executor.migration_plan(executor.loader.graph.leaf_nodes())
    if not pending:
        _applied_when_complete[:] = [recorder.migration_qs.count()]
    return pending


def check_redis():
    """PING with a short timeout, on a client of its own (the shared pool retries and waits)."""
    try:
        _redis_client().ping()
        return OK
    except Exception as exc:
        logger.warning("Readiness: Redis does not answer (%s)", describe(exc))
        return "unavailable: Redis does not answer"


_clients = []


def _redis_client():
    if not _clients:
        import redis

        _clients.append(redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2,
                                             max_connections=4, retry_on_timeout=False))
    return _clients[0]


def check_static():
    """collectstatic has run: its manifest (or, with plain storage, the admin's stylesheet) exists."""
    storage = staticfiles_storage
    try:
        if isinstance(storage, ManifestFilesMixin):
            collected = storage.manifest_storage.exists(storage.manifest_name)
        else:
            collected = storage.exists("admin/css/base.css")
    except Exception as exc:
        logger.warning("Readiness: cannot look at the static files (%s)", describe(exc))
        collected = False
    return OK if collected else "missing: static files are not collected; run `manage.py collectstatic`"


def check_workers():
    from workflows_app.selectors import live_workers

    alive = _read(live_workers, "cannot read worker heartbeats")
    if alive is _FAILED:
        return "unknown: cannot read worker heartbeats"
    if not alive:
        return f"none: no run_worker has recorded a heartbeat in the last {settings.BACKFLOW_WORKER_STALE_SECONDS:g} s"
    return OK


def checks(*, workers=False):
    """(name, check) pairs, in the order /readyz reports them (backflow.front runs those that need
    the database one after the other, the rest beside them)."""
    found = [("database", check_database), ("migrations", check_migrations)]
    if settings.REDIS_URL:
        found.append(("redis", check_redis))
    found.append(("static", check_static))
    if workers:
        found.append(("workers", check_workers))
    return found
