import uuid

from django.core.validators import RegexValidator
from django.db import models

from backflow.logs import current_request_id
from integrations_app.documents import NAME_HELP, NAME_PATTERN

from tenants.scoping import TenantOwned


class Integration(TenantOwned):
    """An HTTP API of the tenant. `auth` names stored secrets; it never holds their values."""

    name = models.CharField(max_length=63, validators=[RegexValidator(NAME_PATTERN, NAME_HELP)])
    display_name = models.CharField(max_length=200, blank=True)
    description = models.TextField(blank=True)
    base_url = models.CharField(max_length=2000)
    auth = models.JSONField(default=dict)
    endpoints = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwned.Meta):
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="integration_unique_name")]

    def __str__(self):
        return self.name

    def to_document(self):
        return {
            "name": self.name,
            "displayName": self.display_name,
            "description": self.description,
            "baseUrl": self.base_url,
            "auth": self.auth,
            "endpoints": self.endpoints,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
        }

    def apply_document(self, doc):
        self.name = doc["name"]
        self.display_name = doc["displayName"]
        self.description = doc["description"]
        self.base_url = doc["baseUrl"]
        self.auth = doc["auth"]
        self.endpoints = doc["endpoints"]


class Route(TenantOwned):
    """`(path, method)` of the tenant's API at /t/<tenant><path>, chaining integration actions."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    path = models.CharField(max_length=500)
    method = models.CharField(max_length=10)
    description = models.TextField(blank=True)
    require_auth = models.BooleanField(default=True)
    actions = models.JSONField(default=list)
    response = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwned.Meta):
        ordering = ["path", "method"]
        constraints = [models.UniqueConstraint(fields=["tenant", "path", "method"], name="route_unique_path_method")]

    def __str__(self):
        return f"{self.method.upper()} {self.path}"

    def to_document(self):
        return {
            "id": str(self.id),
            "path": self.path,
            "method": self.method,
            "description": self.description,
            "requireAuth": self.require_auth,
            "integrations": {"actions": self.actions},
            "response": self.response,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
        }

    def apply_document(self, doc):
        self.path = doc["path"]
        self.method = doc["method"]
        self.description = doc["description"]
        self.require_auth = doc["requireAuth"]
        self.actions = doc["integrations"]["actions"]
        self.response = doc["response"]


class Secret(TenantOwned):
    """A credential of the tenant, encrypted at rest; its value is write-only everywhere."""

    name = models.CharField(max_length=63, validators=[RegexValidator(NAME_PATTERN, NAME_HELP)])
    description = models.TextField(blank=True)
    ciphertext = models.TextField(editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwned.Meta):
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="secret_unique_name")]

    def __str__(self):
        return self.name

    def to_document(self):
        return {
            "name": self.name,
            "description": self.description,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
        }


class RouteInvocation(TenantOwned):
    """One call of a tenant route: status and timing, never bodies."""

    route_id = models.UUIDField(null=True, blank=True, db_index=True)  # kept after the route is deleted
    method = models.CharField(max_length=10)
    path = models.CharField(max_length=2000)
    status = models.PositiveSmallIntegerField()
    duration_ms = models.FloatField()
    error = models.CharField(max_length=500, blank=True)
    is_test = models.BooleanField(default=False, help_text="Made by the test_route tool, not by a caller of the route.")
    request_id = models.CharField(max_length=128, blank=True, default=current_request_id, db_index=True, editable=False,
                                  help_text="X-Request-ID of the request that made it (docs/operator-guide.md, Monitoring).")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta(TenantOwned.Meta):
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.method.upper()} {self.path} -> {self.status}"

    def to_document(self):
        return {
            "id": self.pk, "method": self.method, "path": self.path, "status": self.status, "durationMs": self.duration_ms,
            "error": self.error or None, "test": self.is_test, "createdAt": self.created_at.isoformat(),
        }
