"""Issue 15, hole 1: a deactivated tenant kept running. Its schedules still fired and its queued
runs still executed (183 upstream calls with its credentials in 20 s after deactivation).

Here, as it happened: a live daphne and a real `run_worker` child, a loopback upstream that
counts every call the tenant's workflow makes, a schedule that is due, runs queued and one
running. The operator deactivates the tenant (`tenants.services.tenant_set_active`, what the
admin calls). From then on: no upstream call, no schedule firing, the queued runs `failed` at once,
the running one `failed` before its next step, and every door refused — REST, Streamable HTTP,
an SSE session opened before, a new SSE stream, tenant routes (with and without credentials),
the webhook, `/agent/mcp/*` and app pages (public and for a signed-in member).
tests/security/test_revocation.py proves the same doors for a key revoked and a tenant row
saved inactive; this adds what runs without a request. The nets one by one:
workflows_app/tests/test_deactivation_nets.py.
"""

import time
from datetime import timedelta

import httpx
import pytest
from django.conf import settings
from django.test import Client
from django.utils import timezone

from entities_app import services as entity_services
from integrations_app import services as integration_services
from integrations_app.tests.test_runtime_helpers import Reply, make_integration, make_route
from mcp_app.tests.test_remote_support import bearer, handshake, initialize, orm_in_loop, post_json, raw_client, raw_sse, run
from tenants import services as tenant_services
from tests.security.test_revocation import CALL, STREAMABLE, _doors
from workflows_app import services as workflow_services
from workflows_app.models import ScheduledTrigger, WorkflowRun
from workflows_app.tests.helpers import Worker, step, wait_until, workflow

pytestmark = pytest.mark.django_db(transaction=True)

STEPS = 25
STEP_SECONDS = 0.15
INACTIVE = "Tenant 'acme' is inactive"
TOKEN = "tok-acme-upstream"


def beat_workflow():
    """A workflow whose every step calls the tenant's integration (its credentials, upstream)."""
    return workflow("beat", [step(f"s{i}", "ping") for i in range(STEPS)],
                    tools=[{"name": "ping", "type": "integration", "params": {"integration": "up", "action": "ping"}}],
                    triggers=[{"type": "schedule", "cron": "* * * * *"}, {"type": "webhook"}, {"type": "manual"}])


def member_session_cookie(user):
    """A signed-in browser session of `user`, stored where the live server reads it."""
    client = Client()
    client.force_login(user)
    return {settings.SESSION_COOKIE_NAME: client.cookies[settings.SESSION_COOKIE_NAME].value}


def make_due(tenant):
    ScheduledTrigger.objects.for_tenant(tenant).update(next_run_at=timezone.now() - timedelta(seconds=1))


def test_a_deactivated_tenant_runs_nothing_and_every_door_is_refused(acme, live_daphne, upstream):
    upstream.on("GET", "/ping", Reply(body={"pong": True}, delay=STEP_SECONDS))
    upstream.on("GET", "/things", Reply(body={"things": []}))
    integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name="up_token", value=TOKEN)
    make_integration(acme, "up", upstream.url, [{"name": "ping", "method": "get", "path": "/ping"},
                                                {"name": "listThings", "method": "get", "path": "/things"}],
                     auth={"type": "bearer", "secret": "up_token"})
    make_route(acme, "/things", [{"integration": "up", "action": "listThings"}])
    make_route(acme, "/open", [{"integration": "up", "action": "listThings"}], requireAuth=False)
    beat = workflow_services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=beat_workflow())
    hook = beat.to_document()["webhookUrl"]
    entity_services.collection_create(tenant=acme.tenant, actor=acme.actor, document={"name": "members"})
    entity_services.app_create(tenant=acme.tenant, actor=acme.actor, document={
        "id": "board", "name": "Board", "public": True,
        "pages": [{"path": "", "title": "Board", "components": [{"type": "table", "binding": {"collection": "members"}}]}]})
    entity_services.app_create(tenant=acme.tenant, actor=acme.actor, document={
        "id": "studio", "name": "Studio",
        "pages": [{"path": "", "title": "Studio", "components": [{"type": "table", "binding": {"collection": "members"}}]}]})
    cookies = member_session_cookie(acme.owner)
    key = acme.key
    server = live_daphne(BACKFLOW_EGRESS_ALLOW="127.0.0.1")
    # One of the tenant's runs at a time: the others wait in the queue behind it.
    worker = Worker(BACKFLOW_EGRESS_ALLOW="127.0.0.1", BACKFLOW_TENANT_RUNNING_RUNS="1")
    try:
        _attack(acme, server, worker, upstream, key, hook, cookies)
    finally:
        worker.stop()


def _attack(acme, server, worker, upstream, key, hook, cookies):
    async def main():
        async with raw_client(server) as http, httpx.AsyncClient(base_url=server.url, cookies=cookies) as member, \
                raw_sse(http, "/mcp/sse", headers=bearer(key)) as stream:
            await handshake(http, stream, key)
            (await post_json(http, "/mcp", initialize(), key, headers=STREAMABLE)).raise_for_status()
            assert await _doors(http, stream, key) == {"sse": 202, "streamable": 200, "rest": 200, "route": 200}
            await stream.answer(CALL["id"])
            assert (await http.get("/t/acme/open")).status_code == 200
            assert (await http.get("/apps/acme/board/")).status_code == 200
            assert (await member.get("/apps/acme/studio/")).status_code == 200
            assert (await http.get("/apps/acme/studio/")).status_code == 302  # members only
            assert (await http.get("/agent/mcp/servers", headers=bearer(key))).status_code == 200

            # The tenant's work: the schedule fires, runs are queued over REST and the webhook.
            with orm_in_loop():
                make_due(acme.tenant)
            for _ in range(3):
                assert (await http.post("/api/workflows/beat/runs/", json={}, headers=bearer(key))).status_code == 201
            assert (await http.post(hook, json={"from": "hook"})).status_code == 202
            with orm_in_loop():
                wait_until(lambda: WorkflowRun.objects.for_tenant(acme.tenant).filter(trigger="schedule").exists(), timeout=15,
                           message="the schedule to fire")
                wait_until(lambda: len(upstream.calls("/ping")) >= 3, timeout=20, message="the first run's steps")
                running = WorkflowRun.objects.for_tenant(acme.tenant).get(status="running")
                queued = set(WorkflowRun.objects.for_tenant(acme.tenant).filter(status="queued").values_list("pk", flat=True))
                assert queued, "runs should be waiting behind the running one"

                # The operator deactivates the tenant.
                failed = tenant_services.tenant_set_active(tenant=acme.tenant, actor=acme.actor, active=False)
                deactivated_at, cutoff = timezone.now(), time.monotonic()
                # Queued runs failed in that transaction, before any worker looks at them again.
                now_failed = WorkflowRun.objects.for_tenant(acme.tenant).filter(pk__in=queued, status="failed")
                assert failed >= len(queued) and now_failed.count() == len(queued)
                assert all(INACTIVE in run.error for run in now_failed)
                make_due(acme.tenant)  # and the schedule is due again
                due_at = ScheduledTrigger.objects.for_tenant(acme.tenant).get().next_run_at

            # Every door is refused at the next request.
            refused = await _doors(http, stream, key)
            assert refused == dict.fromkeys(refused, 403), refused
            assert (await http.get("/mcp/sse", headers=bearer(key))).status_code == 403
            assert (await http.get("/t/acme/open")).status_code == 403
            assert (await http.post(hook, json={"from": "hook"})).status_code == 404
            assert (await http.get("/agent/mcp/servers", headers=bearer(key))).status_code == 403
            assert (await http.post("/api/workflows/beat/runs/", json={}, headers=bearer(key))).status_code == 403
            visitor = await http.get("/apps/acme/board/")
            assert visitor.status_code == 302 and "/login" in visitor.headers["location"]  # as for a missing app
            for app in ("board", "studio"):
                assert (await member.get(f"/apps/acme/{app}/")).status_code == 404

            with orm_in_loop():
                # The running run stops before its next step, failed, saying why.
                wait_until(lambda: WorkflowRun.all_tenants.get(pk=running.pk).status != "running", timeout=10,
                           message="the running run to stop")
                stopped = WorkflowRun.all_tenants.get(pk=running.pk)
                assert stopped.status == "failed" and INACTIVE in stopped.error, (stopped.status, stopped.error)
                assert stopped.steps.count() < STEPS
                time.sleep(3)  # six scheduler ticks and many worker polls
                runs = WorkflowRun.objects.for_tenant(acme.tenant)
                assert not runs.filter(created_at__gt=deactivated_at).exists(), "a run was queued after deactivation"
                assert ScheduledTrigger.objects.for_tenant(acme.tenant).get().next_run_at == due_at, "the schedule was claimed"
                assert not runs.filter(status__in=["queued", "running"]).exists()
            # No upstream call began after the deactivation (the step in flight then had already begun).
            calls = upstream.calls("/ping")
            assert calls and all(seen.headers["authorization"] == f"Bearer {TOKEN}" for seen in calls)
            late = [seen for seen in calls if seen.at > cutoff + 0.5]
            assert late == [], f"{len(late)} upstream call(s) with the tenant's credential after deactivation"

    run(main, timeout=120)
    assert "Traceback" not in worker.output(), worker.output()[-3000:]
