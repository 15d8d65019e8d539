"""Django's Redis cache with one connection pool per process; the in-memory cache of the embedded
profile with a counter that costs one hold of its lock.

Django keeps a cache backend per async context (CacheHandler's Local is not thread-critical), and
each backend builds its own redis-py connection pool: every request that touched the cache from a
new context opened a new TCP connection to Redis (connect, then the health check) and left it to
the garbage collector. Under 200 SSE sessions, connecting was most of the cost of a cache read.
Here every backend of the process draws from one pool per server, through one client per server
(redis-py pools and clients are thread-safe).
"""

import pickle

from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache, RedisCacheClient

_pools = {}  # server URL -> redis-py ConnectionPool, for the life of the process
_clients = {}  # server URL -> redis-py client on that pool (thread-safe: each command takes a connection)


class SharedPoolClient(RedisCacheClient):
    def _get_connection_pool(self, write):
        server = self._servers[self._get_connection_pool_index(write)]
        pool = _pools.get(server)
        if pool is None:  # setdefault: two first callers at once keep one pool (the other is unused)
            pool = _pools.setdefault(server, self._pool_class.from_url(server, **self._pool_options))
        return pool

    def get_client(self, key=None, *, write=False):
        """One client per server, not a new one per command as Django makes (building a redis-py
        client cost a third of a rate-limit count's CPU on the routes' hot path)."""
        server = self._servers[self._get_connection_pool_index(write)]
        client = _clients.get(server)
        if client is None:
            client = _clients.setdefault(server, self._client(connection_pool=self._get_connection_pool(write)))
        return client


class SharedPoolRedisCache(RedisCache):
    def __init__(self, server, params):
        super().__init__(server, params)
        self._class = SharedPoolClient


class LocalCache(LocMemCache):
    """Django's LocMemCache (the embedded profile's cache, one per process) with `count`.

    A rate-limit count through the cache's API is `add` then `incr`: two holds of the lock, the
    key checked twice for memcached's rules, the value pickled three times. On the routes' hot path
    that was 35 us of the event loop's CPU a request (of ~500); `count` is one hold and one
    pickling, with the key made as `make_key` makes it (the counters' keys are the rate limiter's
    own, never a caller's text)."""

    def count(self, key, timeout):
        """The counter `key` plus one (1 if it had expired or did not exist; it then lives
        `timeout` seconds, as `add` would set it). `get` reads the same value."""
        key = self.make_key(key)
        with self._lock:
            if self._has_expired(key):
                value = 1
                self._set(key, pickle.dumps(value, self.pickle_protocol), timeout)
            else:
                value = pickle.loads(self._cache[key]) + 1
                self._cache[key] = pickle.dumps(value, self.pickle_protocol)
                self._cache.move_to_end(key, last=False)
        return value
