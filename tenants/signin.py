"""Failed sign-ins are counted per client address and username, so passwords cannot be guessed at
speed through the JWT token endpoint or the sign-in page (which the OAuth consent flow uses too).
Only failures count: people who know their password are never slowed down."""

import hashlib

from django.conf import settings
from django.contrib.auth.views import LoginView

from backflow.ratelimit import retry_after


def _key(request, username):
    # Hashed: a username may hold characters no cache key may (spaces, control characters).
    who = hashlib.sha256((username or "").strip().lower().encode()).hexdigest()[:32]
    return f"sign-in:{request.META.get('REMOTE_ADDR', '')}:{who}"


def sign_in_wait(request, username):
    """Seconds to wait before this address may try this username again, or None."""
    return retry_after(_key(request, username), settings.BACKFLOW_SIGN_IN_RATE_LIMIT, record=False, fail_open=False)


def sign_in_failed(request, username):
    # fail_open=False: while Redis is down, guesses would not be counted; refuse (503) instead.
    retry_after(_key(request, username), settings.BACKFLOW_SIGN_IN_RATE_LIMIT, fail_open=False)


class SignInView(LoginView):
    def post(self, request, *args, **kwargs):
        wait = sign_in_wait(request, request.POST.get("username"))
        if wait is None:
            return super().post(request, *args, **kwargs)
        # An unbound form: binding it would run authenticate(), the very attempt being refused.
        context = self.get_context_data(form=self.form_class(request), refusal=f"Too many failed sign-ins; try again in {wait} s.")
        response = self.render_to_response(context)
        response.status_code = 429
        response["Retry-After"] = str(wait)
        return response

    def form_invalid(self, form):
        sign_in_failed(self.request, form.data.get("username"))
        return super().form_invalid(form)
