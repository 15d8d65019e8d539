from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import serializers, status
from rest_framework.response import Response

from integrations_app import selectors, services
from integrations_app.documents import INTEGRATION_SCHEMA, ROUTE_SCHEMA
from integrations_app.models import Integration, Route, Secret
from integrations_app.filtersets import IntegrationFilterSet, RouteFilterSet, SecretFilterSet
from integrations_app.stores import DatabaseStore
from tenants.viewsets import CONFLICT, ERROR_RESPONSES, DocumentViewSet, document_schema_view, json_object_body

class StoreBackedViewSet(DocumentViewSet):
    def store(self):
        return DatabaseStore(tenant=self.tenant, actor=self.actor)


@document_schema_view("integration", INTEGRATION_SCHEMA)
class IntegrationViewSet(StoreBackedViewSet):
    """HTTP APIs of the tenant. Auth parts name stored secrets; values are never returned."""

    model = Integration
    scope_resource = "integrations"
    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    filterset_class = IntegrationFilterSet

    def get_tenant_queryset(self, tenant):
        return selectors.integration_list(tenant=tenant)

    def present(self, obj):
        return obj.to_document()

    def perform_create(self, document):
        return services.integration_create(store=self.store(), document=document)

    def perform_update(self, current, document, partial):
        return services.integration_update(store=self.store(), name=current.name, changes=document, partial=partial)

    def perform_destroy(self, current):
        services.integration_delete(store=self.store(), name=current.name)


@document_schema_view("route", ROUTE_SCHEMA, id={"type": "string", "format": "uuid"})
@extend_schema(parameters=[OpenApiParameter("id", str, OpenApiParameter.PATH, description="Route id (UUID).")])
class RouteViewSet(StoreBackedViewSet):
    """Routes of the tenant, served at /t/<tenant><path>; filter with ?path=&method=."""

    model = Route
    scope_resource = "routes"
    filterset_class = RouteFilterSet
    lookup_value_regex = "[0-9a-fA-F-]{36}"

    def get_tenant_queryset(self, tenant):
        return selectors.route_list(tenant=tenant)

    def present(self, obj):
        return obj.to_document()

    def perform_create(self, document):
        return services.route_create(store=self.store(), document=document)

    def perform_update(self, current, document, partial):
        return services.route_update(store=self.store(), route_id=current.pk, changes=document, partial=partial)

    def perform_destroy(self, current):
        services.route_delete(store=self.store(), route_id=current.pk)


class SecretSerializer(serializers.Serializer):
    name = serializers.CharField(read_only=True)
    description = serializers.CharField(read_only=True)
    createdAt = serializers.DateTimeField(source="created_at", read_only=True)
    updatedAt = serializers.DateTimeField(source="updated_at", read_only=True)


class SecretWriteSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=63, help_text="Referenced by integrations as auth.secret.")
    value = serializers.CharField(write_only=True, max_length=services.SECRET_VALUE_MAX, trim_whitespace=False,
                                  help_text="Write-only: never returned by any API.")
    description = serializers.CharField(required=False, allow_blank=True, max_length=2000)


class SecretUpdateSerializer(SecretWriteSerializer):
    name = None
    value = serializers.CharField(write_only=True, required=False, max_length=services.SECRET_VALUE_MAX, trim_whitespace=False)


@extend_schema_view(
    list=extend_schema(summary="List secrets (names only)"),
    retrieve=extend_schema(summary="Get a secret's name and description", responses={200: SecretSerializer, **ERROR_RESPONSES}),
    create=extend_schema(summary="Store a secret", request=SecretWriteSerializer, responses={201: SecretSerializer, **ERROR_RESPONSES, **CONFLICT}),
    update=extend_schema(summary="Replace a secret's value", request=SecretUpdateSerializer, responses={200: SecretSerializer, **ERROR_RESPONSES}),
    partial_update=extend_schema(summary="Change a secret's value or description", request=SecretUpdateSerializer, responses={200: SecretSerializer, **ERROR_RESPONSES}),
    destroy=extend_schema(summary="Delete a secret", responses={204: None, **ERROR_RESPONSES}),
)
class SecretViewSet(DocumentViewSet):
    """Credentials for integrations, encrypted at rest. Values are write-only everywhere."""

    model = Secret
    scope_resource = "integrations"
    lookup_field = "name"
    lookup_value_regex = "[^/]+"
    serializer_class = SecretSerializer
    filterset_class = SecretFilterSet

    def get_tenant_queryset(self, tenant):
        return selectors.secret_list(tenant=tenant)

    def present(self, obj):
        return obj.to_document()

    def create(self, request, *args, **kwargs):
        data = SecretWriteSerializer(data=json_object_body(request))
        data.is_valid(raise_exception=True)
        secret = services.secret_create(tenant=self.tenant, actor=self.actor, **data.validated_data)
        return Response(self.present(secret), status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        data = SecretUpdateSerializer(data=json_object_body(request), partial=kwargs.get("partial", False))
        data.is_valid(raise_exception=True)
        secret = services.secret_update(tenant=self.tenant, actor=self.actor, secret=self.get_object(), **data.validated_data)
        return Response(self.present(secret))

    def perform_destroy(self, current):
        services.secret_delete(tenant=self.tenant, actor=self.actor, secret=current)
