"""The seed's workflow document and the tenant's MCP server records: schemas and checks."""

import re
from datetime import datetime, timezone

from croniter import croniter

from backflow.errors import InvalidInput
from backflow.templating import TemplateError, check_references
from backflow.validation import Problems, schema_errors
from entities_app.documents import APP_ID_PATTERN
from integrations_app.documents import ENDPOINT_NAME_PATTERN, NAME_HELP, NAME_PATTERN, STEP_ID_PATTERN

BUILTIN_ACTIONS = {"mcp.listTools": ("server",), "mcp.execute": ("server", "tool")}
TOOL_TYPES = ("mcp_tool", "llm_call", "integration")
TOOL_REQUIRED_PARAMS = {"mcp_tool": ("mcpServer", "toolName"), "llm_call": (), "integration": ("integration", "action")}
TRIGGER_TYPES = ("manual", "webhook", "schedule")
# Schedules: five-field cron (minute hour day-of-month month day-of-week, UTC) or one of these
# aliases of it, so no trigger fires more than once a minute. croniter also reads a sixth field as
# seconds and a seventh as the year, and `R` as a random value drawn anew at each computation: none
# of those is accepted. Each workflow has at most MAX_SCHEDULES_PER_WORKFLOW schedule triggers
# (and each tenant BACKFLOW_SCHEDULES_PER_TENANT, checked by the service).
CRON_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
CRON_FIELDS = ("minute", "hour", "day of month", "month", "day of week")
CRON_HELP = ('give a cron expression of five fields (minute hour day-of-month month day-of-week, UTC), e.g. "*/15 * * * *", '
             "or @hourly, @daily, @weekly, @monthly or @yearly")
MAX_SCHEDULES_PER_WORKFLOW = 5
# The longest a caller may wait for a run to finish (REST ?wait=, the run_workflow tool's wait).
MAX_WAIT = 60

STEP_SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "pattern": STEP_ID_PATTERN, "x-pattern-help": "letters, digits, '_' or '-' (max 63)."},
        "action": {"type": "string", "minLength": 1, "maxLength": 100, "description": "A declared tool's name, or mcp.listTools / mcp.execute."},
        "params": {"type": "object", "description": "Arguments; may use {{input.x}} and {{steps.<earlier id>.result}}."},
        "timeout": {"type": "number", "minimum": 0.1, "maximum": 600, "description": "Seconds (default 60)."},
        "retries": {"type": "integer", "minimum": 0, "maximum": 5, "description": "Extra attempts after a failure (default 0)."},
        "continueOnError": {"type": "boolean", "description": "Keep going when this step fails (default false)."},
    },
    "required": ["id", "action"],
    "additionalProperties": False,
}
TOOL_SCHEMA = {
    "type": "object",
    "description": (
        "mcp_tool {mcpServer, toolName}: a tool of a registered MCP server; llm_call {model?, system?, temperature?}: "
        "steps give params.prompt; integration {integration, action}: an endpoint of an integration."
    ),
    "properties": {
        "name": {"type": "string", "pattern": ENDPOINT_NAME_PATTERN, "x-pattern-help": "start with a letter; letters, digits, '_' or '-'."},
        "type": {"type": "string", "enum": list(TOOL_TYPES)},
        "params": {"type": "object"},
    },
    "required": ["name", "type"],
    "additionalProperties": False,
}
TRIGGER_SCHEMA = {
    "type": "object",
    "description": "manual (API/MCP), webhook (POST /hooks/<tenant>/<id>/<token>), schedule {cron, input?}.",
    "properties": {
        "type": {"type": "string", "enum": list(TRIGGER_TYPES)},
        "cron": {"type": "string", "maxLength": 100, "description": (
            "schedule: five-field cron (minute hour day month weekday, UTC), e.g. \"*/15 * * * *\", or @hourly/@daily/"
            f"@weekly/@monthly/@yearly; at most {MAX_SCHEDULES_PER_WORKFLOW} schedules a workflow.")},
        "workflow": {"type": "string", "description": "Which entry of `workflows` to run (default: the first)."},
        "input": {"type": "object", "description": "schedule: the input of each run."},
    },
    "required": ["type"],
    "additionalProperties": False,
}
WORKFLOW_SCHEMA = {
    "type": "object",
    "title": "Workflow",
    "description": "Steps that call MCP tools, an LLM and integrations, passing results along (the seed's document; "
                   "example: backflow://docs/workflows).",
    "properties": {
        "id": {"type": "string", "pattern": APP_ID_PATTERN, "x-pattern-help": NAME_HELP, "description": "e.g. \"file-analysis\" (default: from the name)."},
        "name": {"type": "string", "minLength": 1, "maxLength": 200, "description": "Shown to people (default: the id)."},
        "description": {"type": "string", "maxLength": 2000, "description": "What the workflow does."},
        "workflows": {
            "type": "array", "minItems": 1, "maxItems": 20,
            "description": "Named step lists; a run executes one (the first unless it names another).",
            "items": {
                "type": "object",
                "properties": {
                    "name": {"type": "string", "pattern": STEP_ID_PATTERN, "x-pattern-help": "letters, digits, '_' or '-'."},
                    "steps": {"type": "array", "items": STEP_SCHEMA, "minItems": 1, "maxItems": 100},
                },
                "required": ["name", "steps"],
                "additionalProperties": False,
            },
        },
        "tools": {"type": "array", "items": TOOL_SCHEMA, "maxItems": 100, "description": "The tools steps call by name."},
        "triggers": {"type": "array", "items": TRIGGER_SCHEMA, "maxItems": 20, "description": "What starts a run (default: manual)."},
    },
    "required": ["workflows"],
    "additionalProperties": False,
}

SECRET_HEADER = {
    "type": "object",
    "properties": {"secret": {"type": "string", "pattern": NAME_PATTERN}, "prefix": {"type": "string", "maxLength": 50}},
    "required": ["secret"],
    "additionalProperties": False,
}
MCP_SERVER_SCHEMA = {
    "type": "object",
    "title": "MCP server",
    "description": (
        "An external MCP server workflows may call. Tenants register http (Streamable HTTP) and sse servers by url; "
        "header values are text or {\"secret\": \"<stored secret>\", \"prefix\": \"Bearer \"}. stdio servers "
        "({command, args, env}) are defined by operators only."
    ),
    "properties": {
        "name": {"type": "string", "pattern": NAME_PATTERN, "x-pattern-help": NAME_HELP},
        "transport": {"type": "string", "enum": ["http", "sse", "stdio"]},
        "url": {"type": "string", "pattern": r"^https?://\S+$", "maxLength": 2000, "x-pattern-help": "give an absolute http(s) URL."},
        "headers": {"type": "object", "additionalProperties": {"anyOf": [{"type": "string", "maxLength": 4000}, SECRET_HEADER]}, "maxProperties": 30},
        "command": {"type": "string", "minLength": 1, "maxLength": 500},
        "args": {"type": "array", "items": {"type": "string", "maxLength": 2000}, "maxItems": 100},
        "env": {"type": "object", "additionalProperties": {"type": "string", "maxLength": 4000}, "maxProperties": 100},
        "timeout": {"type": "number", "minimum": 0.1, "maximum": 600, "description": "Default seconds per call (60)."},
        "maxConcurrency": {"type": "integer", "minimum": 1, "maximum": 64, "description": "Calls in flight at once (default 4)."},
    },
    "required": ["name"],
    "additionalProperties": False,
}


def clean_workflow(document, *, mcp_server_exists, find_integration):
    if not isinstance(document, dict):
        raise InvalidInput.single("body", "Send a JSON object.")
    doc = {k: v for k, v in document.items() if k not in ("createdAt", "updatedAt", "webhookUrl")}
    if "name" not in doc and isinstance(doc.get("id"), str):
        doc["name"] = doc["id"]  # the seed's own document has an id and no name
    problems = Problems(schema_errors(WORKFLOW_SCHEMA, doc))
    if "name" not in doc:
        problems.add("name", "give the workflow a name (or an id, which then names it).")
    problems.raise_if_any()
    doc.setdefault("description", "")
    doc.setdefault("tools", [])
    doc.setdefault("triggers", [{"type": "manual"}])
    tools = {}
    for index, tool in enumerate(doc["tools"]):
        where = f"tools[{index}]"
        tool.setdefault("params", {})
        if tool["name"] in tools:
            problems.add(f"{where}.name", f"two tools are named {tool['name']!r}.")
        tools[tool["name"]] = tool
        for part in TOOL_REQUIRED_PARAMS[tool["type"]]:
            if not isinstance(tool["params"].get(part), str):
                problems.add(f"{where}.params.{part}", f"a {tool['type']} tool needs params.{part}.")
        if tool["type"] == "mcp_tool" and isinstance(tool["params"].get("mcpServer"), str) and not mcp_server_exists(tool["params"]["mcpServer"]):
            problems.add(f"{where}.params.mcpServer", f"no MCP server named {tool['params']['mcpServer']!r}; register it first.")
        if tool["type"] == "integration" and isinstance(tool["params"].get("integration"), str):
            integration = find_integration(tool["params"]["integration"])
            if integration is None:
                problems.add(f"{where}.params.integration", f"no integration named {tool['params']['integration']!r}.")
            elif tool["params"].get("action") not in {e["name"] for e in integration["endpoints"]}:
                problems.add(f"{where}.params.action", f"integration {integration['name']!r} has no endpoint {tool['params'].get('action')!r}.")
    names = set()
    for w_index, flow in enumerate(doc["workflows"]):
        if flow["name"] in names:
            problems.add(f"workflows[{w_index}].name", f"two workflows are named {flow['name']!r}.")
        names.add(flow["name"])
        earlier = []
        for s_index, step in enumerate(flow["steps"]):
            where = f"workflows[{w_index}].steps[{s_index}]"
            step.setdefault("params", {})
            if step["id"] in earlier:
                problems.add(f"{where}.id", f"duplicate step id {step['id']!r}.")
            _check_step(problems, where, step, tools, mcp_server_exists)
            try:
                check_references(step["params"], roots=("input", "steps"), steps=tuple(earlier))
            except TemplateError as exc:
                problems.add(f"{where}.params", str(exc))
            earlier.append(step["id"])
    schedules = 0
    for index, trigger in enumerate(doc["triggers"]):
        where = f"triggers[{index}]"
        if trigger["type"] == "schedule":
            schedules += 1
            if schedules > MAX_SCHEDULES_PER_WORKFLOW:
                problems.add(where, f"a workflow has at most {MAX_SCHEDULES_PER_WORKFLOW} schedule triggers; "
                                    "one cron expression can list several times (e.g. \"0 9,17 * * 1-5\").")
            problem = cron_problem(trigger.get("cron"))
            if problem:
                problems.add(f"{where}.cron", problem)
        elif "cron" in trigger or "input" in trigger:
            problems.add(where, "cron and input belong to schedule triggers.")
        if "workflow" in trigger and trigger["workflow"] not in names:
            problems.add(f"{where}.workflow", f"no workflow named {trigger['workflow']!r} in this document.")
    problems.raise_if_any()
    return doc


def cron_problem(expression):
    """What is wrong with a schedule's cron expression, or None. Five fields (or an alias of
    them), as croniter reads them, that match some time: at most one firing a minute."""
    if not isinstance(expression, str) or not expression.strip():
        return f"a schedule trigger needs cron: {CRON_HELP}."
    text = expression.strip()
    if text.startswith("@"):
        if text.lower() not in CRON_ALIASES:
            return f"{text!r} is not a supported alias: {CRON_HELP}."
    else:
        fields = text.split()
        if len(fields) != len(CRON_FIELDS):
            extra = " (a sixth field would be seconds: schedules fire at most once a minute)" if len(fields) > 5 else ""
            return f"{len(fields)} field{'s' if len(fields) != 1 else ''}{extra}: {CRON_HELP}."
        for name, field in zip(CRON_FIELDS, fields):
            if any(token.upper() in ("R", "H") or "(" in token for token in re.split(r"[,/\-#]", field)):
                return f"the {name} field {field!r} asks for a random or hashed value, which is not supported: {CRON_HELP}."
    if not croniter.is_valid(text):
        return f"{text!r} is not a valid cron expression: {CRON_HELP}."
    try:
        croniter(text, datetime.now(timezone.utc)).get_next(datetime)
    except Exception:  # croniter's CroniterBadDateError (e.g. "0 0 31 2 *") and whatever else it raises
        return f"{text!r} never matches a date (e.g. the 31st of a shorter month): {CRON_HELP}."
    return None


def _check_step(problems, where, step, tools, mcp_server_exists):
    action = step["action"]
    if action in BUILTIN_ACTIONS:
        for part in BUILTIN_ACTIONS[action]:
            value = step["params"].get(part)
            if not isinstance(value, str):
                problems.add(f"{where}.params.{part}", f"{action} needs params.{part}.")
            elif part == "server" and "{{" not in value and not mcp_server_exists(value):
                problems.add(f"{where}.params.server", f"no MCP server named {value!r}; register it first.")
        if action == "mcp.execute" and not isinstance(step["params"].get("arguments", {}), dict):
            problems.add(f"{where}.params.arguments", "give the tool's arguments as an object.")
    elif action not in tools:
        declared = ", ".join(sorted(tools)) or "none"
        problems.add(f"{where}.action", f"{action!r} is neither a declared tool (tools: {declared}) nor mcp.listTools / mcp.execute.")
    elif tools[action]["type"] == "llm_call" and not isinstance(step["params"].get("prompt"), str):
        problems.add(f"{where}.params.prompt", "an llm_call step needs a prompt.")


def clean_mcp_server(document, *, allow_stdio):
    if not isinstance(document, dict):
        raise InvalidInput.single("body", "Send a JSON object.")
    doc = {k: v for k, v in document.items() if k not in ("createdAt", "updatedAt")}
    problems = Problems(schema_errors(MCP_SERVER_SCHEMA, doc))
    problems.raise_if_any()
    transport = doc.setdefault("transport", "stdio" if "command" in doc else "http")
    if transport == "stdio":
        if not allow_stdio:
            problems.add("transport", "stdio servers run programs on the platform: only operators define them (admin or import_config).")
        if "command" not in doc:
            problems.add("command", "a stdio server needs a command.")
        for part in ("url", "headers"):
            if part in doc:
                problems.add(part, "not used by stdio servers.")
    else:
        if "url" not in doc:
            problems.add("url", f"an {transport} server needs its url.")
        for part in ("command", "args", "env"):
            if part in doc:
                problems.add(part, f"not used by {transport} servers.")
    problems.raise_if_any()
    return doc
