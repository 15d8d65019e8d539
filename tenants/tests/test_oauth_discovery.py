"""Discovery: RFC 8414 authorization server metadata, RFC 9728 protected resource metadata (plain
and /mcp path-suffixed), and the WWW-Authenticate challenge on every 401 of the MCP endpoints."""

import httpx

from mcp_app.tests.test_remote_support import initialize, run
from tenants.scopes import ALL_SCOPES
from tenants.tests.oauth_helpers import (  # noqa: F401  (fixtures)
    ACCEPT_MCP,
    oauth_daphne_fixture,
    oauth_server_fixture,
    start_server,
    www_authenticate_ok,
)


def check_metadata(http, base, public):
    """The documents served at `base`, naming `public` (the deployment's address)."""

    async def check():
        response = await http.get(f"{base}/.well-known/oauth-authorization-server")
        assert response.status_code == 200 and response.headers["content-type"].startswith("application/json")
        meta = response.json()
        assert meta["issuer"] == public, meta
        assert meta["authorization_endpoint"] == f"{public}/o/authorize/"
        assert meta["token_endpoint"] == f"{public}/o/token/"
        assert meta["revocation_endpoint"] == f"{public}/o/revoke_token/"
        assert meta["registration_endpoint"] == f"{public}/o/register/"
        assert meta["code_challenge_methods_supported"] == ["S256"]
        assert meta["response_types_supported"] == ["code"]
        assert sorted(meta["grant_types_supported"]) == ["authorization_code", "refresh_token"]
        assert "none" in meta["token_endpoint_auth_methods_supported"]
        assert meta["authorization_response_iss_parameter_supported"] is True
        # Tenant scopes are chosen on the consent page, never advertised.
        assert meta["scopes_supported"] == sorted(ALL_SCOPES), meta["scopes_supported"]

        for path in ("/.well-known/oauth-protected-resource", "/.well-known/oauth-protected-resource/mcp"):
            response = await http.get(base + path)
            assert response.status_code == 200, (path, response.status_code)
            prm = response.json()
            assert prm["resource"] == f"{public}/mcp", (path, prm)
            assert prm["authorization_servers"] == [public], (path, prm)
            assert prm["scopes_supported"] == sorted(ALL_SCOPES)
            assert prm["bearer_methods_supported"] == ["header"]
            assert prm["resource_name"] == "Backflow MCP"

    return check()


async def check_challenges(http, base, public):
    """Every way of reaching the MCP endpoints without a usable credential: 401 + the challenge."""
    post_headers = {"Accept": ACCEPT_MCP, "Content-Type": "application/json"}
    attempts = [
        ("POST", "/mcp", {}, initialize()),
        ("POST", "/mcp/", {}, initialize()),
        ("GET", "/mcp", {"Accept": "text/event-stream"}, None),
        ("POST", "/mcp", {"Authorization": "Bearer not-a-real-token"}, initialize()),
        ("POST", "/mcp", {"Authorization": "Basic dXNlcjpwYXNz"}, initialize()),
        ("POST", "/mcp", {"Authorization": "Bearer bf_nope_nope"}, initialize()),
        ("POST", "/mcp", {"Authorization": "Bearer a.b.c"}, initialize()),
        ("GET", "/mcp/sse", {"Accept": "text/event-stream"}, None),
        ("GET", "/mcp/sse?token=not-a-real-token", {"Accept": "text/event-stream"}, None),
        ("GET", "/mcp/sse", {"Accept": "text/event-stream", "Authorization": "Bearer not-a-real-token"}, None),
        ("POST", "/mcp/messages?sessionId=" + "0" * 32, {}, initialize()),
        ("POST", "/mcp/messages?sessionId=" + "0" * 32, {"Authorization": "Bearer not-a-real-token"}, initialize()),
    ]
    for method, path, headers, body in attempts:
        response = await http.request(method, base + path, headers={**post_headers, **headers}, json=body)
        assert response.status_code == 401, (method, path, headers, response.status_code, response.text)
        assert www_authenticate_ok(response, public), (method, path, response.headers.get("www-authenticate"))
        assert response.json()["error"], response.text
    # The challenge's URL is the metadata document of this resource.
    response = await http.get(f"{base}/.well-known/oauth-protected-resource/mcp")
    assert response.json()["resource"] == f"{public}/mcp"


def test_metadata_documents_and_401_challenges(oauth_server):
    server = oauth_server

    async def main():
        async with httpx.AsyncClient(timeout=10) as http:
            await check_metadata(http, server.url, server.url)
            await check_challenges(http, server.url, server.url)
            # Anyone may read the metadata (browser-based clients too).
            response = await http.get(f"{server.url}/.well-known/oauth-authorization-server", headers={"Origin": "http://127.0.0.1:3000"})
            assert response.headers.get("access-control-allow-origin") == "*"

    run(main, timeout=30)


def test_behind_a_proxy_the_public_url_names_everything(live_daphne):
    public = "https://backflow.test"  # only a name: nothing is ever sent there
    server = start_server(live_daphne, BACKFLOW_PUBLIC_URL=public)

    async def main():
        async with httpx.AsyncClient(timeout=10) as http:
            await check_metadata(http, server.url, public)
            await check_challenges(http, server.url, public)

    run(main, timeout=30)
