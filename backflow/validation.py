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
    """{"field.path": [messages]} for every violation of `schema`, and every NUL character (empty when valid)."""
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
    for path, messages in nul_errors(document).items():
        errors.setdefault(path, []).extend(messages)
    return errors


NUL_MESSAGE = "contains a NUL character (\\u0000), which cannot be stored; remove it."


def nul_errors(value, parts=()):
    """{"field.path": [message]} for each string or key holding U+0000: PostgreSQL refuses it in
    text and JSON columns, so a document that holds one would fail at the database instead."""
    errors = {}
    if isinstance(value, str) and "\x00" in value:
        errors[field_path(parts) or "body"] = [NUL_MESSAGE]
    elif isinstance(value, dict):
        for key, item in value.items():
            shown = key.replace("\x00", "\\u0000") if isinstance(key, str) else key
            if shown != key:
                errors[field_path([*parts, shown])] = [NUL_MESSAGE]
            errors.update(nul_errors(item, [*parts, shown]))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            errors.update(nul_errors(item, [*parts, index]))
    return errors


def without_nul(value):
    """A copy of a JSON value with U+0000 replaced, for records that must keep what was sent (audit)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, dict):
        return {without_nul(key): without_nul(item) for key, item in value.items()}
    if isinstance(value, list):
        return [without_nul(item) for item in value]
    return value


def public_schema(schema):
    """A schema without our `x-…` helper keywords, for publishing (OpenAPI, MCP inputSchema)."""
    if isinstance(schema, dict):
        return {k: public_schema(v) for k, v in schema.items() if not k.startswith("x-")}
    if isinstance(schema, list):
        return [public_schema(v) for v in schema]
    return schema


OPENAPI_30_UNSUPPORTED = {"propertyNames", "const", "prefixItems", "$defs", "if", "then", "else", "unevaluatedProperties"}


def openapi_schema(schema):
    """public_schema for OpenAPI 3.0: `"type": [X, "null"]` becomes `nullable: true`, a longer list
    of types (any JSON value) no `type` at all, and keywords 3.0 lacks are left out (the service
    still enforces them)."""
    schema = public_schema(schema)
    if isinstance(schema, dict):
        schema = {k: openapi_schema(v) for k, v in schema.items() if k not in OPENAPI_30_UNSUPPORTED}
        kinds = schema.get("type")
        if isinstance(kinds, list) and "null" in kinds and len(kinds) == 2:
            schema["type"] = next(kind for kind in kinds if kind != "null")
            schema["nullable"] = True
        elif isinstance(kinds, list):
            del schema["type"]
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
