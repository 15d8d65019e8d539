from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from tenants import services
from tenants.models import ApiKey, AuditEvent, Membership, Tenant
from tenants.admin_base import operator
from tenants.scopes import ALL_SCOPES


def _audit(request, tenant, action, object_id, summary):
    """Operators' changes of tenants and memberships land in the tenant's audit log like every
    other write (the admin runs each save in a transaction, so both land or neither does)."""
    services.audit_record(tenant=tenant, actor=operator(request, tenant), action=action,
                          object_type=action.split(".")[0], object_id=object_id, summary=summary)


def _audit_membership(request, membership, action):
    _audit(request, membership.tenant, action, membership.user.get_username(), {"role": membership.role})


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ["slug", "name", "is_active", "created_at"]
    list_filter = ["is_active"]
    search_fields = ["slug", "name"]
    inlines = [MembershipInline]
    actions = ["deactivate", "activate"]

    def save_model(self, request, obj, form, change):
        # Activation goes through the service: deactivating fails the tenant's queued runs in this
        # same transaction and is audited as tenant.deactivate (the rest as tenant.update).
        activation = change and "is_active" in form.changed_data
        active = obj.is_active
        if activation:
            obj.is_active = not active
        super().save_model(request, obj, form, change)
        changed = [field for field in form.changed_data if not (activation and field == "is_active")]
        if changed or not activation:
            _audit(request, obj, "tenant.update" if change else "tenant.create", obj.slug,
                   {field: form.cleaned_data[field] for field in changed})
        if activation:
            self._set_active(request, obj, active)

    def _set_active(self, request, tenant, active):
        failed = services.tenant_set_active(tenant=tenant, actor=operator(request, tenant), active=active)
        if failed:
            messages.warning(request, f"{tenant.slug}: {failed} queued run(s) failed (the tenant is inactive).")

    @admin.action(description="Deactivate selected tenants (refused everywhere; queued runs fail, schedules stop)")
    def deactivate(self, request, queryset):
        for tenant in queryset:
            self._set_active(request, tenant, False)
        messages.success(request, "Deactivated.")

    @admin.action(description="Activate selected tenants")
    def activate(self, request, queryset):
        for tenant in queryset:
            self._set_active(request, tenant, True)
        messages.success(request, "Activated.")

    def save_formset(self, request, form, formset, change):
        super().save_formset(request, form, formset, change)
        for membership in [*formset.new_objects, *(obj for obj, _ in formset.changed_objects)]:
            _audit_membership(request, membership, "membership.set")
        for membership in formset.deleted_objects:
            _audit_membership(request, membership, "membership.delete")


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["tenant", "role"]
    search_fields = ["user__username", "tenant__slug"]
    autocomplete_fields = ["user", "tenant"]

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        _audit_membership(request, obj, "membership.set")

    def delete_model(self, request, obj):
        _audit_membership(request, obj, "membership.delete")
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for membership in queryset.select_related("tenant", "user"):
            _audit_membership(request, membership, "membership.delete")
        super().delete_queryset(request, queryset)


class ApiKeyCreateForm(forms.ModelForm):
    scopes = forms.MultipleChoiceField(
        choices=[(s, s) for s in ALL_SCOPES], required=False, widget=forms.CheckboxSelectMultiple,
        help_text="Leave all unchecked for every scope.",
    )

    class Meta:
        model = ApiKey
        fields = ["tenant", "name", "scopes", "expires_at"]

    def clean_expires_at(self):
        expires_at = self.cleaned_data.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError("The expiry must be in the future.")
        return expires_at


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ["masked", "name", "tenant", "scope_list", "expires_at", "revoked_at", "last_used_at"]
    list_filter = ["tenant", ("revoked_at", admin.EmptyFieldListFilter)]
    search_fields = ["prefix", "name", "tenant__slug"]
    readonly_fields = ["prefix", "scopes", "created_by", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    @admin.display(description="key")
    def masked(self, obj):
        return f"bf_{obj.prefix}_…"

    @admin.display(description="scopes")
    def scope_list(self, obj):
        return "all" if set(obj.scopes) == set(ALL_SCOPES) else ", ".join(obj.scopes)

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = ApiKeyCreateForm
        return super().get_form(request, obj, **kwargs)

    def get_fields(self, request, obj=None):
        if obj is None:
            return ["tenant", "name", "scopes", "expires_at"]
        return ["tenant", "name", "prefix", "scopes", "expires_at", "created_by", "created_at", "last_used_at", "revoked_at"]

    def get_readonly_fields(self, request, obj=None):
        return self.readonly_fields + ["tenant", "expires_at"] if obj else []

    def save_model(self, request, obj, form, change):
        if change:
            return super().save_model(request, obj, form, change)
        key, plaintext = services.api_key_create(
            tenant=obj.tenant, actor=operator(request, obj.tenant), name=obj.name,
            scopes=form.cleaned_data.get("scopes"), expires_at=obj.expires_at,
        )
        obj.pk = key.pk
        messages.warning(request, f"New API key (shown once, copy it now): {plaintext}")

    def delete_model(self, request, obj):
        self.delete_queryset(request, ApiKey.all_tenants.filter(pk=obj.pk))

    def delete_queryset(self, request, queryset):
        for key in queryset.select_related("tenant"):
            _audit(request, key.tenant, "api_key.delete", key.prefix, {"name": key.name})
        super().delete_queryset(request, queryset)

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for key in queryset.filter(revoked_at__isnull=True):
            services.api_key_revoke(tenant=key.tenant, actor=operator(request, key.tenant), prefix=key.prefix)
        messages.success(request, "Revoked.")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "tenant", "principal", "action", "object_type", "object_id"]
    list_filter = ["tenant", "action", "object_type"]
    search_fields = ["principal", "action", "object_id", "request_id"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
