import logging
import threading

from django.conf import settings
from django_tasks_db.management.commands.db_worker import Command as DbWorkerCommand

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
        return super().handle(*args, **options)

    def _schedule_forever(self):
        stop = threading.Event()
        while not stop.wait(settings.BACKFLOW_SCHEDULER_INTERVAL):
            try:
                scheduler.tick()
            except Exception:
                logger.exception("Scheduler tick failed; trying again in %s s", settings.BACKFLOW_SCHEDULER_INTERVAL)
