"""Reads for workflows, runs and MCP servers."""

import uuid
from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.models import Count, Min
from django.utils import timezone

from backflow.errors import NotFound
from backflow.templating import TemplateError, operator_environment, render
from integrations_app.services import secret_value
from workflows_app.mcp_client import McpClientError, ServerSpec
from workflows_app.models import McpServer, StepRun, WorkerHeartbeat, Workflow, WorkflowRun


def workflow_list(*, tenant):
    return Workflow.objects.for_tenant(tenant).select_related("tenant")


def workflow_get(*, tenant, slug):
    workflow = workflow_list(tenant=tenant).filter(slug=slug).first()
    if workflow is None:
        raise NotFound(f"No workflow with id {slug!r}.")
    return workflow


def run_list(*, tenant, workflow=None):
    runs = WorkflowRun.objects.for_tenant(tenant).select_related("workflow")
    return runs.filter(workflow=workflow) if workflow is not None else runs


def run_get(*, tenant, run_id):
    try:
        run_uuid = uuid.UUID(str(run_id))
    except ValueError:
        run_uuid = None
    run = run_list(tenant=tenant).filter(pk=run_uuid).first() if run_uuid else None
    if run is None:
        raise NotFound(f"No run {run_id}.")
    return run


def run_steps(*, run):
    return StepRun.objects.for_tenant(run.tenant).filter(run=run)


def mcp_server_list(*, tenant):
    return McpServer.objects.for_tenant(tenant)


def mcp_server_get(*, tenant, name):
    server = mcp_server_list(tenant=tenant).filter(name=name).first()
    if server is None:
        raise NotFound(f"No MCP server named {name!r}.")
    return server


def mcp_server_spec(server):
    """The connection spec of a server record: env placeholders and header secrets resolved now."""
    try:
        env = tuple(sorted((k, str(render(v, {}, env=operator_environment()))) for k, v in server.env.items()))
    except TemplateError as exc:
        raise McpClientError(f"MCP server {server.name!r}: {exc}") from exc
    headers, credentials = [], []
    for name, value in sorted(server.headers.items()):
        if isinstance(value, dict):
            try:
                credentials.append(secret_value(tenant=server.tenant, name=value["secret"]))
                value = value.get("prefix", "") + credentials[-1]
            except NotFound as exc:
                raise McpClientError(f"MCP server {server.name!r}: header {name}: {exc.message}") from exc
            except ImproperlyConfigured as exc:  # the operator changed BACKFLOW_SECRETS_KEY
                raise McpClientError(f"MCP server {server.name!r}: header {name}: the secret {value['secret']!r} cannot be "
                                     "decrypted; ask the operator to check BACKFLOW_SECRETS_KEY, or store the secret again.") from exc
        headers.append((name, value))
    return ServerSpec(
        key=(server.tenant_id, server.name), name=server.name, transport=server.transport, command=server.command,
        args=tuple(server.args), env=env, url=server.url, headers=tuple(headers), credentials=tuple(credentials), timeout=server.timeout,
        max_concurrency=server.max_concurrency,
    ).with_fingerprint()


def live_workers():
    """Workers whose heartbeat is more recent than BACKFLOW_WORKER_STALE_SECONDS."""
    since = timezone.now() - timedelta(seconds=settings.BACKFLOW_WORKER_STALE_SECONDS)
    return WorkerHeartbeat.objects.filter(beat_at__gte=since).count()


def run_queue_state():
    """(queued runs, when the oldest was queued or None, live workers), over every tenant: for
    operators' metrics, never shown to a tenant."""
    queued = WorkflowRun.all_tenants.filter(status=WorkflowRun.Status.QUEUED).aggregate(count=Count("pk"), oldest=Min("created_at"))
    return queued["count"], queued["oldest"], live_workers()
