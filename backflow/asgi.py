"""ASGI entry point: Channels' router; MCP's HTTP transports in front of Django."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "backflow.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402  (needs Django set up first)

from mcp_app.http import McpRouter  # noqa: E402

application = ProtocolTypeRouter({"http": McpRouter(django_asgi_app)})
