"""Writes for tenants, memberships, API keys and the audit log."""

import secrets
import string

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.utils import timezone

from backflow import metrics
from backflow.compiled import CompiledInsert
from backflow.errors import Conflict, Forbidden, InvalidInput, NotFound
from backflow.writes import unique
from backflow.redaction import redact
from backflow.validation import without_nul
from tenants.keycache import VerifiedKey, verified_keys
from tenants.models import ApiKey, AuditEvent, Membership, Tenant, hash_api_key
from tenants.scopes import normalize_scopes
from tenants.selectors import tenant_by_id, tenant_by_id_here

KEY_PREFIX_ALPHABET = string.ascii_lowercase + string.digits


# Every tool call writes one: a row without a model instance (the ORM's save() took about twice the
# CPU of the INSERT itself, bench/load_mcp.py).
_AUDIT_ROWS = CompiledInsert(AuditEvent)


def audit_record(*, tenant, actor, action, object_type, object_id="", summary=None):
    """Record one event; call inside the write's transaction so both land or neither does."""
    audit_rows_insert([audit_row(tenant=tenant, actor=actor, action=action, object_type=object_type, object_id=object_id,
                                 summary=summary)])


def audit_row(*, tenant, actor, action, object_type, object_id="", summary=None):
    """One event's row, made now (its time and the request's id are read here), for audit_rows_insert.
    Refused calls are recorded with what they sent, NUL characters replaced (PostgreSQL refuses them)."""
    return _AUDIT_ROWS.values(
        tenant_id=tenant.pk,
        principal=str(actor),
        action=action,
        object_type=object_type,
        object_id=without_nul(str(object_id)[:300]),
        summary=without_nul(redact(summary or {})),
    )


def audit_rows_insert(rows):
    """Insert events made by audit_row, in one statement where the database takes them all."""
    _AUDIT_ROWS.insert(rows)


def tenant_create(*, slug, name=""):
    tenant = Tenant(slug=slug, name=name or slug)
    try:
        tenant.full_clean(validate_unique=False)
    except DjangoValidationError as exc:
        raise InvalidInput("Invalid tenant.", exc.message_dict) from exc
    with unique("Tenant", "slug", slug):
        tenant.save()
    return tenant


def tenant_set_active(*, tenant, actor, active):
    """Activate or deactivate a tenant; returns how many queued runs were failed.

    Every door checks the tenant row at each request, so a deactivated tenant is refused from the
    next one on. Here, in one transaction with the change and its audit event: the tenant's queued
    runs end `failed` (saying the tenant is inactive). Running runs stop before their next step and
    no schedule fires while the tenant is inactive: the engine and the scheduler check the row
    themselves (workflows_app.engine, workflows_app.scheduler), so an inactive tenant runs
    nothing even when it was deactivated some other way. On activation, schedules that fell due
    meanwhile move to their next time instead of all firing at once."""
    from workflows_app.engine import inactive_error
    from workflows_app.models import ScheduledTrigger, WorkflowRun
    from workflows_app.scheduler import next_run

    active = bool(active)
    with transaction.atomic():
        # The row lock orders this against workers claiming the tenant's runs (workflows_app.engine.claim_in_transaction).
        locked = Tenant.objects.select_for_update().get(pk=tenant.pk)
        was_active = locked.is_active
        if was_active != active:
            # An update of is_active bumps auth_version too (TenantQuerySet): the processes'
            # remembered key verifications for the tenant end here (the doors also read is_active).
            Tenant.objects.filter(pk=locked.pk).update(is_active=active)
            locked.is_active = active
        failed, moved, now = 0, 0, timezone.now()
        if not active:
            failed = WorkflowRun.objects.for_tenant(locked).filter(status=WorkflowRun.Status.QUEUED).update(
                status=WorkflowRun.Status.FAILED, finished_at=now, error=inactive_error(locked.slug))
        elif not was_active:
            for trigger in ScheduledTrigger.objects.for_tenant(locked).filter(next_run_at__lte=now):
                try:
                    trigger.next_run_at = next_run(trigger.cron, now)
                except Exception:  # an unusable stored cron: the scheduler deals with it
                    continue
                trigger.save(update_fields=["next_run_at"])
                moved += 1
        if was_active != active or failed:
            summary = {"isActive": active, "failedRuns": failed} if not active else {"isActive": active, "schedulesMoved": moved}
            audit_record(tenant=locked, actor=actor, action="tenant.activate" if active else "tenant.deactivate",
                         object_type="tenant", object_id=locked.slug, summary=summary)
    tenant.is_active = active
    if failed:
        metrics.runs_finished.labels(WorkflowRun.Status.FAILED).inc(failed)
    return failed


def membership_set(*, tenant, user, role):
    if role not in Membership.Role.values:
        raise InvalidInput.single("role", f"Choose one of {', '.join(Membership.Role.values)}.")
    membership, _ = Membership.objects.for_tenant(tenant).update_or_create(
        tenant=tenant, user=user, defaults={"role": role}
    )
    return membership


def _new_key_material():
    prefix = "".join(secrets.choice(KEY_PREFIX_ALPHABET) for _ in range(8))
    return prefix, f"bf_{prefix}_{secrets.token_urlsafe(32)}"


def api_key_create(*, tenant, actor, name, scopes=None, expires_at=None):
    """Create a key; returns (api_key, plaintext). The plaintext exists only in this return value."""
    name = (name or "").strip()
    if not name or len(name) > 100:
        raise InvalidInput.single("name", "Give the key a name of 1 to 100 characters.")
    try:
        scopes = normalize_scopes(scopes)
    except ValueError as exc:
        raise InvalidInput.single("scopes", str(exc)) from exc
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput.single("expiresAt", "The expiry must be in the future.")
    for _ in range(5):
        prefix, plaintext = _new_key_material()
        try:
            with transaction.atomic():
                key = ApiKey.objects.create(
                    tenant=tenant,
                    name=name,
                    prefix=prefix,
                    key_hash=hash_api_key(plaintext),
                    scopes=scopes,
                    expires_at=expires_at,
                    created_by=str(actor),
                )
                audit_record(
                    tenant=tenant, actor=actor, action="api_key.create", object_type="api_key",
                    object_id=prefix, summary={"name": name, "scopes": scopes},
                )
            return key, plaintext
        except IntegrityError:
            continue  # prefix collision: draw again
    raise Conflict("Could not allocate a unique key prefix; try again.")


def api_key_revoke(*, tenant, actor, prefix):
    with transaction.atomic():
        key = ApiKey.objects.for_tenant(tenant).select_for_update().filter(prefix=prefix).first()
        if key is None:
            raise NotFound(f"No API key with prefix {prefix!r}.")
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
            audit_record(
                tenant=tenant, actor=actor, action="api_key.revoke", object_type="api_key",
                object_id=prefix, summary={"name": key.name},
            )
    return key


def _key_prefix(raw_key):
    parts = raw_key.split("_", 2)
    if len(parts) != 3 or parts[0] != "bf" or len(parts[1]) != 8:
        return None
    return parts[1]


def _record_use(key_id, last_used_at, now):
    """Touch last_used_at when it is older than BACKFLOW_KEY_LAST_USED_INTERVAL; the UPDATE checks
    it again, so processes that decide it at the same time write it once. Returns the value now known."""
    if not _use_to_record(last_used_at, now):
        return last_used_at
    interval = settings.BACKFLOW_KEY_LAST_USED_INTERVAL
    ApiKey.all_tenants.filter(Q(last_used_at__isnull=True) | Q(last_used_at__lt=now - interval), pk=key_id).update(last_used_at=now)
    return now


def _use_to_record(last_used_at, now):
    return last_used_at is None or now - last_used_at > settings.BACKFLOW_KEY_LAST_USED_INTERVAL


def _verified_now(prefix, digest, now):
    """Verify against the stored key and its tenant (one query): (VerifiedKey, tenant) or None.
    Remembered only when a door would accept it (an active tenant); a failure is not remembered,
    and forgets an older success."""
    key = ApiKey.all_tenants.select_related("tenant").filter(prefix=prefix).first()
    if key is None or not secrets.compare_digest(key.key_hash, digest) or not key.is_usable:
        verified_keys.discard(digest)
        return None
    entry = VerifiedKey(key, version=key.tenant.auth_version)  # read with the key: one snapshot
    if key.tenant.is_active:
        verified_keys.put(digest, entry)
    entry.last_used_at = _record_use(entry.key_id, entry.last_used_at, now)
    return entry, key.tenant


def _trusted(entry, tenant, now):
    """Whether a remembered verification holds for a request that read `tenant`'s row: same
    tenant, same auth_version, active, and the key's expiry still ahead by the clock now."""
    return (tenant is not None and entry.tenant_id == tenant.pk and entry.version == tenant.auth_version
            and tenant.is_active and not entry.expired(now))


def _verify(raw_key, tenant_of):
    """(VerifiedKey, tenant row) or None: a key verified before is trusted while the row
    `tenant_of(entry)` says nothing changed (_trusted), else verified from the database."""
    prefix = _key_prefix(raw_key)
    if prefix is None:
        return None
    digest, now = hash_api_key(raw_key), timezone.now()
    entry = verified_keys.get(digest)
    if entry is not None:
        tenant = tenant_of(entry)
        if _trusted(entry, tenant, now):
            entry.last_used_at = _record_use(entry.key_id, entry.last_used_at, now)
            return entry, tenant
    return _verified_now(prefix, digest, now)


def api_key_verify(raw_key):
    """A presented key, verified for a door that learns the tenant from the key (REST, MCP):
    (keycache.VerifiedKey, tenant row), or None (malformed, unknown, wrong secret, revoked, expired).

    A key this process verified before (tenants/keycache.py) costs the tenant row by primary key
    instead of the key query: the same one query, about half its time. An inactive tenant's key is
    verified from the database, for the door to refuse it (403). last_used_at is touched at most
    once per BACKFLOW_KEY_LAST_USED_INTERVAL."""
    return _verify(raw_key, lambda entry: tenant_by_id(entry.tenant_id))


def api_key_verify_for(raw_key, tenant):
    """A presented key, verified for a door that has read `tenant`'s row for this request (the
    tenant routes): a keycache.VerifiedKey, whose tenant_id may be another tenant's (the caller
    says so), or None (as api_key_verify, or `tenant` inactive). No query at all while this
    process verified the key before and the row says nothing changed."""
    if not tenant.is_active:
        return None
    verified = _verify(raw_key, lambda entry: tenant)
    return verified[0] if verified else None


def api_key_trusted_for(raw_key, tenant):
    """api_key_verify_for without a query or a write, for a door that checks keys on its event
    loop: the keycache.VerifiedKey when this process verified the key before, `tenant`'s row says
    nothing changed and its use needs no new record now; else None, and api_key_verify_for decides
    (on a thread)."""
    entry = api_key_remembered(raw_key)
    return entry if entry is not None and _holds_now(entry, tenant) else None


def api_key_trusted(raw_key, reads):
    """api_key_verify without a query or a write, for a door that checks keys on its event loop:
    (VerifiedKey, tenant row) as api_key_trusted_for, the row read through `reads` (a
    backflow.compiled.LoopReads, which may raise LoopReads.Unavailable); else None, and
    api_key_verify decides (on a thread)."""
    entry = api_key_remembered(raw_key)
    return api_key_trusted_with(entry, tenant_by_id_here(entry.tenant_id, reads=reads)) if entry is not None else None


def api_key_trusted_with(entry, tenant):
    """api_key_trusted for a door that read the key's tenant row itself (on its event loop's own
    PostgreSQL connection): (entry, tenant) while the row says nothing changed for the remembered
    `entry` and its use needs no new record now, else None."""
    return (entry, tenant) if _holds_now(entry, tenant) else None


def api_key_remembered(raw_key):
    """The keycache.VerifiedKey of a key this process verified before (no query), or None (a JWT
    or an OAuth token is not a key's shape): what api_key_trusted starts from."""
    return verified_keys.get(hash_api_key(raw_key)) if _key_prefix(raw_key) is not None else None


def _holds_now(entry, tenant):
    now = timezone.now()
    return _trusted(entry, tenant, now) and not _use_to_record(entry.last_used_at, now)


def require_key_manager(actor, what="API keys"):
    if not actor.manages_keys:
        raise Forbidden(f"Only the tenant's owners and admins manage {what}; sign in with a JWT as one of them.")
