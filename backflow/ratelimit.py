"""Fixed-window rate limits counted in the shared cache (Redis in production).

While Redis is unreachable a limit fails open by default: nothing is counted and every event is
let through (logged once per outage), since a limit is a guard against abuse, not a reason to
refuse every tool call and tenant route (which need only the database) for as long as a cache is
down. A limit that guards secrets (sign-in attempts) passes fail_open=False: the Redis error is
raised, and the request is refused with a 503 naming Redis.
"""

import logging
import time

from django.core.cache import cache, caches
from django.core.cache.backends.redis import RedisCache

from backflow import metrics
from backflow.outages import REDIS_ERRORS, describe

logger = logging.getLogger("backflow.ratelimit")
_outage = {"logged": False}


def retry_after(key, limit, *, name, record=True, fail_open=True):
    """None when one more event under `key` is within `limit` = (events, seconds), else seconds to
    wait, counted as a refusal of the limit `name` in the metrics (None: a count that refuses
    nothing itself). record=False only looks (for limits on failures, counted once an attempt has
    failed)."""
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
    if name:
        metrics.rate_limit_refusals.labels(name).inc()
    return max(1, int((bucket + 1) * window - now) + 1)


# Count and set the window's expiry in one round trip (Django's add + incr took three: SET NX,
# EXISTS, INCRBY). A script rather than EXPIRE NX, which needs Redis 7.
_INCREMENT = "local n = redis.call('INCR', KEYS[1]) if n == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end return n"
_script = []  # the registered script (its SHA), made on first use; any client of the cache runs it


def _count(counter, window):
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        key = backend.make_and_validate_key(counter)
        client = backend._cache.get_client(key, write=True)
        if not _script:
            _script.append(client.register_script(_INCREMENT))
        return int(_script[0](keys=[key], args=[window + 1], client=client))
    backend.add(counter, 0, timeout=window + 1)
    try:
        return backend.incr(counter)
    except ValueError:  # expired between add and incr
        backend.add(counter, 1, timeout=window + 1)
        return 1
