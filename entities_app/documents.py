"""Collections, entities and apps as JSON documents: their schemas and the checks around them.

The filter language is shared by REST, MCP and app page bindings:
`{"status": "active", "price": {"gte": 10}, "tags": {"contains": "yoga"}}` — a bare value means
`eq`; operators are eq ne gt gte lt lte in contains icontains exists. Fields are top-level keys
of the entity data, or `createdAt` / `updatedAt`. Sort with "field" or "-field" (or a list).

Filters come from tenants and their callers (REST, MCP, app documents), so they are bounded:
only these operators, field names that Django cannot read as lookups (no `__`) or JSON paths
(letters, digits, `_`, `-`), at most FILTER_MAX_CONDITIONS conditions, operands nested at most
FILTER_MAX_DEPTH levels and at most FILTER_MAX_VALUE_CHARS characters of JSON each (issue 14;
operators may change the last three with settings of the same name prefixed BACKFLOW_).
"""

import json
import re

from django.conf import settings

from backflow import tenant_schemas
from backflow.errors import InvalidInput
from backflow.jsonbody import depth_exceeds
from backflow.validation import Problems, schema_errors
from integrations_app.documents import NAME_HELP, NAME_PATTERN

OPERATORS = ("eq", "ne", "gt", "gte", "lt", "lte", "in", "contains", "icontains", "exists")
TIMESTAMP_FIELDS = {"createdAt": "created_at", "updatedAt": "updated_at"}
FIELD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,62}$"
# A filter's field: no "__", which Django would read as a lookup (`name__regex`).
FILTER_FIELD_PATTERN = r"^(?!.*__)[A-Za-z_][A-Za-z0-9_-]{0,62}$"
FILTER_FIELD_HELP = ("a field name is a letter or _ and then up to 62 letters, digits, _ or -, "
                     "without \"__\" (or createdAt / updatedAt).")
FILTER_MAX_FIELDS = 20
FILTER_MAX_CONDITIONS = 20  # (field, operator) pairs in one filter
FILTER_MAX_DEPTH = 4  # lists/objects nested in one operand: {"in": [1, 2]} is 1, {"eq": {"a": [1]}} is 2
FILTER_MAX_VALUE_CHARS = 4000  # one operand, as JSON (an `in` list counts whole)
APP_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
PAGE_PATH_PATTERN = r"^(|[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*)$"
COMPONENT_TYPES = ("table", "list", "detail", "form", "stat", "markdown")
BOUND_COMPONENTS = {"table", "list", "detail", "form", "stat"}
MAX_LIMIT = 500

FILTERS_SCHEMA = {
    "type": "object",
    "description": (
        "Field -> value (equals) or {operator: value}; operators eq ne gt gte lt lte in contains "
        "icontains exists, e.g. {\"status\": \"active\", \"price\": {\"gte\": 10}}; names, operators and bounds: "
        "backflow://docs/filters."
    ),
    # Field names are checked by check_filters, not by "propertyNames": its errors would name only
    # "filters", and the answer must name "filters.<field>".
    "maxProperties": FILTER_MAX_FIELDS,
}
SORT_SCHEMA = {
    "description": "\"field\" ascending, \"-field\" descending, or a list of those; fields of the data or createdAt/updatedAt.",
    "anyOf": [
        {"type": "string", "pattern": r"^-?[A-Za-z_][A-Za-z0-9_-]{0,62}$"},
        {"type": "array", "items": {"type": "string", "pattern": r"^-?[A-Za-z_][A-Za-z0-9_-]{0,62}$"}, "maxItems": 3},
    ],
}

COLLECTION_SCHEMA = {
    "type": "object",
    "title": "Collection",
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN, "x-pattern-help": NAME_HELP, "description": "Unique name, e.g. \"members\"."},
        "description": {"type": "string", "maxLength": 2000},
        "schema": {
            "type": ["object", "null"],
            "description": "Optional JSON Schema (draft 2020-12) every entity's data must satisfy, e.g. "
            "{\"type\": \"object\", \"properties\": {\"name\": {\"type\": \"string\"}}, \"required\": [\"name\"]}.",
        },
    },
    "required": ["name"],
    "additionalProperties": False,
}

BINDING_SCHEMA = {
    "type": "object",
    "properties": {
        "collection": {"type": "string", "pattern": NAME_PATTERN, "x-pattern-help": NAME_HELP},
        "filters": FILTERS_SCHEMA,
        "sort": SORT_SCHEMA,
        "fields": {"type": "array", "items": {"type": "string", "pattern": FIELD_PATTERN}, "maxItems": 50},
    },
    "required": ["collection"],
    "additionalProperties": False,
}
COMPONENT_PROPS = {
    "type": "object",
    "description": "Per component: title; table/list pageSize (1-100); stat label, op (count|sum), field; "
                   "detail entityId; form submitLabel; markdown text.",
    "properties": {
        "title": {"type": "string", "maxLength": 200},
        "pageSize": {"type": "integer", "minimum": 1, "maximum": 100},
        "label": {"type": "string", "maxLength": 200},
        "op": {"type": "string", "enum": ["count", "sum"]},
        "field": {"type": "string", "pattern": FIELD_PATTERN},
        "entityId": {"type": "string", "maxLength": 100},
        "submitLabel": {"type": "string", "maxLength": 100},
        "text": {"type": "string", "maxLength": 100_000},
    },
}
COMPONENT_SCHEMA = {
    "type": "object",
    "description": (
        "table/list: entities of binding.collection (filters, sort, fields); detail: one entity (?id=); "
        "form: creates an entity from binding.fields; stat: props.op count|sum (props.field for sum) over the "
        "binding; markdown: props.text."
    ),
    "properties": {
        "type": {"type": "string", "enum": list(COMPONENT_TYPES)},
        "props": COMPONENT_PROPS,
        "binding": BINDING_SCHEMA,
    },
    "required": ["type"],
    "additionalProperties": False,
}
PAGE_SCHEMA = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "pattern": PAGE_PATH_PATTERN, "x-pattern-help": "lower-case segments like \"members\" or \"members/new\"; \"\" is the home page.", "maxLength": 200},
        "title": {"type": "string", "maxLength": 200},
        "components": {"type": "array", "items": COMPONENT_SCHEMA, "maxItems": 50},
    },
    "required": ["path", "components"],
    "additionalProperties": False,
}
APP_SCHEMA = {
    "type": "object",
    "title": "App",
    "description": "Pages of components bound to collections, served at /apps/<tenant>/<id>/<page path>.",
    "properties": {
        "id": {"type": "string", "pattern": APP_ID_PATTERN, "x-pattern-help": NAME_HELP, "description": "URL id, e.g. \"studio\" (default: from the name)."},
        "name": {"type": "string", "minLength": 1, "maxLength": 200, "description": "Shown as the app's heading."},
        "description": {"type": "string", "maxLength": 2000, "description": "What the app is for."},
        "public": {"type": "boolean", "description": "Anyone may view the pages (read-only; forms need a signed-in member). Default false."},
        "pages": {"type": "array", "items": PAGE_SCHEMA, "minItems": 1, "maxItems": 50,
                  "description": "Each page: a path (\"\" is the home page), a title and its components."},
    },
    "required": ["name", "pages"],
    "additionalProperties": False,
}


def clean_collection(document):
    if not isinstance(document, dict):
        raise InvalidInput.single("body", "Send a JSON object.")
    doc = {k: v for k, v in document.items() if k not in ("createdAt", "updatedAt", "entityCount")}
    problems = Problems(schema_errors(COLLECTION_SCHEMA, doc))
    problems.raise_if_any()
    doc.setdefault("description", "")
    doc.setdefault("schema", None)
    if doc["schema"] is not None:
        for where, messages in tenant_schemas.schema_problems(doc["schema"]).items():
            for message in messages:
                problems.add(where, message)
        if doc["schema"].get("type", "object") not in ("object", ["object"]):
            problems.add("schema.type", "entity data is a JSON object: use \"type\": \"object\".")
    problems.raise_if_any()
    return doc


def schema_fields(collection_schema):
    """Top-level property names a collection's schema declares, or None when it does not constrain them."""
    if not collection_schema or "properties" not in collection_schema:
        return None
    return set(collection_schema["properties"])


def filter_limits():
    """(max conditions, max operand depth, max operand characters): settings win over the defaults."""
    return (getattr(settings, "BACKFLOW_FILTER_MAX_CONDITIONS", FILTER_MAX_CONDITIONS),
            getattr(settings, "BACKFLOW_FILTER_MAX_DEPTH", FILTER_MAX_DEPTH),
            getattr(settings, "BACKFLOW_FILTER_MAX_VALUE_CHARS", FILTER_MAX_VALUE_CHARS))


def _operand_problem(value, max_depth, max_chars):
    """What is wrong with one operand's size, or None. Depth first: it bounds json.dumps's recursion."""
    if depth_exceeds(value, max_depth):
        return f"the value nests lists/objects more than {max_depth} levels deep."
    try:
        size = len(json.dumps(value))
    except (TypeError, ValueError):  # not JSON (only a caller in this process could send that)
        return "give a JSON value."
    if size > max_chars:
        return f"the value is {size} characters of JSON; at most {max_chars}."
    return None


def _check_filter_shape(filters, where):
    """Field names, operators and bounds, before anything else looks at the filter: InvalidInput
    naming `<where>.<field>` (or `<where>.<field>.<op>`) for each problem."""
    problems = Problems()
    if not isinstance(filters, dict):
        problems.add(where, "Send filters as a JSON object.")
        problems.raise_if_any()
    if len(filters) > FILTER_MAX_FIELDS:
        problems.add(where, f"{len(filters)} fields; filter on at most {FILTER_MAX_FIELDS}.")
        problems.raise_if_any()
    max_conditions, max_depth, max_chars = filter_limits()
    conditions = 0
    for field, condition in filters.items():
        path = f"{where}.{field}"
        if not isinstance(field, str) or not (field in TIMESTAMP_FIELDS or re.fullmatch(FILTER_FIELD_PATTERN, field)):
            problems.add(path, f"{field!r} is not a field name: {FILTER_FIELD_HELP}")
            continue
        bare = not isinstance(condition, dict)  # a bare value means eq
        for op, value in ([("eq", condition)] if bare else condition.items()):
            conditions += 1
            if op not in OPERATORS:
                problems.add(f"{path}.{op}", f"unknown operator; use one of {', '.join(OPERATORS)}.")
                continue
            problem = _operand_problem(value, max_depth, max_chars)
            if problem:
                problems.add(path if bare else f"{path}.{op}", problem)
    if conditions > max_conditions:
        problems.add(where, f"{conditions} conditions; at most {max_conditions} in one filter.")
    problems.raise_if_any()


def check_filters(filters, known_fields, where="filters"):
    """InvalidInput naming each bad field name, unknown operator, oversize operand, wrong value
    type or undeclared field."""
    _check_filter_shape(filters, where)
    problems = Problems(schema_errors(FILTERS_SCHEMA, filters))
    problems.raise_if_any()
    for field, condition in filters.items():
        path = f"{where}.{field}"
        if known_fields is not None and field not in known_fields and field not in TIMESTAMP_FIELDS:
            problems.add(path, f"unknown field; the collection's fields are {', '.join(sorted(known_fields)) or 'none'}.")
        if isinstance(condition, dict):
            if not condition:
                problems.add(path, f"give an operator: {', '.join(OPERATORS)}.")
            for op, value in condition.items():
                if op == "in" and not isinstance(value, list):
                    problems.add(f"{path}.in", "give a list of values.")
                elif op == "exists" and not isinstance(value, bool):
                    problems.add(f"{path}.exists", "give true or false.")
                elif op in ("gt", "gte", "lt", "lte") and (isinstance(value, bool) or not isinstance(value, (int, float, str))):
                    problems.add(f"{path}.{op}", "compare with a number or a string.")
                elif op == "icontains" and not isinstance(value, str):
                    problems.add(f"{path}.icontains", "give a string.")
    problems.raise_if_any()


def parse_sort(sort, known_fields, where="sort"):
    """[(field, descending)], defaulting to newest first."""
    if sort in (None, "", []):
        return [("createdAt", True)]
    problems = Problems(schema_errors(SORT_SCHEMA, sort))
    problems.raise_if_any()
    keys = [sort] if isinstance(sort, str) else sort
    parsed = []
    for key in keys:
        field = key.lstrip("-")
        if known_fields is not None and field not in known_fields and field not in TIMESTAMP_FIELDS:
            problems.add(where, f"cannot sort by unknown field {field!r}.")
        parsed.append((field, key.startswith("-")))
    problems.raise_if_any()
    return parsed


def clean_app(document, *, find_collection):
    """A validated app document; `find_collection(name)` returns a Collection or None."""
    if not isinstance(document, dict):
        raise InvalidInput.single("body", "Send a JSON object.")
    doc = {k: v for k, v in document.items() if k not in ("createdAt", "updatedAt", "url")}
    problems = Problems(schema_errors(APP_SCHEMA, doc))
    problems.raise_if_any()
    doc.setdefault("description", "")
    doc.setdefault("public", False)
    seen = set()
    for p_index, page in enumerate(doc["pages"]):
        page.setdefault("title", page["path"] or doc["name"])
        if page["path"] in seen:
            problems.add(f"pages[{p_index}].path", f"two pages have the path {page['path']!r}.")
        seen.add(page["path"])
        for c_index, component in enumerate(page["components"]):
            where = f"pages[{p_index}].components[{c_index}]"
            component.setdefault("props", {})
            _check_component(problems, where, component, find_collection)
    problems.raise_if_any()
    return doc


def _check_component(problems, where, component, find_collection):
    kind, binding = component["type"], component.get("binding")
    if kind == "markdown":
        if not isinstance(component["props"].get("text"), str):
            problems.add(f"{where}.props.text", "a markdown component needs its text.")
        return
    if binding is None:
        problems.add(f"{where}.binding", f"a {kind} component needs a binding to a collection.")
        return
    collection = find_collection(binding["collection"])
    if collection is None:
        problems.add(f"{where}.binding.collection", f"no collection named {binding['collection']!r}; create it first.")
        return
    known = schema_fields(collection.schema)
    for index, field in enumerate(binding.get("fields", [])):
        if known is not None and field not in known and field not in TIMESTAMP_FIELDS:
            problems.add(f"{where}.binding.fields[{index}]", f"{collection.name!r} has no field {field!r} ({', '.join(sorted(known))}).")
    try:
        check_filters(binding.get("filters", {}), known, where=f"{where}.binding.filters")
        parse_sort(binding.get("sort"), known, where=f"{where}.binding.sort")
    except InvalidInput as exc:
        for path, messages in exc.errors.items():
            for message in messages:
                problems.add(path, message)
    if kind == "stat":
        op = component["props"].get("op", "count")
        if op not in ("count", "sum"):
            problems.add(f"{where}.props.op", "use count or sum.")
        elif op == "sum" and not isinstance(component["props"].get("field"), str):
            problems.add(f"{where}.props.field", "sum needs the field to add up.")
    if kind == "form" and not binding.get("fields") and known is None:
        problems.add(f"{where}.binding.fields", "name the fields the form asks for (the collection has no schema to take them from).")
