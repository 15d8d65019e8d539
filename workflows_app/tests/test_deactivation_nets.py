"""Issue 15, hole 1, net by net: a deactivated tenant runs nothing, however it was deactivated.

`tenants.services.tenant_set_active` (what the admin calls) fails the queued runs at once, but a
tenant row can also be changed some other way (a shell, SQL, a fixture): so the scheduler fires no
schedule of an inactive tenant, a worker claiming a queued run of one fails it, and a running run
stops before its next step. Each test here switches off when its own net is removed. The whole
attack, with every door, over a live server: tests/security/test_deactivation.py.
"""

import threading
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from integrations_app.tests.test_runtime_helpers import Reply, make_integration, upstream, upstreams  # noqa: F401 (fixtures)
from tenants.models import AuditEvent, Tenant
from tenants import services as tenant_services
from workflows_app import engine, scheduler, services
from workflows_app.models import ScheduledTrigger, WorkflowRun
from workflows_app.tests.helpers import step, wait_status, wait_until, workflow

INACTIVE = "Tenant 'acme' is inactive"
FINISHED = ("succeeded", "failed", "cancelled")


def ping_workflow(ctx, upstream, steps=3, triggers=None):
    make_integration(ctx, "up", upstream.url, [{"name": "ping", "method": "get", "path": "/ping"}])
    return services.workflow_create(tenant=ctx.tenant, actor=ctx.actor, document=workflow(
        "beat", [step(f"s{i}", "ping") for i in range(steps)],
        tools=[{"name": "ping", "type": "integration", "params": {"integration": "up", "action": "ping"}}],
        triggers=triggers if triggers is not None else [{"type": "manual"}]))


def deactivate_behind_the_services_back(ctx):
    """As a shell or SQL would: only the row changes, nothing else is done."""
    Tenant.objects.filter(pk=ctx.tenant.pk).update(is_active=False)


def queue(ctx, wf, count=1):
    return [services.run_create(tenant=ctx.tenant, actor=ctx.actor, workflow=wf) for _ in range(count)]


def test_the_scheduler_fires_no_schedule_of_an_inactive_tenant(acme, globex, upstream, transactional_db):
    ping_workflow(acme, upstream, triggers=[{"type": "schedule", "cron": "* * * * *"}])
    make_integration(globex, "up", upstream.url, [{"name": "ping", "method": "get", "path": "/ping"}])
    services.workflow_create(tenant=globex.tenant, actor=globex.actor, document=workflow(
        "beat", [step("s", "ping")], tools=[{"name": "ping", "type": "integration", "params": {"integration": "up", "action": "ping"}}],
        triggers=[{"type": "schedule", "cron": "* * * * *"}]))
    past = timezone.now() - timedelta(seconds=5)
    ScheduledTrigger.all_tenants.update(next_run_at=past)
    deactivate_behind_the_services_back(acme)

    assert scheduler.tick() == 1  # globex's only
    assert not WorkflowRun.objects.for_tenant(acme.tenant).exists()
    assert WorkflowRun.objects.for_tenant(globex.tenant).count() == 1
    assert ScheduledTrigger.objects.for_tenant(acme.tenant).get().next_run_at == past  # left unclaimed


def test_a_worker_fails_the_queued_runs_of_an_inactive_tenant_without_calling_upstream(acme, upstream, worker):
    upstream.on("GET", "/ping", Reply(body={"pong": True}))
    wf = ping_workflow(acme, upstream)
    runs = queue(acme, wf, 3)
    deactivate_behind_the_services_back(acme)
    worker(BACKFLOW_EGRESS_ALLOW="127.0.0.1")
    for run in runs:
        done = wait_status(run.id, FINISHED)
        assert done.status == "failed" and INACTIVE in done.error, (done.status, done.error)
        assert done.started_at is None and not done.steps.exists()
    assert upstream.calls() == []


def test_a_running_run_stops_before_its_next_step_once_its_tenant_is_inactive(acme, upstream, worker):
    gate = threading.Event()

    def held(seen):
        gate.wait(20)
        return Reply(body={"pong": True})

    upstream.on("GET", "/ping", held)
    wf = ping_workflow(acme, upstream, steps=3)
    (run,) = queue(acme, wf)
    worker(BACKFLOW_EGRESS_ALLOW="127.0.0.1")
    wait_until(lambda: len(upstream.calls("/ping")) == 1, timeout=20, message="the first step's call")
    deactivate_behind_the_services_back(acme)
    gate.set()
    done = wait_status(run.id, FINISHED)
    assert done.status == "failed" and INACTIVE in done.error, (done.status, done.error)
    assert [(s.step_id, s.status) for s in done.steps.all()] == [("s0", "succeeded")]
    assert len(upstream.calls("/ping")) == 1


def test_execute_returns_the_status_the_run_ended_with(acme, upstream, transactional_db, monkeypatch):
    """In-process: the engine's own answer for a run stopped because its tenant went inactive."""
    upstream.on("GET", "/ping", lambda seen: deactivate_behind_the_services_back(acme) or Reply(body={"pong": True}))
    from django.conf import settings

    monkeypatch.setattr(settings, "BACKFLOW_EGRESS_ALLOW", ["127.0.0.1"])
    wf = ping_workflow(acme, upstream, steps=2)
    (run,) = queue(acme, wf)
    assert engine.execute(run.id) == "failed"
    run.refresh_from_db()
    assert INACTIVE in run.error and len(upstream.calls()) == 1


def test_tenant_set_active_fails_queued_runs_at_once_and_is_audited(acme, upstream, transactional_db, settings):
    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]
    upstream.on("GET", "/ping", Reply(body={"pong": True}))
    wf = ping_workflow(acme, upstream, steps=1, triggers=[{"type": "manual"}, {"type": "schedule", "cron": "0 3 * * *"}])
    queued = queue(acme, wf, 2)
    running = queue(acme, wf)[0]
    WorkflowRun.all_tenants.filter(pk=running.pk).update(status="running", started_at=timezone.now(), heartbeat_at=timezone.now())

    assert tenant_services.tenant_set_active(tenant=acme.tenant, actor=acme.actor, active=False) == 2
    assert acme.tenant.is_active is False and Tenant.objects.get(pk=acme.tenant.pk).is_active is False
    for run in queued:
        run.refresh_from_db()
        assert run.status == "failed" and INACTIVE in run.error and run.finished_at
    assert WorkflowRun.all_tenants.get(pk=running.pk).status == "running"  # the engine stops it at its next step
    event = AuditEvent.objects.for_tenant(acme.tenant).filter(action="tenant.deactivate").get()
    assert (event.principal, event.object_id, event.summary) == (str(acme.actor), "acme", {"isActive": False, "failedRuns": 2})

    # Nothing to do twice: no second event.
    assert tenant_services.tenant_set_active(tenant=acme.tenant, actor=acme.actor, active=False) == 0
    assert AuditEvent.objects.for_tenant(acme.tenant).filter(action="tenant.deactivate").count() == 1

    # Active again: a schedule that fell due meanwhile moves to its next time instead of firing at once.
    trigger = ScheduledTrigger.objects.for_tenant(acme.tenant).get()
    ScheduledTrigger.all_tenants.filter(pk=trigger.pk).update(next_run_at=timezone.now() - timedelta(days=2))
    assert tenant_services.tenant_set_active(tenant=acme.tenant, actor=acme.actor, active=True) == 0
    trigger.refresh_from_db()
    assert trigger.next_run_at > timezone.now() and (trigger.next_run_at.hour, trigger.next_run_at.minute) == (3, 0)
    assert scheduler.tick() == 0
    event = AuditEvent.objects.for_tenant(acme.tenant).filter(action="tenant.activate").get()
    assert event.summary == {"isActive": True, "schedulesMoved": 1}
    (again,) = queue(acme, wf)
    assert engine.execute(again.id) == "succeeded"


@pytest.fixture
def operator_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


def test_the_admin_deactivates_and_activates_through_the_service(acme, upstream, operator_client):
    wf = ping_workflow(acme, upstream, steps=1)
    (first,) = queue(acme, wf)
    response = operator_client.post(f"/admin/tenants/tenant/{acme.tenant.pk}/change/", {
        "slug": "acme", "name": "Acme", **_empty_inline(operator_client, acme)})  # is_active unticked
    assert response.status_code == 302, response.content[:2000]
    first.refresh_from_db()
    assert first.status == "failed" and INACTIVE in first.error
    actions = list(AuditEvent.objects.for_tenant(acme.tenant).order_by("created_at", "id").values_list("action", "summary"))
    assert ("tenant.deactivate", {"isActive": False, "failedRuns": 1}) in actions
    assert not any(action == "tenant.update" for action, _ in actions)  # only is_active changed

    response = operator_client.post("/admin/tenants/tenant/", {"action": "activate", "_selected_action": [acme.tenant.pk]})
    assert response.status_code == 302
    assert Tenant.objects.get(pk=acme.tenant.pk).is_active
    (second,) = queue(acme, wf)
    response = operator_client.post("/admin/tenants/tenant/", {"action": "deactivate", "_selected_action": [acme.tenant.pk]})
    assert response.status_code == 302
    second.refresh_from_db()
    assert second.status == "failed" and not Tenant.objects.get(pk=acme.tenant.pk).is_active
    assert [a for a, _ in AuditEvent.objects.for_tenant(acme.tenant).order_by("created_at", "id").values_list("action", "summary")
            if a.startswith("tenant.")] == ["tenant.deactivate", "tenant.activate", "tenant.deactivate"]


def _empty_inline(client, ctx):
    """The membership inline of the tenant's change form, as the page sends it back unchanged."""
    from tenants.models import Membership

    page = client.get(f"/admin/tenants/tenant/{ctx.tenant.pk}/change/")
    prefix = page.context["inline_admin_formsets"][0].formset.prefix
    membership = Membership.objects.for_tenant(ctx.tenant).get(user=ctx.owner)
    return {f"{prefix}-TOTAL_FORMS": "1", f"{prefix}-INITIAL_FORMS": "1", f"{prefix}-MIN_NUM_FORMS": "0",
            f"{prefix}-MAX_NUM_FORMS": "1000", f"{prefix}-0-id": membership.pk, f"{prefix}-0-tenant": ctx.tenant.pk,
            f"{prefix}-0-user": ctx.owner.pk, f"{prefix}-0-role": "owner"}
