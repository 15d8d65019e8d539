import logging
import threading
import time

from django.conf import settings
from django.db import connections
from django_tasks_db.management.commands.db_worker import Command as DbWorkerCommand

from backflow.outages import DATABASE_ERRORS, describe, outage_message
from workflows_app import scheduler

logger = logging.getLogger("backflow.workflows")


class Command(DbWorkerCommand):
    help = (
        "Execute queued workflow runs (django-tasks-db's db_worker, same options) and, beside it, "
        "fire due schedule triggers and fail runs whose worker died. Run as many as you like."
    )

    def handle(self, *args, **options):
        if not options.get("batch"):
            threading.Thread(target=self._schedule_forever, name="backflow-scheduler", daemon=True).start()
        pause = 0.5
        while True:
            started = time.monotonic()
            try:
                return super().handle(*args, **options)
            except DATABASE_ERRORS as exc:
                if time.monotonic() - started > 60:  # it worked for a while: a new outage starts short
                    pause = 0.5
                # django-tasks-db's loop exits on the first poll that cannot reach the database,
                # and nothing restarts a worker: every run queued after a database restart would
                # wait forever. Wait for the database instead (runs are durable; one that was
                # running is failed by the stale-run check).
                logger.warning("The database is unavailable (%s); the worker tries again in %.1f s", describe(exc), pause)
                connections.close_all()
                time.sleep(pause)
                pause = min(pause * 2, 5.0)

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
