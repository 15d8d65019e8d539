"""Passwords cannot be guessed at speed: failed sign-ins per address and username are limited on the
JWT token endpoint, the sign-in page (which the OAuth consent flow uses) and the admin's sign-in,
with a clear 429 and Retry-After, even for the right password; other usernames are unaffected, and
so is anyone who signs in right. Once the window has passed, the right password works again."""

import time

from django.contrib.auth import get_user_model
from django.test import Client
from rest_framework.test import APIClient

WINDOW = 2  # seconds: the test waits one window out


def _person(acme, username):
    from tenants import services as tenant_services

    user = get_user_model().objects.create_user(username=username, password="right-password")
    tenant_services.membership_set(tenant=acme.tenant, user=user, role="member")
    return user


def _next_window():
    time.sleep(WINDOW - time.time() % WINDOW + 0.05)


def test_token_endpoint_limits_failed_sign_ins(acme, settings):
    settings.BACKFLOW_SIGN_IN_RATE_LIMIT = (3, WINDOW)
    user, api = _person(acme, f"guessed-{time.time_ns()}"), APIClient()

    def sign_in(password, username=user.username):
        return api.post("/api/auth/token", {"username": username, "password": password}, format="json")

    _next_window()
    for _ in range(5):  # right passwords are never counted
        assert sign_in("right-password").status_code == 200
    for _ in range(3):
        assert sign_in("guess").status_code == 401
    refused = sign_in("right-password")
    assert refused.status_code == 429 and 0 < int(refused["Retry-After"]) <= WINDOW + 1
    assert "Too many failed sign-ins" in refused.json()["detail"]
    assert sign_in("guess", username=acme.owner.username).status_code == 401  # counted apart
    _next_window()
    assert sign_in("right-password").status_code == 200


def test_sign_in_page_limits_failed_sign_ins(acme, settings):
    settings.BACKFLOW_SIGN_IN_RATE_LIMIT = (2, WINDOW)
    user, browser = _person(acme, f"page-{time.time_ns()}"), Client()
    _next_window()
    for _ in range(2):
        page = browser.post("/accounts/login/", {"username": user.username, "password": "guess"})
        assert page.status_code == 200 and "Wrong username or password." in page.content.decode()
    page = browser.post("/accounts/login/", {"username": user.username, "password": "right-password"})
    assert page.status_code == 429 and "Too many failed sign-ins; try again in" in page.content.decode()
    assert "_auth_user_id" not in browser.session
    _next_window()
    page = browser.post("/accounts/login/", {"username": user.username, "password": "right-password"})
    assert page.status_code == 302 and browser.session["_auth_user_id"] == str(user.pk)


def test_the_admin_sign_in_is_limited_too(acme, settings):
    settings.BACKFLOW_SIGN_IN_RATE_LIMIT = (2, WINDOW)
    staff = get_user_model().objects.create_superuser(f"staff-{time.time_ns()}", "staff@example.com", "right-password")
    browser = Client()
    _next_window()
    for _ in range(2):
        assert browser.post("/admin/login/", {"username": staff.username, "password": "guess"}).status_code == 200
    refused = browser.post("/admin/login/", {"username": staff.username, "password": "right-password"})
    assert refused.status_code == 429 and "Too many failed sign-ins" in refused.content.decode()
    _next_window()
    assert browser.post("/admin/login/", {"username": staff.username, "password": "right-password"}).status_code == 302
