"""What one MCP connection acts on: a store, maybe a tenant and principal, and its allowed tools."""

from dataclasses import dataclass


@dataclass
class ToolContext:
    store: object  # IntegrationStore: the tenant's database records or local files
    allowed: frozenset  # tool names this connection may list and call
    tenant: object = None  # None in local file mode
    actor: object = None  # Principal; None in local file mode
    rate_key: str | None = None  # remote connections share a per-principal call budget
    log_level: str = "warning"  # notifications/message from this level up (logging/setLevel)

    @property
    def local(self):
        return self.tenant is None

    @property
    def owner(self):
        """Whose share of the database threads this connection's calls count against."""
        return "local" if self.tenant is None else self.tenant.pk
