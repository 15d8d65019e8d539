"""Who is acting: one object for API keys, JWT users, OAuth grants and operator commands."""

from dataclasses import dataclass, field

from tenants.scopes import ALL_SCOPES


@dataclass(frozen=True, eq=False)
class Principal:
    tenant: object
    label: str  # "key:ab12cd34", "user:alice", "system:create_api_key"
    scopes: frozenset = field(default_factory=lambda: frozenset(ALL_SCOPES))
    user: object = None
    role: str | None = None

    # DRF sets request.user to the principal; these make it behave like a signed-in user.
    is_authenticated = True
    is_anonymous = False

    @property
    def pk(self):
        return self.label

    @classmethod
    def system(cls, tenant, what):
        return cls(tenant=tenant, label=f"system:{what}")

    def has_scope(self, scope):
        return scope in self.scopes

    @property
    def manages_keys(self):
        return self.user is not None and self.role in ("owner", "admin")

    def __str__(self):
        return self.label
