"""backflow.asgi's application without backflow.front (no probes, request ids or per-door
metrics): the peer of bench.instrumentation, so that its ratio is what that layer costs."""

from channels.routing import ProtocolTypeRouter

from backflow.asgi import application as observed

application = ProtocolTypeRouter({"http": observed.application_mapping["http"].app})
