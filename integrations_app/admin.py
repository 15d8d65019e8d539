"""Operator pages. Creates, changes and deletes go through the same services as REST and MCP."""

from django import forms
from django.contrib import admin

from integrations_app import selectors, services
from integrations_app.documents import HTTP_METHODS
from integrations_app.models import Integration, Route, RouteInvocation, Secret
from integrations_app.stores import DatabaseStore
from tenants.admin_base import JSON_WIDGET, ReadableJSONField, ServiceAdmin, ServiceForm, operator


class IntegrationForm(ServiceForm):
    auth = ReadableJSONField(widget=JSON_WIDGET, help_text='e.g. {"type": "bearer", "secret": "stripe_key"}')
    endpoints = ReadableJSONField(widget=JSON_WIDGET, help_text='[{"name": "listRecords", "method": "get", "path": "/records"}]')

    class Meta:
        model = Integration
        fields = ["tenant", "name", "display_name", "description", "base_url", "auth", "endpoints"]

    def to_document(self):
        data = self.cleaned_data
        return {"name": data.get("name", self.instance.name), "displayName": data["display_name"],
                "description": data["description"], "baseUrl": data["base_url"], "auth": data["auth"],
                "endpoints": data["endpoints"]}

    def save_through_service(self, tenant, actor):
        store = DatabaseStore(tenant=tenant, actor=actor)
        if not self.instance._state.adding:
            services.integration_update(store=store, name=self.instance.name, changes=self.to_document(), partial=False)
            return self.instance.pk
        saved = services.integration_create(store=store, document=self.to_document())
        return Integration.objects.for_tenant(tenant).get(name=saved["name"]).pk


@admin.register(Integration)
class IntegrationAdmin(ServiceAdmin):
    form = IntegrationForm
    list_display = ["name", "display_name", "tenant", "base_url", "updated_at"]
    list_filter = ["tenant"]
    search_fields = ["name", "display_name", "description", "base_url"]
    identity_fields = ("name",)

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms, protected = super().get_deleted_objects(objs, request)
        for obj in objs:
            store = DatabaseStore(tenant=obj.tenant, actor=operator(request, obj.tenant))
            protected += [f"Route {services.route_label(r)} uses {obj.name}" for r in selectors.routes_using(store=store, name=obj.name)]
            protected += [f"Workflow {slug} uses {obj.name}" for slug in selectors.workflows_using(store=store, name=obj.name)]
        return deleted, counts, perms, protected

    def delete_model(self, request, obj):
        services.integration_delete(store=DatabaseStore(tenant=obj.tenant, actor=operator(request, obj.tenant)), name=obj.name)


class RouteForm(ServiceForm):
    method = forms.ChoiceField(choices=[(m, m.upper()) for m in HTTP_METHODS])
    actions = ReadableJSONField(widget=JSON_WIDGET, help_text='[{"id": "list", "integration": "stripe", "action": "listCharges", "params": {}}]')
    response = ReadableJSONField(widget=JSON_WIDGET, required=False, help_text="Optional answer template; empty: the last action's result.")

    class Meta:
        model = Route
        fields = ["tenant", "path", "method", "description", "require_auth", "actions", "response"]

    def to_document(self):
        data = self.cleaned_data
        return {"path": data["path"], "method": data["method"], "description": data["description"],
                "requireAuth": data["require_auth"], "integrations": {"actions": data["actions"]},
                "response": data.get("response")}

    def save_through_service(self, tenant, actor):
        store = DatabaseStore(tenant=tenant, actor=actor)
        if not self.instance._state.adding:
            return services.route_update(store=store, route_id=self.instance.pk, changes=self.to_document(), partial=False)["id"]
        return services.route_create(store=store, document=self.to_document())["id"]


@admin.register(Route)
class RouteAdmin(ServiceAdmin):
    form = RouteForm
    list_display = ["__str__", "tenant", "require_auth", "description", "updated_at"]
    list_filter = ["tenant", "method", "require_auth"]
    search_fields = ["path", "description"]

    def delete_model(self, request, obj):
        services.route_delete(store=DatabaseStore(tenant=obj.tenant, actor=operator(request, obj.tenant)), route_id=obj.pk)


class SecretForm(forms.ModelForm):
    value = forms.CharField(
        widget=forms.PasswordInput(render_value=False), required=False, strip=False,
        help_text="Write-only: the stored value is never shown. Leave empty to keep it.",
    )

    class Meta:
        model = Secret
        fields = ["tenant", "name", "description"]

    def clean(self):
        cleaned = super().clean()
        if self.instance._state.adding and not cleaned.get("value"):
            self.add_error("value", "Give the secret's value.")
        return cleaned


@admin.register(Secret)
class SecretAdmin(admin.ModelAdmin):
    form = SecretForm
    list_display = ["name", "tenant", "description", "updated_at"]
    list_filter = ["tenant"]
    search_fields = ["name", "description"]

    def get_readonly_fields(self, request, obj=None):
        return ["tenant", "name"] if obj else []

    def save_model(self, request, obj, form, change):
        actor = operator(request, obj.tenant)
        value = form.cleaned_data.get("value") or None
        if change:
            services.secret_update(tenant=obj.tenant, actor=actor, secret=obj, value=value, description=obj.description)
            return
        created = services.secret_create(tenant=obj.tenant, actor=actor, name=obj.name, value=value, description=obj.description)
        obj.pk = created.pk

    def delete_model(self, request, obj):
        services.secret_delete(tenant=obj.tenant, actor=operator(request, obj.tenant), secret=obj)

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)


@admin.register(RouteInvocation)
class RouteInvocationAdmin(admin.ModelAdmin):
    list_display = ["created_at", "tenant", "method", "path", "status", "duration_ms"]
    list_filter = ["tenant", "status", "method"]
    search_fields = ["path", "error", "request_id"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
