"""Reads for integrations, routes and secrets (database store)."""

from integrations_app.models import Integration, Route, RouteInvocation, Secret
from integrations_app.stores import DatabaseStore


def integration_list(*, tenant):
    return Integration.objects.for_tenant(tenant)


def route_list(*, tenant):
    return Route.objects.for_tenant(tenant)


def secret_list(*, tenant):
    return Secret.objects.for_tenant(tenant)


def invocation_list(*, tenant, path=None, method=None, status=None):
    invocations = RouteInvocation.objects.for_tenant(tenant)
    if path:
        invocations = invocations.filter(path=path)
    if method:
        invocations = invocations.filter(method=method.lower())
    if status is not None:
        invocations = invocations.filter(status=status)
    return invocations


def secret_usage(*, tenant):
    """{secret name: {"integrations": [...], "mcpServers": [...]}} of what refers to each stored secret."""
    from workflows_app.selectors import mcp_server_list  # workflows build on integrations, not the reverse

    usage = {}
    for integration in integration_list(tenant=tenant).only("name", "auth"):
        secret = (integration.auth or {}).get("secret")
        if isinstance(secret, str):
            usage.setdefault(secret, {"integrations": [], "mcpServers": []})["integrations"].append(integration.name)
    for server in mcp_server_list(tenant=tenant).only("name", "headers"):
        for value in (server.headers or {}).values():
            if isinstance(value, dict) and isinstance(value.get("secret"), str):
                names = usage.setdefault(value["secret"], {"integrations": [], "mcpServers": []})["mcpServers"]
                if server.name not in names:
                    names.append(server.name)
    return usage


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
