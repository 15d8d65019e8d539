"""Reads for integrations, routes and secrets (database store)."""

from integrations_app.models import Integration, Route, Secret


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
