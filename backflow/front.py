"""The outermost ASGI app: probes and metrics for operators, then, for every other request, its
request id and its door's metrics.

The probes (`/healthz`, `/readyz`) and `/metrics` answer before any Host check, whatever Host a
load balancer or Prometheus sends (they reveal nothing a Host check protects: no tenant data,
no settings, no versions); every other path keeps ALLOWED_HOSTS as before.
"""

import hmac
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import anyio
from asgiref.sync import sync_to_async
from django.conf import settings
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import REGISTRY

from backflow import health, metrics
from backflow.asgi_utils import query_params, request_headers, respond
from backflow.logs import HEADER, incoming_request_id, request_id_bound
from backflow.sync import in_thread
from tenants.authentication import bearer_value

# Longest prefix first; the rest is "pages" (the admin, sign-in, app pages, guides, static files).
DOORS = (
    ("/mcp/sse", "sse"), ("/mcp/messages", "sse_messages"), ("/mcp/", "mcp_http"), ("/api/", "rest"),
    ("/agent/", "rest"), ("/t/", "routes"), ("/hooks/", "webhooks"), ("/o/", "oauth"), ("/.well-known/", "oauth"),
)
_REQUEST_ID_HEADER = HEADER.lower().encode()
logger = logging.getLogger("backflow.health")


# Every prefix above ends its first path segment except MCP's: the door of any other path is found
# by that segment alone (one dict lookup on every request instead of a scan).
_BY_FIRST_SEGMENT = {prefix: door for prefix, door in DOORS if not prefix.startswith("/mcp/")}
_MCP_DOORS = tuple((prefix, door) for prefix, door in DOORS if prefix.startswith("/mcp/"))


def door_of(path):
    if path == "/mcp":
        return "mcp_http"
    if path.startswith("/mcp/"):
        return next(door for prefix, door in _MCP_DOORS if path.startswith(prefix))
    end = path.find("/", 1)
    return _BY_FIRST_SEGMENT.get(path[:end + 1], "pages") if end > 0 else "pages"


class Front:
    def __init__(self, app):
        self.app = app
        self.probes = {"/healthz": self.healthz, "/readyz": self.readyz, "/metrics": self.metrics}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = _request_id(scope)
        header = (_REQUEST_ID_HEADER, request_id.encode())
        probe = self.probes.get(scope["path"])
        if probe is not None:  # not counted in the doors' metrics, and before any Host check
            async def identified(message):
                await send(_carrying(message, header) if message["type"] == "http.response.start" else message)

            with request_id_bound(request_id):
                return await self._probe(probe, scope, identified)
        door = door_of(scope["path"])
        started, answer = time.perf_counter(), {"status": "none", "stream": False}

        # One wrapper of `send` for both (each wrapper costs every message a coroutine call).
        async def counted(message):
            if message["type"] == "http.response.start":
                answer["status"] = str(message["status"])
                if door == "sse" and message["status"] == 200:
                    answer["stream"] = True
                    metrics.sse_sessions.inc()
                message = _carrying(message, header)
            await send(message)

        try:
            with request_id_bound(request_id):
                await self.app(scope, receive, counted)
        finally:
            metrics.labelled(metrics.http_requests, door, answer["status"]).inc()
            if answer["stream"]:
                metrics.sse_sessions.dec()
            else:
                metrics.labelled(metrics.http_duration, door).observe(time.perf_counter() - started)

    @staticmethod
    async def _probe(probe, scope, send):
        if scope["method"] not in ("GET", "HEAD"):
            return await respond(send, 405, {"error": f"{scope['path']} answers GET only."}, [(b"allow", b"GET, HEAD")])
        await probe(scope, send)

    # --- probes ---------------------------------------------------------------------------

    @staticmethod
    async def healthz(scope, send):
        """Liveness: the process serves. Touches neither the database nor Redis."""
        await respond(send, 200, {"status": "ok"}, _NO_STORE)

    @staticmethod
    async def readyz(scope, send):
        """Readiness: each check in turn, within BACKFLOW_READYZ_TIMEOUT seconds in all."""
        workers = query_params(scope).get("workers", "") in ("1", "true", "yes")
        results = await _run_checks(health.checks(workers=workers))
        ready = all(value == health.OK for value in results.values())
        body = {"status": "ready" if ready else "unavailable", "checks": results}
        if not ready:
            body["failing"] = [name for name, value in results.items() if value != health.OK]
        await respond(send, 200 if ready else 503, body, _NO_STORE)

    @staticmethod
    async def metrics(scope, send):
        """The process's metrics for Prometheus: 404 unless BACKFLOW_METRICS_TOKEN is set, then
        401 without `Authorization: Bearer <that token>`."""
        expected = settings.BACKFLOW_METRICS_TOKEN
        if not expected:
            return await respond(send, 404, {"error": "Metrics are not served here (BACKFLOW_METRICS_TOKEN is not set)."})
        if not metrics_token_matches(request_headers(scope).get("authorization", ""), expected):
            return await respond(send, 401, {"error": "Send Authorization: Bearer <BACKFLOW_METRICS_TOKEN>."},
                                 [(b"www-authenticate", b'Bearer realm="backflow-metrics"')])
        encode, content_type = choose_encoder(request_headers(scope).get("accept", ""))  # text, or OpenMetrics if asked
        body = await in_thread(None, encode, REGISTRY)  # the run-queue collector reads the database
        await respond(send, 200, body, _NO_STORE, content_type=content_type.encode())


_NO_STORE = [(b"cache-control", b"no-store")]


def _request_id(scope):
    """The request's id: a trusted proxy's (the last X-Request-ID: a proxy that adds its header
    instead of replacing the client's puts it last), else a new one. Without a trusted proxy, what a
    caller sends is never taken."""
    sent = None
    if settings.BACKFLOW_TRUSTED_PROXIES:
        sent = next((value.decode("latin-1") for name, value in reversed(scope["headers"]) if name == _REQUEST_ID_HEADER), None)
    return incoming_request_id(sent)


def _carrying(start, header):
    """The http.response.start message `start` with the request id's `header`, in place of any the app set."""
    return {**start, "headers": [*(item for item in start.get("headers", ()) if item[0].lower() != _REQUEST_ID_HEADER), header]}


def metrics_token_matches(authorization, expected):
    """`Authorization: Bearer <expected>`, compared in constant time (run_worker's server too)."""
    token = bearer_value(authorization)
    return token is not None and hmac.compare_digest(token.encode(), expected.encode())


# Checks run on threads of their own, never on the pool of tenants' database work: a database
# that hangs holds these, and no more than PROBES_IN_FLIGHT checks wait at once.
_PROBE_THREADS = ThreadPoolExecutor(max_workers=4, thread_name_prefix="backflow-probe")
PROBES_IN_FLIGHT = 8
_in_flight = threading.BoundedSemaphore(PROBES_IN_FLIGHT)


async def _run_checks(checks):
    """{name: result}, in the order of `checks`. Each check has the whole budget; those that need
    the database wait for its check and are skipped when it fails, the others run beside it."""
    budget = settings.BACKFLOW_READYZ_TIMEOUT
    deadline = time.monotonic() + budget
    results = {}

    async def one(name, check):
        if not _in_flight.acquire(blocking=False):
            results[name] = "unavailable: earlier checks have not finished"
            return
        try:
            with anyio.fail_after(max(0.0, deadline - time.monotonic())):
                results[name] = await sync_to_async(_released(check), thread_sensitive=False, executor=_PROBE_THREADS)()
        except TimeoutError:
            logger.warning("Readiness: the %s check did not answer within %g s", name, budget)
            results[name] = f"unavailable: no answer within {budget:g} s"

    async def database_chain(chain):
        for name, check in chain:
            if name != "database" and results.get("database") != health.OK:
                results[name] = "unknown: the database does not answer"
            else:
                await one(name, check)

    needs_database = [(name, check) for name, check in checks if name in DATABASE_CHECKS]
    async with anyio.create_task_group() as group:
        group.start_soon(database_chain, needs_database)
        for name, check in checks:
            if name not in DATABASE_CHECKS:
                group.start_soon(one, name, check)
    return {name: results[name] for name, _ in checks}


DATABASE_CHECKS = ("database", "migrations", "workers")


def _released(check):
    def run():
        try:
            return check()
        finally:
            _in_flight.release()

    return run
