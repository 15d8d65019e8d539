"""JSON Schemas that tenants write (a collection's schema for its entities), checked when saved and
applied with no way out of the document and in bounded time.

jsonschema's defaults are made for trusted schemas: a `$ref` it cannot resolve in the document is
fetched (http(s) and `file:` URLs: a server-side request outside the egress guard and a local file
read), `pattern` runs Python's backtracking `re` (`^(a+)+$` on 30 characters froze the process),
and `uniqueItems` compares items pairwise. Here:

- `$ref` and `$dynamicRef` stay inside the document (`#…`): anything else is refused when the
  schema is saved, and the validator's registry is empty, so nothing is ever retrieved;
- `pattern` runs on RE2, in linear time; a pattern RE2 cannot run (backreferences, lookaround) is
  refused when the schema is saved; `patternProperties` is not supported (jsonschema applies it,
  and `additionalProperties` next to it, with Python's `re`);
- `uniqueItems` compares canonical JSON in a set;
- a schema that refers to itself without consuming anything is refused when saved, and a 400
  (never a 500) if met while validating.
"""

import json
from functools import lru_cache

import re2
from jsonschema import Draft202012Validator, ValidationError, validators
from jsonschema.exceptions import SchemaError
from referencing import Registry
from referencing.exceptions import Unresolvable

REFERENCE_KEYWORDS = ("$ref", "$dynamicRef")
UNSUPPORTED = {"patternProperties": "patternProperties is not supported: name the properties, or use propertyNames with a pattern."}
PROBES = ({}, [], "", 0, None, {"a": [{}]})
_RE2_OPTIONS = re2.Options()
_RE2_OPTIONS.log_errors = False


class UnusableSchema(ValueError):
    """The schema cannot be applied; the message names what to change."""


@lru_cache(maxsize=1024)
def _compiled(pattern):
    return re2.compile(pattern, _RE2_OPTIONS)


def _pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not _compiled(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _canonical(value):
    """JSON Schema equality as a hashable key: 1 and 1.0 are equal, true and 1 are not, key order
    does not matter."""

    def normal(item):
        if isinstance(item, float) and item.is_integer():
            return int(item)
        if isinstance(item, dict):
            return {key: normal(v) for key, v in item.items()}
        if isinstance(item, list):
            return [normal(v) for v in item]
        return item

    return json.dumps(normal(value), sort_keys=True)


def _unique_items(validator, unique, instance, schema):
    if not unique or not validator.is_type(instance, "array"):
        return
    seen = set()
    for item in instance:
        key = _canonical(item)
        if key in seen:
            yield ValidationError(f"{json.dumps(item)[:100]} appears more than once; items must be unique")
            return
        seen.add(key)


TenantSchemaValidator = validators.extend(Draft202012Validator, {"pattern": _pattern, "uniqueItems": _unique_items})


def _nodes(schema, where="schema"):
    """(where, subschema dict) for every dict in the schema."""
    if isinstance(schema, dict):
        yield where, schema
        for key, value in schema.items():
            yield from _nodes(value, f"{where}.{key}")
    elif isinstance(schema, list):
        for index, value in enumerate(schema):
            yield from _nodes(value, f"{where}[{index}]")


def schema_problems(schema):
    """{"schema.path": [message]} of what makes a tenant's schema unusable (empty when fine)."""
    problems = {}
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = ".".join(str(p) for p in exc.absolute_path)
        return {"schema" + (f".{where}" if where else ""): [f"not a valid JSON Schema: {exc.message}"]}
    for where, node in _nodes(schema):
        for keyword in REFERENCE_KEYWORDS:
            target = node.get(keyword)
            if isinstance(target, str) and not target.startswith("#"):
                problems.setdefault(f"{where}.{keyword}", []).append(
                    f"{target!r} points outside this schema; refer within it only (\"#/$defs/name\").")
        for keyword, message in UNSUPPORTED.items():
            if keyword in node and isinstance(node[keyword], dict):
                problems.setdefault(f"{where}.{keyword}", []).append(message)
        pattern = node.get("pattern")
        if isinstance(pattern, str):
            try:
                _compiled(pattern)
            except re2.error as exc:
                problems.setdefault(f"{where}.pattern", []).append(
                    f"{pattern!r} cannot run in linear time ({exc}); write it without backreferences or lookaround.")
    if not problems:
        validator = validator_of(schema)
        try:
            for probe in PROBES:
                list(validator.iter_errors(probe))
        except RecursionError:
            problems["schema"] = ["the schema refers to itself without end ($ref loops); break the loop."]
        except Unresolvable as exc:
            problems["schema"] = [f"a $ref does not resolve inside the schema ({exc}); fix its target."]
    return problems


def validator_of(schema):
    """A validator for a tenant's schema: nothing outside the document, linear-time patterns."""
    return TenantSchemaValidator(schema, registry=Registry())


def iter_errors(schema, instance):
    """The schema's errors for `instance`; UnusableSchema when the schema itself cannot be applied."""
    try:
        return list(validator_of(schema).iter_errors(instance))
    except RecursionError as exc:
        raise UnusableSchema("the collection's schema refers to itself without end ($ref loops); fix the schema.") from exc
    except Unresolvable as exc:
        raise UnusableSchema(f"the collection's schema has a $ref that does not resolve inside it ({exc}); fix the schema.") from exc
