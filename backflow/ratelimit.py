"""Fixed-window rate limits counted in the shared cache (Redis in production).

While Redis is unreachable a limit fails open by default: nothing is counted and every event is
let through (logged once per outage), since a limit is a guard against abuse, not a reason to
refuse every tool call and tenant route (which need only the database) for as long as a cache is
down. A limit that guards secrets (sign-in attempts) passes fail_open=False: the Redis error is
raised, and the request is refused with a 503 naming Redis.
"""

import logging
import time

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.utils.module_loading import import_string

from backflow import metrics
from backflow.cache import LocalCache
from backflow.derived import PerSetting
from backflow.outages import REDIS_ERRORS, describe

logger = logging.getLogger("backflow.ratelimit")
_outage = {"logged": False}


def retry_after(key, limit, *, name, record=True, fail_open=True):
    """None when one more event under `key` is within `limit` = (events, seconds), else seconds to
    wait, counted as a refusal of the limit `name` in the metrics (None: a count that refuses
    nothing itself). record=False only looks (for limits on failures, counted once an attempt has
    failed)."""
    return _waits([key], limit, name=name, record=record, fail_open=fail_open)[0]


def retry_after_each(keys, limit, *, name):
    """retry_after for one event under each of `keys`, in order (a key given twice counts two
    events), in one round trip to Redis: the waits of a trip's tool calls or route requests."""
    return _waits(keys, limit, name=name, record=True, fail_open=True)


def counted_in_process():
    """Whether the counts live in this process's memory (the embedded profile's LocMemCache): a
    count then waits on no network, and an event loop may make it itself."""
    return issubclass(import_string(settings.CACHES["default"]["BACKEND"]), LocMemCache)


def _waits(keys, limit, *, name, record, fail_open):
    if not keys:
        return []
    allowed, window = limit
    now = time.time()
    bucket = int(now // window)
    counters = [f"ratelimit:{key}:{bucket}" for key in keys]
    try:
        counts = _count(counters, window) if record else [cache.get(counter, 0) + 1 for counter in counters]
    except REDIS_ERRORS as exc:
        if not fail_open:
            raise
        if not _outage["logged"]:
            logger.warning("Rate limits are not counted while Redis is unreachable (%s)", describe(exc))
            _outage["logged"] = True
        return [None] * len(keys)
    if _outage["logged"]:
        logger.info("Redis is reachable again; rate limits are counted again")
        _outage["logged"] = False
    waits = []
    for count in counts:
        if count <= allowed:
            waits.append(None)
            continue
        if name:
            metrics.rate_limit_refusals.labels(name).inc()
        waits.append(max(1, int((bucket + 1) * window - now) + 1))
    return waits


# Count and set the window's expiry, for every counter given, in one round trip (Django's add +
# incr took three per counter: SET NX, EXISTS, INCRBY). A script rather than EXPIRE NX, which needs
# Redis 7. The counters go to the cache's one primary server (RedisCache writes to the first).
_INCREMENT = """
local counts = {}
for index, key in ipairs(KEYS) do
  local n = redis.call('INCR', key)
  if n == 1 then redis.call('EXPIRE', key, ARGV[1]) end
  counts[index] = n
end
return counts
"""
_script = []  # the registered script (its SHA), made on first use; any client of the cache runs it


def _count(counters, window):
    backend = _local_cache.get()
    if backend is not None:
        return [backend.count(counter, window + 1) for counter in counters]
    backend = caches["default"]
    if isinstance(backend, RedisCache):
        keys = [backend.make_and_validate_key(counter) for counter in counters]
        client = backend._cache.get_client(keys[0], write=True)
        if not _script:
            _script.append(client.register_script(_INCREMENT))
        return [int(count) for count in _script[0](keys=keys, args=[window + 1], client=client)]
    return [_count_here(backend, counter, window) for counter in counters]


def _default_if_local(setting):
    backend = caches["default"]
    return backend if isinstance(backend, LocalCache) else None


# The default cache if it is a LocalCache, else None. Its instances share one store and lock per
# process, so one serves every thread and request: `caches["default"]` (a per-context lookup) is
# asked again only when the setting changes (tests).
_local_cache = PerSetting("CACHES", _default_if_local)


def _count_here(backend, counter, window):
    """The count on any other cache, through its API."""
    backend.add(counter, 0, timeout=window + 1)
    try:
        return backend.incr(counter)
    except ValueError:  # expired between add and incr
        backend.add(counter, 1, timeout=window + 1)
        return 1
