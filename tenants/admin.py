from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from tenants import services
from tenants.models import ApiKey, AuditEvent, Membership, Tenant
from tenants.admin_base import operator
from tenants.scopes import ALL_SCOPES


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


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role", "created_at"]
    list_filter = ["tenant", "role"]
    search_fields = ["user__username", "tenant__slug"]
    autocomplete_fields = ["user", "tenant"]


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

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for key in queryset.filter(revoked_at__isnull=True):
            services.api_key_revoke(tenant=key.tenant, actor=operator(request, key.tenant), prefix=key.prefix)
        messages.success(request, "Revoked.")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin):
    list_display = ["created_at", "tenant", "principal", "action", "object_type", "object_id"]
    list_filter = ["tenant", "action", "object_type"]
    search_fields = ["principal", "action", "object_id"]
    date_hierarchy = "created_at"

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False
