import json
from pathlib import Path

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from backflow.errors import ServiceError
from integrations_app.file_store import FileStore
from integrations_app.stores import DatabaseStore
from integrations_app.transfer import import_into_tenant
from tenants import selectors
from tenants.principals import Principal
from workflows_app.transfer import import_mcp_servers


def tenant_or_error(slug):
    tenant = selectors.tenant_get(slug=slug)
    if tenant is None:
        raise CommandError(f"No tenant {slug!r}; create it with `manage.py create_tenant {slug}`.")
    return tenant


class Command(BaseCommand):
    help = (
        "Import local-mode files into a tenant: integrations/*.json, and the routes and mcpServers of "
        "CONFIG_JSON (config.json). {{env.NAME}} credentials become stored secrets, filled from the "
        "environment when NAME is set, except Backflow's own settings (SECRET_KEY, BACKFLOW_*, DATABASE_URL, ...), "
        "which are never read: such secrets are listed under missingSecrets with the reason. "
        "All or nothing: any invalid document aborts the whole import."
    )

    def add_arguments(self, parser):
        parser.add_argument("config_json", help="Path to config.json (routes, mcpServers)")
        parser.add_argument("--tenant", required=True, help="Tenant slug")
        parser.add_argument("--integrations", help="Folder of <name>.json files (default: integrations/ beside CONFIG_JSON, if it exists)")

    def handle(self, config_json, tenant, integrations, **options):
        config_path = Path(config_json).resolve()
        if not config_path.is_file():
            raise CommandError(f"{config_path} does not exist.")
        # The seed's MCP-client config.json holds only mcpServers: without --integrations, a missing
        # integrations/ folder beside it just means there are none.
        integrations_path = Path(integrations).resolve() if integrations else config_path.parent / "integrations"
        if integrations and not integrations_path.is_dir():
            raise CommandError(f"Integrations folder {integrations_path} does not exist; check --integrations.")
        tenant = tenant_or_error(tenant)
        source = FileStore(integrations_path=integrations_path, config_path=config_path)
        target = DatabaseStore(tenant=tenant, actor=Principal.system(tenant, "import_config"))
        try:
            with transaction.atomic():
                report = import_into_tenant(source=source, target=target)
                report["mcpServers"] = import_mcp_servers(
                    tenant=tenant, actor=target.actor, servers=source.read_config().get("mcpServers") or [])
        except ValueError as exc:  # config.json itself is unreadable
            raise CommandError(f"Nothing was imported: {exc}") from exc
        except ServiceError as exc:
            raise CommandError(f"Nothing was imported: {exc}") from exc
        self.stdout.write(json.dumps(report, indent=2))
        for missing in report["missingSecrets"]:
            if "reason" in missing:
                self.stderr.write(f"Secret {missing['secret']!r} not set: {missing['reason']}")
