"""Shared fixtures: tenants, principals and API clients that act as them (`as_tenant`), and real
server processes (`live_daphne`)."""

import contextlib
import os
import socket
import sys
import tempfile
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from tenants import services as tenant_services
from tenants.principals import Principal
from tests.live import Daphne

# Child processes (daphne, mcp_stdio) cannot see an in-memory SQLite test database: keep it in a
# file of this pytest process (Django deletes it at the end; WAL side files go in sessionfinish).
_default_db = settings.DATABASES["default"]
if _default_db["ENGINE"] == "django.db.backends.sqlite3":
    _test_db = _default_db.setdefault("TEST", {})
    if not _test_db.get("NAME") or "memory" in str(_test_db["NAME"]):
        _test_db["NAME"] = os.path.join(tempfile.gettempdir(), f"backflow-test-{os.getpid()}.sqlite3")


# Redis databases that `make test`'s workers (pytest-xdist, TEST_WORKERS) take, one each: not 7, 12
# and 14 (three test modules' own: test_remote_multiprocess, test_remote_redis_burst, test_ratelimit)
# nor 9 (the benchmarks').
WORKER_REDIS_DATABASES = (0, 1, 2, 3, 4, 5, 6, 8, 10, 11)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_setupnodes(config, specs):
    """Each worker gets a Redis database of its own, in its environment before it reads the
    settings, so one worker's `cache.clear()` (a FLUSHDB) or rate-limit counts never reach
    another's; the server children it starts inherit it (tests.live copies the environment).
    pytest-django gives each worker its own test database (`test_<name>_gw0`, …)."""
    redis_url = os.environ.get("REDIS_URL")
    if not redis_url:
        return
    if len(specs) > len(WORKER_REDIS_DATABASES):
        raise pytest.UsageError(f"the suite runs at most {len(WORKER_REDIS_DATABASES)} workers on one Redis "
                                f"(TEST_WORKERS={len(specs)}): each needs a database of its own")
    for spec, database in zip(specs, WORKER_REDIS_DATABASES):
        spec.env["REDIS_URL"] = urlunsplit(urlsplit(redis_url)._replace(path=f"/{database}"))


def pytest_sessionfinish(session, exitstatus):
    name = _default_db.get("TEST", {}).get("NAME")
    if name and _default_db["ENGINE"] == "django.db.backends.sqlite3":
        for suffix in ("", "-wal", "-shm", "-journal"):
            Path(str(name) + suffix).unlink(missing_ok=True)


class TenantContext:
    """One tenant with a full-scope key, an owner user and helpers to call the API as them."""

    def __init__(self, slug):
        self.tenant = tenant_services.tenant_create(slug=slug, name=slug.title())
        self.actor = Principal.system(self.tenant, "tests")
        _, self.key = tenant_services.api_key_create(tenant=self.tenant, actor=self.actor, name="full")
        self.owner = get_user_model().objects.create_user(username=f"{slug}-owner", password="pw-" + slug * 2)
        tenant_services.membership_set(tenant=self.tenant, user=self.owner, role="owner")

    def client(self, key=None):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key or self.key}")
        return client

    def key_with(self, *scopes, name="scoped"):
        _, key = tenant_services.api_key_create(tenant=self.tenant, actor=self.actor, name=name, scopes=list(scopes))
        return key

    def jwt(self, user=None, password=None):
        user = user or self.owner
        response = APIClient().post(
            "/api/auth/token",
            {"username": user.username, "password": password or "pw-" + self.tenant.slug * 2, "tenant": self.tenant.slug},
            format="json",
        )
        assert response.status_code == 200, response.content
        return response.json()["access"]


@pytest.fixture(scope="session", autouse=True)
def _end_stray_database_sessions(django_db_setup, django_db_blocker):
    """Tools called in-process keep their worker thread's database connection between calls
    (mcp_app/server.py); on PostgreSQL those idle sessions of this very process would stop the
    test database from being dropped at the end of the run."""
    yield
    from django.db import connection

    if connection.vendor == "postgresql":
        with django_db_blocker.unblock(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE datname = current_database() AND pid <> pg_backend_pid()")


@pytest.fixture
def as_tenant(db):
    made = {}

    def make(slug):
        if slug not in made:
            made[slug] = TenantContext(slug)
        return made[slug]

    return make


@pytest.fixture
def acme(as_tenant):
    return as_tenant("acme")


@pytest.fixture
def globex(as_tenant):
    return as_tenant("globex")


@pytest.fixture(autouse=True)
def _database_work_on_the_test_thread(request, monkeypatch):
    """The MCP and route apps do their database work on backflow.sync's pool threads, which cannot
    see the rows a test keeps in its open transaction: in-process calls run it on the test's own
    thread instead (what asgiref's thread-sensitive mode does). Server processes (live daphne,
    mcp_stdio children) and tests marked `pool_threads` use the real pool."""
    if "pool_threads" not in request.keywords:
        from asgiref.sync import sync_to_async

        from backflow import loop_postgres, sync
        from integrations_app import dispatch
        from mcp_app import http

        monkeypatch.setattr(sync, "on_pool_thread", lambda func: sync_to_async(func, thread_sensitive=True))
        # Nor may routes and MCP read the tenant row on the loop, or write records there: the
        # loop's own connection sees committed rows only.
        monkeypatch.setattr(dispatch.routes_asgi.sites, "reads_here", None)
        monkeypatch.setattr(dispatch.routes_asgi.sites, "_admissions_on_loop", None)
        monkeypatch.setattr(http, "reads_here", None)
        monkeypatch.setattr(http, "_credential_checks_on_loop", None)
        for loop_connections in (loop_postgres.loop_reads_postgres, loop_postgres.loop_writes_postgres):
            monkeypatch.setattr(loop_connections, "on_postgres", False)


@pytest.fixture
def trip_sizes(monkeypatch):
    """`trip_sizes(grouped_trips)`: the list the sizes of the trips that `grouped_trips` (a
    backflow.sync.GroupedTrips) takes to a thread are appended to, from then on."""
    def count(grouped_trips):
        sizes, run = [], grouped_trips._run
        monkeypatch.setattr(grouped_trips, "_run", lambda owner, calls: sizes.append(len(calls)) or run(owner, calls))
        return sizes

    return count


@pytest.fixture
def loop_reads(monkeypatch):
    """The first value of each read made on the process's loop connection for reads (a tenant's
    slug, a primary key)."""
    from backflow.loop_postgres import loop_reads_postgres

    values, first = [], loop_reads_postgres.first

    async def counted(compiled, *read_values):
        values.append(read_values[0])
        return await first(compiled, *read_values)

    monkeypatch.setattr(loop_reads_postgres, "first", counted)
    return values


@pytest.fixture(autouse=True)
def _no_name_lookups(monkeypatch):
    """Tests send nothing beyond loopback, DNS queries included: the egress guard resolves a host
    name before it judges it, so in-process, any name but localhost fails to resolve at once
    (documents that say api.example.com stay refused, not looked up)."""
    from backflow import egress

    real = egress.blocking_getaddrinfo

    def loopback_only(host, port):
        try:
            socket.inet_aton(str(host))  # a numeric IPv4 spelling (0x7f.1, 2130706433): parsed, never looked up
        except OSError:
            if str(host).lower() not in ("localhost", "localhost."):
                raise OSError(f"tests look up no host names ({host}); use 127.0.0.1") from None
        return real(host, port)

    monkeypatch.setattr(egress, "blocking_getaddrinfo", loopback_only)


@pytest.fixture(autouse=True)
def _fast_password_hashing(settings):
    """Tests create many users; the production hasher's work factor would dominate their run time."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def _plain_static_storage(settings):
    """Pages render without `collectstatic` having run (the manifest storage needs its manifest)."""
    settings.STORAGES = {
        **settings.STORAGES,
        "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"},
    }


@pytest.fixture(autouse=True)
def _forget_cached_route_tables():
    """The tenant-route dispatcher keeps route tables per process, by tenant id and table version.
    A test's new `acme` may get an id an earlier test's tenant had (SQLite reuses them after a
    flush) while the in-process cache's version is back at "initial": forget the tables."""
    yield
    dispatch = sys.modules.get("integrations_app.dispatch")
    if dispatch is not None:
        dispatch.routes_asgi.sites._tables.clear()


@contextlib.contextmanager
def live_servers(server_class):
    """`start(**env)` starts a server of `server_class` (tests.live) on the test database; every
    one started is stopped at the end."""
    started = []

    def start(**env):
        server = server_class(**env)
        started.append(server)
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def live_daphne(transactional_db):
    """Start daphne servers (`live_daphne(**env)`) on the test database; stopped after the test."""
    with live_servers(Daphne) as start:
        yield start
