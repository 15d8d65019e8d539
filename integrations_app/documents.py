"""The integration and route documents: JSON Schemas and the checks a schema cannot express.

The schemas are the single description of each shape: the service layer validates with them,
the MCP tools publish them as inputSchema, and the OpenAPI schema uses them for request bodies.
"""

import copy
import ipaddress
import re
from urllib.parse import urlsplit

import httpx
from django.conf import settings

from backflow.errors import InvalidInput
from backflow.templating import TemplateError, check_references, expressions
from backflow.validation import Problems, schema_errors

NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
NAME_HELP = "use 1-63 lower-case letters, digits, '_' or '-', starting with a letter or digit."
ENDPOINT_NAME_PATTERN = r"^[A-Za-z][A-Za-z0-9_-]{0,62}$"
STEP_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,62}$"
ENV_REF_PATTERN = r"\{\{\s*env\.[A-Za-z_][A-Za-z0-9_]*\s*\}\}"
SECRET_REF_PATTERN = rf"^([a-z0-9][a-z0-9_-]{{0,62}}|{ENV_REF_PATTERN})$"
HTTP_METHODS = ["get", "post", "put", "patch", "delete", "head", "options"]
HTTP_METHOD = {
    "type": "string",
    "enum": HTTP_METHODS + [m.upper() for m in HTTP_METHODS],
    "description": "HTTP method (any case; stored lower-case).",
}
ANY_JSON = ["object", "array", "string", "number", "integer", "boolean", "null"]
AUTH_TYPES = ["none", "bearer", "basic", "api_key", "oauth2_client_credentials"]
READ_ONLY_FIELDS = ("id", "createdAt", "updatedAt")

ROUTE_SEGMENT = re.compile(r"^([A-Za-z0-9._~-]+|\{([A-Za-z_][A-Za-z0-9_]*)\})$")

SECRET_REF = {
    "type": "string",
    "pattern": SECRET_REF_PATTERN,
    "x-pattern-help": "name a stored secret (e.g. \"stripe_key\", see /api/secrets/) or, in local mode, {{env.NAME}}.",
    "description": "Name of a stored secret (REST /api/secrets/), or {{env.NAME}} in local mode. Never the value itself.",
}

AUTH_SCHEMA = {
    "type": "object",
    "description": (
        "How requests to the API authenticate. type none; bearer {secret}; basic {username, secret}; "
        "api_key {name, in: header|query, secret}; oauth2_client_credentials {tokenUrl, clientId, secret, scopes?} "
        "(backflow://docs/auth)."
    ),
    "properties": {
        "type": {"type": "string", "enum": AUTH_TYPES},
        "secret": SECRET_REF,
        "username": {"type": "string", "minLength": 1, "maxLength": 200, "description": "basic: the user name."},
        "name": {"type": "string", "minLength": 1, "maxLength": 100, "description": "api_key: header or query parameter name, e.g. X-API-Key."},
        "in": {"type": "string", "enum": ["header", "query"], "description": "api_key: where the key goes."},
        "tokenUrl": {"type": "string", "pattern": r"^https?://\S+$", "maxLength": 2000, "description": "oauth2_client_credentials: token endpoint."},
        "clientId": {"type": "string", "minLength": 1, "maxLength": 500},
        "scopes": {"type": "array", "items": {"type": "string", "maxLength": 200}, "maxItems": 50},
    },
    "required": ["type"],
    "additionalProperties": False,
}
AUTH_REQUIRED_PARTS = {
    "none": [],
    "bearer": ["secret"],
    "basic": ["username", "secret"],
    "api_key": ["name", "in", "secret"],
    "oauth2_client_credentials": ["tokenUrl", "clientId", "secret"],
}
AUTH_OPTIONAL_PARTS = {"oauth2_client_credentials": ["scopes"]}

ENDPOINT_SCHEMA = {
    "type": "object",
    "description": (
        "One operation of the API. `path` is appended to baseUrl and may hold {param} or {{params.x}} "
        "placeholders filled from the calling action's params; query, headers and body may use {{params.x}} too."
    ),
    "properties": {
        "name": {"type": "string", "pattern": ENDPOINT_NAME_PATTERN, "x-pattern-help": "start with a letter; letters, digits, '_' or '-' (max 63).", "description": "Unique within the integration; routes call it as `action`."},
        "method": HTTP_METHOD,
        "path": {"type": "string", "pattern": r"^/\S*$", "maxLength": 2000, "x-pattern-help": "start with '/' and contain no spaces.", "description": "Path below baseUrl, starting with '/'."},
        "description": {"type": "string", "maxLength": 2000},
        "query": {"type": "object", "description": "Query parameters (values may be templates).", "maxProperties": 100},
        "headers": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 4000}, "maxProperties": 100},
        "body": {"type": ANY_JSON, "description": "JSON body template (any JSON value)."},
        "timeout": {"type": "number", "minimum": 0.1, "maximum": 120, "description": "Seconds the whole call may take (default 10)."},
    },
    "required": ["name", "method", "path"],
    "additionalProperties": False,
}

INTEGRATION_SCHEMA = {
    "type": "object",
    "title": "Integration",
    "description": "An HTTP API the tenant calls: its base URL, how it authenticates and its endpoints.",
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN, "x-pattern-help": NAME_HELP, "description": "Unique id, e.g. \"airtable\"."},
        "displayName": {"type": "string", "maxLength": 200, "description": "Human name, e.g. \"Airtable\"."},
        "description": {"type": "string", "maxLength": 2000, "description": "What the API is for, for people and assistants."},
        "baseUrl": {"type": "string", "pattern": r"^https?://[^\s/?#]+[^\s]*$", "maxLength": 2000, "x-pattern-help": "give an absolute http(s) URL such as https://api.airtable.com/v0.", "description": "Absolute http(s) URL every endpoint path is appended to."},
        "auth": AUTH_SCHEMA,
        "endpoints": {"type": "array", "items": ENDPOINT_SCHEMA, "maxItems": 200, "description": "The operations routes and workflows call by name."},
    },
    "required": ["name", "baseUrl"],
    "additionalProperties": False,
}

ACTION_SCHEMA = {
    "type": "object",
    "description": (
        "Call one integration endpoint. params fill the endpoint's placeholders and may use "
        "{{request.params.x}}, {{request.query.x}}, {{request.body.x}}, {{request.headers.x}} and "
        "{{steps.<earlier action id>.result}} (backflow://docs/templates)."
    ),
    "properties": {
        "id": {"type": "string", "pattern": STEP_ID_PATTERN, "x-pattern-help": "letters, digits, '_' or '-' (max 63).", "description": "Step id for {{steps.<id>.result}}; defaults to the action name."},
        "integration": {"type": "string", "pattern": NAME_PATTERN, "x-pattern-help": NAME_HELP, "description": "Name of an existing integration."},
        "action": {"type": "string", "pattern": ENDPOINT_NAME_PATTERN, "x-pattern-help": "name one of the integration's endpoints.", "description": "Name of one of that integration's endpoints."},
        "params": {"type": "object", "maxProperties": 100},
    },
    "required": ["integration", "action"],
    "additionalProperties": False,
}

ROUTE_SCHEMA = {
    "type": "object",
    "title": "Route",
    "description": "An API route of the tenant, served at /t/<tenant><path>, that runs integration actions in order.",
    "properties": {
        "path": {"type": "string", "maxLength": 500, "description": "Starts with '/'; segments may be {param}, e.g. /bookings/{id}."},
        "method": HTTP_METHOD,
        "description": {"type": "string", "maxLength": 2000, "description": "What the route does, for its callers."},
        "requireAuth": {"type": "boolean", "description": "Callers need an API key or JWT of the tenant (default true)."},
        "integrations": {
            "type": "object",
            "description": "The integration actions the route runs, in order (actions of one wave run concurrently).",
            "properties": {"actions": {"type": "array", "items": ACTION_SCHEMA, "minItems": 1, "maxItems": 50}},
            "required": ["actions"],
            "additionalProperties": False,
        },
        "response": {"type": ANY_JSON, "description": "Optional template of the answer, e.g. {\"classes\": \"{{steps.classes.result}}\"}; default: the last action's result."},
    },
    "required": ["path", "method", "integrations"],
    "additionalProperties": False,
}


def _normalized(document):
    if not isinstance(document, dict):
        raise InvalidInput.single("body", "Send a JSON object.")
    doc = {k: copy.deepcopy(v) for k, v in document.items() if k not in READ_ONLY_FIELDS}
    if isinstance(doc.get("method"), str):
        doc["method"] = doc["method"].lower()
    return doc


def _ordered(doc, schema, first=()):
    """Keys in the schema's order, so stored files read the same way every time."""
    keys = [*first, *schema["properties"]]
    return {key: doc[key] for key in keys if key in doc}


def _check_templates(problems, path, value, **rules):
    try:
        check_references(value, **rules)
    except TemplateError as exc:
        problems.add(path, str(exc))


HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$")
HEADER_UNSAFE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # control characters but HTAB: they would split or end a header


def platform_hosts():
    """Host names this platform answers to: its public URL's, and ALLOWED_HOSTS' DNS names (IP
    literals and localhost are loopback or private, which the egress guard refuses anyway, and
    a loopback upstream on another port is another service)."""
    hosts = set()
    for host in settings.ALLOWED_HOSTS:
        host = host.lower().strip("[]")
        if host and host not in ("*", "localhost") and not host.startswith(".") and not _is_ip(host):
            hosts.add(host)
    if settings.BACKFLOW_PUBLIC_URL:
        hosts.add((urlsplit(settings.BACKFLOW_PUBLIC_URL).hostname or "").lower())
    return hosts - {""}


def _is_ip(host):
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _check_base_url(problems, base_url):
    try:
        host = httpx.URL(base_url).host
    except httpx.InvalidURL as exc:
        problems.add("baseUrl", f"not a valid URL ({exc}); give an absolute http(s) URL such as https://api.example.com/v1.")
        return
    if host.lower().strip("[]") in platform_hosts():
        problems.add("baseUrl", f"{host} is this platform itself: an integration cannot call Backflow's own routes or "
                                "webhooks (a route or workflow calling itself is a loop).")


def clean_integration(document, *, allow_env=False):
    """A validated, normalised integration document, or InvalidInput naming every bad field."""
    doc = _normalized(document)
    for endpoint in doc.get("endpoints") or []:
        if isinstance(endpoint, dict) and isinstance(endpoint.get("method"), str):
            endpoint["method"] = endpoint["method"].lower()
    problems = Problems(schema_errors(INTEGRATION_SCHEMA, doc))
    problems.raise_if_any()
    doc.setdefault("displayName", doc["name"])
    doc.setdefault("description", "")
    doc.setdefault("auth", {"type": "none"})
    doc.setdefault("endpoints", [])

    auth = doc["auth"]
    for part in AUTH_REQUIRED_PARTS[auth["type"]]:
        if part not in auth:
            problems.add(["auth", part], f"auth type {auth['type']!r} needs {part!r}.")
    allowed = {"type", *AUTH_REQUIRED_PARTS[auth["type"]], *AUTH_OPTIONAL_PARTS.get(auth["type"], ())}
    for part in sorted(set(auth) - allowed):
        problems.add(["auth", part], f"not used by auth type {auth['type']!r}; remove it.")
    if not allow_env and isinstance(auth.get("secret"), str) and "{{" in auth["secret"]:
        problems.add(["auth", "secret"], "{{env.…}} is only for local mode: name a stored secret instead.")
    if allow_env and isinstance(auth.get("secret"), str) and not re.fullmatch(ENV_REF_PATTERN, auth["secret"]):
        # Local mode writes documents into files a user reviews and commits: never a credential.
        problems.add(["auth", "secret"], "local mode reads credentials from the environment: write {{env.NAME}} "
                                         "(e.g. {{env.STRIPE_KEY}}) and set NAME where the server runs, never the value itself.")
    _check_templates(problems, ["baseUrl"], doc["baseUrl"], roots=(), allow_env=allow_env)
    if "{{" not in doc["baseUrl"]:
        _check_base_url(problems, doc["baseUrl"])

    seen = set()
    for index, endpoint in enumerate(doc["endpoints"]):
        if endpoint["name"] in seen:
            problems.add(["endpoints", index, "name"], f"duplicate endpoint name {endpoint['name']!r}.")
        seen.add(endpoint["name"])
        for part in ("path", "query", "headers", "body"):
            if part in endpoint:
                _check_templates(problems, ["endpoints", index, part], endpoint[part], roots=("params",), allow_env=allow_env)
        for header, value in (endpoint.get("headers") or {}).items():
            if not HEADER_NAME.match(header):
                problems.add(["endpoints", index, "headers", header], "not a valid header name: use letters, digits and - (RFC 9110 token).")
            elif isinstance(value, str) and HEADER_UNSAFE.search(value):
                problems.add(["endpoints", index, "headers", header], "a header value cannot contain a control character (line break, NUL…).")
    problems.raise_if_any()
    doc["endpoints"] = [_ordered(endpoint, ENDPOINT_SCHEMA) for endpoint in doc["endpoints"]]
    return _ordered(doc, INTEGRATION_SCHEMA)


def route_path_params(path):
    """The {param} names of a route path, or ValueError saying what is wrong with it."""
    if not path.startswith("/"):
        raise ValueError("start the path with '/'.")
    if path == "/":
        return []
    if path.endswith("/"):
        raise ValueError("remove the trailing '/'.")
    params = []
    for segment in path[1:].split("/"):
        match = ROUTE_SEGMENT.match(segment)
        if not match:
            raise ValueError(
                f"segment {segment!r} is not valid: use letters, digits, '.', '_', '~', '-' or a {{param}} placeholder."
            )
        if match.group(2):
            if match.group(2) in params:
                raise ValueError(f"parameter {{{match.group(2)}}} appears twice.")
            params.append(match.group(2))
    return params


def clean_route(document, *, find_integration, allow_env=False):
    """A validated, normalised route document. `find_integration(name)` returns a document or None."""
    doc = _normalized(document)
    problems = Problems(schema_errors(ROUTE_SCHEMA, doc))
    problems.raise_if_any()
    doc.setdefault("description", "")
    doc.setdefault("requireAuth", True)
    doc.setdefault("response", None)
    try:
        path_params = route_path_params(doc["path"])
    except ValueError as exc:
        problems.add("path", f"{doc['path']!r}: {exc}")
        path_params = []

    earlier = []
    for index, action in enumerate(doc["integrations"]["actions"]):
        where = ["integrations", "actions", index]
        action.setdefault("id", action["action"])
        action.setdefault("params", {})
        if action["id"] in earlier:
            problems.add(where + ["id"], f"duplicate action id {action['id']!r}: give each action a unique id.")
        integration = find_integration(action["integration"])
        if integration is None:
            problems.add(where + ["integration"], f"no integration named {action['integration']!r}; create it first.")
        elif action["action"] not in {e["name"] for e in integration.get("endpoints", [])}:
            names = ", ".join(e["name"] for e in integration.get("endpoints", [])) or "none"
            problems.add(where + ["action"], f"integration {action['integration']!r} has no endpoint {action['action']!r} (endpoints: {names}).")
        _check_request_templates(problems, where + ["params"], action["params"], earlier, path_params, allow_env)
        earlier.append(action["id"])
    if doc["response"] is not None:
        _check_request_templates(problems, ["response"], doc["response"], earlier, path_params, allow_env)
    problems.raise_if_any()
    doc["integrations"]["actions"] = [_ordered(action, ACTION_SCHEMA) for action in doc["integrations"]["actions"]]
    return _ordered(doc, ROUTE_SCHEMA)


def _check_request_templates(problems, where, value, steps, path_params, allow_env):
    _check_templates(problems, where, value, roots=("request", "steps"), steps=tuple(steps), allow_env=allow_env)
    for expr in _safe_expressions(value):
        parts = expr.split(".")
        if parts[:2] == ["request", "params"] and len(parts) > 2 and parts[2] not in path_params:
            known = ", ".join(path_params) or "none"
            problems.add(where, f"{{{{{expr}}}}}: the path has no {{{parts[2]}}} parameter (parameters: {known}).")


def _safe_expressions(value):
    try:
        return list(expressions(value))
    except TemplateError:
        return []
