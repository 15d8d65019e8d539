import hashlib
import secrets

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models, router, transaction
from django.db.models import F
from django.utils import timezone

from backflow.logs import current_request_id
from tenants.scoping import TenantOwned, TenantScopedManager, TenantScopedQuerySet

SLUG_PATTERN = r"^[a-z0-9][a-z0-9-]{0,62}$"


def initial_auth_version():
    """A new tenant's `auth_version` starts at a random number, not 0: SQLite may give a new tenant
    the primary key of a deleted one, and a process that verified one of the deleted tenant's keys
    must not find the new row at the version it remembers."""
    return secrets.randbits(62)


# Fields only the counters' own F() updates write (a whole-row save of a stale instance would set
# them back, and a process could then trust what it cached before a change).
VERSION_FIELDS = ("routes_version", "auth_version")


class TenantQuerySet(models.QuerySet):
    def update(self, **kwargs):
        # Deactivation: the doors check is_active on the row itself; the new version also drops
        # every key verification the processes hold for these tenants.
        if "is_active" in kwargs and "auth_version" not in kwargs:
            kwargs["auth_version"] = F("auth_version") + 1
        return super().update(**kwargs)


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
    auth_version = models.PositiveBigIntegerField(
        default=initial_auth_version, editable=False,
        help_text="Bumped in the transaction of every write that can change an API key's verification "
                  "(a key revoked, deleted or changed; the tenant deactivated); each process trusts the "
                  "keys it verified only while the row it reads for a request carries the same number.",
    )
    created_at = models.DateTimeField(auto_now_add=True)

    objects = TenantQuerySet.as_manager()

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return self.slug

    def save(self, *args, **kwargs):
        if not self._state.adding and not kwargs.get("force_insert") and kwargs.get("update_fields") is None:
            kwargs["update_fields"] = [f.name for f in self._meta.concrete_fields
                                       if not f.primary_key and f.name not in VERSION_FIELDS]
        super().save(*args, **kwargs)


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


# ApiKey fields whose writes leave every verification as it was (a use being recorded).
AUTH_NEUTRAL_FIELDS = frozenset({"last_used_at"})


def bump_auth_version(tenant_ids):
    """End every process's remembered verifications of the keys of these tenants (tenants/keycache.py).
    Called by every ApiKey write, inside its transaction and after it: the key rows are locked
    first, then the tenant rows, in that order everywhere (api_key_revoke locks the key first)."""
    Tenant.objects.filter(pk__in=set(tenant_ids)).update(auth_version=F("auth_version") + 1)


class ApiKeyWrites:
    """Queryset writes of API keys bump their tenants' auth_version in the same transaction (the
    admin's bulk delete, an operator's .update(expires_at=…)); recording a use does not."""

    def _tenant_ids(self):
        getattr(self, "_require_tenant", lambda: None)()  # the scoped manager's guard, before any write
        return list(self.values_list("tenant_id", flat=True).distinct())

    def update(self, **kwargs):
        if set(kwargs) <= AUTH_NEUTRAL_FIELDS:
            return super().update(**kwargs)
        tenant_ids = self._tenant_ids()  # before: the write may change what the filter selects
        with transaction.atomic(using=self.db):
            count = super().update(**kwargs)
            bump_auth_version(tenant_ids)
        return count

    def delete(self):
        tenant_ids = self._tenant_ids()
        with transaction.atomic(using=self.db):
            deleted = super().delete()
            bump_auth_version(tenant_ids)
        return deleted


class ApiKeyQuerySet(ApiKeyWrites, models.QuerySet):
    pass


class ApiKeyScopedQuerySet(ApiKeyWrites, TenantScopedQuerySet):
    pass


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

    objects = TenantScopedManager.from_queryset(ApiKeyScopedQuerySet)()
    all_tenants = ApiKeyQuerySet.as_manager()

    class Meta(TenantOwned.Meta):
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self):
        return f"bf_{self.prefix}_… ({self.name})"

    @classmethod
    def from_db(cls, db, field_names, values):
        key = super().from_db(db, field_names, values)
        key._stored_tenant_id = key.__dict__.get("tenant_id")  # a key moved away ends its old tenant's verifications too
        return key

    def _tenant_ids(self):
        return {self.tenant_id, getattr(self, "_stored_tenant_id", None) or self.tenant_id}

    def save(self, *args, **kwargs):
        update_fields = kwargs.get("update_fields")
        if self.pk is None or (update_fields is not None and set(update_fields) <= AUTH_NEUTRAL_FIELDS):
            # A new key ends no verification: they are remembered by the presented key's hash, and
            # a key's hash is unique.
            super().save(*args, **kwargs)
        else:
            with transaction.atomic(using=kwargs.get("using") or router.db_for_write(ApiKey, instance=self)):
                super().save(*args, **kwargs)
                bump_auth_version(self._tenant_ids())
        self._stored_tenant_id = self.tenant_id

    def delete(self, *args, **kwargs):
        with transaction.atomic(using=kwargs.get("using") or router.db_for_write(ApiKey, instance=self)):
            tenant_ids = self._tenant_ids()
            deleted = super().delete(*args, **kwargs)
            bump_auth_version(tenant_ids)
        return deleted

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
