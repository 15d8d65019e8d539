"""Tenant scoping, enforced in one place.

Every tenant-owned model has `objects`, whose querysets refuse to run until `.for_tenant(tenant)`
has been applied, and `all_tenants`, an explicit door for operator-wide code (the admin, key
lookup at authentication). Forgetting the tenant is a loud error, never a cross-tenant read.

The mark "scoped to a tenant" lives on the SQL query itself (TenantScopedQuery), so it travels
wherever Django takes the query: clones, values(), subqueries (`pk__in=qs`, Subquery, Exists)
and the parts of union() / intersection() / difference(). Compiling an unscoped query raises,
which covers every read (iteration, get, first/last, count, exists, aggregate, in_bulk,
contains, earliest/latest, explain, select_for_update, get_or_create, update_or_create, async
variants). Writes and what compiles outside that class are checked here too: update/_update,
delete/_raw_delete, bulk_update (before its transaction), iterator/aiterator (at the call, not at the first row), raw()
(raw SQL is never scoped: use all_tenants), bulk_create(update_conflicts=True) (ON CONFLICT
would update a row of whichever tenant holds the key), and `|` / `^` of a scoped queryset with
an unscoped one (an OR would widen the tenant's filter to every row). Inserts (create,
bulk_create) carry their tenant in each row and are not refused. `.none()` is always allowed:
it reads nothing. tenants/tests/test_scoping.py proves each of these on every tenant-owned model.
"""

from django.db import models
from django.db.models import sql


class TenantScopeError(RuntimeError):
    pass


def _require_tenant(query):
    """The guard: TenantScopeError unless `query` was scoped with for_tenant() (or reads nothing)."""
    if not getattr(query, "tenant_scoped", False) and not query.is_empty():
        name = query.model.__name__ if query.model is not None else "A tenant-owned model"
        raise TenantScopeError(
            f"{name} queried without a tenant: call .for_tenant(tenant), "
            f"or use {name}.all_tenants in operator-wide code."
        )




class TenantScopedQuery(sql.Query):
    """A SELECT of a tenant-owned model; `tenant_scoped` is copied with every clone."""

    tenant_scoped = False

    def get_compiler(self, *args, **kwargs):
        _require_tenant(self)
        return super().get_compiler(*args, **kwargs)


class TenantScopedQuerySet(models.QuerySet):
    def __init__(self, model=None, query=None, using=None, hints=None):
        super().__init__(model=model, query=query if query is not None else TenantScopedQuery(model), using=using, hints=hints)

    def for_tenant(self, tenant):
        if tenant is None or getattr(tenant, "pk", None) is None:
            raise TenantScopeError(f"{self.model.__name__}: for_tenant() needs a saved tenant.")
        scoped = self.filter(tenant=tenant)
        scoped.query.tenant_scoped = True
        return scoped

    @property
    def _tenant_scoped(self):
        return getattr(self.query, "tenant_scoped", False)

    def _require_tenant(self):
        _require_tenant(self.query)

    # Reads: compiling checks them all; these say so before any work, with the same error.
    def _fetch_all(self):
        if self._result_cache is None:
            self._require_tenant()
        super()._fetch_all()

    def iterator(self, *args, **kwargs):
        self._require_tenant()
        return super().iterator(*args, **kwargs)

    def aiterator(self, *args, **kwargs):
        self._require_tenant()
        return super().aiterator(*args, **kwargs)

    def count(self):
        self._require_tenant()
        return super().count()

    def exists(self):
        self._require_tenant()
        return super().exists()

    def aggregate(self, *args, **kwargs):
        self._require_tenant()
        return super().aggregate(*args, **kwargs)

    def explain(self, *args, **kwargs):
        self._require_tenant()
        return super().explain(*args, **kwargs)

    def raw(self, *args, **kwargs):
        raise TenantScopeError(
            f"{self.model.__name__}.objects.raw(): raw SQL is not scoped to a tenant; use "
            f"{self.model.__name__}.all_tenants.raw() with the tenant in the SQL."
        )

    # Writes: UPDATE and DELETE queries are not TenantScopedQuery: checked here.
    def update(self, **kwargs):
        self._require_tenant()
        return super().update(**kwargs)

    def _update(self, values):
        self._require_tenant()
        return super()._update(values)

    def delete(self):
        self._require_tenant()
        return super().delete()

    def _raw_delete(self, using):
        self._require_tenant()
        return super()._raw_delete(using)

    def bulk_update(self, objs, *args, **kwargs):
        # Checked before Django's transaction (savepoint=False): raised inside it, the error would
        # also break the caller's transaction.
        self._require_tenant()
        return super().bulk_update(objs, *args, **kwargs)

    def bulk_create(self, objs, *args, **kwargs):
        if kwargs.get("update_conflicts"):
            raise TenantScopeError(
                f"{self.model.__name__}: bulk_create(update_conflicts=True) would update rows of any tenant; "
                f"use {self.model.__name__}.all_tenants in operator-wide code."
            )
        return super().bulk_create(objs, *args, **kwargs)

    # Combining: OR-ing a tenant's filter with an unscoped one reads every tenant's rows.
    def _check_combinable(self, other, operator):
        if not isinstance(other, models.QuerySet) or self.query.is_empty() or other.query.is_empty():
            return  # Django answers with the other side as it is
        if getattr(self.query, "tenant_scoped", False) != getattr(other.query, "tenant_scoped", False):
            raise TenantScopeError(
                f"{self.model.__name__}: `{operator}` of a tenant-scoped queryset and an unscoped one; "
                f"apply .for_tenant(tenant) to both."
            )

    def __or__(self, other):
        self._check_combinable(other, "|")
        return super().__or__(other)

    def __xor__(self, other):
        self._check_combinable(other, "^")
        return super().__xor__(other)


class TenantScopedManager(models.Manager.from_queryset(TenantScopedQuerySet)):
    pass


class TenantOwned(models.Model):
    tenant = models.ForeignKey("tenants.Tenant", on_delete=models.CASCADE, related_name="+", db_index=True)

    objects = TenantScopedManager()
    all_tenants = models.Manager()

    class Meta:
        abstract = True
        # Django internals (unique checks in forms, the admin, dumpdata) are operator-wide.
        default_manager_name = "all_tenants"
