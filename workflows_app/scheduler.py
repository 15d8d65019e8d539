"""Due schedule triggers and stale runs, checked by every worker; a schedule fires once even with
many workers, because each claims it by moving `next_run_at` with a compare-and-swap.

Only active tenants' schedules fire (a deactivated tenant's wait, unclaimed, until it is active
again; tenants.services.tenant_set_active moves them past the time it was inactive). A trigger
fires at most once a minute whatever its cron says: expressions finer than a minute (six-field
cron, stored before documents were limited to five fields) are held to the minute.
"""

import logging
from datetime import timedelta

from django.db import close_old_connections
from django.utils import timezone

from backflow.errors import ServiceError
from tenants.principals import Principal
from workflows_app import engine, services
from workflows_app.models import ScheduledTrigger

logger = logging.getLogger("backflow.workflows")
MIN_INTERVAL = timedelta(minutes=1)
UNUSABLE_RETRY = timedelta(hours=1)  # a cron that croniter cannot advance is looked at again this much later


def next_run(cron, now):
    """When a trigger that fires at `now` fires next: its cron's next time, but never within the
    calendar minute it fired in (whatever croniter says of six- or seven-field expressions)."""
    floor = now.replace(second=0, microsecond=0) + MIN_INTERVAL
    return max(services.next_fire(cron, now), floor)


def tick(now=None):
    """Queue every due schedule of an active tenant and fail stale runs; returns the number of runs queued."""
    now = now or timezone.now()
    queued = 0
    due = ScheduledTrigger.all_tenants.filter(next_run_at__lte=now, tenant__is_active=True).select_related("workflow", "tenant")
    for trigger in due:
        usable = True
        try:
            following = next_run(trigger.cron, now)
        except Exception as exc:  # a stored cron croniter cannot advance must not stop every other tenant's schedules
            logger.warning("Schedule of %s/%s has an unusable cron %r (%s); looked at again in an hour.",
                           trigger.tenant.slug, trigger.workflow.slug, trigger.cron, exc)
            usable, following = False, now + UNUSABLE_RETRY
        claimed = ScheduledTrigger.all_tenants.filter(pk=trigger.pk, next_run_at=trigger.next_run_at).update(next_run_at=following)
        if not claimed or not usable:
            continue  # another worker took it (or it cannot fire)
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
