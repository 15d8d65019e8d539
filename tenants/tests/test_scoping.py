"""The fail-closed tenant manager (tenants/scoping.py), on every tenant-owned model.

`Model.objects` must refuse every read and write that has not been given a tenant with
`.for_tenant(tenant)`: a forgotten tenant is a TenantScopeError, never a read of every tenant's
rows. `Model.all_tenants` is the explicit operator door, `.none()` reads nothing and is allowed,
and `for_tenant(globex)` never returns or changes a row of acme's.

The list of tenant-owned models is pinned: a new model fails the first test until it is added
here (with a factory), so it is covered by the others.
"""

import hashlib
import secrets
import uuid
from datetime import timedelta

import pytest
from asgiref.sync import async_to_sync
from django.apps import apps
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Count, Exists, OuterRef
from django.utils import timezone

from tenants import services as tenant_services
from tenants.models import Tenant
from tenants.scoping import TenantOwned, TenantScopedManager, TenantScopeError

TENANT_OWNED = {
    "entities_app.App", "entities_app.Collection", "entities_app.Entity",
    "integrations_app.Integration", "integrations_app.Route", "integrations_app.RouteInvocation", "integrations_app.Secret",
    "tenants.ApiKey", "tenants.AuditEvent", "tenants.Membership",
    "workflows_app.McpServer", "workflows_app.ScheduledTrigger", "workflows_app.StepRun", "workflows_app.Workflow",
    "workflows_app.WorkflowRun",
}


def model(label):
    return apps.get_model(label)


# -- one row of each model for a tenant (marker: unique per call) ----------------------------------

def _collection(tenant, marker):
    return model("entities_app.Collection").all_tenants.create(tenant=tenant, name=f"c-{marker}")


def _workflow(tenant, marker):
    return model("workflows_app.Workflow").all_tenants.create(tenant=tenant, slug=f"w-{marker}", name=marker, definition={})


def _run(tenant, marker):
    return model("workflows_app.WorkflowRun").all_tenants.create(tenant=tenant, workflow=_workflow(tenant, marker), entry="main")


FACTORIES = {
    "entities_app.App": lambda t, m: model("entities_app.App").all_tenants.create(tenant=t, slug=f"a-{m}", name=m, pages=[]),
    "entities_app.Collection": _collection,
    "entities_app.Entity": lambda t, m: model("entities_app.Entity").all_tenants.create(
        tenant=t, collection=_collection(t, m), data={"marker": m}),
    "integrations_app.Integration": lambda t, m: model("integrations_app.Integration").all_tenants.create(
        tenant=t, name=f"i-{m}", base_url="https://example.com"),
    "integrations_app.Route": lambda t, m: model("integrations_app.Route").all_tenants.create(tenant=t, path=f"/{m}", method="get"),
    "integrations_app.RouteInvocation": lambda t, m: model("integrations_app.RouteInvocation").all_tenants.create(
        tenant=t, method="get", path=f"/{m}", status=200, duration_ms=1.0),
    "integrations_app.Secret": lambda t, m: model("integrations_app.Secret").all_tenants.create(tenant=t, name=f"s-{m}", ciphertext="x"),
    "tenants.ApiKey": lambda t, m: model("tenants.ApiKey").all_tenants.create(
        tenant=t, name=m, prefix=secrets.token_hex(4), key_hash=hashlib.sha256(m.encode()).hexdigest()),
    "tenants.AuditEvent": lambda t, m: model("tenants.AuditEvent").all_tenants.create(
        tenant=t, principal="system:test", action=m, object_type="test"),
    "tenants.Membership": lambda t, m: model("tenants.Membership").all_tenants.create(
        tenant=t, user=get_user_model().objects.create_user(username=f"u-{m}")),
    "workflows_app.McpServer": lambda t, m: model("workflows_app.McpServer").all_tenants.create(
        tenant=t, name=f"m-{m}", transport="http", url="https://example.com/mcp"),
    "workflows_app.ScheduledTrigger": lambda t, m: model("workflows_app.ScheduledTrigger").all_tenants.create(
        tenant=t, workflow=_workflow(t, m), cron="* * * * *", entry="main", next_run_at=timezone.now() + timedelta(days=1)),
    "workflows_app.StepRun": lambda t, m: model("workflows_app.StepRun").all_tenants.create(
        tenant=t, run=_run(t, m), position=0, step_id="s", action="a"),
    "workflows_app.Workflow": _workflow,
    "workflows_app.WorkflowRun": _run,
}


def tenant_owned_models():
    return sorted((m for m in apps.get_models() if issubclass(m, TenantOwned)), key=lambda m: m._meta.label)


MODELS = [pytest.param(label, id=label) for label in sorted(TENANT_OWNED)]


@pytest.fixture
def tenants(db):
    return (tenant_services.tenant_create(slug="acme", name="Acme"), tenant_services.tenant_create(slug="globex", name="Globex"))


def snapshot(Model):
    """Every row of every tenant, as stored."""
    return sorted(map(repr, Model.all_tenants.order_by("pk").values()))


def test_the_tenant_owned_models_are_the_pinned_list():
    found = {m._meta.label for m in tenant_owned_models()}
    assert found == TENANT_OWNED, (
        f"new: {sorted(found - TENANT_OWNED)}, gone: {sorted(TENANT_OWNED - found)}; add a new model to "
        f"TENANT_OWNED and FACTORIES so the scoping tests cover it")
    assert set(FACTORIES) == TENANT_OWNED
    for Model in tenant_owned_models():
        assert isinstance(Model.objects, TenantScopedManager), Model
        assert Model._default_manager is Model.all_tenants, Model  # Django internals are operator-wide
        assert not isinstance(Model.all_tenants, TenantScopedManager), Model


# -- every way to read or write without a tenant is refused -----------------------------------------

async def _consume_aiterator(Model):
    return [row async for row in Model.objects.aiterator()]


def _select_for_update(Model, row):
    with transaction.atomic():
        return list(Model.objects.select_for_update().filter(pk=row.pk))


UNSCOPED = {
    "list": lambda M, row: list(M.objects.all()),
    "iterate a filter": lambda M, row: next(iter(M.objects.filter(pk=row.pk))),
    "len": lambda M, row: len(M.objects.all()),
    "bool": lambda M, row: bool(M.objects.all()),
    "index": lambda M, row: M.objects.all()[0],
    "slice": lambda M, row: list(M.objects.all()[:1]),
    "get": lambda M, row: M.objects.get(pk=row.pk),
    "first": lambda M, row: M.objects.first(),
    "last": lambda M, row: M.objects.last(),
    "earliest": lambda M, row: M.objects.earliest("pk"),
    "latest": lambda M, row: M.objects.latest("pk"),
    "count": lambda M, row: M.objects.count(),
    "exists": lambda M, row: M.objects.filter(pk=row.pk).exists(),
    "aggregate": lambda M, row: M.objects.aggregate(n=Count("pk")),
    "annotate": lambda M, row: list(M.objects.annotate(n=Count("pk"))),
    "contains": lambda M, row: M.objects.contains(row),
    "explain": lambda M, row: M.objects.explain(),
    "in_bulk": lambda M, row: M.objects.in_bulk(),
    "in_bulk ids": lambda M, row: M.objects.in_bulk([row.pk]),
    "values": lambda M, row: list(M.objects.values()),
    "values_list": lambda M, row: list(M.objects.values_list("pk", flat=True)),
    "values get": lambda M, row: M.objects.values("pk").get(pk=row.pk),
    "iterator (refused at the call)": lambda M, row: M.objects.iterator(),
    "aiterator": lambda M, row: async_to_sync(_consume_aiterator)(M),
    "aiterator (refused at the call)": lambda M, row: M.objects.aiterator(),
    "acount": lambda M, row: async_to_sync(M.objects.all().acount)(),
    "aget": lambda M, row: async_to_sync(M.objects.all().aget)(pk=row.pk),
    "select_for_update": _select_for_update,
    "get_or_create": lambda M, row: M.objects.get_or_create(pk=row.pk),
    "update_or_create": lambda M, row: M.objects.update_or_create(pk=row.pk, defaults={"tenant": row.tenant}),
    "update": lambda M, row: M.objects.filter(pk=row.pk).update(tenant=row.tenant),
    "_update": lambda M, row: M.objects.filter(pk=row.pk)._update([(M._meta.get_field("tenant"), None, row.tenant)]),
    "bulk_update": lambda M, row: M.objects.bulk_update([row], ["tenant"]),
    "delete": lambda M, row: M.objects.filter(pk=row.pk).delete(),
    "_raw_delete": lambda M, row: M.objects.filter(pk=row.pk)._raw_delete("default"),
    "raw": lambda M, row: list(M.objects.raw(f"SELECT * FROM {M._meta.db_table}")),
    "raw after for_tenant": lambda M, row: list(M.objects.for_tenant(row.tenant).raw(f"SELECT * FROM {M._meta.db_table}")),
    "bulk_create update_conflicts": lambda M, row: M.objects.bulk_create(
        [row], update_conflicts=True, unique_fields=["pk"], update_fields=["tenant"]),
    "subquery pk__in": lambda M, row: list(M.all_tenants.filter(pk__in=M.objects.values("pk"))),
    "Exists": lambda M, row: list(M.all_tenants.filter(Exists(M.objects.filter(pk=OuterRef("pk"))))),
    "union with unscoped": lambda M, row: list(M.objects.for_tenant(row.tenant).union(M.objects.all())),
    "unscoped union with scoped": lambda M, row: list(M.objects.all().union(M.objects.for_tenant(row.tenant))),
    "difference with unscoped": lambda M, row: list(M.objects.for_tenant(row.tenant).difference(M.objects.filter(pk=row.pk))),
    "scoped | unscoped": lambda M, row: list(M.objects.for_tenant(row.tenant) | M.objects.all()),
    "unscoped | scoped": lambda M, row: list(M.objects.all() | M.objects.for_tenant(row.tenant)),
    "scoped ^ unscoped": lambda M, row: list(M.objects.for_tenant(row.tenant) ^ M.objects.all()),
}


@pytest.mark.parametrize("label", MODELS)
def test_every_read_and_write_without_a_tenant_is_refused(tenants, label, subtests):
    Model = model(label)
    acme, globex = tenants
    row = FACTORIES[label](acme, "a1")
    FACTORIES[label](globex, "g1")
    before = snapshot(Model)
    for name, operation in UNSCOPED.items():
        with subtests.test(operation=name):
            with pytest.raises(TenantScopeError):
                operation(Model, row)
    assert snapshot(Model) == before  # nothing read was changed, nothing deleted


def test_the_error_says_what_to_do(tenants):
    Entity = model("entities_app.Entity")
    with pytest.raises(TenantScopeError, match=r"Entity queried without a tenant: call \.for_tenant\(tenant\), or use Entity.all_tenants"):
        Entity.objects.count()
    with pytest.raises(TenantScopeError, match="needs a saved tenant"):
        Entity.objects.for_tenant(None)
    with pytest.raises(TenantScopeError, match="needs a saved tenant"):
        Entity.objects.for_tenant(Tenant(slug="unsaved"))


# -- the same operations with a tenant: they work, and only on that tenant's rows -------------------

@pytest.mark.parametrize("label", MODELS)
def test_for_tenant_sees_and_changes_only_its_own_rows(tenants, label):
    Model = model(label)
    acme, globex = tenants
    theirs = [FACTORIES[label](acme, f"a{i}") for i in range(2)]
    mine = FACTORIES[label](globex, "g1")
    acme_rows = sorted(map(repr, Model.all_tenants.filter(tenant=acme).order_by("pk").values()))
    target = theirs[0]
    g = Model.objects.for_tenant(globex)

    assert set(g.values_list("tenant_id", flat=True)) == {globex.pk}
    assert target.pk not in {row.pk for row in g}
    assert target.pk not in g.in_bulk() and g.in_bulk([target.pk]) == {}
    with pytest.raises(Model.DoesNotExist):
        g.get(pk=target.pk)
    with pytest.raises(Model.DoesNotExist):
        async_to_sync(g.aget)(pk=target.pk)
    assert g.filter(pk=target.pk).first() is None and g.filter(pk=target.pk).last() is None
    assert not g.filter(pk=target.pk).exists() and g.filter(pk=target.pk).count() == 0
    assert not g.contains(target) and g.contains(g.get(pk=mine.pk))
    assert g.aggregate(n=Count("pk"))["n"] == g.count() >= 1
    assert target.pk not in {row.pk for row in g.iterator()}
    assert target.pk not in {row.pk for row in async_to_sync(_consume_aiterator_of)(g)}
    assert target.pk not in set(g.order_by().union(Model.objects.for_tenant(globex).order_by()).values_list("pk", flat=True))
    assert target.pk not in {row.pk for row in (g | Model.objects.for_tenant(globex).filter(pk=mine.pk))}
    assert g.explain()
    with transaction.atomic():
        assert target.pk not in {row.pk for row in g.select_for_update()}
    assert g.earliest("pk").tenant_id == g.latest("pk").tenant_id == globex.pk
    assert list(Model.all_tenants.filter(pk__in=g.values("pk")).values_list("tenant_id", flat=True)) == [globex.pk] * g.count()
    assert not Model.all_tenants.filter(pk=target.pk).filter(Exists(g.filter(pk=OuterRef("pk")))).exists()

    # Writes through globex's queryset never reach acme's rows.
    assert g.filter(pk=target.pk).update(tenant=globex) == 0
    assert g.filter(pk=target.pk)._update([(Model._meta.get_field("tenant"), None, globex)]) == 0
    target.tenant = globex
    assert g.bulk_update([target], ["tenant"]) == 0
    assert g.filter(pk=target.pk).delete()[0] == 0
    assert g.filter(pk=target.pk)._raw_delete("default") == 0
    assert g.update_or_create(pk=mine.pk, defaults={"tenant": globex})[1] is False

    assert sorted(map(repr, Model.all_tenants.filter(tenant=acme).order_by("pk").values())) == acme_rows
    # And the operator door sees everyone.
    assert {r.tenant_id for r in Model.all_tenants.all()} == {acme.pk, globex.pk}


async def _consume_aiterator_of(queryset):
    return [row async for row in queryset.aiterator()]


@pytest.mark.parametrize("label", MODELS)
def test_none_reads_nothing_and_is_allowed(tenants, label):
    Model = model(label)
    acme, _ = tenants
    FACTORIES[label](acme, "a1")
    empty = Model.objects.none()
    assert list(empty) == [] and empty.count() == 0 and not empty.exists() and empty.first() is None
    assert empty.in_bulk() == {} and list(empty.values_list("pk", flat=True)) == []
    assert empty.aggregate(n=Count("pk"))["n"] == 0
    assert empty.update(tenant=acme) == 0 and empty.delete()[0] == 0
    assert list(empty.iterator()) == []
    scoped = Model.objects.for_tenant(acme)
    assert list(empty | scoped) == list(scoped) and list(scoped | empty) == list(scoped)
    assert Model.objects.for_tenant(acme).filter(pk__in=[]).count() == 0


def test_creating_rows_needs_no_for_tenant(tenants):
    """Inserts carry their tenant: create() and plain bulk_create() stay open (bench, fixtures)."""
    acme, _ = tenants
    Collection = model("entities_app.Collection")
    Collection.objects.create(tenant=acme, name="one")
    Collection.objects.bulk_create([Collection(tenant=acme, name="two")])
    assert sorted(Collection.objects.for_tenant(acme).values_list("name", flat=True)) == ["one", "two"]
    assert Collection.objects.for_tenant(acme).get_or_create(tenant=acme, name="one")[1] is False
    assert Collection.objects.for_tenant(acme).get_or_create(tenant=acme, name="three")[1] is True


def test_ids_of_another_tenant_are_not_found_through_for_tenant(tenants):
    """The common shape in services: look a row up by id under the caller's tenant."""
    acme, globex = tenants
    Entity = model("entities_app.Entity")
    theirs = FACTORIES["entities_app.Entity"](acme, "a1")
    assert Entity.objects.for_tenant(globex).filter(pk=theirs.pk).first() is None
    assert Entity.objects.for_tenant(globex).filter(pk=uuid.uuid4()).first() is None
    assert Entity.objects.for_tenant(acme).get(pk=theirs.pk) == theirs
