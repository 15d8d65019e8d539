"""Writes for workflows, runs and MCP servers: validate, write, audit, queue."""

from datetime import datetime, timedelta, timezone as dt_timezone

from croniter import croniter
from django.conf import settings
from django.db import transaction
from django.utils import timezone
from django.utils.text import slugify

from backflow import metrics
from backflow.errors import Conflict, Forbidden, InvalidInput, TooManyRequests
from backflow.logs import current_request_id, new_request_id, request_id_bound
from backflow.validation import nul_errors
from backflow.writes import check_changes, unique
from integrations_app.stores import DatabaseStore
from tenants.services import audit_record
from workflows_app import selectors
from workflows_app.documents import clean_mcp_server, clean_workflow
from workflows_app.models import McpServer, ScheduledTrigger, WorkerHeartbeat, Workflow, WorkflowRun


def _audit(tenant, actor, action, object_type, object_id, summary):
    audit_record(tenant=tenant, actor=actor, action=action, object_type=object_type, object_id=object_id, summary=summary)


def _clean(tenant, document):
    store = DatabaseStore(tenant=tenant, actor=None)
    return clean_workflow(
        document,
        mcp_server_exists=lambda name: selectors.mcp_server_list(tenant=tenant).filter(name=name).exists(),
        find_integration=store.get_integration,
    )


def _apply(workflow, doc):
    workflow.name, workflow.description = doc["name"], doc["description"]
    workflow.definition = {"workflows": doc["workflows"], "tools": doc["tools"], "triggers": doc["triggers"]}


def next_fire(cron, after=None):
    base = after or timezone.now()
    return croniter(cron, base.astimezone(dt_timezone.utc)).get_next(datetime)


def _check_schedule_budget(workflow, schedules):
    """A tenant has at most BACKFLOW_SCHEDULES_PER_TENANT schedule triggers over all its workflows
    (each fires at most once a minute): 400 naming the first trigger beyond the bound. Runs in the
    write's transaction with the tenant row locked, so two writes cannot both take the last one."""
    from tenants.models import Tenant

    limit = settings.BACKFLOW_SCHEDULES_PER_TENANT
    Tenant.objects.select_for_update().filter(pk=workflow.tenant_id).first()
    others = ScheduledTrigger.objects.for_tenant(workflow.tenant).exclude(workflow=workflow).count()
    if others + len(schedules) > limit:
        index = schedules[max(limit - others, 0)]
        raise InvalidInput.single(f"triggers[{index}]", (
            f"this tenant already has {others} schedule trigger{'s' if others != 1 else ''} on other workflows and may have "
            f"{limit} in all (BACKFLOW_SCHEDULES_PER_TENANT); remove some, or list several times in one cron expression."))


def _sync_schedules(workflow):
    ScheduledTrigger.objects.for_tenant(workflow.tenant).filter(workflow=workflow).delete()
    default_entry = workflow.definition["workflows"][0]["name"]
    schedules = [index for index, trigger in enumerate(workflow.definition["triggers"]) if trigger["type"] == "schedule"]
    if schedules:
        _check_schedule_budget(workflow, schedules)
    for trigger in workflow.definition["triggers"]:
        if trigger["type"] == "schedule":
            ScheduledTrigger.objects.create(
                tenant=workflow.tenant, workflow=workflow, cron=trigger["cron"], entry=trigger.get("workflow", default_entry),
                input=trigger.get("input", {}), next_run_at=next_fire(trigger["cron"]),
            )


def _summary(workflow):
    return {"name": workflow.name, "steps": sum(len(w["steps"]) for w in workflow.definition["workflows"]),
            "triggers": [t["type"] for t in workflow.definition["triggers"]]}


def workflow_create(*, tenant, actor, document):
    doc = _clean(tenant, document)
    slug = doc.get("id") or slugify(doc["name"])[:63].strip("-_") or "workflow"
    workflow = Workflow(tenant=tenant, slug=slug)
    _apply(workflow, doc)
    with unique("A workflow with id", "id", slug):
        workflow.save()
        _sync_schedules(workflow)
        _audit(tenant, actor, "workflow.create", "workflow", slug, _summary(workflow))
    return workflow


def workflow_update(*, tenant, actor, slug, changes, partial=True):
    check_changes(changes, field="id", identity=slug, refusal="A workflow's id cannot change; create a new workflow.")
    with transaction.atomic():
        workflow = selectors.workflow_get(tenant=tenant, slug=slug)
        current = {k: v for k, v in workflow.to_document().items() if k not in ("createdAt", "updatedAt", "webhookUrl")}
        doc = _clean(tenant, {**current, **changes} if partial else {**changes, "id": slug})
        _apply(workflow, doc)
        workflow.save()
        _sync_schedules(workflow)
        _audit(tenant, actor, "workflow.update", "workflow", slug, _summary(workflow))
    return workflow


def workflow_delete(*, tenant, actor, slug):
    with transaction.atomic():
        workflow = selectors.workflow_get(tenant=tenant, slug=slug)
        Workflow.objects.for_tenant(tenant).filter(pk=workflow.pk).delete()
        _audit(tenant, actor, "workflow.delete", "workflow", slug, {"name": workflow.name})


def _check_run_budget(tenant, trigger):
    """A tenant queues at most BACKFLOW_TENANT_RUNS_PER_MINUTE runs a minute per kind of trigger: a
    workflow that triggers itself, or a flood of webhook calls, cannot fill the queue every tenant
    shares; and whoever holds a webhook URL cannot use up the tenant's own manual and scheduled runs."""
    recent = WorkflowRun.objects.for_tenant(tenant).filter(
        trigger=trigger, created_at__gte=timezone.now() - timedelta(seconds=60)).count()
    if recent >= settings.BACKFLOW_TENANT_RUNS_PER_MINUTE:
        metrics.rate_limit_refusals.labels("runs_per_minute").inc()
        raise TooManyRequests(f"This tenant queued {recent} {trigger} runs in the last minute (the limit is "
                              f"{settings.BACKFLOW_TENANT_RUNS_PER_MINUTE}); try again shortly.", retry_after=10)


def run_create(*, tenant, actor, workflow, input=None, trigger="manual", entry=None, depth=0):
    """Queue a run; a worker (`manage.py run_worker`) executes it. `depth`: how many platform calls
    led here (a webhook called by a run's upstream call: integrations_app.runtime.call_depth)."""
    from workflows_app.tasks import execute_workflow_run

    if input is None:
        input = {}
    if not isinstance(input, dict):
        raise InvalidInput.single("input", "Give the run's input as a JSON object.")
    if nul := nul_errors(input, ["input"]):
        raise InvalidInput("Invalid input.", nul)
    entries = [w["name"] for w in workflow.definition["workflows"]]
    entry = entry or entries[0]
    if entry not in entries:
        raise InvalidInput.single("workflow", f"No workflow named {entry!r} in this document ({', '.join(entries)}).")
    # A run queued outside a request (a schedule) gets an id of its own; the worker logs under it.
    with request_id_bound(current_request_id() or new_request_id()), transaction.atomic():
        _check_run_budget(tenant, trigger)
        run = WorkflowRun.objects.create(tenant=tenant, workflow=workflow, entry=entry, trigger=trigger, input=input,
                                         created_by=str(actor), depth=depth)
        _audit(tenant, actor, "workflow.run", "workflow_run", run.id, {"workflow": workflow.slug, "trigger": trigger})
        # Same database, same transaction: a worker cannot see the task before the run exists.
        execute_workflow_run.enqueue(str(run.id))
    return run


def run_cancel(*, tenant, actor, run):
    with transaction.atomic():
        updated = WorkflowRun.objects.for_tenant(tenant).filter(pk=run.pk, status__in=[WorkflowRun.Status.QUEUED, WorkflowRun.Status.RUNNING]).update(
            status=WorkflowRun.Status.CANCELLED, finished_at=timezone.now(), error="Cancelled.")
        if not updated:
            raise Conflict(f"Run {run.id} already finished ({run.status}).")
        _audit(tenant, actor, "workflow.cancel", "workflow_run", run.id, {"workflow": run.workflow.slug})
    metrics.runs_finished.labels(WorkflowRun.Status.CANCELLED).inc()
    run.refresh_from_db()
    return run


# Using a stored secret anywhere needs the scope that manages secrets: an MCP server sends its
# header secrets to its url, so whoever may point a server that sends one may read the secret.
SECRET_USE_SCOPE = "integrations:write"
# What decides where (and to whom) a server's header secrets go: changing any of them on a server
# that sends a secret is a new use of it. (A Host header, say, picks the virtual host behind a proxy.)
SECRET_DESTINATION = ("transport", "url", "headers")


def _secret_headers(doc):
    return {header: value["secret"] for header, value in (doc.get("headers") or {}).items() if isinstance(value, dict)}


def _require_secret_scope(actor, doc, current=None):
    """Refuse (403) a server document that sends a stored secret somewhere new unless the actor may
    use stored secrets. `current` is the stored document on an update: keeping a server's secrets
    and destination as they are (changing its timeout, say) needs nothing more than before."""
    sent = _secret_headers(doc)
    if not sent or actor.has_scope(SECRET_USE_SCOPE):
        return
    if current is not None and all(current.get(part) == doc.get(part) for part in SECRET_DESTINATION):
        return
    uses = ", ".join(f"header {header} sends the secret {secret!r}" for header, secret in sorted(sent.items()))
    raise Forbidden(f"This credential lacks the {SECRET_USE_SCOPE!r} scope, which every use of a stored secret needs ({uses}). "
                    f"Use a key with {SECRET_USE_SCOPE}, or give the header as plain text.", {"headers": [f"needs {SECRET_USE_SCOPE}."]})


def mcp_server_create(*, tenant, actor, document, allow_stdio=False):
    doc = clean_mcp_server(document, allow_stdio=allow_stdio)
    _require_secret_scope(actor, doc)
    server = McpServer(tenant=tenant, name=doc["name"])
    server.apply_document(doc)
    with unique("An MCP server named", "name", doc["name"]):
        server.save()
        _audit(tenant, actor, "mcp_server.create", "mcp_server", server.name, {"transport": server.transport})
    return server


def mcp_server_update(*, tenant, actor, name, changes, partial=True, allow_stdio=False):
    check_changes(changes, field="name", identity=name, refusal="An MCP server cannot be renamed.")
    with transaction.atomic():
        server = selectors.mcp_server_get(tenant=tenant, name=name)
        if server.transport == McpServer.Transport.STDIO and not allow_stdio:
            raise InvalidInput.single("transport", "stdio servers are managed by operators.")
        current = {k: v for k, v in server.to_document().items() if k not in ("createdAt", "updatedAt")}
        doc = clean_mcp_server({**current, **changes} if partial else {**changes, "name": name}, allow_stdio=allow_stdio)
        _require_secret_scope(actor, doc, current)
        server.apply_document(doc)
        server.save()
        _audit(tenant, actor, "mcp_server.update", "mcp_server", name, {"transport": server.transport})
    return server


def mcp_server_delete(*, tenant, actor, name, allow_stdio=False):
    with transaction.atomic():
        server = selectors.mcp_server_get(tenant=tenant, name=name)
        if server.transport == McpServer.Transport.STDIO and not allow_stdio:
            raise InvalidInput.single("transport", "stdio servers are managed by operators.")
        users = [w.slug for w in selectors.workflow_list(tenant=tenant) if _uses_server(w, name)]
        if users:
            raise Conflict(f"Workflows {', '.join(users)} use MCP server {name!r}; change them first.", {"name": ["Still used."]})
        McpServer.objects.for_tenant(tenant).filter(pk=server.pk).delete()
        _audit(tenant, actor, "mcp_server.delete", "mcp_server", name, {})


def _uses_server(workflow, name):
    tools = workflow.definition.get("tools", [])
    steps = [s for w in workflow.definition.get("workflows", []) for s in w["steps"]]
    return any(t["type"] == "mcp_tool" and t["params"].get("mcpServer") == name for t in tools) or any(
        s["action"] in ("mcp.listTools", "mcp.execute") and s["params"].get("server") == name for s in steps)


def worker_beat(*, worker_id, hostname, pid, concurrency, started_at):
    """Record that a run_worker is alive; forget workers silent for a day (their rows only
    clutter the admin)."""
    now = timezone.now()
    WorkerHeartbeat.objects.update_or_create(
        worker_id=worker_id,
        defaults={"hostname": hostname[:255], "pid": pid, "concurrency": concurrency, "started_at": started_at, "beat_at": now},
    )
    WorkerHeartbeat.objects.filter(beat_at__lt=now - timedelta(days=1)).delete()
    metrics.worker_heartbeat.set(now.timestamp())


def worker_gone(*, worker_id):
    """A worker that stops cleanly says so at once rather than going stale."""
    WorkerHeartbeat.objects.filter(worker_id=worker_id).delete()
