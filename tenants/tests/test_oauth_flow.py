"""OAuth 2.1 end to end: the MCP SDK's own OAuth client (OAuthClientProvider) discovers the server,
registers, sends a person through sign-in and consent, exchanges the code and lists tools; the
granted scopes decide the tool set on Streamable HTTP and on SSE, and a grant stays in its tenant."""

import time
from contextlib import asynccontextmanager

import httpx
import httpx2
from mcp import ClientSession
from mcp.client.auth import OAuthClientProvider
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.auth import AuthorizationCodeResult, OAuthClientMetadata

from mcp_app.tests.test_remote_support import (
    REQUEST_TIMEOUT,
    integration,
    integration_names,
    run,
    sdk_session,
)
from tenants.models import AuditEvent
from tenants.tests.oauth_helpers import (  # noqa: F401  (fixtures)
    READ_SCOPE,
    READ_SCOPES,
    READ_TOOLS,
    access_token_row,
    can_sign_in,
    mcp_initialize,
    member_of,
    oauth_daphne_fixture,
    oauth_server_fixture,
    query_of,
    signed_in,
    www_authenticate_ok,
)


class MemoryStorage:
    """The SDK's TokenStorage protocol, in memory."""

    def __init__(self):
        self.tokens = self.client_info = None

    async def get_tokens(self):
        return self.tokens

    async def set_tokens(self, tokens):
        self.tokens = tokens

    async def get_client_info(self):
        return self.client_info

    async def set_client_info(self, client_info):
        self.client_info = client_info


class Person:
    """The redirect and callback handlers: a signed-in browser answers the consent page."""

    def __init__(self, browser, *, tenant, grant, expect_tenants=None):
        self.browser, self.tenant, self.grant, self.expect_tenants = browser, tenant, grant, expect_tenants
        self.authorize_urls, self.forms, self.answer = [], [], None

    async def redirect_handler(self, url):
        self.authorize_urls.append(url)
        response, form = await self.browser.open(url)
        assert response.status_code == 200 and form.has_form, (response.status_code, form.text)
        self.forms.append(form)
        if self.expect_tenants is not None:
            assert form.tenants == self.expect_tenants, form.tenants
        response = await self.browser.decide(url, form, tenant=self.tenant, scopes=self.grant)
        assert response.status_code == 302, (response.status_code, form.text)
        self.answer = query_of(response.headers["location"])  # not followed: nothing listens there

    async def callback_handler(self):
        assert self.answer and "code" in self.answer, self.answer
        return AuthorizationCodeResult(code=self.answer["code"], state=self.answer.get("state"), iss=self.answer.get("iss"))


def provider_for(base, person, storage, scope=READ_SCOPE):
    metadata = OAuthClientMetadata(
        client_name="SDK test client", redirect_uris=["http://127.0.0.1:8765/callback"],
        token_endpoint_auth_method="none", grant_types=["authorization_code", "refresh_token"],
        response_types=["code"], scope=scope,
    )
    return OAuthClientProvider(server_url=f"{base}/mcp", client_metadata=metadata, storage=storage,
                               redirect_handler=person.redirect_handler, callback_handler=person.callback_handler)


@asynccontextmanager
async def sdk_oauth_session(base, person, storage):
    """An initialized ClientSession over Streamable HTTP, authorized by OAuthClientProvider."""
    provider = provider_for(base, person, storage)
    async with (
        httpx2.AsyncClient(auth=provider, timeout=httpx2.Timeout(10, read=30)) as http,
        streamable_http_client(f"{base}/mcp", http_client=http) as (read, write),
        ClientSession(read, write, read_timeout_seconds=REQUEST_TIMEOUT) as session,
    ):
        await session.initialize()
        yield session, provider


async def tool_names(session):
    return {t.name for t in (await session.list_tools()).tools}


async def sdk_oauth_tools(base, person, storage, call=None):
    """Connect with OAuthClientProvider; the tool names (and a call's structured result)."""
    async with sdk_oauth_session(base, person, storage) as (session, _):
        names, data = await tool_names(session), None
        if call:
            result = await session.call_tool(*call)
            assert not result.is_error, result
            data = result.structured_content
        return names, data


def test_sdk_oauth_flow_end_to_end_on_both_transports(acme, oauth_server):
    server = oauth_server
    can_sign_in(acme)
    base = server.url
    storage = MemoryStorage()
    state = {}

    async def main():
        async with await signed_in(base, acme) as browser:
            person = Person(browser, tenant="acme", grant=list(READ_SCOPES), expect_tenants=["acme"])
            tools, listed = await sdk_oauth_tools(base, person, storage, call=("list_integrations", {}))
            assert tools == READ_TOOLS, tools
            assert integration_names(listed) == [], listed

            # What the SDK asked for and what the person saw.
            [url] = person.authorize_urls
            assert url.startswith(f"{base}/o/authorize/?"), url
            asked = query_of(url)
            assert asked["code_challenge_method"] == "S256" and asked["resource"] == f"{base}/mcp", asked
            # The SDK asks for what the resource metadata advertises (scopes_supported), whatever
            # its client metadata says; the person's ticks on the consent page decide.
            assert set(READ_SCOPES) <= set(asked["scope"].split()), asked
            [form] = person.forms
            assert "SDK test client" in form.text, form.text
            assert set(form.scopes) == set(asked["scope"].split()), form.scopes  # every requested scope, ticked by default
            assert person.answer["state"] == asked["state"] and person.answer["iss"] == base, person.answer

            tokens = storage.tokens
            assert tokens.access_token and tokens.refresh_token and tokens.token_type.lower() == "bearer"
            assert set(tokens.scope.split()) == {*READ_SCOPES, "tenant:acme"}, tokens.scope
            assert storage.client_info.client_id and storage.client_info.token_endpoint_auth_method == "none"
            state["token"] = tokens.access_token
            state["client_id"] = storage.client_info.client_id

            # The same access token, as a plain bearer, over SSE and Streamable HTTP.
            for transport in ("sse", "http"):
                async with sdk_session(base, transport, tokens.access_token) as s:
                    assert await s.tool_names() == READ_TOOLS, transport
                    await s.ok("list_routes")
                    await s.error("create_integration", integration("not-allowed"))

            # A second run with the stored tokens does not ask the person again.
            again = Person(browser, tenant="acme", grant=[])
            tools, _ = await sdk_oauth_tools(base, again, storage)
            assert tools == READ_TOOLS and again.authorize_urls == []

        # The SDK refreshes on its own once the access token's lifetime is over (as far as the
        # client knows: its expiry clock is moved instead of waiting an hour); rotation hands it
        # a new pair, the old access token stops working, the person is not asked again.
        fresh = MemoryStorage()
        async with await signed_in(base, acme) as browser:
            person = Person(browser, tenant="acme", grant=list(READ_SCOPES))
            async with sdk_oauth_session(base, person, fresh) as (session, provider):
                before = fresh.tokens
                provider.context.token_expiry_time = time.time() - 1
                assert await tool_names(session) == READ_TOOLS
                after = fresh.tokens
                assert after.access_token != before.access_token and after.refresh_token != before.refresh_token
                assert set(after.scope.split()) == {*READ_SCOPES, "tenant:acme"} and len(person.authorize_urls) == 1
                assert await tool_names(session) == READ_TOOLS
            async with httpx.AsyncClient(timeout=10) as http:
                assert (await mcp_initialize(http, base, before.access_token)).status_code == 401
                assert (await mcp_initialize(http, base, after.access_token)).status_code == 200

    run(main, timeout=60)

    row = access_token_row(state["token"])
    assert row is not None and row.user == acme.owner and row.resource == [f"{base}/mcp"]
    assert row.application.client_id == state["client_id"] and row.application.name == "SDK test client"
    # Tool calls through an OAuth token are audited under an oauth: principal.
    events = AuditEvent.objects.for_tenant(acme.tenant).filter(action="mcp.tool_call")
    principals = {e.principal for e in events}
    assert principals == {f"oauth:{state['client_id'][:12]}:acme-owner"}, principals
    assert {e.object_id for e in events} == {"list_integrations", "list_routes", "create_integration"}
    # The calls outside the grant were refused, and audited as such.
    refused = [e.summary["outcome"] for e in events if e.object_id == "create_integration"]
    assert len(refused) == 2 and all(o.startswith("error") for o in refused), refused


def test_narrowing_on_the_consent_page_narrows_the_tools(acme, oauth_server):
    server = oauth_server
    can_sign_in(acme)
    # Granted scopes act exactly like an API key's scopes.
    keys = {scopes: acme.key_with(*scopes, name="-".join(scopes)) for scopes in (
        ("integrations:read",), ("routes:read", "routes:write", "workflows:read"))}

    async def main():
        async with await signed_in(server.url, acme) as browser:
            storage = MemoryStorage()
            person = Person(browser, tenant="acme", grant=["integrations:read"])  # routes:read unticked
            tools, _ = await sdk_oauth_tools(server.url, person, storage)
            assert tools == {"get_integration", "list_integrations", "list_secrets"}, tools
            assert set(storage.tokens.scope.split()) == {"integrations:read", "tenant:acme"}
            async with sdk_session(server.url, "sse", storage.tokens.access_token) as s:
                assert await s.tool_names() == {"get_integration", "list_integrations", "list_secrets"}
                await s.error("list_routes")

            for scopes, key in keys.items():
                storage = MemoryStorage()
                tools, _ = await sdk_oauth_tools(server.url, Person(browser, tenant="acme", grant=list(scopes)), storage)
                async with sdk_session(server.url, "http", key) as s:
                    assert tools == await s.tool_names(), scopes

            # Ticking nothing leaves a grant with no tools at all.
            storage = MemoryStorage()
            tools, _ = await sdk_oauth_tools(server.url, Person(browser, tenant="acme", grant=[]), storage)
            assert tools == set() and storage.tokens.scope.split() == ["tenant:acme"]

    run(main, timeout=60)


def test_member_of_two_tenants_picks_one_and_sees_only_its_data(acme, globex, oauth_server):
    server = oauth_server
    both = member_of("both", acme, globex)

    async def main():
        for ctx, name in ((acme, "only-acme"), (globex, "only-globex")):
            async with sdk_session(server.url, "http", ctx.key) as s:
                await s.ok("create_integration", integration(name))

        tokens = {}
        async with await signed_in(server.url, both) as browser:
            for slug in ("globex", "acme"):
                storage = MemoryStorage()
                person = Person(browser, tenant=slug, grant=list(READ_SCOPES), expect_tenants=["acme", "globex"])
                tools, listed = await sdk_oauth_tools(server.url, person, storage, call=("list_integrations", {}))
                assert tools == READ_TOOLS
                assert integration_names(listed) == [f"only-{slug}"], (slug, listed)
                tokens[slug] = storage.tokens.access_token

        for transport in ("sse", "http"):
            for slug in ("acme", "globex"):
                async with sdk_session(server.url, transport, tokens[slug]) as s:
                    assert integration_names(await s.ok("list_integrations")) == [f"only-{slug}"]
                    await s.error("get_integration", {"name": "only-acme" if slug == "globex" else "only-globex"})

        # A token bound to one tenant cannot be pointed at the other, even by a member of both.
        async with httpx.AsyncClient(timeout=10) as http:
            response = await mcp_initialize(http, server.url, tokens["acme"], {"X-Backflow-Scope": "globex"})
            assert response.status_code == 401 and www_authenticate_ok(response, server.url), response.text
            response = await mcp_initialize(http, server.url, tokens["acme"], {"X-Backflow-Scope": "acme"})
            assert response.status_code == 200, response.text

    run(main, timeout=60)
