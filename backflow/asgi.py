"""ASGI entry point: probes, metrics and request ids (backflow.front); MCP's HTTP transports and tenant
routes in front of Django."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backflow.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402  (needs Django set up first)

from backflow import access_log  # noqa: E402
from backflow import outbound  # noqa: E402,F401  (aiohttp loaded at start, not by the first route or tool that sends)
from backflow.asgi_utils import BoundedBody, PathRouter  # noqa: E402
from backflow.front import Front  # noqa: E402
from backflow.heap import freeze_startup_objects  # noqa: E402
from integrations_app.dispatch import routes_asgi  # noqa: E402
from mcp_app.http import mcp_asgi  # noqa: E402

access_log.install()


async def refuse_websocket(scope, receive, send):
    """No door speaks WebSocket: refuse the handshake (403) instead of letting daphne log an error."""
    if (await receive())["type"] == "websocket.connect":
        await send({"type": "websocket.close", "code": 1008})


application = ProtocolTypeRouter({
    "http": Front(PathRouter(BoundedBody(django_asgi_app), {"/mcp/": mcp_asgi, "/t/": routes_asgi})),
    "websocket": refuse_websocket,
})

# Loaded: what exists now lives as long as the server; the collector stops re-examining it.
freeze_startup_objects()
