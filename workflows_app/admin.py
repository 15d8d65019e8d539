"""Operator pages: workflows, runs (read-only, with steps), MCP servers, stdio ones included, and
worker heartbeats."""

from datetime import timedelta

from django.conf import settings
from django.contrib import admin
from django.utils import timezone

from tenants.admin_base import JSON_WIDGET, ReadableJSONField, ServiceAdmin, ServiceForm, operator
from workflows_app import services
from workflows_app.models import McpServer, StepRun, WorkerHeartbeat, Workflow, WorkflowRun


class WorkflowForm(ServiceForm):
    definition = ReadableJSONField(widget=JSON_WIDGET, help_text="{\"workflows\": [...], \"tools\": [...], \"triggers\": [...]}")

    class Meta:
        model = Workflow
        fields = ["tenant", "slug", "name", "description", "definition"]

    def save_through_service(self, tenant, actor):
        data = self.cleaned_data
        definition = data["definition"] if isinstance(data["definition"], dict) else {}
        document = {"id": data.get("slug", self.instance.slug), "name": data["name"], "description": data["description"], **definition}
        if not self.instance._state.adding:
            return services.workflow_update(tenant=tenant, actor=actor, slug=self.instance.slug, changes=document, partial=False).pk
        return services.workflow_create(tenant=tenant, actor=actor, document=document).pk


@admin.register(Workflow)
class WorkflowAdmin(ServiceAdmin):
    form = WorkflowForm
    list_display = ["slug", "name", "tenant", "updated_at"]
    list_filter = ["tenant"]
    search_fields = ["slug", "name"]
    identity_fields = ("slug",)

    def delete_model(self, request, obj):
        services.workflow_delete(tenant=obj.tenant, actor=operator(request, obj.tenant), slug=obj.slug)


class StepRunInline(admin.TabularInline):
    model = StepRun
    extra = 0
    can_delete = False
    fields = ["position", "step_id", "action", "status", "attempts", "duration_ms", "error", "params", "result"]
    readonly_fields = fields

    def has_add_permission(self, request, obj=None):
        return False


@admin.register(WorkflowRun)
class WorkflowRunAdmin(admin.ModelAdmin):
    list_display = ["id", "workflow", "tenant", "status", "trigger", "created_at", "finished_at"]
    list_filter = ["tenant", "status", "trigger"]
    search_fields = ["id", "workflow__slug", "request_id"]
    inlines = [StepRunInline]
    readonly_fields = ["workflow", "entry", "status", "trigger", "input", "output", "error", "created_by", "started_at", "finished_at",
                       "heartbeat_at", "request_id"]
    actions = ["cancel"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    @admin.action(description="Cancel selected runs")
    def cancel(self, request, queryset):
        for run in queryset.filter(status__in=[WorkflowRun.Status.QUEUED, WorkflowRun.Status.RUNNING]):
            services.run_cancel(tenant=run.tenant, actor=operator(request, run.tenant), run=run)


class McpServerForm(ServiceForm):
    args = ReadableJSONField(widget=JSON_WIDGET, required=False)
    env = ReadableJSONField(widget=JSON_WIDGET, required=False)
    headers = ReadableJSONField(widget=JSON_WIDGET, required=False)

    class Meta:
        model = McpServer
        fields = ["tenant", "name", "transport", "command", "args", "env", "url", "headers", "timeout", "max_concurrency"]

    def save_through_service(self, tenant, actor):
        data = self.cleaned_data
        document = {"name": data.get("name", self.instance.name), "transport": data["transport"], "timeout": data["timeout"],
                    "maxConcurrency": data["max_concurrency"]}
        if data["transport"] == McpServer.Transport.STDIO:
            document.update(command=data["command"], args=data.get("args") or [], env=data.get("env") or {})
        else:
            document.update(url=data["url"], headers=data.get("headers") or {})
        # Operators may define stdio servers, which run programs on the workers.
        if not self.instance._state.adding:
            return services.mcp_server_update(tenant=tenant, actor=actor, name=self.instance.name, changes=document, partial=False, allow_stdio=True).pk
        return services.mcp_server_create(tenant=tenant, actor=actor, document=document, allow_stdio=True).pk


@admin.register(McpServer)
class McpServerAdmin(ServiceAdmin):
    form = McpServerForm
    list_display = ["name", "tenant", "transport", "command", "url"]
    list_filter = ["tenant", "transport"]
    search_fields = ["name", "command", "url"]
    identity_fields = ("name",)

    def delete_model(self, request, obj):
        services.mcp_server_delete(tenant=obj.tenant, actor=operator(request, obj.tenant), name=obj.name, allow_stdio=True)


@admin.register(WorkerHeartbeat)
class WorkerHeartbeatAdmin(admin.ModelAdmin):
    """Which run_worker processes are alive (each records a heartbeat every
    BACKFLOW_WORKER_HEARTBEAT_SECONDS; a clean stop removes its row)."""

    list_display = ["worker_id", "hostname", "pid", "concurrency", "started_at", "beat_at", "alive"]
    readonly_fields = list_display[:-1]

    @admin.display(boolean=True, description="alive")
    def alive(self, obj):
        return obj.beat_at >= timezone.now() - timedelta(seconds=settings.BACKFLOW_WORKER_STALE_SECONDS)

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
