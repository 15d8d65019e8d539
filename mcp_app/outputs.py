"""Output schemas of the tools, derived from the same document schemas as their input.

Clients validate `structuredContent` against `outputSchema` (the SDK's client raises on a
mismatch), so each schema says what every answer has for sure: the document's always-present
top-level fields and their JSON types, nothing nested (the input schema of the same document, and
the `backflow://docs/…` resources, say the rest: a compact `tools/list` matters to the model that
reads it). Fields the answer may carry beyond these are allowed.
"""

def document(schema, *, required, **extra):
    """An object with a document's always-present top-level fields, typed as in `schema`, plus
    `extra` ones (the input schema of the same document describes the rest)."""
    properties = {name: {"type": schema["properties"][name]["type"]} if "type" in schema["properties"][name] else {}
                  for name in required if name in schema["properties"]}
    return {"type": "object", "properties": {**properties, **extra}, "required": list(required)}


def obj(required=(), **properties):
    return {"type": "object", "properties": properties, "required": list(required) or list(properties)}


def array(items):
    return {"type": "array", "items": items}


def listing(key, item, **extra):
    """{key: [item…]} (and `extra` optional fields)."""
    return {"type": "object", "properties": {key: array(item), **extra}, "required": [key]}


STRING, INTEGER, BOOLEAN = {"type": "string"}, {"type": "integer"}, {"type": "boolean"}
NULLABLE_STRING = {"type": ["string", "null"]}
DELETED_NAME = obj(deleted=STRING)
