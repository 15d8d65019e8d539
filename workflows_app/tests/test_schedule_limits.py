"""Issue 15, hole 2: per-second cron. `"* * * * * *"` (six fields: croniter reads the sixth as
seconds) was accepted, and 20 such triggers on one workflow queued 80 runs in 21 s.

Schedules take five-field cron only (or @hourly-like aliases of it), refused with a 400 naming
`triggers[i].cron`; a workflow has at most MAX_SCHEDULES_PER_WORKFLOW schedule triggers and a
tenant BACKFLOW_SCHEDULES_PER_TENANT; and a schedule stored before these rules never fires more
than once a minute, whatever croniter says (a real `run_worker` child ticking twice a second).
"""

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from workflows_app import scheduler, services
from workflows_app.documents import MAX_SCHEDULES_PER_WORKFLOW
from workflows_app.models import ScheduledTrigger, Workflow, WorkflowRun
from workflows_app.tests.helpers import step, workflow

pytestmark = pytest.mark.django_db


def noop_workflow(id="tick", triggers=()):
    """A workflow whose step needs no peer (an MCP server that does not exist would fail it:
    the runs' existence is what counts here)."""
    return workflow(id, [step("s", "mcp.listTools", {"server": "{{input.server}}"})], triggers=list(triggers))


def schedule(cron, **extra):
    return {"type": "schedule", "cron": cron, **extra}


def errors_of(response):
    assert response.status_code == 400, (response.status_code, response.content[:500])
    return response.json()["errors"]


def test_the_attackers_per_second_schedules_are_refused(acme):
    api = acme.client()
    attack = noop_workflow(triggers=[schedule("* * * * * *") for _ in range(20)])
    errors = errors_of(api.post("/api/workflows/", attack, format="json"))
    assert "triggers[0].cron" in errors and "seconds" in " ".join(errors["triggers[0].cron"])
    assert not Workflow.objects.for_tenant(acme.tenant).exists() and not ScheduledTrigger.objects.for_tenant(acme.tenant).exists()


@pytest.mark.parametrize("cron, words", [
    ("* * * * * *", "6 fields (a sixth field would be seconds"),
    ("*/1 * * * * * *", "7 fields"),
    ("0 0 1 1 * 2030", "6 fields"),
    ("* * * *", "4 fields"),
    ("@reboot", "not a supported alias"),
    ("@every 1s", "not a supported alias"),
    ("R * * * *", "random or hashed"),
    ("R(0-5) * * * *", "random or hashed"),
    ("H * * * *", "random or hashed"),
    ("0 0 31 2 *", "never matches a date"),
    ("*/0 * * * *", "not a valid cron expression"),
    ("61 * * * *", "not a valid cron expression"),
    ("", "needs cron"),
])
def test_cron_beyond_five_fields_or_that_never_fires_is_400_naming_the_trigger(acme, cron, words):
    api = acme.client()
    document = noop_workflow(triggers=[{"type": "manual"}, schedule("0 * * * *"), schedule(cron)])
    errors = errors_of(api.post("/api/workflows/", document, format="json"))
    assert list(errors) == ["triggers[2].cron"], errors
    assert words in errors["triggers[2].cron"][0], errors
    assert not Workflow.objects.for_tenant(acme.tenant).exists()
    # The same on an update (PATCH), leaving the stored schedule as it was.
    api.post("/api/workflows/", noop_workflow(triggers=[schedule("0 * * * *")]), format="json")
    errors = errors_of(api.patch("/api/workflows/tick/", {"triggers": [schedule("5 * * * *"), schedule(cron)]}, format="json"))
    assert list(errors) == ["triggers[1].cron"], errors
    assert list(ScheduledTrigger.objects.for_tenant(acme.tenant).values_list("cron", flat=True)) == ["0 * * * *"]


@pytest.mark.parametrize("cron", ["*/15 * * * *", "0 9,17 * * 1-5", "0 0 L * *", "0 0 * JAN-MAR mon-fri", "0 0 29 2 *",
                                  "@hourly", "@daily", "@weekly", "@monthly", "@yearly", "@annually", "@midnight", " 0 3 * * * "])
def test_five_field_cron_and_its_aliases_are_accepted(acme, cron):
    made = acme.client().post("/api/workflows/", noop_workflow(triggers=[schedule(cron)]), format="json")
    assert made.status_code == 201, made.content
    trigger = ScheduledTrigger.objects.for_tenant(acme.tenant).get()
    assert timezone.now() < trigger.next_run_at < timezone.now() + timedelta(days=366 * 4)


def test_schedule_triggers_are_capped_per_workflow(acme):
    api = acme.client()
    triggers = [{"type": "manual"}] + [schedule(f"{minute} * * * *") for minute in range(MAX_SCHEDULES_PER_WORKFLOW + 1)]
    errors = errors_of(api.post("/api/workflows/", noop_workflow(triggers=triggers), format="json"))
    assert list(errors) == [f"triggers[{MAX_SCHEDULES_PER_WORKFLOW + 1}]"], errors
    assert f"at most {MAX_SCHEDULES_PER_WORKFLOW} schedule triggers" in errors[f"triggers[{MAX_SCHEDULES_PER_WORKFLOW + 1}]"][0]
    assert api.post("/api/workflows/", noop_workflow(triggers=triggers[:-1]), format="json").status_code == 201


def test_schedule_triggers_are_capped_per_tenant(acme, globex, settings):
    settings.BACKFLOW_SCHEDULES_PER_TENANT = 5
    api = acme.client()
    three = [schedule(f"{m} * * * *") for m in range(3)]
    assert api.post("/api/workflows/", noop_workflow("a", three), format="json").status_code == 201
    errors = errors_of(api.post("/api/workflows/", noop_workflow("b", [{"type": "manual"}] + three), format="json"))
    assert list(errors) == ["triggers[3]"], errors  # the third schedule is the sixth of the tenant
    assert "already has 3 schedule triggers" in errors["triggers[3]"][0] and "BACKFLOW_SCHEDULES_PER_TENANT" in errors["triggers[3]"][0]
    assert not Workflow.objects.for_tenant(acme.tenant).filter(slug="b").exists()
    assert api.post("/api/workflows/", noop_workflow("b", three[:2]), format="json").status_code == 201
    # A workflow's own schedules are replaced on update, not counted twice.
    assert api.patch("/api/workflows/a/", {"triggers": [schedule("7 * * * *"), *three[1:]]}, format="json").status_code == 200
    assert list(errors_of(api.patch("/api/workflows/a/", {"triggers": three + [schedule("9 * * * *")]}, format="json"))) == ["triggers[3]"]
    assert ScheduledTrigger.objects.for_tenant(acme.tenant).count() == 5
    # Deleting frees them; another tenant has its own budget.
    assert api.delete("/api/workflows/b/").status_code == 204
    assert api.patch("/api/workflows/a/", {"triggers": three + [schedule("9 * * * *")]}, format="json").status_code == 200
    assert globex.client().post("/api/workflows/", noop_workflow("g", three), format="json").status_code == 201


def stored_before(ctx, crons, id="legacy"):
    """Schedules written before the rules (straight to the rows, as an old release did)."""
    made = services.workflow_create(tenant=ctx.tenant, actor=ctx.actor, document=noop_workflow(id))
    Workflow.all_tenants.filter(pk=made.pk).update(definition={**made.definition, "triggers": [schedule(c) for c in crons]})
    made.refresh_from_db()
    now = timezone.now()
    for cron in crons:
        ScheduledTrigger.objects.create(tenant=ctx.tenant, workflow=made, cron=cron, entry="main", input={}, next_run_at=now)
    return made


def test_a_per_second_schedule_stored_before_fires_at_most_once_a_minute(acme, transactional_db):
    stored_before(acme, ["* * * * * *", "* * * * * */5"])  # every second; every 5 seconds
    minute = timezone.now().replace(second=0, microsecond=0) + timedelta(minutes=1)
    fired = {}
    for second in range(0, 120, 1):  # two minutes of ticks, one a second
        if count := scheduler.tick(minute + timedelta(seconds=second)):
            fired[second] = count
    # The first tick fires both (they were due); then once per trigger at each new minute.
    assert fired == {0: 2, 60: 2}, (fired, list(ScheduledTrigger.objects.for_tenant(acme.tenant).values_list("cron", "next_run_at")))
    assert WorkflowRun.objects.for_tenant(acme.tenant).count() == 2 * 2
    trigger = ScheduledTrigger.objects.for_tenant(acme.tenant).first()
    assert trigger.next_run_at == minute + timedelta(minutes=2)


def test_a_stored_cron_that_cannot_be_advanced_stops_no_other_schedule(acme, globex, transactional_db, caplog):
    stored_before(acme, ["0 0 31 2 *"])
    services.workflow_create(tenant=globex.tenant, actor=globex.actor, document=noop_workflow(triggers=[schedule("* * * * *")]))
    ScheduledTrigger.all_tenants.update(next_run_at=timezone.now() - timedelta(seconds=1))
    assert scheduler.tick() == 1
    assert WorkflowRun.objects.for_tenant(globex.tenant).count() == 1 and not WorkflowRun.objects.for_tenant(acme.tenant).exists()
    assert ScheduledTrigger.objects.for_tenant(acme.tenant).get().next_run_at > timezone.now() + timedelta(minutes=50)
    assert "unusable cron '0 0 31 2 *'" in caplog.text


def test_a_worker_holds_stored_per_second_schedules_to_once_a_minute(acme, worker):
    """The attack's numbers on a real worker that ticks twice a second: 20 six-field triggers
    queued 80 runs in 21 s; now each fires at most once in a calendar minute."""
    stored_before(acme, ["* * * * * *"] * 20)
    started = timezone.now()
    process = worker()
    time.sleep(8)
    minutes = {started.replace(second=0, microsecond=0), timezone.now().replace(second=0, microsecond=0)}
    runs = WorkflowRun.objects.for_tenant(acme.tenant).filter(trigger="schedule").count()
    assert 20 <= runs <= 20 * len(minutes), (runs, process.output()[-2000:])
