import logging
import os

import anyio
from django.core.management.base import BaseCommand, CommandError

from backflow.event_loop import install_event_loop
from integrations_app.file_store import FileStore
from integrations_app.stores import DatabaseStore
from mcp_app.context import ToolContext
from mcp_app.local_config import LocalConfigError, load_local_config
from mcp_app.registry import visible_tools
from tenants import selectors
from tenants.principals import Principal
from tenants.scopes import ALL_SCOPES


class Command(BaseCommand):
    help = (
        "Serve MCP on stdin/stdout. Local mode (default) works on the seed's files named by "
        "MCP_CONFIG (mcp-config.json); --tenant serves every tool on that tenant's records."
    )
    requires_system_checks = []  # spawned on demand by assistants: start fast

    def add_arguments(self, parser):
        parser.add_argument("mcp_config", nargs="?", help="Path to mcp-config.json (local mode)")
        parser.add_argument("--tenant", help="Serve this tenant's database records instead of local files")
        parser.add_argument("--log-level", default=None, help="Log level on stderr (default INFO; DEBUG=mcp* turns on DEBUG)")

    def handle(self, mcp_config, tenant, log_level, **options):
        install_event_loop()  # uvloop unless BACKFLOW_EVENT_LOOP=asyncio: anyio's runner makes its loop from the policy
        self._configure_logging(log_level)
        if tenant and mcp_config:
            raise CommandError("Give either MCP_CONFIG (local files) or --tenant (database records), not both.")
        ctx = self._tenant_context(tenant) if tenant else self._local_context(mcp_config)
        logging.getLogger("backflow.mcp").info("Serving %d MCP tools on stdio (%s).", len(ctx.allowed), f"tenant {tenant}" if tenant else "local files")

        from mcp_app.stdio import serve_stdio

        anyio.run(serve_stdio, ctx)

    def _configure_logging(self, log_level):
        level = log_level or ("DEBUG" if os.environ.get("DEBUG", "").startswith("mcp") else None)
        if level:
            try:
                logging.getLogger().setLevel(level.upper())
            except ValueError as exc:
                raise CommandError(f"--log-level: {exc}") from exc

    def _tenant_context(self, slug):
        tenant = selectors.tenant_get(slug=slug)
        if tenant is None:
            raise CommandError(f"No tenant {slug!r}; create it with `manage.py create_tenant {slug}`.")
        if not tenant.is_active:
            raise CommandError(f"Tenant {slug!r} is inactive.")
        actor = Principal.system(tenant, "mcp_stdio")
        return ToolContext(
            store=DatabaseStore(tenant=tenant, actor=actor), allowed=visible_tools(scopes=ALL_SCOPES), tenant=tenant, actor=actor,
        )

    def _local_context(self, path):
        try:
            config = load_local_config(path)
        except LocalConfigError as exc:
            raise CommandError(str(exc)) from exc
        store = FileStore(integrations_path=config.integrations_path, config_path=config.config_path, auto_reload=config.auto_reload)
        store.snapshot()  # load now, so malformed files are reported at start-up
        return ToolContext(store=store, allowed=visible_tools(scopes=config.scopes, local=True))
