"""One authentication step for every door (REST, MCP, tenant routes).

`principal_for_token` turns a bearer value (API key or JWT) plus an optional tenant choice into a
Principal: the tenant, the scopes and who is acting. DRF's authentication class wraps it.

A JWT is bound to what it was issued under: the claim `pwd` holds a fingerprint (an HMAC keyed by
SECRET_KEY) of the user's password hash, and `mbr` one of each membership (its id and role) per
tenant. Every authentication and every refresh compares them with the current rows, so a
password change ends every JWT of the user at once, and a membership removed, re-created or given
another role ends every JWT for that tenant.
"""

from hmac import compare_digest

from django.contrib.auth import get_user_model
from django.utils.crypto import salted_hmac
from rest_framework import authentication, exceptions
from rest_framework_simplejwt.exceptions import TokenError
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

from tenants.principals import Principal
from tenants.scopes import ALL_SCOPES
from tenants.selectors import membership_get, tenant_by_id_on_loop, tenant_get
from tenants.services import api_key_trusted, api_key_trusted_for, api_key_trusted_with, api_key_verify, api_key_verify_for

TENANT_CLAIM = "tenants"
PASSWORD_CLAIM = "pwd"
MEMBERSHIP_CLAIM = "mbr"
SCOPE_HEADER = "HTTP_X_BACKFLOW_SCOPE"


class AuthenticationError(Exception):
    """The credentials are missing, unknown, expired or revoked (HTTP 401)."""


def password_fingerprint(user):
    """Changes whenever the user's password hash does (a new password, or Django upgrading the
    hash at a sign-in, as for Django's own sessions)."""
    return salted_hmac("backflow.jwt.password", f"{user.pk}:{user.password}", algorithm="sha256").hexdigest()[:32]


def membership_fingerprint(membership):
    return salted_hmac("backflow.jwt.membership", f"{membership.pk}:{membership.user_id}:{membership.tenant_id}:{membership.role}",
                       algorithm="sha256").hexdigest()[:32]


def jwt_for(user, memberships):
    """A new refresh token (its access token is `.access_token`) for `user` in the tenants of
    `memberships`, bound to the user's password and to those memberships."""
    refresh = RefreshToken.for_user(user)
    refresh[TENANT_CLAIM] = [m.tenant.slug for m in memberships]
    refresh[PASSWORD_CLAIM] = password_fingerprint(user)
    refresh[MEMBERSHIP_CLAIM] = {m.tenant.slug: membership_fingerprint(m) for m in memberships}
    return refresh


def _same(claimed, current):
    return isinstance(claimed, str) and compare_digest(claimed, current)


def check_password_binding(token, user):
    if not _same(token.get(PASSWORD_CLAIM), password_fingerprint(user)):
        raise AuthenticationError("This token was issued before the password changed (or before sign-out was "
                                  "possible); sign in again.")


def check_membership_binding(token, slug, membership):
    claimed = token.get(MEMBERSHIP_CLAIM)
    if membership is None:
        raise AuthenticationError(f"You are no longer a member of tenant {slug!r}.")
    if not isinstance(claimed, dict) or not _same(claimed.get(slug), membership_fingerprint(membership)):
        raise AuthenticationError(f"Your membership of tenant {slug!r} changed since this token was issued; sign in again.")


def check_refresh_binding(token):
    """Before a refresh token mints anything: its user is active, with the same password, and
    still holds each membership it was issued under, unchanged."""
    user = get_user_model().objects.filter(pk=token.get("user_id"), is_active=True).first()
    if user is None:
        raise AuthenticationError("The token's user no longer exists or is inactive.")
    check_password_binding(token, user)
    for slug in token.get(TENANT_CLAIM) or []:
        tenant = tenant_get(slug=slug)
        check_membership_binding(token, slug, membership_get(tenant=tenant, user=user) if tenant else None)
    return user


INVALID_KEY = "Invalid, expired or revoked API key."


def principal_for_api_key(raw_key):
    """API keys are verified once per process and then trusted while the tenant row's auth_version
    says nothing changed (tenants/keycache.py): one query by primary key, the tenant row."""
    verified = api_key_verify(raw_key)
    if verified is None:
        raise AuthenticationError(INVALID_KEY)
    entry, tenant = verified
    return Principal(tenant=tenant, label=_key_label(entry), scopes=entry.scopes)


def principal_for_tenant_key(raw_key, tenant):
    """An API key presented to a door that has read `tenant`'s row for this request anyway (the
    tenant routes): no query at all while nothing changed."""
    entry = api_key_verify_for(raw_key, tenant)
    if entry is None:
        raise AuthenticationError(INVALID_KEY)
    if entry.tenant_id != tenant.pk:
        raise AuthenticationError(f"This API key belongs to another tenant than {tenant.slug!r}.")
    return Principal(tenant=tenant, label=_key_label(entry), scopes=entry.scopes)


def known_tenant_key_label(raw_key, tenant):
    """The label principal_for_tenant_key gives a key, when that needs no query and no write now
    (tenants.services.api_key_trusted_for): for a door that checks keys on its event loop. None:
    principal_for_tenant_key decides, on a thread (an unknown, wrong or changed key, or a JWT)."""
    entry = api_key_trusted_for(raw_key, tenant)  # None for anything but a key of this tenant's
    return _key_label(entry) if entry is not None else None


def known_principal(raw, requested_tenant, reads):
    """principal_for_token without a query or a write, for a door that checks credentials on its
    event loop: the Principal of an API key this process verified before while its tenant row (read
    through `reads`, backflow.compiled.LoopReads) says nothing changed, for the tenant asked for if
    any. None: principal_for_token decides, on a thread (a new or changed key, a JWT, an OAuth
    token, another tenant asked for). LoopReads.Unavailable when the row cannot be read at once."""
    return _principal_if_trusted(api_key_trusted(raw, reads), requested_tenant)


async def known_principal_on_loop(entry, requested_tenant, reads):
    """known_principal for a key this process verified before (`entry`, from
    services.api_key_remembered, which the caller asked already), with the tenant row read on the
    event loop's own PostgreSQL connection (`reads`, a backflow.loop_postgres.LoopPostgres, which
    may raise LoopPostgres.Unavailable)."""
    return _principal_if_trusted(api_key_trusted_with(entry, await tenant_by_id_on_loop(entry.tenant_id, reads=reads)),
                                 requested_tenant)


def _principal_if_trusted(trusted, requested_tenant):
    if trusted is None or (requested_tenant and requested_tenant != trusted[1].slug):
        return None
    entry, tenant = trusted
    return Principal(tenant=tenant, label=_key_label(entry), scopes=entry.scopes)


def _key_label(entry):
    return f"key:{entry.prefix}"


def principal_for_jwt(raw_token, requested_tenant=None):
    try:
        token = AccessToken(raw_token)
    except TokenError as exc:
        raise AuthenticationError(f"Invalid token: {exc}") from exc
    user = get_user_model().objects.filter(pk=token.get("user_id"), is_active=True).first()
    if user is None:
        raise AuthenticationError("The token's user no longer exists or is inactive.")
    check_password_binding(token, user)
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
    check_membership_binding(token, requested_tenant, membership)
    return Principal(
        tenant=tenant, label=f"user:{user.get_username()}", scopes=frozenset(ALL_SCOPES),
        user=user, role=membership.role,
    )


def principal_for_token(raw, requested_tenant=None, audience=None, tenant=None):
    """API key (bf_…), JWT (three dot-separated parts) or, for the MCP resource `audience`, an
    OAuth access token. `tenant`: the row of `requested_tenant` when the door has read it for this
    request anyway; an API key is then verified against it (principal_for_tenant_key)."""
    if raw.startswith("bf_"):
        if tenant is not None:
            return principal_for_tenant_key(raw, tenant)
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
