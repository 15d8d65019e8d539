"""Reads for collections, entities and apps."""

import uuid

from backflow.errors import NotFound
from entities_app import query
from entities_app.documents import check_filters, parse_sort, schema_fields
from entities_app.models import App, Collection, Entity


def collection_list(*, tenant):
    return Collection.objects.for_tenant(tenant)


def collection_get(*, tenant, name):
    collection = Collection.objects.for_tenant(tenant).filter(name=name).first()
    if collection is None:
        raise NotFound(f"No collection named {name!r}.")
    return collection


def entity_get(*, tenant, collection, entity_id):
    entity = Entity.objects.for_tenant(tenant).filter(collection=collection, pk=_uuid_or_none(entity_id)).first()
    if entity is None:
        raise NotFound(f"No entity {entity_id} in collection {collection.name!r}.")
    return entity


def _uuid_or_none(value):
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def entity_query(*, tenant, collection, filters=None, sort=None):
    """(queryset, parsed sort) for the filter language, checked against the collection's fields."""
    known = schema_fields(collection.schema)
    filters = filters or {}
    check_filters(filters, known)
    parsed_sort = parse_sort(sort, known)
    queryset = Entity.objects.for_tenant(tenant).filter(collection=collection)
    return query.apply_filters(queryset, filters), parsed_sort


def entity_page(*, tenant, collection, filters=None, sort=None, limit=50, cursor=None):
    """(entities, next_cursor): one page of a filtered, sorted list."""
    queryset, parsed_sort = entity_query(tenant=tenant, collection=collection, filters=filters, sort=sort)
    return query.page(queryset, sort=parsed_sort, filters=filters or {}, limit=limit, cursor=cursor)


def app_list(*, tenant):
    return App.objects.for_tenant(tenant)


def app_get(*, tenant, slug):
    app = App.objects.for_tenant(tenant).filter(slug=slug).first()
    if app is None:
        raise NotFound(f"No app with id {slug!r}.")
    return app


def apps_binding(*, tenant, collection_name):
    """Apps with a component bound to the collection."""
    return [
        app for app in app_list(tenant=tenant)
        if any(c.get("binding", {}).get("collection") == collection_name for page in app.pages for c in page["components"])
    ]
