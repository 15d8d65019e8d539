"""Keep credentials out of audit rows, logs and stored step parameters."""

import json
import re
from urllib.parse import quote, quote_plus

SENSITIVE_KEY = re.compile(r"(secret|password|passwd|token|api[-_]?key|authorization|credential|cookie)", re.I)
REDACTED = "***redacted***"


def redact(value):
    """A copy of a JSON value with the values of credential-like keys replaced.

    `secret` holding a *name* of a stored secret is not a credential, so reference fields
    (`"secret": "stripe_key"`) are kept readable; everything else that looks sensitive goes.
    """
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if key == "secret" and isinstance(item, str) and "{{" not in item:
                out[key] = item
            elif SENSITIVE_KEY.search(str(key)) and not isinstance(item, (dict, list)):
                out[key] = REDACTED
            else:
                out[key] = redact(item)
        return out
    if isinstance(value, list):
        return [redact(item) for item in value]
    return value


# The shortest piece of a credential scrub_text removes on its own: parsers' error messages quote
# what they were sent truncated (pydantic: 'Bearer sk-live...cdef0123'), cutting a credential in two.
FRAGMENT = 8


def _forms(credentials):
    return sorted({form for secret in credentials if secret for form in (secret, quote(secret, safe=""), quote_plus(secret, safe=""))},
                  key=len, reverse=True)


def scrub(value, credentials):
    """A copy of a JSON value with every credential in `credentials` (as sent or URL-encoded)
    replaced wherever it appears: what an upstream or a tenant's MCP server echoes of the
    credentials it was sent, in an error or a success, must reach neither the caller (who may be
    anyone, on a public route) nor a stored step result."""
    forms = _forms(credentials)

    def clean(item):
        if isinstance(item, str):
            for form in forms:
                item = item.replace(form, "[redacted]")
            return item
        if isinstance(item, dict):
            return {clean(k): clean(v) for k, v in item.items()}
        if isinstance(item, list):
            return [clean(v) for v in item]
        return item

    return clean(value) if forms else value


def scrub_text(text, credentials):
    """An error message or log line without the credentials: `scrub`, and then every run of at
    least FRAGMENT characters that is part of one (what a truncated quotation leaves of it)."""
    forms = _forms(credentials)
    text = scrub(str(text), credentials)
    grams = {form[i:i + FRAGMENT] for form in forms for i in range(len(form) - FRAGMENT + 1)}
    if not grams:
        return text
    covered = [False] * len(text)
    for start in range(len(text) - FRAGMENT + 1):
        if text[start:start + FRAGMENT] in grams:
            covered[start:start + FRAGMENT] = [True] * FRAGMENT
    out, index = [], 0
    while index < len(text):
        if covered[index]:
            while index < len(text) and covered[index]:
                index += 1
            out.append("[redacted]")
        else:
            out.append(text[index])
            index += 1
    return "".join(out)


def is_platform_variable(name):
    """Whether an environment variable is one of Backflow's own settings (settings.PLATFORM_ENV_NAMES
    and PLATFORM_ENV_PREFIXES): the platform's configuration and credentials, never a tenant's
    secret value nor what a template reads."""
    from django.conf import settings

    name = str(name).upper()
    return name in settings.PLATFORM_ENV_NAMES or name.startswith(tuple(settings.PLATFORM_ENV_PREFIXES))


PREVIEW_CHARS = 2000


def preview(value, limit=PREVIEW_CHARS):
    """A result as an assistant reads it (traces, runs): whole when short, else its first
    characters, marked as truncated with the full size."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    if len(text) <= limit:
        return value
    return {"truncated": True, "totalChars": len(text), "preview": text[:limit]}
