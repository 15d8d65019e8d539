"""Shared fixtures: tenants, principals and API clients that act as them (`as_tenant`)."""

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from tenants import services as tenant_services
from tenants.principals import Principal


class TenantContext:
    """One tenant with a full-scope key, an owner user and helpers to call the API as them."""

    def __init__(self, slug):
        self.tenant = tenant_services.tenant_create(slug=slug, name=slug.title())
        self.actor = Principal.system(self.tenant, "tests")
        _, self.key = tenant_services.api_key_create(tenant=self.tenant, actor=self.actor, name="full")
        self.owner = get_user_model().objects.create_user(username=f"{slug}-owner", password="pw-" + slug * 2)
        tenant_services.membership_set(tenant=self.tenant, user=self.owner, role="owner")

    def client(self, key=None):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key or self.key}")
        return client

    def key_with(self, *scopes, name="scoped"):
        _, key = tenant_services.api_key_create(tenant=self.tenant, actor=self.actor, name=name, scopes=list(scopes))
        return key

    def jwt(self, user=None, password=None):
        user = user or self.owner
        response = APIClient().post(
            "/api/auth/token",
            {"username": user.username, "password": password or "pw-" + self.tenant.slug * 2, "tenant": self.tenant.slug},
            format="json",
        )
        assert response.status_code == 200, response.content
        return response.json()["access"]


@pytest.fixture
def as_tenant(db):
    made = {}

    def make(slug):
        if slug not in made:
            made[slug] = TenantContext(slug)
        return made[slug]

    return make


@pytest.fixture
def acme(as_tenant):
    return as_tenant("acme")


@pytest.fixture
def globex(as_tenant):
    return as_tenant("globex")
