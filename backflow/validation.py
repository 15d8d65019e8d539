"""Validate JSON documents against the JSON Schemas that also describe our MCP tools and OpenAPI.

One schema per resource serves three doors: service-layer validation, the MCP tool's
inputSchema and the OpenAPI request body. Errors name the field path of each problem.
"""

from jsonschema import Draft202012Validator

from backflow.errors import InvalidInput


def field_path(parts):
    path = ""
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path


def _message(error):
    if error.validator == "additionalProperties":
        allowed = sorted(error.schema.get("properties", {}))
        extra = ", ".join(map(repr, sorted(set(error.instance) - set(allowed))))
        if not allowed:
            return f"Unknown field(s) {extra}: this takes no fields."
        return f"Unknown field(s) {extra}; allowed: {', '.join(allowed)}."
    if error.validator == "required":
        return error.message.replace("is a required property", "is required")
    if error.validator == "pattern" and "x-pattern-help" in error.schema:
        return f"{error.instance!r} is not valid: {error.schema['x-pattern-help']}"
    if error.validator == "enum":
        return f"{error.instance!r} is not one of {', '.join(map(str, error.validator_value))}."
    return error.message


_validators = {}


def validator_for(schema):
    """Compiled validators are cached per schema object (schemas are module constants)."""
    validator = _validators.get(id(schema))
    if validator is None or validator.schema is not schema:
        validator = _validators[id(schema)] = Draft202012Validator(schema)
    return validator


def schema_errors(schema, document):
    """{"field.path": [messages]} for every violation of `schema` (empty when valid)."""
    errors = {}
    for error in validator_for(schema).iter_errors(document):
        parts = list(error.absolute_path)
        if error.validator == "required":
            missing = error.message.split("'")[1] if "'" in error.message else ""
            parts.append(missing)
            message = "This field is required."
        else:
            message = _message(error)
        errors.setdefault(field_path(parts) or "body", []).append(message)
    return errors



def public_schema(schema):
    """A schema without our `x-…` helper keywords, for publishing (OpenAPI, MCP inputSchema)."""
    if isinstance(schema, dict):
        return {k: public_schema(v) for k, v in schema.items() if not k.startswith("x-")}
    if isinstance(schema, list):
        return [public_schema(v) for v in schema]
    return schema


OPENAPI_30_UNSUPPORTED = {"propertyNames", "const", "prefixItems", "$defs", "if", "then", "else", "unevaluatedProperties"}


def openapi_schema(schema):
    """public_schema for OpenAPI 3.0: `"type": [X, "null"]` becomes `nullable: true`, and keywords
    3.0 lacks are left out (the service still enforces them)."""
    schema = public_schema(schema)
    if isinstance(schema, dict):
        schema = {k: openapi_schema(v) for k, v in schema.items() if k not in OPENAPI_30_UNSUPPORTED}
        kinds = schema.get("type")
        if isinstance(kinds, list) and "null" in kinds and len(kinds) == 2:
            schema["type"] = next(kind for kind in kinds if kind != "null")
            schema["nullable"] = True
    elif isinstance(schema, list):
        schema = [openapi_schema(v) for v in schema]
    return schema


class Problems:
    """Collects field errors across checks so one answer names every problem."""

    def __init__(self, errors=None):
        self.errors = dict(errors or {})

    def add(self, path, message):
        self.errors.setdefault(field_path(path) if isinstance(path, (list, tuple)) else path, []).append(message)

    def raise_if_any(self):
        if self.errors:
            raise InvalidInput("Invalid input.", self.errors)
