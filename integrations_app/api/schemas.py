"""OpenAPI shapes derived from the document JSON Schemas (one description for every door)."""

import copy

from backflow.validation import openapi_schema
from integrations_app.documents import INTEGRATION_SCHEMA, ROUTE_SCHEMA


def _with_read_only(schema, **extra):
    out = openapi_schema(copy.deepcopy(schema))
    out["properties"].update(extra)
    return out


def _optional_fields(schema):
    """PATCH bodies: the same fields, none required (OpenAPI forbids an empty `required`)."""
    return {k: v for k, v in schema.items() if k != "required"}


TIMESTAMPS = {
    "createdAt": {"type": "string", "format": "date-time", "readOnly": True},
    "updatedAt": {"type": "string", "format": "date-time", "readOnly": True},
}
INTEGRATION_REQUEST = openapi_schema(INTEGRATION_SCHEMA)
INTEGRATION_PATCH = _optional_fields(INTEGRATION_REQUEST)
INTEGRATION_RESPONSE = _with_read_only(INTEGRATION_SCHEMA, **TIMESTAMPS)
ROUTE_REQUEST = openapi_schema(ROUTE_SCHEMA)
ROUTE_PATCH = _optional_fields(ROUTE_REQUEST)
ROUTE_RESPONSE = _with_read_only(ROUTE_SCHEMA, id={"type": "string", "format": "uuid", "readOnly": True}, **TIMESTAMPS)
