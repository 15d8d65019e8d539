"""The writes that claim and end a workflow run, in as few round trips as the database allows.

On PostgreSQL a run that a `run_worker` executes costs two transactions, as a bare django-tasks-db
task does: one claims the task, the run (moved to running under its tenant's bound) and records its
first step as running; one statement (its own transaction) stores the last step's record, ends the
run and marks its task done. Each of those statements is written out here once instead of being
built by the ORM per run (building them cost more CPU than the database spent on them). Elsewhere
(SQLite, the embedded default) the same writes go through the ORM in the same transactions.

Table and column names come from the models' _meta, so a renamed column stays right.
"""

import datetime
from contextlib import nullcontext

from django.db import connection, transaction
from django.utils import timezone
from django_tasks_db.compat import TaskResultStatus
from django_tasks_db.models import DBTaskResult

from backflow.outages import DATABASE_ERRORS
from tenants.models import Tenant
from workflows_app.models import StepRun, Workflow, WorkflowRun

RUNNING, QUEUED = WorkflowRun.Status.RUNNING, WorkflowRun.Status.QUEUED


def _postgres():
    return connection.vendor == "postgresql"


def _table(model):
    return connection.ops.quote_name(model._meta.db_table)


def _column(model, name):
    return connection.ops.quote_name(model._meta.get_field(name).column)


def _save_value(model, name, value):
    """`value` as the ORM would send it for a write of field `name` (JSON adapted, None as SQL NULL)."""
    return model._meta.get_field(name).get_db_prep_save(value, connection)


class _Statements:
    """The statements, built once per process (names quoted for the connection)."""

    _built = None

    @classmethod
    def get(cls):
        if cls._built is None:
            cls._built = cls()
        return cls._built

    def __init__(self):
        run, step, task = _table(WorkflowRun), _table(StepRun), _table(DBTaskResult)
        r = lambda name: _column(WorkflowRun, name)  # noqa: E731
        s = lambda name: _column(StepRun, name)  # noqa: E731
        t = lambda name: _column(DBTaskResult, name)  # noqa: E731
        self.task_fields = [f.attname for f in DBTaskResult._meta.concrete_fields]
        # The queued run, its tenant and workflow; the tenant row locked (see lock_queued_run).
        self.lock_run_fields = tuple([f.attname for f in model._meta.concrete_fields] for model in (WorkflowRun, Tenant, Workflow))
        selected = ", ".join(f"{alias}.{connection.ops.quote_name(f.column)}"
                             for alias, model in (("r", WorkflowRun), ("t", Tenant), ("w", Workflow)) for f in model._meta.concrete_fields)
        self.lock_run = (
            f"SELECT {selected} FROM {run} r JOIN {_table(Tenant)} t ON t.{_column(Tenant, 'id')} = r.{r('tenant')} "
            f"JOIN {_table(Workflow)} w ON w.{_column(Workflow, 'id')} = r.{r('workflow')} "
            f"WHERE r.{r('id')} = %s AND r.{r('status')} = %s FOR NO KEY UPDATE OF t")
        task_columns = ", ".join(connection.ops.quote_name(f.column) for f in DBTaskResult._meta.concrete_fields)
        # {ready} is django-tasks-db's own query for the next ready task of the worker's backend and
        # queues, LIMIT 1 FOR UPDATE SKIP LOCKED (see TaskClaimer).
        self.claim_task = (
            f"UPDATE {task} SET {t('status')} = %s, {t('started_at')} = %s, {t('worker_ids')} = {t('worker_ids')} || %s "
            f"WHERE {t('id')} = ({{ready}}) RETURNING {task_columns}")
        # The run moves to running only while its tenant has fewer than the bound running (the
        # tenant row is locked by the caller: the count stays true until the commit), and its
        # first step is recorded, running, by the same statement.
        move = (f"UPDATE {run} SET {r('status')} = %s, {r('started_at')} = %s, {r('heartbeat_at')} = %s "
                f"WHERE {r('id')} = %s AND {r('status')} = %s "
                f"AND (SELECT COUNT(*) FROM {run} WHERE {r('tenant')} = %s AND {r('status')} = %s) < %s "
                f"RETURNING {r('id')}")
        self.claim_run = move
        self.claim_run_and_step = (
            f"WITH claimed AS ({move}) "
            f"INSERT INTO {step} ({s('tenant')}, {s('run')}, {s('position')}, {s('step_id')}, {s('action')}, {s('status')}, "
            f"{s('params')}, {s('result')}, {s('error')}, {s('attempts')}, {s('started_at')}, {s('duration_ms')}) "
            f"SELECT %s, {r('id')}, 0, %s, %s, %s, %s, NULL, '', 0, %s, NULL FROM claimed RETURNING {s('id')}")
        # The end: the last step's record (stored whatever happened to the run meanwhile), the run
        # (only if still running: a cancellation or the stale-run sweep may have ended it), and the
        # task (only if this ended the run). One statement, so one transaction with no BEGIN/COMMIT.
        end_run = (f"UPDATE {run} SET {r('status')} = %s, {r('output')} = %s, {r('error')} = %s, {r('finished_at')} = %s, "
                   f"{r('heartbeat_at')} = %s WHERE {r('id')} = %s AND {r('status')} = %s RETURNING {r('id')}")
        end_step = (f"UPDATE {step} SET {s('status')} = %s, {s('params')} = %s, {s('result')} = %s, {s('error')} = %s, "
                    f"{s('attempts')} = %s, {s('duration_ms')} = %s WHERE {s('id')} = %s RETURNING {s('id')}")
        end_task = (f"UPDATE {task} SET {t('status')} = %s, {t('finished_at')} = %s, {t('return_value')} = %s, "
                    f"{t('exception_class_path')} = '', {t('traceback')} = '' WHERE {t('id')} = %s AND EXISTS (SELECT 1 FROM ended) "
                    f"RETURNING {t('id')}")
        self.end = {
            (with_step, with_task): "WITH " + ", ".join(
                part for part in (
                    f"stored AS ({end_step})" if with_step else None,
                    f"ended AS ({end_run})",
                    f"marked AS ({end_task})" if with_task else None,
                ) if part) + " SELECT COUNT(*) FROM ended"
            for with_step in (False, True) for with_task in (False, True)
        }


# -- the task ----------------------------------------------------------------------------------

class TaskClaimer:
    """Claims the next ready task of `ready()` (a queryset: django-tasks-db's Worker's ready tasks
    of its backend and queues) for `worker_id`, in the caller's transaction: claim() returns the
    DBTaskResult or None.

    On PostgreSQL one statement (UPDATE ... WHERE id = (SELECT ... FOR UPDATE SKIP LOCKED)
    RETURNING) instead of a locking SELECT and an UPDATE; the SELECT is the queryset's own, compiled
    once: only its time ("ready now") changes from one claim to the next. Elsewhere, get_locked()
    and claim() as django-tasks-db's Worker does."""

    def __init__(self, ready, worker_id):
        self.ready, self.worker_id = ready, worker_id
        self._compiled = None

    def claim(self):
        if not _postgres():
            task_result = self.ready().get_locked()
            if task_result is not None:
                task_result.claim(self.worker_id)
            return task_result
        sql, params = self._select()
        with connection.cursor() as cursor:
            cursor.execute(sql, [TaskResultStatus.RUNNING, timezone.now(), _save_value(DBTaskResult, "worker_ids", [self.worker_id]),
                                 *params])
            row = cursor.fetchone()
        if row is None:
            return None
        return _instance(DBTaskResult, _Statements.get().task_fields, row)

    def _select(self):
        """The claiming statement and its parameters, the ready-task query compiled once."""
        if self._compiled is None:
            self._compiled = self._compile()
        if self._compiled is False:  # its time could not be told from its other parameters: compiled per claim
            return self._compile_now()
        sql, params, now_at = self._compiled
        params = list(params)
        params[now_at] = timezone.now()
        return sql, params

    def _compile_now(self):
        tasks = self.ready()
        ready, params = tasks.select_for_update(skip_locked=True).values("pk")[:1].query.get_compiler(using=tasks.db).as_sql()
        return _Statements.get().claim_task.format(ready=ready), list(params)

    def _compile(self):
        from django_tasks_db.models import get_date_max

        sql, params = self._compile_now()
        times = [index for index, value in enumerate(params) if isinstance(value, datetime.datetime) and value != get_date_max()]
        if len(times) != 1:
            return False
        return sql, params, times[0]


_CONVERTERS = {}


def _instance(model, attnames, row):
    """A model instance from a row of `attnames` columns, its values converted as the ORM's
    (JSON decoded, ...), as if it was read by a queryset."""
    key = (model, tuple(attnames))
    converters = _CONVERTERS.get(key)
    if converters is None:
        converters = _CONVERTERS[key] = []
        for index, attname in enumerate(attnames):
            column = model._meta.get_field(attname).get_col(model._meta.db_table)
            found = connection.ops.get_db_converters(column) + column.get_db_converters(connection)
            if found:
                converters.append((index, column, found))
    values = list(row)
    for index, column, found in converters:
        for converter in found:
            values[index] = converter(values[index], column, connection)
    return model.from_db(connection.alias, attnames, values)


def mark_task_successful(task_result, status, now=None):
    """What DBTaskResult.set_successful writes (ORM path: one UPDATE in the caller's transaction)."""
    now = now or timezone.now()
    DBTaskResult.objects.filter(pk=task_result.pk).update(
        status=TaskResultStatus.SUCCESSFUL, finished_at=now, return_value=status, exception_class_path="", traceback="")
    _task_done(task_result, status, now)


def _task_done(task_result, status, now):
    task_result.status, task_result.finished_at, task_result.return_value = TaskResultStatus.SUCCESSFUL, now, status
    task_result.exception_class_path = task_result.traceback = ""


# -- the run -----------------------------------------------------------------------------------

def lock_queued_run(run_id):
    """The queued run with its workflow and tenant, the tenant row locked (FOR NO KEY UPDATE: it
    serialises the claims of one tenant's runs and a deactivation, tenants.services.tenant_set_active,
    but not the inserts that only refer to the tenant, such as new runs); None when not queued.
    A run id that is no UUID raises ValidationError, as the ORM does."""
    if not _postgres():
        return (WorkflowRun.all_tenants.select_related("tenant", "workflow").select_for_update(of=("tenant",), no_key=True)
                .filter(pk=run_id, status=QUEUED).order_by().first())
    statements = _Statements.get()
    pk = WorkflowRun._meta.pk
    with connection.cursor() as cursor:
        cursor.execute(statements.lock_run, [pk.get_db_prep_value(pk.to_python(run_id), connection), QUEUED])
        row = cursor.fetchone()
    if row is None:
        return None
    run_fields, tenant_fields, workflow_fields = statements.lock_run_fields
    run = _instance(WorkflowRun, run_fields, row[:len(run_fields)])
    tenant = _instance(Tenant, tenant_fields, row[len(run_fields):len(run_fields) + len(tenant_fields)])
    workflow = _instance(Workflow, workflow_fields, row[len(run_fields) + len(tenant_fields):])
    WorkflowRun.tenant.field.set_cached_value(run, tenant)
    WorkflowRun.workflow.field.set_cached_value(run, workflow)
    Workflow.tenant.field.set_cached_value(workflow, tenant)
    return run


def move_to_running(run, limit, first_step):
    """Move the locked queued `run` to running if its tenant has fewer than `limit` runs running,
    and record `first_step` (when given) as running: the StepRun, or True when there is no first
    step; None when the run was not moved (over the bound, or no longer queued). In the caller's
    transaction, after lock_queued_run."""
    now = timezone.now()
    if not _postgres():
        from django.db.models import F, Func, IntegerField, Subquery

        running = Subquery(WorkflowRun.all_tenants.filter(tenant_id=run.tenant_id, status=RUNNING).order_by()
                           .annotate(n=Func(F("pk"), function="COUNT", output_field=IntegerField())).values("n"))
        if not (WorkflowRun.all_tenants.filter(pk=run.pk, status=QUEUED).alias(running=running).filter(running__lt=limit)
                .update(status=RUNNING, started_at=now, heartbeat_at=now)):
            return None
        _running(run, now)
        if first_step is None:
            return True
        return StepRun.objects.create(tenant=run.tenant, run=run, position=0, step_id=first_step["id"], action=first_step["action"])
    statements = _Statements.get()
    move = [RUNNING, now, now, run.pk, QUEUED, run.tenant_id, RUNNING, limit]
    with connection.cursor() as cursor:
        if first_step is None:
            cursor.execute(statements.claim_run, move)
        else:
            cursor.execute(statements.claim_run_and_step, [*move, run.tenant_id, first_step["id"], first_step["action"], "running",
                                                           _save_value(StepRun, "params", {}), now])
        row = cursor.fetchone()
    if row is None:
        return None
    _running(run, now)
    if first_step is None:
        return True
    record = StepRun(id=row[0], tenant=run.tenant, run=run, position=0, step_id=first_step["id"], action=first_step["action"],
                     status="running", params={}, result=None, error="", attempts=0, started_at=now, duration_ms=None)
    record._state.adding, record._state.db = False, connection.alias
    return record


def _running(run, now):
    run.status, run.started_at, run.heartbeat_at = RUNNING, now, now


STEP_FIELDS = ["duration_ms", "status", "result", "error", "params", "attempts"]


class RecordRefused(Exception):
    """The database refused a step's record (its result, most likely); __cause__ says how. (An
    outage is no refusal: it is raised as it is.)"""


def end_run(run, status, *, output=None, error="", record=None, task=None):
    """Store `record` (a step's final record) and end the run with `status` if it is still
    running, marking `task` (the run's DBTaskResult) done if this ended it. Returns whether it
    ended the run. RecordRefused when the database refused the record (nothing was written)."""
    now = timezone.now()
    if not _postgres():
        with transaction.atomic():
            if record is not None:
                save_record(record)
            ended = WorkflowRun.all_tenants.filter(pk=run.pk, status=RUNNING).update(
                status=status, output=output, error=error, finished_at=now, heartbeat_at=now)
            if ended and task is not None:
                mark_task_successful(task, status, now)
        return bool(ended)
    params = []
    if record is not None:
        params += [record.status, _save_value(StepRun, "params", record.params), _save_value(StepRun, "result", record.result),
                   record.error, record.attempts, record.duration_ms, record.pk]
    params += [status, _save_value(WorkflowRun, "output", output), error, now, now, run.pk, RUNNING]
    if task is not None:
        params += [TaskResultStatus.SUCCESSFUL, now, _save_value(DBTaskResult, "return_value", status), task.pk]
    sql = _Statements.get().end[(record is not None, task is not None)]
    # A lone statement is a transaction of its own; inside the caller's, a savepoint keeps a
    # refused record from spoiling the rest of it (tests run in one).
    try:
        with transaction.atomic() if connection.in_atomic_block else nullcontext():
            with connection.cursor() as cursor:
                cursor.execute(sql, params)
                ended = cursor.fetchone()[0]
    except DATABASE_ERRORS:
        raise
    except Exception as exc:
        if record is not None:
            raise RecordRefused() from exc
        raise
    if ended and task is not None:
        _task_done(task, status, now)
    return bool(ended)


def save_record(record):
    """Store a step's final record, in the caller's transaction."""
    try:
        record.save(update_fields=STEP_FIELDS)
    except DATABASE_ERRORS:
        raise
    except Exception as exc:
        raise RecordRefused() from exc
