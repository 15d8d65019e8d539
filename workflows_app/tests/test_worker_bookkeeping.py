"""The worker's bookkeeping folded into the task's transactions (run_worker.RunWorker,
workflows_app.bookkeeping): a run and its task are claimed together and end together, a task whose
run cannot be claimed fails alone, a run cancelled during its last step ends cancelled, and the
integration document kept between runs follows every write of the integration.

In this process, on the test database (SQLite or PostgreSQL: each has its own statements)."""

import pytest
from django_tasks_db.models import DBTaskResult

from integrations_app import services as integration_services
from integrations_app.stores import DatabaseStore
from integrations_app.tests.test_runtime_helpers import Reply, make_integration, upstream, upstreams  # noqa: F401 (fixtures)
from workflows_app import engine, services
from workflows_app.management.commands.run_worker import RunWorker
from workflows_app.models import StepRun, WorkflowRun
from workflows_app.tasks import execute_workflow_run
from workflows_app.tests.helpers import step, workflow

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def _egress(settings):
    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]


def ping_workflow(ctx, upstream, steps=1):
    make_integration(ctx, "up", upstream.url, [{"name": "ping", "method": "get", "path": "/ping"}])
    return services.workflow_create(tenant=ctx.tenant, actor=ctx.actor, document=workflow(
        "ping", [step(f"s{i}", "ping") for i in range(steps)],
        tools=[{"name": "ping", "type": "integration", "params": {"integration": "up", "action": "ping"}}]))


def drain(worker_id="test-worker"):
    """One RunWorker in this thread until the queue is empty (db_worker --batch)."""
    RunWorker(queue_names=["default"], interval=0, batch=True, backend_name="default", startup_delay=False,
              max_tasks=None, worker_id=worker_id, excluded_queue_names=[]).run()


def task_of(run):
    (task,) = [t for t in DBTaskResult.objects.all() if t.args_kwargs["args"] == [str(run.pk)]]
    return task


def test_a_run_and_its_task_are_claimed_and_end_together(acme, upstream):
    upstream.on("GET", "/ping", Reply(body={"pong": True}))
    wf = ping_workflow(acme, upstream, steps=2)
    runs = [services.run_create(tenant=acme.tenant, actor=acme.actor, workflow=wf, input={"n": n}) for n in range(3)]
    drain()
    for run in runs:
        run.refresh_from_db()
        assert (run.status, run.output, run.error) == ("succeeded", {"pong": True}, "")
        assert run.started_at <= run.finished_at
        steps = list(StepRun.objects.for_tenant(acme.tenant).filter(run=run))
        assert [(s.step_id, s.status, s.result, s.attempts) for s in steps] == [("s0", "succeeded", {"pong": True}, 1),
                                                                                ("s1", "succeeded", {"pong": True}, 1)]
        assert all(s.duration_ms is not None for s in steps)
        task = task_of(run)
        assert (task.status, task.return_value, task.worker_ids) == ("SUCCESSFUL", "succeeded", ["test-worker"])
        assert task.started_at <= run.started_at and task.finished_at == run.finished_at  # one transaction each
    assert len(upstream.calls("/ping")) == 6


def test_a_task_whose_run_cannot_be_claimed_fails_alone(acme, upstream):
    """A fault in the run's claim rolls the claiming transaction back; the task then runs the
    ordinary way, which records the fault on it, and the worker goes on with the next one."""
    upstream.on("GET", "/ping", Reply(body={"pong": True}))
    wf = ping_workflow(acme, upstream)
    bad = execute_workflow_run.enqueue("not-a-run-id")
    good = services.run_create(tenant=acme.tenant, actor=acme.actor, workflow=wf)
    drain()
    bad_task = DBTaskResult.objects.get(pk=bad.id)
    assert bad_task.status == "FAILED" and bad_task.worker_ids == ["test-worker"], bad_task.traceback
    good.refresh_from_db()
    assert good.status == "succeeded" and task_of(good).status == "SUCCESSFUL"


def test_a_run_that_is_not_queued_any_more_only_ends_its_task(acme, upstream):
    upstream.on("GET", "/ping", Reply(body={"pong": True}))
    wf = ping_workflow(acme, upstream)
    run = services.run_create(tenant=acme.tenant, actor=acme.actor, workflow=wf)
    services.run_cancel(tenant=acme.tenant, actor=acme.actor, run=run)
    drain()
    run.refresh_from_db()
    assert run.status == "cancelled" and run.started_at is None and not StepRun.all_tenants.filter(run_id=run.pk).exists()
    task = task_of(run)
    assert (task.status, task.return_value) == ("SUCCESSFUL", None)
    assert upstream.calls("/ping") == []


def test_a_run_cancelled_during_its_last_step_ends_cancelled(acme, upstream):
    """The step in flight ends and is stored; the run keeps the cancellation (the engine says so,
    and the worker's task returns it), it does not end `succeeded` over it."""
    holder = {}

    def cancel_meanwhile(seen):
        services.run_cancel(tenant=acme.tenant, actor=acme.actor, run=holder["run"])
        return Reply(body={"pong": True})

    upstream.on("GET", "/ping", cancel_meanwhile)
    wf = ping_workflow(acme, upstream)
    holder["run"] = run = services.run_create(tenant=acme.tenant, actor=acme.actor, workflow=wf)
    drain()
    run.refresh_from_db()
    assert run.status == "cancelled" and run.output is None
    assert [(s.step_id, s.status) for s in StepRun.objects.for_tenant(acme.tenant).filter(run=run)] == [("s0", "succeeded")]
    task = task_of(run)
    assert (task.status, task.return_value) == ("SUCCESSFUL", "cancelled")


def test_the_integration_kept_between_runs_follows_its_writes(acme, globex, upstream):
    """Runs read the integration document once per routes_version: an update (another path) is
    seen by the next run, and another tenant's integration of the same name is its own."""
    upstream.on("GET", "/ping", Reply(body={"where": "ping"}))
    upstream.on("GET", "/pong", Reply(body={"where": "pong"}))
    wf = ping_workflow(acme, upstream)
    first = services.run_create(tenant=acme.tenant, actor=acme.actor, workflow=wf)
    assert engine.execute(first.pk) == "succeeded"
    integration_services.integration_update(store=DatabaseStore(tenant=acme.tenant, actor=acme.actor), name="up", changes={
        "endpoints": [{"name": "ping", "method": "get", "path": "/pong"}]})
    second = services.run_create(tenant=acme.tenant, actor=acme.actor, workflow=wf)
    assert engine.execute(second.pk) == "succeeded"
    other = ping_workflow(globex, upstream)
    third = services.run_create(tenant=globex.tenant, actor=globex.actor, workflow=other)
    assert engine.execute(third.pk) == "succeeded"
    outputs = [WorkflowRun.all_tenants.get(pk=r.pk).output for r in (first, second, third)]
    assert outputs == [{"where": "ping"}, {"where": "pong"}, {"where": "ping"}]
