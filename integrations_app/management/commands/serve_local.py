import logging
import os
import secrets

from daphne.endpoints import build_endpoint_description_strings
from daphne.server import Server
from django.core.management.base import BaseCommand, CommandError

from backflow.asgi_utils import HttpError, PathRouter, request_headers, respond
from integrations_app.dispatch import LocalSite, LocalSites, RouteDispatcher
from integrations_app.file_store import FileStore
from mcp_app.local_config import LocalConfigError, load_local_config

logger = logging.getLogger("backflow.routes")


async def not_found(scope, receive, send):
    if scope["type"] == "http":
        await respond(send, 404, {"error": "Local mode serves routes at /t/local/<route path>."})


class RefuseCrossSite:
    """Every request of another site's page (Sec-Fetch-Site: cross-site or same-site, which
    browsers send even for an <img>) is answered 403 before it reaches a route."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            try:
                LocalSite.refuse_cross_site(request_headers(scope))
            except HttpError as exc:
                await respond(send, exc.status, exc.body(), exc.headers)
                return
        await self.app(scope, receive, send)


def token_notice(token):
    return (
        "BACKFLOW_LOCAL_TOKEN is not set: routes with requireAuth (the default) need this token, made for this run only:\n"
        f"    Authorization: Bearer {token}\n"
        "e.g. curl -H 'Authorization: Bearer <token>' http://HOST:PORT/t/local/<path>. Set BACKFLOW_LOCAL_TOKEN to choose "
        "one that stays across restarts; routes with \"requireAuth\": false need none.\n"
    )


class Command(BaseCommand):
    help = (
        "Serve the local-mode routes of MCP_CONFIG's files at http://HOST:PORT/t/local/<path> (the seed's "
        "`npm start`). Credentials come from {{env.NAME}}. Routes with requireAuth need "
        "`Authorization: Bearer <BACKFLOW_LOCAL_TOKEN>`; without that variable a token is made at start "
        "and printed once on stderr. Requests another site's page starts in a browser are refused."
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
        if token is None:
            # Never open by default: a page the developer visits could otherwise spend their
            # {{env.NAME}} credentials through a requireAuth route (the cross-site check is the
            # other net; old browsers send no Sec-Fetch-Site).
            token = secrets.token_urlsafe(32)
            self.stderr.write(token_notice(token))
            self.stderr.flush()
        site = LocalSite(store, token=token)
        routes = site.table  # load now: malformed files are reported at start-up
        logger.info("Serving %d local routes at http://%s:%s/t/local/", sum(len(m) for _, m in routes.templates), host, port)
        app = RefuseCrossSite(PathRouter(not_found, {"/t/": RouteDispatcher(LocalSites(site))}))
        Server(application=app, endpoints=build_endpoint_description_strings(host=host, port=port)).run()
