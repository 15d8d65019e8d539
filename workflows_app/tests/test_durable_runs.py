"""Durable runs: queued by REST, a webhook or a schedule, executed by a real `manage.py run_worker`
child on the test database; a killed worker leaves a failed run, never one stuck `running`."""

import os
import signal
import time

from django.utils import timezone
from rest_framework.test import APIClient

from workflows_app import engine, scheduler, selectors, services
from workflows_app.models import ScheduledTrigger, StepRun, WorkflowRun
from workflows_app.tests.helpers import (
    EVERYTHING,
    add_stdio_server,
    alive,
    child_pids,
    echo_workflow,
    everything_stdio,
    step,
    wait_status,
    wait_until,
    workflow,
)

FINISHED = ("succeeded", "failed", "cancelled")


def slow_workflow(id="slow", duration=30, then=True):
    steps = [step("wait", "mcp.execute", {"server": "everything", "tool": "trigger-long-running-operation",
                                          "arguments": {"duration": duration, "steps": 10}}, timeout=60)]
    if then:
        steps.append(step("then", "mcp.execute", {"server": "everything", "tool": "echo", "arguments": {"message": "then"}}))
    return workflow(id, steps)


def test_runs_queued_over_rest_and_webhooks_are_executed_by_a_worker_and_cancelled(acme, worker):
    add_stdio_server(acme, everything_stdio())
    api = acme.client()
    made = api.post("/api/workflows/", echo_workflow(triggers=[{"type": "manual"}, {"type": "webhook"}]), format="json")
    assert made.status_code == 201, made.content
    hook = made.json()["webhookUrl"]
    services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=slow_workflow(duration=1.5))

    # A queued run is cancelled before any worker takes it; the worker then skips it.
    skipped = api.post("/api/workflows/slow/runs/", {}, format="json").json()
    cancelled = api.post(f"/api/runs/{skipped['id']}/cancel/")
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled" and cancelled.json()["error"] == "Cancelled."
    again = api.post(f"/api/runs/{skipped['id']}/cancel/")
    assert again.status_code == 409 and "cancelled" in again.json()["detail"]

    worker()

    queued = api.post("/api/workflows/echo/runs/", {"input": {"who": "rest"}}, format="json")
    assert queued.status_code == 201, queued.content
    body = queued.json()
    assert body["status"] == "queued" and body["trigger"] == "manual" and body["input"] == {"who": "rest"}
    assert "steps" not in body and body["startedAt"] is None

    done = wait_status(body["id"], FINISHED)
    assert done.status == "succeeded", done.error
    shown = api.get(f"/api/runs/{body['id']}/").json()
    assert shown["output"] == "Echo: hello rest" and shown["finishedAt"] and shown["startedAt"]
    assert [(s["id"], s["status"], s["result"]) for s in shown["steps"]] == [("say", "succeeded", "Echo: hello rest")]

    # ?wait= returns the finished run, with its steps, in the same answer.
    waited = api.post("/api/workflows/echo/runs/?wait=10", {"input": {"who": "waiting"}}, format="json")
    assert waited.status_code == 200, waited.content
    waited = waited.json()
    assert waited["status"] == "succeeded" and waited["output"] == "Echo: hello waiting"
    assert waited["steps"][0]["params"] == {"server": "everything", "tool": "echo", "arguments": {"message": "hello waiting"}}
    assert waited["steps"][0]["durationMs"] > 0

    # Webhook: the token from the document; the JSON body is the input. A wrong token is 404.
    assert api.post(hook[:-4] + "XXXX", {"who": "x"}, format="json").status_code == 404
    assert api.post(hook.replace("/echo/", "/other/"), {"who": "x"}, format="json").status_code == 404
    assert api.get(hook).status_code == 405
    hooked = APIClient().post(hook, {"who": "hook"}, format="json")  # no credentials: the token is the credential
    assert hooked.status_code == 202, hooked.content
    assert hooked.json()["status"] == "queued"
    run = wait_status(hooked.json()["runId"], FINISHED)
    assert (run.status, run.trigger, run.input, run.output) == ("succeeded", "webhook", {"who": "hook"}, "Echo: hello hook")
    bad = APIClient().generic("POST", hook, "{nope", content_type="application/json")
    assert bad.status_code == 400 and "body" in bad.json()["errors"]

    listed = api.get("/api/workflows/echo/runs/").json()
    assert listed["count"] == 3
    assert [r["trigger"] for r in listed["results"]] == ["webhook", "manual", "manual"]  # newest first
    assert all(r["status"] == "succeeded" and "steps" not in r for r in listed["results"])
    assert api.post("/api/workflows/echo/runs/?wait=soon", {}, format="json").status_code == 400
    assert api.post("/api/workflows/echo/runs/?wait=600", {}, format="json").status_code == 400
    assert "input" in api.post("/api/workflows/echo/runs/", {"input": [1]}, format="json").json()["errors"]
    assert api.get("/api/runs/not-a-uuid/").status_code == 404

    # A running run: the step in flight ends, no further step starts, and it stays cancelled.
    running = api.post("/api/workflows/slow/runs/", {}, format="json").json()
    wait_status(running["id"], ("running",))
    wait_until(lambda: StepRun.all_tenants.filter(run_id=running["id"]).exists(), message="the first step")
    assert api.post(f"/api/runs/{running['id']}/cancel/").json()["status"] == "cancelled"
    wait_until(lambda: not StepRun.all_tenants.filter(run_id=running["id"], status="running").exists(), timeout=15,
               message="the step in flight to end")
    time.sleep(0.3)
    run = WorkflowRun.all_tenants.get(pk=running["id"])
    assert run.status == "cancelled" and run.output is None
    assert [s.step_id for s in StepRun.all_tenants.filter(run_id=running["id"])] == ["wait"]
    assert WorkflowRun.all_tenants.get(pk=skipped["id"]).started_at is None  # never picked up
    assert api.post(f"/api/runs/{running['id']}/cancel/").status_code == 409


def test_running_needs_workflows_run(acme):
    add_stdio_server(acme, everything_stdio())
    services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=echo_workflow())
    writer = acme.client(acme.key_with("workflows:read", "workflows:write"))
    assert writer.get("/api/workflows/echo/runs/").status_code == 200
    assert writer.post("/api/workflows/echo/runs/", {}, format="json").status_code == 403
    runner = acme.client(acme.key_with("workflows:read", "workflows:run"))
    queued = runner.post("/api/workflows/echo/runs/", {}, format="json")
    assert queued.status_code == 201 and queued.json()["status"] == "queued"
    assert writer.post(f"/api/runs/{queued.json()['id']}/cancel/").status_code == 403
    assert runner.post(f"/api/runs/{queued.json()['id']}/cancel/").json()["status"] == "cancelled"


def test_a_document_with_several_workflows_runs_the_one_named(acme):
    add_stdio_server(acme, everything_stdio())
    document = echo_workflow("multi", triggers=[{"type": "manual"}, {"type": "schedule", "cron": "0 * * * *", "workflow": "other"}])
    document["workflows"].append({"name": "other", "steps": [step("sum", "mcp.execute", {
        "server": "everything", "tool": "get-sum", "arguments": {"a": 1, "b": 2}})]})
    api = acme.client()
    assert api.post("/api/workflows/", document, format="json").status_code == 201
    assert ScheduledTrigger.objects.for_tenant(acme.tenant).get().entry == "other"

    first = api.post("/api/workflows/multi/runs/", {"input": {"who": "main"}}, format="json").json()
    other = api.post("/api/workflows/multi/runs/", {"workflow": "other"}, format="json").json()
    assert (first["entry"], other["entry"]) == ("main", "other")
    assert engine.execute(first["id"]) == engine.execute(other["id"]) == "succeeded"
    assert api.get(f"/api/runs/{first['id']}/").json()["output"] == "Echo: hello main"
    assert api.get(f"/api/runs/{other['id']}/").json()["output"] == "The sum of 1 and 2 is 3."
    unknown = api.post("/api/workflows/multi/runs/", {"workflow": "third"}, format="json")
    assert unknown.status_code == 400 and "workflow" in unknown.json()["errors"]
    bad_trigger = api.patch("/api/workflows/multi/", {"triggers": [{"type": "schedule", "cron": "0 * * * *", "workflow": "third"}]},
                            format="json")
    assert bad_trigger.status_code == 400 and "triggers[0].workflow" in bad_trigger.json()["errors"]


def test_a_schedule_fires_once_however_often_the_scheduler_ticks(acme, transactional_db):
    add_stdio_server(acme, everything_stdio())
    wf = services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=echo_workflow(
        triggers=[{"type": "schedule", "cron": "0 3 * * *", "input": {"who": "cron"}}]))
    trigger = ScheduledTrigger.objects.for_tenant(acme.tenant).get(workflow=wf)
    assert trigger.next_run_at > timezone.now() and (trigger.next_run_at.hour, trigger.next_run_at.minute) == (3, 0)
    assert scheduler.tick() == 0  # not due yet

    trigger.next_run_at = timezone.now() - timezone.timedelta(minutes=5)
    trigger.save()
    now = timezone.now()
    assert scheduler.tick(now) == 1
    assert scheduler.tick(now) == 0  # a second worker ticking at the same moment
    assert scheduler.tick() == 0
    runs = list(selectors.run_list(tenant=acme.tenant, workflow=wf))
    assert len(runs) == 1
    assert (runs[0].status, runs[0].trigger, runs[0].input) == ("queued", "schedule", {"who": "cron"})
    trigger.refresh_from_db()
    assert trigger.next_run_at > now

    assert engine.execute(runs[0].id) == "succeeded"
    runs[0].refresh_from_db()
    assert runs[0].output == "Echo: hello cron"


def test_a_worker_killed_mid_run_leaves_the_run_failed(acme, worker, settings):
    settings.BACKFLOW_RUN_STALE_SECONDS = 2
    add_stdio_server(acme, everything_stdio())
    wf = services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=slow_workflow())
    run = services.run_create(tenant=acme.tenant, actor=acme.actor, workflow=wf)
    child = worker(BACKFLOW_RUN_STALE_SECONDS="2", BACKFLOW_SCHEDULER_INTERVAL="60")

    wait_status(run.id, ("running",))
    wait_until(lambda: StepRun.objects.for_tenant(acme.tenant).filter(run=run, status="running").exists(), message="the step")
    # The worker signals it is alive while the step blocks.
    first = WorkflowRun.all_tenants.get(pk=run.id).heartbeat_at
    wait_until(lambda: WorkflowRun.all_tenants.get(pk=run.id).heartbeat_at > first, timeout=5, message="a heartbeat")
    assert engine.fail_stale_runs() == 0
    stdio = [pid for pid, cmd in child_pids(child.pid).items() if EVERYTHING in cmd]
    assert len(stdio) == 1  # the worker's own server child

    # SIGKILL, as if the machine lost the worker: no chance to clean up. Its stdio server (in a
    # session of its own) would linger until its operation ends; it goes too.
    child.kill()
    os.kill(stdio[0], signal.SIGKILL)
    child.process.wait(timeout=10)
    wait_until(lambda: not alive(stdio[0]), message="the stdio server's death")
    assert WorkflowRun.all_tenants.get(pk=run.id).status == "running"

    deadline = time.monotonic() + 10
    while scheduler.tick() == 0 and WorkflowRun.all_tenants.get(pk=run.id).status == "running":
        assert time.monotonic() < deadline, "the run stayed running"
        time.sleep(0.2)
    run.refresh_from_db()
    assert run.status == "failed" and run.finished_at is not None
    assert "worker stopped" in run.error and "heartbeat" in run.error
    assert engine.fail_stale_runs() == 0
    # Failed for good: a worker handed the same task again does not take it up.
    assert engine.execute(run.id) is None
    run.refresh_from_db()
    assert run.status == "failed"


def test_an_unexpected_error_in_a_step_fails_the_run_at_once(acme, monkeypatch):
    """A fault that is no step's (here: a bug, raised from inside the engine) fails the step and the
    run with a pointer to the log, instead of leaving it `running` for the stale-run sweep."""
    add_stdio_server(acme, everything_stdio())
    wf = services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=workflow("boom", [
        step("first", "mcp.listTools", {"server": "everything"}), step("second", "mcp.listTools", {"server": "everything"})]))

    def broken(self, action, params, timeout):
        raise KeyError("a bug")

    monkeypatch.setattr(engine.RunContext, "call", broken)
    run = services.run_create(tenant=acme.tenant, actor=acme.actor, workflow=wf, input={})
    assert engine.execute(run.id) == "failed"
    run.refresh_from_db()
    assert run.status == "failed" and run.finished_at is not None
    assert run.error == "Step 'first' (mcp.listTools) failed: internal error (KeyError); the operator's log has the details"
    assert [(s.step_id, s.status) for s in StepRun.objects.for_tenant(acme.tenant).filter(run=run)] == [("first", "failed")]


def test_a_result_or_error_with_nul_characters_is_stored(acme, monkeypatch):
    """MCP servers, LLMs and upstreams may answer with U+0000, which PostgreSQL cannot store: the
    step's record keeps the text with it replaced, and the run finishes instead of hanging."""
    add_stdio_server(acme, everything_stdio())
    wf = services.workflow_create(tenant=acme.tenant, actor=acme.actor, document=workflow("nul", [
        step("first", "mcp.listTools", {"server": "everything"}, continueOnError=True),
        step("second", "mcp.listTools", {"server": "everything"})]))
    answers = iter([engine.StepFailed("upstream said \x00 no"), {"text": "a\x00b"}])

    def answer(self, action, params, timeout):
        value = next(answers)
        if isinstance(value, Exception):
            raise value
        return value

    monkeypatch.setattr(engine.RunContext, "call", answer)
    run = services.run_create(tenant=acme.tenant, actor=acme.actor, workflow=wf, input={})
    assert engine.execute(run.id) == "succeeded"
    run.refresh_from_db()
    assert run.output == {"text": "a\ufffdb"}
    first = StepRun.objects.for_tenant(acme.tenant).get(run=run, step_id="first")
    assert first.status == "failed" and first.error == "upstream said \ufffd no"
