"""The base viewsets every tenant API inherits: tenant and scope checks cannot be forgotten."""

from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.metadata import SimpleMetadata
from rest_framework.response import Response

from backflow.errors import InvalidInput
from backflow.validation import nul_errors, openapi_schema
from tenants.permissions import HasScope, IsTenantPrincipal, required_scope_for

ERROR_SCHEMA = {
    "type": "object",
    "properties": {
        "detail": {"type": "string"},
        "errors": {
            "type": "object",
            "description": "Field path -> messages, e.g. {\"endpoints[0].method\": [\"…\"]}.",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
    "required": ["detail"],
}
ERROR_RESPONSES = {
    400: OpenApiResponse(ERROR_SCHEMA, description="Invalid input; `errors` names each bad field."),
    401: OpenApiResponse(ERROR_SCHEMA, description="Missing, invalid, expired or revoked credentials."),
    403: OpenApiResponse(ERROR_SCHEMA, description="Missing scope or inactive tenant."),
    404: OpenApiResponse(ERROR_SCHEMA, description="Not found (or another tenant's)."),
}


CONFLICT = {409: OpenApiResponse(ERROR_SCHEMA, description="Name (or path and method) already taken, or still in use.")}
TIMESTAMPS = {
    "createdAt": {"type": "string", "format": "date-time", "readOnly": True},
    "updatedAt": {"type": "string", "format": "date-time", "readOnly": True},
}


def paged(item_schema):
    return {"type": "object", "properties": {
        "count": {"type": "integer"}, "next": {"type": "string", "nullable": True},
        "previous": {"type": "string", "nullable": True}, "results": {"type": "array", "items": item_schema},
    }}


def document_schema_view(noun, schema, **read_only):
    """OpenAPI for a DocumentViewSet, all derived from the document's one JSON Schema: the request
    body, the PATCH body (same fields, none required) and the answer (plus timestamps and `read_only`)."""
    request = openapi_schema(schema)
    patch = {k: v for k, v in request.items() if k != "required"}  # OpenAPI forbids an empty `required`
    response = {**request, "properties": {**request["properties"],
                                          **{k: {**v, "readOnly": True} for k, v in read_only.items()}, **TIMESTAMPS}}
    request, patch = {"application/json": request}, {"application/json": patch}
    return extend_schema_view(
        list=extend_schema(summary=f"List {noun}s", responses={200: paged(response)}),
        retrieve=extend_schema(summary=f"Get one {noun}", responses={200: response, **ERROR_RESPONSES}),
        create=extend_schema(summary=f"Create a {noun}", request=request, responses={201: response, **ERROR_RESPONSES, **CONFLICT}),
        update=extend_schema(summary=f"Replace a {noun}", request=request, responses={200: response, **ERROR_RESPONSES, **CONFLICT}),
        partial_update=extend_schema(summary=f"Change some fields of a {noun}", request=patch, responses={200: response, **ERROR_RESPONSES, **CONFLICT}),
        destroy=extend_schema(summary=f"Delete a {noun}", responses={204: None, **ERROR_RESPONSES, **CONFLICT}),
    )


class TenantScopedViewSet(viewsets.GenericViewSet):
    """Resolves `self.tenant` from the credentials and checks the resource's scope.

    Subclasses implement `get_tenant_queryset(tenant)`; the tenant is always applied here.
    """

    permission_classes = [IsTenantPrincipal, HasScope]
    model = None
    scope_resource = None
    action_scopes = {}

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self.tenant = request.auth.tenant
        self.actor = request.auth

    def required_scope(self, request):
        return required_scope_for(self, request)

    def get_queryset(self):
        if getattr(self, "swagger_fake_view", False):  # OpenAPI generation has no request tenant
            return self.model.objects.none()
        return self.get_tenant_queryset(self.request.auth.tenant)

    def get_tenant_queryset(self, tenant):
        raise NotImplementedError


def json_object_body(request):
    """The request's JSON object; a NUL character anywhere in it is refused here, named by its
    field, for the views whose fields are DRF serializers' as for those validated by a schema."""
    if not isinstance(request.data, dict):
        raise InvalidInput.single("body", "Send a JSON object.")
    if nul := nul_errors(request.data):
        raise InvalidInput("Invalid input.", nul)
    return dict(request.data)


class DocumentMetadata(SimpleMetadata):
    """OPTIONS answers for document views. Their bodies are JSON Schemas (see /api/schema/), not DRF
    serializers, so there are no serializer fields to describe (DRF's default would crash on it)."""

    def determine_actions(self, request, view):
        return {}


class DocumentViewSet(TenantScopedViewSet):
    """List/retrieve/create/update/delete of JSON documents, each write one service call.

    Subclasses provide `present(obj)` (model -> document) and the `perform_*` service calls.
    """

    metadata_class = DocumentMetadata

    def list(self, request, *args, **kwargs):
        queryset = self.filter_queryset(self.get_queryset())
        page = self.paginate_queryset(queryset)
        return self.get_paginated_response([self.present(obj) for obj in page])

    def retrieve(self, request, *args, **kwargs):
        return Response(self.present(self.get_object()))

    def create(self, request, *args, **kwargs):
        document = self.perform_create(json_object_body(request))
        return Response(document, status=status.HTTP_201_CREATED)

    def update(self, request, *args, **kwargs):
        current = self.get_object()
        return Response(self.perform_update(current, json_object_body(request), partial=kwargs.get("partial", False)))

    def partial_update(self, request, *args, **kwargs):
        return self.update(request, *args, partial=True, **kwargs)

    def destroy(self, request, *args, **kwargs):
        self.perform_destroy(self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
