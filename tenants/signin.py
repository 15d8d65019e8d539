"""Failed sign-ins are counted per client address and username, so passwords cannot be guessed at
speed through the JWT token endpoint, the sign-in page (which the OAuth consent flow uses too) or
the admin's sign-in. Only failures count: people who know their password are never slowed down."""

import functools
import hashlib

from django.conf import settings
from django.http import HttpResponse

from backflow.ratelimit import retry_after
from tenants.client_address import client_address


def _key(request, username):
    # Hashed: a username may hold characters no cache key may (spaces, control characters).
    who = hashlib.sha256((username or "").strip().lower().encode()).hexdigest()[:32]
    return f"sign-in:{client_address(request)}:{who}"


def sign_in_wait(request, username):
    """Seconds to wait before this address may try this username again, or None."""
    return retry_after(_key(request, username), settings.BACKFLOW_SIGN_IN_RATE_LIMIT, record=False, fail_open=False)


def sign_in_failed(request, username):
    # fail_open=False: while Redis is down, guesses would not be counted; refuse (503) instead.
    retry_after(_key(request, username), settings.BACKFLOW_SIGN_IN_RATE_LIMIT, fail_open=False)


def limit_failed_sign_ins(view):
    """A Django sign-in view (ours, the admin's) with the limit: a POST is refused (429) while its
    address has failed too often for the username it names, and a POST answered with the form
    again (200: wrong username or password) is counted as a failure."""

    @functools.wraps(view)
    def limited(request, *args, **kwargs):
        if request.method != "POST":
            return view(request, *args, **kwargs)
        username = request.POST.get("username")
        wait = sign_in_wait(request, username)
        if wait:
            response = HttpResponse(f"Too many failed sign-ins; try again in {wait} s.", status=429,
                                    content_type="text/plain; charset=utf-8")
            response["Retry-After"] = str(wait)
            return response
        response = view(request, *args, **kwargs)
        if response.status_code == 200:
            sign_in_failed(request, username)
        return response

    return limited
