"""Django's Redis cache with one connection pool per process.

Django keeps a cache backend per async context (CacheHandler's Local is not thread-critical), and
each backend builds its own redis-py connection pool: every request that touched the cache from a
new context opened a new TCP connection to Redis (connect, then the health check) and left it to
the garbage collector. Under 200 SSE sessions, connecting was most of the cost of a cache read.
Here every backend of the process draws from one pool per server, through one client per server
(redis-py pools and clients are thread-safe).
"""

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
