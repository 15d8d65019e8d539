"""Reads for tenants, keys and the audit log."""

from tenants.models import ApiKey, AuditEvent, Membership, Tenant


def tenant_get(*, slug):
    return Tenant.objects.filter(slug=slug).first()


def membership_get(*, tenant, user):
    return Membership.objects.for_tenant(tenant).filter(user=user).first()


def memberships_of(*, user):
    return Membership.all_tenants.filter(user=user, tenant__is_active=True).select_related("tenant")


def api_key_list(*, tenant):
    return ApiKey.objects.for_tenant(tenant)


def audit_list(*, tenant):
    return AuditEvent.objects.for_tenant(tenant)
