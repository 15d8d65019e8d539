"""Operator pages for collections, entities and apps; writes go through the services."""

from django.contrib import admin

from entities_app import services
from entities_app.models import App, Collection, Entity
from tenants.admin_base import JSON_WIDGET, ReadableJSONField, ServiceAdmin, ServiceForm, operator


class CollectionForm(ServiceForm):
    schema = ReadableJSONField(widget=JSON_WIDGET, required=False, help_text="Optional JSON Schema for every entity's data.")

    class Meta:
        model = Collection
        fields = ["tenant", "name", "description", "schema"]

    def save_through_service(self, tenant, actor):
        data = self.cleaned_data
        document = {"name": data.get("name", self.instance.name), "description": data["description"], "schema": data.get("schema")}
        if not self.instance._state.adding:
            return services.collection_update(tenant=tenant, actor=actor, name=self.instance.name, changes=document, partial=False).pk
        return services.collection_create(tenant=tenant, actor=actor, document=document).pk


@admin.register(Collection)
class CollectionAdmin(ServiceAdmin):
    form = CollectionForm
    list_display = ["name", "tenant", "description", "updated_at"]
    list_filter = ["tenant"]
    search_fields = ["name", "description"]
    identity_fields = ("name",)

    def delete_model(self, request, obj):
        services.collection_delete(tenant=obj.tenant, actor=operator(request, obj.tenant), name=obj.name)


class EntityForm(ServiceForm):
    data = ReadableJSONField(widget=JSON_WIDGET)

    class Meta:
        model = Entity
        fields = ["tenant", "collection", "data"]

    def save_through_service(self, tenant, actor):
        data = self.cleaned_data
        if not self.instance._state.adding:
            return services.entity_update(tenant=tenant, actor=actor, collection_name=self.instance.collection.name,
                                          entity_id=self.instance.pk, data=data["data"]).pk
        if data["collection"].tenant_id != tenant.pk:
            self.add_error("collection", "Pick a collection of the same tenant.")
            return None
        return services.entity_create(tenant=tenant, actor=actor, collection_name=data["collection"].name, data=data["data"]).pk


@admin.register(Entity)
class EntityAdmin(ServiceAdmin):
    form = EntityForm
    list_display = ["id", "collection", "tenant", "version", "updated_at"]
    list_filter = ["tenant", "collection"]
    search_fields = ["id"]
    identity_fields = ("collection", "version")
    list_select_related = ["collection", "tenant"]

    def delete_model(self, request, obj):
        services.entity_delete(tenant=obj.tenant, actor=operator(request, obj.tenant), collection_name=obj.collection.name, entity_id=obj.pk)


class AppForm(ServiceForm):
    pages = ReadableJSONField(widget=JSON_WIDGET)

    class Meta:
        model = App
        fields = ["tenant", "slug", "name", "description", "public", "pages"]

    def save_through_service(self, tenant, actor):
        data = self.cleaned_data
        document = {"id": data.get("slug", self.instance.slug), "name": data["name"], "description": data["description"],
                    "public": data["public"], "pages": data["pages"]}
        if not self.instance._state.adding:
            return services.app_update(tenant=tenant, actor=actor, slug=self.instance.slug, changes=document, partial=False).pk
        return services.app_create(tenant=tenant, actor=actor, document=document).pk


@admin.register(App)
class AppAdmin(ServiceAdmin):
    form = AppForm
    list_display = ["slug", "name", "tenant", "public", "updated_at"]
    list_filter = ["tenant", "public"]
    search_fields = ["slug", "name"]
    identity_fields = ("slug",)

    def delete_model(self, request, obj):
        services.app_delete(tenant=obj.tenant, actor=operator(request, obj.tenant), slug=obj.slug)
