"""`{{…}}` templates shared by routes, workflows and operator config.

A template is text an author wrote (a route's params and response, an endpoint's path, query,
headers and body, a workflow step's params). It is rendered once, against an explicit context
the door builds; what a placeholder yields is a value, inserted and never rendered again:

- a value that is exactly one placeholder keeps its JSON type (`"{{input.count}}"` -> 3);
- inside a longer string a placeholder is replaced by its text (JSON for objects and lists);
- in a URL path (`render_path`) each value is percent-encoded as one segment, so `/`, `..`,
  `?`, `#` and CR/LF in a caller's value can never change which resource is called.

Roots: `input`, `params`, `steps.<id>.result`, `request.query|body|params|headers`, and
`env.NAME`, which is not ambient: it resolves only where the door passes an `Environment`
(local-mode files, operator configuration), and only for the names that environment allows.
"""

import json
import os
import re
from urllib.parse import quote

PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")
EXPRESSION = re.compile(r"^[A-Za-z_][\w-]*(\.[\w-]+)*$")
# An endpoint path's placeholders: {{root.x}} or the seed's bare {name} (a param).
PATH_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}|(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")
REQUEST_PARTS = ("query", "body", "params", "headers")
NO_ENV = "env placeholders are only available in local mode and operator configuration"


class TemplateError(ValueError):
    """A template names something that does not exist or is malformed."""

    def __init__(self, message, expression=None):
        super().__init__(message)
        self.expression = expression  # the placeholder that failed to render, if any

    @property
    def root(self):
        return self.expression.split(".")[0] if self.expression else None


class EmptyPathValue(TemplateError):
    """A path placeholder whose value is empty: the caller's (or step's) value, not the template."""


class Environment:
    """What `{{env.NAME}}` may read. `allows(name)` is the operator's rule; a refused name and an
    unset one are told apart only where the reader owns the environment (`reveal_unset`)."""

    def __init__(self, variables, *, allows=lambda name: True, reveal_unset=True):
        self.variables, self.allows, self.reveal_unset = variables, allows, reveal_unset

    def value(self, name, expr):
        if not self.allows(name):
            raise TemplateError(f"{{{{{expr}}}}}: {name} is not an environment variable templates may read.", expr)
        if name not in self.variables:
            reason = f"environment variable {name} is not set" if self.reveal_unset else \
                f"{name} is not an environment variable templates may read"
            raise TemplateError(f"{{{{{expr}}}}}: {reason}.", expr)
        return self.variables[name]


def local_environment():
    """Local mode: the developer's own environment, every name."""
    return Environment(os.environ)


def operator_environment():
    """Operator configuration (stdio MCP servers, env of operator-written documents): the process
    environment except Backflow's own settings, which no template reads."""
    from backflow.redaction import is_platform_variable

    return Environment(os.environ, allows=lambda name: not is_platform_variable(name))


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
            raise TemplateError(f"{{{{{expr}}}}}: {NO_ENV}.")
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


def _lookup(context, expr, env):
    head, *rest = expr.split(".")
    if head == "env":
        if env is None:  # the same answer whether or not the variable exists: no oracle
            raise TemplateError(f"{{{{{expr}}}}}: {NO_ENV}.", expr)
        return env.value(".".join(rest), expr)
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


def as_text(value):
    return value if isinstance(value, str) else json.dumps(value)


def placeholder_names(value, root):
    """Names used right after `root.` in a value's placeholders ({{params.id}} -> "id")."""
    names = set()
    for expr in expressions(value):
        parts = expr.split(".")
        if parts[0] == root and len(parts) > 1:
            names.add(parts[1])
    return names


def render(value, context, *, env=None):
    """Render every placeholder of a template (a JSON value) against `context` (a dict of roots).
    One pass over the template's own text: what a placeholder yields is never looked at again."""
    if isinstance(value, str):
        whole = PLACEHOLDER.fullmatch(value)
        if whole:
            return _lookup(context, whole.group(1), env)
        return PLACEHOLDER.sub(lambda m: as_text(_lookup(context, m.group(1), env)), value)
    if isinstance(value, dict):
        return {key: render(item, context, env=env) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context, env=env) for item in value]
    return value


def path_segment(value):
    """A value as exactly one URL path segment: every reserved character percent-encoded (`/`,
    `?`, `#`, `%`, CR/LF…), and the dots of a value that starts or ends with one too, so that
    neither `..` nor `.` + `.` around a template's own dot can become a dot-segment."""
    encoded = quote(as_text(value), safe="")
    if encoded.startswith(".") or encoded.endswith("."):
        encoded = encoded.replace(".", "%2E")
    return encoded


def render_path(template, context, *, bare=None, env=None):
    """Render a URL path template: `{{root.x}}` from `context`, the seed's `{name}` from `bare`
    (None: `{name}` is literal text). Each value is one encoded segment; an empty value is refused
    (`/items/{id}` with an empty id would call `/items/`, another resource)."""

    def fill(match):
        expr, name = match.group(1), match.group(2)
        if name is not None:
            if bare is None:
                return match.group(0)
            if name not in bare:
                raise TemplateError(f"the path needs param {name!r}; add it to the params.", f"params.{name}")
            value, shown = bare[name], f"{{{name}}}"
        else:
            value, shown = _lookup(context, expr, env), f"{{{{{expr}}}}}"
        if value is None or value == "":
            raise EmptyPathValue(f"the path's {shown} is empty; give it a value.", expr or f"params.{name}")
        return path_segment(value)

    return PATH_PLACEHOLDER.sub(fill, template)
