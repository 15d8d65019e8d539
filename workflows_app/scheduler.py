"""Due schedule triggers and stale runs, checked by every worker; a schedule fires once even with
many workers, because each claims it by moving `next_run_at` with a compare-and-swap."""

import logging

from django.db import close_old_connections
from django.utils import timezone

from backflow.errors import ServiceError
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
        try:
            services.run_create(tenant=trigger.tenant, actor=Principal.system(trigger.tenant, "schedule"),
                                workflow=trigger.workflow, input=trigger.input, trigger="schedule", entry=trigger.entry)
        except ServiceError as exc:  # e.g. the tenant's runs-per-minute bound: this firing is skipped, the next one comes
            logger.warning("Schedule of %s/%s not queued: %s", trigger.tenant.slug, trigger.workflow.slug, exc)
            continue
        queued += 1
    stale = engine.fail_stale_runs()
    if stale:
        logger.warning("Failed %d run(s) whose worker stopped mid-run.", stale)
    close_old_connections()
    return queued
