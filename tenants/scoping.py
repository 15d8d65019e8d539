"""Tenant scoping, enforced in one place.

Every tenant-owned model has `objects`, whose querysets refuse to run until `.for_tenant(tenant)`
has been applied, and `all_tenants`, an explicit door for operator-wide code (the admin, key
lookup at authentication). Forgetting the tenant is a loud error, never a cross-tenant read.
"""

from django.db import models


class TenantScopeError(RuntimeError):
    pass


class TenantScopedQuerySet(models.QuerySet):
    _tenant_scoped = False

    def for_tenant(self, tenant):
        if tenant is None or getattr(tenant, "pk", None) is None:
            raise TenantScopeError(f"{self.model.__name__}: for_tenant() needs a saved tenant.")
        scoped = self.filter(tenant=tenant)
        scoped._tenant_scoped = True
        return scoped

    def _clone(self):
        clone = super()._clone()
        clone._tenant_scoped = self._tenant_scoped
        return clone

    def _require_tenant(self):
        if not self._tenant_scoped and not self.query.is_empty():
            raise TenantScopeError(
                f"{self.model.__name__} queried without a tenant: call .for_tenant(tenant), "
                f"or use {self.model.__name__}.all_tenants in operator-wide code."
            )

    def _fetch_all(self):
        if self._result_cache is None:
            self._require_tenant()
        super()._fetch_all()

    def iterator(self, *args, **kwargs):
        self._require_tenant()
        return super().iterator(*args, **kwargs)

    def count(self):
        self._require_tenant()
        return super().count()

    def exists(self):
        self._require_tenant()
        return super().exists()

    def aggregate(self, *args, **kwargs):
        self._require_tenant()
        return super().aggregate(*args, **kwargs)

    def update(self, **kwargs):
        self._require_tenant()
        return super().update(**kwargs)

    def delete(self):
        self._require_tenant()
        return super().delete()


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
