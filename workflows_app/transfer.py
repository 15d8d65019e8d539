"""Move the `mcpServers` of a local config.json into a tenant and back (operators' commands).

Entries keep the seed's shape: {name, command, args, env} for stdio (env values may be
{{env.NAME}}, resolved when the worker connects) and {name, url, headers, transport} for http/sse.
An env value may not name one of Backflow's own settings (SECRET_KEY, BACKFLOW_*, …): the
platform's configuration is given to no server.
"""

from backflow.errors import InvalidInput
from backflow.redaction import is_platform_variable
from backflow.templating import TemplateError, expressions
from workflows_app import selectors, services

READ_ONLY = ("createdAt", "updatedAt")


def platform_references(entry):
    """{env key: variable} of the entry's {{env.NAME}} placeholders that name Backflow's own settings."""
    found = {}
    env = entry.get("env")
    for key, value in (env.items() if isinstance(env, dict) else ()):
        try:
            names = [expr.split(".", 1)[1] for expr in expressions(value) if expr.startswith("env.")]
        except TemplateError:
            continue  # the service names the bad template
        found.update({key: name for name in names if is_platform_variable(name)})
    return found


def _refusal(variable):
    return (f"{{{{env.{variable}}}}} names one of Backflow's own settings, which is given to no MCP server; "
            "give the server a variable of its own.")


def import_mcp_servers(*, tenant, actor, servers):
    """Create or replace each server; InvalidInput names the entry (mcpServers[i].field)."""
    if not isinstance(servers, list):
        raise InvalidInput.single("mcpServers", "config.json's mcpServers must be a list.")
    report = {}
    for index, entry in enumerate(servers):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidInput.single(f"mcpServers[{index}]", "each server is an object with a name.")
        if refused := platform_references(entry):
            raise InvalidInput("Invalid input.", {f"mcpServers[{index}].env.{key}": [_refusal(variable)] for key, variable in refused.items()})
        try:
            if selectors.mcp_server_list(tenant=tenant).filter(name=entry["name"]).exists():
                services.mcp_server_update(tenant=tenant, actor=actor, name=entry["name"], changes=entry, partial=False, allow_stdio=True)
                report[entry["name"]] = "updated"
            else:
                services.mcp_server_create(tenant=tenant, actor=actor, document=entry, allow_stdio=True)
                report[entry["name"]] = "created"
        except InvalidInput as exc:
            raise InvalidInput(exc.message, {f"mcpServers[{index}].{field}": messages for field, messages in exc.errors.items()}) from exc
    return report


def export_mcp_servers(*, tenant):
    return [{k: v for k, v in server.to_document().items() if k not in READ_ONLY} for server in selectors.mcp_server_list(tenant=tenant)]


def export_warnings(servers):
    """What import_config would refuse in exported servers (env placeholders naming Backflow's settings)."""
    return [f"MCP server {server['name']!r}: env {key}: {_refusal(variable)} import_config refuses it."
            for server in servers for key, variable in platform_references(server).items()]
