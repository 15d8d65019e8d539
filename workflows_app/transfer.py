"""Move the `mcpServers` of a local config.json into a tenant and back (operators' commands).

Entries keep the seed's shape: {name, command, args, env} for stdio (env values may be
{{env.NAME}}, resolved when the worker connects) and {name, url, headers, transport} for http/sse.
"""

from backflow.errors import InvalidInput
from workflows_app import selectors, services

READ_ONLY = ("createdAt", "updatedAt")


def import_mcp_servers(*, tenant, actor, servers):
    """Create or replace each server; InvalidInput names the entry (mcpServers[i].field)."""
    if not isinstance(servers, list):
        raise InvalidInput.single("mcpServers", "config.json's mcpServers must be a list.")
    report = {}
    for index, entry in enumerate(servers):
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise InvalidInput.single(f"mcpServers[{index}]", "each server is an object with a name.")
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
