"""A burst of SSE messages over Redis is accepted, not refused for want of connections.

redis-py's pools allow 100 connections by default: 200 sessions posting at once made the channel
layer's pool overflow, and their POSTs got 503 "Too many connections" (bench/load_mcp.py).
"""

import anyio
import httpx
import pytest
import redis

from mcp_app.tests.helpers import run
from mcp_app.tests.test_remote_support import handshake, post_json, raw_sse, rpc

BURST_DB = "redis://127.0.0.1:6379/12"  # this test's own database
BURST = 300


@pytest.fixture
def burst_redis():
    try:
        client = redis.Redis.from_url(BURST_DB, socket_connect_timeout=2)
        client.flushdb()
    except redis.ConnectionError:
        pytest.skip("no Redis on 127.0.0.1:6379")
    yield BURST_DB
    client.flushdb()


@pytest.mark.slow
def test_a_burst_of_messages_over_redis_is_accepted(acme, live_daphne, burst_redis):
    server = live_daphne(REDIS_URL=burst_redis, BACKFLOW_MCP_RATE_LIMIT="100000,60")
    limits = httpx.Limits(max_connections=BURST + 10, max_keepalive_connections=BURST + 10)

    async def main():
        async with httpx.AsyncClient(base_url=server.url, limits=limits, timeout=httpx.Timeout(30.0)) as http:
            async with raw_sse(http, "/mcp/sse", headers={"Authorization": f"Bearer {acme.key}"}) as stream:
                await handshake(http, stream, acme.key)
                statuses = {}

                async def post(index):
                    response = await post_json(http, stream.endpoint, rpc("ping", id=1000 + index), acme.key)
                    statuses[index] = (response.status_code, response.text[:200])

                async with anyio.create_task_group() as tasks:
                    for index in range(BURST):
                        tasks.start_soon(post, index)
                refused = {i: s for i, s in statuses.items() if s[0] != 202}
                assert not refused, f"{len(refused)} of {BURST} refused, e.g. {next(iter(refused.values()))}"
                answered = set()
                while len(answered) < BURST:
                    answered.add((await stream.event(timeout=30)).json()["id"])
                assert answered == {1000 + i for i in range(BURST)}

    run(main, timeout=120)
