from django.contrib.auth import authenticate
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import mixins, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView
from rest_framework_simplejwt.exceptions import TokenBackendError, TokenError
from rest_framework_simplejwt.tokens import RefreshToken, Token

from tenants import selectors, services
from tenants.api import serializers
from tenants.authentication import AuthenticationError, check_refresh_binding, jwt_for
from tenants.filtersets import AuditEventFilterSet
from tenants.models import ApiKey, AuditEvent
from tenants.signin import TooManySignIns
from tenants.viewsets import ERROR_RESPONSES, ERROR_SCHEMA, TenantScopedViewSet


@extend_schema_view(
    list=extend_schema(summary="List the tenant's API keys", responses={200: serializers.ApiKeySerializer(many=True)}),
    retrieve=extend_schema(summary="Get one API key by prefix", responses={200: serializers.ApiKeySerializer, **ERROR_RESPONSES}),
    create=extend_schema(
        summary="Create an API key (the value is shown once)",
        request=serializers.ApiKeyCreateSerializer,
        responses={201: serializers.ApiKeyCreatedSerializer, **ERROR_RESPONSES},
    ),
    destroy=extend_schema(summary="Revoke an API key", responses={204: None, **ERROR_RESPONSES}),
)
class ApiKeyViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """API keys of the tenant; only its owners and admins (signed in with a JWT) manage them."""

    model = ApiKey
    serializer_class = serializers.ApiKeySerializer
    lookup_field = "prefix"

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        services.require_key_manager(self.actor)

    def get_tenant_queryset(self, tenant):
        return selectors.api_key_list(tenant=tenant)

    def create(self, request):
        data = serializers.ApiKeyCreateSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        key, plaintext = services.api_key_create(
            tenant=self.tenant, actor=self.actor, name=data.validated_data["name"],
            scopes=data.validated_data.get("scopes"), expires_at=data.validated_data.get("expiresAt"),
        )
        key.key = plaintext
        return Response(serializers.ApiKeyCreatedSerializer(key).data, status=status.HTTP_201_CREATED)

    def destroy(self, request, prefix=None):
        services.api_key_revoke(tenant=self.tenant, actor=self.actor, prefix=self.get_object().prefix)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    list=extend_schema(summary="List audit events (newest first)"),
    retrieve=extend_schema(summary="Get one audit event", responses={200: serializers.AuditEventSerializer, **ERROR_RESPONSES}),
)
class AuditEventViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, TenantScopedViewSet):
    """Every write and every MCP tool call of the tenant, with credentials redacted. Read-only."""

    model = AuditEvent
    serializer_class = serializers.AuditEventSerializer
    filterset_class = AuditEventFilterSet

    def get_tenant_queryset(self, tenant):
        return selectors.audit_list(tenant=tenant)


class TokenObtainView(APIView):
    """Exchange a username and password for a JWT pair bound to your tenant(s)."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(request=serializers.TokenObtainSerializer, responses={
        200: serializers.TokenPairSerializer, **ERROR_RESPONSES,
        429: OpenApiResponse(ERROR_SCHEMA, description="Too many failed sign-ins; wait Retry-After seconds.")})
    def post(self, request):
        data = serializers.TokenObtainSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:  # the authentication backend limits and counts failed password checks (tenants/signin.py)
            user = authenticate(request, username=data.validated_data["username"], password=data.validated_data["password"])
        except TooManySignIns as exc:
            return Response({"detail": exc.detail}, status=status.HTTP_429_TOO_MANY_REQUESTS, headers={"Retry-After": str(exc.wait)})
        if user is None:
            return Response({"detail": "Wrong username or password."}, status=status.HTTP_401_UNAUTHORIZED)
        memberships = list(selectors.memberships_of(user=user))
        wanted = data.validated_data.get("tenant")
        if wanted is not None:
            memberships = [m for m in memberships if m.tenant.slug == wanted]
            if not memberships:
                return Response(
                    {"detail": f"You are not a member of an active tenant {wanted!r}.", "errors": {"tenant": ["Not one of your tenants."]}},
                    status=status.HTTP_401_UNAUTHORIZED,
                )
        if not memberships:
            return Response({"detail": "You are not a member of any active tenant."}, status=status.HTTP_401_UNAUTHORIZED)
        refresh = jwt_for(user, memberships)
        return Response({"access": str(refresh.access_token), "refresh": str(refresh)})


class TokenRefreshView(APIView):
    """Exchange a refresh token for a new pair. The refresh token given is blacklisted (rotation):
    use the new one next time. Refused once the password changed or a membership the token covers
    was removed or changed role."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(request=serializers.RefreshSerializer, responses={200: serializers.TokenPairSerializer, **ERROR_RESPONSES})
    def post(self, request):
        data = serializers.RefreshSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        try:
            refresh = RefreshToken(data.validated_data["refresh"])  # signature, expiry, type, blacklist
            check_refresh_binding(refresh)
        except (TokenError, AuthenticationError) as exc:
            return Response({"detail": f"Invalid refresh token: {exc}"}, status=status.HTTP_401_UNAUTHORIZED)
        _, first = refresh.blacklist()
        if not first:  # two refreshes of one token at once: only one of them rotates it
            return Response({"detail": "Invalid refresh token: Token is blacklisted"}, status=status.HTTP_401_UNAUTHORIZED)
        refresh.set_jti()
        refresh.set_exp()
        refresh.set_iat()
        refresh.outstand()
        return Response({"access": str(refresh.access_token), "refresh": str(refresh)})


class LogoutView(APIView):
    """Sign out a JWT: its refresh token is blacklisted, so it mints no more access tokens (the
    access tokens already issued live out their minutes; a password change ends them too)."""

    authentication_classes = []
    permission_classes = [AllowAny]

    @extend_schema(request=serializers.RefreshSerializer, responses={204: None, **ERROR_RESPONSES})
    def post(self, request):
        data = serializers.RefreshSerializer(data=request.data)
        data.is_valid(raise_exception=True)
        raw = data.validated_data["refresh"]
        try:
            refresh = RefreshToken(raw, verify=False)
            refresh.token_backend.decode(raw, verify=True)  # the signature and the expiry
            Token.verify(refresh)  # id and type, not the blacklist: signing out twice is signed out
        except (TokenError, TokenBackendError) as exc:
            return Response({"detail": f"Invalid refresh token: {exc}"}, status=status.HTTP_401_UNAUTHORIZED)
        refresh.blacklist()
        return Response(status=status.HTTP_204_NO_CONTENT)


def _tenant_tokens(tenant):
    from oauth2_provider.models import get_access_token_model

    marker = f"tenant:{tenant.slug}"
    tokens = get_access_token_model().objects.select_related("application", "user").filter(scope__contains=marker)
    return [token for token in tokens if marker in token.scope.split()]


def _present_token(token):
    return {
        "id": token.pk, "application": token.application.name or token.application.client_id,
        "clientId": token.application.client_id, "user": token.user.get_username() if token.user else None,
        "scopes": [s for s in token.scope.split() if not s.startswith("tenant:")],
        "expires": token.expires.isoformat(), "createdAt": token.created.isoformat(),
    }


OAUTH_GRANT_SCHEMA = {"type": "object", "properties": {
    "id": {"type": "integer"}, "application": {"type": "string"}, "clientId": {"type": "string"}, "user": {"type": "string"},
    "scopes": {"type": "array", "items": {"type": "string"}}, "expires": {"type": "string", "format": "date-time"},
    "createdAt": {"type": "string", "format": "date-time"},
}}


@extend_schema_view(
    list=extend_schema(summary="Applications connected to the tenant through OAuth", responses={200: {"type": "array", "items": OAUTH_GRANT_SCHEMA}}),
    destroy=extend_schema(summary="Revoke one connection (its access and refresh tokens)", responses={204: None, **ERROR_RESPONSES}),
)
class OAuthAuthorizationViewSet(TenantScopedViewSet):
    """OAuth connections of the tenant (MCP clients a member approved); owners and admins revoke them."""

    model = ApiKey  # schema generation only: the connections are django-oauth-toolkit tokens

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        services.require_key_manager(self.actor, what="OAuth connections")

    def list(self, request):
        return Response([_present_token(token) for token in _tenant_tokens(self.tenant)])

    def destroy(self, request, pk=None):
        token = next((t for t in _tenant_tokens(self.tenant) if str(t.pk) == str(pk)), None)
        if token is None:
            return Response({"detail": "No such connection."}, status=status.HTTP_404_NOT_FOUND)
        summary = {"user": _present_token(token)["user"], "application": token.application.name}
        refresh = getattr(token, "refresh_token", None)
        (refresh or token).revoke()  # a refresh token's revoke also removes its access token
        services.audit_record(tenant=self.tenant, actor=self.actor, action="oauth.revoke", object_type="oauth_token",
                              object_id=token.application.client_id, summary=summary)
        return Response(status=status.HTTP_204_NO_CONTENT)
