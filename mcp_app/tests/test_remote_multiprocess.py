"""Several daphne processes behind one address: with Redis (shared cache + channel layer) a message
POSTed to any process reaches the SSE session wherever its stream is held; without it, sessions are
local to their process."""

import json
import os

import httpx
import pytest

from mcp_app.tests.test_remote_support import (
    all_tools,
    bearer,
    exchange,
    handshake,
    initialize,
    post_json,
    raw_sse,
    redis_reachable,
    rpc,
    run,
)
from mcp_app.tests.test_remote_sse import assert_session_gone

SPARE_REDIS_DB = "redis://127.0.0.1:6379/7"


def shared_redis_env():
    if os.environ.get("REDIS_URL"):
        return {}  # children inherit the run's Redis
    if not redis_reachable():
        pytest.skip("Redis is not reachable on 127.0.0.1:6379 (set REDIS_URL or start Redis to run this test)")
    return {"REDIS_URL": SPARE_REDIS_DB}


def call(id, name="list_integrations", arguments=None):
    return rpc("tools/call", {"name": name, "arguments": arguments or {}}, id=id)


def streamable_result(response):
    """The JSON-RPC answer of a Streamable HTTP POST (JSON or a one-event SSE body)."""
    assert response.status_code == 200, (response.status_code, response.text)
    if response.headers["content-type"].startswith("application/json"):
        return response.json()
    data = [line[5:].strip() for line in response.text.splitlines() if line.startswith("data:")]
    return json.loads(data[-1])


def test_messages_posted_to_another_process_reach_the_stream_through_redis(acme, globex, live_daphne):
    env = shared_redis_env()
    holder, other = live_daphne(**env), live_daphne(**env)

    async def main():
        async with httpx.AsyncClient(base_url=holder.url, timeout=10) as at_holder, \
                httpx.AsyncClient(base_url=other.url, timeout=10) as at_other:
            async with raw_sse(at_holder, "/mcp/sse", headers=bearer(acme.key)) as stream:
                # Every message goes to the process that does not hold the stream.
                await handshake(at_other, stream, acme.key)
                tools = (await exchange(at_other, stream, acme.key, rpc("tools/list", id=2)))["result"]["tools"]
                assert {t["name"] for t in tools} == all_tools()
                created = await exchange(at_other, stream, acme.key, call(3, "create_integration", {
                    "name": "cross-process", "baseUrl": "https://x.example.com"}))
                assert created["result"]["isError"] is False, created
                # Alternate between the processes: answers stay in order on the one stream.
                for n, client in enumerate((at_holder, at_other, at_other, at_holder), start=10):
                    answer = await exchange(client, stream, acme.key, call(n))
                    assert [i["name"] for i in answer["result"]["structuredContent"]["integrations"]] == ["cross-process"]
                # The owner check holds on the other process too.
                assert (await post_json(at_other, stream.endpoint, call(20), globex.key)).status_code == 404
                endpoint = stream.endpoint
            # Closing the stream on its process removes the session for every process.
            await assert_session_gone(at_other, endpoint, acme.key)

            # Streamable HTTP is stateless: any process answers any request.
            headers = {**bearer(acme.key), "Accept": "application/json, text/event-stream"}
            assert streamable_result(await at_holder.post("/mcp", json=initialize(), headers=headers))["result"]["serverInfo"]["name"] == "backflow"
            answer = streamable_result(await at_other.post("/mcp", json=call(2), headers=headers))
            assert [i["name"] for i in answer["result"]["structuredContent"]["integrations"]] == ["cross-process"]

    run(main, timeout=60)


def test_without_a_shared_layer_a_session_lives_in_its_process(acme, live_daphne):
    holder, other = live_daphne(REDIS_URL=""), live_daphne(REDIS_URL="")

    async def main():
        async with httpx.AsyncClient(base_url=holder.url, timeout=10) as at_holder, \
                httpx.AsyncClient(base_url=other.url, timeout=10) as at_other:
            async with raw_sse(at_holder, "/mcp/sse", headers=bearer(acme.key)) as stream:
                response = await post_json(at_other, stream.endpoint, initialize(), acme.key)
                assert response.status_code == 404, response.text
                await handshake(at_holder, stream, acme.key)

    run(main, timeout=30)
