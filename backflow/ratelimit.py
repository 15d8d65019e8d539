"""Fixed-window rate limits counted in the shared cache (Redis in production).

While Redis is unreachable a limit fails open by default: nothing is counted and every event is
let through (logged once per outage), since a limit is a guard against abuse, not a reason to
refuse every tool call and tenant route (which need only the database) for as long as a cache is
down. A limit that guards secrets (sign-in attempts) passes fail_open=False: the Redis error is
raised, and the request is refused with a 503 naming Redis.
"""

import logging
import time

from django.core.cache import cache

from backflow.outages import REDIS_ERRORS, describe

logger = logging.getLogger("backflow.ratelimit")
_outage = {"logged": False}


def retry_after(key, limit, *, record=True, fail_open=True):
    """None when one more event under `key` is within `limit` = (events, seconds), else seconds to wait.
    record=False only looks (for limits on failures, counted once an attempt has failed)."""
    allowed, window = limit
    now = time.time()
    bucket = int(now // window)
    counter = f"ratelimit:{key}:{bucket}"
    try:
        count = _count(counter, window) if record else cache.get(counter, 0) + 1
    except REDIS_ERRORS as exc:
        if not fail_open:
            raise
        if not _outage["logged"]:
            logger.warning("Rate limits are not counted while Redis is unreachable (%s)", describe(exc))
            _outage["logged"] = True
        return None
    if _outage["logged"]:
        logger.info("Redis is reachable again; rate limits are counted again")
        _outage["logged"] = False
    if count <= allowed:
        return None
    return max(1, int((bucket + 1) * window - now) + 1)


def _count(counter, window):
    cache.add(counter, 0, timeout=window + 1)
    try:
        return cache.incr(counter)
    except ValueError:  # expired between add and incr
        cache.add(counter, 1, timeout=window + 1)
        return 1
