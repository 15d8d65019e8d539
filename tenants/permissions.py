from rest_framework.permissions import SAFE_METHODS, BasePermission

from tenants.principals import Principal


class IsTenantPrincipal(BasePermission):
    """Authenticated for an active tenant. An inactive tenant is refused everything."""

    message = "Authentication credentials were not provided."

    def has_permission(self, request, view):
        principal = request.auth
        if not isinstance(principal, Principal):
            return False
        if not principal.tenant.is_active:
            self.message = f"Tenant {principal.tenant.slug!r} is inactive."
            return False
        return True


class HasScope(BasePermission):
    """The view names its resource; safe methods need `<resource>:read`, the rest `<resource>:write`.

    A view may map actions to other scopes with `action_scopes` (e.g. {"run": "workflows:run"}).
    """

    def has_permission(self, request, view):
        scope = view.required_scope(request)
        if scope and not request.auth.has_scope(scope):
            self.message = f"This credential lacks the {scope!r} scope."
            return False
        return True


def required_scope_for(view, request):
    action_scopes = getattr(view, "action_scopes", {})
    if getattr(view, "action", None) in action_scopes:
        return action_scopes[view.action]
    resource = getattr(view, "scope_resource", None)
    if resource is None:
        return None
    return f"{resource}:read" if request.method in SAFE_METHODS else f"{resource}:write"
