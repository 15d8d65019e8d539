"""Content-Security-Policy for the HTML pages people use: app pages and the OAuth consent page.

The pages have no scripts at all and one stylesheet of our own, so the policy starts from nothing
(`default-src 'none'`) and allows only that: no script of any kind can run, even if some markup
were ever injected; the pages cannot be framed (clickjacking); a `<base>` tag cannot move relative
URLs; forms post to this site only.

`form-action` also governs where a form's answer may redirect the browser (Chromium blocks the
redirect otherwise), so the consent page adds the origin of the client's redirect URI, the one
place its form legitimately sends the browser. CSP has no syntax for IPv6 literals
(`http://[::1]:port` is ignored as invalid): for such a redirect URI the scheme alone is added.

Use `@content_security_policy(...)` on a view (or `method_decorator` on a class view's dispatch),
and `allow_form_action(response, uri)` from inside the view for a redirect target.
"""

import functools
import re
from urllib.parse import urlsplit

HEADER = "Content-Security-Policy"
BASE_POLICY = {
    "default-src": ("'none'",),
    "style-src": ("'self'",),
    "img-src": ("'self'", "data:"),
    "form-action": ("'self'",),
    "frame-ancestors": ("'none'",),
    "base-uri": ("'none'",),
}
_HOST = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$")


def policy(**extra):
    """The header's value: BASE_POLICY plus `extra` sources per directive (underscores for dashes)."""
    directives = {name: list(sources) for name, sources in BASE_POLICY.items()}
    for name, sources in extra.items():
        for source in sources:
            if source not in directives.setdefault(name.replace("_", "-"), []):
                directives[name.replace("_", "-")].append(source)
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


def source_for(uri):
    """The CSP source expression that lets a form answer redirect to `uri` (an http(s) URI), or
    None when `uri` is not one. Built from the parsed parts, never copied from the input."""
    try:
        parts = urlsplit(uri)
        port = parts.port
    except (TypeError, ValueError):
        return None
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if scheme not in ("http", "https") or not host:
        return None
    if ":" in host:  # an IPv6 literal: not expressible in CSP
        return f"{scheme}:"
    if not _HOST.match(host):
        return None
    return f"{scheme}://{host}" + (f":{port}" if port is not None else "")


def allow_form_action(response, uri):
    """Let the page's forms lead to `uri` (a redirect URI the view has checked)."""
    source = source_for(uri)
    if source:
        response.csp_form_action = [*getattr(response, "csp_form_action", []), source]
    return response


def content_security_policy(view=None, **extra):
    """Decorator: the view's responses carry the policy (plus `extra` sources, see `policy`)."""

    def decorate(view_func):
        @functools.wraps(view_func)
        def wrapped(request, *args, **kwargs):
            response = view_func(request, *args, **kwargs)
            if HEADER not in response:
                sources = {name: list(values) for name, values in extra.items()}
                form_action = getattr(response, "csp_form_action", ())
                if form_action:
                    sources["form_action"] = [*sources.get("form_action", ()), *form_action]
                response[HEADER] = policy(**sources)
            return response

        return wrapped

    return decorate(view) if view is not None else decorate
