"""Build–test tools that read what happened: route invocations, workflow runs, stored secrets' names
(remote and tenant mode). Together with test_route and call_endpoint they close the assistant's
loop: build, try, read what failed, fix."""

from backflow.cursors import MAX_LIMIT, newest_first
from backflow.redaction import preview
from entities_app.documents import APP_ID_PATTERN
from integrations_app import selectors as integration_selectors
from integrations_app.documents import HTTP_METHODS, NAME_HELP
from mcp_app.outputs import BOOLEAN, INTEGER, NULLABLE_STRING, STRING, array, listing, obj
from mcp_app.registry import tool
from mcp_app.tools.workflows import RUN
from workflows_app import selectors as workflow_selectors
from workflows_app.models import WorkflowRun

LIMIT = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "description": f"Page size (default 20, max {MAX_LIMIT})."}
CURSOR = {"type": "string", "maxLength": 500, "description": "nextCursor of the previous page."}
INVOCATION = obj(required=("id", "path", "status", "test"), id=INTEGER, path=STRING, status=INTEGER, test=BOOLEAN)
RUN_FIELDS = ("id", "workflow", "entry", "status", "trigger", "error", "createdAt", "startedAt", "finishedAt")
RUN_SUMMARY = obj(id=STRING, workflow=STRING, status=STRING)
PAGE_OF = {"nextCursor": NULLABLE_STRING}


@tool(name="list_route_invocations", title="List route invocations", scope="routes:read", read_only=True,
      output={**listing("invocations", INVOCATION, **PAGE_OF), "required": ["invocations", "nextCursor"]}, schema={
          "type": "object",
          "properties": {
              "path": {"type": "string", "maxLength": 2000, "description": "Only calls of this path as called, e.g. /bookings/42."},
              "method": {"type": "string", "enum": HTTP_METHODS, "description": "Only calls with this method."},
              "status": {"type": "integer", "minimum": 100, "maximum": 599, "description": "Only answers with this HTTP status."},
              "limit": LIMIT, "cursor": CURSOR,
          },
          "additionalProperties": False,
      })
def list_route_invocations(ctx, args):
    """Recent calls of the tenant's routes, newest first: method, path, status, duration and the
    error a failed call answered. `test: true` marks calls made by test_route."""
    invocations = integration_selectors.invocation_list(tenant=ctx.tenant, path=args.get("path"), method=args.get("method"),
                                                        status=args.get("status"))
    rows, next_cursor = newest_first(invocations, limit=args.get("limit", 20), cursor=args.get("cursor"), salt="backflow.invocations")
    return {"invocations": [row.to_document() for row in rows], "nextCursor": next_cursor}


@tool(name="list_runs", title="List workflow runs", scope="workflows:read", read_only=True,
      output={**listing("runs", RUN_SUMMARY, **PAGE_OF), "required": ["runs", "nextCursor"]}, schema={
          "type": "object",
          "properties": {
              "workflow": {"type": "string", "pattern": APP_ID_PATTERN, "x-pattern-help": NAME_HELP, "description": "Only runs of this workflow id."},
              "status": {"type": "string", "enum": [s.value for s in WorkflowRun.Status], "description": "Only runs in this state."},
              "limit": LIMIT, "cursor": CURSOR,
          },
          "additionalProperties": False,
      })
def list_runs(ctx, args):
    """Recent workflow runs, newest first: status, trigger, timing and the error of a failed run.
    get_run shows every step of one."""
    workflow = workflow_selectors.workflow_get(tenant=ctx.tenant, slug=args["workflow"]) if args.get("workflow") else None
    runs = workflow_selectors.run_list(tenant=ctx.tenant, workflow=workflow)
    if args.get("status"):
        runs = runs.filter(status=args["status"])
    rows, next_cursor = newest_first(runs, limit=args.get("limit", 20), cursor=args.get("cursor"), salt="backflow.runs")
    return {"runs": [{k: v for k, v in run.to_document().items() if k in RUN_FIELDS} for run in rows],
            "nextCursor": next_cursor}


@tool(name="get_run", title="Get workflow run", scope="workflows:read", read_only=True, output=RUN, schema={
    "type": "object", "properties": {"id": {"type": "string", "maxLength": 100, "description": "The run's id (from run_workflow or list_runs)."}},
    "required": ["id"], "additionalProperties": False,
})
def get_run(ctx, args):
    """One workflow run with every step: its status, attempts, duration, resolved params
    (credentials redacted), error and result (long results truncated, and marked so)."""
    run = workflow_selectors.run_get(tenant=ctx.tenant, run_id=args["id"])
    document = run.to_document(workflow_selectors.run_steps(run=run))
    for step in document["steps"]:
        step["result"] = preview(step["result"])
    document["output"] = preview(document["output"])
    return document


@tool(name="list_secrets", title="List secrets", scope="integrations:read", read_only=True,
      output={**listing("secrets", obj(name=STRING, integrations=array(STRING), mcpServers=array(STRING)),
                        missing=array(obj(name=STRING))), "required": ["secrets", "missing"]},
      schema={"type": "object", "properties": {}, "additionalProperties": False})
def list_secrets(ctx, args):
    """Stored secrets' names, when each was set, and what uses each; `missing`: names in use but not
    stored (ask the user to store them over REST or the admin). Never a value."""
    usage = integration_selectors.secret_usage(tenant=ctx.tenant)
    empty = {"integrations": [], "mcpServers": []}
    stored = list(integration_selectors.secret_list(tenant=ctx.tenant))
    names = {secret.name for secret in stored}
    return {
        "secrets": [{"name": secret.name, "description": secret.description, "updatedAt": secret.updated_at.isoformat(),
                     **usage.get(secret.name, empty)} for secret in stored],
        "missing": [{"name": name, **used} for name, used in sorted(usage.items()) if name not in names],
    }
