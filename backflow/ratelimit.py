"""Fixed-window rate limits counted in the shared cache (Redis in production).

While Redis is unreachable a limit fails open by default: nothing is counted and every event is
let through (logged once per outage), since a limit is a guard against abuse, not a reason to
refuse every tool call and tenant route (which need only the database) for as long as a cache is
down. A limit that guards secrets (sign-in attempts) passes fail_open=False: the Redis error is
raised, and the request is refused with a 503 naming Redis.
"""

import asyncio
import logging
import time
import weakref

from django.conf import settings
from django.core.cache import cache, caches
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache
from django.utils.module_loading import import_string

from backflow import metrics
from backflow.cache import LocalCache
from backflow.derived import PerSetting
from backflow.outages import describe, redis_errors

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
    window = _window(limit)
    counters = _counters(keys, window)
    try:
        counts = _count(counters, window[2]) if record else [cache.get(counter, 0) + 1 for counter in counters]
    except redis_errors() as exc:
        if not fail_open:
            raise
        return _uncounted(exc, len(keys))
    return _refusals(counts, limit, window, name)


async def aretry_after_each(keys, limit, *, name):
    """retry_after_each from an event loop: with the counts in Redis, the round trip awaited on
    the loop (redis.asyncio), never a thread's; in this process's memory, counted at once."""
    if not keys:
        return []
    backend = _redis_cache.get()
    if backend is None:
        return retry_after_each(keys, limit, name=name)
    window = _window(limit)
    counters = _counters(keys, window)
    try:
        async with asyncio.timeout(COUNT_TIMEOUT):
            counts = await _count_on_loop(backend, counters, window[2])
    except (*redis_errors(), TimeoutError) as exc:
        return _uncounted(exc, len(keys))
    return _refusals(counts, limit, window, name)


def _window(limit):
    """(now, the window's number, its length in seconds) of `limit` = (events, seconds)."""
    now = time.time()
    return now, int(now // limit[1]), limit[1]


def _counters(keys, window):
    return [f"ratelimit:{key}:{window[1]}" for key in keys]


def _uncounted(exc, how_many):
    """Fail open: nothing counted, every event let through, the outage logged once."""
    if not _outage["logged"]:
        logger.warning("Rate limits are not counted while Redis is unreachable (%s)", describe(exc))
        _outage["logged"] = True
    return [None] * how_many


def _refusals(counts, limit, window, name):
    """The wait of each count: None within `limit`, else the seconds left in the window (counted
    as a refusal of `name`)."""
    if _outage["logged"]:
        logger.info("Redis is reachable again; rate limits are counted again")
        _outage["logged"] = False
    allowed = limit[0]
    now, bucket, seconds = window
    waits = []
    for count in counts:
        if count <= allowed:
            waits.append(None)
            continue
        if name:
            metrics.rate_limit_refusals.labels(name).inc()
        waits.append(max(1, int((bucket + 1) * seconds - now) + 1))
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


COUNT_TIMEOUT = 2.0  # seconds a count awaited on an event loop may take before it fails open (as an unreachable Redis)
_loop_clients = weakref.WeakKeyDictionary()  # event loop -> (the cache backend, its redis.asyncio client, the script)


async def _count_on_loop(backend, counters, window):
    """_count's script on a redis.asyncio client of this event loop (redis-py's asyncio clients
    belong to the loop they were made on), to the cache's primary server as the cache writes."""
    loop = asyncio.get_running_loop()
    made = _loop_clients.get(loop)
    if made is None or made[0] is not backend:
        import redis.asyncio

        client = redis.asyncio.Redis.from_url(backend._cache._servers[0], **settings.REDIS_ASYNC_OPTIONS)
        made = _loop_clients[loop] = (backend, client, client.register_script(_INCREMENT))
    keys = [backend.make_and_validate_key(counter) for counter in counters]
    return [int(count) for count in await made[2](keys=keys, args=[window + 1], client=made[1])]


def _default_if_local(setting):
    backend = caches["default"]
    return backend if isinstance(backend, LocalCache) else None


# The default cache if it is a LocalCache, else None. Its instances share one store and lock per
# process, so one serves every thread and request: `caches["default"]` (a per-context lookup) is
# asked again only when the setting changes (tests).
_local_cache = PerSetting("CACHES", _default_if_local)
# The default cache if it is Redis (the counts of aretry_after_each go to its server), else None.
_redis_cache = PerSetting("CACHES", lambda setting: caches["default"] if isinstance(caches["default"], RedisCache) else None)


def _count_here(backend, counter, window):
    """The count on any other cache, through its API."""
    backend.add(counter, 0, timeout=window + 1)
    try:
        return backend.incr(counter)
    except ValueError:  # expired between add and incr
        backend.add(counter, 1, timeout=window + 1)
        return 1
