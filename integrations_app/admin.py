"""Operator pages. Creates, changes and deletes go through the same services as REST and MCP."""

import json

from django import forms
from django.contrib import admin

from backflow.errors import ServiceError
from integrations_app import selectors, services
from integrations_app.models import Integration, Route, Secret
from integrations_app.stores import DatabaseStore
from tenants.admin import operator

JSON_WIDGET = forms.Textarea(attrs={"rows": 14, "cols": 100, "style": "font-family: monospace"})


class ReadableJSONField(forms.JSONField):
    def prepare_value(self, value):
        return json.dumps(value, indent=2) if not isinstance(value, str) else value


class ServiceForm(forms.ModelForm):
    """The service validates *and* writes, so it runs in clean(): its errors land on the form
    (next to the field they name) and the admin's save_model has nothing left to do."""

    admin_request = None

    def to_document(self):
        raise NotImplementedError

    def save_through_service(self, store, document):
        raise NotImplementedError

    def _post_clean(self):
        pass  # model validation would repeat the service's checks with worse messages

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        tenant = cleaned.get("tenant") or self.instance.tenant
        store = DatabaseStore(tenant=tenant, actor=operator(self.admin_request, tenant))
        try:
            self.document = self.save_through_service(store, self.to_document())
        except ServiceError as exc:
            if not exc.errors:
                self.add_error(None, exc.message)
            for field, messages in exc.errors.items():
                self.add_error(None, f"{field}: {' '.join(messages)}")
        return cleaned


class ServiceAdmin(admin.ModelAdmin):
    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.admin_request = request
        return form

    def save_model(self, request, obj, form, change):
        # The service already wrote the row in form.clean(); point the admin at it.
        if not change:
            obj.pk = self.created_pk(form.document, form.cleaned_data["tenant"])

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)


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

    def save_through_service(self, store, document):
        if not self.instance._state.adding:
            return services.integration_update(store=store, name=self.instance.name, changes=document, partial=False)
        return services.integration_create(store=store, document=document)


@admin.register(Integration)
class IntegrationAdmin(ServiceAdmin):
    form = IntegrationForm
    list_display = ["name", "display_name", "tenant", "base_url", "updated_at"]
    list_filter = ["tenant"]
    search_fields = ["name", "display_name", "description", "base_url"]

    def created_pk(self, document, tenant):
        return Integration.objects.for_tenant(tenant).get(name=document["name"]).pk

    def get_readonly_fields(self, request, obj=None):
        return ["tenant", "name"] if obj else []

    def get_deleted_objects(self, objs, request):
        deleted, counts, perms, protected = super().get_deleted_objects(objs, request)
        for obj in objs:
            store = DatabaseStore(tenant=obj.tenant, actor=operator(request, obj.tenant))
            protected += [f"Route {services.route_label(r)} uses {obj.name}" for r in selectors.routes_using(store=store, name=obj.name)]
        return deleted, counts, perms, protected

    def delete_model(self, request, obj):
        services.integration_delete(store=DatabaseStore(tenant=obj.tenant, actor=operator(request, obj.tenant)), name=obj.name)


class RouteForm(ServiceForm):
    method = forms.ChoiceField(choices=[(m, m.upper()) for m in ("get", "post", "put", "patch", "delete", "head", "options")])
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

    def save_through_service(self, store, document):
        if not self.instance._state.adding:
            return services.route_update(store=store, route_id=self.instance.pk, changes=document, partial=False)
        return services.route_create(store=store, document=document)


@admin.register(Route)
class RouteAdmin(ServiceAdmin):
    form = RouteForm
    list_display = ["__str__", "tenant", "require_auth", "description", "updated_at"]
    list_filter = ["tenant", "method", "require_auth"]
    search_fields = ["path", "description"]

    def created_pk(self, document, tenant):
        return document["id"]

    def get_readonly_fields(self, request, obj=None):
        return ["tenant"] if obj else []

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
