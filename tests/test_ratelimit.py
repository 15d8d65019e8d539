"""The cache on Redis: one connection pool per process, and rate limits with one round trip per
counted event (or per batch of events counted together), a window that expires, the limit held."""

import asyncio
import contextvars
import time
import uuid

import pytest
import redis
from django.core.cache import cache, caches
from redis.connection import Connection

from backflow.ratelimit import aretry_after_each, retry_after, retry_after_each

PRIVATE_DB = "redis://127.0.0.1:6379/14"  # not the suite's shared database


@pytest.fixture
def redis_cache(settings):
    try:
        redis.Redis.from_url(PRIVATE_DB, socket_connect_timeout=2).ping()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    settings.CACHES = {"default": {"BACKEND": "backflow.cache.SharedPoolRedisCache", "LOCATION": PRIVATE_DB}}
    caches["default"].clear()
    yield caches["default"]
    caches["default"].clear()


@pytest.fixture
def round_trips(monkeypatch):
    """How many times a client wrote to Redis (a pipeline or a script is one write, one answer)."""
    sent = []
    original = Connection.send_packed_command

    def counting(self, command, check_health=True):
        sent.append(command)
        return original(self, command, check_health)

    monkeypatch.setattr(Connection, "send_packed_command", counting)
    return sent


def test_each_counted_event_is_one_round_trip(redis_cache, round_trips):
    retry_after("probe:warm", (100, 60), name="test")  # the first call may load the script
    round_trips.clear()
    for _ in range(10):
        assert retry_after("probe:count", (100, 60), name="test") is None
    assert len(round_trips) == 10, f"{len(round_trips)} Redis round trips for 10 counted events"


def test_events_counted_together_are_one_round_trip_each_counted(redis_cache, round_trips):
    """A trip's tool calls are counted in one go (retry_after_each): one round trip for all of them,
    a key given twice counted twice, each key's limit on its own, the window's expiry set."""
    retry_after("probe:warm", (100, 60), name="test")
    retry_after_each(["probe:warm"], (100, 60), name="test")  # the first calls may load the scripts
    round_trips.clear()
    stamp = time.time()
    keys = [f"probe:a:{stamp}", f"probe:b:{stamp}", f"probe:a:{stamp}", f"probe:a:{stamp}", f"probe:b:{stamp}"]
    waits = retry_after_each(keys, (2, 3600), name="test")
    assert len(round_trips) == 1, f"{len(round_trips)} Redis round trips for 5 events counted together"
    assert waits[:3] == [None, None, None] and 0 < waits[3] <= 3601 and waits[4] is None, waits
    client = redis_cache._cache.get_client(write=True)
    [counter] = client.keys(f"*ratelimit:probe:a:{stamp}:*")
    assert int(client.get(counter)) == 3 and 0 < client.ttl(counter) <= 3601
    assert retry_after_each([], (2, 3600), name="test") == []


def test_counts_awaited_on_the_loop_are_one_round_trip_into_the_same_counters(redis_cache, monkeypatch):
    """aretry_after_each (the routes' admission on an event loop): the same script, counters,
    limits and expiry as retry_after_each, through a redis.asyncio client of the loop, in one
    round trip for every event counted together; thread-side counts add to the same counters."""
    from redis.asyncio.connection import Connection as AsyncConnection

    sent = []
    original = AsyncConnection.send_packed_command

    async def counting(self, command, check_health=True):
        sent.append(command)
        return await original(self, command, check_health)

    monkeypatch.setattr(AsyncConnection, "send_packed_command", counting)
    stamp = time.time()
    keys = [f"probe:loop:a:{stamp}", f"probe:loop:b:{stamp}", f"probe:loop:a:{stamp}"]

    async def count_twice():
        await aretry_after_each(["probe:loop:warm"], (100, 60), name="test")  # may load the script
        sent.clear()
        return await aretry_after_each(keys, (2, 3600), name="test")

    assert asyncio.run(count_twice()) == [None, None, None]
    assert len(sent) == 1, f"{len(sent)} Redis round trips for 3 events counted together on the loop"
    waits = retry_after_each([keys[0]], (2, 3600), name="test")  # a thread's count sees the loop's
    assert 0 < waits[0] <= 3601, waits
    client = redis_cache._cache.get_client(write=True)
    [counter] = client.keys(f"*ratelimit:probe:loop:a:{stamp}:*")
    assert int(client.get(counter)) == 3 and 0 < client.ttl(counter) <= 3601
    assert asyncio.run(aretry_after_each([], (2, 3600), name="test")) == []


def test_counts_on_the_loop_fail_open_while_redis_is_unreachable(settings, caplog, monkeypatch):
    """A count awaited on the loop whose Redis refuses lets the events through (as a thread's),
    logged once; it waits no longer than the refusal."""
    from backflow import ratelimit

    monkeypatch.setitem(ratelimit._outage, "logged", False)
    settings.CACHES = {"default": {"BACKEND": "backflow.cache.SharedPoolRedisCache", "LOCATION": "redis://127.0.0.1:1/0"}}
    started = time.monotonic()
    with caplog.at_level("WARNING", logger="backflow.ratelimit"):
        assert asyncio.run(aretry_after_each(["probe:down", "probe:down"], (1, 3600), name="test")) == [None, None]
    assert time.monotonic() - started < 10
    assert "not counted while Redis is unreachable" in caplog.text


def test_a_count_on_the_loop_that_hangs_fails_open_after_its_timeout(settings, monkeypatch):
    """Redis accepting the connection but never answering holds the loop's admission no longer
    than COUNT_TIMEOUT (then the events go through, as with Redis down)."""
    import socket

    from backflow import ratelimit

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # accepts (the kernel's backlog) and never answers
    try:
        settings.CACHES = {"default": {"BACKEND": "backflow.cache.SharedPoolRedisCache",
                                       "LOCATION": f"redis://127.0.0.1:{silent.getsockname()[1]}/0"}}
        monkeypatch.setattr(ratelimit, "COUNT_TIMEOUT", 0.5)
        started = time.monotonic()
        counted = asyncio.wait_for(aretry_after_each(["probe:silent"], (1, 3600), name="test"), 10)  # the test's own bound
        assert asyncio.run(counted) == [None]
        assert 0.4 < time.monotonic() - started < 3  # redis-py's own socket timeout is 5 s
    finally:
        silent.close()


def test_the_limit_holds_and_the_window_expires(redis_cache):
    key = f"probe:limit:{time.time()}"
    answers = [retry_after(key, (3, 3600), name="test") for _ in range(5)]
    assert answers[:3] == [None, None, None] and all(0 < a <= 3601 for a in answers[3:]), answers
    client = redis_cache._cache.get_client(write=True)
    [counter] = client.keys(f"*ratelimit:{key}:*")
    assert 0 < client.ttl(counter) <= 3601 and int(client.get(counter)) == 5
    # Looking does not count.
    fresh = f"probe:look:{time.time()}"
    assert all(retry_after(fresh, (1, 3600), name="test", record=False) is None for _ in range(5))
    assert retry_after(fresh, (1, 3600), name="test") is None and retry_after(fresh, (1, 3600), name="test") is not None


def test_requests_in_new_contexts_reuse_the_process_pool(redis_cache, monkeypatch):
    """Django makes a cache backend per async context; each used to open its own connection."""
    connects = []
    original = Connection._connect

    def counting(self):  # a new socket (connect() also runs, and returns at once, on a pooled one)
        connects.append(self)
        return original(self)

    monkeypatch.setattr(Connection, "_connect", counting)

    async def one_request(index):
        return await cache.aget(f"probe:pool:{index}")

    for index in range(20):  # a context that never saw the cache, as each request under daphne
        assert contextvars.Context().run(asyncio.run, one_request(index)) is None
    assert len(connects) <= 1, f"{len(connects)} connections opened for 20 requests"


def test_a_refusal_is_counted_under_the_limits_name_and_a_bare_count_is_not():
    from prometheus_client import REGISTRY

    def refusals(name):
        return REGISTRY.get_sample_value("backflow_rate_limit_refusals_total", {"limit": name}) or 0.0

    key = f"probe:metrics:{uuid.uuid4().hex}"
    before = refusals("probe_limit")
    answers = [retry_after(key, (1, 3600), name="probe_limit") for _ in range(3)]
    assert answers[0] is None and all(answers[1:])
    assert refusals("probe_limit") - before == 2
    retry_after(f"{key}:failures", (1, 3600), name=None)
    retry_after(f"{key}:failures", (1, 3600), name=None)  # over its count, but it refuses nothing itself
    assert refusals("probe_limit") - before == 2


def test_every_backend_of_the_process_uses_one_client(redis_cache):
    """Django builds a redis-py client per command; one per server serves them all."""

    def client_in_a_new_context():
        return contextvars.Context().run(lambda: caches["default"]._cache.get_client(write=True))

    first, second = client_in_a_new_context(), client_in_a_new_context()
    assert first is second and first is redis_cache._cache.get_client()


# --- the embedded profile's in-process counts -------------------------------------------------------

@pytest.fixture
def local_cache(settings):
    settings.CACHES = {"default": {"BACKEND": "backflow.cache.LocalCache", "LOCATION": "ratelimit-tests"}}
    caches["default"].clear()
    yield caches["default"]
    caches["default"].clear()


def test_the_in_process_cache_counts_in_one_step_and_its_window_expires(local_cache):
    from backflow.cache import LocalCache

    assert isinstance(local_cache, LocalCache)
    answers = [retry_after("probe:local", (3, 3600), name="test") for _ in range(5)]
    assert answers[:3] == [None, None, None] and all(0 < a <= 3601 for a in answers[3:]), answers
    [counter] = [key for key in local_cache._cache if "ratelimit:probe:local:" in key]
    assert local_cache.get(counter.split(":", 2)[2]) == 5  # the cache's own API reads the count (key without prefix/version)
    assert local_cache.count("probe:short", 0.2) == 1 and local_cache.count("probe:short", 0.2) == 2
    time.sleep(0.5)  # past its timeout: the counter starts again
    assert local_cache.count("probe:short", 0.2) == 1


def test_counts_on_the_loop_in_process_are_made_at_once(local_cache):
    answers = asyncio.run(aretry_after_each(["probe:local-loop"] * 3, (2, 3600), name="test"))
    assert answers[:2] == [None, None] and 0 < answers[2] <= 3601, answers


def test_counts_follow_the_cache_setting(local_cache, settings):
    """The LocalCache is remembered per CACHES setting: another backend configured counts there."""
    assert retry_after("probe:moved", (1, 3600), name="test") is None
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "ratelimit-other"}}
    other = caches["default"]
    other.clear()
    try:
        assert retry_after("probe:moved", (1, 3600), name="test") is None  # a new store: its first event
        assert any("ratelimit:probe:moved:" in key for key in other._cache)
    finally:
        other.clear()
