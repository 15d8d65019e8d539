import logging
import os
import signal
import threading
import time

from django.conf import settings
from django.core.management.base import CommandError
from django.db import connections
from django.utils.autoreload import DJANGO_AUTORELOAD_ENV, run_with_reloader
from django_tasks_db.management.commands.db_worker import Command as DbWorkerCommand
from django_tasks_db.management.commands.db_worker import Worker

from backflow.outages import DATABASE_ERRORS, describe, outage_message
from workflows_app import scheduler

logger = logging.getLogger("backflow.workflows")


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

    def handle(self, *, verbosity, queue_name, interval, batch, backend_name, startup_delay, reload, max_tasks,
               worker_id, exclude_queues, concurrency, **options):
        self.configure_logging(verbosity)
        if concurrency < 1:
            raise CommandError("--concurrency must be at least 1.")
        queue_names = queue_name.split(",")
        excluded = exclude_queues.split(",") if exclude_queues else []
        if excluded and "*" not in queue_names:
            raise CommandError("--exclude-queues can only be used with --queue-name=*")
        self.workers = [
            Worker(queue_names=queue_names, interval=interval, batch=batch, backend_name=backend_name,
                   startup_delay=startup_delay, max_tasks=max_tasks, excluded_queue_names=excluded,
                   worker_id=f"{worker_id[:58]}-{index}" if concurrency > 1 else worker_id)
            for index in range(concurrency)
        ]
        if not batch:
            threading.Thread(target=self._schedule_forever, name="backflow-scheduler", daemon=True).start()
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
