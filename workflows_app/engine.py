"""Execute one workflow run: steps in order, each recorded with its resolved params, result,
error and timing. Step kinds: the document's tools (mcp_tool, llm_call, integration) and the
built-ins mcp.listTools / mcp.execute. A worker signals a heartbeat while it runs, so a run whose
worker died is failed by the scheduler instead of staying `running` forever.
"""

import asyncio
import json
import logging
import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import close_old_connections, transaction
from django.utils import timezone

from backflow import metrics
from backflow.egress import shared_client
from backflow.errors import ServiceError
from backflow.jsonbody import JsonBodyError, max_depth, parse_peer_json
from backflow.logs import new_request_id, request_id_bound
from backflow.redaction import redact, scrub
from backflow.templating import TemplateError, render
from backflow.validation import without_nul
from integrations_app.runtime import CallSettings, RouteFailure, call_endpoint, tenant_secrets
from integrations_app.stores import DatabaseStore
from tenants.models import Tenant
from workflows_app import llm, mcp_client, selectors
from workflows_app.models import StepRun, WorkflowRun

logger = logging.getLogger("backflow.workflows")
DEFAULT_STEP_TIMEOUT = 60.0
DEFER_SECONDS = 1.0  # a run over its tenant's running-runs bound is looked at again this much later


class StepFailed(Exception):
    """The step could not produce a result; the message says why."""


def _mcp_result(result, spec):
    """structuredContent when the tool gave one, else its text; isError fails the step. Whatever
    the server echoes of the secrets in its connection headers is scrubbed."""
    text = scrub("\n".join(block.text for block in result.content if getattr(block, "type", None) == "text"), spec.credentials)
    structured = scrub(result.structured_content, spec.credentials)
    if result.is_error:
        raise StepFailed(f"the tool reported an error: {text or structured}")
    return structured if structured is not None else text


def _tool_summary(tool):
    return {"name": tool.name, "description": tool.description, "inputSchema": tool.input_schema}


class RunContext:
    def __init__(self, run):
        self.run = run
        self.tenant = run.tenant
        self.tools = {t["name"]: t for t in run.workflow.definition.get("tools", [])}
        self._specs = {}  # looked up once per run: the database and secrets are not read per step

    def server_spec(self, name):
        if name not in self._specs:
            self._specs[name] = self._load_spec(name)
        return self._specs[name]

    def _load_spec(self, name):
        try:
            return selectors.mcp_server_spec(selectors.mcp_server_get(tenant=self.tenant, name=name))
        except ServiceError as exc:
            raise StepFailed(exc.message) from exc
        except mcp_client.McpClientError as exc:
            raise StepFailed(str(exc)) from exc

    def call(self, action, params, timeout):
        try:
            if action == "mcp.listTools":
                return [_tool_summary(t) for t in mcp_client.list_tools(self.server_spec(params["server"]), timeout)]
            if action == "mcp.execute":
                spec = self.server_spec(params["server"])
                return _mcp_result(mcp_client.call_tool(spec, params["tool"], params.get("arguments") or {}, timeout), spec)
            tool = self.tools[action]
            if tool["type"] == "mcp_tool":
                spec = self.server_spec(tool["params"]["mcpServer"])
                return _mcp_result(mcp_client.call_tool(spec, tool["params"]["toolName"], params, timeout), spec)
            if tool["type"] == "llm_call":
                options = {**tool["params"], **params}
                return mcp_client.CLIENT.run(llm.complete(
                    prompt=options["prompt"], system=options.get("system"), model=options.get("model"),
                    temperature=options.get("temperature"), timeout=timeout,
                ), timeout + 5)
            # The document is read here, on the run's thread and its warm connection, not on a
            # thread of the loop's (a connection and a health check of its own per run).
            integration = self._integration_document(tool["params"]["integration"])
            return _run_here(self._integration(tool, params, integration), timeout + 5)
        except mcp_client.McpClientError as exc:
            raise StepFailed(str(exc)) from exc
        except llm.LlmError as exc:
            raise StepFailed(str(exc)) from exc
        except RouteFailure as exc:
            raise StepFailed(exc.message) from exc
        except TimeoutError as exc:
            raise StepFailed(f"no result within {timeout:g} s") from exc

    async def _integration(self, tool, params, integration):
        return await call_endpoint(integration, tool["params"]["action"], params, client=shared_client(),
                                   secrets=tenant_secrets(self.tenant), call_settings=CallSettings(depth=self.run.depth + 1),
                                   label=f"integration {tool['params']['integration']}")

    def _integration_document(self, name):
        """The integration's document as of the run's claim: kept per process while the tenant's
        routes_version (bumped in the transaction of every integration write, read with the tenant
        row by the claim) stays the same, as the route runtime keeps its route tables."""
        key = (self.tenant.pk, self.tenant.created_at, name)
        cached = _INTEGRATIONS.get(key)
        if cached is not None and cached[0] == self.tenant.routes_version:
            return cached[1]
        document = DatabaseStore(tenant=self.tenant, actor=None).get_integration(name)
        if len(_INTEGRATIONS) >= 1024:
            _INTEGRATIONS.clear()
        _INTEGRATIONS[key] = (self.tenant.routes_version, document)
        return document


# (tenant pk, tenant created_at, integration name) -> (the tenant's routes_version, the document or None)
_INTEGRATIONS = {}
_LOOPS = threading.local()


def _run_here(coroutine, timeout):
    """Run `coroutine` to its end (at most `timeout` s) on this thread's own event loop, made on
    first use and kept (with the pooled upstream connections of backflow.egress.shared_client):
    a one-call step does not hop to the MCP client's loop thread and back. From inside a running
    loop, it goes to the MCP client's loop as before."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        return mcp_client.CLIENT.run(coroutine, timeout)
    loop = getattr(_LOOPS, "loop", None)
    if loop is None or loop.is_closed():
        loop = _LOOPS.loop = asyncio.new_event_loop()
    return loop.run_until_complete(asyncio.wait_for(coroutine, timeout))


class _Heartbeats:
    """One side thread per process marks every run this process executes alive, every
    max(1, BACKFLOW_RUN_STALE_SECONDS / 4) s, while their steps block (one UPDATE for all of them):
    a thread started and joined per run cost more than the run's own bookkeeping."""

    def __init__(self):
        self._lock = threading.Lock()
        self._runs = {}  # run id -> monotonic time of its last sign of life (the claim, or a beat)
        self._thread = None

    def add(self, run_id):
        with self._lock:
            self._runs[run_id] = time.monotonic()
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._beat_forever, name="backflow-run-heartbeat", daemon=True)
                self._thread.start()

    def discard(self, run_id):
        with self._lock:
            self._runs.pop(run_id, None)

    def _beat_forever(self):
        while True:
            interval = max(1.0, settings.BACKFLOW_RUN_STALE_SECONDS / 4)
            time.sleep(min(1.0, interval))
            now = time.monotonic()
            with self._lock:
                due = [run_id for run_id, last in self._runs.items() if now - last >= interval]
            if not due:
                continue
            try:
                WorkflowRun.all_tenants.filter(pk__in=due, status=WorkflowRun.Status.RUNNING).update(heartbeat_at=timezone.now())
                with self._lock:
                    for run_id in due:
                        if run_id in self._runs:
                            self._runs[run_id] = now
            except Exception:
                logger.exception("heartbeat failed")
            finally:
                close_old_connections()


HEARTBEATS = _Heartbeats()


class Heartbeat:
    """While in this block, the run is marked alive by the process's heartbeat thread."""

    def __init__(self, run_id):
        self.run_id = run_id

    def __enter__(self):
        HEARTBEATS.add(self.run_id)
        return self

    def __exit__(self, *exc):
        HEARTBEATS.discard(self.run_id)


def inactive_error(slug):
    """Why a run of a deactivated tenant ends `failed` (queued, or stopped before its next step)."""
    return f"Tenant {slug!r} is inactive: its runs do not execute and its schedules do not fire until an operator activates it again."


def _claim(run_id):
    """Move a queued run to running; None when another worker has it, it was cancelled, its
    tenant is inactive (the run is failed, saying so), or its tenant already has
    BACKFLOW_TENANT_RUNNING_RUNS running (then it is queued again a moment later, so one tenant's
    runs cannot take every worker)."""
    with transaction.atomic():
        run = WorkflowRun.all_tenants.filter(pk=run_id, status=WorkflowRun.Status.QUEUED).only("tenant_id").first()
        if run is None:
            return None
        # The tenant row serialises claims of one tenant's runs across workers (PostgreSQL; a SQLite
        # write transaction is already exclusive), so the count below stays true until the update;
        # a deactivation (tenants.services.tenant_set_active) waits for it, or it sees the deactivation.
        tenant = Tenant.objects.select_for_update().filter(pk=run.tenant_id).first()
        if not tenant.is_active:
            if WorkflowRun.all_tenants.filter(pk=run_id, status=WorkflowRun.Status.QUEUED).update(
                    status=WorkflowRun.Status.FAILED, finished_at=timezone.now(), error=inactive_error(tenant.slug)):
                metrics.runs_finished.labels(WorkflowRun.Status.FAILED).inc()
            return None
        running = WorkflowRun.all_tenants.filter(tenant_id=run.tenant_id, status=WorkflowRun.Status.RUNNING).count()
        if running >= settings.BACKFLOW_TENANT_RUNNING_RUNS:
            _defer(run_id)
            return None
        now = timezone.now()
        claimed = WorkflowRun.all_tenants.filter(pk=run_id, status=WorkflowRun.Status.QUEUED).update(
            status=WorkflowRun.Status.RUNNING, started_at=now, heartbeat_at=now)
    return WorkflowRun.all_tenants.select_related("workflow", "tenant").get(pk=run_id) if claimed else None


def _defer(run_id):
    from workflows_app.tasks import execute_workflow_run

    execute_workflow_run.using(run_after=timezone.now() + timedelta(seconds=DEFER_SECONDS)).enqueue(str(run_id))


def _finish(run, status, *, output=None, error=""):
    WorkflowRun.all_tenants.filter(pk=run.pk, status=WorkflowRun.Status.RUNNING).update(
        status=status, output=output, error=error, finished_at=timezone.now(), heartbeat_at=timezone.now())


def _cancelled(run):
    """Whether the run must stop before its next step: it was cancelled (or ended by someone else,
    such as the stale-run sweep, or deleted with its workflow), or its tenant was deactivated —
    then it ends `failed` here, saying why."""
    row = WorkflowRun.all_tenants.filter(pk=run.pk).values_list("status", "tenant__is_active").first()
    if row is None or row[0] != WorkflowRun.Status.RUNNING:
        return True
    if not row[1]:
        _finish(run, WorkflowRun.Status.FAILED, error=inactive_error(run.tenant.slug))
        return True
    return False


def execute(run_id):
    """Run a queued run to its end. Returns the final status (None when this worker did not run it)."""
    run = _claim(run_id)
    if run is None:
        return None
    started = time.monotonic()
    # The run's lines in the worker's log carry the id of the request that queued it.
    with request_id_bound(run.request_id or new_request_id()):
        with Heartbeat(run.pk):
            status = _execute_steps(run)
        if status == WorkflowRun.Status.CANCELLED:  # stopped before a step: cancelled, or failed for an inactive tenant
            status = WorkflowRun.all_tenants.filter(pk=run.pk).values_list("status", flat=True).first() or status
        if status != WorkflowRun.Status.CANCELLED:  # a cancellation is counted where it is made
            metrics.runs_finished.labels(status).inc()
        logger.info("run %s of %s/%s ended %s in %.0f ms", run.pk, run.tenant.slug, run.workflow.slug, status,
                    (time.monotonic() - started) * 1000)
    return status


def _execute_steps(run):
    """The steps in order, each recorded. The run ends `succeeded`, `failed` or `cancelled` here
    whatever happens: a step record the database refuses fails that step (stored without its
    result, saying so), and a fault of ours fails the run; none is left `running` for the
    stale-run sweep to blame on a live worker. The run's output is the last step's result as
    stored (so it too is at most BACKFLOW_STEP_RESULT_MAX_BYTES)."""
    try:
        context = RunContext(run)
        entry = next(w for w in run.workflow.definition["workflows"] if w["name"] == run.entry)
        values = {"input": run.input, "steps": {}}
        last = None
        fields = ["duration_ms", "status", "result", "error", "params", "attempts"]
        for position, step in enumerate(entry["steps"]):
            if _cancelled(run):
                return WorkflowRun.Status.CANCELLED
            record = StepRun.objects.create(tenant=run.tenant, run=run, position=position, step_id=step["id"], action=step["action"])
            started = time.monotonic()
            result, error = _run_step(context, step, values, record)
            record.duration_ms = round((time.monotonic() - started) * 1000, 2)
            record.status = "failed" if error else "succeeded"
            record.result, record.error = result, error or ""
            try:
                with transaction.atomic():
                    record.save(update_fields=fields)
            except Exception as exc:
                logger.exception("run %s step %s: the step record could not be saved", run.pk, step["id"])
                result, error = None, f"the step's result could not be stored ({exc.__class__.__name__}); the operator's log has the details"
                record.status, record.result, record.error = "failed", None, error
                with transaction.atomic():
                    record.save(update_fields=fields)
            values["steps"][step["id"]] = {"result": result, "error": error}
            if error and not step.get("continueOnError"):
                _finish(run, WorkflowRun.Status.FAILED, error=f"Step {step['id']!r} ({step['action']}) failed: {error}")
                return WorkflowRun.Status.FAILED
            last = result
        _finish(run, WorkflowRun.Status.SUCCEEDED, output=last)
        return WorkflowRun.Status.SUCCEEDED
    except Exception as exc:
        logger.exception("run %s: unexpected error", run.pk)
        _finish(run, WorkflowRun.Status.FAILED, error=f"internal error ({exc.__class__.__name__}); the operator's log has the details")
        return WorkflowRun.Status.FAILED


def _run_step(context, step, values, record):
    try:
        params = render(step.get("params", {}), values)
    except TemplateError as exc:
        return None, f"cannot fill params: {exc}"
    record.params = redact(params)
    timeout = float(step.get("timeout", DEFAULT_STEP_TIMEOUT))
    error = None
    for attempt in range(1 + int(step.get("retries", 0))):
        record.attempts = attempt + 1
        try:
            result = context.call(step["action"], params, timeout)
        except StepFailed as exc:
            error = without_nul(str(exc))
            logger.info("run %s step %s attempt %d failed: %s", context.run.pk, step["id"], attempt + 1, error)
            continue
        except Exception as exc:
            # A fault of ours or of the set-up, not of the step: fail it now rather than leave the run
            # "running" until the stale-run sweep blames a worker that is alive.
            logger.exception("run %s step %s: unexpected error", context.run.pk, step["id"])
            return None, f"internal error ({exc.__class__.__name__}); the operator's log has the details"
        try:  # a result that cannot be stored is no transient failure: not retried
            return _jsonable(result), None
        except StepFailed as exc:
            return None, without_nul(str(exc))
    return None, error


def _jsonable(value):
    """What a step returned, as storable JSON, or StepFailed saying why not. The value comes from a
    peer (an MCP server, the LLM, an upstream) through a parser that may be lenient (the MCP SDK's
    takes NaN, 1e999 and ~200 levels): it goes through the strict parser (backflow.jsonbody), so
    NaN and Infinity (not JSON; PostgreSQL refuses them) and nesting deeper than
    BACKFLOW_JSON_MAX_DEPTH are refused, as is more than BACKFLOW_STEP_RESULT_MAX_BYTES of JSON;
    U+0000 (which PostgreSQL cannot store) is replaced."""
    try:
        text = json.dumps(value, default=str, ensure_ascii=False)
    except RecursionError:
        raise StepFailed(f"the result is not storable JSON: arrays and objects are nested more than {max_depth()} levels deep "
                         "(BACKFLOW_JSON_MAX_DEPTH).") from None
    except ValueError as exc:  # a circular reference
        raise StepFailed(f"the result is not storable JSON ({exc}).") from None
    size = len(text.encode("utf-8", errors="surrogatepass"))
    limit = settings.BACKFLOW_STEP_RESULT_MAX_BYTES
    if size > limit:
        raise StepFailed(f"the result is {size} bytes of JSON, more than BACKFLOW_STEP_RESULT_MAX_BYTES ({limit}); "
                         "have the step return less (select fields, a page), or ask the operator to raise the limit.")
    try:
        return without_nul(parse_peer_json(text))
    except JsonBodyError as exc:
        raise StepFailed(f"the result is not storable JSON: {exc}") from None


def fail_stale_runs():
    """Fail runs whose worker stopped signalling (killed mid-run); returns how many."""
    cutoff = timezone.now() - timedelta(seconds=settings.BACKFLOW_RUN_STALE_SECONDS)
    failed = WorkflowRun.all_tenants.filter(status=WorkflowRun.Status.RUNNING, heartbeat_at__lt=cutoff).update(
        status=WorkflowRun.Status.FAILED, finished_at=timezone.now(),
        error="The worker stopped while the run was in progress (no heartbeat); start it again.",
    )
    if failed:
        metrics.runs_finished.labels(WorkflowRun.Status.FAILED).inc(failed)
    return failed
