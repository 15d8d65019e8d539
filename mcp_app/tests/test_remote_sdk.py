"""The MCP SDK's own clients (sse_client, streamable_http_client) against a real daphne: the tools a
credential may use, tenant isolation, and the tenant choice of a JWT that covers several."""

import httpx

from mcp_app.tests.test_remote_support import (
    all_tools,
    bearer,
    handshake,
    initialize,
    integration,
    integration_names,
    multi_tenant_jwt,
    raw_sse,
    run,
    sdk_session,
    tools_for,
)

TRANSPORTS = ("sse", "http")


def test_sdk_clients_list_and_call_tools_per_key_and_tenant(acme, globex, live_daphne):
    server = live_daphne()
    read_only = acme.key_with("integrations:read", name="read-only")
    routes_only = acme.key_with("routes:read", "routes:write", name="routes")

    async def main():
        for transport in TRANSPORTS:
            async with sdk_session(server.url, transport, acme.key) as s:
                tools = (await s.session.list_tools()).tools
                assert {t.name for t in tools} == all_tools(), transport
                for t in tools:
                    assert t.input_schema["type"] == "object" and t.title and t.annotations is not None, t
                assert next(t for t in tools if t.name == "list_integrations").annotations.read_only_hint is True
                assert next(t for t in tools if t.name == "delete_integration").annotations.destructive_hint is True
                created = await s.ok("create_integration", integration(f"acme-{transport}", displayName="Acme"))
                assert created["name"] == f"acme-{transport}" and created["displayName"] == "Acme"
                assert f"acme-{transport}" in integration_names(await s.ok("list_integrations"))
                assert (await s.ok("get_integration", {"name": f"acme-{transport}"}))["baseUrl"] == f"https://acme-{transport}.example.com/v1"
                # Bad arguments are an isError result that names the field, not a protocol error.
                data = await s.error("create_integration", {"name": "Not A Name", "baseUrl": "ftp://x"})
                assert "name" in str(data) and "baseUrl" in str(data), data

            async with sdk_session(server.url, transport, read_only) as s:
                assert await s.tool_names() == {"get_integration", "list_integrations", "list_secrets"}
                assert integration_names(await s.ok("list_integrations")) == sorted(
                    f"acme-{t}" for t in TRANSPORTS[: TRANSPORTS.index(transport) + 1])
                data = await s.error("create_integration", integration("sneaky"))
                assert "Unknown tool" in data["error"], data
                await s.error("delete_integration", {"name": f"acme-{transport}"})

            async with sdk_session(server.url, transport, routes_only) as s:
                assert await s.tool_names() == tools_for("routes:read", "routes:write")
                await s.error("list_integrations")

            # Another tenant never sees acme's integrations, by listing, by name or by writing.
            async with sdk_session(server.url, transport, globex.key) as s:
                assert await s.tool_names() == all_tools()
                assert integration_names(await s.ok("list_integrations")) == sorted(
                    f"globex-{t}" for t in TRANSPORTS[: TRANSPORTS.index(transport)])
                for name in ("acme-sse", "acme-http"):
                    await s.error("get_integration", {"name": name})
                    await s.error("delete_integration", {"name": name})
                await s.ok("create_integration", integration(f"globex-{transport}"))
                # Same name as acme's: a separate record of globex, not a conflict.
                await s.ok("create_integration", integration(f"acme-{transport}", description="globex's own"))
                await s.ok("delete_integration", {"name": f"acme-{transport}"})

        async with sdk_session(server.url, "http", acme.key) as s:
            listed = await s.ok("list_integrations")
            assert integration_names(listed) == ["acme-http", "acme-sse"]
            assert all(item["description"] != "globex's own" for item in listed["integrations"])

    run(main, timeout=60)


def test_scope_picks_the_tenant_of_a_multi_tenant_jwt(acme, globex, live_daphne):
    server = live_daphne()
    token = multi_tenant_jwt("both", "pw-both-both", acme, globex)

    async def main():
        # Seed one integration per tenant through the tenants' own keys.
        for ctx, name in ((acme, "only-acme"), (globex, "only-globex")):
            async with sdk_session(server.url, "http", ctx.key) as s:
                await s.ok("create_integration", integration(name))

        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            # The SSE endpoint event carries a ?scope= choice on to the POSTs.
            async with raw_sse(http, "/mcp/sse?scope=globex", headers=bearer(token)) as stream:
                assert stream.scope == "globex", stream.endpoint
                await handshake(http, stream, token)
            async with raw_sse(http, "/mcp/sse", headers={**bearer(token), "X-Backflow-Scope": "globex"}) as stream:
                assert stream.scope is None, stream.endpoint  # the header comes with every POST anyway

        for transport in TRANSPORTS:
            for slug, expected in (("acme", ["only-acme"]), ("globex", ["only-globex"])):
                async with sdk_session(server.url, transport, token, headers={"X-Backflow-Scope": slug}) as s:
                    assert await s.tool_names() == all_tools()
                    assert integration_names(await s.ok("list_integrations")) == expected, (transport, slug)
                # ?scope= does the same.
                async with sdk_session(server.url, transport, token, query=f"?scope={slug}") as s:
                    assert integration_names(await s.ok("list_integrations")) == expected, (transport, slug, "query")

        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            headers = {**bearer(token), "Accept": "application/json, text/event-stream"}
            # Without a choice the token is ambiguous; a tenant it does not cover is refused.
            for extra in ({}, {"X-Backflow-Scope": "initech"}):
                response = await http.post("/mcp", json=initialize(), headers={**headers, **extra})
                assert response.status_code == 401, (extra, response.status_code, response.text)
                assert response.headers["www-authenticate"].startswith("Bearer")
                response = await http.get("/mcp/sse", headers={**headers, **extra})
                assert response.status_code == 401, (extra, response.status_code, response.text)
            assert "X-Backflow-Scope" in (await http.post("/mcp", json=initialize(), headers=headers)).json()["error"]
            # An API key belongs to one tenant: scoping it to another is refused.
            response = await http.post("/mcp", json=initialize(), headers={**bearer(acme.key), "Accept": headers["Accept"], "X-Backflow-Scope": "globex"})
            assert response.status_code == 401, response.text

    run(main, timeout=60)
