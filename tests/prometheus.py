"""A real Prometheus (Debian's package: `make prometheus`) on a free loopback port, for tests of
what it scrapes from Backflow and of the alert rules in docs/monitoring.

    with PrometheusServer(tmp_path, [Target("backflow-web", f"127.0.0.1:{port}", token=t)]) as prom:
        prom.wait_for('up{job="backflow-web"} == 1')
"""

import json
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.live import free_port, stop_process, wait_for_port


def binary(name):
    """Fails (never skips) without the binaries, so a missing install cannot pass as green."""
    path = shutil.which(name)
    assert path, f"`{name}` is not installed: run `make prometheus` (Debian's prometheus package)"
    return path


def promtool(*args, timeout=60):
    return subprocess.run([binary("promtool"), *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, check=False)


def promtool_check_rules(path):
    return promtool("check", "rules", path)


@dataclass
class Target:
    job: str
    address: str  # host:port, on loopback in tests
    path: str = "/metrics"
    token: str | None = None  # sent as `Authorization: Bearer ...`


class PrometheusServer:
    """Prometheus scraping `targets` every second and evaluating `rule_files` every second.

    Its files (config, TSDB, log) live in a fresh directory under `tmp_path`; its log goes to a
    file, not a pipe, which would block it once full unread."""

    def __init__(self, tmp_path, targets=(), rule_files=(), ready_timeout=60.0):
        self.dir = Path(tempfile.mkdtemp(prefix="prometheus-", dir=tmp_path))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.dir / "prometheus.log"
        config = self.dir / "prometheus.yml"
        # JSON is YAML: no YAML writer needed, and no quoting surprises in tokens or paths.
        config.write_text(json.dumps(self.config(targets, rule_files), indent=2))
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [binary("prometheus"), f"--config.file={config}", f"--storage.tsdb.path={self.dir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}", "--web.enable-lifecycle"],
                cwd=self.dir, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        # Proxy variables from the environment must not send loopback requests elsewhere.
        self.http = httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise

    @staticmethod
    def config(targets, rule_files):
        def job(target):
            scrape = {"job_name": target.job, "metrics_path": target.path,
                      "static_configs": [{"targets": [target.address]}]}
            if target.token:
                scrape["authorization"] = {"type": "Bearer", "credentials": target.token}
            return scrape

        return {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(Path(path).resolve()) for path in rule_files],
            "scrape_configs": [job(target) for target in targets],
        }

    def _wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        wait_for_port(self.port, self.process, timeout=timeout, log_path=self.log_path)
        # The port opens before the TSDB and rules are loaded; /-/ready says 503 until then.
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"prometheus exited with {self.process.returncode}:\n{self.log_tail()}"
            try:
                if self.http.get("/-/ready").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"prometheus not ready within {timeout} s:\n{self.log_tail()}")

    def log_tail(self, chars=3000):
        return self.log_path.read_text(errors="replace")[-chars:]

    def _api(self, path, **params):
        answer = self.http.get(f"/api/v1/{path}", params=params)
        body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
        assert answer.status_code == 200 and body.get("status") == "success", (
            f"GET /api/v1/{path} {params}: {answer.status_code} {answer.text[:1000]}\n{self.log_tail()}")
        return body["data"]

    def query(self, expr):
        """An instant query's result: for a vector, a list of {"metric": {...}, "value": [ts, "v"]}."""
        return self._api("query", query=expr)["result"]

    def wait_for(self, expr, predicate=bool, timeout=30.0):
        """Polls `expr` until `predicate(result)` holds (default: a non-empty result); the result."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(expr)
            if predicate(result):
                return result
            if time.monotonic() > deadline:
                raise AssertionError(f"{expr!r} did not satisfy the predicate within {timeout} s; last result "
                                     f"{result}\ntargets: {self.targets()}\n{self.log_tail()}")
            time.sleep(0.25)

    def targets(self):
        return self._api("targets")["activeTargets"]

    def rules(self):
        """Loaded rule groups, each with its "rules" (alerts carry "state" and "health")."""
        return self._api("rules")["groups"]

    def stop(self):
        self.http.close()
        stop_process(self.process)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
