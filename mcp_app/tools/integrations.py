"""Integration tools (seed: "Integration Tools")."""

from backflow.errors import NotFound
from integrations_app import services
from integrations_app.documents import INTEGRATION_SCHEMA, NAME_HELP, NAME_PATTERN
from mcp_app.outputs import DELETED_NAME, STRING, array, document, listing, obj
from mcp_app.registry import tool

NAME_ONLY = {
    "type": "object",
    "properties": {"name": {"type": "string", "pattern": NAME_PATTERN, "x-pattern-help": NAME_HELP, "description": "The integration's name, e.g. \"airtable\"."}},
    "required": ["name"],
    "additionalProperties": False,
}
CREATE_SCHEMA = INTEGRATION_SCHEMA
INTEGRATION = document(INTEGRATION_SCHEMA, required=("name", "baseUrl", "endpoints"))
SUMMARY = obj(name=STRING, baseUrl=STRING, authType=STRING, endpoints=array(STRING))
UPDATE_SCHEMA = {
    **CREATE_SCHEMA,
    "description": "Name the integration, then give only the fields to change; each given field replaces the stored one.",
    "required": ["name"],
}


def summary(doc):
    return {
        "name": doc["name"], "displayName": doc["displayName"], "description": doc["description"],
        "baseUrl": doc["baseUrl"], "authType": doc["auth"]["type"], "endpoints": [e["name"] for e in doc["endpoints"]],
    }


@tool(name="list_integrations", title="List integrations", scope="integrations:read", read_only=True, local_mode=True,
      schema={"type": "object", "properties": {}, "additionalProperties": False},
      output=listing("integrations", SUMMARY, problems=array({"type": "object"})))
def list_integrations(ctx, args):
    """List all custom integrations for the tenant: name, base URL, auth type and endpoint names.
    Use get_integration for one integration's full definition."""
    result = {"integrations": [summary(doc) for doc in ctx.store.list_integrations()]}
    problems = getattr(ctx.store, "problems", None)
    if problems:
        result["problems"] = problems  # files that could not be loaded, with the reason
    return result


@tool(name="get_integration", title="Get integration", scope="integrations:read", read_only=True, local_mode=True, schema=NAME_ONLY,
      output=INTEGRATION)
def get_integration(ctx, args):
    """Get full details of a specific integration by name: baseUrl, auth (secret names only, never values) and every endpoint."""
    doc = ctx.store.get_integration(args["name"])
    if doc is None:
        raise NotFound(f"No integration named {args['name']!r}; list_integrations shows the existing ones.")
    return doc


@tool(name="create_integration", title="Create integration", scope="integrations:write", local_mode=True, schema=CREATE_SCHEMA,
      output=INTEGRATION)
def create_integration(ctx, args):
    """Create a custom API integration with endpoints and auth config (example:
    backflow://docs/integrations). `auth.secret` names a stored secret (list_secrets; {{env.NAME}} in
    local mode), never a credential's value. Try an endpoint with call_endpoint; routes call them by name."""
    return services.integration_create(store=ctx.store, document=args)


@tool(name="update_integration", title="Update integration", scope="integrations:write", idempotent=True, destructive=True, same_as="create_integration",
      local_mode=True, schema=UPDATE_SCHEMA, output=INTEGRATION)
def update_integration(ctx, args):
    """Update an integration: give `name` and the fields to change; each replaces the stored value
    (send the whole `endpoints` list). Removing an endpoint a route calls is refused."""
    changes = {k: v for k, v in args.items() if k != "name"}
    return services.integration_update(store=ctx.store, name=args["name"], changes=changes, partial=True)


@tool(name="delete_integration", title="Delete integration", scope="integrations:write", destructive=True, idempotent=True, local_mode=True,
      schema=NAME_ONLY, output=DELETED_NAME)
def delete_integration(ctx, args):
    """Delete a custom integration by name. Refused while a route still calls it (delete or change those routes first)."""
    services.integration_delete(store=ctx.store, name=args["name"])
    return {"deleted": args["name"]}
