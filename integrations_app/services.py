"""Writes for integrations, routes and secrets. Every function validates, writes and records.

Integration and route functions take a store (the tenant's database records or local-mode
files); secrets exist only in the database.
"""

import re
import uuid

from django.db import transaction

from backflow import crypto
from backflow.errors import Conflict, InvalidInput, NotFound
from backflow.writes import check_changes, unique
from integrations_app.documents import NAME_HELP, NAME_PATTERN, READ_ONLY_FIELDS, clean_integration, clean_route
from integrations_app.models import Secret
from integrations_app.selectors import routes_using, workflows_using
from integrations_app.stores import duplicate_integration, duplicate_route
from tenants.services import audit_record

SECRET_VALUE_MAX = 10_000


def _without_read_only(doc):
    return {k: v for k, v in doc.items() if k not in READ_ONLY_FIELDS}


def _integration_summary(doc):
    return {"name": doc["name"], "baseUrl": doc["baseUrl"], "authType": doc["auth"]["type"],
            "endpoints": [e["name"] for e in doc["endpoints"]]}


def _route_summary(doc):
    return {"path": doc["path"], "method": doc["method"],
            "actions": [f"{a['integration']}.{a['action']}" for a in doc["integrations"]["actions"]]}


def route_label(route):
    return f"{route['method'].upper()} {route['path']}"


def _require_integration(store, name):
    doc = store.get_integration(name)
    if doc is None:
        raise NotFound(f"No integration named {name!r}.")
    return doc


def integration_create(*, store, document):
    doc = clean_integration(document, allow_env=store.allow_env)
    with store.transaction():
        if store.get_integration(doc["name"]) is not None:
            raise duplicate_integration(doc["name"])
        saved = store.save_integration(doc, create=True)
        store.record("integration.create", "integration", doc["name"], _integration_summary(doc))
    return saved


def integration_update(*, store, name, changes, partial=True):
    """Replace (partial=False) or merge top-level fields into (partial=True) an integration."""
    check_changes(changes, field="name", identity=name, refusal="An integration cannot be renamed; create a new one and move its routes.")
    with store.transaction():
        current = _require_integration(store, name)
        merged = {**_without_read_only(current), **changes} if partial else {**changes, "name": name}
        doc = clean_integration(merged, allow_env=store.allow_env)
        endpoints = {e["name"] for e in doc["endpoints"]}
        broken = routes_using(store=store, name=name, endpoints=endpoints)
        if broken:
            raise Conflict(
                f"Routes still call endpoints this change removes: {', '.join(map(route_label, broken))}.",
                {"endpoints": ["Keep the endpoints these routes use, or change the routes first."]},
            )
        workflows = workflows_using(store=store, name=name, endpoints=endpoints)
        if workflows:
            raise Conflict(
                f"Workflows {', '.join(workflows)} still call endpoints this change removes.",
                {"endpoints": ["Keep the endpoints these workflows use, or change the workflows first."]},
            )
        saved = store.save_integration(doc, create=False)
        store.record("integration.update", "integration", name, _integration_summary(doc))
    return saved


def integration_delete(*, store, name):
    with store.transaction():
        _require_integration(store, name)
        users = routes_using(store=store, name=name)
        if users:
            raise Conflict(
                f"Integration {name!r} is used by routes {', '.join(map(route_label, users))}; delete or change them first.",
                {"name": ["Still used by routes."]},
            )
        workflows = workflows_using(store=store, name=name)
        if workflows:
            raise Conflict(
                f"Integration {name!r} is used by workflows {', '.join(workflows)}; delete or change them first.",
                {"name": ["Still used by workflows."]},
            )
        store.delete_integration(name)
        store.record("integration.delete", "integration", name, {"name": name})


def _locate_route(store, *, route_id=None, path=None, method=None):
    if route_id is None:
        if not isinstance(path, str) or not isinstance(method, str):
            raise InvalidInput("Name the route by path and method.", {"path": ["Required."], "method": ["Required."]})
        method = method.lower()
    route = store.get_route(route_id=route_id, path=path, method=method)
    if route is None:
        raise NotFound(f"No route {method.upper()} {path}." if route_id is None else f"No route with id {route_id}.")
    return route


def route_create(*, store, document):
    with store.transaction():
        doc = clean_route(document, find_integration=store.get_integration, allow_env=store.allow_env)
        if store.get_route(path=doc["path"], method=doc["method"]) is not None:
            raise duplicate_route(doc["method"], doc["path"])
        saved = store.save_route(doc)
        store.record("route.create", "route", saved["id"], _route_summary(doc))
    return saved


def route_update(*, store, changes, route_id=None, path=None, method=None, partial=True):
    """Change a route found by id or by (path, method); a new path or method must be free."""
    if not isinstance(changes, dict):
        raise InvalidInput.single("body", "Send a JSON object.")
    with store.transaction():
        current = _locate_route(store, route_id=route_id, path=path, method=method)
        base = _without_read_only(current) if partial else {}
        doc = clean_route({**base, **changes}, find_integration=store.get_integration, allow_env=store.allow_env)
        clash = store.get_route(path=doc["path"], method=doc["method"])
        if clash is not None and clash["id"] != current["id"]:
            raise duplicate_route(doc["method"], doc["path"])
        saved = store.save_route(doc, route_id=current["id"])
        store.record("route.update", "route", current["id"], _route_summary(doc))
    return saved


def route_delete(*, store, route_id=None, path=None, method=None):
    with store.transaction():
        current = _locate_route(store, route_id=route_id, path=path, method=method)
        store.delete_route(current["id"])
        store.record("route.delete", "route", current["id"], {"path": current["path"], "method": current["method"]})


def new_route_id():
    return str(uuid.uuid4())


def _clean_secret_value(value):
    if not isinstance(value, str) or not value or len(value) > SECRET_VALUE_MAX:
        raise InvalidInput.single("value", f"Give the secret value as a non-empty string of at most {SECRET_VALUE_MAX} characters.")
    return value


def secret_create(*, tenant, actor, name, value, description=""):
    if not isinstance(name, str) or not re.match(NAME_PATTERN, name):
        raise InvalidInput.single("name", f"{name!r} is not valid: {NAME_HELP}")
    secret = Secret(tenant=tenant, name=name, description=description or "", ciphertext=crypto.encrypt(_clean_secret_value(value)))
    with unique("A secret named", "name", name):
        secret.save()
        audit_record(tenant=tenant, actor=actor, action="secret.create", object_type="secret", object_id=name, summary={"name": name})
    return secret


def secret_update(*, tenant, actor, secret, value=None, description=None):
    """Replace the value and/or description; the old value is not kept anywhere."""
    fields = ["updated_at"]
    if value is not None:
        secret.ciphertext = crypto.encrypt(_clean_secret_value(value))
        fields.append("ciphertext")
    if description is not None:
        secret.description = description
        fields.append("description")
    with transaction.atomic():
        secret.save(update_fields=fields)
        audit_record(tenant=tenant, actor=actor, action="secret.update", object_type="secret", object_id=secret.name,
                     summary={"name": secret.name, "valueChanged": value is not None})
    return secret


def secret_delete(*, tenant, actor, secret):
    with transaction.atomic():
        secret.delete()
        audit_record(tenant=tenant, actor=actor, action="secret.delete", object_type="secret", object_id=secret.name, summary={"name": secret.name})


def secret_value(*, tenant, name):
    """Decrypted value for outbound calls only; never return it through an API."""
    secret = Secret.objects.for_tenant(tenant).filter(name=name).first()
    if secret is None:
        raise NotFound(f"No secret named {name!r}; create it at /api/secrets/.")
    return crypto.decrypt(secret.ciphertext)
