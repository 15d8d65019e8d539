import time

from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.decorators import action
from rest_framework.response import Response

from backflow.errors import InvalidInput
from tenants.viewsets import CONFLICT, ERROR_RESPONSES, DocumentViewSet, TenantScopedViewSet, document_schema_view, json_object_body
from workflows_app import mcp_client, selectors, services
from workflows_app.documents import MAX_WAIT, MCP_SERVER_SCHEMA, WORKFLOW_SCHEMA
from workflows_app.models import McpServer, Workflow, WorkflowRun

RUN_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "format": "uuid"}, "workflow": {"type": "string"}, "entry": {"type": "string"},
        "status": {"type": "string", "enum": [s.value for s in WorkflowRun.Status]}, "trigger": {"type": "string"},
        "input": {"type": "object"}, "output": {}, "error": {"type": "string", "nullable": True},
        "steps": {"type": "array", "items": {"type": "object"}},
    },
}
RUN_REQUEST = {"type": "object", "properties": {
    "input": {"type": "object", "description": "Available to steps as {{input.x}}."},
    "workflow": {"type": "string", "description": "Which entry of the document's workflows to run (default: the first)."},
}}


def wait_for(run, seconds):
    """The run, refreshed until it finishes or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while run.status not in WorkflowRun.FINISHED and time.monotonic() < deadline:
        time.sleep(0.1)
        run.refresh_from_db()
    return run


def wait_seconds(raw):
    if raw in (None, ""):
        return 0
    try:
        seconds = float(raw)
    except ValueError as exc:
        raise InvalidInput.single("wait", "give the seconds to wait as a number.") from exc
    if not 0 <= seconds <= MAX_WAIT:
        raise InvalidInput.single("wait", f"wait between 0 and {MAX_WAIT} seconds.")
    return seconds


@document_schema_view("workflow", WORKFLOW_SCHEMA, webhookUrl={"type": "string"})
@extend_schema(parameters=[OpenApiParameter("slug", str, OpenApiParameter.PATH, description="The workflow's id.")])
class WorkflowViewSet(DocumentViewSet):
    """Workflows of the tenant; runs are queued at /api/workflows/<id>/runs/ (workflows:run)."""

    model = Workflow
    scope_resource = "workflows"
    lookup_field = "slug"
    lookup_value_regex = "[^/]+"

    def required_scope(self, request):
        if self.action == "runs" and request.method == "POST":
            return "workflows:run"
        return super().required_scope(request)

    def get_tenant_queryset(self, tenant):
        return selectors.workflow_list(tenant=tenant)

    def present(self, obj):
        return obj.to_document()

    def perform_create(self, document):
        return self.present(services.workflow_create(tenant=self.tenant, actor=self.actor, document=document))

    def perform_update(self, current, document, partial):
        return self.present(services.workflow_update(tenant=self.tenant, actor=self.actor, slug=current.slug, changes=document, partial=partial))

    def perform_destroy(self, current):
        services.workflow_delete(tenant=self.tenant, actor=self.actor, slug=current.slug)

    @extend_schema(
        methods=["GET"], summary="List the workflow's runs", responses={200: {"type": "object", "properties": {"results": {"type": "array", "items": RUN_SCHEMA}}}},
    )
    @extend_schema(
        methods=["POST"], summary="Queue a run (?wait=N waits up to N seconds for the result)", request={"application/json": RUN_REQUEST},
        parameters=[OpenApiParameter("wait", float, description=f"Seconds (0-{MAX_WAIT}) to wait for the run to finish.")],
        responses={201: RUN_SCHEMA, 200: RUN_SCHEMA, **ERROR_RESPONSES},
    )
    @action(detail=True, methods=["get", "post"])
    def runs(self, request, slug=None):
        workflow = self.get_object()
        if request.method == "GET":
            runs = self.paginate_queryset(selectors.run_list(tenant=self.tenant, workflow=workflow))
            return self.get_paginated_response([run.to_document() for run in runs])
        body = json_object_body(request)
        seconds = wait_seconds(request.query_params.get("wait"))
        run = services.run_create(tenant=self.tenant, actor=self.actor, workflow=workflow, input=body.get("input", {}),
                                  entry=body.get("workflow"))
        run = wait_for(run, seconds)
        finished = run.status in WorkflowRun.FINISHED
        steps = selectors.run_steps(run=run) if finished else None
        return Response(run.to_document(steps), status=status.HTTP_200_OK if finished else status.HTTP_201_CREATED)


@extend_schema_view(retrieve=extend_schema(summary="Get a run with its steps", responses={200: RUN_SCHEMA, **ERROR_RESPONSES}))
@extend_schema(parameters=[OpenApiParameter("id", str, OpenApiParameter.PATH, description="The run's id (UUID).")])
class RunViewSet(TenantScopedViewSet):
    """Workflow runs: status, input, output, error and every step's params, result and timing."""

    model = WorkflowRun
    scope_resource = "workflows"
    action_scopes = {"cancel": "workflows:run"}
    lookup_value_regex = "[^/]+"

    def get_tenant_queryset(self, tenant):
        return selectors.run_list(tenant=tenant)

    def retrieve(self, request, pk=None):
        run = selectors.run_get(tenant=self.tenant, run_id=pk)
        return Response(run.to_document(selectors.run_steps(run=run)))

    @extend_schema(summary="Cancel a queued or running run", request=None, responses={200: RUN_SCHEMA, **ERROR_RESPONSES, **CONFLICT})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        run = services.run_cancel(tenant=self.tenant, actor=self.actor, run=selectors.run_get(tenant=self.tenant, run_id=pk))
        return Response(run.to_document())


@document_schema_view("MCP server", MCP_SERVER_SCHEMA)
@extend_schema(parameters=[OpenApiParameter("name", str, OpenApiParameter.PATH, description="The server's name.")])
class McpServerViewSet(DocumentViewSet):
    """External MCP servers workflows call. Tenants register http and sse servers; stdio servers are operators'."""

    model = McpServer
    scope_resource = "workflows"
    lookup_field = "name"
    lookup_value_regex = "[^/]+"

    def get_tenant_queryset(self, tenant):
        return selectors.mcp_server_list(tenant=tenant)

    def present(self, obj):
        return obj.to_document()

    def perform_create(self, document):
        return self.present(services.mcp_server_create(tenant=self.tenant, actor=self.actor, document=document))

    def perform_update(self, current, document, partial):
        return self.present(services.mcp_server_update(tenant=self.tenant, actor=self.actor, name=current.name, changes=document, partial=partial))

    def perform_destroy(self, current):
        services.mcp_server_delete(tenant=self.tenant, actor=self.actor, name=current.name)


SERVERS_RESPONSE = {"type": "object", "properties": {"servers": {"type": "array", "items": {"type": "object", "properties": {
    "name": {"type": "string"}, "connected": {"type": "boolean"}, "tools": {"type": "integer"}, "error": {"type": "string", "nullable": True}}}}}}
TOOLS_RESPONSE = {"type": "object", "properties": {"tools": {"type": "array", "items": {"type": "object", "properties": {
    "name": {"type": "string"}, "description": {"type": "string"}, "inputSchema": {"type": "object"}}}}}}
EXECUTE_REQUEST = {"type": "object", "properties": {"server": {"type": "string"}, "tool": {"type": "string"}, "arguments": {"type": "object"}},
                   "required": ["server", "tool"]}


class AgentMcpViewSet(TenantScopedViewSet):
    """The seed's MCP client endpoints: the tenant's servers, their tools, and running one (mcp:use)."""

    model = McpServer
    action_scopes = {"servers": "mcp:use", "tools": "mcp:use", "execute": "mcp:use"}

    def get_tenant_queryset(self, tenant):
        return selectors.mcp_server_list(tenant=tenant)

    def _spec(self, name):
        try:
            return selectors.mcp_server_spec(selectors.mcp_server_get(tenant=self.tenant, name=name))
        except mcp_client.McpClientError as exc:
            raise InvalidInput.single("server", str(exc)) from exc

    @extend_schema(summary="List MCP servers (connects to report tool counts)", responses={200: SERVERS_RESPONSE})
    def servers(self, request):
        servers = []
        for server in selectors.mcp_server_list(tenant=self.tenant):
            try:
                count, error = len(mcp_client.list_tools(self._spec(server.name), timeout=10)), None
            except (mcp_client.McpClientError, InvalidInput) as exc:
                count, error = 0, str(exc)
            servers.append({"name": server.name, "connected": error is None, "tools": count, **({"error": error} if error else {})})
        return Response({"servers": servers})

    @extend_schema(summary="List a server's tools", responses={200: TOOLS_RESPONSE, **ERROR_RESPONSES})
    def tools(self, request, name=None):
        spec = self._spec(name)
        try:
            tools = mcp_client.list_tools(spec)
        except mcp_client.McpClientError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_502_BAD_GATEWAY)
        return Response({"tools": [{"name": t.name, "description": t.description, "inputSchema": t.input_schema} for t in tools]})

    @extend_schema(summary="Call a tool of a server", request={"application/json": EXECUTE_REQUEST},
                   responses={200: {"type": "object", "description": "The tool's result (content, structuredContent, isError)."}, **ERROR_RESPONSES})
    def execute(self, request):
        body = json_object_body(request)
        for field in ("server", "tool"):
            if not isinstance(body.get(field), str) or not body[field]:
                raise InvalidInput.single(field, "Required: a name.")
        arguments = body.get("arguments", {})
        if not isinstance(arguments, dict):
            raise InvalidInput.single("arguments", "Give the tool's arguments as an object.")
        spec = self._spec(body["server"])
        try:
            result = mcp_client.call_tool(spec, body["tool"], arguments)
        except mcp_client.McpClientError as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_502_BAD_GATEWAY)
        # mcp_client scrubbed the result of the credentials the server was sent.
        return Response(result.model_dump(by_alias=True, exclude_none=True, mode="json"))
