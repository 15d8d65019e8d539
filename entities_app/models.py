import uuid

from django.db import models

from tenants.scoping import TenantOwned


class Collection(TenantOwned):
    """A tenant's typed data store; `schema` (JSON Schema) checks every entity's data."""

    name = models.CharField(max_length=63)
    description = models.TextField(blank=True)
    schema = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwned.Meta):
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="collection_unique_name")]

    def __str__(self):
        return self.name

    def to_document(self):
        return {
            "name": self.name,
            "description": self.description,
            "schema": self.schema,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
        }


class Entity(TenantOwned):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    collection = models.ForeignKey(Collection, on_delete=models.CASCADE, related_name="+")
    data = models.JSONField(default=dict)
    version = models.PositiveIntegerField(default=1)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwned.Meta):
        verbose_name_plural = "entities"
        indexes = [
            models.Index(fields=["collection", "created_at", "id"], name="entity_by_created"),
            models.Index(fields=["collection", "updated_at", "id"], name="entity_by_updated"),
        ]
        # On Postgres, migration 0002 adds a GIN index on `data` (jsonb_path_ops): equality filters
        # are written as `data @> {...}`, which it serves.

    def __str__(self):
        return str(self.id)

    def to_document(self, collection_name=None):
        return {
            "id": str(self.id),
            "collection": collection_name or self.collection.name,
            "data": self.data,
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
            "version": self.version,
        }


class App(TenantOwned):
    """Pages of components bound to collections, served at /apps/<tenant>/<slug>/<page path>."""

    slug = models.CharField(max_length=63)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    public = models.BooleanField(default=False)
    pages = models.JSONField(default=list)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwned.Meta):
        ordering = ["slug"]
        constraints = [models.UniqueConstraint(fields=["tenant", "slug"], name="app_unique_slug")]

    def __str__(self):
        return self.slug

    def to_document(self):
        return {
            "id": self.slug,
            "name": self.name,
            "description": self.description,
            "public": self.public,
            "pages": self.pages,
            "url": f"/apps/{self.tenant.slug}/{self.slug}/",
            "createdAt": self.created_at.isoformat(),
            "updatedAt": self.updated_at.isoformat(),
        }

    def page(self, path):
        return next((page for page in self.pages if page["path"] == path), None)
