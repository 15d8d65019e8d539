"""Route tools (seed: "Route Tools"). Routes are named by path and method."""

from backflow.errors import NotFound
from integrations_app import services
from integrations_app.documents import HTTP_METHOD, ROUTE_SCHEMA
from mcp_app.outputs import STRING, document, listing, obj
from mcp_app.registry import tool

ROUTE_PROPERTIES = ROUTE_SCHEMA["properties"]
LOCATOR = {
    "type": "object",
    "properties": {
        "path": {"type": "string", "description": "The route's path, e.g. /bookings/{id}."},
        "method": HTTP_METHOD,
    },
    "required": ["path", "method"],
    "additionalProperties": False,
}
UPDATE_SCHEMA = {
    "type": "object",
    "description": "Name the route by path and method, then give only the fields to change.",
    "properties": {
        **LOCATOR["properties"],
        "newPath": {**ROUTE_PROPERTIES["path"], "description": "Move the route to this path."},
        "newMethod": {**HTTP_METHOD, "description": "Change the route's method."},
        **{k: v for k, v in ROUTE_PROPERTIES.items() if k not in ("path", "method")},
    },
    "required": ["path", "method"],
    "additionalProperties": False,
}


ROUTE = document(ROUTE_SCHEMA, required=("path", "method"), id=STRING)


def _method(args):
    return args["method"].lower()


@tool(name="list_routes", title="List routes", scope="routes:read", read_only=True, local_mode=True,
      schema={"type": "object", "properties": {}, "additionalProperties": False}, output=listing("routes", ROUTE))
def list_routes(ctx, args):
    """List all configured routes with their actions. A route answers at /t/<tenant><path> (local mode: /t/local<path>)."""
    return {"routes": ctx.store.list_routes()}


@tool(name="get_route", title="Get route", scope="routes:read", read_only=True, local_mode=True, schema=LOCATOR, output=ROUTE)
def get_route(ctx, args):
    """Get details of a specific route by path and method."""
    route = ctx.store.get_route(path=args["path"], method=_method(args))
    if route is None:
        raise NotFound(f"No route {args['method'].upper()} {args['path']}; list_routes shows the existing ones.")
    return route


@tool(name="create_route", title="Create route", scope="routes:write", local_mode=True, schema=ROUTE_SCHEMA, output=ROUTE)
def create_route(ctx, args):
    """Create an API route that chains integration actions (example: backflow://docs/routes;
    templates: backflow://docs/templates). Each action names an existing integration and one of its
    endpoints; later actions can use {{steps.<id>.result}}. Then try it with test_route."""
    return services.route_create(store=ctx.store, document=args)


@tool(name="update_route", title="Update route", scope="routes:write", idempotent=True, destructive=True, same_as="create_route", local_mode=True,
      schema=UPDATE_SCHEMA, output=ROUTE)
def update_route(ctx, args):
    """Update a route named by `path` and `method`: give the fields to change (`integrations`
    replaces all actions); `newPath` / `newMethod` move it."""
    changes = {k: v for k, v in args.items() if k not in ("path", "method", "newPath", "newMethod")}
    if "newPath" in args:
        changes["path"] = args["newPath"]
    if "newMethod" in args:
        changes["method"] = args["newMethod"]
    return services.route_update(store=ctx.store, path=args["path"], method=_method(args), changes=changes, partial=True)


@tool(name="delete_route", title="Delete route", scope="routes:write", destructive=True, idempotent=True, local_mode=True, schema=LOCATOR,
      output=obj(deleted=obj(path=STRING, method=STRING)))
def delete_route(ctx, args):
    """Delete a route by path and method."""
    services.route_delete(store=ctx.store, path=args["path"], method=_method(args))
    return {"deleted": {"path": args["path"], "method": _method(args)}}
