"""Keep credentials out of audit rows, logs and stored step parameters."""

import re

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
