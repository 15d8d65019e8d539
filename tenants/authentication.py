"""One authentication step for every door (REST, MCP, tenant routes).

`principal_for_token` turns a bearer value (API key or JWT) plus an optional tenant choice into a
Principal: the tenant, the scopes and who is acting. DRF's authentication class wraps it.
"""

from django.contrib.auth import get_user_model
from rest_framework import authentication, exceptions
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken

from tenants.principals import Principal
from tenants.scopes import ALL_SCOPES
from tenants.selectors import membership_get, tenant_get
from tenants.services import api_key_authenticate

TENANT_CLAIM = "tenants"
SCOPE_HEADER = "HTTP_X_BACKFLOW_SCOPE"


class AuthenticationError(Exception):
    """The credentials are missing, unknown, expired or revoked (HTTP 401)."""


def principal_for_api_key(raw_key):
    key = api_key_authenticate(raw_key)
    if key is None:
        raise AuthenticationError("Invalid, expired or revoked API key.")
    return Principal(tenant=key.tenant, label=f"key:{key.prefix}", scopes=frozenset(key.scopes), api_key=key)


def principal_for_jwt(raw_token, requested_tenant=None):
    try:
        token = AccessToken(raw_token)
    except TokenError as exc:
        raise AuthenticationError(f"Invalid token: {exc}") from exc
    user = get_user_model().objects.filter(pk=token.get("user_id"), is_active=True).first()
    if user is None:
        raise AuthenticationError("The token's user no longer exists or is inactive.")
    tenants = token.get(TENANT_CLAIM) or []
    if requested_tenant is None:
        if len(tenants) != 1:
            raise AuthenticationError(
                "This token covers several tenants: choose one with the X-Backflow-Scope header or ?scope=."
            )
        requested_tenant = tenants[0]
    if requested_tenant not in tenants:
        raise AuthenticationError(f"This token is not valid for tenant {requested_tenant!r}.")
    tenant = tenant_get(slug=requested_tenant)
    membership = membership_get(tenant=tenant, user=user) if tenant else None
    if membership is None:
        raise AuthenticationError(f"You are no longer a member of tenant {requested_tenant!r}.")
    return Principal(
        tenant=tenant, label=f"user:{user.get_username()}", scopes=frozenset(ALL_SCOPES),
        user=user, role=membership.role,
    )


def principal_for_token(raw, requested_tenant=None, audience=None):
    """API key (bf_…), JWT (three dot-separated parts) or, for the MCP resource `audience`, an
    OAuth access token."""
    if raw.startswith("bf_"):
        principal = principal_for_api_key(raw)
        if requested_tenant and requested_tenant != principal.tenant.slug:
            raise AuthenticationError(f"This API key belongs to another tenant than {requested_tenant!r}.")
        return principal
    if raw.count(".") == 2:
        return principal_for_jwt(raw, requested_tenant)
    # Imported here: oauth2_provider's views stay out of processes that never see OAuth (mcp_stdio start-up).
    from tenants.oauth import OAuthError, principal_for_oauth_token

    try:
        return principal_for_oauth_token(raw, audience, requested_tenant)
    except OAuthError as exc:
        raise AuthenticationError(str(exc)) from exc


def bearer_value(authorization_header):
    scheme, _, value = (authorization_header or "").partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


class BearerAuthentication(authentication.BaseAuthentication):
    """`Authorization: Bearer <API key | JWT>`; the tenant of a multi-tenant JWT from X-Backflow-Scope."""

    def authenticate(self, request):
        raw = bearer_value(request.META.get("HTTP_AUTHORIZATION"))
        if raw is None:
            return None
        requested = request.META.get(SCOPE_HEADER) or request.query_params.get("scope") or None
        try:
            principal = principal_for_token(raw, requested)
        except AuthenticationError as exc:
            raise exceptions.AuthenticationFailed(str(exc)) from exc
        return principal, principal

    def authenticate_header(self, request):
        return 'Bearer realm="backflow"'
