"""The client address every per-address limit counts (failed sign-ins, OAuth client registration).

Behind proxies, REMOTE_ADDR is the nearest proxy, and X-Forwarded-For holds the chain: each proxy
appends the address it saw (nginx's `$proxy_add_x_forwarded_for`), after whatever the client sent
itself. Only the entries the trusted proxies appended can be believed, so the client is the
address the outermost trusted proxy saw: with BACKFLOW_TRUSTED_PROXIES = N, the Nth entry from
the right. daphne's `--proxy-headers` takes the leftmost entry instead (the client's own choice),
which is why Backflow does not rely on it for limits.
"""

import hashlib
import ipaddress

from django.conf import settings


def client_address(request):
    """The address of the client of `request` (an HttpRequest, a DRF Request, or anything with a
    META mapping), as a string fit for a cache key."""
    meta = getattr(request, "META", None) or {}
    address = str(meta.get("REMOTE_ADDR") or "")
    hops = settings.BACKFLOW_TRUSTED_PROXIES
    if hops > 0:
        chain = [part.strip() for part in str(meta.get("HTTP_X_FORWARDED_FOR") or "").split(",")]
        chain = [part for part in chain if part]
        if len(chain) >= hops:
            address = chain[-hops]
        elif chain:
            # Fewer entries than proxies: some proxy was bypassed. The leftmost entry is the
            # address the first proxy on the way saw (nothing to the left of it was sent).
            address = chain[0]
    return _normalized(address)


def _normalized(address):
    """The address in canonical form (a port some proxies add is dropped); anything that is not an
    IP address becomes a short hash, so a forged value cannot put odd characters in a cache key."""
    text = address.strip()
    candidates = [text]
    if text.startswith("[") and "]" in text:  # [2001:db8::1]:443
        candidates.append(text[1:text.index("]")])
    elif text.count(":") == 1:  # 192.0.2.1:443
        candidates.append(text.partition(":")[0])
    for candidate in candidates:
        try:
            return str(ipaddress.ip_address(candidate))
        except ValueError:
            continue
    if not text:
        return ""
    return "unparsable-" + hashlib.sha256(text.encode("utf-8", "replace")).hexdigest()[:16]
