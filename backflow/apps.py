from django.apps import AppConfig


class DaphneRunserver(AppConfig):
    """daphne as an installed app, for its `manage.py runserver` (ASGI: SSE and Streamable HTTP
    work in development too), without daphne's own AppConfig module, which imports daphne.server
    and with it Twisted in every process that sets Django up: 0.2 s of each `mcp_stdio` start, the
    task worker's and every management command's. Its runserver imports daphne.server when it runs."""

    name = "daphne"
    verbose_name = "Daphne"
