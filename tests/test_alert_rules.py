"""The example monitoring files in docs/monitoring: promtool accepts them, and a real Prometheus
loads and evaluates the alert rules. Without Prometheus these fail: run `make prometheus`."""

import shutil
import textwrap
from pathlib import Path

import pytest
import yaml

from tests.live import free_port
from tests.prometheus import PrometheusServer, Target, promtool, promtool_check_rules

MONITORING = Path(__file__).resolve().parent.parent / "docs" / "monitoring"
RULES = MONITORING / "alerts.yml"
ALERTS = {"BackflowDown", "BackflowHighServerErrorRate", "BackflowSlowRequests", "BackflowRunsBacklog",
          "BackflowNoWorkers", "BackflowOutageAnswers", "BackflowUpstreamFailures", "BackflowRunFailures"}


def test_promtool_accepts_the_alert_rules():
    done = promtool_check_rules(RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def test_promtool_rejects_broken_promql(tmp_path):
    # Proves the check above can fail: the same file with one expression broken.
    broken = tmp_path / "alerts.yml"
    text = RULES.read_text()
    assert "expr: max(backflow_workers_alive) == 0" in text
    broken.write_text(text.replace("expr: max(backflow_workers_alive) == 0", "expr: max(backflow_workers_alive == 0"))
    done = promtool_check_rules(broken)
    assert done.returncode != 0, done.stdout
    assert "parse error" in done.stdout + done.stderr


def test_promtool_accepts_the_example_config(tmp_path):
    # The example points at /etc/prometheus/backflow-metrics-token, which promtool requires to exist.
    token = tmp_path / "token"
    token.write_text("example-token\n")
    text = (MONITORING / "prometheus.yml").read_text()
    assert text.count("/etc/prometheus/backflow-metrics-token") == 2
    (tmp_path / "prometheus.yml").write_text(text.replace("/etc/prometheus/backflow-metrics-token", str(token)))
    shutil.copy(RULES, tmp_path / "alerts.yml")
    done = promtool("check", "config", tmp_path / "prometheus.yml")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout


def test_alerts_fire_on_synthetic_series(tmp_path):
    # promtool's rule unit tests: series named as the app exports them, so an expression that
    # never matches them (a wrong label value, a lost sum) fails here, not in production.
    # promtool compares annotations word for word: they are left out, so prose edits break nothing.
    rules = yaml.safe_load(RULES.read_text())
    for rule in rules["groups"][0]["rules"]:
        del rule["annotations"]
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump(rules))
    (tmp_path / "tests.yml").write_text(textwrap.dedent("""\
        rule_files: [alerts.yml]
        evaluation_interval: 1m
        tests:
          - interval: 1m
            input_series:
              - series: 'backflow_http_requests_total{door="rest", status="200", instance="a"}'
                values: '0+90x20'
              - series: 'backflow_http_requests_total{door="routes", status="502", instance="b"}'
                values: '0+500x20'
              - series: 'backflow_http_requests_total{door="pages", status="404", instance="b"}'
                values: '0+5000x20'
              - series: 'backflow_http_requests_total{door="mcp_http", status="503", instance="b"}'
                values: '0+50x20'
              - series: 'backflow_workers_alive{instance="a"}'
                values: '0x20'
              - series: 'backflow_outage_answers_total{cause="redis", instance="a"}'
                values: '0 0 0 0 0 0 0 0 0 0 3 3 3 3 3 3 3 3 3 3 3'
              - series: 'backflow_runs_finished_total{status="succeeded", instance="w"}'
                values: '0+10x20'
              - series: 'backflow_runs_finished_total{status="failed", instance="w"}'
                values: '0+1x20'
              - series: 'backflow_runs_oldest_queued_age_seconds{instance="a"}'
                values: '0+60x20'
              - series: 'backflow_upstream_calls_total{outcome="ok", instance="a"}'
                values: '0+50x20'
              - series: 'backflow_upstream_calls_total{outcome="timeout", instance="a"}'
                values: '0+25x20'
              - series: 'up{job="backflow-web", instance="a"}'
                values: '1x20'
            alert_rule_test:
              - eval_time: 15m
                alertname: BackflowHighServerErrorRate
                exp_alerts:
                  - exp_labels: {severity: critical}
              - eval_time: 15m
                alertname: BackflowNoWorkers
                exp_alerts:
                  - exp_labels: {severity: critical}
              - eval_time: 12m
                alertname: BackflowOutageAnswers
                exp_alerts:
                  - exp_labels: {severity: critical, cause: redis}
              - eval_time: 10m
                alertname: BackflowRunsBacklog
                exp_alerts:
                  - exp_labels: {severity: warning}
              - eval_time: 15m
                alertname: BackflowUpstreamFailures
                exp_alerts:
                  - exp_labels: {severity: warning}
              - eval_time: 20m
                alertname: BackflowRunFailures
                exp_alerts: []
              - eval_time: 20m
                alertname: BackflowDown
                exp_alerts: []
        """))
    done = promtool("test", "rules", tmp_path / "tests.yml")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.slow  # Prometheus hands its first targets to the scraper after ~5 s
def test_prometheus_loads_and_evaluates_the_rules(tmp_path):
    # A target where nothing listens (loopback, a free port): `up` is 0 and BackflowDown pends.
    down = Target("backflow-web", f"127.0.0.1:{free_port()}", token="not-a-real-token")
    with PrometheusServer(tmp_path, [down], rule_files=[RULES]) as prom:
        groups = prom.rules()
        assert [group["name"] for group in groups] == ["backflow"]
        assert {rule["name"] for rule in groups[0]["rules"] if rule["type"] == "alerting"} == ALERTS

        prom.wait_for('up{job="backflow-web"}', lambda result: [r["value"][1] for r in result] == ["0"])
        prom.wait_for('ALERTS{alertname="BackflowDown", alertstate="pending"}')
        # Evaluated once by now; an expression that only fails at evaluation shows up here.
        health = {rule["name"]: (rule["health"], rule.get("lastError")) for rule in prom.rules()[0]["rules"]}
        assert all(state == "ok" for state, _ in health.values()), (health, prom.log_tail())
