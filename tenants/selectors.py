"""Reads for tenants, keys and the audit log."""

from backflow.compiled import Compiled
from tenants.models import ApiKey, AuditEvent, Membership, Tenant

_tenant_by_slug = Compiled(Tenant, lambda slug: Tenant.objects.filter(slug=slug))
_tenant_by_id = Compiled(Tenant, lambda pk: Tenant.objects.filter(pk=pk))


def tenant_get(*, slug):
    """The tenant row, read on every request of the routes and the tenant-scoped doors."""
    return _tenant_by_slug.first(slug)


def tenant_get_here(*, slug, reads):
    """tenant_get read on the event loop's own thread (backflow.compiled.LoopReads), or
    LoopReads.Unavailable: the tenant routes' fast admission on SQLite."""
    return reads.first(_tenant_by_slug, slug)


async def tenant_get_on_loop(*, slug, reads):
    """tenant_get read on the event loop's own PostgreSQL connection
    (backflow.loop_postgres.LoopPostgres), or LoopPostgres.Unavailable: the tenant routes'
    admission on PostgreSQL."""
    return await reads.first(_tenant_by_slug, slug)


def tenant_by_id_here(pk, *, reads):
    """tenant_by_id read on the event loop's own thread (backflow.compiled.LoopReads), or
    LoopReads.Unavailable: the MCP doors' credential check on SQLite."""
    return reads.first(_tenant_by_id, pk)


async def tenant_by_id_on_loop(pk, *, reads):
    """tenant_by_id read on the event loop's own PostgreSQL connection
    (backflow.loop_postgres.LoopPostgres), or LoopPostgres.Unavailable: the MCP doors' credential
    check on PostgreSQL."""
    return await reads.first(_tenant_by_id, pk)


def tenant_by_id(pk):
    """The tenant row of a verified key, read on each key check of REST and MCP (tenants.services.api_key_verify)."""
    return _tenant_by_id.first(pk)


def membership_get(*, tenant, user):
    return Membership.objects.for_tenant(tenant).filter(user=user).first()


def memberships_of(*, user):
    return Membership.all_tenants.filter(user=user, tenant__is_active=True).select_related("tenant")


def api_key_list(*, tenant):
    return ApiKey.objects.for_tenant(tenant)


def audit_list(*, tenant):
    return AuditEvent.objects.for_tenant(tenant)
