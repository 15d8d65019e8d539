"""backflow.compiled.RowBy: the row the ORM would read, from SQL compiled once."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from backflow.compiled import RowBy
from tenants.models import Tenant
from tenants.selectors import tenant_by_id, tenant_get

pytestmark = pytest.mark.django_db


def field_values(tenant):
    return {field.attname: getattr(tenant, field.attname) for field in Tenant._meta.concrete_fields}


def test_the_row_is_the_one_the_orm_reads_with_its_python_types():
    Tenant.objects.create(slug="other", name="Other")
    made = Tenant.objects.create(slug="acme", name="Acme", is_active=False)
    expected = Tenant.objects.get(slug="acme")

    for read in (tenant_get(slug="acme"), tenant_by_id(made.pk)):
        assert field_values(read) == field_values(expected)
        assert read.is_active is False  # a bool, not SQLite's 0
        assert read.created_at == made.created_at and read.created_at.tzinfo is not None
        assert not read._state.adding and read._state.db == "default"


def test_a_missing_row_is_none_and_the_value_is_a_parameter():
    Tenant.objects.create(slug="acme", name="Acme")
    assert tenant_get(slug="nobody") is None
    assert tenant_get(slug="x' OR '1'='1") is None
    assert tenant_by_id(10**12) is None


def test_each_read_is_one_query_and_compiled_once():
    Tenant.objects.create(slug="acme", name="Acme")
    read = RowBy(Tenant, "slug")
    read("acme")
    compiled = dict(read._statements)
    with CaptureQueriesContext(connection) as queries:
        assert read("acme").slug == "acme"
        assert read("other") is None
    assert len(queries) == 2
    assert read._statements == compiled


def test_a_column_that_is_not_unique_is_refused():
    with pytest.raises(ValueError, match="not unique"):
        RowBy(Tenant, "name")
