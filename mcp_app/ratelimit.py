"""Per-principal limit on MCP tool calls, counted in the shared cache (Redis in production)."""

import time

from django.conf import settings
from django.core.cache import cache


def retry_after(principal_key):
    """None when the call may go ahead, else the seconds to wait (fixed window)."""
    limit, window = settings.BACKFLOW_MCP_RATE_LIMIT
    now = time.time()
    bucket = int(now // window)
    key = f"mcp:rate:{principal_key}:{bucket}"
    cache.add(key, 0, timeout=window + 1)
    try:
        count = cache.incr(key)
    except ValueError:  # expired between add and incr
        cache.add(key, 1, timeout=window + 1)
        count = 1
    if count <= limit:
        return None
    return max(1, int((bucket + 1) * window - now) + 1)
