"""The consent page does not take a client's word for its name (issue 15, hole 4).

Before, a client that registered itself as "Claude" with a redirect to any host was shown as
"Connect Claude". Now the page says where the answer goes (the redirect host), that the client
registered itself (dynamic registration, or a metadata document and its host), and marks a name
that imitates a well-known client as unverified. Such names are not refused at registration: the
real Claude, ChatGPT, Cursor… register themselves the same way, under those very names.
"""

import base64
import hashlib
import json
from urllib.parse import urlencode

import pytest
from django.core.cache import cache
from django.test import Client
from oauth2_provider.models import Application

from tenants.oauth import impersonated_client, squash_name

IMITATIONS = [
    "Claude", "claude", "CLAUDE", "C l a u d e", "Claude.", "Claude-Desktop", "Claude (official)", "cIaude",
    "Cl4ude", "Сlaude",  # a Cyrillic С
    "Ｃｌａｕｄｅ",  # full-width
    "Clau\u200bde",  # a zero-width space
    "Claudé", "𝐂𝐥𝐚𝐮𝐝𝐞", "Anthropic MCP", "ChatGPT", "Chat GPT", "chat-gpt", "OpenAI", "Open AI", "Cursor",
    "VS Code", "vscode", "Visual Studio Code", "GitHub Copilot", "Copilot", "Gemini CLI", "Windsurf", "Codex",
]
ORDINARY = ["Acme CLI", "Test MCP client", "Notes helper", "My integration tool", "Zeddy's bot", "Cody", "Dashboard"]


@pytest.mark.parametrize("name", IMITATIONS)
def test_names_of_well_known_clients_are_recognised_with_their_lookalikes(name):
    assert impersonated_client(name), (name, squash_name(name))


@pytest.mark.parametrize("name", ORDINARY)
def test_ordinary_names_are_not(name):
    assert impersonated_client(name) is None, (name, squash_name(name))


def _challenge(verifier="v" * 64):
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def _authorize(client_id, redirect_uri):
    return "/o/authorize/?" + urlencode({
        "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": "s",
        "scope": "integrations:read", "code_challenge": _challenge(), "code_challenge_method": "S256",
        "resource": "http://testserver/mcp"})


def _register(name, redirect_uri):
    cache.clear()  # the registration limit
    response = Client().post("/o/register/", json.dumps({
        "client_name": name, "redirect_uris": [redirect_uri], "token_endpoint_auth_method": "none",
        "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]}), content_type="application/json")
    assert response.status_code == 201, response.content  # not refused: real clients register like this
    return response.json()["client_id"]


def _page(acme, client_id, redirect_uri):
    browser = Client()
    browser.force_login(acme.owner)
    page = browser.get(_authorize(client_id, redirect_uri))
    assert page.status_code == 200 and b'id="authorizationForm"' in page.content, page.content[:500]
    return page, " ".join(page.content.decode().split())


@pytest.mark.django_db
def test_a_self_registered_claude_redirecting_anywhere_is_shown_for_what_it_is(acme):
    client_id = _register("Claude", "https://evil.example/cb")
    page, html = _page(acme, client_id, "https://evil.example/cb")
    assert "<h1>Connect an application calling itself “Claude”</h1>" in html
    assert "<h1>Connect Claude</h1>" not in html
    assert 'id="unverified-name"' in html and "Unverified name." in html and "looks like Claude" in html
    assert "Sends your answer to</dt> <dd><strong>evil.example</strong>" in html
    assert "by itself (dynamic client registration" in html and "the name is unverified" in html
    # The page's Content-Security-Policy is kept (with the client's origin as form-action).
    policy = page["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "form-action 'self' https://evil.example" in policy
    assert "<script" not in html and " style=" not in html


@pytest.mark.django_db
@pytest.mark.parametrize("name", ["Ｃｌａｕｄｅ", "Chat GPT", "VS Code", "Сlaude"])
def test_lookalike_names_are_marked_too(acme, name):
    client_id = _register(name, "http://127.0.0.1:8765/callback")
    _, html = _page(acme, client_id, "http://127.0.0.1:8765/callback")
    assert "Unverified name." in html and "<strong>127.0.0.1:8765</strong>" in html


@pytest.mark.django_db
def test_an_ordinary_self_registered_client_still_shows_host_and_registration(acme):
    client_id = _register("Acme CLI", "https://cli.acme.example/oauth")
    _, html = _page(acme, client_id, "https://cli.acme.example/oauth")
    assert "<h1>Connect Acme CLI</h1>" in html and "Unverified name." not in html
    assert "<strong>cli.acme.example</strong>" in html and "by itself (dynamic client registration" in html


@pytest.mark.django_db
def test_an_operators_application_is_not_marked(acme):
    app = Application.objects.create(client_id="operator-claude", name="Claude", client_type=Application.CLIENT_PUBLIC,
                                      authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
                                      redirect_uris="https://claude.ai/api/mcp/auth_callback",
                                      registration_source=Application.RegistrationSource.MANUAL)
    _, html = _page(acme, app.client_id, "https://claude.ai/api/mcp/auth_callback")
    assert "<h1>Connect Claude</h1>" in html and "Unverified name." not in html
    assert "by the operators of this Backflow" in html and "<strong>claude.ai</strong>" in html


@pytest.mark.django_db
def test_a_metadata_document_client_names_the_documents_host(acme, monkeypatch):
    from oauth2_provider.cimd import SafeMetadataFetcher

    client_id = "https://mcp-clients.example/claude.json"
    document = {"client_id": client_id, "client_name": "Claude", "redirect_uris": ["https://evil.example/cb"],
                "grant_types": ["authorization_code"], "token_endpoint_auth_method": "none"}
    monkeypatch.setattr(SafeMetadataFetcher, "fetch", lambda self, url: (document, 300) if url == client_id else pytest.fail(url))
    cache.clear()
    _, html = _page(acme, client_id, "https://evil.example/cb")
    assert "Unverified name." in html and "metadata document published at <strong>mcp-clients.example</strong>" in html
    assert "<strong>evil.example</strong>" in html
