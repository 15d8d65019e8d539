"""Operations on a live daphne: the probes (/healthz, /readyz), the /metrics door, request ids.

The probes are asked with the database, Redis and the worker each made unavailable in turn (the
fault suite's tools: a loopback proxy in front of a private Postgres database, a private
redis-server, a run_worker child). Expectations are written out here, never read from the product.
"""

import json
import os
import re
import signal
import socket
import threading
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from django.conf import settings

from integrations_app.models import RouteInvocation
from integrations_app.tests.test_runtime_helpers import make_integration, make_route, upstream, upstreams  # noqa: F401 (fixtures)
from mcp_app.tests.test_dropped_connections import drop_connection_of, thread  # noqa: F401 (fixture)
from tenants.models import AuditEvent
from tests.faults.helpers import RedisServer, TcpProxy, wait_until
from tests.live import Daphne, manage, postgres_admin_url, postgres_url, private_database
from workflows_app.models import WorkerHeartbeat, WorkflowRun
from workflows_app.tests.helpers import Worker

TOKEN = "metrics-token-for-tests-0123456789"
GENERATED_ID = re.compile(r"[0-9a-f]{32}")
BASE_CHECKS = {"database": "ok", "migrations": "ok", "static": "ok"}
# What no probe answer may contain: addresses, drivers, versions of what runs behind it.
REVEALING = ("127.0.0.1", "5432", "6379", "sqlite", "postgres", "psycopg", "redis://", "django", "python", "daphne")


@pytest.fixture(scope="session")
def static_root(tmp_path_factory):
    """Collected static files: the ones `make test` collects, else a collection of this run's own."""
    collected = Path(settings.STATIC_ROOT)
    if (collected / "staticfiles.json").exists():
        return str(collected)
    root = tmp_path_factory.mktemp("static")
    manage("collectstatic", "--noinput", "-v0", env={"BACKFLOW_STATIC_ROOT": str(root)})
    return str(root)


def expected_checks(**changes):
    """The checks /readyz runs: Redis's only when this run configures it (CI does, `make test` may not)."""
    checks = {**BASE_CHECKS, **({"redis": "ok"} if os.environ.get("REDIS_URL") else {})}
    return {**checks, **changes}


def probe(server, path, **kwargs):
    return httpx.get(f"{server.url}{path}", timeout=30, trust_env=False, **kwargs)


def assert_reveals_nothing(response):
    text = response.text.lower()
    assert not [word for word in REVEALING if word in text], response.text


# --- /healthz and /readyz ----------------------------------------------------------------------


def test_probes_answer_a_balancer_whatever_its_host_and_reveal_nothing(live_daphne, static_root):
    server = live_daphne(BACKFLOW_STATIC_ROOT=static_root)
    health = probe(server, "/healthz", headers={"Host": "10.0.0.7:8000"})  # a balancer probes by address
    assert (health.status_code, health.json()) == (200, {"status": "ok"})
    ready = probe(server, "/readyz", headers={"Host": "10.0.0.7:8000"})
    assert (ready.status_code, ready.json()) == (200, {"status": "ready", "checks": expected_checks()})
    assert ready.headers["cache-control"] == "no-store"
    for answer in (health, ready):
        assert_reveals_nothing(answer)
    # Every other door still checks Host against ALLOWED_HOSTS.
    assert probe(server, "/", headers={"Host": "10.0.0.7:8000"}).status_code == 400
    assert probe(server, "/mcp", headers={"Host": "10.0.0.7:8000"}).status_code == 421
    # Probes are read-only.
    refused = httpx.post(f"{server.url}/healthz", timeout=30, trust_env=False)
    assert (refused.status_code, refused.headers["allow"]) == (405, "GET, HEAD")


def test_readyz_names_static_files_that_were_never_collected(live_daphne, tmp_path):
    server = live_daphne(BACKFLOW_STATIC_ROOT=str(tmp_path))
    ready = probe(server, "/readyz")
    assert ready.status_code == 503
    assert ready.json() == {
        "status": "unavailable", "failing": ["static"],
        "checks": expected_checks(static="missing: static files are not collected; run `manage.py collectstatic`"),
    }
    assert probe(server, "/healthz").status_code == 200


def test_readyz_names_unapplied_migrations_until_migrate_runs(static_root, transactional_db):
    with private_database("sqlite") as url:
        env = {"DATABASE_URL": url, "BACKFLOW_STATIC_ROOT": static_root}
        manage("migrate", "tenants", "0002", "-v0", env=env)  # an upgrade that has not migrated yet
        server = Daphne(**env)
        try:
            ready = probe(server, "/readyz")
            assert ready.status_code == 503, ready.text
            body = ready.json()
            assert body["failing"] == ["migrations"]
            assert re.fullmatch(r"pending: \d+ migration\(s\) not applied; run `manage.py migrate`", body["checks"]["migrations"])
            manage("migrate", "-v0", env=env)
            assert (probe(server, "/readyz").status_code, probe(server, "/readyz").json()["checks"]) == (200, expected_checks())
        finally:
            server.stop()


@pytest.fixture
def postgres_behind_proxy(static_root):
    """A private, migrated Postgres database that the daphne reaches through a proxy the test can
    make refuse every connection."""
    admin = postgres_admin_url()
    with private_database("postgres") as direct:
        manage("migrate", "-v0", env={"DATABASE_URL": direct})
        proxy = TcpProxy(("127.0.0.1", urlsplit(admin).port or 5432))
        try:
            name = urlsplit(direct).path.lstrip("/")
            yield proxy, {"DATABASE_URL": postgres_url(admin, name, port=proxy.port), "BACKFLOW_STATIC_ROOT": static_root}
        finally:
            proxy.close()


def test_readyz_while_the_database_is_down(postgres_behind_proxy, transactional_db):
    proxy, env = postgres_behind_proxy
    server = Daphne(**env)
    try:
        assert probe(server, "/readyz").status_code == 200
        proxy.refuse()
        proxy.cut()
        down = probe(server, "/readyz")
        assert down.status_code == 503
        assert down.json() == {
            "status": "unavailable", "failing": ["database", "migrations"],
            "checks": expected_checks(database="unavailable: the database does not answer",
                                      migrations="unknown: the database does not answer"),
        }
        assert_reveals_nothing(down)
        assert probe(server, "/healthz").status_code == 200  # alive, only not ready: no restart wanted
        proxy.accept()
        back = probe(server, "/readyz")
        assert back.status_code == 200, back.text
    finally:
        server.stop()


@pytest.mark.django_db(transaction=True)
def test_the_checks_after_the_database_one_reconnect_a_dropped_connection_of_their_thread(thread):
    """/readyz's checks run on whichever probe thread is free, each thread keeping its connection:
    after a database restart the database check reconnects on one thread, and the migrations and
    workers checks must not fail on another thread's dead connection (that was a 503 with the
    database back, seen as a flaky test above). `thread`: one thread keeping its connection."""
    from backflow import health

    assert thread.submit(health.check_migrations).result(timeout=60) == health.OK
    drop_connection_of(thread)
    assert thread.submit(health.check_migrations).result(timeout=60) == health.OK
    drop_connection_of(thread)
    workers = thread.submit(health.check_workers).result(timeout=60)
    assert workers.startswith("none: no run_worker"), workers  # read, on a new connection: no worker here


def test_readyz_while_redis_is_down(live_daphne, static_root, tmp_path):
    redis = RedisServer(tmp_path / "redis").start()
    try:
        server = live_daphne(REDIS_URL=redis.url, BACKFLOW_STATIC_ROOT=static_root)
        with_redis = {**BASE_CHECKS, "redis": "ok"}
        assert probe(server, "/readyz").json() == {"status": "ready", "checks": with_redis}
        redis.stop()
        down = probe(server, "/readyz")
        assert down.status_code == 503
        assert down.json() == {"status": "unavailable", "failing": ["redis"],
                               "checks": {**with_redis, "redis": "unavailable: Redis does not answer"}}
        assert probe(server, "/healthz").status_code == 200
        redis.start()
        assert probe(server, "/readyz").status_code == 200
    finally:
        redis.stop()


def test_readyz_with_workers_needs_a_recent_heartbeat(live_daphne, static_root):
    timing = {"BACKFLOW_WORKER_HEARTBEAT_SECONDS": "0.3", "BACKFLOW_WORKER_STALE_SECONDS": "3", "BACKFLOW_WORKER_CONCURRENCY": "2"}
    server = live_daphne(BACKFLOW_STATIC_ROOT=static_root, **timing)
    none = probe(server, "/readyz?workers=1")
    assert none.status_code == 503
    assert none.json()["checks"] == expected_checks(workers="none: no run_worker has recorded a heartbeat in the last 3 s")
    assert probe(server, "/readyz").status_code == 200  # without ?workers=1 a web process needs no worker

    killed = Worker(**timing)
    try:
        wait_until(lambda: probe(server, "/readyz?workers=1").status_code == 200, timeout=60, message="the worker's heartbeat")
        beat = WorkerHeartbeat.objects.get()
        assert (beat.pid, beat.concurrency) == (killed.process.pid, 2)
    finally:
        killed.stop()  # SIGKILL: no goodbye, the heartbeat goes stale
    wait_until(lambda: probe(server, "/readyz?workers=1").status_code == 503, timeout=30, message="the heartbeat going stale")

    stopped = Worker(**timing)
    wait_until(lambda: WorkerHeartbeat.objects.filter(pid=stopped.process.pid).exists(), timeout=60, message="a second heartbeat")
    stopped.process.send_signal(signal.SIGTERM)  # a clean stop removes its row at once
    stopped.process.wait(timeout=60)
    assert not WorkerHeartbeat.objects.filter(pid=stopped.process.pid).exists()
    stopped.stop()


# --- /metrics ------------------------------------------------------------------------------------


def test_metrics_are_off_without_a_token_and_need_it_when_on(live_daphne):
    off = live_daphne()
    assert probe(off, "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
    on = live_daphne(BACKFLOW_METRICS_TOKEN=TOKEN)
    for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789abcdef"}, {"Authorization": f"Basic {TOKEN}"}):
        refused = probe(on, "/metrics", headers=headers)
        assert (refused.status_code, refused.headers["www-authenticate"]) == (401, 'Bearer realm="backflow-metrics"')
        assert "backflow_" not in refused.text
    served = probe(on, "/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert served.status_code == 200
    assert served.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"  # what every Prometheus reads
    assert "# TYPE backflow_http_requests_total counter" in served.text
    openmetrics = probe(on, "/metrics", headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/openmetrics-text"})
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.endswith("# EOF\n")


@pytest.mark.parametrize("token", ["short", " " * 20, "sixteen chars but spaced"])
def test_a_short_or_spaced_metrics_token_is_refused_at_start(live_daphne, token):
    with pytest.raises(RuntimeError, match="BACKFLOW_METRICS_TOKEN must be at least 16 characters, without spaces"):
        live_daphne(BACKFLOW_METRICS_TOKEN=token)


def scrape(server):
    return probe(server, "/metrics", headers={"Authorization": f"Bearer {TOKEN}"}).text


def sample(text, name, **labels):
    """The value of one series in the text format, 0.0 when absent."""
    wanted = ",".join(f'{key}="{value}"' for key, value in sorted(labels.items()))
    for line in text.splitlines():
        series, _, value = line.rpartition(" ")
        if series == (f"{name}{{{wanted}}}" if labels else name):
            return float(value)
    return 0.0


def drive_tenant_traffic(ctx, server, upstream_url):
    """One routed call, a tool call that works, one that fails and one of a made-up tool."""
    make_integration(ctx, "zeta-crm-secretname", upstream_url, [{"name": "listThings", "method": "get", "path": "/things"}])
    make_route(ctx, "/hidden-route-xyz", [{"id": "a", "integration": "zeta-crm-secretname", "action": "listThings"}])
    auth = {"Authorization": f"Bearer {ctx.key}"}
    assert httpx.get(f"{server.url}/t/{ctx.tenant.slug}/hidden-route-xyz", headers=auth, timeout=30, trust_env=False).status_code == 200
    headers = {**auth, "Accept": "application/json, text/event-stream"}
    for name, arguments in (("list_integrations", {}), ("made_up_tool_abc", {}), ("get_integration", {"name": "no-such-thing"})):
        answer = httpx.post(f"{server.url}/mcp", headers=headers, timeout=30, trust_env=False,
                            json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": name, "arguments": arguments}})
        assert answer.status_code == 200, answer.text


def test_metrics_count_by_door_tool_and_outcome_without_tenant_data(as_tenant, live_daphne, upstream):
    zeta = as_tenant("zeta-secret-corp")
    server = live_daphne(BACKFLOW_METRICS_TOKEN=TOKEN, BACKFLOW_EGRESS_ALLOW="127.0.0.1")
    drive_tenant_traffic(zeta, server, upstream.url)
    text = scrape(server)
    assert sample(text, "backflow_route_invocations_total", outcome="2xx") == 1
    assert sample(text, "backflow_upstream_calls_total", outcome="ok") == 1
    assert sample(text, "backflow_mcp_tool_calls_total", tool="list_integrations", outcome="ok") == 1
    assert sample(text, "backflow_mcp_tool_calls_total", tool="unknown", outcome="refused") == 1
    assert sample(text, "backflow_mcp_tool_calls_total", tool="get_integration", outcome="error") == 1
    assert sample(text, "backflow_http_requests_total", door="routes", status="200") == 1
    assert sample(text, "backflow_http_requests_total", door="mcp_http", status="200") == 3
    assert sample(text, "backflow_http_request_duration_seconds_count", door="routes") == 1
    for tenant_data in ("zeta-secret-corp", "hidden-route-xyz", "zeta-crm-secretname", "made_up_tool_abc", "/things"):
        assert tenant_data not in text


def test_the_tenant_label_is_there_only_when_the_operator_turns_it_on(as_tenant, live_daphne, upstream):
    zeta = as_tenant("zeta-secret-corp")
    server = live_daphne(BACKFLOW_METRICS_TOKEN=TOKEN, BACKFLOW_EGRESS_ALLOW="127.0.0.1", BACKFLOW_METRICS_TENANT_LABEL="true")
    drive_tenant_traffic(zeta, server, upstream.url)
    text = scrape(server)
    assert sample(text, "backflow_route_invocations_total", outcome="2xx", tenant="zeta-secret-corp") == 1
    assert sample(text, "backflow_mcp_tool_calls_total", tool="list_integrations", outcome="ok", tenant="zeta-secret-corp") == 1
    assert "hidden-route-xyz" not in text


# --- request ids -----------------------------------------------------------------------------------


def json_lines(server):
    """Every line the server wrote, each parsed as JSON (LOG_FORMAT=json: no other kind)."""
    lines = [line for line in server.output(tail=None).splitlines() if line.strip()]
    return [json.loads(line) for line in lines]


def test_each_request_has_an_id_answered_stored_sent_upstream_and_logged(acme, live_daphne, upstream):
    server = live_daphne(BACKFLOW_EGRESS_ALLOW="127.0.0.1", LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    make_integration(acme, "crm", upstream.url, [{"name": "listThings", "method": "get", "path": "/things"}])
    make_route(acme, "/things", [{"id": "a", "integration": "crm", "action": "listThings"}])
    auth = {"Authorization": f"Bearer {acme.key}"}

    # Without trusted proxies, what a caller sends is not taken: anyone could pick any id.
    routed = httpx.get(f"{server.url}/t/acme/things", headers={**auth, "X-Request-ID": "chosen-by-caller"}, timeout=30, trust_env=False)
    request_id = routed.headers["x-request-id"]
    assert routed.status_code == 200 and GENERATED_ID.fullmatch(request_id)
    assert upstream.calls("/things")[-1].headers["x-request-id"] == request_id
    wait_until(lambda: RouteInvocation.objects.for_tenant(acme.tenant).filter(request_id=request_id).exists(),
               message="the invocation row")

    created = httpx.post(f"{server.url}/api/secrets/", headers=auth, json={"name": "crm_key", "value": "s3cr3t-value"},
                         timeout=30, trust_env=False)
    assert created.status_code == 201, created.text
    audit = AuditEvent.objects.for_tenant(acme.tenant).get(action="secret.create")
    assert audit.request_id == created.headers["x-request-id"] != request_id

    tool = httpx.post(f"{server.url}/mcp", headers={**auth, "Accept": "application/json, text/event-stream"}, timeout=30, trust_env=False,
                      json={"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "list_integrations", "arguments": {}}})
    tool_id = tool.headers["x-request-id"]
    logged = json_lines(server)
    assert {"time", "level", "logger", "message", "request_id"} <= set(logged[0])
    assert any(line["request_id"] == tool_id and "tools/call list_integrations" in line["message"] for line in logged), logged[-20:]
    assert AuditEvent.objects.for_tenant(acme.tenant).get(action="mcp.tool_call").request_id == tool_id
    for answer in (routed, created, tool):
        assert list(answer.headers.keys()).count("x-request-id") == 1


def test_behind_trusted_proxies_their_well_formed_id_is_kept(acme, live_daphne):
    server = live_daphne(BACKFLOW_TRUSTED_PROXIES="1")
    auth = {"Authorization": f"Bearer {acme.key}"}

    def answered(sent):
        return httpx.get(f"{server.url}/api/integrations/", headers={**auth, "X-Request-ID": sent}, timeout=30,
                         trust_env=False).headers["x-request-id"]

    assert answered("4bf92f3577b34da6a3ce929d0e0e4736") == "4bf92f3577b34da6a3ce929d0e0e4736"
    # A proxy that adds its header instead of replacing the client's puts it last: the last one counts.
    twice = httpx.get(f"{server.url}/api/integrations/", headers=[*auth.items(), ("X-Request-ID", "from-client"),
                                                                    ("X-Request-ID", "from-proxy")], timeout=30, trust_env=False)
    assert twice.headers["x-request-id"] == "from-proxy"
    assert answered("Root=1-67891233-abcdef012345678912345678") == "Root=1-67891233-abcdef012345678912345678"
    for malformed in ("two words", "x" * 129, "<script>", "-leading-dash", "id\\nforged log line"):
        assert GENERATED_ID.fullmatch(answered(malformed)), malformed


def test_a_run_carries_the_id_of_the_request_that_queued_it_into_the_worker(acme, live_daphne, upstream):
    from workflows_app.tests.helpers import step, workflow

    make_integration(acme, "up", upstream.url, [{"name": "ping", "method": "get", "path": "/ping"}])
    doc = workflow("beat", [step("s", "ping")], tools=[{"name": "ping", "type": "integration", "params": {"integration": "up", "action": "ping"}}])
    server = live_daphne()
    auth = {"Authorization": f"Bearer {acme.key}"}
    assert httpx.post(f"{server.url}/api/workflows/", headers=auth, json=doc, timeout=30, trust_env=False).status_code == 201
    queued = httpx.post(f"{server.url}/api/workflows/beat/runs/", headers=auth, json={"input": {}}, timeout=30, trust_env=False)
    assert queued.status_code in (201, 202), queued.text
    request_id = queued.headers["x-request-id"]
    run = WorkflowRun.objects.for_tenant(acme.tenant).get()
    assert run.request_id == request_id
    worker = Worker(BACKFLOW_EGRESS_ALLOW="127.0.0.1", LOG_FORMAT="json", LOG_LEVEL="DEBUG")
    try:
        wait_until(lambda: WorkflowRun.objects.for_tenant(acme.tenant).filter(status="succeeded").exists(), timeout=60,
                   message="the run")
        assert upstream.calls("/ping")[-1].headers["x-request-id"] == request_id
        wait_until(lambda: any(line.get("request_id") == request_id for line in worker_json_lines(worker)), timeout=10,
                   message="a worker log line of the run")
    finally:
        worker.stop()


def worker_json_lines(worker):
    lines = []
    for line in worker.output().splitlines():
        try:
            lines.append(json.loads(line))
        except ValueError:
            continue
    return lines


def test_readyz_with_a_database_that_hangs_names_only_the_database(live_daphne, static_root):
    """A server that accepts connections and never answers: the database check times out (and
    says so in the log); the checks that do not need it still answer for themselves."""
    tarpit = socket.create_server(("127.0.0.1", 0))
    held = []
    threading.Thread(target=lambda: [held.append(tarpit.accept()) for _ in range(20)], daemon=True).start()
    try:
        server = Daphne(DATABASE_URL=f"postgres://postgres@127.0.0.1:{tarpit.getsockname()[1]}/nothing",
                        BACKFLOW_STATIC_ROOT=static_root, BACKFLOW_READYZ_TIMEOUT="2", REDIS_URL="")
        try:
            hung = probe(server, "/readyz")
            assert hung.status_code == 503
            assert hung.json() == {"status": "unavailable", "failing": ["database", "migrations"], "checks": {
                "database": "unavailable: no answer within 2 s", "migrations": "unknown: the database does not answer",
                "static": "ok"}}
            assert probe(server, "/healthz").status_code == 200
            wait_until(lambda: "Readiness: the database check did not answer within 2 s" in server.output(), message="the log line")
        finally:
            server.stop()
    finally:
        tarpit.close()


def test_credentials_in_the_query_are_redacted_however_their_name_is_spelled():
    from backflow.access_log import redacted

    assert redacted("POST /mcp/messages?sessionId=s1&%74oken=bf_secret&api%5Fkey=k2&KEY=k3&Access_Token=k4&page=2") == (
        "POST /mcp/messages?sessionId=s1&%74oken=[redacted]&api%5Fkey=[redacted]&KEY=[redacted]&Access_Token=[redacted]&page=2")


def test_websocket_handshakes_are_refused_quietly(live_daphne):
    server = live_daphne()
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as conn:
        conn.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                     b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        assert conn.recv(200).startswith(b"HTTP/1.1 403")
    assert probe(server, "/healthz").status_code == 200
    assert "Traceback" not in server.output(tail=None)


@pytest.mark.parametrize("path, door", [
    ("/t/acme/items", "routes"), ("/t/", "routes"), ("/t", "pages"), ("/mcp", "mcp_http"), ("/mcp/", "mcp_http"),
    ("/mcp/sse", "sse"), ("/mcp/messages/", "sse_messages"), ("/mcpx/", "pages"), ("/api/routes/", "rest"),
    ("/agent/build", "rest"), ("/hooks/acme/x", "webhooks"), ("/o/token/", "oauth"),
    ("/.well-known/oauth-authorization-server", "oauth"), ("/admin/", "pages"), ("/", "pages"), ("//t/a", "pages"),
])
def test_each_path_is_counted_under_its_door(path, door):
    from backflow.front import door_of

    assert door_of(path) == door
