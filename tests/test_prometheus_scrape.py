"""A real Prometheus scrapes a live daphne and a live run_worker (with the alert rules of
docs/monitoring loaded); a route call, an MCP tool call and a workflow run are then read back
through Prometheus's query API, as a dashboard would read them."""

from pathlib import Path

import httpx
import pytest

from integrations_app.tests.test_runtime_helpers import make_integration, make_route, upstream, upstreams  # noqa: F401 (fixtures)
from tests.live import free_port
from tests.prometheus import PrometheusServer, Target
from workflows_app import services
from workflows_app.tests.helpers import Worker, step, workflow

TOKEN = "metrics-token-for-prometheus-0123456789"
RULES = Path(__file__).resolve().parent.parent / "docs" / "monitoring" / "alerts.yml"


def value(result):
    """The one sample of an instant query's vector result, as a number (None when empty)."""
    return float(result[0]["value"][1]) if result else None


def at_least(n):
    return lambda result: result and float(result[0]["value"][1]) >= n


@pytest.mark.slow
def test_prometheus_reads_what_daphne_and_the_worker_count(acme, live_daphne, upstream, tmp_path):
    env = {"BACKFLOW_METRICS_TOKEN": TOKEN, "BACKFLOW_EGRESS_ALLOW": "127.0.0.1", "BACKFLOW_WORKER_HEARTBEAT_SECONDS": "0.5"}
    server = live_daphne(**env)
    metrics_port = free_port()
    worker = Worker(**env, extra_args=["--metrics-port", str(metrics_port)])
    targets = [Target("backflow-web", f"127.0.0.1:{server.port}", token=TOKEN),
               Target("backflow-worker", f"127.0.0.1:{metrics_port}", token=TOKEN)]
    try:
        with PrometheusServer(tmp_path, targets, rule_files=[RULES]) as prometheus:
            prometheus.wait_for('sum(up{job=~"backflow-.*"})', at_least(2), timeout=60)

            make_integration(acme, "crm", upstream.url, [{"name": "listThings", "method": "get", "path": "/things"}])
            make_route(acme, "/things", [{"id": "a", "integration": "crm", "action": "listThings"}])
            auth = {"Authorization": f"Bearer {acme.key}"}
            assert httpx.get(f"{server.url}/t/acme/things", headers=auth, timeout=30, trust_env=False).status_code == 200
            called = httpx.post(f"{server.url}/mcp", headers={**auth, "Accept": "application/json, text/event-stream"}, timeout=30,
                                trust_env=False, json={"jsonrpc": "2.0", "id": 1, "method": "tools/call",
                                                       "params": {"name": "list_integrations", "arguments": {}}})
            assert called.status_code == 200
            beat = services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=workflow(
                "beat", [step("s", "ping")], tools=[{"name": "ping", "type": "integration",
                                                     "params": {"integration": "crm", "action": "listThings"}}]))
            services.run_create(tenant=acme.tenant, actor=acme.actor, workflow=beat)

            # From daphne's job:
            prometheus.wait_for('sum(backflow_route_invocations_total{job="backflow-web",outcome="2xx"})', at_least(1))
            prometheus.wait_for('sum(backflow_http_requests_total{job="backflow-web",door="routes",status="200"})', at_least(1))
            prometheus.wait_for('sum(backflow_mcp_tool_calls_total{job="backflow-web",tool="list_integrations",outcome="ok"})',
                                at_least(1))
            prometheus.wait_for('sum(backflow_http_request_duration_seconds_count{job="backflow-web",door="routes"})', at_least(1))
            # From the worker's job: the run, its upstream call, its heartbeat, the queue it emptied.
            prometheus.wait_for('sum(backflow_runs_finished_total{job="backflow-worker",status="succeeded"})', at_least(1), timeout=60)
            prometheus.wait_for('sum(backflow_upstream_calls_total{job="backflow-worker",outcome="ok"})', at_least(1))
            assert value(prometheus.query('backflow_worker_heartbeat_timestamp_seconds{job="backflow-worker"}')) > 0
            prometheus.wait_for("max(backflow_workers_alive)", at_least(1))
            prometheus.wait_for("max(backflow_runs_queued)", lambda result: result and value(result) == 0)
            # The alert rules are loaded and evaluate without errors against the real series.
            rules = [rule for group in prometheus.rules() for rule in group["rules"]]
            assert {rule["name"] for rule in rules} >= {"BackflowDown", "BackflowNoWorkers", "BackflowRunsBacklog"}
            assert all(rule["health"] in ("ok", "unknown") for rule in rules), [(r["name"], r.get("lastError")) for r in rules]
            assert not [r["name"] for r in rules if r.get("state") == "firing"]
    finally:
        worker.stop()
