"""Workflow tools (seed: "Workflow Tools", remote and tenant mode only)."""

import time

import anyio

from backflow.sync import in_thread
from entities_app.documents import APP_ID_PATTERN
from integrations_app.documents import NAME_HELP
from mcp_app.outputs import DELETED_NAME, INTEGER, NULLABLE_STRING, STRING, array, document, listing, obj
from mcp_app.registry import tool
from mcp_app.server import PROGRESS
from workflows_app import selectors, services
from workflows_app.documents import MAX_WAIT, WORKFLOW_SCHEMA
from workflows_app.models import WorkflowRun

WORKFLOW_ID = {"type": "string", "pattern": APP_ID_PATTERN, "x-pattern-help": NAME_HELP, "description": "The workflow's id, e.g. \"file-analysis\"."}
ID_ONLY = {"type": "object", "properties": {"id": WORKFLOW_ID}, "required": ["id"], "additionalProperties": False}
WORKFLOW = document(WORKFLOW_SCHEMA, required=("id", "name", "workflows"), webhookUrl=STRING)
SUMMARY = obj(id=STRING, name=STRING, description=STRING, workflows=array(obj(name=STRING, steps=INTEGER)), triggers=array(STRING))
RUN = obj(required=("id", "workflow", "status", "output", "error"), id=STRING, workflow=STRING,
          status={"type": "string", "enum": [s.value for s in WorkflowRun.Status]}, output={}, error=NULLABLE_STRING,
          steps=array({"type": "object"}))


@tool(name="list_workflows", title="List workflows", scope="workflows:read", read_only=True,
      schema={"type": "object", "properties": {}, "additionalProperties": False}, output=listing("workflows", SUMMARY))
def list_workflows(ctx, args):
    """List all workflows for the tenant: id, name, description, step counts and triggers."""
    return {"workflows": [
        {"id": w.slug, "name": w.name, "description": w.description,
         "workflows": [{"name": f["name"], "steps": len(f["steps"])} for f in w.definition["workflows"]],
         "triggers": [t["type"] for t in w.definition["triggers"]]}
        for w in selectors.workflow_list(tenant=ctx.tenant)
    ]}


@tool(name="get_workflow", title="Get workflow", scope="workflows:read", read_only=True, schema=ID_ONLY, output=WORKFLOW)
def get_workflow(ctx, args):
    """Get a workflow definition by ID: its workflows and steps, tools and triggers (and webhook URL)."""
    return selectors.workflow_get(tenant=ctx.tenant, slug=args["id"]).to_document()


@tool(name="create_workflow", title="Create workflow", scope="workflows:write", schema=WORKFLOW_SCHEMA, output=WORKFLOW)
def create_workflow(ctx, args):
    """Create a new workflow with steps and triggers (document and example: backflow://docs/workflows).
    Each step's `action` is a declared tool or mcp.listTools / mcp.execute; params may use {{input.x}}
    and {{steps.<earlier id>.result}}. MCP servers are registered first (REST /api/mcp-servers/)."""
    return services.workflow_create(tenant=ctx.tenant, actor=ctx.actor, document=args).to_document()


@tool(name="update_workflow", title="Update workflow", scope="workflows:write", idempotent=True, destructive=True, same_as="create_workflow", output=WORKFLOW,
      schema={**WORKFLOW_SCHEMA, "required": ["id"], "description": "Name the workflow by id; give only the fields to change."})
def update_workflow(ctx, args):
    """Update an existing workflow's steps, triggers, or config: give `id` and the fields to change
    (`workflows`, `tools` and `triggers` each replace the stored list)."""
    changes = {k: v for k, v in args.items() if k != "id"}
    return services.workflow_update(tenant=ctx.tenant, actor=ctx.actor, slug=args["id"], changes=changes, partial=True).to_document()


@tool(name="delete_workflow", title="Delete workflow", scope="workflows:write", destructive=True, idempotent=True, schema=ID_ONLY,
      output=DELETED_NAME)
def delete_workflow(ctx, args):
    """Delete a workflow by ID, with its run history."""
    services.workflow_delete(tenant=ctx.tenant, actor=ctx.actor, slug=args["id"])
    return {"deleted": args["id"]}


# Runs call upstream APIs, MCP servers and LLMs, which may change things there: open world, destructive.
@tool(name="run_workflow", title="Run workflow", scope="workflows:run", open_world=True, destructive=True, output=RUN, schema={
    "type": "object",
    "properties": {
        "id": WORKFLOW_ID,
        "input": {"type": "object", "description": "Available to steps as {{input.x}}."},
        "workflow": {"type": "string", "description": "Which entry of the document's workflows to run (default: the first)."},
        "wait": {"type": "number", "minimum": 0, "maximum": MAX_WAIT, "description": f"Seconds to wait for the result (default 30, max {MAX_WAIT})."},
    },
    "required": ["id"],
    "additionalProperties": False,
})
async def run_workflow(ctx, args):
    """Run a workflow and wait (default 30 s) for its status, output, error and steps; a run still
    going comes back `queued` or `running` (get_run reads it later). Reports each step as progress."""
    run, total = await in_thread(ctx.owner, _queue_run, ctx, args)
    report, reported = PROGRESS.get(), 0
    deadline = time.monotonic() + args.get("wait", 30)
    # Polled without holding a thread while it waits: a long run stalls no other call.
    while run.status not in WorkflowRun.FINISHED and time.monotonic() < deadline:
        await anyio.sleep(0.1)
        finished = await in_thread(ctx.owner, _finished_steps, run)
        for step_id, status in finished[reported:] if report else ():
            reported += 1
            await report(reported, total, f"step {step_id} {status}")
    return await in_thread(ctx.owner, _run_document, run)


def _queue_run(ctx, args):
    """The queued run, and how many steps its entry has."""
    workflow = selectors.workflow_get(tenant=ctx.tenant, slug=args["id"])
    run = services.run_create(tenant=ctx.tenant, actor=ctx.actor, workflow=workflow, input=args.get("input", {}),
                              entry=args.get("workflow"))
    return run, len(next(w for w in workflow.definition["workflows"] if w["name"] == run.entry)["steps"])


def _finished_steps(run):
    """The run, refreshed, and its finished steps' (id, status) in order."""
    run.refresh_from_db()
    return list(selectors.run_steps(run=run).exclude(status="running").order_by("position").values_list("step_id", "status"))


def _run_document(run):
    return run.to_document(selectors.run_steps(run=run) if run.status in WorkflowRun.FINISHED else None)
