"""Prometheus metrics of one process (prometheus-client's default registry).

Each daphne process and each `run_worker --metrics-port N` serves its own; Prometheus adds them
up. No label grows with tenants' data: doors, tool names (the fixed set), outcomes, causes and
final statuses only. With BACKFLOW_METRICS_TENANT_LABEL, route invocations and tool calls also
carry the tenant's slug: one more series per tenant for each of their label sets (the cost is
documented in the operator guide).

Counting is cheap (a counter is a float behind a short mutex of its own); what needs the
database (queued runs, workers alive) is read only when Prometheus scrapes.
"""

import time

from django.conf import settings
from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY

from backflow.outages import DATABASE_UNAVAILABLE

DOORS = ("rest", "mcp_http", "sse", "sse_messages", "routes", "webhooks", "oauth", "pages")
# Latency buckets for answers a person or an assistant waits on (5 ms .. 60 s).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)


# Read once: a metric's labels are fixed when it is made.
TENANT_LABEL = settings.BACKFLOW_METRICS_TENANT_LABEL


def _tenant_labels(*names):
    return (*names, "tenant") if TENANT_LABEL else names


http_requests = Counter("backflow_http_requests", "HTTP requests answered, by door and status.", ("door", "status"))
http_duration = Histogram("backflow_http_request_duration_seconds",
                          "Time to the end of the answer, by door (SSE streams, which last, are not timed).",
                          ("door",), buckets=LATENCY_BUCKETS)
tool_calls = Counter("backflow_mcp_tool_calls", "MCP tool calls by tool and outcome (ok, error, refused before it ran).",
                     _tenant_labels("tool", "outcome"))
route_invocations = Counter("backflow_route_invocations", "Tenant route calls by status class.", _tenant_labels("outcome"))
route_duration = Histogram("backflow_route_invocation_duration_seconds", "Tenant route calls, from request to answer.",
                           buckets=LATENCY_BUCKETS)
route_invocation_records_dropped = Counter(
    "backflow_route_invocation_records_dropped",
    "Route invocation records dropped because BACKFLOW_ROUTE_INVOCATION_BUFFER records were waiting for the database.")
upstream_calls = Counter("backflow_upstream_calls",
                         "Integration calls to upstreams (routes, steps, tools) by outcome.", ("outcome",))
upstream_duration = Histogram("backflow_upstream_call_duration_seconds", "Integration calls to upstreams, retries included.",
                              buckets=LATENCY_BUCKETS)
sse_sessions = Gauge("backflow_sse_sessions_open", "SSE streams open on this process.")
runs_finished = Counter("backflow_runs_finished", "Workflow runs that ended, by final status.", ("status",))
egress_refusals = Counter("backflow_egress_refusals", "Outbound calls the egress guard refused, by reason.", ("reason",))
rate_limit_refusals = Counter("backflow_rate_limit_refusals", "Requests refused by a limit, by limit.", ("limit",))
outage_answers = Counter("backflow_outage_answers", "503 answers because a service was down, by cause.", ("cause",))
worker_heartbeat = Gauge("backflow_worker_heartbeat_timestamp_seconds", "When this worker last recorded its heartbeat.")

UPSTREAM_OUTCOMES = ("ok", "http_error", "timeout", "unreachable", "refused", "too_large", "invalid")
TOOL_OUTCOMES = ("ok", "error", "refused")


_children = {}  # (metric, label values) -> its child


def labelled(metric, *values):
    """metric.labels(*values), remembered: the registry keeps each label set's child for the
    process's life anyway, and labels() checks the values and takes a lock on every call (~4 us of
    a routed request's loop time each, four a request). Values here come from code, never from a
    caller: doors, status codes and classes, tenant slugs with BACKFLOW_METRICS_TENANT_LABEL."""
    child = _children.get((metric, values))
    if child is None:
        child = _children[(metric, values)] = metric.labels(*values)
    return child


def tenant_values(tenant_slug):
    """The tenant label's value, when the operator turned the label on."""
    return (tenant_slug or "-",) if TENANT_LABEL else ()


def status_class(status):
    return f"{int(status) // 100}xx"


def outage(message):
    outage_answers.labels("database" if message == DATABASE_UNAVAILABLE else "redis").inc()


def tool_call(tool, outcome, tenant_slug=None):
    """`tool`: one of the registry's names, or "unknown" (a caller's made-up name is not a label)."""
    tool_calls.labels(tool, outcome, *tenant_values(tenant_slug)).inc()


def route_invocation(status, seconds, tenant_slug=None):
    labelled(route_invocations, status_class(status), *tenant_values(tenant_slug)).inc()
    route_duration.observe(seconds)


class RunQueueCollector:
    """Queued runs, the age of the oldest, and workers with a recent heartbeat, read from the
    database at scrape time (the same values from every process: use max() across instances).
    While the database is down these are left out, and the scrape still answers."""

    FAMILIES = (
        ("backflow_runs_queued", "Workflow runs waiting for a worker."),
        ("backflow_runs_oldest_queued_age_seconds", "Age of the oldest queued run (0: none)."),
        ("backflow_workers_alive", "run_worker processes whose heartbeat is recent."),
    )

    def describe(self):  # names without values: registering must not query the database
        return [GaugeMetricFamily(name, help_text) for name, help_text in self.FAMILIES]

    def collect(self):
        """On the scraping thread's own database connection (the server's pool thread, or the
        worker's metrics thread, which closes it after each scrape)."""
        from workflows_app.selectors import run_queue_state

        try:
            queued, oldest, workers = run_queue_state()
        except Exception:  # an outage must not fail the scrape: the other metrics still matter
            return
        age = max(0.0, time.time() - oldest.timestamp()) if oldest else 0.0
        for (name, help_text), value in zip(self.FAMILIES, (queued, age, workers)):
            yield GaugeMetricFamily(name, help_text, value=value)


_queue_collector = RunQueueCollector()
REGISTRY.register(_queue_collector)
