"""Operators' admin changes of tenants, memberships and API keys are in the tenant's audit log,
named after the operator, like every other write."""

import pytest
from django.contrib.auth import get_user_model

from tenants.models import ApiKey, AuditEvent, Membership


@pytest.fixture
def operator_client(client):
    client.force_login(get_user_model().objects.create_superuser("root", "root@example.com", "pw"))
    return client


def _events(tenant):
    return [(e.principal, e.action, e.object_id, e.summary) for e in AuditEvent.objects.for_tenant(tenant).order_by("created_at", "id")]


def test_tenant_membership_and_key_changes_in_the_admin_are_audited(acme, operator_client):
    member = get_user_model().objects.create_user("new-member", password="pw")
    before = len(_events(acme.tenant))
    page = operator_client.get(f"/admin/tenants/tenant/{acme.tenant.pk}/change/")
    prefix = page.context["inline_admin_formsets"][0].formset.prefix
    response = operator_client.post(f"/admin/tenants/tenant/{acme.tenant.pk}/change/", {
        "slug": "acme", "name": "Acme Renamed", "is_active": "on",
        f"{prefix}-TOTAL_FORMS": "2", f"{prefix}-INITIAL_FORMS": "1", f"{prefix}-MIN_NUM_FORMS": "0", f"{prefix}-MAX_NUM_FORMS": "1000",
        f"{prefix}-0-id": Membership.objects.for_tenant(acme.tenant).get(user=acme.owner).pk, f"{prefix}-0-tenant": acme.tenant.pk,
        f"{prefix}-0-user": acme.owner.pk, f"{prefix}-0-role": "owner",
        f"{prefix}-1-tenant": acme.tenant.pk, f"{prefix}-1-user": member.pk, f"{prefix}-1-role": "member",
    })
    assert response.status_code == 302, response.context["inline_admin_formsets"][0].formset.non_form_errors()
    membership = Membership.objects.for_tenant(acme.tenant).get(user=member)
    operator_client.post(f"/admin/tenants/membership/{membership.pk}/delete/", {"post": "yes"})
    key = ApiKey.objects.for_tenant(acme.tenant).get()
    operator_client.post(f"/admin/tenants/apikey/{key.pk}/delete/", {"post": "yes"})
    assert not ApiKey.objects.for_tenant(acme.tenant).exists()

    assert _events(acme.tenant)[before:] == [
        ("system:admin:root", "tenant.update", "acme", {"name": "Acme Renamed"}),
        ("system:admin:root", "membership.set", "new-member", {"role": "member"}),
        ("system:admin:root", "membership.delete", "new-member", {"role": "member"}),
        ("system:admin:root", "api_key.delete", key.prefix, {"name": "full"}),
    ]
