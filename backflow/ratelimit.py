"""Fixed-window rate limits counted in the shared cache (Redis in production)."""

import time

from django.core.cache import cache


def retry_after(key, limit):
    """None when one more event under `key` is within `limit` = (events, seconds), else seconds to wait."""
    allowed, window = limit
    now = time.time()
    bucket = int(now // window)
    counter = f"ratelimit:{key}:{bucket}"
    cache.add(counter, 0, timeout=window + 1)
    try:
        count = cache.incr(counter)
    except ValueError:  # expired between add and incr
        cache.add(counter, 1, timeout=window + 1)
        count = 1
    if count <= allowed:
        return None
    return max(1, int((bucket + 1) * window - now) + 1)
