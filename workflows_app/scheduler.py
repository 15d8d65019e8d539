"""Due schedule triggers and stale runs, checked by every worker; a schedule fires once even with
many workers, because each claims it by moving `next_run_at` with a compare-and-swap."""

import logging

from django.db import close_old_connections
from django.utils import timezone

from tenants.principals import Principal
from workflows_app import engine, services
from workflows_app.models import ScheduledTrigger

logger = logging.getLogger("backflow.workflows")


def tick(now=None):
    """Queue every due schedule and fail stale runs; returns the number of runs queued."""
    now = now or timezone.now()
    queued = 0
    for trigger in ScheduledTrigger.all_tenants.filter(next_run_at__lte=now).select_related("workflow", "tenant"):
        claimed = ScheduledTrigger.all_tenants.filter(pk=trigger.pk, next_run_at=trigger.next_run_at).update(
            next_run_at=services.next_fire(trigger.cron, now))
        if not claimed:
            continue  # another worker took it
        services.run_create(tenant=trigger.tenant, actor=Principal.system(trigger.tenant, "schedule"),
                            workflow=trigger.workflow, input=trigger.input, trigger="schedule", entry=trigger.entry)
        queued += 1
    stale = engine.fail_stale_runs()
    if stale:
        logger.warning("Failed %d run(s) whose worker stopped mid-run.", stale)
    close_old_connections()
    return queued
