import json
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from integrations_app import selectors
from integrations_app.file_store import write_json_atomic
from integrations_app.services import secret_value
from tenants.models import AuditEvent


@pytest.fixture
def local_folder(tmp_path):
    (tmp_path / "integrations").mkdir()
    write_json_atomic(tmp_path / "integrations" / "stripe.json", {
        "name": "stripe", "baseUrl": "https://api.stripe.com/v1",
        "auth": {"type": "bearer", "secret": "{{env.STRIPE_KEY}}"},
        "endpoints": [{"name": "listCharges", "method": "get", "path": "/charges"}],
    })
    write_json_atomic(tmp_path / "config.json", {
        "routes": [{"path": "/charges", "method": "get", "integrations": {"actions": [{"integration": "stripe", "action": "listCharges"}]}}],
        "mcpServers": [{"name": "filesystem", "command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "/tmp"]}],
    })
    return tmp_path


def _run(*args):
    out = StringIO()
    call_command(*args, stdout=out)
    return json.loads(out.getvalue())


def test_import_creates_records_and_secrets_from_environment(acme, local_folder, monkeypatch):
    monkeypatch.setenv("STRIPE_KEY", "sk_live_from_env")
    report = _run("import_config", str(local_folder / "config.json"), "--tenant", "acme")
    assert report["integrations"] == {"stripe": "created"}
    assert report["routes"] == {"GET /charges": "created"}
    assert report["mcpServers"] == {"filesystem": "created"}
    integration = selectors.integration_list(tenant=acme.tenant).get(name="stripe")
    assert integration.auth == {"type": "bearer", "secret": "stripe_key"}
    assert secret_value(tenant=acme.tenant, name="stripe_key") == "sk_live_from_env"
    assert AuditEvent.objects.for_tenant(acme.tenant).filter(principal="system:import_config").count() >= 3
    # importing again updates in place
    assert _run("import_config", str(local_folder / "config.json"), "--tenant", "acme")["integrations"] == {"stripe": "updated"}


def test_import_reports_missing_secret_when_variable_unset(acme, local_folder, monkeypatch):
    monkeypatch.delenv("STRIPE_KEY", raising=False)
    report = _run("import_config", str(local_folder / "config.json"), "--tenant", "acme")
    assert report["missingSecrets"] == [{"secret": "stripe_key", "variable": "STRIPE_KEY"}]


def test_import_is_all_or_nothing(acme, local_folder):
    config = json.loads((local_folder / "config.json").read_text())
    config["routes"].append({"path": "/x", "method": "get", "integrations": {"actions": [{"integration": "stripe", "action": "listCharges"}]}})
    write_json_atomic(local_folder / "config.json", config)
    write_json_atomic(local_folder / "integrations" / "twilio.json", {
        "name": "twilio", "baseUrl": "https://api.twilio.com", "endpoints": [{"name": "send", "method": "post", "path": "/m", "headers": {"X": "{{env.FOO}}"}}],
    })
    with pytest.raises(CommandError, match="Nothing was imported"):
        _run("import_config", str(local_folder / "config.json"), "--tenant", "acme")
    assert not selectors.integration_list(tenant=acme.tenant).exists()
    assert not selectors.route_list(tenant=acme.tenant).exists()


def test_export_round_trips_into_another_tenant(acme, globex, local_folder, tmp_path, monkeypatch):
    monkeypatch.setenv("STRIPE_KEY", "sk")
    _run("import_config", str(local_folder / "config.json"), "--tenant", "acme")
    out = tmp_path / "exported"
    report = _run("export_config", "--tenant", "acme", str(out))
    assert report["integrations"] == {"stripe": "created"}
    exported = json.loads((out / "integrations" / "stripe.json").read_text())
    assert exported["auth"] == {"type": "bearer", "secret": "{{env.STRIPE_KEY}}"}
    assert json.loads((out / "mcp-config.json").read_text())["integrationsPath"] == "./integrations"
    exported_config = json.loads((out / "config.json").read_text())
    assert [r["path"] for r in exported_config["routes"]] == ["/charges"]
    assert [(s["name"], s["command"]) for s in exported_config["mcpServers"]] == [("filesystem", "npx")]
    _run("import_config", str(out / "config.json"), "--tenant", "globex")
    assert selectors.route_list(tenant=globex.tenant).get().path == "/charges"


def test_unknown_tenant_and_missing_file_are_clear_errors(db, local_folder):
    with pytest.raises(CommandError, match="No tenant 'nobody'"):
        _run("import_config", str(local_folder / "config.json"), "--tenant", "nobody")
    with pytest.raises(CommandError, match="does not exist"):
        _run("import_config", str(local_folder / "missing.json"), "--tenant", "nobody")


def test_invalid_mcp_server_entry_aborts_the_import(acme, local_folder):
    config = json.loads((local_folder / "config.json").read_text())
    config["mcpServers"].append({"name": "broken", "transport": "http"})
    write_json_atomic(local_folder / "config.json", config)
    with pytest.raises(CommandError, match=r"mcpServers\[1\]\.url"):
        _run("import_config", str(local_folder / "config.json"), "--tenant", "acme")
    assert not selectors.integration_list(tenant=acme.tenant).exists()
