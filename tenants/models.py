import hashlib

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from backflow.logs import current_request_id
from tenants.scoping import TenantOwned

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


class Tenant(models.Model):
    slug = models.CharField(
        max_length=63,
        unique=True,
        validators=[RegexValidator(SLUG_PATTERN, "Lower-case letters, digits and '-', starting with a letter or digit.")],
    )
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True, help_text="An inactive tenant is refused everything (403).")
    routes_version = models.PositiveBigIntegerField(
        default=0, editable=False,
        help_text="Bumped in the transaction of every route or integration write; each process serving "
                  "the tenant's routes rebuilds its route table when it changes.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.slug


class Membership(TenantOwned):
    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=10, choices=Role.choices, default=Role.MEMBER)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantOwned.Meta):
        constraints = [models.UniqueConstraint(fields=["tenant", "user"], name="membership_unique_user")]

    def __str__(self):
        return f"{self.user} in {self.tenant} ({self.role})"

    @property
    def manages_keys(self):
        return self.role in (self.Role.OWNER, self.Role.ADMIN)


def hash_api_key(raw_key: str) -> str:
    # Keys carry 256 random bits, so a fast hash is enough (as GitHub and PostHog do).
    return hashlib.sha256(raw_key.encode()).hexdigest()


class ApiKey(TenantOwned):
    name = models.CharField(max_length=100)
    prefix = models.CharField(max_length=8, unique=True, help_text="Shown in clear to recognise the key.")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    scopes = models.JSONField(default=list)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    created_by = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta(TenantOwned.Meta):
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self):
        return f"bf_{self.prefix}_… ({self.name})"

    @property
    def is_expired(self):
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def is_usable(self):
        return self.revoked_at is None and not self.is_expired


class AuditEvent(TenantOwned):
    principal = models.CharField(max_length=200, help_text="user:<username>, key:<prefix> or system:<what>")
    action = models.CharField(max_length=100, db_index=True)
    object_type = models.CharField(max_length=50, db_index=True)
    object_id = models.CharField(max_length=300, blank=True)
    summary = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    request_id = models.CharField(max_length=128, blank=True, default=current_request_id, db_index=True, editable=False,
                                  help_text="X-Request-ID of the request that made it (docs/operator-guide.md, Monitoring).")

    class Meta(TenantOwned.Meta):
        ordering = ["-created_at", "-id"]

    def __str__(self):
        return f"{self.created_at:%Y-%m-%d %H:%M:%S} {self.principal} {self.action} {self.object_id}"
