"""`{{…}}` templates shared by routes, workflows and operator config.

A value that is exactly one placeholder keeps its JSON type (`"{{input.count}}"` -> 3); inside a
longer string a placeholder is replaced by its text (JSON for objects and lists).
Roots: `input`, `params`, `steps.<id>.result`, `request.query|body|params|headers`, `env.NAME`;
each place that holds templates says which roots it allows.
"""

import json
import os
import re

PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
EXPRESSION = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*$")
REQUEST_PARTS = ("query", "body", "params", "headers")


class TemplateError(ValueError):
    """A template names something that does not exist or is malformed."""

    def __init__(self, message, expression=None):
        super().__init__(message)
        self.expression = expression  # the placeholder that failed to render, if any

    @property
    def root(self):
        return self.expression.split(".")[0] if self.expression else None


def expressions(value):
    """Every placeholder expression inside a JSON value, in document order."""
    if isinstance(value, str):
        if value.count("{{") != value.count("}}"):
            raise TemplateError(f"Unbalanced braces in {value!r}: write placeholders as {{{{root.path}}}}.")
        yield from (match.group(1) for match in PLACEHOLDER.finditer(value))
    elif isinstance(value, dict):
        for item in value.values():
            yield from expressions(item)
    elif isinstance(value, list):
        for item in value:
            yield from expressions(item)


def check_references(value, *, roots, steps=(), allow_env=False):
    """Raise TemplateError unless every placeholder names an allowed root (and a known step)."""
    for expr in expressions(value):
        if not EXPRESSION.match(expr):
            raise TemplateError(f"{{{{{expr}}}}} is not a valid placeholder: use dotted names such as input.x.")
        head, *rest = expr.split(".")
        if head == "env" and not allow_env:
            raise TemplateError(f"{{{{{expr}}}}}: env placeholders are only allowed in local mode and operator config.")
        if head not in roots and head != "env":
            raise TemplateError(f"{{{{{expr}}}}}: unknown root {head!r}; use one of {', '.join(roots)}.")
        if not rest:
            if head in ("steps", "env"):
                raise TemplateError(f"{{{{{expr}}}}} needs a name after {head!r}.")
            continue
        if head == "steps" and rest[0] not in steps:
            known = ", ".join(steps) or "none yet"
            raise TemplateError(f"{{{{{expr}}}}} names step {rest[0]!r}, which does not run before it (earlier steps: {known}).")
        if head == "request" and rest[0] not in REQUEST_PARTS:
            raise TemplateError(f"{{{{{expr}}}}}: request has {', '.join(REQUEST_PARTS)}.")


def _lookup(context, expr):
    head, *rest = expr.split(".")
    if head == "env":
        name = ".".join(rest)
        if name not in os.environ:
            raise TemplateError(f"{{{{{expr}}}}}: environment variable {name} is not set.", expr)
        return os.environ[name]
    if head not in context:
        raise TemplateError(f"{{{{{expr}}}}}: {head!r} is not available here.", expr)
    value = context[head]
    walked = head
    for part in rest:
        if isinstance(value, dict) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise TemplateError(f"{{{{{expr}}}}}: {walked} has no {part!r}.", expr)
        walked = f"{walked}.{part}"
    return value


def _as_text(value):
    return value if isinstance(value, str) else json.dumps(value)


def placeholder_names(value, root):
    """Names used right after `root.` in a value's placeholders ({{params.id}} -> "id")."""
    names = set()
    for expr in expressions(value):
        parts = expr.split(".")
        if parts[0] == root and len(parts) > 1:
            names.add(parts[1])
    return names


def render(value, context):
    """Render every placeholder in a JSON value against `context` (a dict of roots)."""
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value)
        if whole:
            return _lookup(context, whole.group(1))
        return PLACEHOLDER.sub(lambda m: _as_text(_lookup(context, m.group(1))), value)
    if isinstance(value, dict):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    return value
