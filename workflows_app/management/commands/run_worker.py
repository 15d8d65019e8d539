import logging
import os
import random
import secrets
import signal
import socket
import threading
import time
from wsgiref.simple_server import make_server

from django.conf import settings
from django.core.management.base import CommandError
from django.db import DEFAULT_DB_ALIAS, OperationalError, close_old_connections, connections, transaction
from django.utils import timezone
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV, run_with_reloader
from django_tasks_db.management.commands.db_worker import Command as DbWorkerCommand
from django_tasks_db.compat import TaskResultStatus, task_finished, task_started
from django_tasks_db.management.commands.db_worker import Worker
from django_tasks_db.models import DBTaskResult
from django_tasks_db.utils import exclusive_transaction, is_locked_database_exception
from prometheus_client import make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer, _SilentHandler

from backflow.front import metrics_token_matches
from backflow.outages import DATABASE_ERRORS, describe, outage_message
from workflows_app import bookkeeping, engine, scheduler, services
from workflows_app.tasks import drop_failed_connections, execute_workflow_run

RUN_TASK_PATH = execute_workflow_run.module_path

logger = logging.getLogger("backflow.workflows")


class _ScrapeHandler(_SilentHandler):
    # A connection that sends nothing is closed after this long: each one holds a thread.
    timeout = 10


class RunWorker(Worker):
    """django-tasks-db's worker loop, with a workflow run's bookkeeping folded into the task's own
    transactions: the transaction that claims the task claims the run too (and records its first
    step as running), and the one that ends the run marks the task done. Two commits per run instead
    of four (each a WAL flush on PostgreSQL, and a round trip or two), same guarantees: the run's
    claim is engine.claim_in_transaction, its end engine.execute_claimed's.

    Any other task runs as under db_worker."""

    def run(self):
        # Worker.run, but for what happens in the claiming transaction (marked below).
        logger.info("Starting worker worker_id=%s queues=%s", self.worker_id, ",".join(self.queue_names))
        if self.startup_delay and self.interval:
            time.sleep(random.random())  # noqa: S311 - a small random delay against a thundering herd
        claimer = bookkeeping.TaskClaimer(self._ready, self.worker_id)
        while self.running:
            close_old_connections()  # check for dropped or expired connections right after waking up
            claimed = fault = None
            with exclusive_transaction(DBTaskResult.objects.db):
                try:
                    task_result = claimer.claim()  # (Worker.run: get_locked(), claim())
                    retrieved_task_result = True
                    if task_result is not None and task_result.task_path == RUN_TASK_PATH:  # (not in Worker.run)
                        claimed, fault = self._claim_run(task_result)
                except OperationalError as exc:
                    retrieved_task_result = False
                    if is_locked_database_exception(exc):  # SQLite: try again later
                        task_result = None
                    else:
                        raise
            if fault is not None:
                # The run's claim failed (a fault of ours, or a refusal by the database): the whole
                # transaction was rolled back; run the task the ordinary way, which claims the run
                # alone and records the fault on the task (or succeeds, if it was a passing one).
                again = self._claim_alone(task_result.pk)
                if again is not None:
                    super().run_task(again)
            elif task_result is not None:
                self.run_task(task_result, claimed)
            if self.batch and retrieved_task_result and task_result is None:
                logger.info("No more tasks to run for worker_id=%s - exiting gracefully.", self.worker_id)
                return None
            if self.max_tasks is not None and self._run_tasks >= self.max_tasks:
                logger.info("Run maximum tasks (%d) on worker=%s - exiting gracefully.", self._run_tasks, self.worker_id)
                return None
            close_old_connections()
            if self.running and not task_result:
                time.sleep(self.interval)

    def _ready(self):
        """Worker.run's query: the ready tasks of this worker's backend and queues."""
        tasks = DBTaskResult.objects.ready().filter(backend_name=self.backend_name)
        if not self.process_all_queues:
            tasks = tasks.filter(queue_name__in=self.queue_names)
        if self.excluded_queue_names:
            tasks = tasks.exclude(queue_name__in=self.excluded_queue_names)
        return tasks

    @staticmethod
    def _claim_run(task_result):
        """(claimed, None) inside the task's claiming transaction; claimed is engine.claim_in_transaction's
        answer, and when it is None (nothing to run: cancelled, another worker's, deferred, an inactive
        tenant's) the task is marked done in the same commit. (None, fault) when the claim raised
        anything but an outage; the transaction is then rolled back."""
        try:
            claimed = engine.claim_in_transaction(*task_result.args_kwargs["args"], **task_result.args_kwargs["kwargs"])
            if claimed is None:
                bookkeeping.mark_task_successful(task_result, None)
            return claimed, None
        except DATABASE_ERRORS:
            raise
        except Exception as exc:
            transaction.set_rollback(True)
            return None, exc

    def _claim_alone(self, pk):
        with exclusive_transaction(DBTaskResult.objects.db):
            task_result = DBTaskResult.objects.ready().filter(pk=pk).select_for_update(skip_locked=True).first()
            if task_result is not None:
                task_result.claim(self.worker_id)
        return task_result

    def run_task(self, db_task_result, claimed=None):
        """Worker.run_task; for a workflow run's task, the run claimed with it (or None: nothing to run,
        the task already marked done) runs to its end, which marks the task done in its transaction."""
        if db_task_result.task_path != RUN_TASK_PATH:
            return super().run_task(db_task_result)
        try:
            self.running_task = True
            task_result = db_task_result.task_result
            backend = task_result.task.get_backend()
            task_started.send(sender=backend, task_result=task_result)
            if claimed is not None:
                try:
                    status = engine.execute_claimed(*claimed, task=db_task_result)
                finally:
                    drop_failed_connections()
                if db_task_result.status != TaskResultStatus.SUCCESSFUL:  # the run did not end here (cancelled, ...)
                    db_task_result.set_successful(status)
            task_finished.send(sender=backend, task_result=db_task_result.task_result)
        except BaseException as exc:
            db_task_result.set_failed(exc)
            try:
                task_result = db_task_result.task_result
            except Exception:
                logger.exception("Task id=%s failed unexpectedly", db_task_result.id)
            else:
                task_finished.send(sender=type(db_task_result.task.get_backend()), task_result=task_result)
        finally:
            self.running_task = False
            self._run_tasks += 1


class Command(DbWorkerCommand):
    help = (
        "Execute queued workflow runs (django-tasks-db's db_worker, same options) and, beside it, "
        "fire due schedule triggers and fail runs whose worker died. It executes up to --concurrency "
        "runs at once (one slow run does not hold up every other tenant's); run as many as you like."
    )

    def add_arguments(self, parser):
        super().add_arguments(parser)
        parser.add_argument(
            "--concurrency", type=int, default=settings.BACKFLOW_WORKER_CONCURRENCY,
            help="Runs executed at once by this process, each on a thread of its own (default: BACKFLOW_WORKER_CONCURRENCY, %(default)s)",
        )
        parser.add_argument(
            "--metrics-port", type=int, default=None,
            help="Serve this worker's Prometheus metrics on this port at /metrics (needs BACKFLOW_METRICS_TOKEN, sent as a bearer token)",
        )
        parser.add_argument("--metrics-host", default="127.0.0.1", help="Address the metrics server listens on (default: %(default)s)")

    def handle(self, *, verbosity, queue_name, interval, batch, backend_name, startup_delay, reload, max_tasks,
               worker_id, exclude_queues, concurrency, metrics_port, metrics_host, **options):
        self.configure_logging(verbosity)
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1.")
        if metrics_port is not None:
            self._serve_metrics(metrics_host, metrics_port)
        # Each thread keeps its connection from one poll and one run to the next, checked before
        # reuse (CONN_HEALTH_CHECKS): opening one per poll and per run (CONN_MAX_AGE=0, right for
        # daphne) halved the drain rate on PostgreSQL (bench/load_workflows.py).
        connections.settings[DEFAULT_DB_ALIAS]["CONN_MAX_AGE"] = settings.BACKFLOW_WORKER_CONN_MAX_AGE
        queue_names = queue_name.split(",")
        excluded = exclude_queues.split(",") if exclude_queues else []
        if excluded and "*" not in queue_names:
            raise CommandError("--exclude-queues can only be used with --queue-name=*")
        self.workers = [
            RunWorker(queue_names=queue_names, interval=interval, batch=batch, backend_name=backend_name,
                   startup_delay=startup_delay, max_tasks=max_tasks, excluded_queue_names=excluded,
                   worker_id=f"{worker_id[:58]}-{index}" if concurrency > 1 else worker_id)
            for index in range(concurrency)
        ]
        self.heartbeat = {"worker_id": f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}", "hostname": socket.gethostname(),
                          "pid": os.getpid(), "concurrency": concurrency, "started_at": timezone.now()}
        if not batch:
            threading.Thread(target=self._schedule_forever, name="backflow-scheduler", daemon=True).start()
            threading.Thread(target=self._beat_forever, name="backflow-heartbeat", daemon=True).start()
        if reload and not batch:
            if os.environ.get(DJANGO_AUTORELOAD_ENV) == "true":
                self._configure_signals()
            run_with_reloader(self._run_all)
        else:
            self._configure_signals()
            self._run_all()

    def _run_all(self):
        threads = [threading.Thread(target=self._run_resilient, args=(worker,), name=f"backflow-worker-{index}", daemon=True)
                   for index, worker in enumerate(self.workers)]
        for thread in threads:
            thread.start()
        for thread in threads:
            while thread.is_alive():  # join in slices: the main thread must stay free to take signals
                thread.join(0.5)
        try:
            services.worker_gone(worker_id=self.heartbeat["worker_id"])
        except Exception as exc:  # stopping anyway: the row goes stale instead
            logger.warning("Could not remove this worker's heartbeat: %s", describe(exc))
        finally:
            connections.close_all()

    def _configure_signals(self):
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT):
            signal.signal(signum, self._shutdown)

    def _shutdown(self, signum, frame):
        """First signal: finish the runs in progress and stop taking new ones; second: stop now."""
        if not any(worker.running for worker in self.workers):
            logger.warning("Received %s again - stopping now.", signal.strsignal(signum))
            os._exit(1)
        logger.warning("Received %s - finishing the runs in progress (send it again to stop at once)...", signal.strsignal(signum))
        for worker in self.workers:
            worker.running = False

    @staticmethod
    def _run_resilient(worker):
        """One worker loop. django-tasks-db's loop exits on the first poll that cannot reach the
        database, and nothing restarts a worker: every run queued after a database restart would
        wait forever. Wait for the database instead (runs are durable; one that was running is
        failed by the stale-run check)."""
        pause = 0.5
        try:
            while worker.running:
                started = time.monotonic()
                try:
                    worker.run()
                    return
                except DATABASE_ERRORS as exc:
                    if time.monotonic() - started > 60:  # it worked for a while: a new outage starts short
                        pause = 0.5
                    logger.warning("The database is unavailable (%s); the worker tries again in %.1f s", describe(exc), pause)
                    connections.close_all()
                    time.sleep(pause)
                    pause = min(pause * 2, 5.0)
        finally:
            connections.close_all()

    def _schedule_forever(self):
        stop = threading.Event()
        while not stop.wait(settings.BACKFLOW_SCHEDULER_INTERVAL):
            try:
                scheduler.tick()
            except Exception as exc:
                if outage_message(exc):
                    logger.warning("Scheduler tick: %s", describe(exc))
                    connections.close_all()
                    continue
                logger.exception("Scheduler tick failed; trying again in %s s", settings.BACKFLOW_SCHEDULER_INTERVAL)

    def _beat_forever(self):
        """Record this worker's heartbeat every BACKFLOW_WORKER_HEARTBEAT_SECONDS (the admin's
        Worker heartbeats, `backflow_workers_alive`, /readyz?workers=1)."""
        stop = threading.Event()
        while True:
            try:
                services.worker_beat(**self.heartbeat)
            except Exception as exc:
                if not outage_message(exc):
                    logger.exception("Could not record this worker's heartbeat")
                else:
                    logger.warning("Could not record this worker's heartbeat: %s", describe(exc))
                connections.close_all()
            if stop.wait(settings.BACKFLOW_WORKER_HEARTBEAT_SECONDS):
                return

    @staticmethod
    def _serve_metrics(host, port):
        token = settings.BACKFLOW_METRICS_TOKEN
        if not token:
            raise CommandError("--metrics-port needs BACKFLOW_METRICS_TOKEN: the metrics are served to bearers of that token only.")
        metrics_app = make_wsgi_app()

        def app(environ, start_response):
            if environ.get("PATH_INFO") != "/metrics":
                start_response("404 Not Found", [("Content-Type", "text/plain")])
                return [b"Not found: the metrics are at /metrics.\n"]
            if not metrics_token_matches(environ.get("HTTP_AUTHORIZATION", ""), token):
                start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", 'Bearer realm="backflow-metrics"')])
                return [b"Send Authorization: Bearer <BACKFLOW_METRICS_TOKEN>.\n"]
            try:
                return metrics_app(environ, start_response)
            finally:
                close_old_connections()  # the run-queue collector read the database on this thread

        try:
            server = make_server(host, port, app, ThreadingWSGIServer, handler_class=_ScrapeHandler)
        except OSError as exc:
            raise CommandError(f"Cannot serve metrics on {host}:{port}: {exc.strerror or exc}.") from exc
        threading.Thread(target=server.serve_forever, name="backflow-metrics", daemon=True).start()
        logger.info("Serving this worker's metrics on http://%s:%s/metrics", host, port)
