"""backflow.compiled.CompiledInsert: the rows bulk_create would insert for instances of the same
values, without the instances."""

import uuid

import pytest
from django.db import IntegrityError, connection, transaction
from django.test.utils import CaptureQueriesContext

from backflow.compiled import CompiledInsert, _fresh, _remembering
from backflow.logs import request_id_bound
from integrations_app.models import RouteInvocation

pytestmark = pytest.mark.django_db
ROWS = CompiledInsert(RouteInvocation)


def stored(invocation):
    return {field.attname: getattr(invocation, field.attname) for field in RouteInvocation._meta.concrete_fields
            if field.attname not in ("id", "created_at")}


def test_rows_read_back_as_bulk_create_writes_them(acme):
    route_id = uuid.uuid4()
    given = {"tenant_id": acme.tenant.pk, "route_id": route_id, "method": "post", "path": "/items/ä", "status": 502,
             "duration_ms": 12.5, "error": "the upstream answered 502.", "is_test": True}
    with request_id_bound("req-inserted"):
        row = ROWS.values(**given)
    with request_id_bound("req-bulk"):
        twin = RouteInvocation(**given)
    ROWS.insert([row])
    RouteInvocation.all_tenants.bulk_create([twin])

    inserted, created = RouteInvocation.objects.for_tenant(acme.tenant).order_by("id")
    assert stored(inserted) == {**stored(created), "request_id": "req-inserted"}
    assert inserted.request_id == "req-inserted" and created.request_id == "req-bulk"  # the id where the row was made
    assert inserted.route_id == route_id and inserted.is_test is True and inserted.duration_ms == 12.5
    assert inserted.created_at.tzinfo is not None and abs((created.created_at - inserted.created_at).total_seconds()) < 60


def test_defaults_are_the_models(acme):
    ROWS.insert([ROWS.values(tenant_id=acme.tenant.pk, method="get", path="/", status=200, duration_ms=1.0)])
    row = RouteInvocation.objects.for_tenant(acme.tenant).get()
    assert (row.route_id, row.error, row.is_test, row.request_id) == (None, "", False, "")  # outside a request: no id


def test_more_rows_than_one_statement_takes_go_in_several_in_one_transaction(acme):
    rows = [ROWS.values(tenant_id=acme.tenant.pk, method="get", path=f"/items/{n}", status=200, duration_ms=n)
            for n in range(250)]  # 2,500 values: more than SQLite's 999 parameters a statement
    with CaptureQueriesContext(connection) as queries:
        ROWS.insert(rows)
    inserts = [q for q in queries.captured_queries if q["sql"].lstrip().upper().startswith("INSERT")]
    assert 1 <= len(inserts) <= 3 and (connection.vendor != "sqlite" or len(inserts) == 3)
    assert sorted(RouteInvocation.objects.for_tenant(acme.tenant).values_list("duration_ms", flat=True)) == list(range(250))


@pytest.mark.django_db(transaction=True)  # its own transaction, not the test's
@pytest.mark.parametrize("count", [3, 250])  # one statement; several (more than SQLite's 999 parameters)
def test_a_refused_batch_writes_none_of_its_rows(acme, count):
    rows = [ROWS.values(tenant_id=acme.tenant.pk, method="get", path="/", status=200, duration_ms=1.0) for _ in range(count - 1)]
    rows.append(ROWS.values(tenant_id=acme.tenant.pk, method="get", path="/", status=200, duration_ms=None))  # NOT NULL, in the last statement
    with pytest.raises(IntegrityError):
        ROWS.insert(rows)
    assert not RouteInvocation.all_tenants.exists()


@pytest.mark.django_db(transaction=True)
def test_rows_inserted_inside_a_write_roll_back_with_it(acme):
    with pytest.raises(RuntimeError), transaction.atomic():
        ROWS.insert([ROWS.values(tenant_id=acme.tenant.pk, method="get", path="/", status=200, duration_ms=1.0)])
        raise RuntimeError("the write failed")
    assert not RouteInvocation.all_tenants.exists()


def test_no_rows_run_no_statement(acme):
    with CaptureQueriesContext(connection) as queries:
        ROWS.insert([])
    assert queries.captured_queries == []


def test_values_are_parameters(acme):
    hostile = "'); DROP TABLE integrations_routeinvocation; --"
    ROWS.insert([ROWS.values(tenant_id=acme.tenant.pk, method="get", path=hostile, status=200, duration_ms=1.0)])
    assert RouteInvocation.objects.for_tenant(acme.tenant).get().path == hostile


def test_a_value_prepared_before_is_taken_from_memory(acme, monkeypatch):
    rows, route_id, prepared = CompiledInsert(RouteInvocation), uuid.uuid4(), []
    route_field = RouteInvocation._meta.get_field("route_id")
    original = type(route_field).get_db_prep_save
    monkeypatch.setattr(type(route_field), "get_db_prep_save",
                        lambda field, value, connection: prepared.append(value) or original(field, value, connection))
    for _ in range(3):
        rows.insert([rows.values(tenant_id=acme.tenant.pk, route_id=route_id, method="get", path="/", status=200, duration_ms=n)
                     for n in range(5)])
    assert prepared == [route_id]  # 15 rows, one preparation
    assert set(RouteInvocation.objects.for_tenant(acme.tenant).values_list("route_id", flat=True)) == {route_id}


def test_values_each_row_makes_anew_are_prepared_without_memory():
    """The time a row was made and a callable's default (the request's id) differ in every row: a
    memory of them is never asked again and its misses cost more than the preparation."""
    fresh = {field.attname for field in ROWS.fields if _fresh(field)}
    assert fresh == {"created_at", "request_id"}


class Echo:
    def __init__(self):
        self.prepared = []

    def get_db_prep_save(self, value, connection):
        self.prepared.append(value)
        return f"{type(value).__name__}:{value!r}"


def test_equal_values_of_other_types_are_prepared_apart():
    field = Echo()
    prepare = _remembering(field)
    assert [prepare(value, connection) for value in (1, True, 1.0, 1, True)] == ["int:1", "bool:True", "float:1.0", "int:1", "bool:True"]
    assert field.prepared == [1, True, 1.0]


def test_unhashable_values_are_prepared_each_time_and_the_memory_is_bounded():
    field = Echo()
    prepare = _remembering(field, remembered=2)
    assert prepare({"a": 1}, connection) == prepare({"a": 1}, connection) == "dict:{'a': 1}"
    for value in ("a", "b", "c", "a"):  # "c" finds the memory full: it starts over, and "a" is prepared again
        prepare(value, connection)
    assert field.prepared == [{"a": 1}, {"a": 1}, "a", "b", "c", "a"]


def test_a_name_that_is_no_field_is_refused():
    with pytest.raises(TypeError, match="no insertable field tenant"):
        ROWS.values(tenant=object(), method="get")
