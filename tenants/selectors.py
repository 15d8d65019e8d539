"""Reads for tenants, keys and the audit log."""

from backflow.compiled import RowBy
from tenants.models import ApiKey, AuditEvent, Membership, Tenant

_tenant_by_slug = RowBy(Tenant, "slug")
tenant_by_id = RowBy(Tenant, "id")  # each key check of REST and MCP reads the row (tenants.services.api_key_verify)


def tenant_get(*, slug):
    """The tenant row, read on every request of the routes and the tenant-scoped doors."""
    return _tenant_by_slug(slug)


def membership_get(*, tenant, user):
    return Membership.objects.for_tenant(tenant).filter(user=user).first()


def memberships_of(*, user):
    return Membership.all_tenants.filter(user=user, tenant__is_active=True).select_related("tenant")


def api_key_list(*, tenant):
    return ApiKey.objects.for_tenant(tenant)


def audit_list(*, tenant):
    return AuditEvent.objects.for_tenant(tenant)
