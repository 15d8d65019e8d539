"""One limit for every password check, so passwords cannot be guessed at speed on any door.

Every password Backflow checks goes through Django's `authenticate()`, and the one authentication
backend, `SignInLimitedBackend`, counts each failure per client address and username
(BACKFLOW_SIGN_IN_RATE_LIMIT) and refuses to check any password for that address and username
once the window holds that many failures: `TooManySignIns`, answered 429 with Retry-After. The
doors today: `POST /api/auth/token`, the sign-in page `/accounts/login/` (which the OAuth consent
flow uses), the admin's sign-in `/admin/login/` and the old-password check of
`/accounts/password_change/` (the admin's password change sends people there). The OAuth token
endpoint checks no password: it refuses the password grant before looking at any credential.
Only failures count: people who know their password are never slowed down.
"""

import functools
import hashlib

from django.conf import settings
from django.contrib.auth import authenticate
from django.contrib.auth.backends import ModelBackend
from django.contrib.auth.forms import PasswordChangeForm
from django.contrib.auth.views import PasswordChangeView
from django.core.exceptions import ValidationError
from django.http import HttpResponse
from rest_framework.exceptions import Throttled

from backflow.ratelimit import retry_after
from tenants.client_address import client_address


class TooManySignIns(Throttled):
    """This address has failed too often for this username: no password is checked until `wait`
    seconds have passed. A DRF view that does not catch it answers 429 with Retry-After."""

    def __init__(self, wait):
        super().__init__(detail=f"Too many failed sign-ins; retry in {wait} s.")
        self.wait = wait  # DRF's answer carries it as Retry-After


def _key(request, username):
    # Hashed: a username may hold characters no cache key may (spaces, control characters).
    who = hashlib.sha256(str(username or "").strip().lower().encode()).hexdigest()[:32]
    return f"sign-in:{client_address(request)}:{who}"


def sign_in_wait(request, username):
    """Seconds to wait before this address may try this username again, or None."""
    return retry_after(_key(request, username), settings.BACKFLOW_SIGN_IN_RATE_LIMIT, name="sign_in", record=False, fail_open=False)


def sign_in_failed(request, username):
    # fail_open=False: while Redis is down, guesses would not be counted; refuse (503) instead.
    retry_after(_key(request, username), settings.BACKFLOW_SIGN_IN_RATE_LIMIT, name=None, fail_open=False)


class SignInLimitedBackend(ModelBackend):
    """Django's model backend behind the sign-in limit (AUTHENTICATION_BACKENDS names only this
    one): whoever calls `authenticate()` with a username and a password is limited and counted."""

    def authenticate(self, request, username=None, password=None, **kwargs):
        if username is None:
            username = kwargs.get(self._username_field())
        if username is None or password is None:
            return None
        wait = sign_in_wait(request, username)
        if wait:
            raise TooManySignIns(wait)
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            sign_in_failed(request, username)
        return user

    @staticmethod
    def _username_field():
        from django.contrib.auth import get_user_model

        return get_user_model().USERNAME_FIELD


def too_many_sign_ins(exc):
    response = HttpResponse(f"Too many failed sign-ins; try again in {exc.wait} s.", status=429,
                            content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(exc.wait)
    return response


def limit_failed_sign_ins(view):
    """A Django view that checks passwords (ours, the admin's): the backend's refusal becomes a
    plain-text 429 with Retry-After instead of an error page."""

    @functools.wraps(view)
    def limited(request, *args, **kwargs):
        try:
            return view(request, *args, **kwargs)
        except TooManySignIns as exc:
            return too_many_sign_ins(exc)

    return limited


class LimitedPasswordChangeForm(PasswordChangeForm):
    """Django's password change, whose old-password check is a sign-in: limited and counted."""

    def __init__(self, user, *args, request=None, **kwargs):
        self.request = request
        super().__init__(user, *args, **kwargs)

    def clean_old_password(self):
        old_password = self.cleaned_data["old_password"]
        if authenticate(self.request, username=self.user.get_username(), password=old_password) is None:
            raise ValidationError(self.error_messages["password_incorrect"], code="password_incorrect")
        return old_password


class LimitedPasswordChangeView(PasswordChangeView):
    """`/accounts/password_change/`: signed-in people only (Django's view requires it)."""

    form_class = LimitedPasswordChangeForm

    def get_form_kwargs(self):
        return {**super().get_form_kwargs(), "request": self.request}
