"""Keep credentials out of audit rows, logs and stored step parameters."""

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


def scrub(value, credentials):
    """A copy of a JSON value with every credential in `credentials` (as sent or URL-encoded)
    replaced wherever it appears: what an upstream or a tenant's MCP server echoes of the
    credentials it was sent, in an error or a success, must reach neither the caller (who may be
    anyone, on a public route) nor a stored step result."""
    forms = sorted({form for secret in credentials if secret for form in (secret, quote(secret, safe=""), quote_plus(secret, safe=""))},
                   key=len, reverse=True)

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
