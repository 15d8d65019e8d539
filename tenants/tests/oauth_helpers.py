"""Helpers for the OAuth 2.1 tests (test_oauth*.py); no tests here.

Everything talks to a real daphne on 127.0.0.1 started by `live_daphne`; nothing is mocked. A
`Browser` is a person: it signs in at /accounts/login/ and answers the consent page like a form
post would (hidden fields and CSRF token read from the page). The raw helpers speak to DOT's
endpoints the way a client would (form-encoded token requests, JSON registration).
"""

import base64
import hashlib
import secrets
import time
from dataclasses import dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urlsplit

import httpx
import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connection, connections

from tenants import services as tenant_services
from tests.live import Daphne

READ_SCOPES = ("integrations:read", "routes:read")
READ_SCOPE = " ".join(READ_SCOPES)
READ_TOOLS = {"get_integration", "list_integrations", "list_secrets", "get_route", "list_routes", "list_route_invocations"}
ACCEPT_MCP = "application/json, text/event-stream"
# Ordinary servers must never hit the registration limit: a window of its own (3601 s), so their
# registrations never count against the rate-limit test's 3600 s window in a shared Redis.
UNLIMITED_REGISTRATIONS = "100000,3601"


SERVER_ENV = {"BACKFLOW_OAUTH_REGISTRATION_RATE_LIMIT": UNLIMITED_REGISTRATIONS, "BACKFLOW_MCP_RATE_LIMIT": "100000,60"}
_shared = {}


def run_with_orm(main, timeout=45):
    """Run `async def main()` (see mcp_app.tests.helpers.run) with the test's own database reads
    and writes allowed inside the event loop. Django gives the loop's context a connection of its
    own: closed at the end, or Postgres would refuse to drop the test database."""
    from mcp_app.tests.test_remote_support import orm_in_loop, run

    async def main_then_close():
        try:
            return await main()
        finally:
            connections.close_all()

    with orm_in_loop():
        return run(main_then_close, timeout=timeout)


def start_server(live_daphne, **env):
    """A daphne of this test alone (for settings of its own)."""
    return live_daphne(**{**SERVER_ENV, **env})


def _stop_before_the_database_goes(server, django_db_blocker):
    """Stop the server, then wait for its database sessions to end: Postgres refuses to drop the
    test database while the dead process's sessions are still being closed."""
    server.stop()
    with django_db_blocker.unblock():
        if connection.vendor != "postgresql":
            return
        deadline = time.monotonic() + 10
        with connection.cursor() as cursor:
            while time.monotonic() < deadline:
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
                if cursor.fetchone()[0] == 0:
                    break
                time.sleep(0.05)


@pytest.fixture(scope="session", name="oauth_daphne")
def oauth_daphne_fixture(request, django_db_setup, django_db_blocker):
    """One daphne for every OAuth test of the session (starting one takes seconds); it reads the
    test database afresh on every request, so each test's own rows are what it sees. Stopped
    before the test database is destroyed."""
    server = _shared.get("server")
    if server is None or server.process.poll() is not None:
        server = _shared["server"] = Daphne(**SERVER_ENV)
        request.addfinalizer(lambda: _stop_before_the_database_goes(server, django_db_blocker))
    return server


@pytest.fixture(name="oauth_server")
def oauth_server_fixture(oauth_daphne, transactional_db):
    """The shared daphne, for a test whose rows are committed (visible to the server). Test
    modules import both fixture functions (oauth_daphne_fixture, oauth_server_fixture)."""
    assert oauth_daphne.process.poll() is None, "the shared daphne died"
    return oauth_daphne




def server_password(user, raw):
    """The server process checks passwords with the production hashers (the tests' MD5 one is not
    among them): store `raw` with PBKDF2 and few rounds (the server upgrades it at sign-in)."""
    hasher = PBKDF2PasswordHasher()
    get_user_model().objects.filter(pk=user.pk).update(password=hasher.encode(raw, hasher.salt(), iterations=1000))


def can_sign_in(*contexts):
    """Let the tenants' owners sign in on the server with their "pw-<slug><slug>" password."""
    for ctx in contexts:
        server_password(ctx.owner, "pw-" + ctx.tenant.slug * 2)


def member_of(username, *tenant_contexts, role="member"):
    """A user in every given tenant who can sign in on the server with "pw-<username>"."""
    user = get_user_model().objects.create_user(username=username)
    server_password(user, f"pw-{username}")
    for ctx in tenant_contexts:
        tenant_services.membership_set(tenant=ctx.tenant, user=user, role=role)
    return user


def pkce():
    """(verifier, S256 challenge)."""
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")
    return verifier, challenge


def query_of(url):
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query, keep_blank_values=True).items()}


ALL_SCOPES_PINNED = ("integrations:read integrations:write routes:read routes:write workflows:read workflows:write "
                     "workflows:run apps:read apps:write entities:read entities:write mcp:use")


def sent_a_credential(request):
    """Whether the refused request carried a bearer credential (header, or ?token= on /mcp/sse)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    query_token = request.url.path.rstrip("/").endswith("/mcp/sse") and request.url.params.get("token")
    return bool((scheme.lower() == "bearer" and value.strip()) or query_token)


def www_authenticate_ok(response, base):
    """The RFC 6750 challenge: the metadata URL and the scopes always; `invalid_token` exactly when
    a credential was sent and refused."""
    error = ('error="invalid_token", error_description="The access token is invalid, expired or revoked", '
             if sent_a_credential(response.request) else "")
    expected = (f'Bearer realm="backflow", {error}resource_metadata="{base}/.well-known/oauth-protected-resource/mcp", '
                f'scope="{ALL_SCOPES_PINNED}"')
    return response.headers.get("www-authenticate", "") == expected


def checksum(raw):
    return hashlib.sha256(raw.encode()).hexdigest()


def access_token_row(raw):
    from oauth2_provider.models import AccessToken

    return AccessToken.objects.filter(token_checksum=checksum(raw)).first()


def refresh_token_row(raw):
    from oauth2_provider.models import RefreshToken

    return RefreshToken.objects.filter(token_checksum=checksum(raw)).first()


# -- the consent page ------------------------------------------------------------------------

class ConsentForm(HTMLParser):
    """What a person sees on /o/authorize/: hidden fields, tenant choices, scope checkboxes."""

    def __init__(self, html):
        super().__init__()
        self.hidden, self.tenants, self.scopes, self.buttons, self._chunks = {}, [], [], [], []
        self._select = None
        self.has_form = False
        self.feed(html)
        self.text = " ".join(" ".join(self._chunks).split())

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "form" and a.get("id") == "authorizationForm":
            self.has_form = True
        elif tag == "input" and a.get("type") == "hidden":
            self.hidden[a["name"]] = a.get("value") or ""
        elif tag == "input" and a.get("type") == "checkbox" and a.get("name") == "scopes":
            self.scopes.append(a["value"])
        elif tag == "select":
            self._select = a.get("name")
        elif tag == "option" and self._select == "tenant":
            self.tenants.append(a["value"])
        elif tag == "button":
            self.buttons.append(a)

    def handle_endtag(self, tag):
        if tag == "select":
            self._select = None

    def handle_data(self, data):
        self._chunks.append(data)


def csrf_from(html):
    parser = ConsentForm(html)
    return parser.hidden["csrfmiddlewaretoken"]


class Browser:
    """A signed-in person's browser (cookies kept, redirects not followed)."""

    def __init__(self, base):
        self.base = base
        self.http = httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10.0), follow_redirects=False)

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        await self.http.aclose()

    async def login(self, username, password):
        page = await self.http.get("/accounts/login/")
        assert page.status_code == 200, page.text
        response = await self.http.post("/accounts/login/", data={
            "username": username, "password": password, "csrfmiddlewaretoken": csrf_from(page.text), "next": "/",
        })
        assert response.status_code == 302, (response.status_code, response.text[:500])
        return self

    async def open(self, authorize_url):
        """GET the authorization URL; returns (response, ConsentForm)."""
        response = await self.http.get(authorize_url)
        assert response.status_code < 500, response.text[:2000]
        return response, ConsentForm(response.text)

    async def decide(self, authorize_url, form, *, tenant=None, scopes=None, allow=True):
        """POST the consent form: `scopes` None keeps every box ticked."""
        data = dict(form.hidden)
        if tenant is not None:
            data["tenant"] = tenant
        data["scopes"] = list(form.scopes if scopes is None else scopes)
        if allow:
            data["allow"] = "Authorize"
        response = await self.http.post(authorize_url, data=data)
        assert response.status_code < 500, response.text[:2000]
        return response


async def signed_in(base, user_or_ctx):
    """A Browser signed in as a TenantContext's owner or as a `member_of` user."""
    user = getattr(user_or_ctx, "owner", user_or_ctx)
    password = "pw-" + user_or_ctx.tenant.slug * 2 if hasattr(user_or_ctx, "owner") else f"pw-{user.username}"
    browser = Browser(base)
    await browser.login(user.username, password)
    return browser


# -- raw client side -------------------------------------------------------------------------

@dataclass
class OAuthClient:
    base: str
    client_id: str
    redirect_uri: str
    registration: dict = field(default_factory=dict)

    @property
    def resource(self):
        return f"{self.base}/mcp"

    def authorize_url(self, *, challenge, scope=READ_SCOPE, state="st-1", resource="default", method="S256", **extra):
        params = {"response_type": "code", "client_id": self.client_id, "redirect_uri": self.redirect_uri,
                  "state": state, "scope": scope}
        if challenge is not None:
            params["code_challenge"] = challenge
        if method is not None:
            params["code_challenge_method"] = method
        if resource == "default":
            resource = self.resource
        if resource is not None:
            params["resource"] = resource
        params.update(extra)
        return f"{self.base}/o/authorize/?{urlencode(params)}"


def registration(port=8765, **extra):
    return {"client_name": "Test MCP client", "redirect_uris": [f"http://127.0.0.1:{port}/callback"],
            "token_endpoint_auth_method": "none", "grant_types": ["authorization_code", "refresh_token"],
            "response_types": ["code"], **extra}


async def register(http, base, **extra):
    response = await http.post(f"{base}/o/register/", json=registration(**extra))
    assert response.status_code == 201, (response.status_code, response.text)
    data = response.json()
    return OAuthClient(base=base, client_id=data["client_id"], redirect_uri=data["redirect_uris"][0], registration=data)


async def token_request(http, base, **data):
    return await http.post(f"{base}/o/token/", data={k: v for k, v in data.items() if v is not None})


async def approve(browser, client, *, tenant, grant=None, scope=READ_SCOPE, challenge, resource="default", state="st-1"):
    """Consent as the browser's person; returns the redirect's query (code, state, iss)."""
    url = client.authorize_url(challenge=challenge, scope=scope, resource=resource, state=state)
    response, form = await browser.open(url)
    assert response.status_code == 200 and form.has_form, (response.status_code, form.text)
    response = await browser.decide(url, form, tenant=tenant, scopes=grant)
    assert response.status_code == 302, (response.status_code, ConsentForm(response.text).text)
    location = response.headers["location"]
    assert location.startswith(client.redirect_uri + "?"), location
    return query_of(location)


async def obtain_tokens(http, browser, client, *, tenant, grant=None, scope=READ_SCOPE, resource="default"):
    """The whole code flow by hand; returns the token response JSON."""
    verifier, challenge = pkce()
    answer = await approve(browser, client, tenant=tenant, grant=grant, scope=scope, challenge=challenge, resource=resource)
    assert "code" in answer, answer
    response = await token_request(
        http, client.base, grant_type="authorization_code", code=answer["code"], redirect_uri=client.redirect_uri,
        client_id=client.client_id, code_verifier=verifier, resource=client.resource if resource == "default" else resource,
    )
    assert response.status_code == 200, (response.status_code, response.text)
    return response.json()


async def refresh(http, client, refresh_token):
    return await token_request(http, client.base, grant_type="refresh_token", refresh_token=refresh_token,
                               client_id=client.client_id)


async def mcp_initialize(http, base, access_token, headers=None):
    """One Streamable HTTP message (initialize) with the token; the response."""
    from mcp_app.tests.test_remote_support import initialize

    return await http.post(f"{base}/mcp", json=initialize(), headers={
        "Authorization": f"Bearer {access_token}", "Accept": ACCEPT_MCP, **(headers or {})})
