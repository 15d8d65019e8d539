"""Secret values are write-only: no API answer, audit row, admin page, log line or table holds them."""

import logging
import uuid

from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from backflow import crypto
from integrations_app.models import Secret
from tenants.models import AuditEvent


def _value(label):
    return f"sv-{label}-{uuid.uuid4().hex}"


def _dump_tables():
    lines = []
    with connection.cursor() as cursor:
        for table in connection.introspection.table_names(cursor):
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            lines.extend(f"{table} {row!r}" for row in cursor.fetchall())
    return "\n".join(lines)


def _secret(tenant, name):
    return Secret.objects.for_tenant(tenant).get(name=name)


def test_secret_values_never_appear(acme, globex, caplog):
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="django")  # Django's default config holds it at INFO
    seen = []  # every response body, page and log text to search at the end
    values = {name: _value(name) for name in ("stripe_key", "airtable_token", "airtable_token_2", "admin_made", "old", "new", "rejected")}
    api = acme.client()
    superuser = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    admin = Client()
    admin.force_login(superuser)

    def keep(response):
        seen.append(response.content.decode())
        return response

    with CaptureQueriesContext(connection) as queries:  # SQL is logged (with parameters) at DEBUG too
        # Create over REST.
        response = keep(api.post("/api/secrets/", {"name": "stripe_key", "value": values["stripe_key"], "description": "Stripe"}, format="json"))
        assert response.status_code == 201, response.content
        assert response.json() == {**response.json(), "name": "stripe_key", "description": "Stripe"}
        assert "value" not in response.json()
        response = keep(api.post("/api/secrets/", {"name": "airtable_token", "value": values["airtable_token"]}, format="json"))
        assert response.status_code == 201

        # Create in the admin.
        response = keep(admin.post("/admin/integrations_app/secret/add/", {
            "tenant": acme.tenant.pk, "name": "admin_made", "description": "via admin", "value": values["admin_made"],
        }, follow=True))
        assert response.status_code == 200
        assert _secret(acme.tenant, "admin_made").description == "via admin"

        # Duplicates are 409 and do not echo the value.
        response = keep(api.post("/api/secrets/", {"name": "stripe_key", "value": values["rejected"]}, format="json"))
        assert response.status_code == 409
        assert "name" in response.json()["errors"]
        # Invalid names are 400 without the value.
        response = keep(api.post("/api/secrets/", {"name": "Not Valid", "value": values["rejected"]}, format="json"))
        assert response.status_code == 400 and "name" in response.json()["errors"]
        response = keep(api.post("/api/secrets/", {"name": "empty_one", "value": ""}, format="json"))
        assert response.status_code == 400 and "value" in response.json()["errors"]
        assert not Secret.objects.for_tenant(acme.tenant).filter(name__in=["empty_one", "Not Valid"]).exists()
        # Another tenant may use the same name; it is a different secret.
        assert keep(globex.client().post("/api/secrets/", {"name": "stripe_key", "value": values["rejected"]}, format="json")).status_code == 201
        assert crypto.decrypt(_secret(acme.tenant, "stripe_key").ciphertext) == values["stripe_key"]

        # Update the value (PUT), then the description only (PATCH), then the value again (PATCH).
        response = keep(api.post("/api/secrets/", {"name": "rotating", "value": values["old"]}, format="json"))
        assert response.status_code == 201
        response = keep(api.put("/api/secrets/rotating/", {"value": values["new"], "description": "rotated"}, format="json"))
        assert response.status_code == 200 and response.json()["description"] == "rotated"
        assert crypto.decrypt(_secret(acme.tenant, "rotating").ciphertext) == values["new"]
        ciphertext = _secret(acme.tenant, "rotating").ciphertext
        response = keep(api.patch("/api/secrets/rotating/", {"description": "only text"}, format="json"))
        assert response.status_code == 200 and response.json()["description"] == "only text"
        assert _secret(acme.tenant, "rotating").ciphertext == ciphertext
        response = keep(api.patch("/api/secrets/airtable_token/", {"value": values["airtable_token_2"]}, format="json"))
        assert response.status_code == 200
        assert crypto.decrypt(_secret(acme.tenant, "airtable_token").ciphertext) == values["airtable_token_2"]

        # Update in the admin: an empty value keeps the stored one.
        admin_made = _secret(acme.tenant, "admin_made")
        response = keep(admin.post(f"/admin/integrations_app/secret/{admin_made.pk}/change/",
                                   {"description": "changed", "value": ""}, follow=True))
        assert response.status_code == 200
        admin_made.refresh_from_db()
        assert admin_made.description == "changed"
        assert crypto.decrypt(admin_made.ciphertext) == values["admin_made"]

        # Read everything a client can read.
        listing = keep(api.get("/api/secrets/"))
        assert {s["name"] for s in listing.json()["results"]} == {"stripe_key", "airtable_token", "admin_made", "rotating"}
        for item in listing.json()["results"]:
            assert set(item) == {"name", "description", "createdAt", "updatedAt"}
            keep(api.get(f"/api/secrets/{item['name']}/"))
        audit = keep(api.get("/api/audit/?page_size=500"))
        assert {"secret.create", "secret.update"} <= {e["action"] for e in audit.json()["results"]}
        for event in audit.json()["results"]:
            assert keep(api.get(f"/api/audit/{event['id']}/")).status_code == 200

        # Every admin page about secrets and the audit log.
        pages = ["/admin/", "/admin/integrations_app/secret/", "/admin/integrations_app/secret/add/",
                 "/admin/integrations_app/secret/?q=stripe", "/admin/tenants/auditevent/",
                 "/admin/tenants/auditevent/?object_type=secret"]
        for secret in Secret.all_tenants.all():
            pages += [f"/admin/integrations_app/secret/{secret.pk}/change/",
                      f"/admin/integrations_app/secret/{secret.pk}/history/",
                      f"/admin/integrations_app/secret/{secret.pk}/delete/"]
        for event in AuditEvent.all_tenants.all():
            pages.append(f"/admin/tenants/auditevent/{event.pk}/change/")
        for page in pages:
            response = keep(admin.get(page))
            assert response.status_code == 200, (page, response.status_code)

        # Delete.
        assert keep(api.delete("/api/secrets/rotating/")).status_code == 204
        assert keep(api.get("/api/secrets/rotating/")).status_code == 404
        assert keep(api.delete("/api/secrets/rotating/")).status_code == 404
        response = keep(admin.post(f"/admin/integrations_app/secret/{admin_made.pk}/delete/", {"post": "yes"}, follow=True))
        assert response.status_code == 200
        assert not Secret.objects.for_tenant(acme.tenant).filter(name__in=["rotating", "admin_made"]).exists()
        assert {"secret.delete"} <= set(AuditEvent.objects.for_tenant(acme.tenant).values_list("action", flat=True))
        assert AuditEvent.objects.for_tenant(acme.tenant).filter(principal="system:admin:root", action="secret.create").exists()

    assert len(queries) > 0 and any(r.name == "django.db.backends" for r in caplog.records)
    seen.append(caplog.text)
    seen.extend(str(record.args) for record in caplog.records)
    seen.extend(q["sql"] for q in queries.captured_queries)
    seen.append(_dump_tables())
    everything = "\n".join(seen)
    for label, value in values.items():
        assert value not in everything, f"the value of {label} leaked"
        # Not even a recognisable part of it.
        assert value.split("-")[-1] not in everything, f"part of the value of {label} leaked"


def test_values_are_encrypted_at_rest(acme):
    value = _value("at-rest")
    assert acme.client().post("/api/secrets/", {"name": "enc", "value": value}, format="json").status_code == 201
    stored = _secret(acme.tenant, "enc")
    assert stored.ciphertext != value
    assert value not in stored.ciphertext
    assert crypto.decrypt(stored.ciphertext) == value
    # Fernet: each encryption is randomised, so equal values do not give equal ciphertexts.
    assert acme.client().post("/api/secrets/", {"name": "enc2", "value": value}, format="json").status_code == 201
    assert _secret(acme.tenant, "enc2").ciphertext != stored.ciphertext
    # Values keep surrounding whitespace and unicode exactly.
    odd = "  päss wörd\t"
    assert acme.client().post("/api/secrets/", {"name": "odd", "value": odd}, format="json").status_code == 201
    assert crypto.decrypt(_secret(acme.tenant, "odd").ciphertext) == odd


def test_admin_duplicate_secret_is_a_form_error(acme):
    superuser = get_user_model().objects.create_superuser("root", "root@example.com", "pw")
    admin = Client()
    admin.force_login(superuser)
    value = _value("dup")
    assert acme.client().post("/api/secrets/", {"name": "taken", "value": _value("first")}, format="json").status_code == 201
    response = admin.post("/admin/integrations_app/secret/add/", {"tenant": acme.tenant.pk, "name": "taken", "value": value})
    assert response.status_code == 200  # the form again, with an error: not a crash, not a redirect
    assert "errornote" in response.content.decode() or "errorlist" in response.content.decode()
    assert value not in response.content.decode()
    assert Secret.objects.for_tenant(acme.tenant).filter(name="taken").count() == 1
