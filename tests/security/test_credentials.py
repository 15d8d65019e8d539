"""Hostile peers and stolen credentials (issue 15), each hole as the attacker's requests.

1. `/o/token/` was an unlimited password oracle: any self-registered client could send
   `grant_type=password` and read `invalid_grant` (wrong password) or `unauthorized_client` (right
   one). Unsupported grant types are now refused before any credential is looked at, and every
   password check on every door counts against the one sign-in limit.
2. A forged X-Forwarded-For reset the sign-in and registration limits behind the documented nginx
   setup (daphne's --proxy-headers trusts the leftmost entry, the client's own).
3. JWTs outlived a password change (and a membership change); refresh tokens did not rotate and
   could not be signed out. OAuth grants outlived a password change and a removed membership.
5. Password reset and change were served undocumented and unlimited (`django.contrib.auth.urls`).

(Hole 4, the consent page, is proved in tenants/tests/test_consent_client.py.)
"""

import http.client
import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import MD5PasswordHasher, PBKDF2PasswordHasher
from django.core.cache import cache
from django.test import Client
from django.urls import NoReverseMatch, reverse
from oauth2_provider.models import AccessToken, Grant, RefreshToken
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken as JwtRefreshToken

from tenants import services as tenant_services
from tenants.client_address import client_address
from tenants.models import ApiKey, Membership
from tests.live import ServerProcess

ROOT = Path(settings.BASE_DIR)
PASSWORD = "right-password-1"
LIMIT = 3
WINDOW = 300


# -- helpers -------------------------------------------------------------------------------------

def away_from_a_window_edge(window=WINDOW, margin=5):
    """Limits count in fixed windows: start a test's attempts well inside one."""
    remaining = window - time.time() % window
    if remaining < margin:
        time.sleep(remaining + 0.05)


@pytest.fixture
def limited(settings):
    settings.BACKFLOW_SIGN_IN_RATE_LIMIT = (LIMIT, WINDOW)
    away_from_a_window_edge()
    return settings


def person(acme, name=None, *, role="member", staff=False):
    """A member of acme with PASSWORD and a username no other test (or run, in a shared Redis) uses."""
    user = get_user_model().objects.create_user(username=name or f"p{time.time_ns()}", password=PASSWORD, is_staff=staff)
    tenant_services.membership_set(tenant=acme.tenant, user=user, role=role)
    return user


def token_pair(user, password=PASSWORD, tenant="acme", **extra):
    body = {"username": user.username, "password": password, **({"tenant": tenant} if tenant else {})}
    return APIClient().post("/api/auth/token", body, format="json", **extra)


def bearer(value):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {value}")
    return client


def register_client(client=None, **extra):
    body = {"client_name": "Any client", "redirect_uris": ["https://client.example/cb"], "token_endpoint_auth_method": "none",
            "grant_types": ["authorization_code", "refresh_token"], "response_types": ["code"], **extra}
    response = (client or Client()).post("/o/register/", json.dumps(body), content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()["client_id"]


# Each door that checks a password: (attempt(user, password) -> status code, what a success answers).
def _api_token(user, password):
    return token_pair(user, password).status_code


def _sign_in_page(user, password):
    return Client().post("/accounts/login/", {"username": user.username, "password": password}).status_code


def _admin_sign_in(user, password):
    return Client().post("/admin/login/", {"username": user.username, "password": password, "next": "/admin/"}).status_code


def _password_change(user, password):
    browser = Client()
    browser.force_login(user)
    new = f"another-{time.time_ns()}-passphrase"
    return browser.post("/accounts/password_change/", {"old_password": password, "new_password1": new, "new_password2": new}).status_code


DOORS = {
    "POST /api/auth/token": (_api_token, 401, 200),
    "the sign-in page": (_sign_in_page, 200, 302),
    "the admin's sign-in": (_admin_sign_in, 200, 302),
    "the password change page": (_password_change, 200, 302),
}


# -- 1. no password oracle at /o/token/, and one limit on every door --------------------------------

@pytest.mark.django_db
def test_the_oauth_token_endpoint_answers_the_same_whatever_the_password(acme, limited, monkeypatch):
    operator = get_user_model().objects.create_superuser(f"op{time.time_ns()}", "op@example.com", PASSWORD)
    client_id = register_client()  # anyone may register: the attacker's client
    checked = []
    original = get_user_model().check_password
    monkeypatch.setattr(get_user_model(), "check_password", lambda self, raw: checked.append(raw) or original(self, raw))

    answers = set()
    for password in ("wrong-guess", PASSWORD, "", "x" * 200):
        for body in ({"grant_type": "password", "username": operator.username, "password": password, "client_id": client_id},
                     {"grant_type": "password", "username": operator.username, "password": password}):
            response = Client().post("/o/token/", body)
            assert response.status_code == 400, response.content
            assert response.json()["error"] == "unsupported_grant_type", response.content
            assert response["Cache-Control"] == "no-store"
            answers.add(response.content)
    assert len(answers) == 1, answers  # nothing tells a right password from a wrong one
    assert checked == []  # and no password was ever looked at

    # Every other unsupported grant type, also named twice or in the query string, likewise.
    for body, query in (({"grant_type": "client_credentials", "client_id": client_id}, ""),
                        ({"grant_type": "urn:ietf:params:oauth:grant-type:device_code", "device_code": "x", "client_id": client_id}, ""),
                        ({"grant_type": "implicit"}, ""), ({"grant_type": ["refresh_token", "password"], "password": PASSWORD}, ""),
                        ({"username": operator.username, "password": PASSWORD, "client_id": client_id}, "?grant_type=password")):
        response = Client().post("/o/token/" + query, body)
        assert response.status_code == 400 and response.json()["error"] == "unsupported_grant_type", (body, query, response.content)
    missing = Client().post("/o/token/", {"username": operator.username, "password": PASSWORD})
    assert missing.status_code == 400 and missing.json()["error"] == "unsupported_grant_type"
    assert checked == []
    # The supported grants still reach oauthlib (an unknown refresh token: invalid_grant).
    response = Client().post("/o/token/", {"grant_type": "refresh_token", "refresh_token": "nope", "client_id": client_id})
    assert response.status_code == 400 and response.json()["error"] == "invalid_grant", response.content
    # Many guesses later, the operator's sign-in is not locked: none of them was a sign-in attempt.
    assert _admin_sign_in(operator, PASSWORD) == 302


@pytest.mark.django_db
@pytest.mark.parametrize("door", DOORS)
def test_every_door_that_checks_a_password_is_limited(acme, limited, door):
    attempt, refused, accepted = DOORS[door]
    user = person(acme, staff=True)
    for _ in range(LIMIT):
        assert attempt(user, "a-guess") == refused
    assert attempt(user, PASSWORD) == 429  # the right password too, until the window ends
    user.refresh_from_db()
    assert user.check_password(PASSWORD)  # nothing happened (no new password)
    # Another username from the same address is unaffected.
    other = person(acme, staff=True)
    assert attempt(other, PASSWORD) == accepted


@pytest.mark.django_db
def test_the_limit_is_one_for_all_doors(acme, limited):
    user = person(acme, staff=True)
    guesses = iter(["POST /api/auth/token", "the sign-in page", "the admin's sign-in"])
    for _ in range(LIMIT):
        attempt, refused, _ = DOORS[next(guesses)]
        assert attempt(user, "a-guess") == refused
    for door, (attempt, _, _) in DOORS.items():
        assert attempt(user, PASSWORD) == 429, door
    # The answers: JSON with Retry-After from the API, plain text from the pages.
    api = token_pair(user)
    assert api.status_code == 429 and 0 < int(api["Retry-After"]) <= WINDOW + 1
    assert api.json()["detail"].startswith("Too many failed sign-ins; retry in ")
    browser = Client()
    page = browser.post("/accounts/login/", {"username": user.username, "password": PASSWORD})
    assert page.status_code == 429 and page["Content-Type"].startswith("text/plain") and int(page["Retry-After"]) > 0
    assert "_auth_user_id" not in browser.session
    # The limit is per address: the same person elsewhere signs in.
    assert token_pair(user, REMOTE_ADDR="192.0.2.50").status_code == 200


def test_every_password_check_goes_through_the_limited_backend():
    """The net: the limit lives in the only authentication backend, so any `authenticate()` is
    counted; a direct `check_password()` call would be a door around it."""
    assert settings.AUTHENTICATION_BACKENDS == ["tenants.signin.SignInLimitedBackend"]
    direct = []
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT).as_posix()
        if relative.startswith((".venv/", "var/", "bench/")) or "/tests/" in f"/{relative}" or "/migrations/" in relative:
            continue
        if re.search(r"\.check_password\(", path.read_text(encoding="utf-8", errors="replace")):
            direct.append(relative)
    assert direct == [], f"password checks outside authenticate() (not limited): {direct}"


# -- 5. no password reset; password change only signed in, limited (above) ----------------------------

@pytest.mark.django_db
def test_password_reset_is_gone_and_password_change_is_for_signed_in_people(acme, limited):
    for path in ("/accounts/password_reset/", "/accounts/password_reset/done/", "/accounts/reset/MQ/set-password/",
                 "/accounts/reset/MQ/abc-123/", "/accounts/reset/done/"):
        for method in ("get", "post"):
            response = getattr(Client(), method)(path, {"email": "victim@example.com"})
            assert response.status_code == 404, (method, path, response.status_code)
    for name in ("password_reset", "password_reset_done", "password_reset_confirm", "password_reset_complete"):
        with pytest.raises(NoReverseMatch):
            reverse(name)
    # Anonymous people are sent to sign in.
    response = Client().get("/accounts/password_change/")
    assert response.status_code == 302 and response["Location"].startswith("/accounts/login/?next=")
    # A member changes their password with the right old one; the session stays signed in.
    user = person(acme)
    browser = Client()
    browser.force_login(user)
    assert browser.get("/accounts/password_change/").status_code == 200
    wrong = browser.post("/accounts/password_change/", {"old_password": "guess", "new_password1": "n3w-pass-phrase", "new_password2": "n3w-pass-phrase"})
    assert wrong.status_code == 200 and "incorrectly" in wrong.content.decode()
    done = browser.post("/accounts/password_change/", {"old_password": PASSWORD, "new_password1": "n3w-pass-phrase", "new_password2": "n3w-pass-phrase"})
    assert done.status_code == 302 and done["Location"] == "/accounts/password_change/done/"
    assert browser.get("/accounts/password_change/done/").status_code == 200
    user.refresh_from_db()
    assert user.check_password("n3w-pass-phrase")
    # The admin's own password change page leads to the same (limited) page.
    staff = Client()
    staff.force_login(get_user_model().objects.create_superuser(f"s{time.time_ns()}", "s@example.com", PASSWORD))
    response = staff.get("/admin/password_change/")
    assert response.status_code == 302 and response["Location"] == "/accounts/password_change/"


# -- 3. JWTs end with the password, the membership, rotation and sign-out ------------------------

def _can_use(access):
    return bearer(access).get("/api/integrations/").status_code == 200


def _refresh(refresh):
    return APIClient().post("/api/auth/refresh", {"refresh": refresh}, format="json")


@pytest.mark.django_db
def test_a_stolen_jwt_dies_with_a_password_change(acme):
    owner = person(acme, role="owner")
    stolen = token_pair(owner).json()
    assert _can_use(stolen["access"])
    # The person notices and changes their password (the page, the admin or changepassword: all
    # call set_password).
    owner.set_password("a-new-password-2")
    owner.save()
    thief = bearer(stolen["access"])
    response = thief.get("/api/integrations/")
    assert response.status_code == 401 and "password changed" in response.json()["detail"]
    # No new all-scope API key that would outlive everything.
    assert thief.post("/api/keys/", {"name": "backdoor"}, format="json").status_code == 401
    refreshed = _refresh(stolen["refresh"])
    assert refreshed.status_code == 401 and "password changed" in refreshed.json()["detail"]
    assert not ApiKey.objects.for_tenant(acme.tenant).filter(name="backdoor").exists()
    # The owner signs in again with the new password.
    fresh = token_pair(owner, "a-new-password-2").json()
    assert _can_use(fresh["access"])


@pytest.mark.django_db
def test_a_password_change_on_the_page_ends_jwts_too(acme, limited):
    user = person(acme)
    pair = token_pair(user).json()
    browser = Client()
    browser.force_login(user)
    browser.post("/accounts/password_change/", {"old_password": PASSWORD, "new_password1": "n3w-pass-phrase", "new_password2": "n3w-pass-phrase"})
    assert not _can_use(pair["access"]) and _refresh(pair["refresh"]).status_code == 401


@pytest.mark.django_db
def test_a_membership_removed_re_created_or_given_another_role_ends_jwts(acme, globex):
    admin = person(acme, role="admin")
    tenant_services.membership_set(tenant=globex.tenant, user=admin, role="member")
    both = token_pair(admin, tenant=None).json()  # covers acme and globex
    acme_only = token_pair(admin).json()
    assert bearer(acme_only["access"]).get("/api/keys/").status_code == 200

    tenant_services.membership_set(tenant=acme.tenant, user=admin, role="member")  # demoted
    response = bearer(acme_only["access"]).get("/api/integrations/")
    assert response.status_code == 401 and "membership of tenant 'acme' changed" in response.json()["detail"]
    assert _refresh(acme_only["refresh"]).status_code == 401
    assert bearer(both["access"]).get("/api/integrations/", HTTP_X_BACKFLOW_SCOPE="acme").status_code == 401
    assert bearer(both["access"]).get("/api/integrations/", HTTP_X_BACKFLOW_SCOPE="globex").status_code == 200
    assert _refresh(both["refresh"]).status_code == 401  # it covers acme too: sign in again

    again = token_pair(admin).json()
    assert _can_use(again["access"])
    Membership.objects.for_tenant(acme.tenant).filter(user=admin).delete()
    tenant_services.membership_set(tenant=acme.tenant, user=admin, role="member")  # removed, then added back
    assert not _can_use(again["access"]) and _refresh(again["refresh"]).status_code == 401
    assert _can_use(token_pair(admin).json()["access"])


@pytest.mark.django_db
def test_refresh_tokens_rotate_and_a_used_one_is_refused(acme):
    user = person(acme)
    first = token_pair(user).json()
    response = _refresh(first["refresh"])
    assert response.status_code == 200, response.content
    second = response.json()
    assert set(second) == {"access", "refresh"} and second["refresh"] != first["refresh"]
    assert _can_use(second["access"])
    replay = _refresh(first["refresh"])  # the thief's copy, or the owner's: used once only
    assert replay.status_code == 401 and "blacklisted" in replay.json()["detail"]
    third = _refresh(second["refresh"])
    assert third.status_code == 200 and _can_use(third.json()["access"])
    # Claims travel with rotation: still bound to the tenant, the password and the membership.
    rotated = JwtRefreshToken(third.json()["refresh"])
    assert rotated["tenants"] == ["acme"] and rotated["pwd"] and set(rotated["mbr"]) == {"acme"}


@pytest.mark.django_db
def test_sign_out_blacklists_the_refresh_token(acme):
    user = person(acme)
    pair = token_pair(user).json()
    signed_out = APIClient().post("/api/auth/logout", {"refresh": pair["refresh"]}, format="json")
    assert signed_out.status_code == 204, signed_out.content
    refused = _refresh(pair["refresh"])
    assert refused.status_code == 401 and "blacklisted" in refused.json()["detail"]
    # Twice is fine; what is not a refresh token of this server is 401; a missing one 400.
    assert APIClient().post("/api/auth/logout", {"refresh": pair["refresh"]}, format="json").status_code == 204
    for value in ("garbage", pair["access"], pair["refresh"][:-4] + "AAAA"):
        response = APIClient().post("/api/auth/logout", {"refresh": value}, format="json")
        assert response.status_code == 401 and response.json()["detail"], (value, response.content)
    missing = APIClient().post("/api/auth/logout", {}, format="json")
    assert missing.status_code == 400 and "refresh" in missing.json()["errors"]
    # Other sessions of the person are untouched.
    other = token_pair(user).json()
    assert _refresh(other["refresh"]).status_code == 200


@pytest.mark.django_db
def test_jwts_issued_without_the_bindings_are_refused(acme):
    """Tokens from before this change (or any token without the claims) cannot be used or refreshed."""
    user = person(acme)
    legacy = JwtRefreshToken.for_user(user)
    legacy["tenants"] = ["acme"]
    assert bearer(str(legacy.access_token)).get("/api/integrations/").status_code == 401
    assert _refresh(str(legacy)).status_code == 401
    legacy["pwd"] = JwtRefreshToken(token_pair(user).json()["refresh"])["pwd"]  # the password's, but no membership's
    response = bearer(str(legacy.access_token)).get("/api/integrations/")
    assert response.status_code == 401 and "membership" in response.json()["detail"]


def test_logout_and_refresh_are_in_the_openapi_schema(db):
    schema = APIClient().get("/api/schema/", HTTP_ACCEPT="application/json").json()
    logout = schema["paths"]["/api/auth/logout"]["post"]
    assert "204" in logout["responses"] and "401" in logout["responses"]
    assert "requestBody" in logout
    refresh = schema["paths"]["/api/auth/refresh"]["post"]
    assert "200" in refresh["responses"]


# -- 3. OAuth grants end with the password and the membership ----------------------------------------

def _oauth_grant(user, slug, application, n):
    """An access token with its refresh token, as DOT stores them (checksums of the raw values)."""
    from datetime import timedelta

    from django.utils import timezone

    access = AccessToken.objects.create(user=user, application=application, token=f"at-{slug}-{n}-{time.time_ns()}",
                                        expires=timezone.now() + timedelta(hours=1), scope=f"integrations:read tenant:{slug}")
    refresh = RefreshToken.objects.create(user=user, application=application, token=f"rt-{slug}-{n}-{time.time_ns()}",
                                          access_token=access)
    return access, refresh


def _live(refresh):
    refresh.refresh_from_db()
    return refresh.revoked is None and AccessToken.objects.filter(pk=refresh.access_token_id).exists()


@pytest.fixture
def oauth_app(db):
    from oauth2_provider.models import Application

    return Application.objects.create(name="Any client", client_type=Application.CLIENT_PUBLIC,
                                      authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
                                      redirect_uris="https://client.example/cb", registration_source=Application.RegistrationSource.DCR)


@pytest.mark.django_db
def test_a_password_change_ends_every_oauth_grant_of_the_person(acme, globex, oauth_app, settings):
    user = person(acme)
    tenant_services.membership_set(tenant=globex.tenant, user=user, role="member")
    bystander = person(acme)
    grants = [_oauth_grant(user, "acme", oauth_app, 1), _oauth_grant(user, "globex", oauth_app, 2)]
    kept = _oauth_grant(bystander, "acme", oauth_app, 3)
    Grant.objects.create(user=user, application=oauth_app, code=f"code-{time.time_ns()}", expires=kept[0].expires,
                         redirect_uri="https://client.example/cb", scope="integrations:read tenant:acme",
                         code_challenge="c" * 43, code_challenge_method="S256")

    # Django upgrading the stored hash at a sign-in is not a password change.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.PBKDF2PasswordHasher", "django.contrib.auth.hashers.MD5PasswordHasher"]
    md5 = MD5PasswordHasher()
    type(user).objects.filter(pk=user.pk).update(password=md5.encode(PASSWORD, md5.salt()))
    user.refresh_from_db()
    assert user.check_password(PASSWORD) and user.password.startswith(PBKDF2PasswordHasher.algorithm)
    assert all(_live(refresh) for _, refresh in grants) and Grant.objects.filter(user=user).exists()

    user.set_password("a-new-password-2")
    user.save()
    assert not any(_live(refresh) for _, refresh in grants)
    assert not AccessToken.objects.filter(user=user).exists() and not Grant.objects.filter(user=user).exists()
    assert _live(kept[1])  # another person's grant stays

    # An unusable password (an operator locking the account) ends them too.
    again = _oauth_grant(user, "acme", oauth_app, 4)
    user.set_unusable_password()
    user.save()
    assert not _live(again[1])


@pytest.mark.django_db
def test_removing_a_membership_ends_the_persons_oauth_grants_for_that_tenant(acme, globex, oauth_app):
    user = person(acme, role="admin")
    tenant_services.membership_set(tenant=globex.tenant, user=user, role="member")
    in_acme, in_globex = _oauth_grant(user, "acme", oauth_app, 1), _oauth_grant(user, "globex", oauth_app, 2)
    tenant_services.membership_set(tenant=acme.tenant, user=user, role="member")  # a role change ends none
    assert _live(in_acme[1]) and _live(in_globex[1])
    Membership.objects.for_tenant(acme.tenant).filter(user=user).delete()
    assert not _live(in_acme[1]) and _live(in_globex[1])
    # Added back, the old grant does not come back to life.
    tenant_services.membership_set(tenant=acme.tenant, user=user, role="member")
    assert not _live(in_acme[1])


@pytest.mark.django_db
def test_api_keys_a_removed_member_created_stay_with_the_tenant(acme):
    admin = person(acme, role="admin")
    access = token_pair(admin).json()["access"]
    created = bearer(access).post("/api/keys/", {"name": "ci"}, format="json")
    assert created.status_code == 201
    Membership.objects.for_tenant(acme.tenant).filter(user=admin).delete()
    assert not _can_use(access)
    key = bearer(created.json()["key"])
    assert key.get("/api/integrations/").status_code == 200  # a tenant key: it stays until revoked
    assert ApiKey.objects.for_tenant(acme.tenant).get(name="ci").created_by == f"user:{admin.username}"


# -- 2. the client address behind proxies ---------------------------------------------------------

class _Meta:
    def __init__(self, remote, forwarded=None):
        self.META = {"REMOTE_ADDR": remote, **({"HTTP_X_FORWARDED_FOR": forwarded} if forwarded is not None else {})}


@pytest.mark.parametrize("hops, remote, forwarded, expected", [
    (0, "10.0.0.5", "1.2.3.4", "10.0.0.5"),                        # no trusted proxy: the peer
    (1, "10.0.0.5", None, "10.0.0.5"),                             # not through the proxy
    (1, "10.0.0.5", "203.0.113.9", "203.0.113.9"),                 # what the proxy saw
    (1, "10.0.0.5", "1.2.3.4, 203.0.113.9", "203.0.113.9"),        # the client's forgery is ignored
    (1, "10.0.0.5", "1.2.3.4,5.6.7.8 , 203.0.113.9", "203.0.113.9"),
    (2, "10.0.0.5", "1.2.3.4, 198.51.100.7, 10.0.0.9", "198.51.100.7"),  # CDN, then nginx
    (2, "10.0.0.5", "198.51.100.7", "198.51.100.7"),               # a proxy bypassed: the first one's view
    (1, "10.0.0.5", "1.2.3.4, [2001:db8::1]:443", "2001:db8::1"),
    (1, "10.0.0.5", "1.2.3.4, 203.0.113.9:5555", "203.0.113.9"),
    (1, "10.0.0.5", "1.2.3.4, 2001:DB8:0::1", "2001:db8::1"),
])
def test_the_client_address_is_what_the_outermost_trusted_proxy_saw(settings, hops, remote, forwarded, expected):
    settings.BACKFLOW_TRUSTED_PROXIES = hops
    assert client_address(_Meta(remote, forwarded)) == expected


def test_an_address_that_is_not_one_cannot_shape_a_cache_key(settings):
    settings.BACKFLOW_TRUSTED_PROXIES = 1
    address = client_address(_Meta("10.0.0.5", "x, not an address\n:{}"))
    assert re.fullmatch(r"unparsable-[0-9a-f]{16}", address)


HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "content-length", "x-forwarded-for"}


class AppendingProxy:
    """A loopback reverse proxy like nginx with `proxy_set_header X-Forwarded-For
    $proxy_add_x_forwarded_for`: the client's X-Forwarded-For is kept, the address it connected
    from is appended, and the request goes to `port` from 127.0.0.1."""

    def __init__(self, port):
        self.seen = []
        upstream, seen = port, self.seen

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def forward(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                headers["X-Forwarded-For"] = ", ".join([*self.headers.get_all("X-Forwarded-For", []), self.client_address[0]])
                seen.append(headers["X-Forwarded-For"])
                connection = http.client.HTTPConnection("127.0.0.1", upstream, timeout=30)
                try:
                    connection.request(self.command, self.path, body=body, headers=headers)
                    answer = connection.getresponse()
                    content = answer.read()
                finally:
                    connection.close()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in HOP_BY_HOP:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)

            do_GET = do_POST = forward

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


def client_from(address):
    """An HTTP client whose connections come from `address` (any of 127.0.0.0/8)."""
    return httpx.Client(transport=httpx.HTTPTransport(local_address=address), timeout=30)


def server_user(acme):
    """A member the server process can sign in (it checks passwords with the production hashers)."""
    user = person(acme)
    hasher = PBKDF2PasswordHasher()
    type(user).objects.filter(pk=user.pk).update(password=hasher.encode(PASSWORD, hasher.salt(), iterations=1000))
    return user


REGISTRATION_WINDOW = 3593  # a window of its own: other tests' registrations count elsewhere in a shared Redis
LIVE_ENV = {"BACKFLOW_SIGN_IN_RATE_LIMIT": f"{LIMIT},{WINDOW}", "BACKFLOW_OAUTH_REGISTRATION_RATE_LIMIT": f"2,{REGISTRATION_WINDOW}"}


def _forget_registrations(*addresses):
    bucket = int(time.time() // REGISTRATION_WINDOW)
    for address in addresses:
        for b in (bucket, bucket + 1):
            cache.delete(f"ratelimit:oauth-register:{address}:{b}")


def _spoofing_attack(proxy, acme):
    """The attacker (127.0.0.2) guesses a password and registers clients, sending a new forged
    X-Forwarded-For every time; returns (sign-in answers, registration answers)."""
    user = server_user(acme)
    _forget_registrations("127.0.0.2", "127.0.0.3", "127.0.0.1")
    away_from_a_window_edge()
    signs, registrations = [], []
    with client_from("127.0.0.2") as attacker:
        for n in range(LIMIT + 2):
            password = PASSWORD if n == LIMIT + 1 else f"guess-{n}"
            response = attacker.post(f"{proxy.url}/api/auth/token", json={"username": user.username, "password": password},
                                     headers={"X-Forwarded-For": f"198.51.100.{n + 1}"})
            signs.append(response.status_code)
        for n in range(4):
            response = attacker.post(f"{proxy.url}/o/register/", headers={"X-Forwarded-For": f"192.0.2.{n + 1}, 10.1.1.{n}"}, json={
                "client_name": "spoof", "redirect_uris": ["https://client.example/cb"], "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code"], "response_types": ["code"]})
            registrations.append(response.status_code)
    return user, signs, registrations


def test_a_forged_x_forwarded_for_does_not_reset_the_limits_behind_a_proxy(acme, live_daphne):
    server = live_daphne(BACKFLOW_TRUSTED_PROXIES="1", **LIVE_ENV)  # the documented setup: no --proxy-headers
    proxy = AppendingProxy(server.port)
    try:
        user, signs, registrations = _spoofing_attack(proxy, acme)
        assert signs == [401] * LIMIT + [429, 429], signs  # the forged values changed nothing
        assert registrations == [201, 201, 429, 429], registrations
        assert proxy.seen[0] == "198.51.100.1, 127.0.0.2"  # what reached daphne: the forgery, then the truth
        # Limits still key on the real client: someone else (127.0.0.3) is not locked out, even when
        # the attacker forged that very address.
        with client_from("127.0.0.3") as other:
            response = other.post(f"{proxy.url}/api/auth/token", json={"username": user.username, "password": PASSWORD},
                                  headers={"X-Forwarded-For": "127.0.0.2"})
            assert response.status_code == 200, response.text
            response = other.post(f"{proxy.url}/o/register/", json={
                "client_name": "fine", "redirect_uris": ["https://client.example/cb"], "token_endpoint_auth_method": "none",
                "grant_types": ["authorization_code"], "response_types": ["code"]})
            assert response.status_code == 201, response.text
    finally:
        proxy.stop()


def test_without_the_setting_the_same_attack_resets_the_limits(acme, live_daphne):
    """The control: the former documented setup (daphne --proxy-headers, which takes the leftmost
    X-Forwarded-For) lets every forged value start a fresh count. The test above would fail so."""
    server = ServerProcess(lambda port: ["-m", "daphne", "-b", "127.0.0.1", "-p", str(port), "--proxy-headers",
                                         "backflow.asgi:application"], BACKFLOW_TRUSTED_PROXIES="0", **LIVE_ENV)
    proxy = AppendingProxy(server.port)
    try:
        _, signs, registrations = _spoofing_attack(proxy, acme)
        assert signs == [401] * (LIMIT + 1) + [200], signs
        assert registrations == [201] * 4, registrations
    finally:
        proxy.stop()
        server.stop()
