import logging
import os

from daphne.endpoints import build_endpoint_description_strings
from daphne.server import Server
from django.core.management.base import BaseCommand, CommandError

from backflow.asgi_utils import PathRouter, respond
from integrations_app.dispatch import LocalSite, LocalSites, RouteDispatcher
from integrations_app.file_store import FileStore
from mcp_app.local_config import LocalConfigError, load_local_config

logger = logging.getLogger("backflow.routes")


async def not_found(scope, receive, send):
    if scope["type"] == "http":
        await respond(send, 404, {"error": "Local mode serves routes at /t/local/<route path>."})


class Command(BaseCommand):
    help = (
        "Serve the local-mode routes of MCP_CONFIG's files at http://HOST:PORT/t/local/<path> (the seed's "
        "`npm start`). Credentials come from {{env.NAME}}; with BACKFLOW_LOCAL_TOKEN set, routes with "
        "requireAuth need `Authorization: Bearer <that token>`."
    )

    def add_arguments(self, parser):
        parser.add_argument("mcp_config", nargs="?", help="Path to mcp-config.json")
        parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
        parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))

    def handle(self, mcp_config, host, port, **options):
        try:
            config = load_local_config(mcp_config)
        except LocalConfigError as exc:
            raise CommandError(str(exc)) from exc
        store = FileStore(integrations_path=config.integrations_path, config_path=config.config_path, auto_reload=config.auto_reload)
        token = os.environ.get("BACKFLOW_LOCAL_TOKEN") or None
        site = LocalSite(store, token=token)
        routes = site.table  # load now: malformed files are reported at start-up
        if not token and any(route.get("requireAuth", True) for route in store.list_routes()):
            logger.warning("BACKFLOW_LOCAL_TOKEN is not set: routes with requireAuth are served without a credential.")
        logger.info("Serving %d local routes at http://%s:%s/t/local/", sum(len(m) for _, m in routes.templates), host, port)
        app = PathRouter(not_found, {"/t/": RouteDispatcher(LocalSites(site))})
        Server(application=app, endpoints=build_endpoint_description_strings(host=host, port=port)).run()
