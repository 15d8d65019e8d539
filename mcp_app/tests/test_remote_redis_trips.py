"""What an SSE tool call costs in Redis when the POST reaches the process that holds the stream:
the rate-limit count, one script, and nothing else (no session lookup, no channel-layer send
and receive: the message is handed over in memory). A private redis-server counts the commands
(INFO commandstats), so nothing else on the machine adds to them."""


import pytest
import redis

from mcp_app.tests.test_remote_multiprocess import call
from mcp_app.tests.test_remote_support import bearer, exchange, handshake, raw_client, raw_sse, run
from tests.faults.helpers import private_redis  # noqa: F401 (fixture)

CALLS = 20


def _commands(url):
    """Commands the server has run, by name; a script counts once, not the commands it runs."""
    stats = redis.Redis.from_url(url).info("commandstats")
    counted = {name.removeprefix("cmdstat_"): value["calls"] for name, value in stats.items()}
    scripted = {name: value for name, value in counted.items() if name in ("evalsha", "eval", "fcall")}
    return counted, sum(scripted.values())


def test_a_tool_call_over_sse_takes_one_redis_round_trip(acme, live_daphne, private_redis):  # noqa: F811
    server = live_daphne(REDIS_URL=private_redis.url, BACKFLOW_SSE_KEEPALIVE_SECONDS="3600")
    auth = bearer(acme.key)

    async def main():
        async with raw_client(server) as http, raw_sse(http, "/mcp/sse", headers=auth) as stream:
            await handshake(http, stream, acme.key)
            await exchange(http, stream, acme.key, call(1))  # the first call loads the script
            before, _ = _commands(private_redis.url)
            for index in range(CALLS):
                answer = await exchange(http, stream, acme.key, call(100 + index))
                assert answer["result"]["isError"] is False, answer
            after, scripts = _commands(private_redis.url)
            return {name: after[name] - before.get(name, 0) for name in after if after[name] != before.get(name, 0)}, scripts

    used, _ = run(main, timeout=60)
    for name in ("info", *_CONNECTION_COMMANDS):  # our own counting; a new pooled connection's handshake
        used.pop(name, None)
    # The rate-limit script, once per call; a Redis that runs commands inside scripts counts those
    # under their own names as well, so only top-level commands are judged.
    assert used.pop("evalsha") == CALLS, used
    assert not {name: n for name, n in used.items() if name not in _SCRIPT_COMMANDS}, used


_CONNECTION_COMMANDS = ("hello", "client", "select", "auth")
# What the rate-limit script runs inside (backflow/ratelimit.py): counted by Redis, not round trips.
_SCRIPT_COMMANDS = {"incr", "expire"}


def test_a_session_holds_at_most_its_bound_of_messages_in_memory(monkeypatch):
    """Messages handed over in memory wait for the session's server within a bound of bytes and of
    messages; beyond, the POST is answered 503 (post_message turns WouldBlock into it)."""
    import anyio

    from mcp_app import http as mcp_http

    monkeypatch.setattr(mcp_http, "SESSION_QUEUE_BYTES", 10)
    queue, reader = anyio.create_memory_object_stream[str](3)
    session = mcp_http.LocalSession("acme/key:x", None, queue)
    session.hand_over("12345")
    session.hand_over("12345")
    with pytest.raises(anyio.WouldBlock):  # 11 bytes
        session.hand_over("1")
    reader.receive_nowait()
    session.queued_bytes -= 5  # what the session's reader does for each message it takes
    session.hand_over("1")
    session.hand_over("1")
    with pytest.raises(anyio.WouldBlock):  # 4 messages
        session.hand_over("1")
