"""An integration document from an OpenAPI 3.0/3.1 description (the import_openapi tool).

The document is tenant input (pasted, or fetched through the egress guard): YAML without anchors
or aliases (a few hundred bytes of aliases expand to gigabytes), JSON parsed strictly, `$ref`s
only inside the document (the validator would fetch others), validated by openapi-spec-validator.
Each selected operation becomes one endpoint: its operationId (or method and path) as the name,
the path with `{param}` parts, its query and body parameters in the description (a route action's
leftover params go to the query string for GET/HEAD/OPTIONS/DELETE and become the JSON body
otherwise). A supported security scheme becomes `auth`, naming a secret the user still has to store.
What cannot be mapped is reported, one message per operation.
"""

import re

import yaml

from backflow.errors import InvalidInput
from backflow.jsonbody import JsonBodyError, depth_exceeds, max_depth, parse_peer_json
from integrations_app.documents import HTTP_METHODS

OPERATION_METHODS = [m for m in HTTP_METHODS]  # trace has no endpoint method here
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
MAX_ENDPOINTS = 200


class _NoAliasLoader(yaml.SafeLoader):
    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()
            raise yaml.YAMLError(f"YAML aliases are not accepted (line {event.start_mark.line + 1}): write the value out.")
        return super().compose_node(parent, index)


def load(spec):
    """The OpenAPI document from an object, or from JSON or YAML text; InvalidInput naming `spec`."""
    if isinstance(spec, dict):
        document = spec
    elif isinstance(spec, (str, bytes)):
        text = spec.decode("utf-8", errors="replace") if isinstance(spec, bytes) else spec
        try:
            document = parse_peer_json(text) if text.lstrip().startswith("{") else yaml.load(text, Loader=_NoAliasLoader)  # noqa: S506
        except (JsonBodyError, yaml.YAMLError) as exc:
            raise InvalidInput.single("spec", f"not a JSON or YAML OpenAPI document: {str(exc)[:300]}") from exc
    else:
        raise InvalidInput.single("spec", "give the OpenAPI document as an object, or as JSON or YAML text.")
    if not isinstance(document, dict):
        raise InvalidInput.single("spec", "an OpenAPI document is an object with `openapi`, `info` and `paths`.")
    if depth_exceeds(document, max_depth()):
        raise InvalidInput.single("spec", f"the document nests more than {max_depth()} levels deep.")
    version = str(document.get("openapi", ""))
    if not version.startswith(("3.0", "3.1")):
        raise InvalidInput.single("spec", f"OpenAPI 3.0 or 3.1 only (this says openapi: {version or 'nothing'!r}); convert a Swagger 2 document first.")
    outside = sorted({ref for ref in _refs(document) if not ref.startswith("#/")})
    if outside:
        raise InvalidInput.single("spec", f"$ref {outside[0]!r} points outside the document; inline what it refers to.")
    # Imported here: the validator (pydantic-settings, python-dotenv) costs every process that loads
    # the tool modules about 0.15 s at start-up, mcp_stdio included, and only an import needs it.
    from openapi_spec_validator import validate
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError

    try:
        validate(document)
    except OpenAPIValidationError as exc:
        where = "/".join(str(p) for p in exc.absolute_path)
        raise InvalidInput.single("spec", f"not a valid OpenAPI document{f' at {where}' if where else ''}: {exc.message[:300]}") from exc
    except RecursionError as exc:
        raise InvalidInput.single("spec", "the document's $refs loop without end.") from exc
    return document


def _refs(value):
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("$ref"), str):
                yield item["$ref"]
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)


def _resolve(document, item):
    """A `#/…` reference followed (a few hops at most), else the item itself."""
    for _ in range(10):
        if not isinstance(item, dict) or "$ref" not in item:
            return item
        node = document
        for part in item["$ref"][2:].split("/"):
            node = node.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(node, dict) else {}
        item = node
    return item


def _endpoint_name(operation, method, path, taken):
    raw = operation.get("operationId") or f"{method}_{path}"
    name = re.sub(r"[^A-Za-z0-9_-]+", "_", raw).strip("_-")
    name = (name if name[:1].isalpha() else f"op_{name}")[:63] or f"{method}_op"
    base, counter = name, 2
    while name in taken:
        name = f"{base[:58]}_{counter}"
        counter += 1
    return name


def _path(path, parameters):
    """The OpenAPI path with each `{name}` our form: `{name}` for identifiers, `{{params.name}}` else."""
    def convert(match):
        name = match.group(1)
        if IDENTIFIER.match(name):
            return "{" + name + "}"
        if re.fullmatch(r"[A-Za-z_][\w-]*", name):
            return "{{params." + name + "}}"
        raise ValueError(f"path parameter {name!r} cannot be named in a template")
    return re.sub(r"\{([^{}]+)\}", convert, path)


def _description(operation, parameters, has_body):
    parts = [operation.get("summary") or operation.get("description") or ""]
    query = [f"{p['name']}{'' if p.get('required') else '?'}" for p in parameters if p.get("in") == "query"]
    if query:
        parts.append("query: " + ", ".join(query))
    if has_body:
        parts.append("JSON body: the action's other params")
    return ". ".join(part.strip().rstrip(".") for part in parts if part.strip())[:2000]


def _selected(operation, method, path, include):
    if not include:
        return True
    return (path in include.get("paths", ()) or operation.get("operationId") in include.get("operationIds", ())
            or any(tag in include.get("tags", ()) for tag in operation.get("tags", ())))


def _auth(document, integration_name, local):
    """(auth, note): the first security scheme we can use, naming a secret to store."""
    secret = f"{{{{env.{integration_name.upper().replace('-', '_')}_TOKEN}}}}" if local else f"{integration_name.replace('-', '_')}_token"
    schemes = (document.get("components") or {}).get("securitySchemes") or {}
    wanted = [name for requirement in document.get("security") or [] for name in requirement] or list(schemes)
    for name in wanted:
        scheme = _resolve(document, schemes.get(name, {}))
        kind, where = scheme.get("type"), scheme.get("in")
        if kind == "http" and str(scheme.get("scheme", "")).lower() == "bearer":
            auth = {"type": "bearer", "secret": secret}
        elif kind == "apiKey" and where in ("header", "query") and scheme.get("name"):
            auth = {"type": "api_key", "name": scheme["name"], "in": where, "secret": secret}
        else:
            continue
        store = "set the environment variable" if local else "store the secret (REST /api/secrets/ or the admin) named"
        return auth, f"auth from security scheme {name!r}: {store} {secret.strip('{}').removeprefix('env.')} before calling."
    if schemes:
        return {"type": "none"}, (f"security schemes {', '.join(sorted(schemes))} cannot be mapped (bearer and apiKey can): "
                                  "set auth with update_integration.")
    return {"type": "none"}, None


def integration_document(document, *, name, base_url=None, include=None, local=False):
    """(integration document, report) for the operations of `document` that `include` selects."""
    servers = document.get("servers") or [{}]
    base = base_url or servers[0].get("url", "")
    if not re.match(r"^https?://[^\s/?#]+", base or ""):
        raise InvalidInput.single("baseUrl", f"the document's first server URL is {base or 'missing'!r}: give an absolute baseUrl.")
    endpoints, skipped, taken = [], [], set()
    for path, item in (document.get("paths") or {}).items():
        item = _resolve(document, item)
        shared = [_resolve(document, p) for p in item.get("parameters", [])]
        for method in OPERATION_METHODS:
            operation = item.get(method)
            if not isinstance(operation, dict) or not _selected(operation, method, path, include or {}):
                continue
            label = operation.get("operationId") or f"{method.upper()} {path}"
            if len(endpoints) >= MAX_ENDPOINTS:
                skipped.append({"operation": label, "reason": f"an integration holds at most {MAX_ENDPOINTS} endpoints; narrow `include`."})
                continue
            parameters = {(p.get("in"), p.get("name")): p for p in shared}
            parameters.update({(p.get("in"), p.get("name")): p for p in map(lambda q: _resolve(document, q), operation.get("parameters", []))})
            parameters = list(parameters.values())
            if any(p.get("in") == "cookie" and p.get("required") for p in parameters):
                skipped.append({"operation": label, "reason": "a required cookie parameter cannot be sent."})
                continue
            try:
                endpoint_path = _path(path, parameters)
            except ValueError as exc:
                skipped.append({"operation": label, "reason": str(exc)})
                continue
            endpoint = {"name": _endpoint_name(operation, method, path, taken), "method": method, "path": endpoint_path,
                        "description": _description(operation, parameters, "requestBody" in operation)}
            headers = {p["name"]: "{{params." + p["name"] + "}}" for p in parameters
                       if p.get("in") == "header" and p.get("required") and re.fullmatch(r"[A-Za-z][\w-]*", p.get("name", ""))}
            if headers:
                endpoint["headers"] = headers
            taken.add(endpoint["name"])
            endpoints.append(endpoint)
    if not endpoints:
        raise InvalidInput.single("include", "no operation of the document was selected; check `include` (tags, paths, operationIds).")
    auth, auth_note = _auth(document, name, local)
    info = document.get("info") or {}
    doc = {"name": name, "displayName": str(info.get("title") or name)[:200], "description": str(info.get("description") or "")[:2000],
           "baseUrl": base.rstrip("/"), "auth": auth, "endpoints": endpoints}
    return doc, {"skipped": skipped, "auth": auth_note}
