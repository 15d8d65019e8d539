"""Where integration and route documents live.

The services, validation and tools are the same for every store; only persistence differs:
`DatabaseStore` keeps a tenant's records (audited), the local-mode file store keeps the seed's
integrations/<name>.json and config.json.
"""

from abc import ABC, abstractmethod

from django.db import IntegrityError, transaction
from django.db.models import F

from backflow.compiled import Compiled
from backflow.errors import Conflict
from integrations_app.models import Integration, Route
from tenants.models import Tenant
from tenants.services import audit_record


def duplicate_integration(name):
    return Conflict(f"An integration named {name!r} already exists.", {"name": [f"{name!r} is taken; pick another name or update it."]})


def duplicate_route(method, path):
    return Conflict(
        f"A route {method.upper()} {path} already exists.",
        {"path": [f"{method.upper()} {path} is taken; update that route or pick another path or method."]},
    )


class IntegrationStore(ABC):
    # `{{env.NAME}}` placeholders are only for local mode and operator config.
    allow_env = False

    @abstractmethod
    def transaction(self):
        """A context in which reads and writes are consistent and atomic."""

    @abstractmethod
    def list_integrations(self): ...

    @abstractmethod
    def get_integration(self, name): ...

    @abstractmethod
    def save_integration(self, doc, *, create): ...

    @abstractmethod
    def delete_integration(self, name): ...

    @abstractmethod
    def list_routes(self): ...

    @abstractmethod
    def get_route(self, *, route_id=None, path=None, method=None): ...

    @abstractmethod
    def save_route(self, doc, *, route_id=None):
        """Create (route_id None) or replace the route with that id; returns the stored document."""

    @abstractmethod
    def delete_route(self, route_id): ...

    @abstractmethod
    def record(self, action, object_type, object_id, summary): ...


# The reads of every list/get tool call and route table build, compiled once (backflow.compiled).
_TENANT_INTEGRATIONS = Compiled(Integration, lambda tenant: Integration.objects.for_tenant(tenant))
_INTEGRATION_NAMED = Compiled(Integration, lambda tenant, name: Integration.objects.for_tenant(tenant).filter(name=name))
_TENANT_ROUTES = Compiled(Route, lambda tenant: Route.objects.for_tenant(tenant))


class DatabaseStore(IntegrationStore):
    def __init__(self, *, tenant, actor):
        self.tenant = tenant
        self.actor = actor

    def _changed(self):
        """Every process serving this tenant's routes (whatever process made the change: daphne, a
        worker, `mcp_stdio --tenant`, `import_config`) rebuilds its route table once this commits."""
        Tenant.objects.filter(pk=self.tenant.pk).update(routes_version=F("routes_version") + 1)

    def transaction(self):
        return transaction.atomic()

    def _integrations(self):
        return Integration.objects.for_tenant(self.tenant)

    def _routes(self):
        return Route.objects.for_tenant(self.tenant)

    def list_integrations(self):
        return [obj.to_document() for obj in _TENANT_INTEGRATIONS.all(self.tenant)]

    def get_integration(self, name):
        obj = _INTEGRATION_NAMED.first(self.tenant, name)
        return obj.to_document() if obj else None

    def save_integration(self, doc, *, create):
        obj = Integration(tenant=self.tenant) if create else self._integrations().select_for_update().get(name=doc["name"])
        obj.apply_document(doc)
        try:
            with transaction.atomic():
                obj.save()
        except IntegrityError as exc:
            raise duplicate_integration(doc["name"]) from exc
        self._changed()
        return obj.to_document()

    def delete_integration(self, name):
        self._integrations().filter(name=name).delete()
        self._changed()

    def list_routes(self):
        return [obj.to_document() for obj in _TENANT_ROUTES.all(self.tenant)]

    def get_route(self, *, route_id=None, path=None, method=None):
        routes = self._routes()
        obj = routes.filter(pk=route_id).first() if route_id else routes.filter(path=path, method=method).first()
        return obj.to_document() if obj else None

    def save_route(self, doc, *, route_id=None):
        obj = Route(tenant=self.tenant) if route_id is None else self._routes().select_for_update().get(pk=route_id)
        obj.apply_document(doc)
        try:
            with transaction.atomic():
                obj.save()
        except IntegrityError as exc:
            raise duplicate_route(doc["method"], doc["path"]) from exc
        self._changed()
        return obj.to_document()

    def delete_route(self, route_id):
        self._routes().filter(pk=route_id).delete()
        self._changed()

    def record(self, action, object_type, object_id, summary):
        audit_record(tenant=self.tenant, actor=self.actor, action=action, object_type=object_type,
                     object_id=object_id, summary=summary)
