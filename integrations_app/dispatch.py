"""ANY /t/<tenant>/<route path>: match a tenant route and run it (a lean ASGI app, no Django
middleware on this hot path).

Each process keeps a compiled route table per tenant and rebuilds it when the tenant row's
`routes_version` changes (every route or integration write bumps it in its transaction), so all
processes see a change, or the tenant's deactivation, at their next request, with or without Redis.
A request whose admission needs nothing but the tenant row (a known key or a public route, the
table current) is admitted on the event loop: on SQLite reading the row on the loop's own
connection, on PostgreSQL on the loop's own PostgreSQL connection (backflow.loop_postgres) with the
count awaited on the loop; the others read the tenant row on a pool thread, in one trip for the
tenant's requests that come together (DatabaseSites.admitted).
Local mode (`serve_local`) serves the seed's files the same way.
"""

import asyncio
import contextlib
import logging
import re
import secrets as tokens
import time
import weakref

from django.conf import settings

from backflow import metrics
from backflow.asgi_utils import HttpError, check_host, query_params, read_body, request_headers, respond
from backflow.bounds import Full, Slots
from backflow.compiled import CompiledInsert, LoopReads, loop_reads
from backflow.egress import shared_client
from backflow.errors import ServiceError
from backflow.jsonbody import JsonBodyError, parse_json
from backflow.loop_postgres import LoopPostgres, loop_reads_postgres, loop_writes_postgres
from backflow.outages import describe, outage_message, reconnecting
from backflow.ratelimit import aretry_after_each, counted_in_process, retry_after_each
from backflow.sync import GroupedTrips, LoopTrips, in_thread
from backflow.templating import TemplateError, local_environment, render
from integrations_app.models import RouteInvocation
from integrations_app.runtime import DEPTH_HEADER, CallSettings, RouteFailure, SecretResolver, call_depth, run_route, tenant_secrets
from integrations_app.stores import DatabaseStore
from tenants.authentication import AuthenticationError, bearer_value, known_tenant_key_label, principal_for_token
from tenants.selectors import tenant_get, tenant_get_here, tenant_get_on_loop

logger = logging.getLogger("backflow.routes")
INVOCATION_ROWS = CompiledInsert(RouteInvocation)
PARAM_SEGMENT = re.compile(r"^\{([A-Za-z_][A-Za-z0-9_]*)\}$")
FORWARDED_HEADERS_EXCLUDED = {"authorization", "cookie", "x-backflow-scope", "proxy-authorization"}
class RouteTable:
    """Routes grouped by path template, most specific template first (static segments win)."""

    def __init__(self, routes, integrations):
        self.integrations = {doc["name"]: doc for doc in integrations}
        templates = {}
        for route in routes:
            templates.setdefault(route["path"], {})[route["method"]] = route
        self.templates = sorted(
            ((self._compile(path), methods) for path, methods in templates.items()),
            key=lambda item: (-item[0][1], item[0][0].pattern),
        )

    @staticmethod
    def _compile(path):
        parts, static = [], 0
        for segment in path.strip("/").split("/") if path != "/" else []:
            match = PARAM_SEGMENT.match(segment)
            if match:
                parts.append(f"(?P<{match.group(1)}>[^/]+)")
            else:
                parts.append(re.escape(segment))
                static += 1
        return re.compile("^/" + "/".join(parts) + "$"), static

    def match(self, method, path):
        allowed = set()
        for (pattern, _), methods in self.templates:
            found = pattern.match(path)
            if not found:
                continue
            if method in methods:
                return methods[method], found.groupdict()
            allowed |= set(methods)
        if allowed:
            allow = ", ".join(sorted(m.upper() for m in allowed))
            raise HttpError(405, f"{method.upper()} is not allowed on {path}; use {allow}.", [(b"allow", allow.encode())])
        raise HttpError(404, f"No route matches {method.upper()} {path}.")


class TenantSite:
    """A tenant's routes as stored in the database."""

    def __init__(self, tenant, table):
        self.tenant, self.table = tenant, table
        self.secrets = tenant_secrets(tenant)
        self.rate_key = f"routes:{tenant.pk}"
        self.owner = tenant.pk
        self.slug = tenant.slug

    def authenticate(self, headers):
        raw = bearer_value(headers.get("authorization"))
        if raw is None:
            raise HttpError(401, "This route requires Authorization: Bearer <API key or JWT of the tenant>.",
                            [(b"www-authenticate", b'Bearer realm="backflow"')])
        try:
            # The tenant row this request read: an API key seen before costs no query while that
            # row's auth_version is unchanged (tenants/keycache.py).
            return principal_for_token(raw, self.tenant.slug, tenant=self.tenant).label
        except AuthenticationError as exc:
            raise HttpError(401, str(exc), [(b"www-authenticate", b'Bearer realm="backflow"')]) from exc

    def known_caller(self, headers):
        """authenticate's label without a query or a write (an API key verified before, nothing
        changed since), or None: authenticate decides."""
        raw = bearer_value(headers.get("authorization"))
        return known_tenant_key_label(raw, self.tenant) if raw else None

    def invocation(self, route, method, path, status, duration_ms, error, test=False):
        """The call's record (a RouteInvocation row, with the request's id), to be written with others (InvocationWriter)."""
        return INVOCATION_ROWS.values(
            tenant_id=self.tenant.pk, route_id=route["id"] if route else None, method=method, path=path[:2000],
            status=status, duration_ms=duration_ms, error=error[:500], is_test=test,
        )


class DatabaseSites:
    # Requests to one tenant's routes admitted in one trip to a thread when they come together.
    ADMISSIONS_PER_TRIP = 64

    def __init__(self):
        self._tables = {}  # tenant id -> (version, RouteTable)
        # The embedded profile (SQLite, counts in memory) admits most requests on the loop itself.
        self.reads_here = loop_reads if loop_reads.on_sqlite and counted_in_process() else None
        self._sites_here = {}  # tenant id -> its site admitted on the loop, kept while its row and table are the same objects
        self._reconnecting_site = reconnecting(self._site)
        # One read of the tenant for the trip and each request's key check, once more on a new
        # connection if the database dropped the thread's (backflow.outages.reconnecting); the
        # requests' rate-limit counts together at the trip's end.
        self._admissions = GroupedTrips(reconnecting(self._admission), self.ADMISSIONS_PER_TRIP,
                                        prepare=lambda owner, requests: _AdmissionTrip(self._reconnecting_site(requests[0][0])),
                                        conclude=lambda trip: trip.count())
        # On PostgreSQL, the tenant row is read on the event loop (backflow.loop_postgres) and the
        # callers counted there too: one read and one count for the tenant's requests that come
        # together, while one is being made.
        self._admissions_on_loop = LoopTrips(self._admission_on_loop, self.ADMISSIONS_PER_TRIP, prepare=self._trip_on_loop,
                                             conclude=self._count_on_loop) if loop_reads_postgres.on_postgres else None

    def _lookup(self, slug):
        """The tenant and its current route table, in one trip to the database thread (the tenant
        row, read on every request, carries its state and its routes' version)."""
        tenant = tenant_get(slug=slug)
        if tenant is None:
            return None, None
        cached = self._tables.get(tenant.pk)
        if cached is None or cached[0] != tenant.routes_version:
            store = DatabaseStore(tenant=tenant, actor=None)
            cached = self._tables[tenant.pk] = (tenant.routes_version, RouteTable(store.list_routes(), store.list_integrations()))
        return tenant, cached[1]

    def _site(self, slug):
        tenant, table = self._lookup(slug)
        if tenant is None:
            raise HttpError(404, f"No tenant {slug!r}.")
        if not tenant.is_active:
            raise HttpError(403, f"Tenant {slug!r} is inactive.")
        return TenantSite(tenant, table)

    async def site(self, slug):
        return await in_thread(f"slug:{slug}", self._reconnecting_site, slug)

    async def admitted(self, slug, method, path, headers, client):
        """The tenant's site, the route matching the request and its path params, with the caller
        authenticated and counted (`admission`): in one trip to a thread, shared with the tenant's
        other requests that come meanwhile (backflow.sync.GroupedTrips: the tenant row is read
        after each of them arrived, so a revoked key or a new route counts from the next request).
        On SQLite, a request whose admission needs nothing but the tenant row is admitted on the
        loop itself (`_admitted_here`), however many of the tenant's requests are in flight: a trip's
        work could run beside the loop on the other CPU, but handing it over and back cost the
        loaded server more (daphne, 50 clients, one route, alternating: 1,520-1,560 against
        1,320-1,480 requests/s; 645-660 against 700-780 us of CPU a request). On PostgreSQL the
        same requests are admitted on the loop in trips of their own (`_admissions_on_loop`: the
        row read on the loop's connection and the callers counted, once for the tenant's requests
        that come while one is being made); what they cannot admit takes the trip to a thread."""
        request = (slug, method, path, headers, client)
        if self.reads_here is not None:
            here = self._admitted_here(*request)
            if here is not None:
                return here
        elif self._admissions_on_loop is not None:
            admitted = await self._admissions_on_loop(f"slug:{slug}", request)
            if admitted is not None:
                return admitted.site, admitted.route, admitted.path_params, admitted.wait
        admitted = await self._admissions(f"slug:{slug}", request)
        return admitted.site, admitted.route, admitted.path_params, admitted.wait

    def _admitted_here(self, slug, method, path, headers, client):
        """`admitted` on the event loop itself, for a request whose admission needs no query but
        the tenant row, no write and no network (`reads_here`): the tenant active, its route table
        built at the row's version, and the caller a public route's or an API key verified before
        while nothing changed, counted in this process's memory. A trip to a pool thread costs a
        loaded server more CPU than the whole admission (issue 17). None: the request takes the
        trip, which decides every other case (a tenant not found or inactive, a new key, a JWT)."""
        try:
            site = self._current_site(tenant_get_here(slug=slug, reads=self.reads_here))
        except LoopReads.Unavailable:
            return None
        if site is None:
            return None
        route, path_params = site.table.match(method, path)
        caller = known_caller_of(site, route, headers, client)
        return None if caller is None else (site, route, path_params, caller_wait(site, caller))

    def _current_site(self, tenant):
        """The site of `tenant` (a row read on the loop) when it is active and its route table was
        built at the row's routes_version, else None (the trip decides)."""
        cached = self._tables.get(tenant.pk) if tenant is not None and tenant.is_active else None
        if cached is None or cached[0] != tenant.routes_version:
            return None
        site = self._sites_here.get(tenant.pk)
        if site is None or site.tenant is not tenant or site.table is not cached[1]:  # a row read again, a table rebuilt
            site = self._sites_here[tenant.pk] = TenantSite(tenant, cached[1])
        return site

    async def _trip_on_loop(self, owner, requests):
        """A trip on the loop (PostgreSQL): the tenant row read on the loop's own connection, or
        None when it cannot be there now or the row needs the trip to a thread (see _current_site)."""
        try:
            site = self._current_site(await tenant_get_on_loop(slug=requests[0][0], reads=loop_reads_postgres))
        except LoopPostgres.Unavailable:
            return None
        return _AdmissionTrip(site) if site is not None else None

    @staticmethod
    async def _count_on_loop(trip):
        if trip is not None:
            await trip.count_on_loop()

    @staticmethod
    def _admission_on_loop(trip, request):
        """A request's route and params with its caller known without a query, or None (its
        admission takes the trip to a thread: a new key, a JWT, a tenant not admitted on the loop)."""
        if trip is None:
            return None
        _, method, path, headers, client = request
        route, path_params = trip.site.table.match(method, path)
        caller = known_caller_of(trip.site, route, headers, client)
        return None if caller is None else trip.admit(route, path_params, caller)

    @staticmethod
    def _admission(trip, request):
        """A request's route and path params with its caller authenticated (its count is made at
        the trip's end), or HttpError."""
        _, method, path, headers, client = request
        route, path_params = trip.site.table.match(method, path)
        return trip.admit(route, path_params, caller_of(trip.site, route, headers, client))


class _Admitted:
    __slots__ = ("site", "route", "path_params", "wait")

    def __init__(self, site, route, path_params):
        self.site, self.route, self.path_params, self.wait = site, route, path_params, None


class _AdmissionTrip:
    """The requests to one tenant's routes admitted in one trip: the tenant's site, read once for
    them all, and their rate-limit counts, made together once each has its caller (on Redis, one
    round trip for the trip instead of one per request, each waited for in turn)."""

    def __init__(self, site):
        self.site, self._admitted, self._callers = site, [], []

    def admit(self, route, path_params, caller):
        admitted = _Admitted(self.site, route, path_params)
        self._admitted.append(admitted)
        self._callers.append(caller)
        return admitted

    def count(self):
        self._waits(callers_wait(self.site, self._callers))

    async def count_on_loop(self):
        self._waits(await aretry_after_each(rate_keys(self.site, self._callers), settings.BACKFLOW_ROUTE_RATE_LIMIT, name="routes"))

    def _waits(self, waits):
        for admitted, wait in zip(self._admitted, waits):
            admitted.wait = wait


class LocalSite:
    """The seed's files (`serve_local`): tenant slug `local`, secrets from {{env.NAME}}.

    `token`: what routes with requireAuth need as `Authorization: Bearer …` (serve_local always
    gives one: BACKFLOW_LOCAL_TOKEN, or one it makes at start); None serves them openly (in-process
    use only). Browsers' cross-site requests are refused before any route runs (`refuse_cross_site`)."""

    rate_key = "routes:local"
    owner = slug = "local"
    # Sec-Fetch-Site values a browser sends for requests the page's own origin, or the person
    # (typed URL, bookmark), started; clients that are not browsers send none.
    ALLOWED_FETCH_SITES = ("same-origin", "none")

    def __init__(self, store, token=None):
        self.store, self.token = store, token
        self.secrets = SecretResolver(self._secret, cache_namespace="local", env=local_environment())
        self._snapshot, self._table = None, None

    @property
    def table(self):
        snapshot = self.store.snapshot()
        if snapshot is not self._snapshot:
            self._snapshot, self._table = snapshot, RouteTable(snapshot.routes, snapshot.integrations.values())
        return self._table

    async def _secret(self, reference, label):
        if not isinstance(reference, str) or "{{" not in reference:
            raise RouteFailure(502, f"{label}: local mode reads credentials from {{{{env.NAME}}}} placeholders, not stored secrets.")
        try:
            return render(reference, {}, env=self.secrets.env)
        except TemplateError as exc:
            raise RouteFailure(502, f"{label}: {exc}") from exc

    @classmethod
    def refuse_cross_site(cls, headers):
        """403 for a request another site's page made the developer's browser send. Browsers name
        the initiator in Sec-Fetch-Site on every request — an <img>, a link, a form, fetch() — and
        pages cannot set it; `cross-site` and `same-site` (another port or subdomain) are refused,
        so {{env.NAME}} credentials are never spent on another site's behalf, whatever the route's
        requireAuth. Requests without the header (curl, scripts, old browsers) pass to the routes."""
        fetch_site = (headers.get("sec-fetch-site") or "").strip().lower()
        if fetch_site and fetch_site not in cls.ALLOWED_FETCH_SITES:
            raise HttpError(403, f"Local mode refuses requests started by another site's page (Sec-Fetch-Site: {fetch_site[:40]}); "
                                 "call it from a script, curl or a page it serves itself.")

    def authenticate(self, headers):
        raw = bearer_value(headers.get("authorization")) or ""
        if self.token and not tokens.compare_digest(raw.encode(), self.token.encode()):
            raise HttpError(401, "This route requires Authorization: Bearer <BACKFLOW_LOCAL_TOKEN> (serve_local printed the "
                                 "token at start when the variable was not set).",
                            [(b"www-authenticate", b'Bearer realm="backflow-local"')])

    def invocation(self, route, method, path, status, duration_ms, error, test=False):
        """Local mode keeps no records: the call goes to the log."""
        logger.info("%s%s %s -> %s in %.1f ms%s", "test " if test else "", method.upper(), path, status, duration_ms,
                    f" ({error})" if error else "")


class LocalSites:
    def __init__(self, site):
        self._site = site

    async def site(self, slug):
        if slug != "local":
            raise HttpError(404, f"Local mode serves /t/local/…, not /t/{slug}/.")
        return self._site

    async def admitted(self, slug, method, path, headers, client):
        site = await self.site(slug)
        route, path_params = site.table.match(method, path)
        return site, route, path_params, await in_thread(site.owner, admission, site, route, headers, client)


def caller_wait(site, caller):
    """Count one call of `site`'s routes by `caller` (a credential's label, or `ip:<address>`):
    None while within BACKFLOW_ROUTE_RATE_LIMIT, else the seconds to wait."""
    return callers_wait(site, [caller])[0]


def callers_wait(site, callers):
    """caller_wait for one call by each of `callers`, in order, counted together."""
    return retry_after_each(rate_keys(site, callers), settings.BACKFLOW_ROUTE_RATE_LIMIT, name="routes")


def rate_keys(site, callers):
    return [f"{site.rate_key}:{caller}" for caller in callers]


def known_caller_of(site, route, headers, client):
    """caller_of without a query or a write: the label of an API key verified before while
    nothing changed, or the client's address on a public route; None when authenticate decides."""
    return site.known_caller(headers) if route.get("requireAuth", True) else "ip:" + client


def caller_of(site, route, headers, client):
    """Who the call counts against: the caller, authenticated when the route requires it
    (HttpError 401 otherwise), else the client's address. Per caller, so that anonymous callers of
    a public route cannot spend the tenant's whole budget and lock its own callers out."""
    caller = site.authenticate(headers) if route.get("requireAuth", True) else None
    return caller or "ip:" + client


def admission(site, route, headers, client):
    """Authenticate the caller, then count the call against its budget at this tenant: seconds to
    wait, or None."""
    return caller_wait(site, caller_of(site, route, headers, client))


class RouteDispatcher:
    def __init__(self, sites):
        self.sites = sites
        self._background = set()
        self.invocations = InvocationWriter(self._background)
        self._in_flight = Slots()  # per site owner: route calls running now in this process

    async def __call__(self, scope, receive, send):
        try:
            await self._handle(scope, receive, send)
        except HttpError as exc:
            await respond(send, exc.status, exc.body(), exc.headers)

    async def _handle(self, scope, receive, send):
        started = time.monotonic()
        headers = request_headers(scope)
        check_host(headers)
        _, _, rest = scope["path"].partition("/t/")
        slug, _, tail = rest.partition("/")
        path = "/" + tail.rstrip("/") if tail.strip("/") else "/"
        method = scope["method"].lower()
        try:
            depth = call_depth(headers.get(DEPTH_HEADER.lower()))
        except ServiceError as exc:
            raise HttpError(exc.status_code, str(exc)) from exc
        site, route, path_params, wait = await self.sites.admitted(slug, method, path, headers, (scope.get("client") or ("",))[0])
        if wait:
            raise HttpError(429, f"Too many requests to this tenant's routes from you; retry in {wait} s.", [(b"retry-after", str(wait).encode())])
        raw = await read_body(receive, settings.DATA_UPLOAD_MAX_MEMORY_SIZE)
        try:
            body = parse_json(raw) if raw.strip() else {}
        except JsonBodyError as exc:
            raise HttpError(400, f"The request body is not acceptable JSON: {exc}", errors={"body": [str(exc)]}) from exc
        status, answer, error = await self.serve(site, route, path_params, query_params(scope), body, headers, depth)
        await respond(send, status, answer)
        seconds = time.monotonic() - started
        metrics.route_invocation(status, seconds, site.slug)
        self.record_soon(site, route, method, path, status, round(seconds * 1000, 2), error)

    async def serve(self, site, route, path_params, query, body, headers, depth, trace=None):
        """Run a matched route: (status, answer, error). `trace`, a list, gets one entry per action
        (the test_route tool)."""
        request_context = {"request": {
            "query": query, "body": body, "params": path_params,
            "headers": {k: v for k, v in headers.items() if k not in FORWARDED_HEADERS_EXCLUDED},
        }}
        with self._slot(site.owner):
            try:
                result = await run_route(route=route, integrations=site.table.integrations, request_context=request_context,
                                         client=shared_client(), secrets=site.secrets,
                                         call_settings=CallSettings(depth=depth + 1, trace=trace))
                return 200, result, ""
            except RouteFailure as failure:
                return failure.status, failure.body(), failure.message

    @contextlib.contextmanager
    def _slot(self, owner):
        """One of the tenant's BACKFLOW_ROUTE_CONCURRENCY_PER_TENANT route calls in flight: a
        tenant whose upstream hangs fills its own slots, not the connection pool all tenants share."""
        try:
            with self._in_flight.take(owner, settings.BACKFLOW_ROUTE_CONCURRENCY_PER_TENANT):
                yield
        except Full as full:
            metrics.rate_limit_refusals.labels("route_concurrency").inc()
            raise HttpError(503, f"This tenant already has {full.held} route calls in progress; retry shortly.",
                            [(b"retry-after", b"1")]) from None

    def record_soon(self, site, route, method, path, status, duration_ms, error, test=False):
        """After the answer is sent, off the request's path (the record carries the request's id)."""
        row = site.invocation(route, method, path, status, duration_ms, error, test)
        if row is not None:
            self.invocations.add(row)


class InvocationWriter:
    """Route invocation records, inserted in batches by one writer task per event loop (a group
    commit): while an insert runs, the records of the calls answered meanwhile wait, and the next
    insert takes them all (at most BATCH). An idle process writes each record as soon as it comes;
    a busy one pays for one insert per batch instead of one thread hop and insert per call.

    At most BACKFLOW_ROUTE_INVOCATION_BUFFER records wait per process; past it (the database is
    down or slower than the calls) new records are dropped, logged and counted
    (backflow_route_invocation_records_dropped). A crash loses the records waiting at that moment,
    never more than that bound; the answers were sent already. A batch the database refuses is
    logged and dropped, as one record was before.

    Inserts start at most once every LINGER seconds per loop: a busy process gathers the records
    of that time in one insert (at 600 calls/s, about 60) instead of inserting the one or two that
    arrived during the last insert (each insert costs about 0.2 ms of CPU, plus 0.05 ms a row); a
    record that comes after a quiet moment is written at once. 0.1 s rather than 0.02 (SQLite, 50
    clients, two alternating A/Bs of 10 rounds, one in each order): 5.9% and 4.2% more requests/s
    at 6.0% and 4.3% less CPU a request; fewer, larger batches on the insert thread, which shares
    the interpreter's lock and the 2 CPUs with the event loop.

    On PostgreSQL the inserts are sent on the event loop's own connection for writes
    (backflow.loop_postgres), not on a pool thread: no hand-off, and no wait for the GIL between
    the database's answer and the thread's next step. While that connection cannot take them (being
    made, the database refusing), a thread inserts them as before; a batch sent there that fails
    is logged and dropped, never sent again (its answer may be what was lost: it might be written twice)."""

    BATCH = 500
    LINGER = 0.1

    def __init__(self, background):
        self._background = background  # the dispatcher's set of tasks in flight (tests wait for it)
        self._waiting = {}  # event loop -> records not yet handed to an insert
        self._writers = {}  # event loop -> its writer task
        self._dropping = set()  # event loops whose records are being dropped (logged once)
        self._next_insert = weakref.WeakKeyDictionary()  # event loop -> when its next insert may start

    def add(self, row):
        loop = asyncio.get_running_loop()
        waiting = self._waiting.setdefault(loop, [])
        if len(waiting) >= settings.BACKFLOW_ROUTE_INVOCATION_BUFFER:
            metrics.route_invocation_records_dropped.inc()
            if loop not in self._dropping:  # once until the writer catches up, not once a call
                self._dropping.add(loop)
                logger.warning("Dropping route invocation records: %s are waiting for the database already "
                               "(counted in backflow_route_invocation_records_dropped_total).", len(waiting))
            return
        waiting.append(row)
        if loop not in self._writers:
            task = self._writers[loop] = loop.create_task(self._write(loop))
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _write(self, loop):
        try:
            while waiting := self._waiting.get(loop):
                pause = self._next_insert.get(loop, 0.0) - time.monotonic()
                if pause > 0 and len(waiting) < self.BATCH:  # the last insert was moments ago: a busy process
                    await asyncio.sleep(pause)
                batch = waiting[:self.BATCH]
                del waiting[:self.BATCH]
                self._next_insert[loop] = time.monotonic() + self.LINGER
                await self._insert(batch)
        finally:
            del self._writers[loop]
            self._waiting.pop(loop, None)
            self._dropping.discard(loop)

    @staticmethod
    async def _insert(batch):
        if loop_writes_postgres.on_postgres:  # on the loop's own connection; on a thread while it has none
            try:
                return await INVOCATION_ROWS.insert_on_loop(batch, loop_writes_postgres)
            except LoopPostgres.Failed as failed:  # sent: made again, the records might be written twice
                logger.warning("Could not record %s route invocation(s): %s", len(batch), failed)
                return
            except LoopPostgres.Unavailable:
                pass
        try:
            await in_thread(None, INVOCATION_ROWS.insert, batch)
        except Exception as exc:
            if outage_message(exc):  # the answers were sent; the database is down (not a bug)
                logger.warning("Could not record %s route invocation(s): %s", len(batch), describe(exc))
            else:
                logger.exception("Could not record %s route invocation(s)", len(batch))


routes_asgi = RouteDispatcher(DatabaseSites())
