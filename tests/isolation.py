"""One object of each tenant resource, made through the service layer, and snapshots of a tenant's
rows: what the isolation tests (REST walker, MCP tools on every transport, pages) create for one
tenant and then try to reach as the other."""

import json
import uuid
from dataclasses import dataclass, field

from django.apps import apps

from entities_app import selectors as entity_selectors
from entities_app import services as entity_services
from integrations_app import services as integration_services
from integrations_app.models import Integration, Route
from integrations_app.stores import DatabaseStore
from tenants import services as tenant_services
from tenants.models import AuditEvent
from tenants.scoping import TenantOwned
from workflows_app import services as workflow_services


@dataclass
class Made:
    """What a factory created: the model instance, how to address it, and valid request bodies."""

    obj: object
    detail_kwargs: dict
    put_body: dict | None = None
    patch_body: dict | None = None
    list_kwargs: dict = field(default_factory=dict)
    # Bodies for POST to detail-level extra actions, by route name (e.g. "workflow-runs").
    post_bodies: dict = field(default_factory=dict)


def _store(ctx):
    return DatabaseStore(tenant=ctx.tenant, actor=ctx.actor)


def _integration_doc(name, marker):
    return {
        "name": name,
        "displayName": marker,
        "description": f"integration {marker}",
        "baseUrl": "https://api.example.com/v1",
        "auth": {"type": "bearer", "secret": "iso_token"},
        "endpoints": [{"name": "listThings", "method": "get", "path": "/things"}],
    }


def make_integration(ctx, marker):
    doc = _integration_doc(marker, marker)
    integration_services.integration_create(store=_store(ctx), document=doc)
    obj = Integration.objects.for_tenant(ctx.tenant).get(name=marker)
    put = {**doc, "displayName": "taken over", "baseUrl": "https://evil.example.com"}
    return Made(obj, {"name": marker}, put_body=put, patch_body={"description": "taken over"})


def make_route(ctx, marker):
    integration_services.integration_create(store=_store(ctx), document=_integration_doc(f"{marker}-int", marker))
    doc = {
        "path": f"/{marker}/{{id}}",
        "method": "get",
        "description": marker,
        "integrations": {"actions": [{"integration": f"{marker}-int", "action": "listThings",
                                      "params": {"id": "{{request.params.id}}"}}]},
    }
    saved = integration_services.route_create(store=_store(ctx), document=doc)
    obj = Route.objects.for_tenant(ctx.tenant).get(pk=saved["id"])
    put = {**doc, "path": "/taken-over", "description": "taken over"}
    return Made(obj, {"pk": saved["id"]}, put_body=put, patch_body={"description": "taken over"})


def make_secret(ctx, marker):
    obj = integration_services.secret_create(tenant=ctx.tenant, actor=ctx.actor, name=marker,
                                             value=f"value-of-{marker}", description=marker)
    return Made(obj, {"name": marker}, put_body={"value": "taken over", "description": "taken over"},
                patch_body={"value": "taken over"})


def make_api_key(ctx, marker):
    obj, _ = tenant_services.api_key_create(tenant=ctx.tenant, actor=ctx.actor, name=marker)
    return Made(obj, {"prefix": obj.prefix}, put_body={"name": "taken over"}, patch_body={"name": "taken over"})


def make_audit_event(ctx, marker):
    tenant_services.audit_record(tenant=ctx.tenant, actor=ctx.actor, action="test.isolation",
                                 object_type="test", object_id=marker, summary={"marker": marker})
    obj = AuditEvent.objects.for_tenant(ctx.tenant).get(object_id=marker)
    return Made(obj, {"pk": obj.pk}, put_body={"action": "taken over"}, patch_body={"action": "taken over"})


def make_collection(ctx, marker):
    obj = entity_services.collection_create(tenant=ctx.tenant, actor=ctx.actor,
                                            document={"name": marker, "description": marker})
    return Made(obj, {"name": marker}, put_body={"name": marker, "description": "taken over"},
                patch_body={"description": "taken over", "schema": {"type": "object", "required": ["x"]}})


def make_entity(ctx, marker):
    # Both tenants use the SAME collection name: globex must not reach acme's entity through its own
    # collection of that name either.
    collection = "shared-" + marker.split("-", 1)[1]
    if not entity_selectors.collection_list(tenant=ctx.tenant).filter(name=collection).exists():
        entity_services.collection_create(tenant=ctx.tenant, actor=ctx.actor, document={"name": collection})
    obj = entity_services.entity_create(tenant=ctx.tenant, actor=ctx.actor, collection_name=collection,
                                        data={"owner": marker, "n": 1})
    body = {"data": {"owner": "taken over"}}
    return Made(obj, {"collection_name": collection, "pk": str(obj.id)}, put_body=body, patch_body=body,
                list_kwargs={"collection_name": collection})


def make_app(ctx, marker):
    doc = {"id": marker, "name": marker, "description": marker,
           "pages": [{"path": "", "title": marker, "components": [{"type": "markdown", "props": {"text": marker}}]}]}
    obj = entity_services.app_create(tenant=ctx.tenant, actor=ctx.actor, document=doc)
    return Made(obj, {"slug": marker}, put_body={**doc, "name": "taken over", "public": True},
                patch_body={"public": True, "description": "taken over"})


def _workflow_doc(marker):
    return {"id": marker, "name": marker, "description": marker,
            "workflows": [{"name": "main", "steps": [{"id": "ask", "action": "llm", "params": {"prompt": marker}}]}],
            "tools": [{"name": "llm", "type": "llm_call"}]}


def make_workflow(ctx, marker):
    doc = _workflow_doc(marker)
    obj = workflow_services.workflow_create(tenant=ctx.tenant, actor=ctx.actor, document=doc)
    return Made(obj, {"slug": marker}, put_body={**doc, "name": "taken over"},
                patch_body={"description": "taken over"}, post_bodies={"workflow-runs": {"input": {"x": 1}}})


def make_run(ctx, marker):
    workflow = workflow_services.workflow_create(tenant=ctx.tenant, actor=ctx.actor, document=_workflow_doc(marker))
    obj = workflow_services.run_create(tenant=ctx.tenant, actor=ctx.actor, workflow=workflow, input={"marker": marker})
    return Made(obj, {"pk": str(obj.id)}, post_bodies={"run-cancel": {}})


def make_mcp_server(ctx, marker):
    doc = {"name": marker, "transport": "http", "url": f"https://{marker}.example.com/mcp"}
    obj = workflow_services.mcp_server_create(tenant=ctx.tenant, actor=ctx.actor, document=doc)
    return Made(obj, {"name": marker}, put_body={**doc, "url": "https://evil.example.com/mcp"},
                patch_body={"url": "https://evil.example.com/mcp"})


def make_oauth_grant(ctx, marker):
    """An MCP client's OAuth connection to the tenant (as the consent page leaves it)."""
    from datetime import timedelta

    from django.utils import timezone
    from oauth2_provider.models import (
        get_access_token_model,
        get_application_model,
        get_refresh_token_model,
    )

    application = get_application_model().objects.create(
        name=marker, client_type="public", authorization_grant_type="authorization-code",
        redirect_uris="http://127.0.0.1:9/callback",
    )
    token = get_access_token_model().objects.create(
        user=ctx.owner, application=application, token=uuid.uuid4().hex,
        expires=timezone.now() + timedelta(hours=1), scope=f"tenant:{ctx.tenant.slug} integrations:read",
    )
    get_refresh_token_model().objects.create(user=ctx.owner, application=application, token=uuid.uuid4().hex,
                                             access_token=token)
    return Made(token, {"pk": token.pk})


def tenant_rows(tenant):
    """Every row the tenant owns, in every tenant-owned model (read across tenants)."""
    snapshot = {}
    for model in apps.get_models():
        if issubclass(model, TenantOwned):
            rows = model._base_manager.filter(tenant=tenant).order_by("pk").values()
            snapshot[model._meta.label] = [json.dumps(r, sort_keys=True, default=str) for r in rows]
    return snapshot


def stored_row(obj):
    """The database row of obj as stored now (None if gone), read across tenants."""
    return type(obj)._base_manager.filter(pk=obj.pk).values().first()
