import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError

from backflow.errors import ServiceError
from integrations_app.file_store import FileStore, write_json_atomic
from integrations_app.management.commands.import_config import tenant_or_error
from integrations_app.stores import DatabaseStore
from integrations_app.transfer import export_from_tenant
from tenants.principals import Principal
from workflows_app.transfer import export_mcp_servers, export_warnings

MCP_CONFIG = {
    "enabled": True,
    "allowIntegrationCreation": True,
    "allowRouteCreation": True,
    "integrationsPath": "./integrations",
    "configPath": "./config.json",
    "autoReload": False,
}


class Command(BaseCommand):
    help = (
        "Export a tenant's integrations, routes and MCP servers as local-mode files in DIR: "
        "integrations/<name>.json, config.json (routes, mcpServers; other keys of an existing file are "
        "kept) and mcp-config.json. Stored "
        "secret names become {{env.NAME}} placeholders; secret values are never exported. A placeholder "
        "that names one of Backflow's own settings (a secret called secret_key -> {{env.SECRET_KEY}}) is "
        "reported under warnings and on stderr: import_config will not read it."
    )

    def add_arguments(self, parser):
        parser.add_argument("--tenant", required=True, help="Tenant slug")
        parser.add_argument("dir", help="Target folder (created if missing)")

    def handle(self, tenant, dir, **options):
        tenant = tenant_or_error(tenant)
        root = Path(dir).resolve()
        (root / "integrations").mkdir(parents=True, exist_ok=True)
        if not (root / "mcp-config.json").exists():
            write_json_atomic(root / "mcp-config.json", MCP_CONFIG)
        target = FileStore(integrations_path=root / "integrations", config_path=root / "config.json")
        source = DatabaseStore(tenant=tenant, actor=Principal.system(tenant, "export_config"))
        try:
            report = export_from_tenant(source=source, target=target)
        except ServiceError as exc:
            raise CommandError(f"Export stopped: {exc}") from exc
        servers = export_mcp_servers(tenant=tenant)
        target.update_config("mcpServers", servers)
        report["mcpServers"] = [server["name"] for server in servers]
        report["warnings"] += export_warnings(servers)
        self.stdout.write(json.dumps(report, indent=2))
        for warning in report["warnings"]:
            self.stderr.write(f"Warning: {warning}")
