"""Edge hardening (issue 14, items 10 and 12): four holes an attacker found, each test written as
the attacker's request and asserting what a user of the platform expects.

1. The egress guard let through IPv6 spellings of private IPv4 addresses (IPv4-compatible, NAT64,
   6to4, Teredo); numeric host spellings (0x7f.1, 2130706433, 127.1) must be judged by the address
   the operating system connects to. The tripwire backend inside the guard fails a test the moment
   a refused target would reach the network; nothing here leaves loopback or looks a name up in DNS.
2. `Origin: null` was accepted by the raw ASGI apps (/mcp, /mcp/sse, /mcp/messages, /t/).
3. App pages and the OAuth consent page sent no Content-Security-Policy.
4. Dynamic client registration accepted a redirect URI hidden behind a space inside one element,
   and clients identified by a metadata document URL (CIMD) skipped the redirect URI rules.
"""

import asyncio
import base64
import hashlib
import json
from pathlib import Path
from urllib.parse import urlencode, urlsplit

import httpx
import pytest
from django.core.cache import cache
from django.test import Client
from oauth2_provider.cimd import SafeMetadataFetcher
from oauth2_provider.models import Application

from backflow.csp import HEADER as CSP
from backflow.egress import EgressPolicy, EgressRefused, guarded_client
from entities_app import services as entity_services
from entities_app.tests.test_browser import collected_static  # noqa: F401  (fixture)
from integrations_app.tests.test_runtime_helpers import (  # noqa: F401  (fixtures)
    Tripwire,
    inprocess,
    make_integration,
    make_route,
    tripwire,
)

# -- 1. the egress guard ----------------------------------------------------------------------------

# IPv6 addresses whose packets end up at a loopback, private or link-local IPv4 address.
EMBEDDED_PRIVATE = [
    "::127.0.0.1",                          # IPv4-compatible (RFC 4291, deprecated)
    "::169.254.169.254",                    # ... the cloud metadata address
    "::ffff:0:7f00:1",                      # SIIT IPv4-translated (RFC 2765)
    "64:ff9b::7f00:1",                      # NAT64 well-known prefix (RFC 6052) -> 127.0.0.1
    "64:ff9b::a9fe:a9fe",                   # NAT64 -> 169.254.169.254
    "64:ff9b::a00:1",                       # NAT64 -> 10.0.0.1
    "64:ff9b:1::7f00:1",                    # NAT64 local-use prefix (RFC 8215)
    "64:ff9b:1:7f00:1::",                   # ... another of its formats
    "2002:7f00:1::",                        # 6to4 (RFC 3056) of 127.0.0.1
    "2002:a9fe:a9fe::1",                    # 6to4 of 169.254.169.254
    "2002:c0a8:101::1",                     # 6to4 of 192.168.1.1
    "2001:0:808:808::80ff:fffe",            # Teredo (RFC 4380): client 127.0.0.1 behind public server 8.8.8.8
    "2001:0:a00:1::f7f7:f7f7",              # Teredo: private server 10.0.0.1
]
# Host spellings httpx passes on as names and getaddrinfo turns into 127.0.0.1 (inet_aton, no DNS).
NUMERIC_LOOPBACK = ["0x7f.1", "2130706433", "127.1", "0x7f000001", "017700000001", "0177.1"]


def fetch(url, policy, wire):
    async def main():
        async with guarded_client(policy=policy, inner_backend=wire, timeout=5) as client:
            return await client.get(url)

    return asyncio.run(main())


def resolve(policy, host, port=80):
    return asyncio.run(policy.resolve(host, port))


@pytest.mark.parametrize("address", EMBEDDED_PRIVATE)
def test_ipv6_spellings_of_private_ipv4_addresses_are_refused_by_the_guard(address):
    policy = EgressPolicy([])
    assert not policy.address_allowed(address)
    with pytest.raises(EgressRefused) as refused:
        resolve(policy, f"[{address}]")
    assert "Refused to call" in str(refused.value) and "BACKFLOW_EGRESS_ALLOW" in str(refused.value)


@pytest.mark.parametrize("address", EMBEDDED_PRIVATE)
def test_a_request_to_them_never_reaches_the_network(address, tripwire):
    with pytest.raises(EgressRefused):
        fetch(f"http://[{address}]:8080/latest/meta-data/", EgressPolicy([]), tripwire)
    assert tripwire.reached == []


@pytest.mark.parametrize("host", NUMERIC_LOOPBACK)
def test_numeric_host_spellings_are_judged_by_the_address_the_os_connects_to(host, tripwire):
    with pytest.raises(EgressRefused) as refused:
        resolve(EgressPolicy([]), host)
    assert "resolves to 127.0.0.1" in str(refused.value)
    with pytest.raises(EgressRefused):
        fetch(f"http://{host}:8080/admin", EgressPolicy([]), tripwire)
    assert tripwire.reached == []


def test_octal_dotted_quad_is_rejected_by_httpx_before_any_connection(tripwire):
    # httpx refuses leading-zero octets itself (the route runtime answers 502); the guard would
    # refuse the address too, were it ever asked.
    with pytest.raises(httpx.InvalidURL):
        fetch("http://0177.0.0.1/", EgressPolicy([]), tripwire)
    with pytest.raises(EgressRefused):
        resolve(EgressPolicy([]), "0177.0.0.1")
    assert tripwire.reached == []


def test_an_allowed_loopback_network_is_reached_at_the_resolved_address(upstream, tripwire):
    # The positive control: with 127.0.0.0/8 allowed, 0x7f.1 is 127.0.0.1, and the guard connects there.
    response = fetch(f"http://0x7f.1:{upstream.port}/ok", EgressPolicy(["127.0.0.0/8"]), tripwire)
    assert response.status_code == 200 and response.json()["path"] == "/ok"
    assert tripwire.reached == [("127.0.0.1", upstream.port)]


@pytest.mark.parametrize("address", [
    "2001:4860:4860::8888",                 # a public IPv6 address
    "2002:808:808::1",                      # 6to4 of the public 8.8.8.8
    "64:ff9b::808:808",                     # NAT64 of 8.8.8.8
    "::ffff:8.8.8.8",                       # IPv4-mapped 8.8.8.8
    "2001:0:808:808::f7f7:f7f7",            # Teredo: public server and client
    "8.8.8.8",
])
def test_public_addresses_are_still_allowed(address):
    # Policy level only: no traffic.
    policy = EgressPolicy([])
    assert policy.address_allowed(address)
    import ipaddress

    assert resolve(policy, f"[{address}]" if ":" in address else address) == [ipaddress.ip_address(address)]


def test_the_allow_list_keeps_its_meaning_for_embedded_addresses():
    # An entry allows the addresses it names, as written: allowing loopback's IPv4 network does not
    # open its IPv6 spellings (as for ::ffff:127.0.0.1 before), nor any other private network.
    loopback = EgressPolicy(["127.0.0.0/8"])
    assert loopback.address_allowed("127.0.0.1")
    for address in ("::127.0.0.1", "64:ff9b::7f00:1", "2002:7f00:1::", "::ffff:127.0.0.1", "64:ff9b::a00:1"):
        assert not loopback.address_allowed(address), address
    # Listing an IPv6 network allows it, including the local-use NAT64 prefix and 6to4.
    assert EgressPolicy(["64:ff9b:1::/48"]).address_allowed("64:ff9b:1::7f00:1")
    assert EgressPolicy(["2002::/16"]).address_allowed("2002:7f00:1::")
    assert EgressPolicy(["::127.0.0.1"]).address_allowed("::127.0.0.1")


# -- 2. Origin: null on the raw ASGI apps ----------------------------------------------------------


def asgi(requests):
    """Send (method, path, headers, body) requests to the platform's ASGI app in-process."""
    from backflow.asgi import application

    async def one(http, method, path, headers, body):
        try:  # the in-process transport waits for the whole answer: an opened SSE stream never ends
            return await asyncio.wait_for(http.request(method, path, headers=headers, content=body), 5)
        except TimeoutError:
            pytest.fail(f"{method} {path} was let through: it opened a stream instead of being answered")

    async def main():
        transport = httpx.ASGITransport(app=application, client=("127.0.0.1", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver", timeout=10) as http:
            return [await one(http, *request) for request in requests]

    return asyncio.run(main())


MCP_REQUESTS = [
    ("POST", "/mcp", json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})),
    ("GET", "/mcp/sse", None),
    ("POST", "/mcp/messages?sessionId=" + "0" * 32, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("origin", ["null", "NULL", " null", "file://", "http://[::1"])
def test_mcp_refuses_a_null_or_unparsable_origin(acme, origin):
    headers = {"Authorization": f"Bearer {acme.key}", "Content-Type": "application/json",
               "Accept": "application/json, text/event-stream", "Origin": origin}
    for (method, path, body), response in zip(MCP_REQUESTS, asgi([(m, p, headers, b) for m, p, b in MCP_REQUESTS])):
        assert response.status_code == 403, (path, response.status_code, response.text)
        assert response.json() == {"error": f"Origin {origin!r} is not allowed."}, path


@pytest.mark.django_db(transaction=True)
def test_mcp_still_hears_its_own_origin_and_clients_without_one():
    # Past the origin check, the next door is authentication: 401, not 403.
    for origin in ("http://testserver", "http://127.0.0.1:8000", None):
        headers = {"Content-Type": "application/json", **({"Origin": origin} if origin else {})}
        for (method, path, body), response in zip(MCP_REQUESTS, asgi([(m, p, headers, b) for m, p, b in MCP_REQUESTS])):
            assert response.status_code == 401, (origin, path, response.status_code, response.text)


@pytest.mark.django_db(transaction=True)
def test_tenant_route_refuses_a_null_origin(acme, upstream, inprocess):
    make_integration(acme, "up", upstream.url, [{"name": "data", "method": "get", "path": "/data"}])
    make_route(acme, "/report", [{"id": "get", "integration": "up", "action": "data", "params": {}}], requireAuth=False)

    refused = inprocess.call("GET", "/t/acme/report", headers={"Origin": "null"})
    assert refused.status_code == 403 and refused.json() == {"error": "Origin 'null' is not allowed."}
    refused = inprocess.call("POST", "/t/acme/report", headers={"Origin": "null"}, json={})
    assert refused.status_code == 403
    assert upstream.calls() == []  # the route never ran

    answered = inprocess.call("GET", "/t/acme/report")
    assert answered.status_code == 200 and answered.json()["path"] == "/data"
    assert inprocess.call("GET", "/t/acme/report", headers={"Origin": "http://testserver"}).status_code == 200


def test_mcp_over_daphne_refuses_a_null_origin(acme, live_daphne):
    from mcp_app.tests.test_remote_support import initialize

    server = live_daphne()
    headers = {"Authorization": f"Bearer {acme.key}", "Accept": "application/json, text/event-stream"}
    with httpx.Client(base_url=server.url, timeout=10) as http:
        refused = http.post("/mcp", json=initialize(), headers={**headers, "Origin": "null"})
        assert refused.status_code == 403 and refused.json() == {"error": "Origin 'null' is not allowed."}
        with http.stream("GET", "/mcp/sse", headers={**headers, "Origin": "null"}) as refused:
            assert refused.status_code == 403
        answered = http.post("/mcp", json=initialize(), headers={**headers, "Origin": server.url})
        assert answered.status_code == 200, answered.text


@pytest.mark.django_db
def test_django_pages_refuse_a_null_origin_on_unsafe_methods(acme):
    """Django's own views: CsrfViewMiddleware compares Origin with the site on every unsafe
    method, so a sandboxed page's form post (Origin: null) fails even with a valid token."""
    entity_services.collection_create(tenant=acme.tenant, actor=acme.actor, document={"name": "notes"})
    entity_services.app_create(tenant=acme.tenant, actor=acme.actor, document={"id": "notes", "name": "Notes", "pages": [
        {"path": "", "title": "Notes", "components": [{"type": "form", "binding": {"collection": "notes", "fields": ["text"]}}]}]})
    browser = Client(enforce_csrf_checks=True)
    browser.force_login(acme.owner)
    page = browser.get("/apps/acme/notes/")
    token = page.cookies["csrftoken"].value
    form = {"_component": "0", "text": "hello", "csrfmiddlewaretoken": token}
    refused = browser.post("/apps/acme/notes/", form, HTTP_ORIGIN="null")
    assert refused.status_code == 403
    accepted = browser.post("/apps/acme/notes/", form, HTTP_ORIGIN="http://testserver")
    assert accepted.status_code == 302, accepted.content[:300]


# -- 3. Content-Security-Policy --------------------------------------------------------------------


def directives(response):
    value = response[CSP]
    parsed = {}
    for part in value.split(";"):
        name, *sources = part.split()
        assert name not in parsed, f"{name} twice in {value}"
        parsed[name] = sources
    return parsed


def assert_strict(policy):
    assert policy["default-src"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"] and policy["base-uri"] == ["'none'"]
    assert "script-src" not in policy  # default-src 'none': no script at all
    assert not any("unsafe" in source for sources in policy.values() for source in sources), policy
    assert policy["style-src"] == ["'self'"]


NOTES_APP = {"id": "notes", "name": "Notes", "public": True, "pages": [
    {"path": "", "title": "Notes", "components": [
        {"type": "markdown", "props": {"text": "Hello ![logo](https://cdn.example/logo.png)"}},
        {"type": "table", "binding": {"collection": "notes", "fields": ["text"]}},
        {"type": "form", "binding": {"collection": "notes", "fields": ["text"]}},
    ]}]}


@pytest.mark.django_db
def test_app_pages_send_a_strict_content_security_policy(acme):
    entity_services.collection_create(tenant=acme.tenant, actor=acme.actor, document={"name": "notes"})
    entity_services.app_create(tenant=acme.tenant, actor=acme.actor, document=NOTES_APP)
    visitor = Client()
    for response in (visitor.get("/apps/acme/notes/"),):
        assert response.status_code == 200
        policy = directives(response)
        assert_strict(policy)
        assert policy["form-action"] == ["'self'"]
        assert policy["img-src"] == ["'self'", "data:", "https:"]  # markdown images from the web
        html = response.content.decode()
        assert "<script" not in html and " style=" not in html  # nothing inline the policy would block
    member = Client()
    member.force_login(acme.owner)
    invalid = member.post("/apps/acme/notes/", {"_component": "2", "text": ["a", "b"]})
    assert invalid.status_code in (302, 400)
    assert_strict(directives(invalid) if invalid.status_code == 400 else directives(member.get(invalid["location"])))


def pkce_challenge(verifier="v" * 64):
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).decode().rstrip("=")


def authorize_url(client_id, redirect_uri, **extra):
    params = {"response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri, "state": "st-1",
              "scope": "integrations:read", "code_challenge": pkce_challenge(), "code_challenge_method": "S256",
              "resource": "http://testserver/mcp", **extra}
    return "/o/authorize/?" + urlencode(params)


def dcr_application(redirect_uris, source=Application.RegistrationSource.DCR, client_id=None):
    return Application.objects.create(
        client_id=client_id or f"client-{abs(hash(redirect_uris)) % 10**8}", name="Test MCP client",
        client_type=Application.CLIENT_PUBLIC, authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=redirect_uris, registration_source=source,
    )


@pytest.mark.django_db
@pytest.mark.parametrize("redirect_uri, form_action", [
    ("http://127.0.0.1:8765/callback", ["'self'", "http://127.0.0.1:8765"]),
    ("http://localhost:33418/callback", ["'self'", "http://localhost:33418"]),
    ("https://client.example/oauth/callback", ["'self'", "https://client.example"]),
    ("http://[::1]:33418/callback", ["'self'", "http:"]),  # CSP cannot name an IPv6 literal
])
def test_the_consent_page_sends_a_strict_policy_that_lets_its_answer_reach_the_client(acme, redirect_uri, form_action):
    app = dcr_application(redirect_uri)
    browser = Client()
    browser.force_login(acme.owner)
    page = browser.get(authorize_url(app.client_id, redirect_uri))
    assert page.status_code == 200 and b'id="authorizationForm"' in page.content, page.content[:500]
    policy = directives(page)
    assert_strict(policy)
    assert policy["form-action"] == form_action
    html = page.content.decode()
    assert "<script" not in html and " style=" not in html
    # A refused request (unregistered redirect URI) shows an error page with the plain policy.
    error = browser.get(authorize_url(app.client_id, "https://evil.example/cb"))
    assert error.status_code == 400 and "location" not in error
    assert directives(error)["form-action"] == ["'self'"]


# -- 4. redirect URIs of dynamically registered clients ---------------------------------------------

HIDDEN = [
    "https://good.example/cb http://evil.example/cb",   # the attacker's: one element, two URIs once stored
    "https://good.example/cb\thttp://evil.example/cb",
    "https://good.example/cb\nhttps://evil.example/cb",
    "https://good.example/cb\u2028https://evil.example/cb",
    "https://good.example/cb\x00",
    " https://good.example/cb",
    "https://good.example/cb\\@evil.example/",
    "https://good.example@evil.example/cb",
    "https://good.example/cb#",
    "https://good.example:99999/cb",
    "https://go%6fd.example/cb",
    "https://bücher.example/cb",
    "http://evil.example/cb",
]


@pytest.fixture
def registrations(settings):
    settings.BACKFLOW_OAUTH_REGISTRATION_RATE_LIMIT = (100000, 3601)
    cache.clear()
    return Client()


def register(client, redirect_uris, path="/o/register/", method="post", **headers):
    body = {"client_name": "Test MCP client", "redirect_uris": redirect_uris, "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"]}
    return getattr(client, method)(path, json.dumps(body), content_type="application/json", **headers)


@pytest.mark.django_db
@pytest.mark.parametrize("uri", HIDDEN)
def test_registration_refuses_a_redirect_uri_that_is_not_exactly_one_valid_uri(registrations, uri):
    for uris in ([uri], ["https://good.example/cb", uri]):
        response = register(registrations, uris)
        assert response.status_code == 400, (uris, response.content)
        body = response.json()
        assert body["error"] == "invalid_redirect_uri", body
        assert body["error_description"].startswith(f"redirect_uris[{len(uris) - 1}] {uri!r}: "), body
    assert not Application.objects.exists()


@pytest.mark.django_db
def test_registration_refuses_redirect_uris_that_are_not_a_list_of_strings(registrations):
    for value in ("https://good.example/cb", {"uri": "https://good.example/cb"}):
        response = register(registrations, value)
        assert response.status_code == 400 and response.json()["error"] == "invalid_client_metadata", response.content
    response = register(registrations, ["https://good.example/cb", 5])
    assert response.status_code == 400 and response.json()["error"] == "invalid_redirect_uri"
    assert not Application.objects.exists()


@pytest.mark.django_db
def test_registration_and_update_keep_good_redirect_uris_exactly(registrations):
    good = ["https://good.example/cb", "http://127.0.0.1:8765/callback", "http://[::1]:8765/callback",
            "https://good.example/cb?tenant=acme&x=%20"]
    response = register(registrations, good)
    assert response.status_code == 201, response.content
    data = response.json()
    assert data["redirect_uris"] == good
    app = Application.objects.get(client_id=data["client_id"])
    assert app.redirect_uris.split() == good

    # RFC 7592: an update obeys the same rules, and a refused one changes nothing.
    manage = urlsplit(data["registration_client_uri"]).path
    auth = {"HTTP_AUTHORIZATION": f"Bearer {data['registration_access_token']}"}
    for uri in HIDDEN[:4]:
        refused = register(registrations, [uri], path=manage, method="put", **auth)
        assert refused.status_code == 400 and refused.json()["error"] == "invalid_redirect_uri", refused.content
    app.refresh_from_db()
    assert app.redirect_uris.split() == good
    updated = register(registrations, ["https://good.example/new"], path=manage, method="put", **auth)
    assert updated.status_code == 200 and updated.json()["redirect_uris"] == ["https://good.example/new"]


@pytest.mark.django_db
def test_a_client_registered_before_the_rules_cannot_use_its_hidden_redirect(acme):
    app = dcr_application("https://good.example/cb http://evil.example/cb")
    browser = Client()
    browser.force_login(acme.owner)
    for redirect_uri in ("http://evil.example/cb", "https://good.example/cb"):
        page = browser.get(authorize_url(app.client_id, redirect_uri))
        assert page.status_code == 400 and "location" not in page, page.content[:300]
        assert b"invalid_request" in page.content and b"register again" in page.content
    # A consent form posted without the page (tampered) is refused the same way.
    form = {"client_id": app.client_id, "redirect_uri": "http://evil.example/cb", "response_type": "code", "state": "s",
            "scope": "integrations:read", "code_challenge": pkce_challenge(), "code_challenge_method": "S256",
            "allow": "Authorize", "tenant": "acme", "scopes": "integrations:read"}
    response = browser.post("/o/authorize/", form)
    assert response.status_code == 400 and "location" not in response, response.content[:300]
    # An operator's own (manually created) application is the operator's to judge.
    manual = dcr_application("http://intranet.example/cb", source=Application.RegistrationSource.MANUAL, client_id="manual")
    assert browser.get(authorize_url(manual.client_id, "http://intranet.example/cb")).status_code == 200


@pytest.fixture
def metadata_documents(monkeypatch):
    """Client ID metadata documents served from this dict: DOT's fetcher never goes to the network
    (a URL not in the dict fails the test)."""
    documents = {}

    def fetch(self, client_id):
        if client_id not in documents:
            pytest.fail(f"the CIMD fetcher was asked for {client_id}")
        return documents[client_id], 300

    monkeypatch.setattr(SafeMetadataFetcher, "fetch", fetch)
    cache.clear()  # DOT's per-URL failure back-off lives in the cache
    return documents


def metadata(client_id, redirect_uris):
    return {"client_id": client_id, "client_name": "Metadata client", "redirect_uris": redirect_uris,
            "grant_types": ["authorization_code"], "token_endpoint_auth_method": "none"}


@pytest.mark.django_db
@pytest.mark.parametrize("redirect_uris, redirect_uri", [
    (["https://client.example/cb http://evil.example/cb"], "http://evil.example/cb"),
    (["http://evil.example/cb"], "http://evil.example/cb"),
    (["https://client.example/cb", "https://client.example/cb2\u00a0http://evil.example/cb"], "https://client.example/cb"),
    (["https://client.example/cb", "https://user@evil.example/cb"], "https://client.example/cb"),
])
def test_a_metadata_document_client_obeys_the_redirect_uri_rules(acme, metadata_documents, redirect_uris, redirect_uri):
    client_id = "https://client.example/oauth/client.json"
    metadata_documents[client_id] = metadata(client_id, redirect_uris)
    browser = Client()
    browser.force_login(acme.owner)
    page = browser.get(authorize_url(client_id, redirect_uri))
    assert page.status_code == 400 and "location" not in page, page.content[:300]
    assert b"Cannot connect" in page.content
    assert not Application.objects.filter(client_id=client_id).exists()


@pytest.mark.django_db
def test_a_good_metadata_document_client_gets_the_consent_page(acme, metadata_documents):
    client_id = "https://client.example/oauth/good.json"
    metadata_documents[client_id] = metadata(client_id, ["https://client.example/cb", "http://127.0.0.1:9000/cb"])
    browser = Client()
    browser.force_login(acme.owner)
    page = browser.get(authorize_url(client_id, "https://client.example/cb"))
    assert page.status_code == 200 and b'id="authorizationForm"' in page.content, page.content[:500]
    app = Application.objects.get(client_id=client_id)
    assert app.registration_source == Application.RegistrationSource.CIMD
    assert directives(page)["form-action"] == ["'self'", "https://client.example"]


# -- the consent page in Chromium --------------------------------------------------------------------


def csp_messages(page):
    messages = []
    page.on("console", lambda message: messages.append(message.text))
    return messages


def violations(messages):
    """Chromium's console reports of the policy at work ("Refused to ...", "... violates the
    following Content Security Policy directive ...")."""
    return [m for m in messages if "Content Security Policy" in m or "Refused to" in m]


@pytest.mark.slow
def test_consent_in_chromium_reaches_the_client_under_the_policy(acme, live_daphne, upstream, collected_static):
    from entities_app.tests.test_browser import CHROMIUM, chromium, password_for_the_server, sign_in

    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM}")
    redirect_uri = f"http://127.0.0.1:{upstream.port}/callback"  # the client's loopback listener
    app = dcr_application(redirect_uri)
    password_for_the_server(acme)
    server = live_daphne()

    with chromium() as browser:
        for allow in (True, False):
            page = browser.new_context().new_page()
            messages = csp_messages(page)
            page.goto(server.url + authorize_url(app.client_id, redirect_uri, resource=f"{server.url}/mcp"))
            sign_in(page, acme)
            page.wait_for_selector("#authorizationForm")
            response = page.reload()
            assert "form-action 'self' http://127.0.0.1:" in response.headers["content-security-policy"]
            assert page.evaluate("getComputedStyle(document.querySelector('section.card')).maxWidth") == "520px"
            # The policy is enforced: a script added to the page does not run.
            with pytest.raises(Exception):
                page.add_script_tag(content="window.injected = true")
            assert page.evaluate("window.injected") is None
            assert any("inline script" in m and "Content Security Policy" in m for m in messages), messages
            messages.clear()
            page.click("button[name=allow]" if allow else "button.secondary")
            page.wait_for_url(f"{redirect_uri}?*")
            query = dict(part.split("=", 1) for part in urlsplit(page.url).query.split("&"))
            assert ("code" in query) is allow and query["state"] == "st-1", query
            if not allow:
                assert query["error"] == "access_denied"
            assert violations(messages) == [], messages
    assert [c.path for c in upstream.calls("/callback")] == ["/callback", "/callback"]


@pytest.mark.django_db(transaction=True)
def test_raw_asgi_answers_are_never_sniffed(acme):
    """The MCP endpoints and tenant routes (served beside Django, without its middleware) send
    X-Content-Type-Options: nosniff like Django's pages, on their own answers and the SDK's."""
    headers = {"Authorization": f"Bearer {acme.key}", "Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
    answers = asgi([("POST", "/mcp", headers, json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ping"})),
                    ("GET", "/mcp", headers, None), ("GET", "/t/acme/nothing", {}, None), ("GET", "/t/nobody/x", {}, None)])
    for response in answers:
        assert response.headers.get("x-content-type-options") == "nosniff", (response.status_code, response.headers)


@pytest.mark.django_db
def test_a_webhook_refuses_other_methods_with_json(client):
    response = client.get("/hooks/acme/wf/token")
    assert response.status_code == 405 and response["Allow"] == "POST" and "POST" in response.json()["detail"]
