"""Admin pages whose writes go through the service layer, for every tenant-owned model."""

import json

from django import forms
from django.contrib import admin

from backflow.errors import ServiceError
from tenants.principals import Principal

JSON_WIDGET = forms.Textarea(attrs={"rows": 14, "cols": 100, "style": "font-family: monospace"})


def operator(request, tenant):
    """The admin acts as a system principal named after the signed-in operator."""
    return Principal.system(tenant, f"admin:{request.user.get_username()}")


class ReadableJSONField(forms.JSONField):
    def prepare_value(self, value):
        return json.dumps(value, indent=2) if not isinstance(value, str) else value


class ServiceForm(forms.ModelForm):
    """The service validates *and* writes, so it runs in clean(): its errors land on the form and
    the admin's save_model only points at the saved row. Subclasses implement
    `save_through_service(tenant, actor)` and return the saved row's primary key."""

    admin_request = None

    def save_through_service(self, tenant, actor):
        raise NotImplementedError

    def _post_clean(self):
        pass  # model validation would repeat the service's checks with worse messages

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        tenant = cleaned.get("tenant") or self.instance.tenant
        try:
            self.saved_pk = self.save_through_service(tenant, operator(self.admin_request, tenant))
        except ServiceError as exc:
            if not exc.errors:
                self.add_error(None, exc.message)
            for field, messages in exc.errors.items():
                self.add_error(None, f"{field}: {' '.join(messages)}")
        return cleaned


class ServiceAdmin(admin.ModelAdmin):
    identity_fields = ()  # fixed once created (names, ids), like the tenant

    def get_form(self, request, obj=None, **kwargs):
        form = super().get_form(request, obj, **kwargs)
        form.admin_request = request
        return form

    def get_readonly_fields(self, request, obj=None):
        return ["tenant", *self.identity_fields] if obj else []

    def save_model(self, request, obj, form, change):
        if not change:
            obj.pk = form.saved_pk

    def delete_queryset(self, request, queryset):
        for obj in queryset:
            self.delete_model(request, obj)
