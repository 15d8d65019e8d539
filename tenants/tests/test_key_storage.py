"""API key values are stored nowhere: only their sha256 hash (and the clear 8-character prefix)."""

import hashlib
import io
import json

from django.apps import apps
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.db import connection
from django.test import Client
from rest_framework.test import APIClient

from tenants import services as tenant_services
from tenants.models import ApiKey


def dump_models():
    """Every row of every installed model, read with the base manager (across all tenants)."""
    rows = []
    for model in apps.get_models(include_auto_created=True):
        for row in model._base_manager.all().values():
            rows.append(f"{model._meta.label} {json.dumps(row, default=str)}")
    return "\n".join(rows)


def dump_tables():
    """Every row of every table in the database, read with plain SQL (covers tables without models)."""
    lines = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            for row in cursor.fetchall():
                lines.append(f"{table} {row!r} {' '.join(str(v) for v in row)}")
    return "\n".join(lines)


def _secret_part(key):
    return key.split("_", 2)[2]


def test_plaintext_keys_are_stored_nowhere(acme, globex):
    keys = [acme.key, globex.key, acme.key_with("routes:read", name="scoped")]

    # Through REST, as the tenant's owner.
    response = APIClient()
    response.credentials(HTTP_AUTHORIZATION=f"Bearer {acme.jwt()}")
    created = response.post("/api/keys/", {"name": "rest", "scopes": ["integrations:read"]}, format="json")
    assert created.status_code == 201
    keys.append(created.json()["key"])

    # Through the operator command.
    out = io.StringIO()
    call_command("create_api_key", "globex", "--name", "cli", stdout=out)
    keys.append(out.getvalue().strip())

    # Through the admin (which shows the value once in a message, stored in the session/cookie).
    superuser = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    admin = Client()
    admin.force_login(superuser)
    before = set(ApiKey.all_tenants.values_list("prefix", flat=True))
    page = admin.post(
        "/admin/tenants/apikey/add/", {"tenant": acme.tenant.pk, "name": "from-admin", "scopes": ["routes:read"]}, follow=True
    )
    assert page.status_code == 200
    new_prefix = (set(ApiKey.all_tenants.values_list("prefix", flat=True)) - before).pop()
    shown = page.content.decode()
    start = shown.index(f"bf_{new_prefix}_")
    admin_key = shown[start:].split("<")[0].split()[0]
    keys.append(admin_key)

    # Every key is used once (last_used_at is written), then revoked one of them.
    for key in keys:
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {key}")
        assert client.get("/api/audit/").status_code == 200, key
    tenant_services.api_key_revoke(tenant=acme.tenant, actor=acme.actor, prefix=keys[2][3:11])

    models_dump, tables_dump = dump_models(), dump_tables()
    assert "tenants.ApiKey" in models_dump and "tenants_apikey" in tables_dump
    for key in keys:
        for text in (models_dump, tables_dump):
            assert key not in text
            assert _secret_part(key) not in text

    # What is stored: the prefix in clear and the sha256 hex digest of the whole key.
    for key in keys:
        stored = ApiKey.all_tenants.get(prefix=key[3:11])
        assert stored.key_hash == hashlib.sha256(key.encode()).hexdigest()
        assert stored.key_hash in tables_dump
        assert {f.name for f in ApiKey._meta.concrete_fields} >= {"prefix", "key_hash"}
        assert not any(field.name in ("key", "secret", "plaintext", "value") for field in ApiKey._meta.concrete_fields)
