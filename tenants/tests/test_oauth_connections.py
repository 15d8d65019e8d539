"""Who sees and revokes OAuth connections: the tenant's owners and admins over REST
(/api/oauth-authorizations/), each person on /o/authorized_tokens/, operators in the Django admin.
A revocation takes effect on the very next MCP message."""

import re

import httpx
from django.contrib.auth import get_user_model
from django.test import Client
from oauth2_provider.models import AccessToken, Application

from mcp_app.tests.test_remote_support import (
    bearer,
    handshake,
    post_json,
    raw_sse,
    run,
)
from tenants.models import AuditEvent
from tenants.tests.oauth_helpers import (  # noqa: F401  (fixtures)
    READ_SCOPES,
    ConsentForm,
    can_sign_in,
    mcp_initialize,
    member_of,
    oauth_daphne_fixture,
    oauth_server_fixture,
    obtain_tokens,
    refresh,
    register,
    run_with_orm,
    signed_in,
    www_authenticate_ok,
)

DELETE_LINK = re.compile(r'href="(/o/authorized_tokens/(\d+)/delete/)"')


async def server_jwt(http, username, password, tenant):
    response = await http.post("/api/auth/token", json={"username": username, "password": password, "tenant": tenant})
    assert response.status_code == 200, response.text
    return response.json()["access"]


def test_tenants_list_and_revoke_their_connections(acme, globex, oauth_server):
    base = oauth_server.url
    can_sign_in(acme, globex)
    member_of("plain-member", acme)
    got = {}

    async def main():
        async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10, read=30)) as http:
            client = await register(http, base)
            async with await signed_in(base, acme) as browser:
                mine = await obtain_tokens(http, browser, client, tenant="acme")
            async with await signed_in(base, globex) as browser:
                theirs = await obtain_tokens(http, browser, client, tenant="globex", grant=["integrations:read"])
            acme_jwt = await server_jwt(http, "acme-owner", "pw-acmeacme", "acme")
            globex_jwt = await server_jwt(http, "globex-owner", "pw-globexglobex", "globex")
            member_jwt = await server_jwt(http, "plain-member", "pw-plain-member", "acme")

            response = await http.get("/api/oauth-authorizations/", headers=bearer(acme_jwt))
            assert response.status_code == 200, response.text
            [connection] = response.json()
            assert connection["application"] == "Test MCP client" and connection["clientId"] == client.client_id
            assert connection["user"] == "acme-owner" and connection["scopes"] == list(READ_SCOPES)  # no tenant scope
            assert connection["expires"] and connection["createdAt"]
            response = await http.get("/api/oauth-authorizations/", headers=bearer(globex_jwt))
            [other] = response.json()
            assert other["user"] == "globex-owner" and other["scopes"] == ["integrations:read"] and other["id"] != connection["id"]

            # Only owners and admins with a JWT: an API key (even a full one) or a plain member is refused.
            for credential in (acme.key, member_jwt):
                response = await http.get("/api/oauth-authorizations/", headers=bearer(credential))
                assert response.status_code == 403, (response.status_code, response.text)
                response = await http.delete(f"/api/oauth-authorizations/{connection['id']}/", headers=bearer(credential))
                assert response.status_code == 403, response.text
            # Another tenant's connection does not exist for you.
            response = await http.delete(f"/api/oauth-authorizations/{connection['id']}/", headers=bearer(globex_jwt))
            assert response.status_code == 404, response.text
            response = await http.delete("/api/oauth-authorizations/999999/", headers=bearer(acme_jwt))
            assert response.status_code == 404

            # Revoked while an SSE session is open: the next message is refused, the refresh token too.
            async with raw_sse(http, "/mcp/sse", headers=bearer(mine["access_token"])) as stream:
                await handshake(http, stream, mine["access_token"])
                response = await http.delete(f"/api/oauth-authorizations/{connection['id']}/", headers=bearer(acme_jwt))
                assert response.status_code == 204, response.text
                response = await post_json(http, stream.endpoint, {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}, mine["access_token"])
                assert response.status_code == 401 and www_authenticate_ok(response, base), response.text
            response = await mcp_initialize(http, base, mine["access_token"])
            assert response.status_code == 401 and www_authenticate_ok(response, base)
            response = await refresh(http, client, mine["refresh_token"])
            assert response.status_code == 400 and response.json()["error"] == "invalid_grant", response.text
            assert (await http.get("/api/oauth-authorizations/", headers=bearer(acme_jwt))).json() == []
            # Globex's connection, through the same client, is untouched.
            assert (await mcp_initialize(http, base, theirs["access_token"])).status_code == 200
            got.update(theirs=theirs, client=client)

    run(main, timeout=45)

    [event] = AuditEvent.objects.for_tenant(acme.tenant).filter(action="oauth.revoke")
    assert event.principal == "user:acme-owner" and event.object_id == got["client"].client_id, event.summary
    assert not AuditEvent.objects.for_tenant(globex.tenant).filter(action="oauth.revoke").exists()


def test_people_revoke_on_their_page_and_operators_in_the_admin(acme, globex, oauth_server):
    base = oauth_server.url
    can_sign_in(acme, globex)
    got = {}

    async def main():
        async with httpx.AsyncClient(base_url=base, timeout=10) as http:
            client = await register(http, base)
            async with await signed_in(base, globex) as browser:
                got["globex"] = await obtain_tokens(http, browser, client, tenant="globex")
            async with await signed_in(base, acme) as browser:
                first = await obtain_tokens(http, browser, client, tenant="acme")
                second = await obtain_tokens(http, browser, client, tenant="acme", grant=["routes:read"])

                page = await browser.http.get("/o/authorized_tokens/")
                assert page.status_code == 200, page.text[:500]
                text = ConsentForm(page.text).text
                assert text.count("Test MCP client") == 2 and "routes:read tenant:acme" in text, text
                links = DELETE_LINK.findall(page.text)
                assert len(links) == 2, links
                mine = {pk for _, pk in links}
                globex_pk = str(AccessToken.objects.get(user__username="globex-owner").pk)
                assert globex_pk not in mine  # another person's grants are not on this page...
                response = await browser.http.post(f"/o/authorized_tokens/{globex_pk}/delete/", data={
                    "csrfmiddlewaretoken": ConsentForm(page.text).hidden["csrfmiddlewaretoken"]})
                assert response.status_code == 404  # ...nor theirs to revoke

                second_pk = str(AccessToken.objects.get(scope="routes:read tenant:acme").pk)
                confirm = await browser.http.get(f"/o/authorized_tokens/{second_pk}/delete/")
                assert confirm.status_code == 200 and "Test MCP client will no longer reach Backflow" in ConsentForm(confirm.text).text
                response = await browser.http.post(f"/o/authorized_tokens/{second_pk}/delete/", data={
                    "csrfmiddlewaretoken": ConsentForm(confirm.text).hidden["csrfmiddlewaretoken"]})
                assert response.status_code == 302 and response.headers["location"] == "/o/authorized_tokens/"
                assert (await mcp_initialize(http, base, second["access_token"])).status_code == 401
                assert (await refresh(http, client, second["refresh_token"])).json()["error"] == "invalid_grant"
                assert (await mcp_initialize(http, base, first["access_token"])).status_code == 200
                page = await browser.http.get("/o/authorized_tokens/")
                assert [pk for _, pk in DELETE_LINK.findall(page.text)] == [str(AccessToken.objects.get(scope="integrations:read routes:read tenant:acme").pk)]
                got.update(first=first, client=client)

    run_with_orm(main, timeout=45)

    # Operators: the applications and their tokens in the admin, and the revoke actions there.
    operator = get_user_model().objects.create_superuser("operator", "op@example.com", "pw-operator")
    admin = Client()
    admin.force_login(operator)
    application = Application.objects.get(client_id=got["client"].client_id)
    listing = admin.get("/admin/oauth2_provider/application/")
    assert listing.status_code == 200 and "Test MCP client" in listing.content.decode()
    assert admin.get(f"/admin/oauth2_provider/application/{application.pk}/change/").status_code == 200
    tokens = admin.get(f"/admin/oauth2_provider/accesstoken/?application__id__exact={application.pk}")
    page = tokens.content.decode()
    assert tokens.status_code == 200 and "acme-owner" in page and "globex-owner" in page
    assert got["first"]["access_token"] not in page and got["globex"]["access_token"] not in page  # never shown
    assert admin.get("/admin/oauth2_provider/refreshtoken/").status_code == 200
    assert admin.get("/admin/oauth2_provider/grant/").status_code == 200
    selected = [str(pk) for pk in AccessToken.objects.filter(application=application, user__isnull=False).values_list("pk", flat=True)]
    assert len(selected) == 2
    response = admin.post("/admin/oauth2_provider/accesstoken/", {"action": "revoke_tokens", "_selected_action": selected})
    assert response.status_code == 302, response.content[:500]
    assert not AccessToken.objects.filter(pk__in=selected).exists()

    async def after():
        async with httpx.AsyncClient(timeout=10) as http:
            for tokens in (got["first"], got["globex"]):
                response = await mcp_initialize(http, base, tokens["access_token"])
                assert response.status_code == 401 and www_authenticate_ok(response, base)
                response = await refresh(http, got["client"], tokens["refresh_token"])
                assert response.status_code == 400 and response.json()["error"] == "invalid_grant", response.text

    run(after, timeout=20)
