"""Bad input, raw HTTP against a real daphne: the authorization endpoint and the consent page, the
token endpoint, tokens the MCP door must refuse, refresh rotation and reuse, revocation, dynamic
client registration and its rate limit. Always the RFCs' error codes, never a 500, nothing granted."""

import time
from datetime import timedelta

import httpx
from django.core.cache import cache
from django.utils import timezone
from oauth2_provider.models import AccessToken, Application, Grant, RefreshToken

from mcp_app.tests.test_remote_support import (
    bearer,
    handshake,
    initialize,
    post_json,
    raw_sse,
    sdk_session,
)
from tenants import services as tenant_services
from tenants.models import Membership
from tenants.tests.oauth_helpers import (  # noqa: F401  (fixtures)
    READ_SCOPES,
    READ_TOOLS,
    ConsentForm,
    OAuthClient,
    access_token_row,
    approve,
    can_sign_in,
    mcp_initialize,
    member_of,
    oauth_daphne_fixture,
    oauth_server_fixture,
    obtain_tokens,
    pkce,
    query_of,
    refresh,
    refresh_token_row,
    register,
    registration,
    run_with_orm,
    signed_in,
    start_server,
    token_request,
    www_authenticate_ok,
)


def granted():
    """Access tokens a person granted (registration leaves a registration access token, with no user)."""
    return AccessToken.objects.filter(user__isnull=False)


def assert_error_redirect(response, client, error, state="st-1"):
    """An authorization error sent back to the client: no code, the client's state echoed."""
    assert response.status_code == 302, (response.status_code, ConsentForm(response.text).text)
    location = response.headers["location"]
    assert location.startswith(client.redirect_uri + "?"), location
    answer = query_of(location)
    assert answer.get("error") == error and "code" not in answer and answer.get("state") == state, answer
    return answer


def assert_error_page(response):
    """An error shown to the person, never sent to an unverified redirect URI."""
    assert response.status_code == 400, (response.status_code, response.text[:500])
    assert "location" not in response.headers
    assert "Cannot connect" in ConsentForm(response.text).text


def assert_oauth_error(response, status, error):
    assert response.status_code == status, (response.status_code, response.text)
    body = response.json()
    assert body["error"] == error, body
    assert "access_token" not in body and "refresh_token" not in body, body
    return body


def test_authorization_endpoint_and_consent_page_refuse_bad_requests(acme, oauth_server):
    base = oauth_server.url
    can_sign_in(acme)
    stranger = member_of("stranger")

    async def main():
        async with httpx.AsyncClient(timeout=10) as http:
            client = await register(http, base)
            _, challenge = pkce()

            # Signed out: to the sign-in page, and back here afterwards.
            url = client.authorize_url(challenge=challenge)
            response = await http.get(url)
            assert response.status_code == 302 and response.headers["location"].startswith("/accounts/login/?next=/o/authorize/")

        async with await signed_in(base, acme) as browser:
            get = browser.http.get
            # Redirect URI not registered, unknown client: an error page, no redirect anywhere.
            assert_error_page(await get(client.authorize_url(challenge=challenge, redirect_uri="http://127.0.0.1:9/evil")))
            assert_error_page(await get(client.authorize_url(challenge=challenge, redirect_uri="https://evil.example/callback")))
            unknown = OAuthClient(base=base, client_id="no-such-client", redirect_uri=client.redirect_uri)
            assert_error_page(await get(unknown.authorize_url(challenge=challenge)))
            # Errors the client may hear about: back to its redirect URI with the RFC's code.
            assert_error_redirect(await get(client.authorize_url(challenge=None, method=None)), client, "invalid_request")
            assert_error_redirect(await get(client.authorize_url(challenge=None)), client, "invalid_request")
            # "plain" PKCE: refused (DOT refuses it when the code would be created, so after the consent).
            url = client.authorize_url(challenge=challenge, method="plain")
            response, form = await browser.open(url)
            if response.status_code == 200:
                response = await browser.decide(url, form, tenant="acme")
            answer = assert_error_redirect(response, client, "invalid_request")
            assert "S256" in answer.get("error_description", ""), answer
            assert_error_redirect(await get(client.authorize_url(challenge=challenge, scope="integrations:read admin:everything")), client, "invalid_scope")
            assert_error_redirect(await get(client.authorize_url(challenge=challenge, resource="not-a-uri")), client, "invalid_target")
            response = await get(client.authorize_url(challenge=challenge, response_type="token"))  # implicit: not for this client
            error = query_of(response.headers.get("location", "")).get("error")
            assert error in ("unsupported_response_type", "unauthorized_client"), (response.status_code, error)
            assert_error_redirect(response, client, error)
            assert Grant.objects.count() == 0

            # The consent page shows the client and the scopes; the person picks among their tenants only.
            url = client.authorize_url(challenge=challenge, scope="integrations:read")
            response, form = await browser.open(url)
            assert response.status_code == 200 and form.tenants == ["acme"] and form.scopes == ["integrations:read"]
            assert "Test MCP client" in form.text and "See integrations" in form.text, form.text
            response = await browser.decide(url, form, tenant="globex")
            shown_again = ConsentForm(response.text)
            assert response.status_code == 200 and "Pick one of your tenants" in shown_again.text, shown_again.text
            assert shown_again.tenants == ["acme"] and shown_again.scopes == ["integrations:read"] and "Test MCP client" in shown_again.text
            _, tampered = await browser.open(url)
            tampered.hidden["client_id"] = "no-such-client"
            response = await browser.decide(url, tampered, tenant="acme")
            assert response.status_code == 400 and "location" not in response.headers, response.status_code
            # A tampered form cannot widen the scopes, nor move the redirect.
            response = await browser.decide(url, form, tenant="acme", scopes=["integrations:read", "integrations:write"])
            assert response.status_code == 302 and "code=" in response.headers["location"]
            assert Grant.objects.get().scope.split() == ["integrations:read", "tenant:acme"]
            Grant.objects.all().delete()
            _, tampered = await browser.open(url)
            tampered.hidden["redirect_uri"] = "http://127.0.0.1:9/evil"
            response = await browser.decide(url, tampered, tenant="acme")
            assert response.status_code == 400 and "evil" not in response.headers.get("location", ""), response.status_code
            assert Grant.objects.count() == 0

            # Deny: the client hears access_denied and nothing is granted.
            response, form = await browser.open(url)
            assert_error_redirect(await browser.decide(url, form, tenant="acme", allow=False), client, "access_denied")
            assert Grant.objects.count() == 0

            # The tenant is the person's choice on this page, never the client's to ask for.
            for scope in ("integrations:read tenant:acme", "tenant:globex"):
                response = await get(client.authorize_url(challenge=challenge, scope=scope))
                assert_error_redirect(response, client, "invalid_scope")

        # Signed in but a member of no tenant: told so, and cannot approve anyway.
        async with await signed_in(base, stranger) as browser:
            url = client.authorize_url(challenge=challenge)
            response, form = await browser.open(url)
            assert response.status_code == 200 and form.tenants == [] and form.scopes == []
            assert "You are not a member of any tenant" in form.text, form.text
            assert not any(b.get("name") == "allow" for b in form.buttons)
            response = await browser.decide(url, form, tenant="acme")
            assert response.status_code == 200 and "You are not a member of any tenant" in ConsentForm(response.text).text
            assert_error_redirect(await browser.decide(url, form, allow=False), client, "access_denied")

        assert Grant.objects.count() == 0 and granted().count() == 0

    run_with_orm(main, timeout=45)


def test_token_endpoint_refuses_bad_exchanges(acme, oauth_server):
    base = oauth_server.url
    can_sign_in(acme)

    async def main():
        async with httpx.AsyncClient(timeout=10) as http, await signed_in(base, acme) as browser:
            client, other = await register(http, base), await register(http, base)
            verifier, challenge = pkce()
            code = (await approve(browser, client, tenant="acme", challenge=challenge))["code"]
            exchange = {"grant_type": "authorization_code", "code": code, "redirect_uri": client.redirect_uri,
                        "client_id": client.client_id, "code_verifier": verifier, "resource": client.resource}

            async def attempt(**changes):
                return await token_request(http, base, **{**exchange, **changes})

            # Missing verifier: a required parameter is missing (RFC 6749 5.2); wrong one: invalid_grant (RFC 7636 4.6).
            assert_oauth_error(await attempt(code_verifier=None), 400, "invalid_request")
            assert_oauth_error(await attempt(code_verifier=pkce()[0]), 400, "invalid_grant")
            assert_oauth_error(await attempt(code_verifier=challenge), 400, "invalid_grant")  # the challenge is not the verifier
            assert_oauth_error(await attempt(code="not-a-code"), 400, "invalid_grant")
            # Another client's code, an unknown client, a client that lies about its redirect URI.
            assert_oauth_error(await attempt(client_id=other.client_id), 400, "invalid_grant")
            assert_oauth_error(await attempt(client_id="no-such-client"), 401, "invalid_client")
            assert_oauth_error(await attempt(client_id=None), 401, "invalid_client")
            body = await attempt(redirect_uri="http://127.0.0.1:9/evil")
            assert body.status_code == 400 and body.json()["error"] in ("invalid_grant", "invalid_request"), body.text
            # A resource the grant was not for (RFC 8707), and grant types this server does not do.
            assert_oauth_error(await attempt(resource="http://other.example/mcp"), 400, "invalid_target")
            # Refused before any credential is checked: the same answer for a right and a wrong
            # password (tests/security/test_credentials.py).
            for password in ("pw-acmeacme", "wrong"):
                assert_oauth_error(await attempt(grant_type="password", username="acme-owner", password=password), 400, "unsupported_grant_type")
            assert_oauth_error(await attempt(grant_type="client_credentials"), 400, "unsupported_grant_type")
            assert_oauth_error(await attempt(grant_type=None), 400, "unsupported_grant_type")
            assert granted().count() == 0 and RefreshToken.objects.count() == 0

            # The real exchange works once; the code is then spent.
            response = await attempt()
            assert response.status_code == 200, response.text
            tokens = response.json()
            assert tokens["token_type"] == "Bearer" and 0 < tokens["expires_in"] <= 3600
            assert tokens["scope"].split() == [*READ_SCOPES, "tenant:acme"], tokens
            assert_oauth_error(await attempt(), 400, "invalid_grant")
            assert granted().count() == 1 and RefreshToken.objects.count() == 1
            assert (await mcp_initialize(http, base, tokens["access_token"])).status_code == 200
            # With that grant in place, a client asking not to bother the person (approval_prompt=auto)
            # still gets the consent page: the tenant is chosen there, never silently.
            response, form = await browser.open(client.authorize_url(challenge=pkce()[1], approval_prompt="auto"))
            assert response.status_code == 200 and form.tenants == ["acme"], (response.status_code, response.headers.get("location"))

            # An expired code is refused.
            verifier, challenge = pkce()
            code = (await approve(browser, client, tenant="acme", challenge=challenge))["code"]
            Grant.objects.update(expires=timezone.now() - timedelta(seconds=1))
            assert_oauth_error(await attempt(code=code, code_verifier=verifier), 400, "invalid_grant")
            assert granted().count() == 1

    run_with_orm(main, timeout=45)


def test_the_mcp_door_refuses_tokens_it_must_not_honour(acme, globex, oauth_server):
    base = oauth_server.url
    can_sign_in(acme)
    leaving = member_of("leaving", acme)

    async def main():
        async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10, read=30)) as http, await signed_in(base, acme) as browser:
            client, other = await register(http, base), await register(http, base)

            async def refused(access_token, headers=None, sse=True):
                response = await mcp_initialize(http, base, access_token, headers)
                assert response.status_code == 401 and www_authenticate_ok(response, base), (response.status_code, response.text)
                if sse:
                    response = await http.get(f"{base}/mcp/sse", headers={**bearer(access_token), **(headers or {})})
                    assert response.status_code == 401 and www_authenticate_ok(response, base), response.text
                return response.json()["error"]

            good = await obtain_tokens(http, browser, client, tenant="acme")
            assert (await mcp_initialize(http, base, good["access_token"])).status_code == 200
            # Bound to acme: pointing it at another tenant is refused, by header or query.
            assert "tenant" in await refused(good["access_token"], {"X-Backflow-Scope": "globex"})
            response = await http.post(f"{base}/mcp?scope=globex", json=initialize(), headers={**bearer(good["access_token"]), "Accept": "application/json, text/event-stream"})
            assert response.status_code == 401, response.text
            # Issued for the MCP resource only: the REST API refuses it.
            for headers in ({}, {"X-Backflow-Scope": "acme"}):
                response = await http.get(f"{base}/api/integrations/", headers={**bearer(good["access_token"]), **headers})
                assert response.status_code == 401, (response.status_code, response.text)

            # Another audience (only a name: nothing is sent there) is refused before anything is
            # issued (RFC 8707 invalid_target), at the authorization endpoint as at the token endpoint;
            # a token for no audience at all is bound to this MCP endpoint, where it works.
            grants = Grant.objects.count()
            for foreign in ("http://other.example/mcp", f"{base}/api", f"{base}/mcp-evil", base.replace("127.0.0.1", "localhost") + "/mcp"):
                answer = assert_error_redirect(await browser.http.get(client.authorize_url(challenge=pkce()[1], resource=foreign)),
                                               client, "invalid_target")
                assert f"{base}/mcp" in answer["error_description"], answer
            url = client.authorize_url(challenge=pkce()[1])
            response, form = await browser.open(url)
            form.hidden["resource"] = "http://other.example/mcp"  # a tampered consent form
            response = await browser.decide(url, form, tenant="acme")
            assert response.status_code == 400 and "invalid_target" in response.text, (response.status_code, response.text[:500])
            assert Grant.objects.count() == grants
            unbound = await obtain_tokens(http, browser, client, tenant="acme", resource=None)
            assert access_token_row(unbound["access_token"]).resource == [f"{base}/mcp"]
            assert (await mcp_initialize(http, base, unbound["access_token"])).status_code == 200
            prefix = await obtain_tokens(http, browser, client, tenant="acme", resource=base)  # a URL prefix of /mcp serves it
            assert (await mcp_initialize(http, base, prefix["access_token"])).status_code == 200
            # A token row from before the binding (no resource) is refused at /mcp.
            AccessToken.objects.filter(pk=access_token_row(unbound["access_token"]).pk).update(resource=[])
            assert "not issued for" in await refused(unbound["access_token"])

            # Expired.
            expired = await obtain_tokens(http, browser, client, tenant="acme")
            AccessToken.objects.filter(pk=access_token_row(expired["access_token"]).pk).update(expires=timezone.now() - timedelta(seconds=1))
            assert "expired" in await refused(expired["access_token"])

            # Revoked at /o/revoke_token/ while an SSE session is open: the very next message is refused.
            revoked = await obtain_tokens(http, browser, client, tenant="acme")
            async with raw_sse(http, f"{base}/mcp/sse", headers=bearer(revoked["access_token"])) as stream:
                await handshake(http, stream, revoked["access_token"])
                # Another client cannot revoke it (RFC 7009: 200, and nothing happens).
                response = await http.post(f"{base}/o/revoke_token/", data={"token": revoked["access_token"], "client_id": other.client_id})
                assert response.status_code == 200 and access_token_row(revoked["access_token"]) is not None
                response = await http.post(f"{base}/o/revoke_token/", data={"token": revoked["access_token"], "client_id": client.client_id})
                assert response.status_code == 200, response.text
                response = await post_json(http, stream.endpoint, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, revoked["access_token"])
                assert response.status_code == 401 and www_authenticate_ok(response, base), response.text
            await refused(revoked["access_token"])
            # Its refresh token is worthless too.
            assert_oauth_error(await refresh(http, client, revoked["refresh_token"]), 400, "invalid_grant")

            # Revoking the refresh token takes its access token with it.
            pair = await obtain_tokens(http, browser, client, tenant="acme")
            response = await http.post(f"{base}/o/revoke_token/", data={
                "token": pair["refresh_token"], "token_type_hint": "refresh_token", "client_id": client.client_id})
            assert response.status_code == 200
            await refused(pair["access_token"], sse=False)
            assert_oauth_error(await refresh(http, client, pair["refresh_token"]), 400, "invalid_grant")

            # Unknown client at the revocation endpoint.
            response = await http.post(f"{base}/o/revoke_token/", data={"token": good["access_token"], "client_id": "no-such-client"})
            assert response.status_code == 401 and response.json()["error"] == "invalid_client", response.text
            assert (await mcp_initialize(http, base, good["access_token"])).status_code == 200

        # The person who approved leaves the tenant, or is deactivated: their grants stop working.
        async with httpx.AsyncClient(timeout=10) as http, await signed_in(base, leaving) as browser:
            first = await obtain_tokens(http, browser, client, tenant="acme")
            second = await obtain_tokens(http, browser, client, tenant="acme")
            assert (await mcp_initialize(http, base, first["access_token"])).status_code == 200
            Membership.all_tenants.filter(user=leaving).delete()
            # Leaving revokes the person's grants in the tenant (tenants/lifecycle.py): being added
            # back does not bring them back to life.
            assert "revoked" in await refused(first["access_token"])
            tenant_services.membership_set(tenant=acme.tenant, user=leaving, role="member")
            await refused(second["access_token"])
            assert_oauth_error(await refresh(http, client, second["refresh_token"]), 400, "invalid_grant")
            third = await obtain_tokens(http, browser, client, tenant="acme")
            assert (await mcp_initialize(http, base, third["access_token"])).status_code == 200
            # Checked at every use too: a membership gone without the signal (a bulk delete in the
            # database) or a deactivated person.
            Membership.all_tenants.filter(user=leaving)._raw_delete(Membership.all_tenants.db)
            assert "no longer a member" in await refused(third["access_token"])
            tenant_services.membership_set(tenant=acme.tenant, user=leaving, role="member")
            assert (await mcp_initialize(http, base, third["access_token"])).status_code == 200
            type(leaving).objects.filter(pk=leaving.pk).update(is_active=False)
            await refused(third["access_token"])

    run_with_orm(main, timeout=45)


def test_refresh_rotates_and_reuse_revokes_the_family(acme, oauth_server):
    base = oauth_server.url
    can_sign_in(acme)

    async def main():
        async with httpx.AsyncClient(timeout=10) as http, await signed_in(base, acme) as browser:
            client, other = await register(http, base), await register(http, base)
            first = await obtain_tokens(http, browser, client, tenant="acme")

            response = await refresh(http, client, first["refresh_token"])
            assert response.status_code == 200, response.text
            second = response.json()
            assert second["access_token"] != first["access_token"] and second["refresh_token"] != first["refresh_token"]
            assert second["scope"].split() == [*READ_SCOPES, "tenant:acme"]  # the tenant travels with the grant
            assert access_token_row(second["access_token"]).resource == [f"{base}/mcp"]  # and so does the audience
            assert refresh_token_row(second["refresh_token"]).token_family == refresh_token_row(first["refresh_token"]).token_family
            async with sdk_session(base, "http", second["access_token"]) as s:
                assert await s.tool_names() == READ_TOOLS
            # Rotation retired the first pair.
            assert (await mcp_initialize(http, base, first["access_token"])).status_code == 401

            # A refresh cannot widen the grant, nor be used by another client (neither revokes anything).
            assert_oauth_error(await token_request(http, base, grant_type="refresh_token", refresh_token=second["refresh_token"],
                                                   client_id=client.client_id, scope="integrations:write tenant:acme"), 400, "invalid_scope")
            assert_oauth_error(await refresh(http, other, second["refresh_token"]), 400, "invalid_grant")
            assert_oauth_error(await token_request(http, base, grant_type="refresh_token", refresh_token=second["refresh_token"],
                                                   client_id=client.client_id, resource="http://other.example/mcp"), 400, "invalid_target")
            assert (await mcp_initialize(http, base, second["access_token"])).status_code == 200

            # Replaying the retired refresh token: refused, and (reuse protection) the whole family
            # is revoked, so whoever holds the current pair is cut off too.
            assert_oauth_error(await refresh(http, client, first["refresh_token"]), 400, "invalid_grant")
            assert (await mcp_initialize(http, base, second["access_token"])).status_code == 401
            assert_oauth_error(await refresh(http, client, second["refresh_token"]), 400, "invalid_grant")
            family = refresh_token_row(first["refresh_token"]).token_family
            assert not RefreshToken.objects.filter(token_family=family, revoked__isnull=True).exists()
            assert granted().filter(application__client_id=client.client_id).count() == 0

            # A fresh grant is unaffected by the other family's fate.
            third = await obtain_tokens(http, browser, client, tenant="acme")
            assert (await mcp_initialize(http, base, third["access_token"])).status_code == 200
            assert_oauth_error(await refresh(http, client, "not-a-refresh-token"), 400, "invalid_grant")

    run_with_orm(main, timeout=45)


def test_registration_refuses_malformed_metadata(oauth_server):
    base = oauth_server.url
    bad = [
        (b"not json", "invalid_client_metadata"),
        (b"[1, 2]", "invalid_client_metadata"),
        (registration(redirect_uris="http://127.0.0.1:8765/callback"), "invalid_client_metadata"),
        (registration(redirect_uris=[5]), None),
        (registration(redirect_uris=[]), "invalid_client_metadata"),
        (registration(redirect_uris=["http://client.example/callback"]), "invalid_redirect_uri"),
        (registration(redirect_uris=["http://127.0.0.1.client.example/callback"]), "invalid_redirect_uri"),
        (registration(redirect_uris=["http://localhost.client.example/callback"]), "invalid_redirect_uri"),
        (registration(redirect_uris=["https:///callback"]), "invalid_redirect_uri"),
        (registration(redirect_uris=["ftp://127.0.0.1/callback"]), "invalid_redirect_uri"),
        (registration(redirect_uris=["javascript:alert(1)"]), "invalid_redirect_uri"),
        (registration(redirect_uris=["https://client.example/cb#fragment"]), "invalid_redirect_uri"),
        (registration(redirect_uris=["http://[::1/callback"]), "invalid_redirect_uri"),
        (registration(redirect_uris=["/relative/callback"]), "invalid_redirect_uri"),
        (registration(grant_types="authorization_code"), "invalid_client_metadata"),
        (registration(grant_types=["refresh_token"]), "invalid_client_metadata"),
        (registration(grant_types=["authorization_code", "client_credentials"]), "invalid_client_metadata"),
        (registration(grant_types=["urn:nope"]), "invalid_client_metadata"),
        (registration(token_endpoint_auth_method="private_key_jwt"), "invalid_client_metadata"),
    ]
    good = [
        registration(),
        registration(redirect_uris=["https://client.example/callback"]),
        registration(redirect_uris=["http://localhost:33418/callback", "http://[::1]:33418/callback"]),
    ]

    async def main():
        async with httpx.AsyncClient(timeout=10) as http:
            for body, error in bad:
                kwargs = {"content": body, "headers": {"Content-Type": "application/json"}} if isinstance(body, bytes) else {"json": body}
                response = await http.post(f"{base}/o/register/", **kwargs)
                assert response.status_code == 400, (body, response.status_code, response.text[:300])
                got = response.json()["error"]
                assert got == error if error else got in ("invalid_client_metadata", "invalid_redirect_uri"), (body, got)
            assert Application.objects.count() == 0
            registered = []
            for body in good:
                response = await http.post(f"{base}/o/register/", json=body)
                assert response.status_code == 201, (body, response.text)
                data = response.json()
                assert data["client_id"] and data["redirect_uris"] == body["redirect_uris"] and "client_secret" not in data, data
                assert data["token_endpoint_auth_method"] == "none"
                registered.append(data)
            apps = Application.objects.all()
            assert len(apps) == len(good)
            assert {(a.client_type, a.authorization_grant_type, a.name) for a in apps} == {("public", "authorization-code", "Test MCP client")}

            # RFC 7592 updates obey the same redirect URI rules.
            data = registered[0]
            manage, auth = data["registration_client_uri"], bearer(data["registration_access_token"])
            assert manage == f"{base}/o/register/{data['client_id']}/"
            assert (await http.get(manage, headers=auth)).json()["redirect_uris"] == data["redirect_uris"]
            for uris in (["http://client.example/callback"], ["http://127.0.0.1.client.example/callback"], ["http://[::1/cb"]):
                response = await http.put(manage, headers=auth, json=registration(redirect_uris=uris))
                assert response.status_code == 400 and response.json()["error"] == "invalid_redirect_uri", (uris, response.text)
            response = await http.put(manage, json=registration(redirect_uris=["http://client.example/callback"]))
            assert response.status_code == 401 and response.json()["error"] == "invalid_token", response.text
            response = await http.put(manage, headers=bearer("not-the-token"), json=registration(redirect_uris=["http://client.example/callback"]))
            assert response.status_code == 401, response.text
            assert Application.objects.get(client_id=data["client_id"]).redirect_uris == " ".join(data["redirect_uris"])
            response = await http.put(manage, headers=auth, json=registration(redirect_uris=["https://client.example/new"]))
            assert response.status_code == 200 and response.json()["redirect_uris"] == ["https://client.example/new"], response.text
            # The registration access token is no key to the MCP endpoint or the API.
            for token in (data["registration_access_token"], response.json()["registration_access_token"]):
                assert (await mcp_initialize(http, base, token)).status_code == 401
                assert (await http.get(f"{base}/api/integrations/", headers=bearer(token))).status_code == 401

    run_with_orm(main, timeout=30)


def test_registration_is_rate_limited(live_daphne):
    window = 3600
    # The limit counts per window of the clock (an hour): a run that crosses the hour starts a
    # new count halfway. Near the end of a window, wait for the next one.
    left = window - timezone.now().timestamp() % window
    if left < 60:
        time.sleep(left + 1)
    # Redis (when configured) is shared with other runs: start this window's count from zero.
    bucket = int(timezone.now().timestamp() // window)
    for b in (bucket, bucket + 1):
        cache.delete(f"ratelimit:oauth-register:127.0.0.1:{b}")
    server = start_server(live_daphne, BACKFLOW_OAUTH_REGISTRATION_RATE_LIMIT=f"3,{window}")

    async def main():
        async with httpx.AsyncClient(timeout=10) as http:
            statuses = [(await http.post(f"{server.url}/o/register/", json=registration())).status_code for _ in range(3)]
            assert statuses == [201, 201, 201], statuses
            for body in (registration(), {"garbage": True}):
                response = await http.post(f"{server.url}/o/register/", json=body)
                assert response.status_code == 429, (response.status_code, response.text)
                assert 0 < int(response.headers["retry-after"]) <= window + 1
                assert response.json()["error"] and response.json()["error_description"]
        assert Application.objects.count() == 3

    run_with_orm(main, timeout=30)
