"""Issue 14: import_config never fills a tenant's secret from Backflow's own settings variables.

A tenant's secret named `secret_key` exports as {{env.SECRET_KEY}}; imported on the operator's
machine, it would have been filled with the platform's SECRET_KEY (and `backflow_secrets_key`
with the key that encrypts every tenant's secrets). Every variable backflow/settings.py reads is
covered by settings.PLATFORM_ENV_NAMES / PLATFORM_ENV_PREFIXES (a scan of settings.py checks it).
"""

import json
import re
from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from backflow.redaction import is_platform_variable
from integrations_app import selectors
from integrations_app import services as integration_services
from integrations_app.file_store import write_json_atomic
from integrations_app.models import Secret
from integrations_app.services import secret_value
from integrations_app.stores import DatabaseStore
from workflows_app.models import McpServer

PLATFORM_SECRET_KEY = "django-insecure-the-platforms-own-signing-key"
PLATFORM_FERNET_KEY = "the-platforms-own-fernet-key-for-every-tenant"


@pytest.fixture
def platform_env(monkeypatch):
    """The operator's shell, as import_config runs in it: Backflow's own settings are set."""
    monkeypatch.setenv("SECRET_KEY", PLATFORM_SECRET_KEY)
    monkeypatch.setenv("BACKFLOW_SECRETS_KEY", PLATFORM_FERNET_KEY)
    monkeypatch.setenv("DATABASE_URL", "postgres://backflow:db-password@db/backflow")
    monkeypatch.setenv("STRIPE_KEY", "sk_live_meant_for_the_tenant")


def _integration(folder, name, variable):
    write_json_atomic(folder / "integrations" / f"{name}.json", {
        "name": name, "baseUrl": f"https://{name}.example.com",
        "auth": {"type": "bearer", "secret": "{{env.%s}}" % variable},
        "endpoints": [{"name": "ping", "method": "get", "path": "/ping"}],
    })


@pytest.fixture
def hostile_folder(tmp_path):
    """Local-mode files written by someone who knows the platform's variable names."""
    (tmp_path / "integrations").mkdir()
    _integration(tmp_path, "signer", "SECRET_KEY")
    _integration(tmp_path, "vault", "BACKFLOW_SECRETS_KEY")
    _integration(tmp_path, "db", "DATABASE_URL")
    _integration(tmp_path, "stripe", "STRIPE_KEY")
    write_json_atomic(tmp_path / "config.json", {"routes": [], "mcpServers": []})
    return tmp_path


def _run(*args):
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return json.loads(out.getvalue()), err.getvalue()


def _stored_values(tenant):
    return {s.name: secret_value(tenant=tenant, name=s.name) for s in Secret.objects.for_tenant(tenant)}


def test_import_never_reads_the_platforms_own_variables(acme, hostile_folder, platform_env):
    report, stderr = _run("import_config", str(hostile_folder / "config.json"), "--tenant", "acme")
    assert report["integrations"] == {"db": "created", "signer": "created", "stripe": "created", "vault": "created"}
    # The tenant's own variable is read; the platform's are not, and the report says why.
    assert _stored_values(acme.tenant) == {"stripe_key": "sk_live_meant_for_the_tenant"}
    assert report["secrets"] == {"stripe_key": "set from $STRIPE_KEY"}
    missing = {m["secret"]: m for m in report["missingSecrets"]}
    assert set(missing) == {"secret_key", "backflow_secrets_key", "database_url"}
    for name, variable in (("secret_key", "SECRET_KEY"), ("backflow_secrets_key", "BACKFLOW_SECRETS_KEY"), ("database_url", "DATABASE_URL")):
        assert missing[name]["variable"] == variable
        assert f"${variable} is one of Backflow's own settings" in missing[name]["reason"]
        assert "/api/secrets/" in missing[name]["reason"]
        assert f"Secret {name!r} not set: ${variable} is one of Backflow's own settings" in stderr
    # The integrations name the secrets; the tenant stores their values itself.
    assert selectors.integration_list(tenant=acme.tenant).get(name="signer").auth == {"type": "bearer", "secret": "secret_key"}


def test_a_secret_the_tenant_already_stored_is_kept_not_overwritten(acme, hostile_folder, platform_env):
    integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name="secret_key", value="the-tenants-own-value")
    report, _ = _run("import_config", str(hostile_folder / "config.json"), "--tenant", "acme")
    assert secret_value(tenant=acme.tenant, name="secret_key") == "the-tenants-own-value"
    assert report["secrets"]["secret_key"].startswith("kept as stored: $SECRET_KEY is one of Backflow's own settings")
    assert "secret_key" not in {m["secret"] for m in report["missingSecrets"]}


def test_an_mcp_server_env_naming_a_platform_variable_aborts_the_import(acme, hostile_folder, platform_env):
    write_json_atomic(hostile_folder / "config.json", {"routes": [], "mcpServers": [
        {"name": "files", "command": "mcp-server-filesystem", "args": ["/srv"], "env": {"TOKEN": "{{env.GITHUB_TOKEN}}"}},
        {"name": "helper", "command": "mcp-helper", "env": {"KEY": "key={{ env.SECRET_KEY }}", "DB": "{{env.DATABASE_URL}}"}},
    ]})
    with pytest.raises(CommandError, match=r"Nothing was imported.*mcpServers\[1\]\.env\.KEY.*SECRET_KEY.*Backflow's own settings") as raised:
        _run("import_config", str(hostile_folder / "config.json"), "--tenant", "acme")
    assert "mcpServers[1].env.DB" in str(raised.value)
    assert not McpServer.objects.for_tenant(acme.tenant).exists() and not Secret.objects.for_tenant(acme.tenant).exists()


def test_export_names_the_clash_and_the_round_trip_never_reads_the_platform(acme, globex, tmp_path, platform_env):
    for name in ("secret_key", "stripe_key"):
        integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name=name, value=f"acme-{name}")
    store = DatabaseStore(tenant=acme.tenant, actor=acme.actor)
    for name, secret in (("signer", "secret_key"), ("stripe", "stripe_key")):
        integration_services.integration_create(store=store, document={
            "name": name, "baseUrl": f"https://{name}.example.com", "auth": {"type": "bearer", "secret": secret},
            "endpoints": [{"name": "ping", "method": "get", "path": "/ping"}]})
    McpServer.objects.create(tenant=acme.tenant, name="helper", transport="stdio", command="mcp-helper",
                             env={"KEY": "{{env.BACKFLOW_SECRETS_KEY}}"})
    out = tmp_path / "exported"
    report, stderr = _run("export_config", "--tenant", "acme", str(out))
    exported = json.loads((out / "integrations" / "signer.json").read_text())
    assert exported["auth"]["secret"] == "{{env.SECRET_KEY}}"  # the placeholder as before; the user is told
    (signer, helper) = report["warnings"]
    assert signer.startswith("integration 'signer': its secret 'secret_key' is exported as {{env.SECRET_KEY}}, which import_config will not read")
    assert "POST /api/secrets/" in signer
    assert helper.startswith("MCP server 'helper': env KEY: {{env.BACKFLOW_SECRETS_KEY}} names one of Backflow's own settings")
    assert f"Warning: {signer}" in stderr and f"Warning: {helper}" in stderr

    # Into another tenant, on the operator's machine: SECRET_KEY is set, and not read.
    config = json.loads((out / "config.json").read_text())
    write_json_atomic(out / "config.json", {**config, "mcpServers": []})  # (that one the import refuses outright)
    imported, _ = _run("import_config", str(out / "config.json"), "--tenant", "globex")
    assert _stored_values(globex.tenant) == {"stripe_key": "sk_live_meant_for_the_tenant"}
    assert [m["secret"] for m in imported["missingSecrets"]] == ["secret_key"]
    assert PLATFORM_SECRET_KEY not in json.dumps(imported)


SETTINGS = Path(__file__).resolve().parents[2] / "backflow" / "settings.py"
ENV_READ = re.compile(r"""\b(?:env(?:\.\w+)?|_required|os\.environ\.get|os\.getenv)\(\s*["']([A-Za-z_][A-Za-z0-9_]*)["']""")


def test_every_variable_settings_reads_is_a_platform_variable():
    read = set(ENV_READ.findall(SETTINGS.read_text()))
    assert {"SECRET_KEY", "SECRET_KEY_FALLBACKS", "DEBUG", "ALLOWED_HOSTS", "DATABASE_URL", "REDIS_URL", "LOG_LEVEL",
            "BACKFLOW_SECRETS_KEY", "BACKFLOW_EGRESS_ALLOW"} <= read, read  # the scan sees the reads
    assert len(read) > 30
    uncovered = sorted(name for name in read if not is_platform_variable(name))
    assert not uncovered, f"add {uncovered} to PLATFORM_ENV_NAMES in backflow/settings.py"
    for name in ("DJANGO_SETTINGS_MODULE", "BACKFLOW_ANYTHING_NEW", "LOG_FORMAT", "secret_key"):
        assert is_platform_variable(name)
    for name in ("STRIPE_KEY", "GITHUB_TOKEN", "MY_SECRET_KEY", "DEBUGGER"):
        assert not is_platform_variable(name)
