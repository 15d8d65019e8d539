"""App tools (seed: "App Tools", remote and tenant mode only)."""

from entities_app import selectors, services
from entities_app.documents import APP_ID_PATTERN, APP_SCHEMA
from integrations_app.documents import NAME_HELP
from mcp_app.outputs import BOOLEAN, DELETED_NAME, STRING, array, document, listing, obj
from mcp_app.registry import tool

APP_ID = {"type": "string", "pattern": APP_ID_PATTERN, "x-pattern-help": NAME_HELP, "description": "The app's id, e.g. \"studio\"."}
UPDATE_SCHEMA = {**APP_SCHEMA, "required": ["id"], "description": "Name the app by id, then give only the fields to change."}
APP = document(APP_SCHEMA, required=("id", "pages", "url"), url=STRING)
SUMMARY = obj(id=STRING, name=STRING, description=STRING, public=BOOLEAN, pages=array(STRING), url=STRING)


def _summary(app):
    return {"id": app.slug, "name": app.name, "description": app.description, "public": app.public,
            "pages": [page["path"] for page in app.pages], "url": f"/apps/{app.tenant.slug}/{app.slug}/"}


@tool(name="list_apps", title="List apps", scope="apps:read", read_only=True,
      schema={"type": "object", "properties": {}, "additionalProperties": False}, output=listing("apps", SUMMARY))
def list_apps(ctx, args):
    """List all apps for the tenant: id, name, page paths and the URL people open."""
    return {"apps": [_summary(app) for app in selectors.app_list(tenant=ctx.tenant).select_related("tenant")]}


@tool(name="get_app", title="Get app", scope="apps:read", read_only=True, output=APP,
      schema={"type": "object", "properties": {"id": APP_ID}, "required": ["id"], "additionalProperties": False})
def get_app(ctx, args):
    """Get an app definition by ID: its pages, components and data bindings."""
    return selectors.app_get(tenant=ctx.tenant, slug=args["id"]).to_document()


@tool(name="create_app", title="Create app", scope="apps:write", schema=APP_SCHEMA, output=APP)
def create_app(ctx, args):
    """Create a new app with pages, components, and data bindings (example: backflow://docs/apps).
    The result's `url` is where people open it (members sign in; `public: true` shows it to anyone)."""
    return services.app_create(tenant=ctx.tenant, actor=ctx.actor, document=args).to_document()


@tool(name="update_app", title="Update app", scope="apps:write", idempotent=True, destructive=True, same_as="create_app", schema=UPDATE_SCHEMA, output=APP)
def update_app(ctx, args):
    """Update an existing app's pages or config: give `id` and the fields to change (`pages` replaces all pages)."""
    changes = {k: v for k, v in args.items() if k != "id"}
    return services.app_update(tenant=ctx.tenant, actor=ctx.actor, slug=args["id"], changes=changes, partial=True).to_document()


@tool(name="delete_app", title="Delete app", scope="apps:write", destructive=True, idempotent=True, output=DELETED_NAME,
      schema={"type": "object", "properties": {"id": APP_ID}, "required": ["id"], "additionalProperties": False})
def delete_app(ctx, args):
    """Delete an app by ID (its collections and entities stay)."""
    services.app_delete(tenant=ctx.tenant, actor=ctx.actor, slug=args["id"])
    return {"deleted": args["id"]}
