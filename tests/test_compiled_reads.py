"""backflow.compiled.Compiled: the rows the ORM would read, from SQL compiled once (LoopReads: on the event loop's thread)."""

import sqlite3

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backflow.compiled import Compiled, LoopReads
from integrations_app.models import Integration
from integrations_app.stores import DatabaseStore
from tenants.models import Tenant
from tenants.scoping import TenantScopeError
from tenants.selectors import tenant_by_id, tenant_get

pytestmark = pytest.mark.django_db


def field_values(obj):
    return {field.attname: getattr(obj, field.attname) for field in type(obj)._meta.concrete_fields}


def integration(tenant, name):
    return Integration.objects.create(tenant=tenant, name=name, base_url=f"https://{name}.example.com",
                                      auth={"type": "none"}, endpoints=[{"name": "list", "method": "get", "path": "/items"}])


def test_the_row_is_the_one_the_orm_reads_with_its_python_types():
    Tenant.objects.create(slug="other", name="Other")
    made = Tenant.objects.create(slug="acme", name="Acme", is_active=False)
    expected = Tenant.objects.get(slug="acme")

    for read in (tenant_get(slug="acme"), tenant_by_id(made.pk)):
        assert field_values(read) == field_values(expected)
        assert read.is_active is False  # a bool, not SQLite's 0
        assert read.created_at == made.created_at and read.created_at.tzinfo is not None
        assert not read._state.adding and read._state.db == "default"


def test_a_missing_row_is_none_and_values_are_parameters():
    Tenant.objects.create(slug="acme", name="Acme")
    assert tenant_get(slug="nobody") is None
    assert tenant_get(slug="x' OR '1'='1") is None
    assert tenant_by_id(10**12) is None


def test_a_tenants_rows_in_the_orms_order_and_never_another_tenants(acme, globex):
    for name in ("zeta", "alpha", "mid"):
        integration(acme.tenant, name)
    integration(globex.tenant, "alpha")
    store = DatabaseStore(tenant=acme.tenant, actor=None)
    expected = [obj.to_document() for obj in Integration.objects.for_tenant(acme.tenant)]

    assert store.list_integrations() == expected and [doc["name"] for doc in expected] == ["alpha", "mid", "zeta"]
    assert store.get_integration("alpha") == expected[0]
    assert DatabaseStore(tenant=globex.tenant, actor=None).get_integration("mid") is None
    assert [doc["name"] for doc in DatabaseStore(tenant=globex.tenant, actor=None).list_integrations()] == ["alpha"]


def test_each_read_is_one_query_and_compiled_once(acme):
    integration(acme.tenant, "alpha")
    read = Compiled(Integration, lambda tenant, name: Integration.objects.for_tenant(tenant).filter(name=name))
    read.first(acme.tenant, "alpha")
    compiled = dict(read._statements)
    assert all(compiled.values())
    with CaptureQueriesContext(connection) as queries:
        assert read.first(acme.tenant, "alpha").name == "alpha"
        assert read.first(acme.tenant, "beta") is None
        assert [obj.name for obj in read.all(acme.tenant, "alpha")] == ["alpha"]
    assert len(queries) == 3
    assert read._statements == compiled


def test_values_it_cannot_bind_as_they_are_go_through_the_orm(acme):
    Tenant.objects.create(slug="42", name="Digits")
    assert tenant_get(slug=42).slug == "42"  # the ORM's str(): an int is not bound as it is
    read = Compiled(Integration, lambda tenant, name: Integration.objects.for_tenant(tenant).filter(name=name))
    assert read.first(acme.tenant, None) is None  # IS NULL: another shape, never compiled
    assert read._statements == {}


def test_a_shape_that_does_not_take_the_values_in_order_is_read_through_the_orm(acme):
    integration(acme.tenant, "alpha")
    swapped = Compiled(Integration, lambda name, tenant: Integration.objects.for_tenant(tenant).filter(name=name))
    assert swapped.first("alpha", acme.tenant).name == "alpha"
    assert list(swapped._statements.values()) == [None]
    partial = Compiled(Integration, lambda tenant: Integration.objects.for_tenant(tenant).only("name"))
    assert [obj.name for obj in partial.all(acme.tenant)] == ["alpha"]
    assert list(partial._statements.values()) == [None]


def test_the_tenant_guard_runs_when_it_compiles():
    unscoped = Compiled(Integration, lambda name: Integration.objects.filter(name=name))
    with pytest.raises(TenantScopeError):
        unscoped.first("alpha")


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "sqlite", reason="LoopReads reads SQLite only")
def test_a_loop_read_is_the_row_the_orm_reads_and_sees_each_commit():
    """LoopReads (the tenant routes' admission on the event loop): the ORM's row on a connection
    of the thread's own, read-only, every read seeing the last commit; Unavailable for what the ORM
    has not compiled (nor for those types)."""
    made = Tenant.objects.create(slug="acme", name="Acme", is_active=False)
    by_slug, reads = Compiled(Tenant, lambda slug: Tenant.objects.filter(slug=slug)), LoopReads()
    with pytest.raises(LoopReads.Unavailable):
        reads.first(by_slug, "acme")  # not compiled yet
    assert by_slug.first("acme") is not None

    read = reads.first(by_slug, "acme")
    assert field_values(read) == field_values(Tenant.objects.get(slug="acme"))
    assert read.is_active is False and read.created_at.tzinfo is not None
    Tenant.objects.filter(pk=made.pk).update(name="Renamed")
    assert reads.first(by_slug, "acme").name == "Renamed"
    assert reads.first(by_slug, "x' OR '1'='1") is None
    with pytest.raises(LoopReads.Unavailable):
        reads.first(by_slug, 42)  # compiled for a str
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        reads._connection()[0].execute("DELETE FROM tenants_tenant")
    assert Tenant.objects.filter(pk=made.pk).exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(connection.vendor != "sqlite", reason="LoopReads reads SQLite only")
def test_a_loop_read_gives_the_same_row_again_only_while_nothing_was_committed():
    """The row read last stands while no connection committed (PRAGMA data_version); any commit,
    of that row or of another table, reads it again."""
    made = Tenant.objects.create(slug="acme", name="Acme")
    by_slug, reads = Compiled(Tenant, lambda slug: Tenant.objects.filter(slug=slug)), LoopReads()
    by_slug.first("acme")
    first = reads.first(by_slug, "acme")
    assert reads.first(by_slug, "acme") is first
    Tenant.objects.filter(pk=made.pk).update(auth_version=first.auth_version + 1)  # a revocation bumps it
    again = reads.first(by_slug, "acme")
    assert again is not first and again.auth_version == first.auth_version + 1
    Tenant.objects.create(slug="other", name="Other")
    assert reads.first(by_slug, "acme") is not again
