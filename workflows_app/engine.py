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
from backflow.compiled import remember
from backflow.egress import shared_client
from backflow.errors import ServiceError
from backflow.jsonbody import JsonBodyError, max_depth, parse_peer_json
from backflow.logs import new_request_id, request_id_bound
from backflow.redaction import redact, scrub
from backflow.templating import TemplateError, render
from backflow.validation import without_nul
from integrations_app.runtime import CallSettings, RouteFailure, call_endpoint, tenant_secrets
from integrations_app.stores import DatabaseStore
from workflows_app import bookkeeping, llm, mcp_client, selectors
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
        remember(_INTEGRATIONS, 1024, key, (self.tenant.routes_version, document))
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


def claim(run_id):
    """Move a queued run to running, in a transaction of its own (or the caller's); see claim_in_transaction."""
    with transaction.atomic():
        return claim_in_transaction(run_id)


def claim_in_transaction(run_id):
    """Move a queued run to running and record its first step as running (so it shows while it
    runs): (run, that step's record), or None when another worker has it, it was cancelled, its
    tenant is inactive (the run is failed, saying so), or its tenant already has
    BACKFLOW_TENANT_RUNNING_RUNS running (then it is queued again a moment later, so one tenant's
    runs cannot take every worker). The caller holds a transaction: the worker's, which claims the
    run's task in the same commit.

    Two statements (workflows_app.bookkeeping). The first reads the run with its workflow and
    tenant and locks the tenant row: that serialises the claims of one tenant's runs across workers
    (PostgreSQL; a SQLite write transaction is already exclusive), so the count in the second stays
    true until the commit, and a deactivation (tenants.services.tenant_set_active) waits for it, or
    it sees the deactivation. The second moves the run to running only while the tenant is under
    its bound (counted in that statement, after the lock: a count in the first would use a snapshot
    from before the wait) and records the first step."""
    run = bookkeeping.lock_queued_run(run_id)
    if run is None:
        return None
    tenant = run.tenant
    if not tenant.is_active:
        if WorkflowRun.all_tenants.filter(pk=run.pk, status=WorkflowRun.Status.QUEUED).update(
                status=WorkflowRun.Status.FAILED, finished_at=timezone.now(), error=inactive_error(tenant.slug)):
            metrics.runs_finished.labels(WorkflowRun.Status.FAILED).inc()
        return None
    steps = _entry_steps(run, missing=())
    record = bookkeeping.move_to_running(run, settings.BACKFLOW_TENANT_RUNNING_RUNS, steps[0] if steps else None)
    if record is None:
        if WorkflowRun.all_tenants.filter(pk=run.pk, status=WorkflowRun.Status.QUEUED).exists():  # over the bound
            _defer(run_id)
        return None
    return run, (record if steps else None)


def _entry_steps(run, missing=None):
    """The steps of the run's entry workflow (`missing` when the document has no such workflow)."""
    try:
        return next(w for w in run.workflow.definition["workflows"] if w["name"] == run.entry)["steps"]
    except (StopIteration, KeyError, TypeError):
        if missing is None:
            raise
        return missing


def _defer(run_id):
    from workflows_app.tasks import execute_workflow_run

    execute_workflow_run.using(run_after=timezone.now() + timedelta(seconds=DEFER_SECONDS)).enqueue(str(run_id))


def _end(run, status, *, output=None, error="", record=None, task=None):
    """End the run, if it is still running, with its last step's record (stored in any case) and
    `task` (the run's DBTaskResult: marked done when this ends the run) in one transaction. Returns
    the status the run has now: `status`, or the one someone else gave it meanwhile (a
    cancellation, the stale-run sweep). RecordRefused when the database refused the record."""
    if bookkeeping.end_run(run, status, output=output, error=error, record=record, task=task):
        return status
    return WorkflowRun.all_tenants.filter(pk=run.pk).values_list("status", flat=True).first() or WorkflowRun.Status.CANCELLED


def _stopped(run):
    """The run may not go on to its next step: it was cancelled (or ended by someone else, such as
    the stale-run sweep, or deleted with its workflow), or its tenant was deactivated — then it
    ends `failed` here, saying why."""
    row = WorkflowRun.all_tenants.filter(pk=run.pk).values_list("status", "tenant__is_active").first()
    if row is not None and row[0] == WorkflowRun.Status.RUNNING and not row[1]:
        _end(run, WorkflowRun.Status.FAILED, error=inactive_error(run.tenant.slug))
    return WorkflowRun.Status.CANCELLED


def _close_step(run, record, step, next_step, task):
    """Store a finished step's record and what follows from it in one transaction: the run's end
    (after its last step, or a failed step that does not continue on error), or else — once the run
    is seen still running with its tenant active (a cancellation or deactivation is observed here,
    before the next step) — the next step's record, running. A record the database refuses is
    stored failed, without its result, saying so. Returns ("ended", status), ("stopped", None) or
    ("next", next record)."""
    for attempt in (1, 2):
        try:
            if record.status == "failed" and not step.get("continueOnError"):
                return "ended", _end(run, WorkflowRun.Status.FAILED, error=f"Step {step['id']!r} ({step['action']}) failed: {record.error}",
                                     record=record, task=task)
            if next_step is None:
                return "ended", _end(run, WorkflowRun.Status.SUCCEEDED, output=record.result, record=record, task=task)
            with transaction.atomic():
                bookkeeping.save_record(record)
                if not WorkflowRun.all_tenants.filter(pk=run.pk, status=WorkflowRun.Status.RUNNING, tenant__is_active=True).exists():
                    return "stopped", None
                return "next", StepRun.objects.create(tenant=run.tenant, run=run, position=record.position + 1,
                                                      step_id=next_step["id"], action=next_step["action"])
        except bookkeeping.RecordRefused as refused:
            exc = refused.__cause__
            if attempt == 2:
                raise exc from None
            logger.error("run %s step %s: the step record could not be saved", run.pk, step["id"], exc_info=exc)
            record.status, record.result = "failed", None
            record.error = f"the step's result could not be stored ({exc.__class__.__name__}); the operator's log has the details"


def execute(run_id, *, task=None):
    """Run a queued run to its end. Returns the final status (None when this worker did not run it).
    `task`: the run's DBTaskResult, marked done in the transaction that ends the run when this run
    ends it (run_worker; not otherwise)."""
    claimed = claim(run_id)
    if claimed is None:
        return None
    return execute_claimed(*claimed, task=task)


def execute_claimed(run, record, *, task=None):
    """Run a run claimed by claim_in_transaction (with its first step's record) to its end."""
    started = time.monotonic()
    # The run's lines in the worker's log carry the id of the request that queued it.
    with request_id_bound(run.request_id or new_request_id()):
        with Heartbeat(run.pk):
            status = _execute_steps(run, record, task)
        if status == WorkflowRun.Status.CANCELLED:  # stopped before a step: cancelled, or failed for an inactive tenant
            status = WorkflowRun.all_tenants.filter(pk=run.pk).values_list("status", flat=True).first() or status
        if status != WorkflowRun.Status.CANCELLED:  # a cancellation is counted where it is made
            metrics.runs_finished.labels(status).inc()
        logger.info("run %s of %s/%s ended %s in %.0f ms", run.pk, run.tenant.slug, run.workflow.slug, status,
                    (time.monotonic() - started) * 1000)
    return status


def _execute_steps(run, record, task=None):
    """The steps in order, each recorded (`record`: the first one's, running). The run ends
    `succeeded`, `failed` or `cancelled` here whatever happens: a step record the database refuses
    fails that step (stored without its result, saying so), and a fault of ours fails the run; none
    is left `running` for the stale-run sweep to blame on a live worker. The run's output is the
    last step's result as stored (so it too is at most BACKFLOW_STEP_RESULT_MAX_BYTES)."""
    try:
        context = RunContext(run)
        steps = _entry_steps(run)
        values = {"input": run.input, "steps": {}}
        for position, step in enumerate(steps):
            started = time.monotonic()
            result, error = _run_step(context, step, values, record)
            record.duration_ms = round((time.monotonic() - started) * 1000, 2)
            record.status = "failed" if error else "succeeded"
            record.result, record.error = result, error or ""
            next_step = steps[position + 1] if position + 1 < len(steps) else None
            outcome, value = _close_step(run, record, step, next_step, task)
            if outcome == "ended":
                return value
            if outcome == "stopped":
                return _stopped(run)
            values["steps"][step["id"]] = {"result": record.result, "error": record.error or None}
            record = value
        return _end(run, WorkflowRun.Status.SUCCEEDED, task=task)  # a workflow of no steps
    except Exception as exc:
        logger.exception("run %s: unexpected error", run.pk)
        error = f"internal error ({exc.__class__.__name__}); the operator's log has the details"
        # `record` is the step not yet stored as finished (its transaction failed, or it never ran):
        # stored with the run's end, so that it does not stay `running` either.
        if record is not None and record.status == "running":
            record.status, record.result, record.error = "failed", None, error
        return _end(run, WorkflowRun.Status.FAILED, error=error, record=record, task=task)


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
