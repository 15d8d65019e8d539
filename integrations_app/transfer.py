"""Move integrations and routes between stores (local files <-> a tenant) through the services.

Local mode names credentials `{{env.NAME}}`; a tenant names stored secrets. Importing turns
`{{env.STRIPE_KEY}}` into the secret `stripe_key` (filled from the environment when the
variable is set); exporting turns it back. Backflow's own settings variables (SECRET_KEY,
BACKFLOW_*, DATABASE_URL, …: backflow.redaction.is_platform_variable) are never read as a
secret's value: the operator's environment is not the tenant's.
"""

import os
import re

from backflow.redaction import is_platform_variable
from integrations_app import services
from integrations_app.models import Secret

ENV_REF = re.compile(r"^\{\{\s*env\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}$")


def platform_variable_refusal(variable, secret):
    """Why `variable` is not read for the secret `secret`, and how to set the secret instead."""
    return (f"${variable} is one of Backflow's own settings and is never read as a tenant's secret; "
            f"store the secret {secret!r} with POST /api/secrets/ (or the admin) after the import.")


def _with_secret(doc, secret):
    return {**doc, "auth": {**doc["auth"], "secret": secret}}


def _upsert(store, doc):
    if store.get_integration(doc["name"]) is None:
        services.integration_create(store=store, document=doc)
        return "created"
    services.integration_update(store=store, name=doc["name"], changes=doc, partial=False)
    return "updated"


def _upsert_route(store, route):
    existing = store.get_route(path=route["path"], method=route["method"])
    body = {k: v for k, v in route.items() if k != "id"}
    if existing is None:
        services.route_create(store=store, document=body)
        return "created"
    services.route_update(store=store, route_id=existing["id"], changes=body, partial=False)
    return "updated"


def copy_documents(*, source, target, convert):
    """Upsert every integration, then every route, of `source` into `target` in one transaction."""
    report = {"integrations": {}, "routes": {}, "skipped": list(getattr(source, "problems", []))}
    with target.transaction():
        for doc in source.list_integrations():
            report["integrations"][doc["name"]] = _upsert(target, convert(doc))
        for route in source.list_routes():
            report["routes"][f"{route['method'].upper()} {route['path']}"] = _upsert_route(target, route)
    return report


def import_into_tenant(*, source, target, environ=None):
    """Local files -> tenant. Returns a report, with secrets still to be created under `missingSecrets`."""
    environ = os.environ if environ is None else environ
    wanted = {}

    def convert(doc):
        secret = doc["auth"].get("secret")
        match = ENV_REF.match(secret) if isinstance(secret, str) else None
        if not match:
            return doc
        name = match.group(1).lower()
        wanted[name] = match.group(1)
        return _with_secret(doc, name)

    with target.transaction():
        report = copy_documents(source=source, target=target, convert=convert)
        report["secrets"], report["missingSecrets"] = {}, []
        for name, variable in sorted(wanted.items()):
            existing = Secret.objects.for_tenant(target.tenant).filter(name=name).first()
            if is_platform_variable(variable):
                if existing is None:
                    report["missingSecrets"].append({"secret": name, "variable": variable, "reason": platform_variable_refusal(variable, name)})
                else:
                    report["secrets"][name] = f"kept as stored: ${variable} is one of Backflow's own settings and is never read"
            elif variable in environ:
                if existing:
                    services.secret_update(tenant=target.tenant, actor=target.actor, secret=existing, value=environ[variable])
                else:
                    services.secret_create(tenant=target.tenant, actor=target.actor, name=name, value=environ[variable],
                                           description=f"Imported from ${variable}")
                report["secrets"][name] = f"set from ${variable}"
            elif existing is None:
                report["missingSecrets"].append({"secret": name, "variable": variable})
    return report


def export_from_tenant(*, source, target):
    """Tenant -> local files; stored secret names become {{env.NAME}} placeholders. A placeholder
    that names one of Backflow's own settings (the secret `secret_key` -> {{env.SECRET_KEY}}) is
    listed under `warnings`: import_config will not read that variable."""
    warnings = []

    def convert(doc):
        secret = doc["auth"].get("secret")
        if not isinstance(secret, str) or secret.startswith("{{"):
            return doc
        variable = re.sub(r"[^A-Za-z0-9_]", "_", secret).upper()
        if is_platform_variable(variable):
            warnings.append(f"integration {doc['name']!r}: its secret {secret!r} is exported as {{{{env.{variable}}}}}, which "
                            f"import_config will not read: {platform_variable_refusal(variable, secret)} "
                            "Or rename the placeholder in the exported file to a variable of its own.")
        return _with_secret(doc, "{{env.%s}}" % variable)

    report = copy_documents(source=source, target=target, convert=convert)
    report["warnings"] = warnings
    return report
