"""Reads for integrations, routes and secrets (database store)."""

from integrations_app.models import Integration, Route, Secret
from integrations_app.stores import DatabaseStore


def integration_list(*, tenant):
    return Integration.objects.for_tenant(tenant)


def route_list(*, tenant):
    return Route.objects.for_tenant(tenant)


def secret_list(*, tenant):
    return Secret.objects.for_tenant(tenant)


def routes_using(*, store, name, endpoints=None):
    """Route documents with an action on integration `name` (on an endpoint not in `endpoints`, if given)."""
    return [
        route for route in store.list_routes()
        if any(a["integration"] == name and (endpoints is None or a["action"] not in endpoints)
               for a in route["integrations"]["actions"])
    ]


def workflows_using(*, store, name, endpoints=None):
    """Ids of the tenant's workflows with an integration tool on `name` (on an endpoint not in
    `endpoints`, if given). Local files hold no workflows."""
    if not isinstance(store, DatabaseStore):
        return []
    from workflows_app.selectors import workflow_list  # workflows build on integrations, not the reverse

    return [
        workflow.slug for workflow in workflow_list(tenant=store.tenant)
        if any(tool["type"] == "integration" and tool["params"].get("integration") == name
               and (endpoints is None or tool["params"].get("action") not in endpoints)
               for tool in workflow.definition.get("tools", []))
    ]
