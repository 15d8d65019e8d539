"""The seed's own documents, byte for byte (tests/fixtures/seed/), work as pasted."""

import json
import shutil
from io import StringIO
from pathlib import Path

from django.core.management import call_command

from workflows_app import selectors

SEED = Path(__file__).resolve().parent / "fixtures" / "seed"


def test_the_seeds_mcp_client_config_imports_without_an_integrations_folder(acme, tmp_path):
    config = tmp_path / "config.json"
    shutil.copyfile(SEED / "config.json", config)
    out = StringIO()
    call_command("import_config", str(config), "--tenant", "acme", stdout=out)
    report = json.loads(out.getvalue())
    assert report["mcpServers"] == {"filesystem": "created", "github": "created", "sqlite": "created"}
    assert report["integrations"] == {} and report["routes"] == {}
    github = selectors.mcp_server_get(tenant=acme.tenant, name="github")
    assert github.command == "npx" and github.env == {"GITHUB_TOKEN": "{{env.GITHUB_TOKEN}}"}
    assert not (tmp_path / "integrations").exists()


def test_the_seeds_workflow_document_is_accepted_as_pasted(acme, tmp_path):
    from rest_framework.test import APIClient

    config = tmp_path / "config.json"
    shutil.copyfile(SEED / "config.json", config)
    call_command("import_config", str(config), "--tenant", "acme", stdout=StringIO())  # its "filesystem" server
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {acme.key}")
    response = client.post("/api/workflows/", (SEED / "file-analysis.json").read_bytes(), content_type="application/json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"] == "file-analysis" and body["name"] == "file-analysis"  # no top-level name: the id
    assert [step["id"] for step in body["workflows"][0]["steps"]] == ["read-file", "analyze"]
    assert body["tools"] == [
        {"name": "read_file", "type": "mcp_tool", "params": {"mcpServer": "filesystem", "toolName": "read_file"}},
        {"name": "llm", "type": "llm_call", "params": {}},  # params, absent in the seed, normalized to {}
    ]
