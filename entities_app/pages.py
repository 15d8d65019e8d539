"""Turn an app page's components into what its template shows (live entities, stats, forms)."""

from markdown_it import MarkdownIt

from backflow.errors import InvalidInput, ServiceError
from entities_app import selectors, services
from entities_app.documents import TIMESTAMP_FIELDS, schema_fields

MARKDOWN = MarkdownIt("js-default")  # raw HTML disabled: app text cannot inject markup
DEFAULT_PAGE_SIZE = 25


class FormErrors(Exception):
    def __init__(self, index, errors, values):
        super().__init__("invalid form")
        self.index, self.errors, self.values = index, errors, values


def _collection(tenant, binding):
    return selectors.collection_get(tenant=tenant, name=binding["collection"])


def _columns(component, collection):
    fields = component["binding"].get("fields")
    if fields:
        return fields
    known = schema_fields(collection.schema)
    return sorted(known) if known else ["createdAt"]


def _value(entity, field):
    if field in TIMESTAMP_FIELDS:
        return getattr(entity, TIMESTAMP_FIELDS[field])
    return entity.data.get(field, "")


def form_fields(component, collection):
    """[(name, input type, required, choices)] from the binding and the collection's schema."""
    properties = (collection.schema or {}).get("properties", {})
    required = set((collection.schema or {}).get("required", []))
    names = component["binding"].get("fields") or sorted(properties)
    fields = []
    for name in names:
        spec = properties.get(name, {})
        kind = spec.get("type", "string")
        input_type = {"number": "number", "integer": "number", "boolean": "checkbox"}.get(kind, "text")
        fields.append({"name": name, "type": input_type, "kind": kind, "required": name in required, "choices": spec.get("enum")})
    return fields


def component_view(tenant, component, index, query):
    kind, props = component["type"], component.get("props", {})
    view = {"type": kind, "props": props, "index": index}
    if kind == "markdown":
        view["html"] = MARKDOWN.render(props.get("text", ""))
        return view
    try:
        _bind(tenant, component, view, query)
    except ServiceError as exc:  # the binding no longer fits: a collection deleted, a filter refused since it was saved
        view["problem"] = f"This component cannot be shown: {exc}"
    return view


def _bind(tenant, component, view, query):
    """Fill `view` with the entities of the component's binding."""
    kind, props, index = component["type"], component.get("props", {}), view["index"]
    binding = component["binding"]
    collection = _collection(tenant, binding)
    view["collection"] = collection
    if kind in ("table", "list"):
        size = props.get("pageSize")  # checked when saved; an app saved before that gets the default
        limit = size if isinstance(size, int) and not isinstance(size, bool) and 1 <= size <= 100 else DEFAULT_PAGE_SIZE

        def page(cursor):
            return selectors.entity_page(tenant=tenant, collection=collection, filters=binding.get("filters"),
                                         sort=binding.get("sort"), limit=limit, cursor=cursor)

        try:
            rows, next_cursor = page(query.get(f"c{index}") or None)
        except InvalidInput:  # a stale or edited link: start from the first page
            rows, next_cursor = page(None)
        columns = _columns(component, collection)
        view.update(columns=columns, next_cursor=next_cursor, cursor_param=f"c{index}",
                    rows=[{"id": e.id, "cells": [_value(e, c) for c in columns]} for e in rows])
    elif kind == "detail":
        entity_id = query.get("id") or props.get("entityId")
        entity = None
        if entity_id:
            try:
                entity = selectors.entity_get(tenant=tenant, collection=collection, entity_id=entity_id)
            except ServiceError:
                entity = None
        columns = _columns(component, collection)
        view.update(entity=entity, fields=[(c, _value(entity, c)) for c in columns] if entity else [])
    elif kind == "stat":
        queryset, _ = selectors.entity_query(tenant=tenant, collection=collection, filters=binding.get("filters"))
        if props.get("op", "count") == "sum":
            values = queryset.values_list("data", flat=True)
            view["value"] = sum(v.get(props["field"]) for v in values
                                if isinstance(v.get(props["field"]), (int, float)) and not isinstance(v.get(props["field"]), bool))
        else:
            view["value"] = queryset.count()
    elif kind == "form":
        view["fields"] = form_fields(component, collection)


def submit_form(tenant, actor, component, index, post):
    """Create the entity a form describes; FormErrors with messages per field otherwise."""
    collection = _collection(tenant, component["binding"])
    data, errors = {}, {}
    for field in form_fields(component, collection):
        raw = post.get(field["name"], "")
        if field["kind"] == "boolean":
            data[field["name"]] = raw == "on"
        elif raw == "":
            continue  # left empty: the schema decides whether that is allowed
        elif field["kind"] in ("number", "integer"):
            try:
                data[field["name"]] = int(raw) if field["kind"] == "integer" else float(raw)
            except ValueError:
                errors[field["name"]] = ["Enter a number."]
        else:
            data[field["name"]] = raw
    if errors:
        raise FormErrors(index, errors, post)
    try:
        return services.entity_create(tenant=tenant, actor=actor, collection_name=collection.name, data=data)
    except InvalidInput as exc:
        by_field = {}
        for path, messages in exc.errors.items():
            name = path.split(".", 1)[1].split("[")[0].split(".")[0] if path.startswith("data.") else "__all__"
            by_field.setdefault(name, []).extend(messages)
        raise FormErrors(index, by_field, post) from exc
