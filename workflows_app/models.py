import secrets
import uuid

from django.db import models

from backflow.logs import current_request_id
from tenants.scoping import TenantOwned


def new_webhook_token():
    return secrets.token_urlsafe(24)


class Workflow(TenantOwned):
    """The seed's workflow document; `definition` holds workflows, tools and triggers."""

    slug = models.CharField(max_length=63)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    definition = models.JSONField(default=dict)
    webhook_token = models.CharField(max_length=64, default=new_webhook_token, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwned.Meta):
        ordering = ["slug"]
        constraints = [models.UniqueConstraint(fields=["tenant", "slug"], name="workflow_unique_slug")]

    def __str__(self):
        return self.slug

    def to_document(self):
        triggers = self.definition.get("triggers", [])
        doc = {
            "id": self.slug, "name": self.name, "description": self.description,
            "workflows": self.definition.get("workflows", []), "tools": self.definition.get("tools", []),
            "triggers": triggers, "createdAt": self.created_at.isoformat(), "updatedAt": self.updated_at.isoformat(),
        }
        if any(t["type"] == "webhook" for t in triggers):
            doc["webhookUrl"] = f"/hooks/{self.tenant.slug}/{self.slug}/{self.webhook_token}"
        return doc


class WorkflowRun(TenantOwned):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    FINISHED = (Status.SUCCEEDED, Status.FAILED, Status.CANCELLED)

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    entry = models.CharField(max_length=63, help_text="Which of the document's workflows runs.")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.QUEUED, db_index=True)
    trigger = models.CharField(max_length=10, default="manual")
    input = models.JSONField(default=dict)
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    created_by = models.CharField(max_length=200, blank=True)
    depth = models.PositiveSmallIntegerField(
        default=0, help_text="How many platform calls led to this run (a webhook called by a run's upstream call is 1 deeper).")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    heartbeat_at = models.DateTimeField(null=True, blank=True)
    request_id = models.CharField(max_length=128, blank=True, default=current_request_id, db_index=True, editable=False,
                                  help_text="X-Request-ID of the request that made it (docs/operator-guide.md, Monitoring).")

    class Meta(TenantOwned.Meta):
        ordering = ["-created_at"]

    def __str__(self):
        return f"{self.workflow.slug} {self.id} ({self.status})"

    def to_document(self, steps=None):
        doc = {
            "id": str(self.id), "workflow": self.workflow.slug, "entry": self.entry, "status": self.status,
            "trigger": self.trigger, "input": self.input, "output": self.output, "error": self.error or None,
            "createdAt": self.created_at.isoformat(), "startedAt": _iso(self.started_at), "finishedAt": _iso(self.finished_at),
        }
        if steps is not None:
            doc["steps"] = [step.to_document() for step in steps]
        return doc


class StepRun(TenantOwned):
    run = models.ForeignKey(WorkflowRun, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    step_id = models.CharField(max_length=63)
    action = models.CharField(max_length=100)
    status = models.CharField(max_length=10, default="running")
    params = models.JSONField(default=dict, help_text="Resolved parameters, credentials redacted.")
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    started_at = models.DateTimeField(auto_now_add=True)
    duration_ms = models.FloatField(null=True, blank=True)

    class Meta(TenantOwned.Meta):
        ordering = ["run", "position"]

    def to_document(self):
        return {
            "id": self.step_id, "action": self.action, "status": self.status, "params": self.params,
            "result": self.result, "error": self.error or None, "attempts": self.attempts,
            "startedAt": self.started_at.isoformat(), "durationMs": self.duration_ms,
        }


class ScheduledTrigger(TenantOwned):
    """One schedule trigger of a workflow and when it fires next (workers claim it by compare-and-swap)."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    cron = models.CharField(max_length=100)
    entry = models.CharField(max_length=63)
    input = models.JSONField(default=dict)
    next_run_at = models.DateTimeField(db_index=True)


class McpServer(TenantOwned):
    class Transport(models.TextChoices):
        STDIO = "stdio"
        HTTP = "http"
        SSE = "sse"

    name = models.CharField(max_length=63)
    transport = models.CharField(max_length=5, choices=Transport.choices)
    command = models.CharField(max_length=500, blank=True)
    args = models.JSONField(default=list, blank=True)
    env = models.JSONField(default=dict, blank=True, help_text="Values may be {{env.NAME}} of the worker's environment.")
    url = models.CharField(max_length=2000, blank=True)
    headers = models.JSONField(default=dict, blank=True, help_text='Text, or {"secret": "<stored secret>", "prefix": "Bearer "}.')
    timeout = models.FloatField(default=60.0)
    max_concurrency = models.PositiveSmallIntegerField(default=4)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta(TenantOwned.Meta):
        ordering = ["name"]
        verbose_name = "MCP server"  # not Django's "mcp server" / "Mcp servers" in the admin
        constraints = [models.UniqueConstraint(fields=["tenant", "name"], name="mcpserver_unique_name")]

    def __str__(self):
        return self.name

    def to_document(self):
        doc = {"name": self.name, "transport": self.transport, "timeout": self.timeout, "maxConcurrency": self.max_concurrency}
        if self.transport == self.Transport.STDIO:
            doc.update(command=self.command, args=self.args, env=self.env)
        else:
            doc.update(url=self.url, headers=self.headers)
        doc.update(createdAt=self.created_at.isoformat(), updatedAt=self.updated_at.isoformat())
        return doc

    def apply_document(self, doc):
        self.transport = doc["transport"]
        self.command, self.args, self.env = doc.get("command", ""), doc.get("args", []), doc.get("env", {})
        self.url, self.headers = doc.get("url", ""), doc.get("headers", {})
        self.timeout = doc.get("timeout", 60.0)
        self.max_concurrency = doc.get("maxConcurrency", 4)


def _iso(value):
    return value.isoformat() if value else None


class WorkerHeartbeat(models.Model):
    """A `run_worker` process's last sign of life (operator-wide; no tenant's data)."""

    worker_id = models.CharField(max_length=200, unique=True, help_text="Host, process id and a random part.")
    hostname = models.CharField(max_length=255)
    pid = models.PositiveIntegerField()
    concurrency = models.PositiveSmallIntegerField(help_text="Runs it executes at once.")
    started_at = models.DateTimeField()
    beat_at = models.DateTimeField(db_index=True)

    class Meta:
        ordering = ["-beat_at"]

    def __str__(self):
        return self.worker_id
