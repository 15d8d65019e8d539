from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.response import Response

from backflow.errors import InvalidInput
from backflow.jsonbody import JsonBodyError, parse_json
from entities_app import selectors, services
from entities_app.documents import APP_SCHEMA, COLLECTION_SCHEMA, MAX_LIMIT
from entities_app.models import App, Collection, Entity
from tenants.viewsets import (
    CONFLICT, ERROR_RESPONSES, TIMESTAMPS, DocumentViewSet, TenantScopedViewSet, document_schema_view, json_object_body,
)

ENTITY_RESPONSE = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"}, "collection": {"type": "string"},
        "data": {"type": "object"}, "version": {"type": "integer"}, **TIMESTAMPS,
    },
}
ENTITY_WRITE = {
    "type": "object",
    "properties": {
        "data": {"type": "object", "description": "The entity's fields; checked against the collection's schema."},
        "version": {"type": "integer", "description": "Updates only: the version you read (or send If-Match)."},
    },
    "required": ["data"],
}
ENTITY_PAGE = {"type": "object", "properties": {"results": {"type": "array", "items": ENTITY_RESPONSE}, "nextCursor": {"type": "string", "nullable": True}}}
LIST_PARAMETERS = [
    OpenApiParameter("filters", str, description='JSON filter, e.g. {"status": "active", "price": {"gte": 10}}'),
    OpenApiParameter("sort", str, description="field or -field (data fields, createdAt, updatedAt); comma-separated for several"),
    OpenApiParameter("limit", int, description=f"1-{MAX_LIMIT}, default 50"),
    OpenApiParameter("cursor", str, description="nextCursor of the previous page"),
]


@document_schema_view("collection", COLLECTION_SCHEMA)
class CollectionViewSet(DocumentViewSet):
    """Entity collections of the tenant, each with an optional JSON Schema for its entities."""

    model = Collection
    scope_resource = "entities"
    lookup_field = "name"
    lookup_value_regex = "[^/]+"

    def get_tenant_queryset(self, tenant):
        return selectors.collection_list(tenant=tenant)

    def present(self, obj):
        return obj.to_document()

    def perform_create(self, document):
        return self.present(services.collection_create(tenant=self.tenant, actor=self.actor, document=document))

    def perform_update(self, current, document, partial):
        return self.present(services.collection_update(tenant=self.tenant, actor=self.actor, name=current.name, changes=document, partial=partial))

    def perform_destroy(self, current):
        services.collection_delete(tenant=self.tenant, actor=self.actor, name=current.name)


@extend_schema_view(
    list=extend_schema(summary="List entities (filtered, sorted, cursor pages)", parameters=LIST_PARAMETERS, responses={200: ENTITY_PAGE, **ERROR_RESPONSES}),
    retrieve=extend_schema(summary="Get one entity", responses={200: ENTITY_RESPONSE, **ERROR_RESPONSES}),
    create=extend_schema(summary="Create an entity", request={"application/json": ENTITY_WRITE}, responses={201: ENTITY_RESPONSE, **ERROR_RESPONSES}),
    update=extend_schema(summary="Replace an entity's data (If-Match: version)", request={"application/json": ENTITY_WRITE}, responses={200: ENTITY_RESPONSE, **ERROR_RESPONSES, **CONFLICT}),
    partial_update=extend_schema(summary="Merge fields into an entity's data (If-Match: version)", request={"application/json": ENTITY_WRITE}, responses={200: ENTITY_RESPONSE, **ERROR_RESPONSES, **CONFLICT}),
    destroy=extend_schema(summary="Delete an entity", responses={204: None, **ERROR_RESPONSES, **CONFLICT}),
)
@extend_schema(parameters=[
    OpenApiParameter("collection_name", str, OpenApiParameter.PATH, description="The collection's name."),
    OpenApiParameter("id", str, OpenApiParameter.PATH, description="The entity's id (UUID)."),
])
class EntityViewSet(TenantScopedViewSet):
    """Entities of one collection. Updates take the version read (If-Match or `version`): 409 when stale."""

    model = Entity
    scope_resource = "entities"
    lookup_value_regex = "[^/]+"
    pagination_class = None

    def get_tenant_queryset(self, tenant):
        return selectors.entity_query(tenant=tenant, collection=self.collection())[0]

    def collection(self):
        return selectors.collection_get(tenant=self.tenant, name=self.kwargs["collection_name"])

    def list(self, request, collection_name=None):
        params = request.query_params
        filters = _json_param(params.get("filters"), "filters", {})
        sort = [s for s in params.get("sort", "").split(",") if s] or None
        limit = _int_param(params.get("limit"), "limit", 50)
        collection = self.collection()
        rows, next_cursor = selectors.entity_page(tenant=self.tenant, collection=collection, filters=filters, sort=sort,
                                                  limit=limit, cursor=params.get("cursor"))
        return Response({"results": [e.to_document(collection.name) for e in rows], "nextCursor": next_cursor})

    def retrieve(self, request, collection_name=None, pk=None):
        collection = self.collection()
        return Response(selectors.entity_get(tenant=self.tenant, collection=collection, entity_id=pk).to_document(collection.name))

    def create(self, request, collection_name=None):
        body = json_object_body(request)
        entity = services.entity_create(tenant=self.tenant, actor=self.actor, collection_name=collection_name, data=body.get("data"))
        return Response(entity.to_document(collection_name), status=status.HTTP_201_CREATED)

    def update(self, request, collection_name=None, pk=None, partial=False):
        body = json_object_body(request)
        entity = services.entity_update(
            tenant=self.tenant, actor=self.actor, collection_name=collection_name, entity_id=pk,
            data=body.get("data"), partial=partial, expected_version=_expected_version(request, body),
        )
        return Response(entity.to_document(collection_name))

    def partial_update(self, request, collection_name=None, pk=None):
        return self.update(request, collection_name, pk, partial=True)

    def destroy(self, request, collection_name=None, pk=None):
        services.entity_delete(tenant=self.tenant, actor=self.actor, collection_name=collection_name, entity_id=pk,
                               expected_version=_expected_version(request, {}))
        return Response(status=status.HTTP_204_NO_CONTENT)


def _json_param(raw, name, default):
    if not raw:
        return default
    try:
        return parse_json(raw)  # bounded depth: a 100 000-deep parameter is a 400, not a RecursionError
    except JsonBodyError as exc:
        raise InvalidInput.single(name, f"not acceptable JSON: {exc}") from exc


def _int_param(raw, name, default):
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise InvalidInput.single(name, "give a whole number.") from exc


def _expected_version(request, body):
    header = request.headers.get("If-Match")
    if header:
        try:
            return int(header.strip('W/"'))
        except ValueError as exc:
            raise InvalidInput.single("If-Match", "give the entity's version number.") from exc
    return body.get("version")


@document_schema_view("app", APP_SCHEMA, url={"type": "string"})
@extend_schema(parameters=[OpenApiParameter("slug", str, OpenApiParameter.PATH, description="The app's id.")])
class AppViewSet(DocumentViewSet):
    """Apps: pages of components bound to collections, served at /apps/<tenant>/<id>/<page path>."""

    model = App
    scope_resource = "apps"
    lookup_field = "slug"
    lookup_url_kwarg = "slug"
    lookup_value_regex = "[^/]+"

    def get_tenant_queryset(self, tenant):
        return selectors.app_list(tenant=tenant).select_related("tenant")

    def present(self, obj):
        return obj.to_document()

    def perform_create(self, document):
        return self.present(services.app_create(tenant=self.tenant, actor=self.actor, document=document))

    def perform_update(self, current, document, partial):
        return self.present(services.app_update(tenant=self.tenant, actor=self.actor, slug=current.slug, changes=document, partial=partial))

    def perform_destroy(self, current):
        services.app_delete(tenant=self.tenant, actor=self.actor, slug=current.slug)
