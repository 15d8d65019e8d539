"""Issue 14: using a stored secret needs `integrations:write`, also through an MCP server.

An MCP server sends its header secrets to its url. A key that may only write workflows and use MCP
(`workflows:write` + `mcp:use`) must not point a server that sends the tenant's stored secret at
an address of its choosing (and then call it): that would hand over a secret it may not even list.
"""

import pytest

from integrations_app import services as integration_services
from tenants.principals import Principal
from workflows_app import services
from workflows_app.models import McpServer
from workflows_app.tests.helpers import Listener

SENDS_SECRET = {"Authorization": {"secret": "stripe_key", "prefix": "Bearer "}}


@pytest.fixture
def stripe_key(acme):
    integration_services.secret_create(tenant=acme.tenant, actor=acme.actor, name="stripe_key", value="sk_live_tenant_value")


@pytest.fixture
def attacker_sink(settings):
    """Where the attacker would like the secret sent: a bare loopback socket the egress guard lets through."""
    settings.BACKFLOW_EGRESS_ALLOW = ["127.0.0.1"]
    sink = Listener()
    yield f"http://127.0.0.1:{sink.port}/mcp", sink
    sink.close()


def test_a_key_without_integrations_write_cannot_make_a_server_send_a_stored_secret(acme, stripe_key, attacker_sink):
    url, sink = attacker_sink
    attacker = acme.client(acme.key_with("workflows:write", "mcp:use"))
    made = attacker.post("/api/mcp-servers/", {"name": "exfil", "transport": "http", "url": url, "headers": SENDS_SECRET}, format="json")
    assert made.status_code == 403, made.content
    assert "'integrations:write'" in made.json()["detail"] and "stripe_key" in made.json()["detail"]
    assert not McpServer.objects.for_tenant(acme.tenant).exists()
    # Nothing to call, and nothing was sent anywhere.
    assert attacker.post("/agent/mcp/execute", {"server": "exfil", "tool": "x"}, format="json").status_code == 404
    assert sink.connections() == 0

    # The same server without the secret is the key's to make (plain headers are the author's own text).
    plain = attacker.post("/api/mcp-servers/", {"name": "exfil", "url": url, "headers": {"X-Team": "blue"}}, format="json")
    assert plain.status_code == 201, plain.content
    # ... but it cannot start sending the secret later, by PATCH or PUT.
    for method in (attacker.patch, attacker.put):
        changed = method("/api/mcp-servers/exfil/", {"name": "exfil", "url": url, "headers": SENDS_SECRET}, format="json")
        assert changed.status_code == 403 and "'integrations:write'" in changed.json()["detail"], changed.content
    assert McpServer.objects.for_tenant(acme.tenant).get(name="exfil").headers == {"X-Team": "blue"}


def test_a_server_that_sends_a_secret_cannot_be_pointed_elsewhere_without_integrations_write(acme, stripe_key, attacker_sink):
    url, sink = attacker_sink
    admin = acme.client(acme.key_with("workflows:write", "integrations:write", "mcp:use", name="admin"))
    made = admin.post("/api/mcp-servers/", {"name": "payments", "url": "https://mcp.stripe.example/mcp", "headers": SENDS_SECRET},
                      format="json")
    assert made.status_code == 201, made.content

    attacker = acme.client(acme.key_with("workflows:write", "mcp:use"))
    for change in ({"url": url}, {"transport": "sse"}, {"headers": {**SENDS_SECRET, "Host": "attacker.example"}}):
        answer = attacker.patch("/api/mcp-servers/payments/", change, format="json")
        assert answer.status_code == 403 and "'integrations:write'" in answer.json()["detail"], (change, answer.content)
    stored = McpServer.objects.for_tenant(acme.tenant).get(name="payments")
    assert (stored.transport, stored.url, stored.headers) == ("http", "https://mcp.stripe.example/mcp", SENDS_SECRET)
    assert sink.connections() == 0

    # What does not move the secret stays the workflow author's: the timeout, or dropping the secret.
    assert attacker.patch("/api/mcp-servers/payments/", {"timeout": 5}, format="json").status_code == 200
    dropped = attacker.patch("/api/mcp-servers/payments/", {"url": url, "headers": {}}, format="json")
    assert dropped.status_code == 200, dropped.content

    # With integrations:write, pointing it anywhere is a use of the secret the key may make.
    moved = admin.patch("/api/mcp-servers/payments/", {"url": "https://mcp2.stripe.example/mcp", "headers": SENDS_SECRET}, format="json")
    assert moved.status_code == 200 and moved.json()["headers"] == SENDS_SECRET, moved.content


def test_the_rule_lives_in_the_service_so_every_door_gets_it(acme, stripe_key):
    limited = Principal(tenant=acme.tenant, label="key:limited", scopes=frozenset({"workflows:write", "mcp:use"}))
    document = {"name": "exfil", "url": "https://attacker.example/mcp", "headers": SENDS_SECRET}
    with pytest.raises(services.Forbidden, match="integrations:write"):
        services.mcp_server_create(tenant=acme.tenant, actor=limited, document=document)
    # Operators (the admin, import_config) act as system principals, which hold every scope.
    operator = Principal.system(acme.tenant, "admin:ops")
    assert services.mcp_server_create(tenant=acme.tenant, actor=operator, document=document).headers == SENDS_SECRET
